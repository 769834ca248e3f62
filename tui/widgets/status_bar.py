"""The top line: which server, which process, how much is flowing, and whether the view is live."""

from __future__ import annotations

from rich.text import Text

from tui.model import Model

from .panel import Panel


def status_text(model: Model, paused: bool) -> Text:
    variant = model.variant or model.waits.variant or "server"
    pid = f"pid {model.pid}" if model.pid is not None else "pid ?"
    # Live or paused comes first: it must survive truncation in a narrow terminal.
    if paused:
        text = Text(" ❚❚ PAUSED ", style="bold black on yellow")
    else:
        text = Text(" ● live ", style="bold green")
    text.append(" ")
    text.append(variant, style="bold")
    text.append(
        f" · {pid} · port {model.port} · {sum(model.tcp.counts.values()):,} sockets"
        f" · {model.events_seen:,} events"
    )
    if model.dropped_events:
        text.append(f" ({model.dropped_events:,} dropped)", style="yellow")
    exited = model.note("server")
    if exited:
        text.append(f" · {exited}", style="bold red")
    return text


class StatusBar(Panel):
    DEFAULT_CSS = "StatusBar { height: 1; background: $boost; }"

    def draw(self, model: Model, paused: bool) -> None:
        self.show(status_text(model, paused))
