"""TCP sockets on one port, read from the kernel the way `ss -tn` does: netlink sock_diag.

One SOCK_DIAG_BY_FAMILY dump request carries a tiny bytecode program, so the kernel
itself keeps only sockets whose local or remote port is P. Each reply is a fixed
``struct inet_diag_msg`` holding the state, Send-Q, Recv-Q, the pending timer and its
time left. Layouts follow include/uapi/linux/inet_diag.h; no root is needed.
"""

from __future__ import annotations

import os
import socket
import struct
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from itertools import count

NETLINK_SOCK_DIAG = 4  # include/uapi/linux/netlink.h
SOCK_DIAG_BY_FAMILY = 20  # include/uapi/linux/sock_diag.h
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300  # NLM_F_DUMP = NLM_F_ROOT | NLM_F_MATCH
INET_DIAG_REQ_BYTECODE = 1
INET_DIAG_BC_JMP, INET_DIAG_BC_S_EQ, INET_DIAG_BC_D_EQ = 1, 11, 12
INET_DIAG_NOCOOKIE = 0xFFFFFFFF
ALL_STATES = 0xFFFFFFFF  # bit n selects TCP state n; every bit also brings NEW_SYN_RECV
# LISTEN's bit alone: the kernel then walks only the listening hash, never the established one,
# so "is anything listening?" costs the same with 20,000 connections as with none.
LISTEN_ONLY = 1 << 10

# The kernel's TCP state numbers (include/net/tcp_states.h).
STATE_NAMES = {
    1: "ESTABLISHED",
    2: "SYN_SENT",
    3: "SYN_RECV",
    4: "FIN_WAIT_1",
    5: "FIN_WAIT_2",
    6: "TIME_WAIT",
    7: "CLOSE",
    8: "CLOSE_WAIT",
    9: "LAST_ACK",
    10: "LISTEN",
    11: "CLOSING",
    12: "NEW_SYN_RECV",  # a request socket: SYN received, SYN-ACK sent, before the final ACK
}
# idiag_timer values, named as `ss -o` names them (4 is the kernel's ICSK_TIME_PROBE0).
TIMER_NAMES = {0: "off", 1: "on", 2: "keepalive", 3: "timewait", 4: "persist"}

NLMSG_HEADER = struct.Struct("=IHHII")  # struct nlmsghdr: len, type, flags, seq, pid
NLATTR_HEADER = struct.Struct("=HH")  # struct nlattr: len, type
BC_OP = struct.Struct("=BBH")  # struct inet_diag_bc_op: code, yes, no
# struct inet_diag_req_v2: family, protocol, ext, pad, states, then inet_diag_sockid
# (sport, dport, src[16], dst[16], if, cookie[2]); a dump ignores the sockid.
DIAG_REQUEST = struct.Struct("=BBBBI4x32xIII")
ADDRESS_BYTES = {socket.AF_INET: 4, socket.AF_INET6: 16}
RECEIVE_BUFFER_BYTES = 64 * 1024  # the kernel fills at most ~32 KiB per dump datagram

_sequence_numbers = count(1)


@dataclass(frozen=True, slots=True)
class TcpSocket:
    """One row of `ss -tn -o`.

    Connected sockets: ``recv_q`` is bytes received but not yet read by the application
    (rcv_nxt - copied_seq), ``send_q`` bytes written but not yet acknowledged by the peer
    (write_seq - snd_una). A FIN takes a sequence number, so CLOSE_WAIT shows Recv-Q 1
    until the application reads the end of stream. LISTEN: ``recv_q`` is the accept
    queue's length and ``send_q`` the backlog given to listen(), capped by somaxconn.
    ``inode`` is 0 for TIME_WAIT and orphaned sockets and for connections still waiting
    in an accept queue (no file yet). ``timer_left_ms`` counts down to the next
    retransmit, keepalive, zero-window probe or the end of TIME_WAIT.
    """

    state: str
    local: tuple[str, int]
    remote: tuple[str, int]
    send_q: int
    recv_q: int
    timer: str
    timer_left_ms: int
    inode: int
    uid: int


def tcp_sockets(port: int, family: int = socket.AF_INET, states: int = ALL_STATES) -> list[TcpSocket]:
    """Every TCP socket of ``family`` (AF_INET or AF_INET6) whose local or remote port is ``port``.

    Both ends of a loopback connection match, so a server's accepted sockets and its
    clients' sockets both appear. IPv4-mapped clients of a dual-stack listener are AF_INET6.
    ``states`` is a bit mask of TCP states (bit n = state n), e.g. LISTEN_ONLY.
    """
    if family not in ADDRESS_BYTES:
        raise ValueError(f"family must be AF_INET or AF_INET6, not {family}")
    sequence = next(_sequence_numbers)
    with netlink_socket() as nl:
        nl.sendto(dump_request(port, family, sequence, states), (0, 0))
        return _read_dump(nl, sequence, family)


def netlink_socket() -> socket.socket:
    """A netlink socket is a datagram conversation with the kernel (port id 0). sock_diag
    answers unprivileged callers; only socket marks and other users' details need more."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_SOCK_DIAG)


def state_counts(sockets: Iterable[TcpSocket]) -> dict[str, int]:
    """Sockets per state, most common first: `netstat -tn | awk '{print $6}' | sort | uniq -c`."""
    return dict(Counter(tcp_socket.state for tcp_socket in sockets).most_common())


def port_filter_bytecode(port: int) -> bytes:
    """``sport == port || dport == port`` in the shape `ss` compiles an OR to.

    Ops are 4 bytes; a compare op is followed by an operand op holding the port in ``no``.
    ``yes``/``no`` are forward jumps in bytes; landing exactly on the end accepts, landing
    4 bytes past it rejects. The kernel's audit (inet_diag_bc_audit) refuses, with EINVAL,
    any jump that does not land on an op or the end, so the layout is::

         0  S_EQ  yes=8  no=12   sport == port? yes: go to 8, no: go to 12
         4  (operand: port)
         8  JMP   yes=4  no=12   always takes "no": 8 + 12 = 20, the end: accept
        12  D_EQ  yes=8  no=12   dport == port? yes: 20 accept, no: 24 reject
        16  (operand: port)
    """
    compare_bytes = 2 * BC_OP.size
    source = BC_OP.pack(INET_DIAG_BC_S_EQ, compare_bytes, compare_bytes + 4) + BC_OP.pack(0, 0, port)
    jump = BC_OP.pack(INET_DIAG_BC_JMP, BC_OP.size, compare_bytes + 4)
    destination = BC_OP.pack(INET_DIAG_BC_D_EQ, compare_bytes, compare_bytes + 4) + BC_OP.pack(0, 0, port)
    return source + jump + destination


def dump_request(port: int, family: int, sequence: int, states: int = ALL_STATES) -> bytes:
    """nlmsghdr + inet_diag_req_v2 + one INET_DIAG_REQ_BYTECODE attribute."""
    bytecode = port_filter_bytecode(port)
    # idiag_ext = 0: state, queues and timer are all in the base message; asking for
    # INET_DIAG_INFO (struct tcp_info) would add a few hundred bytes per socket.
    request = DIAG_REQUEST.pack(
        family, socket.IPPROTO_TCP, 0, 0, states, 0, INET_DIAG_NOCOOKIE, INET_DIAG_NOCOOKIE
    )
    attribute = NLATTR_HEADER.pack(NLATTR_HEADER.size + len(bytecode), INET_DIAG_REQ_BYTECODE) + bytecode
    length = NLMSG_HEADER.size + len(request) + len(attribute)
    header = NLMSG_HEADER.pack(length, SOCK_DIAG_BY_FAMILY, NLM_F_REQUEST | NLM_F_DUMP, sequence, 0)
    return header + request + attribute


def _read_dump(nl: socket.socket, sequence: int, family: int) -> list[TcpSocket]:
    """Decode every inet_diag_msg of a multi-part reply, up to NLMSG_DONE."""
    buffer = bytearray(RECEIVE_BUFFER_BYTES)
    rows: list[TcpSocket] = []
    decode = MessageDecoder(family)
    while True:
        # The kernel builds the next part of a dump only when we read, so a slow reader
        # never loses messages; each datagram packs many messages back to back.
        received = nl.recv_into(buffer)
        offset = 0
        while offset < received:
            length, message_type, _flags, message_sequence, _pid = NLMSG_HEADER.unpack_from(buffer, offset)
            if message_type == SOCK_DIAG_BY_FAMILY and message_sequence == sequence:
                rows.append(decode(buffer, offset + NLMSG_HEADER.size))
            elif message_type in (NLMSG_DONE, NLMSG_ERROR):
                raise_if_error(buffer, offset + NLMSG_HEADER.size, offset + length)
                if message_type == NLMSG_DONE:
                    return rows
            offset += (length + 3) & ~3  # NLMSG_ALIGN


def raise_if_error(buffer: bytes | bytearray, start: int, end: int) -> None:
    """NLMSG_ERROR (and a DONE ending a failed dump) start with a negative errno."""
    if end - start >= 4:
        (error,) = struct.unpack_from("=i", buffer, start)
        if error < 0:
            raise OSError(-error, f"sock_diag: {os.strerror(-error)}")


class MessageDecoder:
    """struct inet_diag_msg -> TcpSocket. A port's connections repeat from dump to dump (their
    states and queues change, their addresses do not), so each pair of endpoints is decoded once:
    during a burst of 20,000 closes that halves the cost of a row."""

    ENDPOINTS_KEPT = 200_000  # pairs remembered; the cache starts afresh past that

    def __init__(self, family: int) -> None:
        self.family = family
        # struct inet_diag_msg: family, state, timer, retrans, then the sockid (sport, dport,
        # src[16], dst[16] in network order, if, cookie[2]), expires, rqueue, wqueue, uid, inode.
        self.unpack_from = struct.Struct("=xBBx48xIIIII").unpack_from
        width = ADDRESS_BYTES[family]
        padding = 16 - width  # AF_INET uses only the first 4 address bytes
        self.unpack_endpoints = struct.Struct(f"!HH{width}s{padding}x{width}s{padding}x").unpack
        self.endpoints: dict[bytes, tuple[tuple[str, int], tuple[str, int]]] = {}

    def __call__(self, buffer: bytes | bytearray, offset: int) -> TcpSocket:
        state, timer, expires, rqueue, wqueue, uid, inode = self.unpack_from(buffer, offset)
        key = bytes(buffer[offset + 4 : offset + 40])  # sport, dport, src, dst
        ends = self.endpoints.get(key)
        if ends is None:
            ends = self._endpoints(key)
        return TcpSocket(
            STATE_NAMES.get(state) or f"STATE_{state}",
            ends[0],
            ends[1],
            wqueue,  # Send-Q
            rqueue,  # Recv-Q
            TIMER_NAMES.get(timer) or f"timer_{timer}",
            expires,
            inode,
            uid,
        )

    def _endpoints(self, key: bytes) -> tuple[tuple[str, int], tuple[str, int]]:
        sport, dport, source, destination = self.unpack_endpoints(key)
        ends = (
            (socket.inet_ntop(self.family, source), sport),
            (socket.inet_ntop(self.family, destination), dport),
        )
        if len(self.endpoints) >= self.ENDPOINTS_KEPT:
            self.endpoints.clear()
        self.endpoints[key] = ends
        return ends
