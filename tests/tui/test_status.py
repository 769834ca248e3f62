"""The status line tells the truth: a dead server, an empty port, telemetry off, a paused frame.

Pilot tests run the app against real servers (as ``--attach`` and ``--run`` build it) and poll
with a deadline; nothing sleeps to synchronise. Unit tests cover the rules behind the line:
when the collector looks for the server's pid again (ServerWatch, with a fake kernel).
"""

from __future__ import annotations

import contextlib
import os
import re
import socket
import struct
import subprocess
import threading
from collections import Counter
from collections.abc import AsyncIterator, Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from textual.pilot import Pilot

from servers.telemetry import TelemetryReader
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until
from tests.tui.live import abort, run_async, running, text_of, until, watching
from tui.app import LabApp
from tui.collector import PERIODS_S, TICK_S, Collector
from tui.launch import describe_exit
from tui.model import Batch, Model
from tui.sources.server_process import RESCAN_PERIOD_S, Liveness, ServerWatch, process_running
from tui.sources.tcp_activity import DumpGate
from tui.sources.tcp_sampler import SEQUENCE, TcpSampler
from tui.sources.tcp_states import NLMSG_DONE, NLMSG_HEADER, SOCK_DIAG_BY_FAMILY, TcpSocket, state_counts
from tui.widgets.status_bar import clock_text

# `ss` spells states with dashes and abbreviates ESTABLISHED.
SS_STATES = (
    {"ESTAB": "ESTABLISHED", "UNCONN": "CLOSE"}
    | {
        state.replace("_", "-"): state
        for state in (
            "SYN_SENT",
            "SYN_RECV",
            "FIN_WAIT_1",
            "FIN_WAIT_2",
            "TIME_WAIT",
            "CLOSE_WAIT",
            "LAST_ACK",
        )
    }
    | {"LISTEN": "LISTEN", "CLOSING": "CLOSING"}
)


def status(pilot: Pilot) -> str:
    return text_of(pilot, "StatusBar")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


async def never_live_for(pilot: Pilot, probes: int = 4) -> str:
    """The status line, checked at every frame over the next ``probes`` probes: never "live"."""
    collector = pilot.app.collector  # type: ignore[attr-defined]
    end = collector.status().checked_at + 0.25 * probes

    def checked() -> str | None:
        text = status(pilot)
        assert "live" not in text, text
        return text if collector.status().checked_at >= end else None

    return await until(pilot, checked, f"{probes} more probes")


@contextlib.asynccontextmanager
async def attached(port: int, pid: int | None, exit_status: Callable[[], str | None] | None = None
                   ) -> AsyncIterator[Pilot]:  # fmt: skip
    """The app as ``python -m tui --attach PORT`` (or ``--run``, with ``exit_status``) builds it."""
    reader = TelemetryReader(port)
    try:
        app = LabApp(Model(port, pid), Collector(port, pid, reader, None, exit_status))
        async with app.run_test(size=(120, 40)) as pilot:
            yield pilot
    finally:
        reader.close()


# ---------------------------------------------------------------- against real servers


@run_async
async def test_kill_9_of_an_attached_server_says_gone_and_never_live() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot:
            await until(pilot, lambda: "● live" in status(pilot), "the live status first")
            server.process.kill()
            await until(pilot, lambda: "SERVER GONE" in status(pilot), "the status to say the server is gone")
            text = await never_live_for(pilot)
            assert "server exited" in text and f"pid {server.pid}" in text


@run_async
async def test_a_server_the_tui_started_says_how_it_ended() -> None:
    with running("epoll_lt") as server:
        async with attached(server.port, server.pid, lambda: describe_exit(server.process.poll())) as pilot:
            await until(pilot, lambda: "● live" in status(pilot), "the live status first")
            server.process.kill()
            await until(pilot, lambda: "killed by SIGKILL" in status(pilot), "how the server ended")
            assert "SERVER GONE" in await never_live_for(pilot)


@run_async
async def test_an_attached_server_that_stops_is_gone_and_its_port_closed() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot:
            await until(pilot, lambda: "● live" in status(pilot), "the live status first")
            server.stop()  # SIGTERM: a clean exit
            await until(pilot, lambda: "SERVER GONE" in status(pilot), "the status to say the server is gone")
            assert not pilot.app.model.liveness.listening  # type: ignore[attr-defined, union-attr]
            await never_live_for(pilot)


@run_async
async def test_attach_to_a_port_where_nothing_listens_says_so() -> None:
    port = free_port()
    async with attached(port, None) as pilot:
        await until(pilot, lambda: "NOT LISTENING" in status(pilot), "the status to say nothing listens")
        text = await never_live_for(pilot)
        assert f"nothing listens on port {port}" in text
        assert "pid ?" in text


@run_async
async def test_a_server_started_without_telemetry_is_named_as_such() -> None:
    server = ServerProcess("epoll_lt")  # no --telemetry
    try:
        async with attached(server.port, server.pid) as pilot:
            wanted = "telemetry off: server started without --telemetry"
            await until(pilot, lambda: wanted in status(pilot), "the telemetry-off note")
    finally:
        server.stop()


@run_async
async def test_attach_before_the_server_starts_finds_it_and_follows_a_restart() -> None:
    port = free_port()
    async with attached(port, None) as pilot:
        model: Model = pilot.app.model  # type: ignore[attr-defined]
        await until(pilot, lambda: "NOT LISTENING" in status(pilot), "the empty port first")
        first = ServerProcess("epoll_lt", "--telemetry", "--port", str(port))
        try:
            await until(pilot, lambda: model.pid == first.pid, "the pid of the server that started", 15)
            assert model.variant == "epoll_lt"
            listener = await until(
                pilot,
                lambda: [row for row in model.interest_rows if row.label == "listener"],
                "its epoll set",
            )
            assert listener[0].state == "LISTEN"
        finally:
            first.stop()
        second = ServerProcess("threaded_boss_worker", "--telemetry", "--port", str(port))
        try:
            await until(pilot, lambda: model.pid == second.pid, "the pid of the restarted server", 15)
            assert model.variant == "threaded_boss_worker"
            await pilot.press("3")
            names = lambda: {row.sample.name for row in model.threads.rows}  # noqa: E731
            await until(pilot, lambda: {"boss", "worker-1"} <= names(), "the new server's threads")
            assert {row.sample.tid for row in model.threads.rows} >= {second.pid}
            await until(pilot, lambda: "worker-1" in text_of(pilot, "#lanes"), "the threads panel to fill")
            await until(pilot, lambda: "● live" in status(pilot), "the live status")
        finally:
            second.stop()


def ss_counts(port: int) -> dict[str, int]:
    """Sockets per state on ``port`` as `ss -tan` reports them (IPv4, as the TUI dumps)."""
    output = subprocess.run(
        ["ss", "-4tanH", f"( sport = :{port} or dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return dict(Counter(SS_STATES.get(line.split()[0], line.split()[0]) for line in output.splitlines()))


def screen_counts(pilot: Pilot) -> dict[str, int]:
    """The state counts the TCP tab's legend shows, e.g. "■ LISTEN 1  ■ ESTABLISHED 10"."""
    legend = text_of(pilot, "StateCountBar")
    return {
        state: int(count.replace(",", "")) for state, count in re.findall(r"([A-Z_0-9]+) (\d[\d,]*)", legend)
    }


@run_async
async def test_a_paused_frame_equals_its_sample_and_ss_run_meanwhile() -> None:
    with running("epoll_lt") as server:
        clients = [RawClient(server.port) for _ in range(5)]
        try:
            for index, client in enumerate(clients):
                client.connect(f"paused-{index}")
            async with watching(server) as pilot:
                app: LabApp = pilot.app  # type: ignore[assignment]
                model, collector = app.model, app.collector
                assert collector is not None
                await pilot.press("2")
                await until(
                    pilot, lambda: model.tcp.counts.get("ESTABLISHED", 0) >= 10, "both ends of 5 clients"
                )
                await pilot.press("p")
                dumps, probed = collector.dumps, collector.status().checked_at  # type: ignore[union-attr]
                # The kernel polls stop; the probe the status line needs goes on.
                await until(pilot, lambda: collector.status().checked_at >= probed + 1.0, "four more probes")  # type: ignore[union-attr]
                assert collector.dumps == dumps
                frame = status(pilot)
                assert "PAUSED" in frame and f"TCP sample {clock_text(model.tcp_wall)}" in frame  # type: ignore[arg-type]
                shown = screen_counts(pilot)
                assert shown == state_counts(model.tcp.rows)  # the numbers on screen are the sample's
                assert shown == ss_counts(server.port)  # and, with no churn, the kernel's now
        finally:
            for client in clients:
                abort(client)


# ---------------------------------------------------------------- rediscovery rules, fake kernel


class FakeKernel:
    """Listening inodes and a /proc scan that the test controls; counts the scans."""

    def __init__(self) -> None:
        self.inodes: set[int] = set()
        self.owner: int | None = None
        self.scans = 0

    def listening(self, port: int) -> set[int]:
        return set(self.inodes)

    def scan(self, inodes: set[int]) -> int | None:
        self.scans += 1
        return self.owner


def dead_pid() -> int:
    child = subprocess.Popen(["true"])
    child.wait()
    return child.pid


def test_no_scan_while_nothing_listens() -> None:
    kernel = FakeKernel()
    watch = ServerWatch(1883, None, listening=kernel.listening, scan=kernel.scan)
    for tick in range(20):
        liveness = watch.probe(tick * 0.25)
    assert kernel.scans == 0
    assert (liveness.pid, liveness.listening, liveness.running) == (None, False, False)


def test_a_listener_appearing_is_scanned_for_once_and_its_pid_adopted() -> None:
    kernel = FakeKernel()
    watch = ServerWatch(1883, None, listening=kernel.listening, scan=kernel.scan)
    watch.probe(0.0)
    kernel.inodes, kernel.owner = {4242}, os.getpid()  # a live process: this test's own
    liveness = watch.probe(0.25)
    assert (liveness.pid, liveness.running, liveness.listening) == (os.getpid(), True, True)
    for tick in range(2, 40):
        watch.probe(tick * 0.25)
    assert kernel.scans == 1  # found and running: no more scans


def test_scans_for_a_vanished_server_are_at_most_one_a_second() -> None:
    kernel = FakeKernel()
    kernel.inodes = {4242}  # something listens, but its owner cannot be found (another user's)
    watch = ServerWatch(1883, dead_pid(), listening=kernel.listening, scan=kernel.scan)
    for tick in range(40):  # ten seconds of probes, four a second
        liveness = watch.probe(tick * 0.25)
    assert not liveness.running and liveness.listening
    assert 1 <= kernel.scans <= 10 / RESCAN_PERIOD_S


def test_a_restart_on_the_same_port_is_followed() -> None:
    kernel = FakeKernel()
    first = dead_pid()
    kernel.inodes, kernel.owner = {1}, first
    watch = ServerWatch(1883, first, listening=kernel.listening, scan=kernel.scan)
    assert not watch.probe(0.0).running  # the first server is gone
    kernel.inodes, kernel.owner = {2}, os.getpid()  # a new listener, a new process
    liveness = watch.probe(1.0)
    assert liveness.pid == os.getpid() and liveness.running


def test_a_new_listener_under_a_running_pid_is_checked_once() -> None:
    kernel = FakeKernel()
    kernel.inodes, kernel.owner = {1}, os.getpid()
    watch = ServerWatch(1883, os.getpid(), listening=kernel.listening, scan=kernel.scan)
    watch.probe(0.0)
    scans = kernel.scans
    kernel.inodes = {2}  # the listener was replaced: is it still ours?
    for tick in range(1, 20):
        watch.probe(tick * 0.25)
    assert kernel.scans == scans + 1


def test_a_zombie_counts_as_gone() -> None:
    child = subprocess.Popen(["true"])
    try:
        # Exited but not reaped: /proc still lists it (state Z) and kill(pid, 0) still succeeds.
        wait_until(lambda: state_of(child.pid) == "Z", what="the child to exit")
        os.kill(child.pid, 0)
        assert not process_running(child.pid)
    finally:
        child.wait()
    assert not process_running(child.pid)


def state_of(pid: int) -> str:
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0]


@pytest.mark.parametrize(
    ("code", "text"), [(-9, "killed by SIGKILL"), (1, "exited with status 1"), (None, None)]
)
def test_describe_exit(code: int | None, text: str | None) -> None:
    assert describe_exit(code) == text


# ---------------------------------------------------------------- the dump-diff cache, made-up replies

DIAG_MESSAGE = struct.Struct("=BBBBHH4s12x4s12x12xIIIII")  # struct inet_diag_msg, AF_INET
MULTI = 0x2  # NLM_F_MULTI, as the kernel marks dump replies


def diag_message(
    state: int, client_port: int, recv_q: int, send_q: int, inode: int, expires: int = 0
) -> bytes:
    """One reply message as the kernel sends it: nlmsghdr + inet_diag_msg for 127.0.0.1."""
    loopback = socket.inet_aton("127.0.0.1")
    payload = DIAG_MESSAGE.pack(
        socket.AF_INET, state, 0, 0, socket.htons(1883), socket.htons(client_port), loopback, loopback,
        expires, recv_q, send_q, 0, inode,
    )  # fmt: skip
    return (
        NLMSG_HEADER.pack(NLMSG_HEADER.size + len(payload), SOCK_DIAG_BY_FAMILY, MULTI, SEQUENCE, 0) + payload
    )


DONE = NLMSG_HEADER.pack(NLMSG_HEADER.size + 4, NLMSG_DONE, MULTI, SEQUENCE, 0) + struct.pack("=i", 0)
Socket = tuple[int, int, int, int, int, int]  # state, client port, Recv-Q, Send-Q, inode, expires


def datagrams(sockets: list[Socket], per_datagram: int) -> list[bytes]:
    """The reply split the way the kernel splits it: so many messages per datagram, DONE last."""
    messages = [diag_message(*fields) for fields in sockets]
    chunks = [
        b"".join(messages[start : start + per_datagram]) for start in range(0, len(messages), per_datagram)
    ]
    return [*chunks, DONE]


def fresh_rows(replies: list[bytes]) -> list[TcpSocket]:
    return TcpSampler(1883).rows_from(replies)


socket_strategy = st.tuples(
    st.integers(1, 11),  # state
    st.integers(1024, 65535),  # client port
    st.integers(0, 5),  # Recv-Q
    st.integers(0, 5),  # Send-Q
    st.integers(1, 10**6),  # inode
    st.sampled_from([0, 0, 0, 30_000]),  # timer left: TIME_WAIT's changes at every dump
)
sockets_strategy = st.lists(socket_strategy, max_size=60)


@given(
    before=sockets_strategy, after=sockets_strategy, per_datagram=st.integers(1, 7), shift=st.integers(0, 3)
)
@settings(max_examples=300, deadline=None)
def test_the_dump_cache_never_returns_a_stale_row(
    before: list[Socket], after: list[Socket], per_datagram: int, shift: int
) -> None:
    """Whatever the next dump holds (some sockets kept, some changed, datagram boundaries moved),
    the rows are exactly what decoding it from scratch gives."""
    sampler = TcpSampler(1883)
    sampler.rows_from(datagrams(before, per_datagram))
    following = before[:shift] + after  # a prefix in common, so whole datagrams may repeat
    replies = datagrams(following, per_datagram + shift % 2)
    assert sampler.rows_from(replies) == fresh_rows(replies)
    assert sampler.rows_from(replies) == fresh_rows(replies)  # and again, from the cache alone


def test_a_changed_message_is_decoded_again_and_an_unchanged_dump_not_at_all() -> None:
    sockets = [(1, 40000 + index, 0, 0, 1000 + index, 0) for index in range(30)]
    sampler = TcpSampler(1883)
    first = sampler.rows_from(datagrams(sockets, 8))
    assert sampler.decoded == 30
    assert sampler.rows_from(datagrams(sockets, 8)) is first and sampler.decoded == 0
    sockets[13] = (1, 40013, 7, 0, 1013, 0)  # seven unread bytes on one socket
    changed = sampler.rows_from(datagrams(sockets, 8))
    assert sampler.decoded == 1
    assert changed[13].recv_q == 7 and changed[12] is first[12] and changed[20] is first[20]
    del sockets[0]  # a socket gone: every datagram after it shifts, yet no message is new
    shifted = sampler.rows_from(datagrams(sockets, 8))
    assert sampler.decoded == 0 and shifted == changed[1:]


# ---------------------------------------------------------------- when the collector dumps, fake kernel


GATE = DumpGate()  # the defaults the collector uses


class CountingSampler:
    """Stands in for TcpSampler: counts dumps; each dump returns a new list (as if changed) or the same."""

    def __init__(self) -> None:
        self.rows: list[TcpSocket] = []
        self.dumps = 0
        self.changes = False

    def sample(self) -> list[TcpSocket]:
        self.dumps += 1
        if self.changes:
            self.rows = list(self.rows)
        return self.rows

    def close(self) -> None:
        pass


def gated_collector(
    monkeypatch: pytest.MonkeyPatch,
) -> tuple[Collector, CountingSampler, list[bytes], list[float]]:
    counters, clock = [b"quiet"], [100.0]
    monkeypatch.setattr("tui.collector.tcp_counters", lambda: counters[0])
    collector = Collector(1, None, None)
    monkeypatch.setattr(collector.watch, "probe", lambda now: probed_nothing(now))
    sampler = CountingSampler()
    collector.tcp = sampler  # type: ignore[assignment]
    collector.clock = lambda: clock[0]
    return collector, sampler, counters, clock


def probed_nothing(now: float) -> Liveness:
    return Liveness(now, None, False, "", True, None, "")


def ticks(collector: Collector, clock: list[float], seconds: float) -> list[Batch]:
    """The sampler thread's passes over ``seconds`` of fake time."""
    batches = []
    for _ in range(round(seconds / TICK_S)):
        clock[0] += TICK_S
        batches.append(collector.collect())
    return batches


def test_no_dump_while_the_kernel_counters_stand_still_yet_the_rows_are_vouched_for(monkeypatch) -> None:
    collector, sampler, _counters, clock = gated_collector(monkeypatch)
    ticks(collector, clock, 2.0)  # the first dump, and the settling after it
    dumps = sampler.dumps
    while sampler.dumps == dumps:  # up to the dump the floor brings
        ticks(collector, clock, TICK_S)
    dumps = sampler.dumps
    batches = ticks(collector, clock, GATE.at_least_s * 0.9)
    assert sampler.dumps == dumps
    assert all(batch.tcp is sampler.rows and batch.sampled_at["tcp"] == batch.now for batch in batches)


def test_a_dump_at_least_every_so_often_whatever_the_counters(monkeypatch) -> None:
    collector, sampler, _counters, clock = gated_collector(monkeypatch)
    ticks(collector, clock, 2.0)
    dumps = sampler.dumps
    ticks(collector, clock, 10 * GATE.at_least_s)
    assert sampler.dumps - dumps == pytest.approx(10, abs=1)


def test_a_counter_that_moved_brings_a_dump_within_a_tick_and_then_one_per_period(monkeypatch) -> None:
    collector, sampler, counters, clock = gated_collector(monkeypatch)
    ticks(collector, clock, 2.0)
    dumps = sampler.dumps
    counters[0] = b"a segment"
    assert ticks(collector, clock, TICK_S)[-1].tcp is not None and sampler.dumps == dumps + 1
    sampler.changes = True  # the rows changed: keep dumping while things settle, at the period's pace
    for second in range(4):
        counters[0] = f"busy {second}".encode()
        ticks(collector, clock, 1.0)
    # At most one dump per period (plus the first); ticks may overshoot a period by one tick.
    assert 4 / (GATE.period_s + TICK_S) - 1 <= sampler.dumps - dumps <= 4 / GATE.period_s + 1


def test_telemetry_brings_a_dump(monkeypatch) -> None:
    collector, sampler, _counters, clock = gated_collector(monkeypatch)
    ticks(collector, clock, 2.0)
    dumps = sampler.dumps
    collector._telemetry_at = clock[0]  # what the telemetry thread records as a datagram arrives
    ticks(collector, clock, TICK_S)
    assert sampler.dumps == dumps + 1


def test_paused_no_dump_at_all_but_the_probe_goes_on(monkeypatch) -> None:
    collector, sampler, counters, clock = gated_collector(monkeypatch)
    ticks(collector, clock, 1.0)
    dumps = sampler.dumps
    collector.set_paused(True)
    counters[0] = b"changes the paused frame must not show"
    batches = ticks(collector, clock, 3 * GATE.at_least_s)
    assert sampler.dumps == dumps and all(batch.tcp is None for batch in batches)
    assert sum(batch.liveness is not None for batch in batches) >= 3 / (PERIODS_S["probe"] + TICK_S) - 1
    collector.set_paused(False)
    assert ticks(collector, clock, TICK_S)[-1].tcp is not None and sampler.dumps == dumps + 1


def test_the_first_change_after_a_quiet_spell_is_dumped_at_once_even_within_a_period(monkeypatch) -> None:
    collector, sampler, counters, clock = gated_collector(monkeypatch)
    ticks(collector, clock, 2.0)
    dumps = sampler.dumps
    while sampler.dumps == dumps:  # up to the dump the floor brings: the next is a period away
        ticks(collector, clock, TICK_S)
    counters[0] = b"the first segment in a while"
    ticks(collector, clock, TICK_S)
    assert sampler.dumps == dumps + 2
    counters[0] = b"and another one at once"  # now the period holds again
    ticks(collector, clock, TICK_S)
    assert sampler.dumps == dumps + 2


def test_on_change_is_called_when_a_dump_changes_the_rows() -> None:
    with running("epoll_lt") as server:
        collector = Collector(server.port, server.pid, None)
        changed = threading.Event()
        collector.on_change = changed.set
        collector.start()
        try:
            wait_until(lambda: changed.is_set() and collector.tcp.rows, what="the first dump")
            wait_until(lambda: collector.dumps >= 3, timeout=10, what="dumps of an idle port")
            changed.clear()
            client = RawClient(server.port)
            try:
                client.connect("on-change")
                wait_until(changed.is_set, what="a dump with the new connection")
                assert any(row.state == "ESTABLISHED" for row in collector.tcp.rows)
            finally:
                abort(client)
        finally:
            collector.stop()
