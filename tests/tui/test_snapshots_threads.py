"""Snapshots of the threads view in its four stories, from made-up Batches (test_threads.py).

``--naive`` (the workers take turns: one holds while the other waits), the default model (holds
of microseconds), the ``--blocking`` stall (a hold still open, one worker asleep in readv, the
others in futex) and a single-threaded server (no lock at all), each at 80x24 and 120x40, plus
the row cursor moved off the first lane. Update after an intended change with
``pytest tests/tui/test_snapshots_threads.py --snapshot-update`` and review the SVGs.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from tests.tui.test_threads import fixed_model, naive_model, single_threaded_model, stalled_model
from tui.app import LabApp
from tui.model import Model
from tui.widgets.threads_view import ThreadsView

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
STORIES: dict[str, Callable[[], Model]] = {
    "naive": naive_model,
    "fixed": fixed_model,
    "blocking-stall": stalled_model,
    "single-threaded": single_threaded_model,
}


def on_threads_tab(moves: tuple[str, ...] = ()) -> Callable[[Pilot], object]:
    async def show(pilot: Pilot) -> None:
        app: LabApp = pilot.app  # type: ignore[assignment]
        app.action_show_tab("threads")
        await pilot.pause()
        view = app.query_one(ThreadsView)
        for move in moves:
            view.navigate(move)  # type: ignore[arg-type]
        app.redraw()
        await pilot.pause()

    return show


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("story", STORIES)
def test_threads_view(snap_compare, story: str, size: str) -> None:  # type: ignore[no-untyped-def]
    app = LabApp(STORIES[story]())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=on_threads_tab())


@pytest.mark.parametrize("size", SIZES)
def test_threads_view_with_the_cursor_on_the_stalled_worker(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    app = LabApp(stalled_model())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=on_threads_tab(("down",)))
