"""The top line: is the server there, is the data fresh, and which server, process and port.

It never says "live" for a dead source. The badge comes first and says what matters most: the
server process is gone (and how it ended, when the TUI started it), nothing listens on the
port, the TCP data is stale, or the view is paused (with the wall-clock time of the TCP sample
the frozen frame shows, to compare with a kernel dump). Then telemetry's state, read from the
server's command line, and each source's age. Segments that do not fit the width are dropped,
least important first, so the badge and its reason always survive at 80 columns.
"""

from __future__ import annotations

import time

from rich.text import Text

from tui.format import count_text
from tui.model import Model
from tui.sources.server_process import Liveness

from .panel import Panel

STALE_S = 1.5  # TCP data older than this while live is called stale (it is sampled every 0.25 s)
TELEMETRY_QUIET_S = 10.0  # no datagram for this long: say so (an idle server may just be waiting)
SEPARATOR = " · "
Segment = tuple[int, Text]  # (priority: 0 is kept longest, text)


def age_text(seconds: float) -> str:
    """<1s, 12s, 4m, 2h: short enough to sit beside four others, and steady while data is fresh.

    Fresh data is sampled every 0.25 s, so tenths would change every frame and repaint the line
    ten times a second for nothing; "<1s" changes only when a source falls behind."""
    seconds = max(0.0, seconds)
    if seconds < 1:
        return "<1s"
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def plural(count: int, noun: str) -> str:
    return f"{count_text(count)} {noun}{'' if count == 1 else 's'}"


def clock_text(wall: float) -> str:
    """HH:MM:SS.mmm local time, as `date +%T.%3N` prints it beside a kernel dump."""
    return time.strftime("%H:%M:%S", time.localtime(wall)) + f".{int(wall * 1000) % 1000:03d}"


def last_heard(model: Model, liveness: Liveness | None) -> float | None:
    """When the newest telemetry datagram arrived: the collector's clock runs on while paused."""
    heard = [model.sampled_at.get("telemetry"), liveness.telemetry_at if liveness else None]
    return max((at for at in heard if at is not None), default=None)


def health(model: Model, liveness: Liveness | None, now: float, paused: bool) -> tuple[str, str, str]:
    """(badge, its style, why) for the server and the TCP data; ("● live", ..., "") when all is well.

    Paused, the frame's data is old on purpose, so only the server's own state counts."""
    if liveness is None:
        return " ◌ starting ", "bold", "looking for the server"
    if liveness.pid is not None and not liveness.running:
        return " ✖ SERVER GONE ", "bold white on red", f"server {liveness.ended or 'exited'}"
    if not liveness.listening:
        who = "nothing" if liveness.pid is None else f"pid {liveness.pid} runs, but nothing"
        return " ○ NOT LISTENING ", "bold black on yellow", f"{who} listens on port {model.port}"
    tcp_at = model.sampled_at.get("tcp")
    if tcp_at is not None and now - tcp_at > STALE_S and not paused:
        return " ◌ STALE ", "bold black on yellow", f"TCP data {age_text(now - tcp_at)} old"
    return " ● live ", "bold green", ""


def telemetry_text(model: Model, liveness: Liveness | None, now: float) -> tuple[str, str]:
    """(what telemetry is doing, style): off, never heard from, quiet for a while, or ""."""
    if model.note("telemetry"):
        return f"telemetry: {model.note('telemetry')}", "yellow"
    if liveness is not None and liveness.telemetry_flag is False:
        return "telemetry off: server started without --telemetry", "bold yellow"
    heard = last_heard(model, liveness)
    if heard is None:
        return "no telemetry yet", "dim"
    quiet = now - heard
    return (f"telemetry quiet {age_text(quiet)}", "yellow") if quiet > TELEMETRY_QUIET_S else ("", "")


def ages_text(model: Model, liveness: Liveness | None, now: float) -> Text:
    """How old each source's data is: TCP (sock_diag), /proc (fdinfo), telemetry, and the capture."""
    parts = []
    for label, source in (("tcp", "tcp"), ("/proc", "proc")):
        at = model.sampled_at.get(source)
        parts.append(f"{label} {age_text(now - at) if at is not None else '–'}")
    heard = last_heard(model, liveness)
    parts.append(f"tel {age_text(now - heard) if heard is not None else '–'}")
    parts.append(capture_state(model))
    return Text(" ".join(parts), style="dim")


def capture_state(model: Model) -> str:
    if not model.capturing:
        return "cap off"
    note = model.note("packets")
    if note.startswith("starting"):
        return "cap starting"
    return "cap failed" if note else "cap on"


def segments(model: Model, paused: bool, liveness: Liveness | None) -> list[Segment]:
    """Everything the line could say, in display order, each with its priority."""
    now = model.clock()
    badge, style, why = health(model, liveness, now, paused)
    shown: list[Segment] = []
    if paused:
        shown.append((0, Text(" ❚❚ PAUSED ", style="bold black on yellow")))
        tcp_at = model.sampled_at.get("tcp")
        if model.tcp_wall is not None and tcp_at is not None:
            frame = f"TCP sample {clock_text(model.tcp_wall)}, {age_text(now - tcp_at)} ago"
            shown.append((1, Text(frame, style="bold")))
        if why:  # what happened meanwhile: the probe goes on while the frame is frozen
            shown.append((1, Text(f"{badge.strip()[0]} {why}", style="bold red")))
    else:
        shown.append((0, Text(badge, style=style)))
        if why:
            shown.append((1, Text(why, style="bold")))
    telemetry, telemetry_style = telemetry_text(model, liveness, now)
    if telemetry:
        shown.append((2, Text(telemetry, style=telemetry_style)))
    variant = model.variant or model.waits.variant or "server"
    pid = f"pid {model.pid}" if model.pid is not None else "pid ?"
    shown.append((3, Text.assemble((variant, "bold"), f" {pid} :{model.port}")))
    shown.append((4, ages_text(model, liveness, now)))
    counts = f"{plural(sum(model.tcp.counts.values()), 'socket')} {plural(model.events_seen, 'event')}"
    shown.append((5, Text(counts)))
    if model.dropped_events:
        shown.append((2, Text(f"{plural(model.dropped_events, 'event')} dropped", style="yellow")))
    return shown


def fit(shown: list[Segment], width: int) -> Text:
    """Join the segments, dropping the least important (then the rightmost) until they fit."""
    kept = list(shown)
    while len(kept) > 1 and sum(len(text) for _, text in kept) + len(SEPARATOR) * (len(kept) - 1) > width:
        weakest = max(range(len(kept)), key=lambda index: (kept[index][0], index))
        del kept[weakest]
    line = Text()
    for index, (_, text) in enumerate(kept):
        if index:
            line.append(" " if index == 1 else SEPARATOR, style="dim")  # the badge is padded already
        line.append_text(text)
    return line


def status_text(model: Model, paused: bool, width: int = 200, liveness: Liveness | None = None) -> Text:
    """The status line for ``model`` at ``width`` columns; ``liveness`` overrides the model's probe."""
    return fit(segments(model, paused, liveness or model.liveness), width)


class StatusBar(Panel):
    DEFAULT_CSS = "StatusBar { height: 1; background: $boost; }"

    def draw(self, model: Model, paused: bool) -> None:
        """While paused the model is frozen, so the probe comes from the collector, which goes on."""
        collector = getattr(self.app, "collector", None)
        liveness = collector.status() if paused and collector is not None else None
        self.show(status_text(model, paused, self.size.width or 200, liveness))
