"""The bridge's end of an established remote connection: frames in, buffered bytes out, keepalive.

A client must keep the connection alive itself: MQTT 3.1.1 lets the server drop a client that
sent nothing for 1.5 keepalive periods [MQTT-3.1.2-24], so the bridge sends PINGREQ every
``keepalive_interval`` seconds and, symmetrically, gives the remote up when nothing at all has
arrived for 1.5 periods (a PINGRESP at least should have). Silence is the only way to notice
a peer that vanished without a FIN or RST: a pulled cable, a crashed host, a NAT that forgot
us. Every way the connection can end surfaces here as ``LinkDown`` with mosquitto-like words.
"""

from __future__ import annotations

from collections.abc import Container, Iterator
from typing import TYPE_CHECKING, Any, Protocol

from mqtt.codec import PINGREQ_BYTES, Decoder, encode
from mqtt.errors import ProtocolError
from mqtt.packets import ConnackCode, Connect, Publish, Subscribe, Will

from .bridge_socket import RemoteSocket

if TYPE_CHECKING:
    from .config import BridgeConfig

Frame = tuple[bytes, int, int, int]  # (buffer, frame start, body start, frame end), as Decoder.frames


class Interest(Protocol):
    """Where a bridge registers its fds: the server's epoll set, with fd -> bridge routing."""

    def watch(self, fd: int, owner: Any, writable: bool) -> None: ...
    def modify(self, fd: int, writable: bool) -> None: ...
    def unwatch(self, fd: int) -> None: ...


_REFUSALS = {  # mosquitto's words for CONNACK codes
    ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION: "unacceptable protocol version",
    ConnackCode.IDENTIFIER_REJECTED: "identifier rejected",
    ConnackCode.SERVER_UNAVAILABLE: "broker unavailable",
    ConnackCode.BAD_USERNAME_OR_PASSWORD: "bad user name or password",
    ConnackCode.NOT_AUTHORIZED: "not authorised",
}


def refusal(code: int) -> str:
    return _REFUSALS.get(code, f"unknown code {code}")  # type: ignore[call-overload]


def connect_packet(config: BridgeConfig, client_id: str, will: Will | None, private: bool) -> Connect:
    """The bridge's CONNECT to the remote, from its ``connection`` stanza."""
    username, password = config.remote_username, config.remote_password
    return Connect(
        client_id=client_id,
        clean_session=config.cleansession,
        keepalive=config.keepalive_interval,
        username=username,
        # 3.1.1 allows no password without a user name [MQTT-3.1.2-22].
        password=password.encode() if password is not None and username is not None else None,
        will=will,
        bridge=private,  # protocol level 0x84, try_private: "a bridge; do not echo my messages"
    )


class LinkDown(Exception):
    """The link cannot go on (EOF, a reset, a refusal, a protocol error): close it, retry later."""


class RemoteSession:
    """One connected socket to the remote broker, from the CONNECT on."""

    def __init__(self, remote: RemoteSocket, interest: Interest, keepalive: int, now: float) -> None:
        self.socket = remote
        self.fd = remote.fd
        self._interest = interest
        self._keepalive = keepalive
        # The strict first-byte table accepts every valid 3.1.1 first byte, the server's
        # (CONNACK, SUBACK, PINGRESP) included; which of them may come is the caller's check.
        self._frames = Decoder()
        self.last_received = now
        self.next_ping = now + keepalive

    @property
    def pending(self) -> int:
        return self.socket.pending

    def write(self, data: bytes | bytearray | memoryview) -> None:
        """Buffer bytes for the remote; ``send`` (the end of every loop step) sends them."""
        self.socket.buffer(data)

    def subscribe(self, filters: dict[str, int], ids_in_use: Container[int]) -> None:
        """One SUBSCRIBE for every remote filter, with an id no PUBLISH in flight uses [MQTT-2.3.1-2]."""
        if filters:
            packet_id = next(candidate for candidate in range(1, 65536) if candidate not in ids_in_use)
            self.write(encode(Subscribe(packet_id, tuple(filters.items()))))

    def publish_state(self, topic: str, payload: bytes) -> None:
        """The link state, retained. QoS 0: QoS 1 would need a packet id, and ours are the core's."""
        self.write(encode(Publish(topic, payload, 0, True)))

    def read(self, now: float) -> Iterator[Frame]:
        """One ``recv`` and the whole frames it completed. Raises LinkDown when the link ended."""
        try:
            data = self.socket.receive()
        except OSError as error:  # ECONNRESET, ETIMEDOUT (TCP keepalive), EHOSTUNREACH...
            raise LinkDown(f"recv failed: {error.strerror}") from None
        if data is None:
            return
        if not data:
            raise LinkDown("the remote closed the connection")
        self.last_received = now
        try:
            yield from self._frames.frames(data)
        except ProtocolError as error:
            raise LinkDown(f"protocol error: {error}") from None

    def send(self) -> None:
        """One non-blocking send; EPOLLOUT registered only while bytes remain. Raises LinkDown."""
        remote = self.socket
        try:
            remote.send_some()
        except OSError as error:  # EPIPE, ECONNRESET: the remote is gone
            raise LinkDown(f"send failed: {error.strerror}") from None
        # Level-triggered EPOLLOUT only while output waits: an idle socket is always writable
        # and would wake every epoll_wait for nothing.
        wanted = remote.pending > 0
        if wanted != remote.write_interest:
            remote.write_interest = wanted
            self._interest.modify(remote.fd, wanted)

    def keepalive(self, now: float) -> None:
        """PINGREQ when due; LinkDown after 1.5 periods without a byte from the remote."""
        keepalive = self._keepalive
        if not keepalive:
            return
        silent = now - self.last_received
        if silent >= 1.5 * keepalive:
            raise LinkDown(f"keepalive timeout: nothing from the remote for {silent:.1f} s")
        if now >= self.next_ping:
            self.write(PINGREQ_BYTES)
            self.next_ping = now + keepalive

    def deadline(self) -> float | None:
        if not self._keepalive:
            return None
        return min(self.next_ping, self.last_received + 1.5 * self._keepalive)

    def close(self) -> None:
        self._interest.unwatch(self.fd)  # before close: the fd number may be reused at once
        self.socket.close()
