"""The threads view's lock timeline, stall report and cursor: made-up Batches, then real servers.

The unit tests feed telemetry events and /proc rows through ``Model.apply`` as the collector
does and check the slice arithmetic (a hold that spans slices is split, never counted twice),
the statistics window and the stall rules. The Pilot tests run ``--naive`` under load (each
worker waits while the other holds) and ``--blocking`` with a silent client (the stall shows
while it lasts, with the fd the kernel says the worker reads, and goes when the client speaks).
The builders here also feed the snapshots in test_snapshots_threads.py.
"""

from __future__ import annotations

import math
import os
import platform
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from textual.pilot import Pilot
from textual.widgets import Static

from mqtt.packets import Publish
from tests.support.clients import RawClient
from tests.tui.live import abort, run_async, running, text_of, until, watching
from tests.tui.sample_data import event
from tui.app import LabApp
from tui.format import duration
from tui.model import Batch, Model
from tui.model.threads import LOCK_WINDOW_S, SLICE_S, STALL_S, TIMELINE_SLICES, spread
from tui.sources.threads import ThreadRow, ThreadSample, parse_syscall
from tui.widgets.threads_view import (
    CURSOR_STYLE,
    ThreadsView,
    stall_lines,
    strip,
    summary,
    timeline_scale,
    timeline_slices,
)

PORT, PID = 1883, 4242
NOW = 1000.0  # a slice boundary: the statistics window is exactly [NOW - 2, NOW)
BOSS, WORKER_1, WORKER_2 = 4242, 4243, 4244
FUTEX_WORD = 0x55CC5D77CF50

# ---------------------------------------------------------------- builders (also for the snapshots)


def thread_row(tid: int, name: str, syscall: str, argument: int | None = None, **counters: Any) -> ThreadRow:
    """One /proc row; ``ticks``/``switches`` stand still unless given, as for a thread asleep."""
    ticks, switches, cpu = counters.get("ticks", 5), counters.get("switches", 100), counters.get("cpu", 0.0)
    state = "R" if syscall == "running" else "S"
    return ThreadRow(ThreadSample(tid, name, state, ticks, ticks, switches, 3, syscall, argument), cpu)


def lock(t: float, tid: int, wait_s: float, hold_s: float, across_recv: bool = True, **extra: Any) -> dict:
    thread = {BOSS: "boss", WORKER_1: "worker-1", WORKER_2: "worker-2"}[tid]
    return event(
        "lock", t, thread=thread, tid=tid, wait_s=wait_s, hold_s=hold_s, across_recv=across_recv, **extra
    )


def naive_events(now: float) -> list[dict]:
    """Ten seconds of --naive under load: the workers take turns, each waits while the other holds."""
    events = []
    t = now - 10.0
    holder, waiter = WORKER_1, WORKER_2
    turn = 0
    while t < now - 0.01:
        hold = 0.006 if holder == WORKER_1 else 0.004
        events.append(lock(t + hold, holder, wait_s=0.005, hold_s=hold, asked=t - 0.005))
        if turn % 10 == 0:  # the boss queues a ready fd now and then, waiting for the holder too
            events.append(lock(t + hold + 0.0003, BOSS, wait_s=hold, hold_s=0.0002))
        t += 0.0055 if holder == WORKER_1 else 0.0045  # the waiter takes it half a millisecond later
        holder, waiter = waiter, holder
        turn += 1
    return events


def threaded_model(variant: str, events: list[dict], rows: list[list[ThreadRow]], now: float = NOW) -> Model:
    """A model fed like the collector feeds it: /proc samples 0.5 s apart, the events, the last sample."""
    model = Model(PORT, PID, variant)
    for index, sample in enumerate(rows[:-1]):
        model.apply(Batch(now=now - 0.5 * (len(rows) - 1 - index), threads=sample))
    model.apply(Batch(now=now, events=events, threads=rows[-1]))
    return model


def naive_model() -> Model:
    rows = [
        thread_row(BOSS, "boss", "epoll_wait", 5, cpu=3.0),
        thread_row(WORKER_1, "worker-1", "running", cpu=48.0),
        thread_row(WORKER_2, "worker-2", "futex", FUTEX_WORD, cpu=41.0),
    ]
    events = [event("queue", NOW - 0.1, depth=2), *naive_events(NOW)]
    return threaded_model("threaded_boss_worker", events, [rows, rows])


def fixed_model() -> Model:
    """The default boss/worker: holds of tens of microseconds, around core calls only."""
    events = []
    for index in range(400):
        t = NOW - 10.0 + index * 0.025
        tid = (BOSS, WORKER_1, WORKER_2)[index % 3]
        events.append(lock(t, tid, wait_s=0.000002, hold_s=0.00003, across_recv=False))
    rows = [
        thread_row(BOSS, "boss", "epoll_wait", 4),
        thread_row(WORKER_1, "worker-1", "epoll_wait", 7, cpu=12.0),
        thread_row(WORKER_2, "worker-2", "epoll_wait", 9, cpu=9.0),
    ]
    return threaded_model("threaded_boss_worker", events, [rows, rows])


SILENT_FD, SILENT_PEER = 9, "127.0.0.1:50077"
STALL_STARTED = NOW - 3.2


def stalled_model() -> Model:
    """--blocking with a silent client: worker-1 holds the lock in readv, the others wait in futex."""
    events = [event("accept", STALL_STARTED - 0.001, fd=SILENT_FD, peer=SILENT_PEER)]
    events += [lock(NOW - 9.0 + index * 0.5, WORKER_2, 0.00001, 0.0004) for index in range(11)]
    events.append(event("acquire", STALL_STARTED, thread="worker-1", tid=WORKER_1, fd=SILENT_FD))
    asleep = [
        thread_row(BOSS, "boss", "futex", FUTEX_WORD),
        thread_row(WORKER_1, "worker-1", "readv", SILENT_FD),
        thread_row(WORKER_2, "worker-2", "futex", FUTEX_WORD),
    ]
    return threaded_model("threaded_boss_worker", events, [asleep] * 7)


def single_threaded_model() -> Model:
    rows = [thread_row(PID, "python", "epoll_wait", 4, cpu=1.0)]
    return threaded_model("epoll_lt", [], [rows, rows])


# ---------------------------------------------------------------- slice arithmetic


def test_an_interval_is_split_at_slice_boundaries_and_adds_up_to_its_length() -> None:
    pieces = spread(10.2, 10.8)  # 10.2-10.25, 10.25-10.5, 10.5-10.75, 10.75-10.8
    assert [index for index, _ in pieces] == [40, 41, 42, 43]
    assert [round(seconds, 9) for _, seconds in pieces] == [0.05, 0.25, 0.25, 0.05]
    assert math.isclose(sum(seconds for _, seconds in pieces), 0.6)
    assert spread(10.25, 10.5) == [(41, 0.25)]  # ends on a boundary: the next slice gets nothing
    assert spread(3.0, 3.0) == []


def test_a_hold_spanning_slices_is_split_and_counted_once() -> None:
    model = Model(PORT)
    model.apply(Batch(now=NOW, events=[lock(NOW - 0.4, WORKER_1, wait_s=0.2, hold_s=0.7)]))
    held, waited = model.threads.timeline(WORKER_1, NOW)
    assert len(held) == TIMELINE_SLICES
    # Waited from NOW-1.3 to NOW-1.1, then held until NOW-0.4: the slices from [NOW-1.5, NOW-1.25)
    # to the current one, [NOW, NOW+0.25); the hold's first and last slices are partly held.
    assert [round(share, 6) for share in held[-7:]] == [0.0, 0.4, 1.0, 1.0, 0.4, 0.0, 0.0]
    assert [round(share, 6) for share in waited[-7:]] == [0.2, 0.6, 0.0, 0.0, 0.0, 0.0, 0.0]
    assert math.isclose(sum(held) * SLICE_S, 0.7) and math.isclose(sum(waited) * SLICE_S, 0.2)
    stats = model.threads.lock_stats(WORKER_1, NOW)
    assert stats is not None and stats.acquisitions == 1  # one hold, though it covers four slices
    assert math.isclose(stats.held_share, 0.7 / LOCK_WINDOW_S) and stats.hold_max_s == 0.7


def test_a_naive_workers_wait_is_drawn_where_it_asked_not_just_before_its_hold() -> None:
    model = Model(PORT)
    # Asked at NOW-2.0, waited 0.1 s, then idled on the condition variable until the hold at NOW-0.5.
    model.apply(Batch(now=NOW, events=[lock(NOW - 0.3, WORKER_1, 0.1, 0.2, asked=NOW - 2.0)]))
    _, waited = model.threads.timeline(WORKER_1, NOW)
    # waited[-1] is the current slice, [NOW, NOW+0.25); [NOW-2, NOW-1.75) is eight before it.
    assert round(waited[-9], 6) == 0.4 and sum(waited[-8:]) == 0


def test_statistics_cover_exactly_the_last_complete_slices() -> None:
    inside = [lock(NOW - 1.99, WORKER_1, 0.001, 0.004), lock(NOW - 0.01, WORKER_1, 0.003, 0.002)]
    outside = [lock(NOW - 2.01, WORKER_1, 0.5, 0.009), lock(NOW + 0.1, WORKER_1, 0.5, 0.009)]
    model = Model(PORT)
    model.apply(Batch(now=NOW + 0.2, events=inside + outside))
    stats = model.threads.lock_stats(WORKER_1, NOW + 0.2)  # the current slice [NOW, NOW+0.25) is partial
    assert stats is not None
    assert stats.acquisitions == 2 and stats.holds_per_s == 2 / LOCK_WINDOW_S
    assert math.isclose(stats.wait_mean_s, 0.002) and stats.hold_max_s == 0.004


# ---------------------------------------------------------------- the stall


def test_an_open_hold_counts_up_to_now_and_ends_with_its_own_lock_event() -> None:
    model = stalled_model()
    stall = model.threads.stall(model.now)
    assert stall is not None and stall.thread == "worker-1" and math.isclose(stall.held_s or 0, 3.2)
    assert (stall.syscall, stall.fd, stall.waiting) == ("readv", SILENT_FD, ("boss", "worker-2"))
    held, _ = model.threads.timeline(WORKER_1, model.now)
    assert math.isclose(sum(held) * SLICE_S, 3.2)  # the hold so far, though no lock event has come
    assert stall_lines(model, stall) == (
        "worker-1 has held the lock 3.2 s, blocked in readv on fd 9 (127.0.0.1:50077)",
        "boss, worker-2 wait in futex: nobody else gets the lock until it returns",
    )
    # A lock event worker-1 sent before this hold began (delivered late) does not end it ...
    model.apply(Batch(now=model.now, events=[lock(STALL_STARTED - 0.5, WORKER_1, 0.0, 0.001)]))
    assert model.threads.stall(model.now) is not None
    # ... its own release does, and the whole hold lands in the slices it covered.
    model.apply(Batch(now=NOW + 0.3, events=[lock(NOW + 0.2, WORKER_1, 0.0, 3.4)]))
    assert not model.threads.open_holds
    held, _ = model.threads.timeline(WORKER_1, NOW + 0.3)
    assert math.isclose(sum(held) * SLICE_S, 3.4 + 0.001)


ASLEEP_IN_READ = [
    thread_row(BOSS, "boss", "futex", FUTEX_WORD),
    thread_row(WORKER_1, "worker-1", "readv", SILENT_FD),
    thread_row(WORKER_2, "worker-2", "futex", FUTEX_WORD),
]


def sampled_twice() -> Model:
    """Two /proc samples 0.5 s apart: worker-1 in readv, not having run in between; no telemetry."""
    model = Model(PORT, PID)
    model.apply(Batch(now=NOW, threads=ASLEEP_IN_READ))
    assert model.threads.stall(NOW) is None  # one sample: it may have just begun a quick read
    model.apply(Batch(now=NOW + 0.5, threads=ASLEEP_IN_READ))
    return model


def test_proc_alone_shows_a_thread_asleep_in_a_read_while_the_others_wait_in_futex() -> None:
    model = sampled_twice()
    stall = model.threads.stall(NOW + 0.5)
    assert stall is not None and stall.held_s is None and stall.blocked_s == STALL_S
    assert stall_lines(model, stall) == (
        "worker-1 blocked in readv for 0.5 s or more on fd 9",
        "boss, worker-2 wait in futex (a lock's hold is reported only once it ends)",
    )


def test_a_thread_that_ran_or_released_the_lock_since_the_sample_is_not_stuck() -> None:
    model = sampled_twice()
    # One more context switch: it woke up in between, so this is a new read, not the same long one.
    woke = [
        ASLEEP_IN_READ[0],
        thread_row(WORKER_1, "worker-1", "readv", SILENT_FD, switches=101),
        ASLEEP_IN_READ[2],
    ]
    model.apply(Batch(now=NOW + 1.0, threads=woke))
    assert model.threads.stall(NOW + 1.0) is None
    model = sampled_twice()
    # Telemetry newer than the sample says it let go of the lock: that sleep is over.
    model.apply(Batch(now=NOW + 0.7, events=[lock(NOW + 0.6, WORKER_1, 0.0, 0.8)]))
    assert model.threads.stall(NOW + 0.7) is None


def test_proc_syscall_lines_name_the_call_and_its_first_argument() -> None:
    number = {"x86_64": 202, "aarch64": 98}.get(platform.machine())
    if number is not None:
        assert parse_syscall(f"{number} 0x55cc5d77cf50 0x80 0x0 0x0 0x0 0x0 0x7ffd 0x7f12") == (
            "futex",
            FUTEX_WORD,
        )
    assert parse_syscall("running") == ("running", None)
    assert parse_syscall("-1 0x7ffd5c1e8b40 0x7f12a4c3d1e0") == ("user", None)  # asleep outside a call
    assert parse_syscall("9999 0x1 0x2 0x3 0x4 0x5 0x6 0x7 0x8") == ("syscall 9999", 1)


def test_the_summary_says_nobody_holds_the_lock_once_the_holds_are_old() -> None:
    model = fixed_model()
    assert "held only around core calls" in summary(model, 3).plain
    model.apply(Batch(now=NOW + 2.5))  # the last hold ended before NOW: out of the 2 s window now
    assert summary(model, 3).plain.splitlines()[1] == "nobody took the lock in the last 2 s"


def test_counts_in_the_summary_are_singular_for_one_thread() -> None:
    assert summary(single_threaded_model(), 1).plain.startswith("1 thread in pid 4242\n")
    assert summary(naive_model(), 3).plain.startswith(
        "3 threads in pid 4242 · hand-off queue, last/max: shared 2/2"
    )


def test_the_strips_show_the_newest_slices_that_fit() -> None:
    assert timeline_slices(80) == 32 and timeline_slices(120) == TIMELINE_SLICES
    assert strip((0.0, 0.01, 1.0), 2) == "▁█" and strip((), 3) == "   "
    assert strip((0.0, 0.005, 0.01), 3, scale=0.01) == " ▄█"  # █ stands for the busiest cell shown


# ---------------------------------------------------------------- the cursor (keys as the app binds them)


@run_async
async def test_the_cursor_moves_over_the_lanes_and_is_highlighted() -> None:
    app = LabApp(naive_model())
    async with app.run_test(size=(80, 24)) as pilot:
        app.action_show_tab("threads")
        await pilot.pause()
        view = app.query_one(ThreadsView)
        assert view.cursor == 0 and marked(pilot) == [0]
        await pilot.press("down")
        assert view.cursor == 1 and marked(pilot) == [1]
        await pilot.press("end")
        assert view.cursor == 2 and marked(pilot) == [2]
        await pilot.press("down")  # already on the last lane
        assert view.cursor == 2
        await pilot.press("home")
        assert view.cursor == 0 and marked(pilot) == [0]


def marked(pilot: Pilot) -> list[int]:
    """The table rows drawn in the cursor's style."""
    table = pilot.app.query_one("#lanes", Static).content
    return [index for index, row in enumerate(table.rows) if row.style == CURSOR_STYLE]  # type: ignore[union-attr]


# ---------------------------------------------------------------- against real servers


@contextmanager
def publishing(port: int, clients: int = 4) -> Iterator[None]:
    """Clients that each publish a small message every few milliseconds until the block ends."""
    stop = threading.Event()
    connections = [RawClient(port) for _ in range(clients)]
    for index, client in enumerate(connections):
        client.connect(f"timeline-{index}")

    def publish(client: RawClient) -> None:
        while not stop.wait(0.002):  # a pace, not a synchronisation: keep the test process light
            client.send(Publish("timeline/load", b"x" * 64))

    threads = [threading.Thread(target=publish, args=(client,), daemon=True) for client in connections]
    for thread in threads:
        thread.start()
    try:
        yield
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=5)
        for client in connections:
            abort(client)


def timeline_rows(pilot: Pilot) -> dict[str, tuple[str, str]]:
    """{thread: (held strip, waited strip)} as the timeline panel shows them."""
    view = pilot.app.query_one(ThreadsView)
    slices = timeline_slices(view.query_one("#lock-timeline").size.width)
    rows = {}
    for line in text_of(pilot, "#lock-timeline").splitlines()[2:]:
        name, strips = line[:10].strip(), line[11:]
        rows[name] = (strips[:slices], strips[slices + 2 : 2 * slices + 2])
    return rows


def turns_taken(model: Model) -> set[tuple[str, str]]:
    """(holder, waiter) pairs: slices in which one worker held the lock while the other waited for it."""
    lanes = {lane.name: lane for lane in model.threads.lanes(model.now) if lane.name.startswith("worker-")}
    pairs = set()
    for holder, waiter in (("worker-1", "worker-2"), ("worker-2", "worker-1")):
        if holder in lanes and waiter in lanes:
            both = zip(lanes[holder].held, lanes[waiter].waited, strict=True)
            if any(held > 0 and waited > 0 for held, waited in both):
                pairs.add((holder, waiter))
    return pairs


@run_async
async def test_naive_timeline_shows_each_worker_waiting_while_the_other_holds() -> None:
    with running("threaded_boss_worker", "--naive") as server, publishing(server.port):
        async with watching(server) as pilot:
            await pilot.press("3")
            model = pilot.app.model
            both = {("worker-1", "worker-2"), ("worker-2", "worker-1")}
            await until(
                pilot, lambda: turns_taken(model) == both, "each worker waiting while the other holds"
            )
            slices = timeline_slices(pilot.app.query_one("#lock-timeline").size.width)
            shown = timeline_rows(pilot)  # what the screen shows, read with no frame in between ...
            lanes = model.threads.lanes(model.now)  # ... against the model it was drawn from
            scale = timeline_scale(lanes, slices)
            assert f"█ = {duration(scale * SLICE_S)} held or waited" in text_of(pilot, "#lock-timeline")
            for lane in lanes:
                if lane.name.startswith("worker-"):
                    assert shown[lane.name] == (
                        strip(lane.held, slices, scale),
                        strip(lane.waited, slices, scale),
                    )
                    assert shown[lane.name][1].strip(), f"{lane.name} waited: its strip is not blank"


def kernel_says(pid: int) -> dict[str, tuple[str, int]]:
    """{thread name: (first field of /proc/PID/task/TID/syscall, first argument)}, straight from /proc."""
    threads = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{tid}/syscall") as syscall, open(f"/proc/{pid}/task/{tid}/comm") as comm:
            fields = syscall.read().split()
            threads[comm.read().strip()] = (fields[0], int(fields[1], 16) if len(fields) > 1 else -1)
    return threads


READV, FUTEX = "19", "202"  # x86-64 system call numbers


@pytest.mark.skipif(platform.machine() != "x86_64", reason="reads x86-64 system call numbers from /proc")
@run_async
async def test_blocking_stall_is_reported_while_it_lasts_and_goes_when_the_client_speaks() -> None:
    with running("threaded_boss_worker", "--blocking") as server:
        async with watching(server) as pilot:
            await pilot.press("3")
            model = pilot.app.model
            silent = RawClient(server.port)  # connected, says nothing: a worker reads it, lock held
            try:
                lines = lambda: tuple(text_of(pilot, "#threads-summary").splitlines()[1:])  # noqa: E731
                line = lambda: lines()[0]  # noqa: E731
                # The boss blocks on the lock at its next timer tick, within a second.
                stalled = lambda: "has held the lock" in line() and "boss" in lines()[-1]  # noqa: E731
                await until(pilot, stalled, "the stall, with the boss waiting, in the summary")
                stall = model.threads.stall(model.now)
                assert stall is not None and stall.held_s is not None
                assert lines() == stall_lines(model, stall)  # the screen, and the model it was drawn from
                kernel = kernel_says(server.pid)
                [(reader, (_, fd))] = [(name, call) for name, call in kernel.items() if call[0] == READV]
                waiting = sorted(
                    name for name, (number, _) in kernel.items() if number == FUTEX
                )  # = tid order
                assert len(waiting) == len(kernel) - 1  # every other thread: the boss and the other worker
                peer = f"127.0.0.1:{silent.sock.getsockname()[1]}"
                assert lines() == (
                    f"{reader} has held the lock {stall.held_s:.1f} s, blocked in readv on fd {fd} ({peer})",
                    f"{', '.join(waiting)} wait in futex: nobody else gets the lock until it returns",
                )
                silent.connect("late")  # it speaks: the read returns, the hold ends, its lock event comes
                # Its release is the lock event of a hold across recv, and the next /proc sample finds
                # nobody asleep in a read.
                await until(pilot, lambda: "across socket I/O" in line(), "the stall report to go")
                assert model.threads.stall(model.now) is None
                assert READV not in {number for number, _ in kernel_says(server.pid).values()}
                lane = next(lane for lane in model.threads.lanes(model.now) if lane.name == reader)
                assert sum(lane.held) * SLICE_S >= stall.held_s  # the whole silence, now drawn as held
            finally:
                abort(silent)
