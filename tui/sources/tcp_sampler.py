"""Dumping one port's TCP sockets several times a second, and decoding only what changed.

An idle port's sock_diag dump is byte for byte the dump before it: 20,000 idle connections
send 1.7 MB that decode to the same rows again. So each reply datagram is compared with the
one at the same position in the last dump and its rows are reused when equal; a datagram
that differs is split into messages, and each message is looked up by its exact bytes among
the last dump's messages. Both caches are keyed by the bytes the kernel sent and decoding is
a pure function of those bytes, so a cached row cannot go stale: a socket whose state, queues
or timer changed sends different bytes and is decoded again.
"""

from __future__ import annotations

import socket
from dataclasses import dataclass

from tui.sources.tcp_states import (
    NLMSG_DONE,
    NLMSG_ERROR,
    NLMSG_HEADER,
    RECEIVE_BUFFER_BYTES,
    SOCK_DIAG_BY_FAMILY,
    MessageDecoder,
    TcpSocket,
    dump_request,
    netlink_socket,
    raise_if_error,
)

# One socket per sampler and one sequence number: every reply's nlmsghdr then carries the
# same sequence and port id, so an unchanged dump is byte-identical, headers included.
SEQUENCE = 1


@dataclass(frozen=True, slots=True)
class Datagram:
    """One reply datagram: its bytes, each message's payload bytes and row, and whether it ends the dump."""

    data: bytes
    keys: tuple[bytes, ...]
    rows: tuple[TcpSocket, ...]
    done: bool


class TcpSampler:
    """``sample()`` returns the port's sockets; the same list object when nothing changed.

    ``decoded`` counts the messages the last sample had to decode (0 for an unchanged dump).
    """

    def __init__(self, port: int, family: int = socket.AF_INET) -> None:
        self.port = port
        self.family = family
        self._decode = MessageDecoder(family)
        self._request = dump_request(port, family, SEQUENCE)
        self._socket: socket.socket | None = None
        self._buffer = bytearray(RECEIVE_BUFFER_BYTES)
        self._datagrams: list[Datagram] = []
        self._by_message: dict[bytes, TcpSocket] | None = None  # built on the first miss only
        self.rows: list[TcpSocket] = []
        self.decoded = 0

    def sample(self) -> list[TcpSocket]:
        """Dump the port once; decode only the datagrams and messages not seen last time."""
        if self._socket is None:
            self._socket = netlink_socket()
        received: list[Datagram] = []
        self.decoded = 0
        try:
            self._socket.sendto(self._request, (0, 0))
            view = memoryview(self._buffer)
            while not received or not received[-1].done:
                # The kernel builds the next part of the dump only when we read: nothing is lost.
                size = self._socket.recv_into(self._buffer)
                received.append(self._datagram(bytes(view[:size]), len(received)))
        except BaseException:
            self.close()  # a dump read halfway would leave its tail queued for the next request
            raise
        return self._adopt(received)

    def rows_from(self, datagrams: list[bytes]) -> list[TcpSocket]:
        """What ``sample()`` does with the datagrams it received: for tests with made-up replies."""
        self.decoded = 0
        return self._adopt([self._datagram(data, index) for index, data in enumerate(datagrams)])

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def _adopt(self, received: list[Datagram]) -> list[TcpSocket]:
        unchanged = len(received) == len(self._datagrams) and all(
            new is old for new, old in zip(received, self._datagrams, strict=True)
        )
        if not unchanged:
            self._datagrams = received
            self._by_message = None
            self.rows = [row for datagram in received for row in datagram.rows]
        return self.rows

    def _datagram(self, data: bytes, index: int) -> Datagram:
        """The cached Datagram if the one at ``index`` last time had the same bytes, else parse it."""
        if index < len(self._datagrams) and self._datagrams[index].data == data:
            return self._datagrams[index]
        return self._parse(data)

    def _parse(self, data: bytes) -> Datagram:
        by_message = self._message_cache()
        keys: list[bytes] = []
        rows: list[TcpSocket] = []
        done = False
        offset = 0
        while offset < len(data):
            length, message_type, _flags, sequence, _pid = NLMSG_HEADER.unpack_from(data, offset)
            start = offset + NLMSG_HEADER.size
            if message_type == SOCK_DIAG_BY_FAMILY and sequence == SEQUENCE:
                key = data[start : offset + length]
                row = by_message.get(key)
                if row is None:
                    row = self._decode(key, 0)
                    self.decoded += 1
                keys.append(key)
                rows.append(row)
            elif message_type in (NLMSG_DONE, NLMSG_ERROR):
                raise_if_error(data, start, offset + length)
                done = message_type == NLMSG_DONE
            offset += (length + 3) & ~3  # NLMSG_ALIGN
        return Datagram(data, tuple(keys), tuple(rows), done)

    def _message_cache(self) -> dict[bytes, TcpSocket]:
        """Every message of the last dump by its bytes; built once per changed dump."""
        if self._by_message is None:
            self._by_message = {
                key: row
                for datagram in self._datagrams
                for key, row in zip(datagram.keys, datagram.rows, strict=True)
            }
        return self._by_message
