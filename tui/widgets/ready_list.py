"""The ready-list view: what each wait call returned, and what the kernel is watching.

Top: one column per wait call, its height the ready count, and below it the time blocked.
A yellow column is a wait that reported an fd the previous wait had reported too: under
level-triggered epoll that means bytes were left unread. Then the latest ready lists, fd by
fd, and the interest set the kernel keeps for epoll, read from /proc/PID/fdinfo/EPFD.
The headline says what is happening *now*: a streak that has ended is shown with its age.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from itertools import islice

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Label

from tui.format import count_text, duration, mask_text, size_text, spark, state_color
from tui.model import InterestRow, Model
from tui.model.waits import NOTABLE_STREAK, ReadyFd, Streak, Wait

from .navigation import Move
from .paged_table import Cells, PagedTable
from .panel import Panel

LANE_LABEL_WIDTH = 8
READY_ROWS_KEPT = 2_000  # ready entries flattened for the table; older ones scroll out
EPOLLERR, EPOLLHUP, EPOLLONESHOT = 0x008, 0x010, 1 << 30
# epoll_ctl ORs EPOLLERR|EPOLLHUP into every registration (fs/eventpoll.c), so in an interest
# set they say nothing; their absence does: a fired EPOLLONESHOT leaves only the flag bits.
ALWAYS_ADDED = EPOLLERR | EPOLLHUP
EVENT_BITS = 0x2000 | 0x7FF  # IN, PRI, OUT, ERR, HUP, RDNORM ... MSG, RDHUP: what can be armed

# (label, key, narrowest, widest): the narrowest widths fit 80 columns (2 cells of padding each).
READY_COLUMNS = (
    ("call", "call", 9, 13), ("blocked", "blocked", 8, 9), ("fd", "fd", 5, 6),
    ("events", "events", 14, 20), ("client", "client", 16, 32), ("in a row", "streak", 8, 8),
)  # fmt: skip
INTEREST_COLUMNS = (
    ("epfd", "epfd", 4, 5), ("fd", "fd", 5, 6), ("events", "events", 15, 22), ("client", "client", 16, 32),
    ("state", "state", 11, 11), ("Recv-Q", "recv_q", 6, 6), ("inode", "inode", 8, 10),
)  # fmt: skip
GROW_FIRST = ("client", "events", "inode", "call")  # who gets the room beyond the narrowest widths


def fit_columns(columns: Sequence[tuple[str, str, int, int]], width: int) -> list[int]:
    """Column widths for a table ``width`` cells wide: the narrowest ones, then room to the client
    column first (a client id must stay readable), then the others in GROW_FIRST order."""
    widths = [narrowest for _, _, narrowest, _ in columns]
    spare = width - 2 * len(columns) - sum(widths)  # DataTable pads each cell by one on each side
    keys = [key for _, key, _, _ in columns]
    order = [keys.index(key) for key in GROW_FIRST if key in keys]
    order += [index for index in range(len(columns)) if index not in order]
    for index in order:
        grow = max(0, min(spare, columns[index][3] - widths[index]))
        widths[index] += grow
        spare -= grow
    return widths


def paged_table(columns: Sequence[tuple[str, str, int, int]], **kwargs: object) -> PagedTable:
    return PagedTable(
        [(label, key, narrowest) for label, key, narrowest, _ in columns],
        widths=lambda width: fit_columns(columns, width),
        **kwargs,  # type: ignore[arg-type]
    )


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


def plural(count: int, noun: str) -> str:
    return f"{count_text(count)} {noun}{'' if count == 1 else 's'}"


def ago(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def summary(model: Model) -> Text:
    log = model.waits
    if not log.waits:
        text = Text("No waits yet. ", style="bold")
        if model.threads.lock_events:  # --naive/--blocking: the boss hands fds over, workers never wait
            text.append("This server sends lock events only: see the Threads tab (3).")
        else:
            text.append("Connect a client (the server must run with --telemetry).")
        return text
    latest = log.waits[-1]
    threads = log.named_threads
    text = Text.assemble((f"{log.variant} ", "bold"), (log.mode, "bold reverse"))
    text.append(f"  {plural(log.calls, 'wait')}")
    if threads:  # each worker numbers its own calls: the table's "w1 12" is worker-1's 12th
        text.append(f" in {plural(len(threads), 'thread')}")
    text.append(
        f" · {log.rate(model.now):,.0f}/s · watching {plural(log.watched(), 'fd')}"
        f" · last blocked {duration(latest.blocked_s)}"
    )
    if log.missed:
        text.append(f" · {count_text(log.missed)} waits lost", style="bold red")
    text.append("\n")
    text.append_text(headline(model))
    return text


def headline(model: Model) -> Text:
    """The second line: what readiness is doing now (an ended streak says when it ended)."""
    log, stalled = model.waits, model.stalled
    if log.mode == "ET" and stalled is not None:
        return Text(
            f"fd {stalled.tfd} ({stalled.label or '?'}): {count_text(stalled.recv_q or 0)} bytes unread and "
            "no new edge: ET will not report it until more data arrives",
            style="bold red",
        )
    if log.mode == "ET":  # runs under ET mean new data kept arriving, not bytes left behind
        return Text("ET: one report per arrival of data, so each read drains until EAGAIN", style="dim")
    top = log.top_streak(model.now)
    if top is None or top.entry.streak < NOTABLE_STREAK:
        quiet = f"no fd ready in {NOTABLE_STREAK} waits in a row: each readiness was read dry"
        return Text(quiet, style="dim")
    return streak_text(model, top)


def streak_text(model: Model, top: Streak) -> Text:
    entry = top.entry
    label = model.names.label_at(entry.fd, entry.generation) or "?"
    who = f"{top.wait.thread}: " if top.wait.thread else ""
    listener = entry.fd in model.names.listeners  # one accept per readiness: the rest of the queue waits
    run = f"{count_text(entry.streak)} waits in a row"
    if top.running:
        text = Text(f"{who}fd {entry.fd} ({label}) ready in {run}", style="bold yellow")
        why = "LT repeats a listener while its accept queue is not empty" if listener else (
            "LT repeats an fd while bytes remain unread")  # fmt: skip
        text.append(f": {why}", style="yellow")
        return text
    text = Text(f"{who}fd {entry.fd} ({label}) was ready in {run}, ", style="yellow")
    text.append(f"ended {ago(top.age(model.now))} ago", style="bold")
    why = "LT reported the listener while connections waited" if listener else (
        "LT reported it while bytes remained unread")  # fmt: skip
    text.append(f": {why}", style="dim")
    return text


class ReadyListView(Vertical):
    DEFAULT_CSS = """
    ReadyListView > #wait-summary { height: 2; }
    ReadyListView > #interest-title { height: 1; text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def compose(self) -> ComposeResult:
        yield Panel(id="wait-summary")
        yield WaitTimeline()
        yield Label("latest ready lists, newest first", classes="section")
        yield paged_table(READY_COLUMNS, noun="ready fds", pageable=False, id="ready")
        yield Panel("interest set", classes="section", id="interest-title")
        yield paged_table(
            INTEREST_COLUMNS,
            noun="watched fds",
            id="interest",
            row_key=lambda row: (row.epfd, row.tfd, row.inode),  # the cursor stays on its fd
        )

    def navigate(self, move: Move) -> None:
        """The cursor keys move through the interest set: the long table (10,000 fds at load)."""
        self.query_one("#interest", PagedTable).navigate(move)

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
            # ERR|HUP: epoll_ctl adds them to every fd, so the events column leaves them out.
            title = f"interest set in the kernel, ERR|HUP implied: /proc/{pid}/fdinfo/{epfds}"
        self.query_one("#interest-title", Panel).show(Text(title))
        note = "" if model.interest_rows else model.note("proc") or "no epoll instance found"
        if mode in ("select", "poll"):
            note = f"{plural(model.waits.watched(), 'fd')} copied into the kernel and scanned per call"
        self.query_one("#interest", PagedTable).show(model.interest_rows, interest_cells, note)


def ready_entries(model: Model) -> list[tuple[Wait, ReadyFd]]:
    """(wait, entry) pairs, newest wait first, at most READY_ROWS_KEPT."""
    entries: list[tuple[Wait, ReadyFd]] = []
    for wait in reversed(model.waits.recent_ready):
        entries.extend((wait, entry) for entry in wait.ready)
        if len(entries) >= READY_ROWS_KEPT:
            break
    return entries


def thread_tag(thread: str) -> str:
    """ "worker-1" -> "w1": the call column names the thread whose count it is, in few cells."""
    match = re.fullmatch(r"worker-(\d+)", thread)
    return f"w{match[1]}" if match else thread[:3]


def ready_cells(model: Model, wait: Wait, entry: ReadyFd) -> Cells:
    if entry.streak > 1 and model.waits.mode != "ET":  # LT: the same bytes may be reported again
        style = "bold yellow" if entry.streak >= NOTABLE_STREAK else ""
        streak = Text(f"×{count_text(entry.streak)}", style=style)
    else:  # under ET a run only means new data kept arriving
        streak = Text(count_text(entry.streak), style="dim")
    call = count_text(wait.call)
    return (
        f"{thread_tag(wait.thread)} {call}" if wait.thread else call,
        duration(wait.blocked_s),
        str(entry.fd),
        mask_text(entry.mask),
        model.names.label_at(entry.fd, entry.generation),
        streak,
    )


def interest_events(mask: int) -> str:
    """An interest mask without the ERR|HUP every fd has: "IN|ONESHOT", "IN|OUT|ET";
    a fired ONESHOT (nothing armed until EPOLL_CTL_MOD) says so: "ONESHOT (fired)"."""
    shown = mask & ~ALWAYS_ADDED if mask & ALWAYS_ADDED == ALWAYS_ADDED else mask
    text = mask_text(shown)
    if mask & EPOLLONESHOT and not mask & EVENT_BITS:
        text += " (fired)"
    return text


def interest_cells(row: InterestRow) -> Cells:
    if row.recv_q is None:
        recv_q = Text("")
    else:  # unread bytes: LT will report the fd again; ET will not until more data arrives
        recv_q = Text(size_text(row.recv_q), style="bold yellow" if row.recv_q else "")
    return (
        str(row.epfd),
        str(row.tfd),
        interest_events(row.events),
        row.label,
        Text(row.state, style=state_color(row.state)),
        recv_q,
        str(row.inode),
    )
