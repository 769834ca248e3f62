"""The ready-list view: what each wait call returned, and what the kernel is watching.

Top: one column per wait call, its height the ready count, and below it the time blocked.
A yellow column is a wait that reported an fd the previous wait had reported too: under
level-triggered epoll that means bytes were left unread. Then the latest ready lists, fd by
fd, and the interest set the kernel keeps for epoll, read from /proc/PID/fdinfo/EPFD.
"""

from __future__ import annotations

import math
from itertools import islice

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label

from tui.format import duration, mask_text, spark, state_color
from tui.model import InterestRow, Model
from tui.model.waits import ReadyFd, Wait

from .paged_table import Cells, PagedTable
from .panel import Panel

LANE_LABEL_WIDTH = 8
NOTABLE_STREAK = 3  # two in a row is often just new data arriving; three is bytes left unread
READY_ROWS_KEPT = 2_000  # ready entries flattened for the table; older ones scroll out


class WaitTimeline(Panel):
    """Two lanes, one column per wait call, newest on the right."""

    DEFAULT_CSS = "WaitTimeline { height: 2; }"

    def refresh_from(self, model: Model) -> None:
        width = max(1, self.size.width - LANE_LABEL_WIDTH)
        waits = list(islice(reversed(model.waits.waits), width))[::-1]
        ready = spark([len(wait.ready) for wait in waits])
        # Blocked times span microseconds to seconds: a log scale keeps both visible.
        blocked = spark([math.log10(1 + wait.blocked_s * 1e6) for wait in waits])
        text = Text("ready".ljust(LANE_LABEL_WIDTH), style="bold")
        level_triggered = model.waits.mode != "ET"  # under ET a repeat means new data arrived
        for character, wait in zip(ready, waits, strict=True):
            notable = level_triggered and wait.top is not None and wait.top.streak >= NOTABLE_STREAK
            text.append(character, style="yellow" if notable else "green")
        text.append("\n" + "blocked".ljust(LANE_LABEL_WIDTH), style="bold")
        text.append(blocked, style="cyan")
        self.show(text)


def summary(model: Model) -> Text:
    log = model.waits
    if not log.waits:
        text = Text("No wait has returned yet. ", style="bold")
        if model.variant.startswith("threaded") or model.threads.lock_events:
            text.append("The threaded server sends lock events, not waits: each worker has its own epoll.")
        else:
            text.append("Connect a client (the server must run with --telemetry).")
        return text
    latest = log.waits[-1]
    text = Text.assemble(
        (f"{log.variant} ", "bold"),
        (f"{log.mode}", "bold reverse"),
        f"  {log.calls:,} waits · {log.rate(model.now):.0f}/s · watching {latest.watched} fds"
        f" · last blocked {duration(latest.blocked_s)}",
    )
    if log.missed:
        text.append(f" · {log.missed:,} waits lost", style="bold red")
    text.append("\n")
    top = log.top_streak()
    stalled = model.stalled
    if log.mode == "ET" and stalled is not None:
        text.append(
            f"fd {stalled.tfd} ({stalled.label or '?'}): {stalled.recv_q:,} bytes unread and no new edge: "
            "ET will not report it until more data arrives",
            style="bold red",
        )
    elif log.mode == "ET":  # runs under ET mean new data kept arriving, not bytes left behind
        text.append("ET: one report per arrival of data, so each read drains until EAGAIN", style="dim")
    elif top is not None and top.streak >= NOTABLE_STREAK:
        label = model.names.label_at(top.fd, top.generation) or "?"
        text.append(f"fd {top.fd} ({label}) ready in {top.streak} waits in a row", style="bold yellow")
        if top.fd in model.names.listeners:  # one accept per readiness: the rest of the queue waits
            text.append(": LT repeats a listener while its accept queue is not empty", style="yellow")
        else:
            text.append(": LT repeats an fd while bytes remain unread", style="yellow")
    else:
        text.append("no fd ready in 3 waits in a row: each readiness was read dry", style="dim")
    return text


class ReadyListView(Vertical):
    DEFAULT_CSS = """
    ReadyListView > #wait-summary { height: 2; }
    """

    def compose(self) -> ComposeResult:
        yield Panel(id="wait-summary")
        yield WaitTimeline()
        yield Label("latest ready lists, newest first", classes="section")
        yield PagedTable(
            [("call", "call", 8), ("blocked", "blocked", 9), ("fd", "fd", 5), ("events", "events", 10),
             ("client", "client", 18), ("in a row", "streak", 8)],
            noun="ready fds",
            pageable=False,
            id="ready",
        )  # fmt: skip
        yield Panel("interest set", classes="section", id="interest-title")
        yield PagedTable(
            [("epfd", "epfd", 4), ("fd", "fd", 5), ("events", "events", 17), ("client", "client", 18),
             ("state", "state", 11), ("Recv-Q", "recv_q", 7), ("inode", "inode", 9)],
            noun="watched fds",
            id="interest",
        )  # fmt: skip

    def turn(self, pages: int) -> None:
        self.query_one("#interest", PagedTable).turn(pages)

    def refresh_from(self, model: Model) -> None:
        self.query_one("#wait-summary", Panel).show(summary(model))
        self.query_one(WaitTimeline).refresh_from(model)
        entries = ready_entries(model)
        self.query_one("#ready", PagedTable).show(entries, lambda item: ready_cells(model, *item))
        self._show_interest(model)

    def _show_interest(self, model: Model) -> None:
        pid = model.pid if model.pid is not None else "PID"
        epfds = ", ".join(str(epfd) for epfd in model.interest) or "EPFD"
        mode = model.waits.mode
        if mode in ("select", "poll") and not model.interest_rows:
            title = f"interest set: none kept in the kernel; each {mode}() call passes it in again"
        else:
            title = f"interest set kept in the kernel (/proc/{pid}/fdinfo/{epfds})"
        self.query_one("#interest-title", Panel).show(Text(title))
        note = "" if model.interest_rows else model.note("proc") or "no epoll instance found"
        if mode in ("select", "poll"):
            note = f"{model.waits.waits[-1].watched} fds copied into the kernel and scanned per call"
        self.query_one("#interest", PagedTable).show(model.interest_rows, interest_cells, note)


def ready_entries(model: Model) -> list[tuple[Wait, ReadyFd]]:
    """(wait, entry) pairs, newest wait first, at most READY_ROWS_KEPT."""
    entries: list[tuple[Wait, ReadyFd]] = []
    for wait in reversed(model.waits.recent_ready):
        entries.extend((wait, entry) for entry in wait.ready)
        if len(entries) >= READY_ROWS_KEPT:
            break
    return entries


def ready_cells(model: Model, wait: Wait, entry: ReadyFd) -> Cells:
    if entry.streak > 1 and model.waits.mode != "ET":  # LT: the same bytes may be reported again
        streak = Text(f"×{entry.streak}", style="bold yellow" if entry.streak >= NOTABLE_STREAK else "")
    else:  # under ET a run only means new data kept arriving
        streak = Text(str(entry.streak), style="dim")
    return (
        str(wait.call),
        duration(wait.blocked_s),
        str(entry.fd),
        mask_text(entry.mask),
        model.names.label_at(entry.fd, entry.generation),
        streak,
    )


def interest_cells(row: InterestRow) -> Cells:
    if row.recv_q is None:
        recv_q = Text("")
    else:  # unread bytes: LT will report the fd again; ET will not until more data arrives
        recv_q = Text(f"{row.recv_q:,}", style="bold yellow" if row.recv_q else "")
    return (
        str(row.epfd),
        str(row.tfd),
        mask_text(row.events),
        row.label,
        Text(row.state, style=state_color(row.state)),
        recv_q,
        str(row.inode),
    )
