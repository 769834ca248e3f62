"""Snapshots of every view, drawn from deterministic data (sample_data.py) with no live server.

Sizes: 80x24, the smallest the TUI supports, and 120x40. Update after an intended change with
``pytest tests/tui/test_snapshots.py --snapshot-update`` and review the SVGs in __snapshots__.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from textual.pilot import Pilot

from tests.tui.sample_data import sample_model
from tui.app import LabApp
from tui.model import Model

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
TABS = ("ready", "tcp", "threads", "packets")


def showing(tab: str) -> Callable[[Pilot], object]:
    async def switch(pilot: Pilot) -> None:
        pilot.app.action_show_tab(tab)  # type: ignore[attr-defined]
        await pilot.pause()

    return switch


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("tab", TABS)
def test_view_snapshot(snap_compare, tab: str, size: str) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(LabApp(sample_model()), terminal_size=SIZES[size], run_before=showing(tab))


def test_ready_list_under_edge_triggered_epoll(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(LabApp(sample_model("ET")), run_before=showing("ready"))


def test_tcp_view_filtered_to_one_state(snap_compare) -> None:  # type: ignore[no-untyped-def]
    model = sample_model()
    model.tcp.set_filter("FIN_WAIT_2")
    model.tcp.set_sort("client")
    assert snap_compare(LabApp(model), run_before=showing("tcp"))


def test_packets_view_without_capture_says_why(snap_compare) -> None:  # type: ignore[no-untyped-def]
    model = Model(1883, 4242, "epoll_lt")
    model.notes["packets"] = "packet capture needs root (CAP_NET_RAW) to open an AF_PACKET socket"
    assert snap_compare(LabApp(model), run_before=showing("packets"))


def test_help_screen(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(LabApp(sample_model()), press=["question_mark"])


def test_paused(snap_compare) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(LabApp(sample_model()), press=["p"])
