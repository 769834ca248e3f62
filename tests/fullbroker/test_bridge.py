"""Bridges (``fullbroker.bridge``): against a scripted remote, then against a real mosquitto.

Until the full broker's entry point drives them, the bridges run in a stand-in loop built
here: the core, one epoll set, ``BridgeSet``, and in-process local clients of the core (a
``Connection`` fed bytes and read back, as a socket would be). Two ways to run that loop:

* ``Stepper``: one turn at a time in the test's own thread, on a clock the test moves, with a
  ``FakeRemote`` socket the test answers by hand. For timers (keepalive, back-off) and for
  the exact bytes the bridge sends.
* ``BridgeLoop``: a background thread, talking to a real ``mosquitto`` started per test, with
  paho clients on the remote side. Every core call from the test is posted to the loop
  thread (``call``), so the core is only ever touched by one thread, as in the server.

Every wait polls a condition with a deadline (``wait_until``); no sleep synchronises anything.
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import select
import shutil
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from fullbroker.bridge import BridgeSet, State
from fullbroker.bridge_link import LOW_WATER
from fullbroker.config import BridgeConfig, BridgeTopic
from mqtt.broker import Broker
from mqtt.codec import Decoder, encode
from mqtt.fixed_header import AWAITING_CONNECT_FIRST_BYTES
from mqtt.limits import Limits
from mqtt.packets import (
    Connack,
    ConnackCode,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Subscribe,
)
from mqtt.policy import Policy
from tests.support.waiting import wait_until

from .mosquitto_process import Mosquitto, RemoteClient, closed_port

T = TypeVar("T")
Closing = Callable[[Any], Any]  # the ``closing`` fixture: register something to stop after the test
NOTIFY = "$SYS/broker/connection/b1/state"
needs_mosquitto = pytest.mark.skipif(shutil.which("mosquitto") is None, reason="mosquitto not installed")


def bridge_config(port: int, **overrides: Any) -> BridgeConfig:
    """Bridge ``b1``: sensors go out, commands come in (both with prefixes), chat goes both ways."""
    settings: dict[str, Any] = {
        "name": "b1",
        "addresses": [("127.0.0.1", port)],
        "topics": [
            BridgeTopic("sensors/#", "out", 1, "site/", "hq/site1/"),
            BridgeTopic("cmd/#", "in", 1, "site/", "hq/site1/"),
            BridgeTopic("chat/#", "both", 1),
        ],
        "remote_clientid": "b1-remote",
        "keepalive_interval": 30,
        "restart_timeout": (0.1, 0.5),
    }
    settings.update(overrides)
    return BridgeConfig(**settings)


# -- local clients and the stand-in loops --------------------------------------------------------


class LocalClient:
    """An in-process client of the core: bytes in with ``receive``, its output read in ``flush``."""

    def __init__(
        self,
        broker: Broker,
        client_id: str,
        subscriptions: list[tuple[str, int]],
        username: str | None = None,
    ) -> None:
        self.connection = broker.open(peer=f"test/{client_id}", tag=self)
        self.received: list[Publish] = []
        self._frames = Decoder()
        self._next_id = 1
        self.connection.receive(encode(Connect(client_id, True, 0, username=username)))
        if subscriptions:
            self.connection.receive(encode(Subscribe(1, tuple(subscriptions))))

    def publish(self, topic: str, payload: bytes, qos: int = 0, retain: bool = False) -> None:
        packet_id = None
        if qos:
            packet_id, self._next_id = self._next_id, self._next_id + 1
        self.connection.receive(encode(Publish(topic, payload, qos, retain, False, packet_id)))

    def flush(self) -> None:
        """The loop's flush phase for this client: take all its output, answer what needs it."""
        data = self.connection.pending()
        self.connection.sent(len(data))
        for packet in self._frames.feed(data):
            if isinstance(packet, Publish):
                self.received.append(packet)
                if packet.qos == 1:
                    self.connection.receive(encode(Puback(packet.packet_id)))  # type: ignore[arg-type]
                elif packet.qos == 2:
                    self.connection.receive(encode(Pubrec(packet.packet_id)))  # type: ignore[arg-type]
            elif isinstance(packet, Pubrel):
                self.connection.receive(encode(Pubcomp(packet.packet_id)))

    def payloads(self, topic: str) -> list[bytes]:
        # list() of a list is one step under the GIL: safe beside the loop thread's appends.
        return [packet.payload for packet in list(self.received) if packet.topic == topic]


class ListHandler(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


class Core:
    """What both loops share: the core, epoll, the bridges, the flush phase."""

    def __init__(
        self, configs: list[BridgeConfig], clock: Callable[[], float], policy: Policy | None = None
    ) -> None:
        self.broker = Broker(clock=clock, limits=Limits(sys_interval=0), policy=policy)
        self.epoll = select.epoll()
        self.log = logging.getLogger(f"test.bridge.{id(self)}")
        self.log.setLevel(logging.DEBUG)
        self.log_lines = ListHandler()
        self.log.addHandler(self.log_lines)
        self.bridges = BridgeSet(configs, self.broker, self.epoll, self.log, clock)
        self.clock = clock
        self.started = False  # bridges tick only once the test started them (see start)

    def start(self) -> None:
        """Start the bridges: a test sets up its local observers first, to see the first "0"."""
        self.started = True
        self.bridges.start()

    def flush(self) -> None:
        """The server's flush phase: bridges take their connections' output, clients theirs."""
        dirty = self.broker.drain_dirty()
        while dirty:
            for connection in dirty:
                if not self.bridges.flush(connection) and isinstance(connection.tag, LocalClient):
                    connection.tag.flush()
            dirty = self.broker.drain_dirty()

    def timers(self) -> float | None:
        now = self.clock()
        bridges = self.bridges.tick(now) if self.started else None
        deadlines = [d for d in (self.broker.tick(now), bridges) if d is not None]
        return min(deadlines, default=None)

    @property
    def bridge(self) -> Any:
        return self.bridges.bridges[0]

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.log_lines.lines))


class Stepper(Core):
    """The loop one turn at a time in the test's thread; the clock moves only when the test says."""

    def __init__(self, configs: list[BridgeConfig], policy: Policy | None = None) -> None:
        self.now = 1000.0
        super().__init__(configs, lambda: self.now, policy)

    def turn(self, wait: float = 0.02) -> None:
        ready = self.epoll.poll(wait)
        assert self.bridges.split_ready(ready) == []  # every fd in this epoll set is a bridge's
        self.timers()
        self.flush()

    def until(self, condition: Callable[[], T], what: str, timeout: float = 5.0) -> T:
        deadline = time.monotonic() + timeout
        while not (value := condition()):
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what}")
            self.turn()
        return value

    def advance(self, seconds: float) -> None:
        self.now += seconds
        self.turn(0)

    def stop(self) -> None:
        self.bridges.close()
        self.epoll.close()


class BridgeLoop(Core):
    """The loop on a background thread, on the real clock; ``call`` runs code on that thread."""

    def __init__(self, configs: list[BridgeConfig]) -> None:
        super().__init__(configs, time.monotonic)
        self._calls: queue.SimpleQueue[tuple[Callable[[], Any], concurrent.futures.Future[Any]]]
        self._calls = queue.SimpleQueue()
        # A socketpair in the epoll set wakes the loop when the test posts a call.
        self._wake_out, self._wake_in = socket.socketpair()
        self._wake_in.setblocking(False)
        self.epoll.register(self._wake_in.fileno(), select.EPOLLIN)
        self._running = True
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="bridge loop", daemon=True)
        self._thread.start()

    def call(self, function: Callable[[], T], timeout: float = 10.0) -> T:
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        self._calls.put((function, future))
        self._wake_out.send(b"x")
        return future.result(timeout)

    def client(self, client_id: str, subscriptions: list[tuple[str, int]]) -> LocalClient:
        return self.call(lambda: LocalClient(self.broker, client_id, subscriptions))

    def state(self) -> State:
        return self.call(lambda: self.bridge.state)

    def stop(self) -> None:
        """Close the bridges on the loop thread, end it; errors in the loop fail the test here."""
        if not self._thread.is_alive():
            return

        def finish() -> None:
            self._running = False

        self.call(finish)
        self._thread.join(10)
        self.epoll.close()
        self._wake_out.close()
        self._wake_in.close()
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as error:  # reported by stop(), in the test's thread
            self._error = error
            raise

    def _serve(self) -> None:
        timeout: float | None = 0.0
        while self._running:
            ready = self.epoll.poll(-1 if timeout is None else timeout)
            for fd, _ in self.bridges.split_ready(ready):
                assert fd == self._wake_in.fileno()
                self._wake_in.recv(4096)
            while not self._calls.empty():
                function, future = self._calls.get()
                try:
                    future.set_result(function())
                except Exception as error:  # the test thread re-raises it from call()
                    future.set_exception(error)
            deadline = self.timers()
            self.flush()
            timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
        self.bridges.close()
        self.flush()


@pytest.fixture
def closing() -> Iterator[Callable[[T], T]]:
    """Register loops and clients to stop at the end of the test, failed or not."""
    things: list[Any] = []

    def register(thing: T) -> T:
        things.append(thing)
        return thing

    yield register
    for thing in reversed(things):
        (thing.stop if isinstance(thing, Core) else thing.close)()


# -- a scripted remote -----------------------------------------------------------------------------


class FakeRemote:
    """A listening socket the test accepts on and speaks MQTT through by hand."""

    def __init__(self, port: int = 0) -> None:
        self.listener = socket.create_server(("127.0.0.1", port))
        self.port = self.listener.getsockname()[1]
        self.listener.setblocking(False)
        self.sock: socket.socket | None = None
        self.packets: list[Packet] = []
        self._frames = Decoder(first_bytes=AWAITING_CONNECT_FIRST_BYTES)

    def accepted(self) -> bool:
        if self.sock is None:
            try:
                self.sock, _ = self.listener.accept()
            except BlockingIOError:
                return False
            self.sock.setblocking(False)
            self._frames = Decoder(first_bytes=AWAITING_CONNECT_FIRST_BYTES)
        return True

    def received(self, kind: type) -> list[Any]:
        """Read what has arrived; the packets of one kind so far."""
        if self.accepted():
            assert self.sock is not None
            try:
                data = self.sock.recv(1 << 20)
            except BlockingIOError:
                data = None
            if data:
                self.packets += self._frames.feed(data)
        return [packet for packet in self.packets if isinstance(packet, kind)]

    def send(self, packet: Packet) -> None:
        assert self.sock is not None
        self.sock.sendall(encode(packet))

    def drop(self) -> None:
        """Close the accepted connection (the bridge sees EOF)."""
        assert self.sock is not None
        self.sock.close()
        self.sock = None
        self.packets = []

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
        self.listener.close()


@pytest.fixture
def fake_remote() -> Iterator[FakeRemote]:
    remote = FakeRemote()
    yield remote
    remote.close()


def connect_stepper(remote: FakeRemote, config: BridgeConfig, closing: Closing) -> Stepper:
    """A Stepper whose bridge got through CONNECT/CONNACK to ``remote``."""
    stepper = closing(Stepper([config]))
    stepper.start()
    stepper.until(lambda: remote.received(Connect), "the bridge's CONNECT")
    remote.send(Connack(False, 0))
    stepper.until(lambda: stepper.bridge.state is State.UP, "the bridge up")
    return stepper


# -- against a scripted remote -----------------------------------------------------------------------


def test_connect_subscribe_and_notification_on_the_wire(fake_remote: FakeRemote, closing: Closing) -> None:
    config = bridge_config(fake_remote.port, remote_username="u", remote_password="p", remote_clientid=None)
    stepper = closing(Stepper([config]))
    observer = LocalClient(stepper.broker, "observer", [(NOTIFY, 1)])
    stepper.start()
    assert stepper.logged(f"Connecting bridge b1 (127.0.0.1:{fake_remote.port})")
    (connect,) = stepper.until(lambda: fake_remote.received(Connect), "the bridge's CONNECT")
    # Level 4 with mosquitto's bridge bit (0x84), the will saying "0" on the notification topic.
    assert connect.protocol_level == 4 and connect.bridge
    assert connect.client_id == f"{socket.gethostname()}.b1"
    assert not connect.clean_session and connect.keepalive == 30
    assert (connect.username, connect.password) == ("u", b"p")
    will = connect.will
    assert (will.topic, will.payload, will.qos, will.retain) == (NOTIFY, b"0", 1, True)
    assert not fake_remote.received(Subscribe)  # nothing but CONNECT before the CONNACK

    fake_remote.send(Connack(False, 0))
    (subscribe,) = stepper.until(lambda: fake_remote.received(Subscribe), "the remote SUBSCRIBE")
    assert dict(subscribe.subscriptions) == {"hq/site1/cmd/#": 1, "chat/#": 1}  # in and both
    (state,) = stepper.until(lambda: fake_remote.received(Publish), "the notification")
    assert (state.topic, state.payload, state.retain) == (NOTIFY, b"1", True)
    assert observer.payloads(NOTIFY) == [b"0", b"1"]  # "0" at start, as mosquitto does
    assert stepper.logged("Bridge b1 connected")
    # The local side: a bridge connection (0x84) of a persistent session, subscribed to out and both.
    session = stepper.broker.sessions[f"local.{socket.gethostname()}.b1"]
    assert session.connection is not None and session.connection.bridge and not session.clean
    assert session.subscriptions == {"site/sensors/#": 1, "chat/#": 1}


def test_relay_keeps_packet_ids_and_rewrites_topics(fake_remote: FakeRemote, closing: Closing) -> None:
    stepper = connect_stepper(fake_remote, bridge_config(fake_remote.port), closing)
    local = LocalClient(stepper.broker, "local", [("site/#", 2)])
    # Remote -> local: QoS 2 with the remote's packet id 77; the core's PUBREC/PUBCOMP go back with it.
    fake_remote.send(Publish("hq/site1/cmd/go", b"c", 2, packet_id=77))
    stepper.until(lambda: local.payloads("site/cmd/go"), "the command locally")
    assert [p.packet_id for p in stepper.until(lambda: fake_remote.received(Pubrec), "PUBREC")] == [77]
    fake_remote.send(Pubrel(77))
    assert [p.packet_id for p in stepper.until(lambda: fake_remote.received(Pubcomp), "PUBCOMP")] == [77]
    # Local -> remote: the core's packet id crosses; the remote's PUBACK completes the core's delivery.
    local.publish("site/sensors/t", b"21.5", qos=1)
    (sent,) = stepper.until(lambda: fake_remote.received(Publish)[1:], "the sensor reading remotely")
    assert (sent.topic, sent.payload, sent.qos) == ("hq/site1/sensors/t", b"21.5", 1)
    bridge_session = stepper.broker.sessions["local.b1-remote"]
    assert list(bridge_session.inflight) == [sent.packet_id]
    fake_remote.send(Puback(sent.packet_id))
    stepper.until(lambda: not bridge_session.inflight, "the delivery completed by the remote's PUBACK")


def test_keepalive_pings_then_gives_up_after_1_5_periods(fake_remote: FakeRemote, closing: Closing) -> None:
    stepper = connect_stepper(fake_remote, bridge_config(fake_remote.port, keepalive_interval=10), closing)
    observer = LocalClient(stepper.broker, "observer", [(NOTIFY, 1)])
    stepper.advance(10)
    stepper.until(lambda: fake_remote.received(Pingreq), "PINGREQ after one period")
    fake_remote.send(Pingresp())
    stepper.turn()
    stepper.advance(10)
    stepper.until(lambda: len(fake_remote.received(Pingreq)) == 2, "the next PINGREQ")
    assert stepper.bridge.state is State.UP
    stepper.advance(5)  # 15 s = 1.5 x keepalive since the PINGRESP: the remote is gone
    assert stepper.bridge.state is State.IDLE
    assert stepper.logged("Bridge b1: connection lost: keepalive timeout")
    assert observer.payloads(NOTIFY) == [b"1", b"0"]
    assert stepper.bridge.retry_at == pytest.approx(stepper.now + 0.1)


def test_backoff_doubles_to_the_cap_and_resets_after_connack(closing: Closing) -> None:
    remote = FakeRemote()
    port = remote.port
    remote.close()  # refused until it listens again
    stepper = closing(Stepper([bridge_config(port, restart_timeout=(1.0, 4.0))]))
    stepper.start()
    delays = []
    for _ in range(4):
        stepper.until(lambda: stepper.bridge.state is State.IDLE, "the refusal")
        delays.append(stepper.bridge.retry_at - stepper.now)
        stepper.advance(delays[-1])  # the retry timer fires: a new attempt
    assert delays == [1.0, 2.0, 4.0, 4.0]
    assert stepper.logged(f"Bridge b1: connecting to 127.0.0.1:{port} failed: Connection refused")
    stepper.until(lambda: stepper.bridge.state is State.IDLE, "the fifth refusal")
    remote = FakeRemote(port)
    try:
        stepper.advance(4.0)
        stepper.until(lambda: remote.received(Connect), "CONNECT once the port listens")
        remote.send(Connack(False, 0))
        stepper.until(lambda: stepper.bridge.state is State.UP, "the bridge up")
        remote.drop()
        stepper.until(lambda: stepper.bridge.state is State.IDLE, "the link lost")
        assert stepper.bridge.retry_at - stepper.now == 1.0  # the series starts again
        assert stepper.logged("Bridge b1: connection lost: ")  # EOF, or a reset if bytes were unread
    finally:
        remote.close()


def test_next_address_then_plain_level_4(fake_remote: FakeRemote, closing: Closing) -> None:
    addresses = [("127.0.0.1", closed_port()), ("127.0.0.1", fake_remote.port)]
    stepper = closing(Stepper([bridge_config(0, addresses=addresses)]))
    stepper.start()
    stepper.until(lambda: stepper.bridge.state is State.IDLE, "the first address refused")
    stepper.advance(0.1)
    (first,) = stepper.until(lambda: fake_remote.received(Connect), "CONNECT to the second address")
    assert first.bridge
    fake_remote.send(Connack(False, 1))  # a broker that does not know the 0x80 bit: unacceptable level
    stepper.until(lambda: stepper.bridge.state is State.IDLE, "the refusal")
    assert stepper.logged("Connection Refused: unacceptable protocol version")
    fake_remote.drop()
    stepper.advance(0.2)  # next attempt: the first address again (refused), then the second
    stepper.until(lambda: stepper.bridge.state is State.IDLE, "the first address refused again")
    stepper.advance(0.4)
    (second,) = stepper.until(lambda: fake_remote.received(Connect), "CONNECT without try_private")
    assert not second.bridge and second.protocol_level == 4


def test_a_resumed_local_session_drops_filters_no_longer_configured(
    fake_remote: FakeRemote, closing: Closing
) -> None:
    old_topics = [BridgeTopic("sensors/#", "out", 1, "site/", "hq/site1/"), BridgeTopic("old/#", "out", 1)]
    stepper = connect_stepper(fake_remote, bridge_config(fake_remote.port, topics=old_topics), closing)
    assert set(stepper.broker.sessions["local.b1-remote"].subscriptions) == {"site/sensors/#", "old/#"}
    stepper.bridges.close()  # the broker restarts with a new configuration; the session stays
    fake_remote.drop()
    stepper.bridges = BridgeSet(
        [bridge_config(fake_remote.port)], stepper.broker, stepper.epoll, stepper.log, stepper.clock
    )
    stepper.start()
    stepper.until(lambda: fake_remote.received(Connect), "CONNECT of the new configuration")
    fake_remote.send(Connack(False, 0))
    stepper.until(lambda: stepper.bridge.state is State.UP, "the bridge up")
    assert stepper.logged("Bridge b1: resuming the local session")
    session = stepper.broker.sessions["local.b1-remote"]
    assert session.subscriptions == {"site/sensors/#": 1, "chat/#": 1}


class NoAnonymous(Policy):
    """``allow_anonymous false``: the bridge's local CONNECT carries no user name."""

    def authenticate(self, connect: Connect) -> int:
        return ConnackCode.ACCEPTED if connect.username else ConnackCode.NOT_AUTHORIZED


def test_the_local_broker_trusts_its_bridge_without_anonymous_access(
    fake_remote: FakeRemote, closing: Closing
) -> None:
    # mosquitto exempts its bridges from authentication: the bridge's in-process client is
    # opened as trusted, so a broker that refuses anonymous clients still runs its bridges.
    stepper = closing(Stepper([bridge_config(fake_remote.port)], policy=NoAnonymous()))
    observer = LocalClient(stepper.broker, "observer", [(NOTIFY, 1)], username="observer")
    stepper.start()
    stepper.until(lambda: fake_remote.received(Connect), "the bridge's CONNECT")
    fake_remote.send(Connack(False, 0))
    stepper.until(lambda: fake_remote.received(Subscribe), "the bridge's SUBSCRIBE to the remote")
    assert stepper.bridge.connections == 1
    assert not stepper.logged("refused")
    stepper.until(lambda: observer.payloads(NOTIFY)[-1:] == [b"1"], "the link reported up")


def test_the_first_tick_starts_bridges_nobody_started(fake_remote: FakeRemote, closing: Closing) -> None:
    stepper = closing(Stepper([bridge_config(fake_remote.port)]))
    stepper.bridges.tick(stepper.now)  # a server that never called start()
    stepper.started = True
    stepper.until(lambda: fake_remote.received(Connect), "the bridge's CONNECT")


def test_a_host_name_is_resolved_off_the_loop(fake_remote: FakeRemote, closing: Closing) -> None:
    stepper = closing(Stepper([bridge_config(0, addresses=[("localhost", fake_remote.port)])]))
    stepper.start()
    assert stepper.bridge.state is State.CONNECTING  # start() returned without waiting for DNS
    # localhost may be ::1 first, where nothing listens: the next address of the name is tried.
    stepper.until(lambda: fake_remote.received(Connect), "CONNECT via the resolved name")


def test_remote_output_backpressure_holds_the_core_back(fake_remote: FakeRemote, closing: Closing) -> None:
    stepper = connect_stepper(fake_remote, bridge_config(fake_remote.port), closing)
    local = LocalClient(stepper.broker, "local", [])
    bridge = stepper.bridge
    payload = b"x" * 100_000
    published = 0
    while not bridge.local.backed_up:  # QoS 0 toward a remote that reads nothing, until it shows
        assert published < 500, "50 MB went out without the bridge's connection backing up"
        local.publish("site/sensors/big", payload)
        published += 1
        stepper.turn(0)
    # Held back once past the high-water mark, until the remote drains below the low one.
    assert bridge.remote_pending >= LOW_WATER
    assert bridge.local.output_bytes > 0  # the core keeps what the bridge would not take

    def accounted() -> bool:  # sent, or dropped by the core's own QoS 0 rule if it got congested
        big = [p for p in fake_remote.received(Publish) if p.topic == "hq/site1/sensors/big"]
        return len(big) + stepper.broker.stats.publish_dropped == published

    stepper.until(accounted, "every message accounted for once the remote reads", timeout=20)
    assert not bridge.local.backed_up and bridge.remote_pending == 0


def test_split_ready_and_a_goodbye_on_close(fake_remote: FakeRemote, closing: Closing) -> None:
    stepper = connect_stepper(fake_remote, bridge_config(fake_remote.port), closing)
    assert stepper.bridges.split_ready([(12345, select.EPOLLIN)]) == [(12345, select.EPOLLIN)]
    stepper.bridges.close()
    stepper.until(lambda: fake_remote.received(Disconnect), "DISCONNECT")
    last_state = fake_remote.received(Publish)[-1]
    assert (last_state.topic, last_state.payload, last_state.retain) == (NOTIFY, b"0", True)
    assert stepper.bridge.state is State.CLOSED and stepper.bridges.tick(stepper.now) is None


# -- against a real mosquitto --------------------------------------------------------------------------


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path)
    broker.start()
    yield broker
    broker.stop()


def bridged(
    mosquitto: Mosquitto, closing: Closing, **overrides: Any
) -> tuple[BridgeLoop, LocalClient, RemoteClient]:
    """A running bridge to ``mosquitto``, a local observer and a remote subscriber, both ends up."""
    remote = closing(RemoteClient(mosquitto.port, "remote-sub", [("hq/#", 1), ("chat/#", 1), (NOTIFY, 1)]))
    loop = closing(BridgeLoop([bridge_config(mosquitto.port, **overrides)]))
    observer = loop.client("observer", [("site/#", 1), ("chat/#", 1), (NOTIFY, 1)])
    loop.call(loop.start)
    # The notification follows the bridge's SUBSCRIBE on each side: once both ends have seen
    # "1", messages published at either end find the bridge subscribed.
    wait_until(lambda: observer.payloads(NOTIFY) == [b"0", b"1"], what="the local notification 1")
    wait_until(lambda: remote.payloads(NOTIFY)[-1:] == [b"1"], what="the remote notification 1")
    return loop, observer, remote


@needs_mosquitto
def test_messages_cross_both_ways_at_qos_0_and_1_with_prefixes(
    mosquitto: Mosquitto, closing: Closing
) -> None:
    loop, observer, remote = bridged(mosquitto, closing)
    publisher = loop.client("publisher", [])
    for qos in (0, 1):
        loop.call(lambda qos=qos: publisher.publish(f"site/sensors/q{qos}", b"out %d" % qos, qos))
        wait_until(lambda qos=qos: remote.received(f"hq/site1/sensors/q{qos}"), what=f"out at QoS {qos}")
        out_topic = f"hq/site1/sensors/q{qos}"
        assert remote.received(out_topic) == [(out_topic, b"out %d" % qos, qos, False)]
        remote.publish(f"hq/site1/cmd/q{qos}", b"in %d" % qos, qos)
        wait_until(lambda qos=qos: observer.payloads(f"site/cmd/q{qos}"), what=f"in at QoS {qos}")
        (packet,) = [p for p in observer.received if p.topic == f"site/cmd/q{qos}"]
        assert (packet.payload, packet.qos) == (b"in %d" % qos, qos)
    # What no rule names stays on its side; a bridged message sent after it is the fence.
    loop.call(lambda: publisher.publish("site/other", b"local only", 1))
    remote.publish("hq/site1/other", b"remote only", 1)
    loop.call(lambda: publisher.publish("site/sensors/fence", b"f", 1))
    remote.publish("hq/site1/cmd/fence", b"f", 1)
    wait_until(lambda: remote.payloads("hq/site1/sensors/fence"), what="the outbound fence")
    wait_until(lambda: observer.payloads("site/cmd/fence"), what="the inbound fence")
    # Each side sees its own copy only: "remote only" never became site/other, nor the reverse.
    assert remote.payloads("hq/site1/other") == [b"remote only"]
    assert observer.payloads("site/other") == [b"local only"]
    assert loop.logged("Bridge b1 connected")
    # Shutdown: the remote learns the link is down (DISCONNECT discards the will, so a "0").
    loop.stop()
    wait_until(lambda: remote.payloads(NOTIFY)[-1:] == [b"0"], what="the remote notification 0")


@needs_mosquitto
def test_a_message_never_comes_back_over_the_bridge(mosquitto: Mosquitto, closing: Closing) -> None:
    loop, observer, remote = bridged(mosquitto, closing)
    publisher = loop.client("publisher", [])
    # Remote -> local: the core must not send it back out to the bridge it came from. An echo
    # would reach the remote before the fence, which leaves the core after it.
    remote.publish("chat/from-remote", b"r", 1)
    wait_until(lambda: observer.payloads("chat/from-remote"), what="the remote message locally")
    loop.call(lambda: publisher.publish("chat/fence", b"1", 1))
    wait_until(lambda: remote.payloads("chat/fence"), what="the first fence at the remote")
    assert remote.payloads("chat/from-remote") == [b"r"]
    assert observer.payloads("chat/from-remote") == [b"r"]
    # Local -> remote: mosquitto must not send it back to us (our CONNECT said 0x84, try_private).
    loop.call(lambda: publisher.publish("chat/from-local", b"l", 1))
    wait_until(lambda: remote.payloads("chat/from-local"), what="the local message remotely")
    remote.publish("chat/fence", b"2", 1)
    wait_until(lambda: observer.payloads("chat/fence") == [b"1", b"2"], what="the second fence locally")
    assert observer.payloads("chat/from-local") == [b"l"]
    assert remote.payloads("chat/from-local") == [b"l"]


@needs_mosquitto
def test_remote_restart_reconnects_and_delivers_what_was_queued(
    mosquitto: Mosquitto, closing: Closing
) -> None:
    # A remote subscriber with a persistent session, which mosquitto saves across its restart;
    # paho reconnects it by itself once mosquitto is back.
    sub = closing(RemoteClient(mosquitto.port, "persistent-sub", [("hq/site1/sensors/#", 1)], clean=False))
    loop, observer, _ = bridged(mosquitto, closing)
    publisher = loop.client("publisher", [])
    loop.call(lambda: publisher.publish("site/sensors/before", b"b", 1))
    wait_until(lambda: sub.payloads("hq/site1/sensors/before"), what="a message before the restart")

    mosquitto.stop()
    wait_until(lambda: observer.payloads(NOTIFY) == [b"0", b"1", b"0"], what="the local notification 0")
    assert loop.logged("Bridge b1: connection lost: ")
    assert loop.state() is not State.UP
    for index in range(3):
        loop.call(lambda index=index: publisher.publish(f"site/sensors/down{index}", b"m%d" % index, 1))
    # The bridge's persistent local session holds them while the remote is away.
    session = "local.b1-remote"
    queued = loop.call(lambda: [message.topic for message, _, _ in loop.broker.sessions[session].queue])
    assert queued == ["site/sensors/down0", "site/sensors/down1", "site/sensors/down2"]

    mosquitto.start()
    notified = [b"0", b"1", b"0", b"1"]
    wait_until(lambda: observer.payloads(NOTIFY) == notified, timeout=10, what="the local notification 1")
    assert loop.logged("Bridge b1 reconnected")
    wanted = [f"hq/site1/sensors/down{index}" for index in range(3)]
    wait_until(lambda: [m for m in sub.messages if m[0] in wanted][2:], timeout=10, what="the queued ones")
    assert [(m[0], m[1], m[2]) for m in sub.messages if m[0] in wanted] == [
        (topic, b"m%d" % index, 1) for index, topic in enumerate(wanted)
    ]
    assert loop.call(lambda: not loop.broker.sessions[session].queue)
