"""Snapshots of the ready tab's stories and the close-state drawing, from made-up Batches (test_ready.py).

LT with a streak still running, LT once that streak has ended (the headline gives its age), ET,
the threaded server's two workers (call numbers per thread), the naive server's EPOLLONESHOT
masks with long client ids, and the TCP tab's drawing with 12,345 sockets in TIME_WAIT, each at
80x24 and 120x40. The builders here also feed test_ready.py. Update after an intended change with
``pytest tests/tui/test_snapshots_ready.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from textual.pilot import Pilot

from tests.tui.sample_data import (
    EPOLLERR,
    EPOLLET,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    PID,
    PORT,
    START,
    connection_events,
    event,
    interest,
    lock_events,
    tcp_rows,
    wait_events,
)
from tui.app import LabApp
from tui.model import Batch, Model
from tui.sources.epoll_fdinfo import EpollInterest
from tui.sources.tcp_states import TcpSocket

EPOLLONESHOT = 1 << 30
ARMED = EPOLLIN | EPOLLERR | EPOLLHUP  # what the kernel stores for register(fd, EPOLLIN)
LONG_IDS = {7: "sub-alice-00017", 8: "pub-bob-00018", 9: "sensor-kitchen-17", 10: "sub-carol-00020"}


def wait(call: int, t: float, ready: list[list[int]], thread: str = "", **fields: Any) -> dict[str, Any]:
    """One ``wait`` event as servers/telemetry.py emit_wait sends it."""
    fields = {"variant": "epoll_lt", "mode": "LT", "blocked_s": 0.001, "watched": 3, "part": 0,
              "parts": 1, **fields}  # fmt: skip
    if thread:
        fields["thread"] = thread
    return event("wait", t, call=call, ready=ready, **fields)


def fixed(model: Model, now: float) -> Model:
    """Freeze the model's clock (the status line's ages) at ``now``: snapshots must not drift."""
    model.clock = lambda: now
    return model


def ready_model(mode: str = "LT", after_last_wait: float = 0.3, live_streak: bool = False) -> Model:
    """sample_data's server. ``live_streak``: the LT run of fd 8 is in the latest wait (still
    running); otherwise a later wait reported fd 7 only and the run ended ``after_last_wait`` ago."""
    model = Model(PORT, PID, variant=f"epoll_{mode.lower()}")
    waits = wait_events(mode)
    if live_streak:
        waits = waits[:-1]
    now = waits[-1]["t"] + after_last_wait
    interests, inodes = interest()
    model.apply(Batch(now=now, events=connection_events() + waits, tcp=tcp_rows(), interest=interests,
                      inodes=inodes))  # fmt: skip
    return fixed(model, now)


def long_id_connections(t: float) -> list[dict[str, Any]]:
    events = []
    for fd, client_id in LONG_IDS.items():
        peer = f"127.0.0.1:{50000 + fd}"
        events.append(event("accept", t, fd=fd, peer=peer))
        events.append(event("conn", t, fd=fd, peer=peer, client_id=client_id))
    return events


def threaded_model() -> Model:
    """threaded_boss_worker, two workers (ET), each numbering its own waits: worker-1 is busy
    (call 1,201 on), worker-2 nearly idle (call 40 on). Nothing was lost."""
    model = Model(PORT, PID, variant="threaded_boss_worker")
    t = START + 5
    events = long_id_connections(START)
    first, second = 1_201, 40
    threaded = {"variant": "threaded_boss_worker", "mode": "ET", "watched": 5_001}
    for step in range(12):
        t += 0.01
        mask = EPOLLIN | EPOLLOUT
        ready = [[7, mask]] if step % 2 else [[9, mask], [7, mask]]
        events.append(wait(first + step, t, ready, "worker-1", **threaded))
        if step % 4 == 0:
            ready = [[8, EPOLLIN | EPOLLOUT]] if step % 8 == 0 else [[10, EPOLLIN | EPOLLHUP | EPOLLERR]]
            events.append(wait(second + step // 4, t + 0.001, ready, "worker-2", **threaded))
    worker = ARMED | EPOLLOUT | EPOLLET

    def clients(fds: tuple[int, ...]) -> list[EpollInterest]:
        return [EpollInterest(fd, worker, fd, 60000 + fd) for fd in fds]

    interests = {  # the boss's epoll (the listener), then each worker's: its eventfd and its clients
        5: [EpollInterest(3, EPOLLIN | EPOLLERR | EPOLLHUP | EPOLLET, 3, 55555)],
        6: [EpollInterest(4, ARMED, 4, 44444), *clients((7, 9))],
        11: [EpollInterest(12, ARMED, 12, 44445), *clients((8, 10))],
    }
    inodes = {3: 55555, **{fd: 60000 + fd for fd in LONG_IDS}}
    model.apply(Batch(now=t + 0.2, events=events, interest=interests, inodes=inodes, tcp=long_id_rows()))
    return fixed(model, t + 0.2)


def long_id_rows() -> list[TcpSocket]:
    server = ("127.0.0.1", PORT)
    rows = [TcpSocket("LISTEN", server, ("0.0.0.0", 0), 4096, 0, "off", 0, 55555, 0)]
    for fd in LONG_IDS:
        client = ("127.0.0.1", 50000 + fd)
        unread = 2_900_000 if fd == 9 else 0
        rows.append(TcpSocket("ESTABLISHED", server, client, 0, unread, "off", 0, 60000 + fd, 0))
        rows.append(TcpSocket("ESTABLISHED", client, server, 0, 0, "off", 0, 70000 + fd, 0))
    return rows


def oneshot_model() -> Model:
    """--naive: one epoll, clients registered EPOLLIN|EPOLLONESHOT; fd 8's event has fired (the
    worker holds it), fd 9 is re-armed with EPOLLOUT (output pending). It sends no waits."""
    model = Model(PORT, PID, variant="threaded_boss_worker")
    now = START + 12
    armed = ARMED | EPOLLONESHOT
    masks = {7: armed, 8: EPOLLONESHOT, 9: armed | EPOLLOUT, 10: armed}
    interests = {5: [EpollInterest(3, ARMED, 3, 55555)]}
    interests[5] += [EpollInterest(fd, mask, fd, 60000 + fd) for fd, mask in masks.items()]
    inodes = {3: 55555, **{fd: 60000 + fd for fd in LONG_IDS}}
    events = long_id_connections(START) + lock_events(now)
    model.apply(Batch(now=now, events=events, interest=interests, inodes=inodes, tcp=long_id_rows()))
    return fixed(model, now)


def time_wait_model(time_waits: int = 12_345) -> Model:
    """A churning server: ``time_waits`` sockets in TIME_WAIT (it closed first), a few live ones."""
    server = ("127.0.0.1", PORT)
    rows = tcp_rows()
    for index in range(time_waits - sum(row.state == "TIME_WAIT" for row in rows)):
        client = (f"127.0.{1 + index // 60_000}.1", 1024 + index % 60_000)
        rows.append(TcpSocket("TIME_WAIT", server, client, 0, 0, "timewait", 30_000, 0, 0))
    model = Model(PORT, PID, variant="epoll_lt")
    model.apply(Batch(now=START + 12, events=connection_events(), tcp=rows))
    return fixed(model, START + 12)


# ---------------------------------------------------------------- the snapshots

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
STORIES: dict[str, tuple[str, Callable[[], Model]]] = {  # story -> (tab, model)
    "lt-streak-running": ("ready", lambda: ready_model(live_streak=True)),
    "lt-streak-ended": ("ready", lambda: ready_model(after_last_wait=4.0)),
    "et": ("ready", lambda: ready_model("ET")),
    "threaded-two-workers": ("ready", threaded_model),
    "naive-oneshot": ("ready", oneshot_model),
    "tcp-12345-time-wait": ("tcp", time_wait_model),
}


def showing(tab: str) -> Callable[[Pilot], object]:
    async def switch(pilot: Pilot) -> None:
        app: LabApp = pilot.app  # type: ignore[assignment]
        app.action_show_tab(tab)
        await pilot.pause()
        app.redraw()  # after the layout: the tables' column widths follow the terminal's
        await pilot.pause()

    return switch


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("story", STORIES)
def test_ready_story(snap_compare, story: str, size: str) -> None:  # type: ignore[no-untyped-def]
    tab, build = STORIES[story]
    assert snap_compare(LabApp(build()), terminal_size=SIZES[size], run_before=showing(tab))
