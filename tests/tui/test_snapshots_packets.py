"""Snapshots of the packet ladder at 80x24 and 120x40, drawn from made-up segments (test_packets.py).

A close handshake with every note; drops, with the kernel's count in the summary and "state
unknown" notes; and the ladder held while scrolled back. Update after an intended change with
``pytest tests/tui/test_snapshots_packets.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import pytest
from textual.pilot import Pilot

from tests.tui.test_packets import closing_segments, dropping_segments, many_cycles, model_with
from tui.app import LabApp
from tui.widgets.navigation import Move
from tui.widgets.packets_view import PacketsView

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}


def packets_tab(moves: Sequence[Move] = ()) -> Callable[[Pilot], object]:
    """Show the packets tab, then move its cursor as the app's keys would."""

    async def run_before(pilot: Pilot) -> None:
        app: LabApp = pilot.app  # type: ignore[assignment]
        app.action_show_tab("packets")
        await pilot.pause()
        app.redraw()  # lay the ladder out once, so the moves know its page size
        await pilot.pause()
        for move in moves:
            app.query_one(PacketsView).navigate(move)
        app.redraw()
        await pilot.pause()

    return run_before


@pytest.mark.parametrize("size", SIZES)
def test_ladder_with_a_close_handshake(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    app = LabApp(model_with(closing_segments()))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=packets_tab())


@pytest.mark.parametrize("size", SIZES)
def test_ladder_with_drops_says_state_unknown(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    app = LabApp(model_with(dropping_segments()))
    assert snap_compare(app, terminal_size=SIZES[size], run_before=packets_tab())


@pytest.mark.parametrize("size", SIZES)
def test_ladder_held_while_scrolled_back(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    app = LabApp(model_with(many_cycles(75)))
    moves: list[Move] = ["page_up", "up", "up"]
    assert snap_compare(app, terminal_size=SIZES[size], run_before=packets_tab(moves))
