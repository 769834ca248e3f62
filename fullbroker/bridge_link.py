"""One bridge's life inside the event loop: connect, CONNACK, relay, lose the link, wait, again.

The states, each left only through an event, a timer or the server's flush:

    idle ──retry timer──> connecting ──(eventfd: name resolved) EPOLLOUT, SO_ERROR 0──> connack-wait
      ^                                                                             │ CONNACK 0
      └────────── back-off <── link down (EOF, reset, refusal, keepalive) <── up <──┘

Nothing blocks: the TCP handshake finishes in the kernel while the loop serves everyone else
(``bridge_dial``), a host name is looked up on a thread that only signals an eventfd
(``bridge_resolve``), and every byte for the remote waits in a buffer that is drained when
the socket is writable. While the link is up, a local ``Connection`` of the core stands for
the bridge (``bridge_relay``); when it goes down that connection ends as a *lost* one, so a
persistent local session keeps collecting QoS 1/2 messages until the next CONNACK.

The server's durability rule shapes the output path: the server commits its store before it
sends any byte of a loop turn. What the core writes to the bridge's connection (acks of
remote messages, messages for the remote) therefore leaves only in ``flush``, which the
server calls after its commit; the bridge's own packets (CONNECT, SUBSCRIBE, PINGREQ, the
notification) promise nothing about stored state and are sent as soon as they are made.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import select
import socket
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from mqtt.broker import Broker
from mqtt.codec import DISCONNECT_BYTES, decode_body, encode
from mqtt.connection import Connection
from mqtt.message import Message
from mqtt.packets import (
    SUBACK_FAILURE,
    Connack,
    ConnackCode,
    PacketType,
    Suback,
    Will,
)

from .bridge_backoff import Backoff
from .bridge_dial import Dialer
from .bridge_relay import Relay
from .bridge_remote import Interest, LinkDown, RemoteSession, connect_packet, refusal
from .bridge_socket import RemoteSocket
from .bridge_topics import TopicMap
from .broker_log import NOTICE

if TYPE_CHECKING:
    from .config import BridgeConfig

READABLE = select.EPOLLIN | select.EPOLLERR | select.EPOLLHUP  # errors and hangups surface via recv
HIGH_WATER = 1 << 20  # remote output past this: stop taking the core's output for the remote
LOW_WATER = HIGH_WATER // 2  # drained below this: take it again
CONNECT_TIMEOUT = 30.0  # seconds for resolve + handshake + CONNACK when keepalive is 0


class State(enum.Enum):
    IDLE = "idle"  # waiting for the retry timer
    CONNECTING = "connecting"  # resolving the name, or the TCP handshake
    CONNACK_WAIT = "connack-wait"
    UP = "up"
    CLOSED = "closed"


class Bridge:
    """One ``connection`` stanza: a client of the remote broker and of the local core at once."""

    def __init__(
        self,
        config: BridgeConfig,
        broker: Broker,
        interest: Interest,
        log: logging.Logger,
        clock: Callable[[], float],
    ) -> None:
        if not config.addresses:
            raise ValueError(f"bridge {config.name} has no address")
        self.config = config
        self.name = config.name
        self.remote_clientid = config.remote_clientid or f"{socket.gethostname()}.{config.name}"
        self.local_clientid = config.local_clientid or f"local.{self.remote_clientid}"
        self.notification_topic = config.notification_topic or f"$SYS/broker/connection/{config.name}/state"
        self.topics = TopicMap(config.topics)
        self.state = State.IDLE
        self.retry_at: float | None = None  # when idle: the next attempt
        self.local: Connection | None = None  # the core's connection for this bridge, while up
        self.connections = 0  # CONNACKs so far: the first one "connected", the rest "reconnected"
        self._broker = broker
        self._interest = interest
        self._log = log
        self._clock = clock
        self._backoff = Backoff(*config.restart_timeout)
        self._private = config.try_private  # cleared if the remote refuses the 0x80 level bit
        self._address_index = 0
        self._attempt_deadline = 0.0
        self._dialer: Dialer | None = None  # while connecting
        self._remote: RemoteSession | None = None  # from the TCP handshake on
        self._relay: Relay | None = None  # while up
        self._blocked = False  # the core's output is held back until the remote drains

    def fileno(self) -> int:
        """-1: a bridge's connection has no socket of the server's (whose code asks tag.fileno())."""
        return -1

    @property
    def address(self) -> tuple[str, int]:
        return self.config.addresses[self._address_index]

    @property
    def remote_pending(self) -> int:
        """Bytes buffered for the remote that its socket has not taken yet."""
        return self._remote.pending if self._remote is not None else 0

    # -- the BridgeSet's calls -------------------------------------------------------------------

    def start(self) -> None:
        if self.config.notifications:
            self._notify_local(b"0")  # as mosquitto: "not connected" until the first CONNACK
        with self._barrier():
            self._attempt(self._clock())

    def on_event(self, fd: int, events: int) -> None:
        with self._barrier():
            dialer, remote = self._dialer, self._remote
            if dialer is not None and dialer.owns(fd):
                connected = dialer.on_event(fd)
                if connected is not None:
                    self._on_connected(connected)
            elif remote is not None and fd == remote.fd and events & READABLE:
                for frame in remote.read(self._clock()):
                    self._on_frame(*frame)
                    if self._remote is not remote:
                        break  # a refusal ended this link: the rest of the bytes are moot
            self._send()  # EPOLLOUT, or what handling this event produced

    def flush(self, local: Connection) -> None:
        """The server's flush phase, after its commit: the core's output for the remote goes now."""
        if local is not self.local:
            return  # a connection of an earlier link: its output has nowhere to go any more
        with self._barrier():
            if local.output_bytes:
                self._take_local_output(local)
            if local.wants_close:
                raise LinkDown(f"the local broker closed the bridge's connection: {local.close_reason}")
            self._send()

    def tick(self, now: float) -> float | None:
        with self._barrier():
            if self.state is State.IDLE and self.retry_at is not None and now >= self.retry_at:
                self._attempt(now)
            elif self.state in (State.CONNECTING, State.CONNACK_WAIT) and now >= self._attempt_deadline:
                raise LinkDown(f"timed out after {self._timeout():.0f} s")
            elif self.state is State.UP and self._remote is not None:
                self._remote.keepalive(now)
            self._send()
        return self._deadline()

    def close(self) -> None:
        """Shutdown: say goodbye to the remote (best effort), end the local connection."""
        if self.state is State.CLOSED:
            return
        remote, was_up = self._remote, self.state is State.UP
        if was_up and remote is not None:
            if self.config.notifications:
                # DISCONNECT discards our will, so say "0" ourselves or the remote keeps "1".
                remote.publish_state(self.notification_topic, b"0")
            remote.write(DISCONNECT_BYTES)
            with contextlib.suppress(OSError):
                remote.socket.send_some()  # one non-blocking try; a full send buffer loses the goodbye
        self._end_link("bridge closed", was_up)
        self.state = State.CLOSED
        self.retry_at = None

    # -- connecting ------------------------------------------------------------------------------

    def _timeout(self) -> float:
        keepalive = self.config.keepalive_interval
        return 1.5 * keepalive if keepalive else CONNECT_TIMEOUT

    def _attempt(self, now: float) -> None:
        host, port = self.address
        self._log.log(NOTICE, "Connecting bridge %s (%s:%d)", self.name, host, port)
        self.retry_at = None
        self._attempt_deadline = now + self._timeout()
        self.state = State.CONNECTING
        self._dialer = Dialer(host, port, self._interest, self)
        self._dialer.start()

    def _on_connected(self, remote: RemoteSocket) -> None:
        """TCP is up: send CONNECT, then wait for CONNACK before anything else."""
        self._dialer = None
        self._remote = RemoteSession(remote, self._interest, self.config.keepalive_interval, self._clock())
        self.state = State.CONNACK_WAIT
        config = self.config
        will = Will(self.notification_topic, b"0", 1, True) if config.notifications else None
        self._remote.write(encode(connect_packet(config, self.remote_clientid, will, self._private)))

    # -- the remote's input ----------------------------------------------------------------------

    def _on_frame(self, buffer: bytes, start: int, body: int, end: int) -> None:
        kind = buffer[start] >> 4
        if self.state is State.CONNACK_WAIT:
            if kind != PacketType.CONNACK:
                raise LinkDown(f"protocol error: {PacketType(kind).name} before CONNACK")
            self._on_connack(decode_body(buffer[start], buffer[body:end]))
        elif kind == PacketType.SUBACK:
            self._on_remote_suback(decode_body(buffer[start], buffer[body:end]))
        elif kind not in (PacketType.PINGRESP, PacketType.UNSUBACK):
            assert self._relay is not None
            local = self._relay.local
            self._relay.from_remote(buffer, start, body, end)
            if local.wants_close:
                raise LinkDown(f"the local broker closed the bridge's connection: {local.close_reason}")

    def _on_connack(self, connack: object) -> None:
        assert isinstance(connack, Connack) and self._remote is not None
        code = connack.return_code
        if code:
            if code == ConnackCode.UNACCEPTABLE_PROTOCOL_VERSION and self._private:
                self._private = False  # as mosquitto: a broker that is no mosquitto gets plain 4
                self._log.warning("Bridge %s: the remote refused try_private; trying without it", self.name)
            raise LinkDown(f"Connection Refused: {refusal(code)}")
        remote = self._remote
        # The local side first: if the core refuses the bridge, the link never counts as up.
        # Its output (acks, resent messages) reaches the remote only in the flush, so the
        # remote still gets SUBSCRIBE and the notification first.
        self._relay = Relay.open(self._broker, self, remote.write, self._log)
        self.local = self._relay.local
        self.state = State.UP
        self._backoff.reset()
        self.connections += 1
        again = "connected" if self.connections == 1 else "reconnected"
        self._log.log(NOTICE, "Bridge %s %s", self.name, again)
        # Our packet ids toward the remote are the local session's (the relay passes them through).
        in_flight = self.local.session.inflight if self.local.session is not None else {}
        remote.subscribe(self.topics.remote_filters, in_flight)
        if self.config.notifications:
            remote.publish_state(self.notification_topic, b"1")
            self._notify_local(b"1")

    def _on_remote_suback(self, suback: object) -> None:
        assert isinstance(suback, Suback)
        for topic_filter, code in zip(self.topics.remote_filters, suback.return_codes, strict=False):
            if code == SUBACK_FAILURE:
                self._log.warning("Bridge %s: the remote refused the filter %s", self.name, topic_filter)

    # -- output ----------------------------------------------------------------------------------

    def _take_local_output(self, local: Connection) -> None:
        assert self._remote is not None and self._relay is not None
        if self._blocked or self._remote.pending >= HIGH_WATER:
            self._blocked = True
            # Nothing taken: to the core this looks like a socket whose send buffer is full,
            # so its output limits apply (QoS 0 dropped, QoS 1/2 kept in the session).
            local.sent(0)
            return
        data = local.pending()
        # Acknowledged whole before relaying: the relay may feed acks back into the core,
        # whose new output must not be mistaken for what this call took.
        local.sent(len(data))
        self._relay.from_local(data)

    def _send(self) -> None:
        """Send what the remote's buffer holds (raises LinkDown); resume the core's output once drained."""
        remote = self._remote
        if remote is None or self.state not in (State.CONNACK_WAIT, State.UP):
            return
        remote.send()
        if self._blocked and remote.pending < LOW_WATER:
            self._blocked = False
            self._wake_local()

    def _wake_local(self) -> None:
        """Have the server visit the bridge's connection at its next flush.

        Taking the core's output right here could send it before the server's commit, so the
        connection is marked dirty instead, exactly as ``Connection.send`` marks it.
        """
        local = self.local
        if local is not None and local.output_bytes:
            local.wake()

    def _deadline(self) -> float | None:
        if self.state is State.IDLE:
            return self.retry_at
        if self.state in (State.CONNECTING, State.CONNACK_WAIT):
            return self._attempt_deadline
        if self.state is State.UP and self._remote is not None:
            return self._remote.deadline()
        return None

    # -- the link going down -----------------------------------------------------------------------

    @contextlib.contextmanager
    def _barrier(self) -> Iterator[None]:
        """A failure ends this bridge's link (and schedules a retry), never the server's loop."""
        try:
            yield
        except LinkDown as error:
            self._link_down(str(error))
        except Exception as error:
            self._log.exception("Bridge %s: internal error", self.name)
            self._link_down(f"internal error: {type(error).__name__}: {error}")

    def _link_down(self, reason: str) -> None:
        if self.state is State.CLOSED:
            return
        was_up = self.state is State.UP
        if was_up:
            self._log.log(NOTICE, "Bridge %s: connection lost: %s", self.name, reason)
        else:
            host, port = self.address
            self._log.log(NOTICE, "Bridge %s: connecting to %s:%d failed: %s", self.name, host, port, reason)
            # The next attempt tries the next address (a primary and its fallbacks, in turn).
            self._address_index = (self._address_index + 1) % len(self.config.addresses)
        self._end_link(reason, was_up)
        self.state = State.IDLE
        delay = self._backoff.next_delay()
        self.retry_at = self._clock() + delay
        self._log.info("Bridge %s: next attempt in %.1f s", self.name, delay)

    def _end_link(self, reason: str, was_up: bool) -> None:
        remote, self._remote = self._remote, None
        if remote is not None:
            remote.close()
        dialer, self._dialer = self._dialer, None
        if dialer is not None:
            dialer.cancel()
        self._relay = None
        self._blocked = False
        local, self.local = self.local, None
        if local is not None and not local.ended:
            try:
                # Lost, not DISCONNECTed: a persistent local session keeps queuing for the remote.
                local.lost(reason)
            except Exception as error:  # the core's fault barrier, as the server uses it
                self._broker.contain(local, error)
        if was_up and self.config.notifications:
            self._notify_local(b"0")

    def _notify_local(self, payload: bytes) -> None:
        """The link state, retained, on the local notification topic (b"1" up, b"0" down)."""
        try:
            self._broker.publish(Message.from_text(self.notification_topic, payload, 0, True), None)
        except Exception as error:  # a fault in routing is the core's to count and report
            self._broker.contain(None, error)
