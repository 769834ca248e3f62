"""Snapshots of every state of the status line, at 80x24 and 120x40, from made-up probes.

The line alone is drawn (in a one-widget app), so these snapshots change only when the status
line does. The clock is fixed: ages and the paused frame's wall-clock time are deterministic.
Update after an intended change with ``pytest tests/tui/test_snapshots_status.py --snapshot-update``.
"""

from __future__ import annotations

import time

import pytest
from textual.app import App, ComposeResult

from tests.tui.sample_data import PID, START, sample_model
from tui.model import Model
from tui.sources.server_process import Liveness
from tui.widgets.status_bar import StatusBar

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
NOW = START + 12.0  # sample_model's last batch
WALL = time.mktime((2026, 3, 14, 14, 3, 7, 0, 0, -1)) + 0.123  # 14:03:07.123 local time, any zone


class StatusOnly(App[None]):
    """The status bar over an empty screen, drawn once from ``model``."""

    def __init__(self, model: Model, paused: bool = False) -> None:
        super().__init__()
        self.model, self.paused = model, paused

    def compose(self) -> ComposeResult:
        yield StatusBar()

    def on_mount(self) -> None:
        self.call_after_refresh(lambda: self.query_one(StatusBar).draw(self.model, self.paused))


def probed(**changes: object) -> Liveness:
    fields: dict[str, object] = {
        "checked_at": NOW, "pid": PID, "running": True, "ended": "", "listening": True,
        "telemetry_flag": True, "variant": "epoll_lt", "telemetry_at": NOW - 0.3,
    }  # fmt: skip
    fields.update(changes)
    return Liveness(**fields)  # type: ignore[arg-type]


def model_at(liveness: Liveness | None, tcp_age: float = 0.2, telemetry_age: float | None = 0.3) -> Model:
    model = sample_model()
    model.clock = lambda: NOW
    model.capturing = True
    model.liveness = liveness
    model.sampled_at.update(tcp=NOW - tcp_age, proc=NOW - 0.4, threads=NOW - 0.4)
    if telemetry_age is not None:
        model.sampled_at["telemetry"] = NOW - telemetry_age
    model.tcp_wall = WALL
    return model


def attached_to_an_empty_port() -> Model:
    """``--attach`` to a port nobody listens on: no pid, no variant, no telemetry yet."""
    model = model_at(
        probed(pid=None, running=False, listening=False, telemetry_flag=None, variant="", telemetry_at=None),
        telemetry_age=None,
    )
    model.pid, model.variant = None, ""
    model.waits.variant = ""
    return model


STATES = {
    "live": lambda: model_at(probed()),
    "starting": lambda: model_at(None),
    "gone-killed": lambda: model_at(probed(running=False, ended="killed by SIGKILL", listening=False)),
    "not-listening": lambda: attached_to_an_empty_port(),
    "stale": lambda: model_at(probed(), tcp_age=3.4),
    "telemetry-off": lambda: model_at(probed(telemetry_flag=False, telemetry_at=None), telemetry_age=None),
    "telemetry-quiet": lambda: model_at(probed(telemetry_at=NOW - 75), telemetry_age=75),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("state", STATES)
def test_status_line(snap_compare, state: str, size: str) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(StatusOnly(STATES[state]()), terminal_size=SIZES[size])


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("gone", [False, True], ids=["live", "server-gone"])
def test_status_line_paused(snap_compare, gone: bool, size: str) -> None:  # type: ignore[no-untyped-def]
    """Paused: the frozen frame's TCP sample time first; a server that died meanwhile still shows."""
    liveness = probed(running=False, ended="killed by SIGKILL") if gone else probed()
    model = model_at(liveness, tcp_age=4.2)
    assert snap_compare(StatusOnly(model, paused=True), terminal_size=SIZES[size])
