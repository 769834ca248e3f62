"""Open many MQTT client connections at once on raw non-blocking sockets, driven by one epoll.

Each client connects from a source address in 127.0.0.0/8 (so N clients do not exhaust one
address's ephemeral ports), sends its greeting (CONNECT, usually with a SUBSCRIBE pipelined
behind it) and counts as open once every acknowledgement it waits for has arrived.
"""

from __future__ import annotations

import contextlib
import errno
import ipaddress
import itertools
import os
import resource
import select
import socket
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from mqtt.codec import Decoder
from mqtt.errors import ProtocolError
from mqtt.packets import SUBACK_FAILURE, Connack, Suback

# Linux 4.2+: bind() picks no port, connect() picks one unique per 4-tuple, so each source
# address offers ~28k ports per broker port instead of ~28k in total.
IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)
SOURCE_ADDRESS_COUNT = 16


def raise_fd_limit() -> int:
    """Raise this process's soft RLIMIT_NOFILE to its hard limit; return the new limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


def source_addresses(host: str, count: int = SOURCE_ADDRESS_COUNT) -> list[str]:
    """127.0.0.2 .. 127.0.0.(count+1) for a loopback broker; no source binding otherwise."""
    try:
        loopback = ipaddress.ip_address(host).is_loopback and ipaddress.ip_address(host).version == 4
    except ValueError:
        loopback = False
    return [f"127.0.0.{index}" for index in range(2, 2 + count)] if loopback else [""]


def client_socket(source: str) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    # Benchmark traffic is already batched; Nagle would only delay the tail of each batch.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if source:
        sock.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        sock.bind((source, 0))
    return sock


@dataclass
class OpenReport:
    """Opened sockets in request order (None where a client failed), and why the others failed."""

    sockets: list[socket.socket | None]
    latencies_ns: list[int] = field(default_factory=list)
    failures: Counter[str] = field(default_factory=Counter)
    leftovers: dict[int, bytes] = field(default_factory=dict)  # bytes that came after the acks

    @property
    def opened(self) -> list[socket.socket]:
        return [sock for sock in self.sockets if sock is not None]


@dataclass
class _Pending:
    index: int
    sock: socket.socket
    started_ns: int
    connected: bool = False
    acks: int = 0
    decoder: Decoder = field(default_factory=Decoder)


class ClientOpener:
    """Opens ``len(greetings)`` clients, at most ``concurrency`` handshakes in flight at a time."""

    def __init__(
        self,
        address: tuple[str, int],
        greetings: Sequence[bytes],
        acks_expected: int,
        concurrency: int = 128,
        timeout: float = 15.0,
        progress: Callable[[int], None] | None = None,
    ) -> None:
        self.address = address
        self.greetings = greetings
        self.acks_expected = acks_expected
        self.concurrency = concurrency
        self.timeout = timeout
        self.progress = progress or (lambda opened: None)
        self.sources = source_addresses(address[0])
        self.report = OpenReport([None] * len(greetings))
        self.pending: dict[int, _Pending] = {}  # fd -> handshake in progress

    def run(self) -> OpenReport:
        self.epoll = select.epoll()
        try:
            next_index = 0
            while next_index < len(self.greetings) or self.pending:
                while next_index < len(self.greetings) and len(self.pending) < self.concurrency:
                    self._start(next_index)
                    next_index += 1
                self._step()
        finally:
            self.epoll.close()
        return self.report

    def _start(self, index: int) -> None:
        try:
            sock = client_socket(self.sources[index % len(self.sources)])
        except OSError as error:  # EMFILE here is the generator's own fd limit
            self.report.failures[f"socket: {errno.errorcode.get(error.errno, error)}"] += 1
            return
        code = sock.connect_ex(self.address)
        if code not in (0, errno.EINPROGRESS):
            self.report.failures[f"connect: {errno.errorcode.get(code, code)}"] += 1
            sock.close()
            return
        self.pending[sock.fileno()] = _Pending(index, sock, time.monotonic_ns())
        self.epoll.register(sock.fileno(), select.EPOLLOUT)

    def _step(self) -> None:
        for fd, _events in self.epoll.poll(0.05):
            client = self.pending[fd]
            if not client.connected:
                self._on_connected(client)
            else:
                self._on_readable(client)
        self._expire()

    def _on_connected(self, client: _Pending) -> None:
        code = client.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if code:
            self._fail(client, f"connect: {errno.errorcode.get(code, code)}")
            return
        client.connected = True
        try:
            client.sock.send(self.greetings[client.index])  # a few dozen bytes: fits in any buffer
        except OSError as error:
            self._fail(client, f"send: {errno.errorcode.get(error.errno, error)}")
            return
        self.epoll.modify(client.sock.fileno(), select.EPOLLIN)

    def _on_readable(self, client: _Pending) -> None:
        try:
            data = client.sock.recv(65536)
        except OSError as error:
            self._fail(client, f"recv: {errno.errorcode.get(error.errno, error)}")
            return
        if not data:
            self._fail(client, "closed by broker during handshake")
            return
        try:
            frames = list(client.decoder.frames(data))
        except ProtocolError as error:
            self._fail(client, f"bad reply: {error.rule}")
            return
        extra = b""
        for buffer, start, _body, end in frames:
            if client.acks == self.acks_expected:
                extra += buffer[start:end]
                continue
            reason = _refusal(buffer[start:end])
            if reason:
                self._fail(client, reason)
                return
            client.acks += 1
        if client.acks == self.acks_expected:
            # The acks completed in this read, so any partial frame after them lies in ``data``.
            extra += data[len(data) - client.decoder.buffered :] if client.decoder.buffered else b""
            self._finish(client, extra)

    def _finish(self, client: _Pending, extra: bytes) -> None:
        fd = client.sock.fileno()
        self.epoll.unregister(fd)
        del self.pending[fd]
        if extra:
            self.report.leftovers[client.index] = extra
        self.report.sockets[client.index] = client.sock
        self.report.latencies_ns.append(time.monotonic_ns() - client.started_ns)
        self.progress(len(self.report.latencies_ns))

    def _fail(self, client: _Pending, reason: str) -> None:
        fd = client.sock.fileno()
        self.epoll.unregister(fd)
        del self.pending[fd]
        client.sock.close()
        self.report.failures[reason] += 1

    def _expire(self) -> None:
        deadline = time.monotonic_ns() - int(self.timeout * 1e9)
        for client in [c for c in self.pending.values() if c.started_ns < deadline]:
            self._fail(client, "handshake timed out")


def _refusal(frame: bytes) -> str:
    """Why an acknowledgement refuses the client, or '' when it accepts."""
    packet = Decoder().feed(frame)[0]
    if isinstance(packet, Connack) and packet.return_code:
        return f"CONNACK return code {packet.return_code}"
    if isinstance(packet, Suback) and SUBACK_FAILURE in packet.return_codes:
        return "SUBACK refused the subscription"
    if not isinstance(packet, Connack | Suback):
        return f"unexpected {type(packet).__name__} during handshake"
    return ""


def close_all(sockets: Sequence[socket.socket | None], farewell: bytes = b"\xe0\x00") -> None:
    """Send DISCONNECT (best effort) and close each socket."""
    for sock in sockets:
        if sock is None:
            continue
        with contextlib.suppress(OSError):
            sock.send(farewell)
        sock.close()


_RUNS = itertools.count()


def run_tag() -> str:
    """A client-id prefix unique to this run, even against a broker that outlives it (``--target``)."""
    return f"cmp{os.getpid():x}r{next(_RUNS)}"
