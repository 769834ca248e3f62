"""The ready tab and the close-state drawing: per-thread waits, honest headlines, one number format.

Model tests feed made-up wait events (two workers' interleaved call numbers, a streak that
ended); view tests read the screen at 80x24 and 120x40; live tests run the threaded server
with two workers and the naive one (EPOLLONESHOT) and compare what the tab shows with the
telemetry it was given and the kernel's /proc/PID/fdinfo. The made-up servers are built in
test_snapshots_ready.py, whose snapshots show them.
"""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import select
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from rich.console import Console
from textual.pilot import Pilot

from mqtt.packets import Publish, Subscribe
from servers.telemetry import TelemetryReader
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess
from tests.tui.live import abort, rows, run_async, running, text_of, until
from tests.tui.sample_data import (
    EPOLLET,
    EPOLLHUP,
    EPOLLIN,
    EPOLLOUT,
    PID,
    PORT,
)
from tests.tui.test_snapshots_ready import (
    ARMED,
    EPOLLONESHOT,
    LONG_IDS,
    fixed,
    oneshot_model,
    ready_model,
    threaded_model,
    time_wait_model,
    wait,
)
from tui.app import LabApp
from tui.collector import Collector
from tui.format import count_text, size_text
from tui.model import Batch, Model
from tui.model.waits import WaitLog
from tui.sources.epoll_fdinfo import EpollInterest, epoll_interest
from tui.widgets.paged_table import PagedTable
from tui.widgets.ready_list import (
    INTEREST_COLUMNS,
    READY_COLUMNS,
    fit_columns,
    interest_events,
    ready_cells,
    summary,
)
from tui.widgets.state_machine import SHORT_NAMES, draw_close_machine


def screen_lines(app: LabApp) -> list[str]:
    """The screen as plain text lines, as the terminal shows them."""
    width, height = app.size
    console = Console(width=width, height=height, file=io.StringIO(), color_system=None, record=True,
                      legacy_windows=False, safe_box=False)  # fmt: skip
    console.print(app.screen._compositor.render_update(full=True, screen_stack=app._background_screens))
    return console.export_text().splitlines()


async def on_ready_tab(pilot: Pilot) -> None:
    pilot.app.action_show_tab("ready")  # type: ignore[attr-defined]
    await pilot.pause()
    pilot.app.redraw()  # type: ignore[attr-defined]
    await pilot.pause()


# ---------------------------------------------------------------- per-thread waits


def test_two_threads_interleaved_call_numbers_are_not_lost_waits() -> None:
    log = WaitLog()
    busy, idle = iter(range(500, 520)), iter(range(3, 8))
    for step in range(20):  # worker-1's 500, 501... beside worker-2's 3, 4...: no gap in either
        log.add(wait(next(busy), step, [[7, 1]], "worker-1"))
        if step % 4 == 0:
            log.add(wait(next(idle), step, [[8, 1]], "worker-2"))
    assert log.missed == 0
    assert log.calls == 25 and log.threads["worker-1"].calls == 20 and log.threads["worker-2"].calls == 5
    assert log.named_threads == ["worker-1", "worker-2"]


def test_a_gap_within_one_threads_call_numbers_counts_as_lost() -> None:
    log = WaitLog()
    for call, thread in ((10, "worker-1"), (3, "worker-2"), (11, "worker-1"), (4, "worker-2"),
                         (15, "worker-1"), (5, "worker-2")):  # fmt: skip
        log.add(wait(call, 0, [], thread))
    assert log.threads["worker-1"].missed == 3  # 12, 13 and 14 never arrived
    assert log.threads["worker-2"].missed == 0
    assert log.missed == 3


def test_streaks_run_within_one_thread_whatever_the_other_reports() -> None:
    log = WaitLog()
    for call in range(1, 5):
        log.add(wait(call, call, [[7, 1]], "worker-1"))
        log.add(wait(call, call, [[9, 1]], "worker-2"))  # another epoll: it cannot break fd 7's run
    assert [w.ready[0].streak for w in log.waits if w.thread == "worker-1"] == [1, 2, 3, 4]
    assert [w.ready[0].streak for w in log.waits if w.thread == "worker-2"] == [1, 2, 3, 4]


def test_a_split_ready_list_stays_one_wait_when_another_thread_interleaves() -> None:
    log = WaitLog()
    log.add(wait(40, 1, [[7, 1]], "worker-1", part=0, parts=2))
    log.add(wait(9, 1, [[8, 1]], "worker-2"))  # emitted from another thread between the two parts
    log.add(wait(40, 1, [[11, 1]], "worker-1", part=1, parts=2))
    assert log.calls == 2 and log.missed == 0
    assert [entry.fd for entry in log.threads["worker-1"].latest.ready] == [7, 11]  # type: ignore[union-attr]


def test_watched_fds_add_up_over_the_threads() -> None:
    log = WaitLog()
    log.add(wait(1, 0, [], "worker-1", watched=5_001))
    log.add(wait(1, 0, [], "worker-2", watched=5_002))
    log.add(wait(2, 0, [], "worker-1", watched=5_003))
    assert log.watched() == 5_003 + 5_002


# ---------------------------------------------------------------- the headline describes now


def test_a_streak_in_the_latest_wait_is_shown_as_current() -> None:
    model = ready_model(live_streak=True)
    top = model.waits.top_streak(model.now)
    assert top is not None and top.running and top.entry.fd == 8
    headline = summary(model).plain.splitlines()[1]
    assert headline.startswith(f"fd 8 (pub-bob) ready in {top.entry.streak} waits in a row: LT repeats")


def test_a_streak_that_ended_is_shown_with_its_age_not_as_current() -> None:
    model = ready_model(after_last_wait=4.0)  # a later wait did not report fd 8
    top = model.waits.top_streak(model.now)
    assert top is not None and not top.running and top.entry.streak == 16
    age = model.now - top.wait.t
    headline = summary(model).plain.splitlines()[1]
    assert f"fd 8 (pub-bob) was ready in 16 waits in a row, ended {age:.0f} s ago" in headline
    assert " ready in 16" not in headline.replace("was ready", "")


def test_a_thread_silent_for_two_seconds_is_blocked_so_its_streak_ended() -> None:
    log = WaitLog()
    for call in range(1, 6):
        log.add(wait(call, 100.0 + call * 0.001, [[7, 1]]))
    assert log.top_streak(now=101.5).running  # type: ignore[union-attr]  # its latest wait: telemetry may lag
    assert not log.top_streak(now=102.5).running  # type: ignore[union-attr]  # blocked: fd 7 no longer ready
    log.add(wait(6, 100.01, []))  # a later wait without fd 7: ended, though only just
    assert log.top_streak(now=100.011).running  # type: ignore[union-attr]  # within a second: one frame
    assert not log.top_streak(now=101.2).running  # type: ignore[union-attr]


def test_a_running_streak_outranks_a_longer_one_that_ended() -> None:
    log = WaitLog()
    for call in range(1, 11):
        log.add(wait(call, call * 0.001, [[7, 1]]))
    for call in range(11, 15):
        log.add(wait(call, 10 + call * 0.001, [[8, 1]]))
    top = log.top_streak(now=10.1)
    assert top is not None and top.running and top.entry.fd == 8 and top.entry.streak == 4


# ---------------------------------------------------------------- one number format


def test_counts_carry_thousands_separators_in_the_summary_and_the_table() -> None:
    model = Model(PORT, PID, "epoll_lt")
    events = [wait(call, 50 + call * 1e-4, [[7, EPOLLIN]], watched=10_002) for call in range(11_001, 12_345)]
    model.apply(Batch(now=50 + 12_345e-4, events=events))
    first_line = summary(model).plain.splitlines()[0]
    assert f"{count_text(model.waits.calls)} waits" in first_line and "watching 10,002 fds" in first_line
    latest = model.waits.waits[-1]
    cells = ready_cells(model, latest, latest.ready[0])
    assert cells[0] == "12,344" and str(cells[5]) == f"×{count_text(latest.ready[0].streak)}" == "×1,344"
    assert re.search(r"\d{4}", first_line) is None  # no count of four digits or more without a comma


def test_the_call_column_names_the_thread_whose_number_it_is() -> None:
    model = threaded_model()
    latest = model.waits.threads["worker-1"].latest
    assert latest is not None
    assert ready_cells(model, latest, latest.ready[0])[0] == f"w1 {count_text(latest.call)}"
    first_line = summary(model).plain.splitlines()[0]
    assert f"{count_text(model.waits.calls)} waits in 2 threads" in first_line
    assert f"watching {count_text(model.waits.watched())} fds" in first_line and "lost" not in first_line


@run_async
async def test_the_select_note_counts_fds_with_separators() -> None:
    model = Model(PORT, PID, "poll_srv")
    model.apply(Batch(now=2, events=[wait(1, 1, [], variant="poll_srv", mode="poll", watched=10_002)]))
    async with LabApp(fixed(model, 2)).run_test(size=(120, 40)) as pilot:
        await on_ready_tab(pilot)
        assert "10,002 fds copied into the kernel" in text_of(pilot, "#interest .caption")
        assert "watching 10,002 fds" in text_of(pilot, "#wait-summary")


# ---------------------------------------------------------------- epoll masks


def test_interest_masks_drop_the_err_hup_every_fd_has_and_keep_oneshot_whole() -> None:
    assert interest_events(ARMED | EPOLLONESHOT) == "IN|ONESHOT"
    assert interest_events(ARMED | EPOLLOUT | EPOLLONESHOT) == "IN|OUT|ONESHOT"
    assert interest_events(ARMED | EPOLLOUT | EPOLLET) == "IN|OUT|ET"
    assert interest_events(EPOLLONESHOT) == "ONESHOT (fired)"  # nothing armed until EPOLL_CTL_MOD
    assert interest_events(EPOLLIN | EPOLLHUP) == "IN|HUP"  # not both: nothing implied, all shown


def test_a_real_oneshot_mask_reads_armed_then_fired() -> None:
    """The kernel's own mask, from /proc/self/fdinfo, before and after the one event fires."""
    left, right = socket.socketpair()
    epoll = select.epoll()
    try:
        epoll.register(left.fileno(), select.EPOLLIN | select.EPOLLONESHOT)

        def mask() -> int:
            watched = epoll_interest(os.getpid())[epoll.fileno()]
            return next(interest.events for interest in watched if interest.tfd == left.fileno())

        assert interest_events(mask()) == "IN|ONESHOT"
        right.send(b"x")
        assert epoll.poll(5) == [(left.fileno(), select.EPOLLIN)]
        assert interest_events(mask()) == "ONESHOT (fired)"
    finally:
        epoll.close()
        left.close()
        right.close()


# ---------------------------------------------------------------- 80 columns


@pytest.mark.parametrize("columns", [READY_COLUMNS, INTEREST_COLUMNS], ids=["ready", "interest"])
def test_the_tables_fit_80_columns_and_the_client_column_grows_first(columns: tuple) -> None:
    narrow, wide = fit_columns(columns, 80), fit_columns(columns, 120)
    client = [key for _, key, _, _ in columns].index("client")
    assert sum(narrow) + 2 * len(columns) <= 80  # DataTable pads every cell by one each side
    assert narrow[client] >= len("sub-alice-00017")
    assert wide[client] == columns[client][3]  # the first to get the room at 120 columns


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@run_async
async def test_client_ids_and_oneshot_masks_are_whole_on_screen(size: tuple[int, int]) -> None:
    model = oneshot_model()
    async with LabApp(model).run_test(size=size) as pilot:
        await on_ready_tab(pilot)
        screen = "\n".join(screen_lines(pilot.app))  # type: ignore[arg-type]
        shown = {row["fd"]: row for row in rows(pilot, "#interest")}
    for row in model.interest_rows:
        if row.tfd in LONG_IDS:
            assert shown[str(row.tfd)]["events"] == interest_events(row.events)
            events = re.escape(interest_events(row.events))
            assert re.search(rf"{row.tfd} +{events} +{LONG_IDS[row.tfd]} ", screen)
            assert str(row.inode) in screen
    assert "…" not in screen.split("interest set")[1]  # not a cell cut anywhere in the table


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@run_async
async def test_threaded_ready_rows_are_whole_at_80_and_120_columns(size: tuple[int, int]) -> None:
    model = threaded_model()
    async with LabApp(model).run_test(size=size) as pilot:
        await on_ready_tab(pilot)
        screen = screen_lines(pilot.app)  # type: ignore[arg-type]
    newest = model.waits.recent_ready[-1]
    call = f"w{newest.thread[-1]} {count_text(newest.call)}"
    row = next(line for line in screen if line.lstrip().startswith(call))
    assert LONG_IDS[newest.ready[0].fd] in row and row.rstrip().endswith(str(newest.ready[0].streak))
    recv_q = next(line for line in screen if LONG_IDS[9] in line and "ESTABLISHED" in line)
    assert f" {size_text(2_900_000)} " in recv_q  # 2.8M, as the TCP tab spells sizes


# ---------------------------------------------------------------- the close-state drawing

STATES = ("ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2", "TIME_WAIT", "CLOSING", "CLOSE_WAIT", "LAST_ACK")
LABELS = ("active close", "simultaneous close", "passive close")


def distinct_counts(digits: int) -> dict[str, int]:
    """A different count per state, ``digits`` long: each can be found where it was drawn."""
    return {state: int(str(index + 1) * digits) for index, state in enumerate(STATES)}


@pytest.mark.parametrize("width", [120, 80, 76, 70, 62, 50])
@pytest.mark.parametrize("digits", [1, 4, 5, 6, 9, 14])
def test_the_close_machine_never_overlaps_or_wraps(width: int, digits: int) -> None:
    counts = distinct_counts(digits)
    lines = draw_close_machine(counts, width=width).plain.split("\n")
    assert len(lines) == 6 and all(len(line) <= width for line in lines)
    text = "\n".join(lines)
    full = all(state in text for state in STATES)
    for state in STATES:
        if width >= 62:  # the drawing fits: every state and its count are there, whole
            spelled = state if full else SHORT_NAMES.get(state, state)
            assert re.search(rf"(?<![\w]){spelled}(?![\w])", text), state
            assert re.search(rf"(?<![\d,.]){count_text(counts[state])}( |$)", text, re.M) or digits > 7
    for line in lines:  # a count never runs into a label: "9,922active close"
        assert not re.search(r"[\dKMGT]\S*(active|simultaneous|passive)", line)
    for label in LABELS:  # a label is there whole, or not at all
        for line in lines:
            assert label in line or not any(line.endswith(label[:cut]) for cut in range(3, len(label)))


def test_a_five_digit_time_wait_count_stands_apart_from_its_label() -> None:
    row = draw_close_machine({"TIME_WAIT": 9_922}, width=80).plain.split("\n")[1]
    assert re.search(r"▲ +9,922 +active close", row)
    assert draw_close_machine({"TIME_WAIT": 99_999}, width=80).plain.split("\n")[0].startswith("ESTABLISHED")


def test_a_narrow_terminal_gets_the_short_names_then_a_clean_crop() -> None:
    compact = draw_close_machine({"TIME_WAIT": 20_000}, width=70).plain.split("\n")
    assert compact[0].startswith("ESTAB ─close▶ FIN_W1") and "20,000" in compact[1]
    cropped = draw_close_machine({"TIME_WAIT": 20_000}, width=40).plain.split("\n")
    assert len(cropped) == 6 and all(len(line) <= 40 for line in cropped)


@pytest.mark.parametrize("size", [(80, 24), (72, 24), (120, 40)], ids=["80x24", "72x24", "120x40"])
@run_async
async def test_the_tcp_tab_draws_12345_time_waits_whole(size: tuple[int, int]) -> None:
    model = time_wait_model()
    count = count_text(model.tcp.counts["TIME_WAIT"])
    async with LabApp(model).run_test(size=size) as pilot:
        pilot.app.action_show_tab("tcp")  # type: ignore[attr-defined]
        await pilot.pause()
        pilot.app.redraw()  # type: ignore[attr-defined]
        await pilot.pause()
        drawing = text_of(pilot, "CloseStateMachine").split("\n")
    assert count == "12,345" and len(drawing) == 6
    assert re.search(rf"▲ +{count}  +active close", drawing[1])
    assert all(len(line) <= size[0] for line in drawing)


# ---------------------------------------------------------------- the cursor


@run_async
async def test_the_cursor_keys_move_through_a_10000_fd_interest_set() -> None:
    model = Model(PORT, PID, "epoll_lt")
    interests = {5: [EpollInterest(fd, ARMED, fd, 1_000_000 + fd) for fd in range(4, 10_004)]}
    model.apply(Batch(now=1, interest=interests, inodes={fd: 1_000_000 + fd for fd in range(4, 10_004)}))
    async with LabApp(fixed(model, 1)).run_test(size=(80, 24)) as pilot:
        await on_ready_tab(pilot)
        table = pilot.app.query_one("#interest", PagedTable)
        page = table.page_size
        for key, expected in (("down", 1), ("down", 2), ("pagedown", 2 + page), ("end", 9_999),
                              ("pageup", 9_999 - page), ("home", 0)):  # fmt: skip
            await pilot.press(key)
            assert table.cursor_row is model.interest_rows[expected], key
            assert f"row {count_text(expected + 1)}" in text_of(pilot, "#interest .caption")
        await pilot.press("end")
        assert rows(pilot, "#interest")[-1]["fd"] == "10003"  # the last page is on screen


# ---------------------------------------------------------------- live servers


class TappedModel(Model):
    """A Model that keeps every wait event it is given: what telemetry really delivered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.raw_waits: list[tuple[str, int]] = []  # (thread, call) of each wait event's first part

    def apply(self, batch: Batch) -> None:
        self.raw_waits += [(e.get("thread", ""), e["call"]) for e in batch.events if e.get("k") == "wait"
                           and not e.get("part")]  # fmt: skip
        super().apply(batch)


@contextlib.asynccontextmanager
async def tapped(server: ServerProcess, size: tuple[int, int] = (120, 40)) -> AsyncIterator[Pilot]:
    reader = TelemetryReader(server.port)
    model = TappedModel(server.port, server.pid, server.variant)
    app = LabApp(model, Collector(server.port, server.pid, reader))
    try:
        async with app.run_test(size=size) as pilot:
            yield pilot
    finally:
        reader.close()


def gaps(calls: list[int]) -> int:
    return sum(max(0, later - earlier - 1) for earlier, later in itertools.pairwise(calls))


def per_thread_gaps(raw: list[tuple[str, int]]) -> int:
    names = {thread for thread, _ in raw}
    return sum(gaps([call for thread, call in raw if thread == name]) for name in names)


@run_async
async def test_two_workers_waits_are_not_counted_as_lost() -> None:
    with running("threaded_boss_worker", "--workers", "2") as server:
        async with tapped(server) as pilot:
            model: TappedModel = pilot.app.model  # type: ignore[assignment]
            busy, idle = RawClient(server.port), RawClient(server.port)  # round robin: one per worker
            try:
                busy.connect("busy-worker")
                idle.connect("idle-worker")
                busy.send(Subscribe(1, (("lab/busy", 0),)))
                busy.next_packet()  # SUBACK
                for _ in range(30):  # busy's worker turns over and over; idle's wakes every 0.5 s
                    busy.send(Publish("lab/busy", b"x"))
                    assert isinstance(busy.next_packet(), Publish)

                def interleaved() -> bool:  # one sequence would see gaps where the threads alternate
                    calls = [call for _, call in model.raw_waits]
                    threads = {thread for thread, _ in model.raw_waits}
                    return threads == {"worker-1", "worker-2"} and gaps(calls) > 0

                await until(pilot, interleaved, "both workers' waits, interleaved")
                summary_text = text_of(pilot, "#wait-summary")
            finally:
                abort(busy)
                abort(idle)
    raw = model.raw_waits
    assert model.waits.missed == per_thread_gaps(raw)  # 0 unless telemetry really dropped some
    assert ("waits lost" in summary_text) == (per_thread_gaps(raw) > 0)
    assert model.waits.calls == len(raw)
    assert {name: thread.calls for name, thread in model.waits.threads.items()} == {
        name: sum(1 for thread, _ in raw if thread == name) for name in ("worker-1", "worker-2")
    }
    assert "in 2 threads" in summary_text


@pytest.mark.parametrize("size", [(80, 24), (120, 40)], ids=["80x24", "120x40"])
@run_async
async def test_the_naive_servers_oneshot_masks_read_as_the_kernel_has_them(size: tuple[int, int]) -> None:
    with running("threaded_boss_worker", "--naive") as server:
        async with tapped(server, size) as pilot:
            client = RawClient(server.port)
            try:
                client.connect("sub-alice-00017")

                def shown() -> dict[str, str] | None:
                    watched = rows(pilot, "#interest")
                    return next((row for row in watched if row["client"] == "sub-alice-00017"), None)

                # The worker re-arms the fd once it has handled the CONNECT; idle since, it stays armed.
                row = await until(pilot, lambda: (r := shown()) and "IN" in r["events"].split("|") and r,
                                  "the client in the interest set, armed")  # fmt: skip
                kernel = {i.tfd: i.events for i in epoll_interest(server.pid)[int(row["epfd"])]}
                screen = "\n".join(screen_lines(pilot.app))  # type: ignore[arg-type]
            finally:
                abort(client)
    assert row["events"] == interest_events(kernel[int(row["fd"])]) == "IN|ONESHOT"
    assert re.search(rf" {row['fd']} +IN\|ONESHOT +sub-alice-00017 ", screen)
