"""The app's 10 Hz frame when the widgets it draws are not there: skipped, never a crash.

A frame can come before the main screen is composed, or after shutdown has begun taking the
screen apart: the app's timers stop only after the screens are gone, and a shutdown that does
not go through App.exit() (run_test's, or one after a crash elsewhere) lets them tick meanwhile.
No server here; waits poll with a deadline, nothing sleeps to synchronise.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from textual.pilot import Pilot

from tui.app import LabApp
from tui.model import Model


class CountingCollector:
    """Stands in for tui.collector.Collector: never any data, but it counts the frames that asked."""

    capture = None

    def __init__(self) -> None:
        self.frames = 0

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def take(self) -> None:
        self.frames += 1


def counted_app() -> tuple[LabApp, CountingCollector]:
    collector = CountingCollector()
    return LabApp(Model(1883), collector), collector  # type: ignore[arg-type]


async def until(pilot: Pilot, condition: Callable[[], bool], what: str, timeout: float = 10.0) -> None:
    """Let the app run until ``condition()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.05)  # a polling interval; the deadline decides


def test_a_frame_before_the_app_has_its_widgets_draws_nothing() -> None:
    app, collector = counted_app()
    app.next_frame()  # what the timer calls, here before the app ever ran
    assert collector.frames == 1  # the frame took its batch and skipped the drawing


def test_frames_once_the_widgets_are_gone_are_skipped() -> None:
    async def scenario() -> None:
        app, collector = counted_app()
        async with app.run_test(size=(80, 24)) as pilot:
            await app.main_screen.remove_children()  # what shutdown does before the timer stops
            app.redraw()
            frames = collector.frames
            await until(pilot, lambda: collector.frames >= frames + 2, "two frames of the timer")
        # Leaving run_test re-raises whatever a frame raised inside the app.

    asyncio.run(scenario())


def test_a_frame_while_the_active_pane_is_away_is_skipped() -> None:
    """TabbedContent finds its active pane by id, and raises while that pane is not mounted."""

    async def scenario() -> None:
        app, collector = counted_app()
        async with app.run_test(size=(80, 24)) as pilot:
            pane = app.tabbed_content.active_pane
            assert pane is not None
            await pane.remove()  # the state a frame can meet while tabs are built or torn down
            app.redraw()
            frames = collector.frames
            await until(pilot, lambda: collector.frames >= frames + 2, "two frames of the timer")

    asyncio.run(scenario())
