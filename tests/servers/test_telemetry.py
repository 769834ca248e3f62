"""Telemetry, seen by a watcher bound to a server's abstract socket: what the lessons rely on.

The schema (``servers/telemetry.py``), LT reporting a partly read socket again while ET reports
it once per edge, the naive boss/worker holding its lock across ``recv`` while the default model
does not, named threads, and silence when telemetry is off. The reader is bound right after the
server starts, before any traffic: events sent while nobody listens are dropped by design.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import select
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from mqtt.packets import Disconnect, Puback, Publish
from servers.telemetry import TelemetryReader
from tests.support.servers import ServerProcess
from tests.support.waiting import stays_false, wait_until

from .helpers import Clients, dedicated_server, next_publish, publish, subscribe, unique
from .test_io_models import MODELS

Event = dict[str, Any]
KINDS = {"accept", "conn", "close", "refuse", "wait", "lock", "queue"}
EPOLLIN = 0x001


class Watcher:
    """Binds a server's telemetry name and, like the TUI, keeps reading in a thread: the kernel
    queues only a few datagrams for us (net.unix.max_dgram_qlen, 10 by default) and the server
    drops whatever does not fit. ``events()`` parses, in the test's thread, what arrived so far.
    """

    def __init__(self, port: int) -> None:
        self.reader = TelemetryReader(port)
        self.datagrams: list[bytes] = []
        self._events: list[Event] = []
        self._parsed = 0  # datagrams already parsed into _events
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread = threading.Thread(target=self._receive, name="telemetry-watcher", daemon=True)
        self._thread.start()

    def _receive(self) -> None:
        while not self._stopping.is_set():
            if select.select([self.reader], [], [], 0.05)[0]:
                with contextlib.suppress(BlockingIOError), self._lock:
                    while True:
                        self.datagrams.append(self.reader.socket.recv(1 << 16))

    def events(self) -> list[Event]:
        """Every event so far, in order: each datagram holds JSON lines."""
        with self._lock:
            unparsed = self.datagrams[self._parsed :]
            self._parsed = len(self.datagrams)
        for datagram in unparsed:
            self._events.extend(json.loads(line) for line in datagram.split(b"\n") if line)
        return self._events

    def wait_for(self, kind: str, count: int = 1, **fields: object) -> list[Event]:
        """Poll until ``count`` events of ``kind`` carrying ``fields`` arrived; return them."""

        def matching() -> list[Event] | None:
            found = [
                event
                for event in self.events()
                if event["k"] == kind and all(event.get(name) == value for name, value in fields.items())
            ]
            return found if len(found) >= count else None

        return wait_until(matching, what=f"{count} {kind} event(s) with {fields}")

    def wait_drained(self) -> None:
        """Poll until the kernel queue is empty, so the next datagrams cannot find it full."""
        wait_until(lambda: not select.select([self.reader], [], [], 0)[0], what="the watcher to catch up")

    def close(self) -> None:
        self._stopping.set()
        self._thread.join()
        self.reader.close()


@contextlib.contextmanager
def watched_server(variant: str, *flags: str) -> Iterator[tuple[ServerProcess, Watcher]]:
    with dedicated_server(variant, "--telemetry", *flags) as server:
        watcher = Watcher(server.port)
        try:
            yield server, watcher
        finally:
            watcher.close()


def round_trips(clients: Clients) -> list[str]:
    """QoS 1 from a raw publisher to a paho subscriber, and back; returns the client ids."""
    topic, reply_topic = unique("telemetry"), unique("reply")
    subscriber = clients.paho(client_id=(paho_id := unique("paho")))
    subscriber.subscribe(topic, qos=1)
    raw = clients.raw(raw_id := unique("raw"))
    assert subscribe(raw, (reply_topic, 1)) == (1,)
    for number in range(3):
        publish(raw, topic, b"%d" % number, qos=1, packet_id=number + 1)
        assert subscriber.next_message().payload == b"%d" % number
    subscriber.publish(reply_topic, b"back", qos=1)
    assert next_publish(raw).payload == b"back"
    return [paho_id, raw_id]


def lock_events_of_a_session(*flags: str) -> list[Event]:
    """Every ``lock`` event of a threaded server while two clients do round trips and leave."""
    with watched_server("threaded_boss_worker", *flags) as (server, watcher):
        with Clients(server) as clients:
            client_ids = round_trips(clients)
        for client_id in client_ids:  # a close comes after the lock events of its connection
            watcher.wait_for("close", client_id=client_id)
        return [event for event in watcher.events() if event["k"] == "lock"]


# -- the boss/worker lock -------------------------------------------------------------------


def test_naive_boss_worker_workers_hold_the_lock_across_recv() -> None:
    worker_locks = [
        event for event in lock_events_of_a_session("--naive") if event["thread"].startswith("worker-")
    ]
    assert worker_locks
    assert all(event["across_recv"] is True for event in worker_locks)
    assert all(event["hold_s"] > 0 for event in worker_locks)


def test_default_boss_worker_never_holds_the_lock_across_recv() -> None:
    locks = lock_events_of_a_session()
    assert {"worker-1", "worker-2"} <= {event["thread"] for event in locks}  # one client each
    assert all(event["across_recv"] is False for event in locks)


@pytest.mark.parametrize("flags", [(), ("--naive",)], ids=["default", "naive"])
def test_boss_worker_threads_are_running_and_named_once_the_server_says_it_listens(
    flags: tuple[str, ...],
) -> None:
    # No waiting: the readiness line comes only after every worker has named itself, so a
    # watcher (the TUI, a lab, a test's fd baseline) never sees a half-started server.
    with dedicated_server("threaded_boss_worker", *flags) as server:
        assert server.thread_names() == ["boss", "worker-1", "worker-2"]


# -- level- vs edge-triggered, seen in the wait events -----------------------------------------


def waits_around_one_sendall(variant: str) -> tuple[int, list[Event]]:
    """Send a ~1 KB PUBLISH in one sendall to a server reading 64 bytes per recv; return the
    client's server-side fd and the ``wait`` events from the sendall up to a fence connection.
    """
    with watched_server(variant, "--read-chunk", "64") as (server, watcher), Clients(server) as clients:
        raw = clients.raw(client_id := unique("edge"), keepalive=0)  # keepalive 0: no PINGREQ edges
        fd = watcher.wait_for("conn", client_id=client_id)[0]["fd"]
        watcher.wait_drained()
        start = len(watcher.events())
        raw.send(Publish(unique("chunks"), b"x" * 1000, qos=1, packet_id=1))
        assert raw.expect(Puback) == Puback(1)
        # Should LT's one datagram per wait outpace the watcher, the server drops lines by
        # design: that can only shorten the run of consecutive waits, never fake one.
        watcher.wait_drained()
        fence = clients.socket()  # a new connection: one more wait, which reports the listener
        watcher.wait_for("accept", peer="{}:{}".format(*fence.sock.getsockname()[:2]))
        return fd, [event for event in watcher.events()[start:] if event["k"] == "wait"]


def calls_reporting(fd: int, waits: list[Event]) -> list[int]:
    return [wait["call"] for wait in waits if any(ready_fd == fd for ready_fd, _ in wait["ready"])]


def test_level_triggered_reports_a_partly_read_socket_in_consecutive_waits() -> None:
    fd, waits = waits_around_one_sendall("epoll_lt")
    calls = calls_reporting(fd, waits)
    assert calls, "the client's fd was never reported ready"
    longest = run = 1
    for previous, current in itertools.pairwise(calls):
        run = run + 1 if current == previous + 1 else 1
        longest = max(longest, run)
    assert longest >= 3, f"fd {fd} reported by calls {calls}: one recv of 64 bytes per wait"
    assert all(mask & EPOLLIN for wait in waits for ready_fd, mask in wait["ready"] if ready_fd == fd)


def test_edge_triggered_reports_one_sendall_in_one_wait() -> None:
    fd, waits = waits_around_one_sendall("epoll_et")
    calls = calls_reporting(fd, waits)
    assert len(calls) == 1, f"fd {fd} reported by calls {calls}"
    following = [wait for wait in waits if wait["call"] == calls[0] + 1]
    assert following, "the wait after the edge was not seen"
    assert fd not in {ready_fd for ready_fd, _ in following[0]["ready"]}


# -- the schema and its transport ---------------------------------------------------------------


@pytest.mark.parametrize("model", MODELS)
def test_telemetry_is_versioned_json_lines_naming_accepts_connects_and_close_reasons(
    model: tuple[str, ...],
) -> None:
    started = time.monotonic()
    polite_id, abrupt_id = unique("polite"), unique("abrupt")
    with watched_server(*model) as (server, watcher), Clients(server) as clients:
        polite, abrupt = clients.raw(polite_id), clients.raw(abrupt_id)
        polite.send(Disconnect())
        abrupt.close()
        watcher.wait_for("close", client_id=polite_id)
        watcher.wait_for("close", client_id=abrupt_id)
        events = watcher.events()  # every datagram parsed as JSON lines, or this fails
        finished = time.monotonic()  # CLOCK_MONOTONIC is system-wide: the server's clock too
    assert all(len(datagram) < 1 << 16 for datagram in watcher.datagrams)
    assert all(isinstance(event, dict) and event["v"] == 1 and event["k"] in KINDS for event in events)
    assert all(isinstance(event["t"], float) and started <= event["t"] <= finished for event in events)

    by_client = {(event["k"], event.get("client_id")): event for event in events}
    accepts = {event["fd"]: event for event in events if event["k"] == "accept"}
    for client_id in (polite_id, abrupt_id):
        connect, close = by_client["conn", client_id], by_client["close", client_id]
        assert accepts[connect["fd"]]["peer"] == connect["peer"]
        assert (close["fd"], close["peer"]) == (connect["fd"], connect["peer"])
    assert "DISCONNECT" in by_client["close", polite_id]["reason"]
    assert "closed" in by_client["close", abrupt_id]["reason"]

    waits = [event for event in events if event["k"] == "wait"]
    assert waits or "--naive" in model  # the naive boss does not report its epoll_wait
    for wait in waits:
        assert wait["variant"] == model[0] and wait["mode"] in {"select", "poll", "LT", "ET"}
        assert wait.get("thread", "worker-").startswith("worker-")  # threaded: whose wait it was
        assert wait["call"] >= 1 and wait["blocked_s"] >= 0 and wait["watched"] >= 1
        assert all(len(pair) == 2 for pair in wait["ready"]) and 0 <= wait["part"] < wait["parts"]


@pytest.mark.parametrize("model", MODELS)
def test_without_the_telemetry_flag_nothing_is_sent(model: tuple[str, ...]) -> None:
    with dedicated_server(*model) as server, Clients(server) as clients:
        reader = TelemetryReader(server.port)
        try:
            topic = unique("silent")
            subscriber, publisher = clients.raw(), clients.raw()
            assert subscribe(subscriber, (topic, 0)) == (0,)
            deadline = time.monotonic() + 0.5
            while time.monotonic() < deadline:  # traffic flows for half a second ...
                publish(publisher, topic, b"quiet")
                assert next_publish(subscriber).payload == b"quiet"
                assert reader.read() == []
            assert stays_false(reader.read, 0.3)  # ... and nothing arrives afterwards either
        finally:
            reader.close()
