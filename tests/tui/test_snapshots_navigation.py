"""Snapshots of the navigation states: the row cursor with a sort mark, a quick filter, the `/`
prompt, a connection's detail screen and the help screen, at 80×24 and 120×40, from made-up data.

Update after an intended change with ``pytest tests/tui/test_snapshots_navigation.py --snapshot-update``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import pytest
from textual.pilot import Pilot

from tests.tui.sample_data import LOOPBACK, PORT, sample_model, tcp_rows
from tui.app import LabApp
from tui.model import Model
from tui.model.tcp import Filters
from tui.sources.tcp_states import TcpSocket

SIZES = {"80x24": (80, 24), "120x40": (120, 40)}
STALLED = (LOOPBACK, 50001)  # sub-alice: the subscriber that stopped reading


def stalled_model() -> Model:
    """The sample server, then two more polls: sub-alice stops reading and its server end's
    Send-Q grows past 2 MB; later the server gives up on it (FIN_WAIT_1 behind the data)."""
    model = sample_model()
    server = (LOOPBACK, PORT)

    def poll(send_q: int, server_state: str) -> list[TcpSocket]:
        rows = [row for row in tcp_rows() if STALLED not in (row.local, row.remote)]
        rows.append(TcpSocket(server_state, server, STALLED, send_q, 0, "persist", 1600, 60001, 0))
        rows.append(TcpSocket("ESTABLISHED", STALLED, server, 0, 2_310_144, "off", 0, 70001, 0))
        return rows

    first = model.now
    model.tcp.update(poll(2_988_033, "ESTABLISHED"), sampled_at=first + 1.0)
    model.tcp.update(poll(2_988_033, "FIN_WAIT_1"), sampled_at=first + 4.8)
    model.now = first + 5.0  # the frame: the last poll is 0.2 s old, the first 5 s
    return model


def keys(*pressed: str) -> Callable[[Pilot], Awaitable[None]]:
    async def press(pilot: Pilot) -> None:
        await pilot.press(*pressed)
        await pilot.pause()

    return press


@pytest.mark.parametrize("size", SIZES)
def test_cursor_and_send_q_sort(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    """Sorted by Send-Q (▼ on its header), the cursor two rows down; 2,988,033 bytes read 2.8M."""
    app = LabApp(stalled_model())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=keys("2", "s", "s", "down", "down"))


@pytest.mark.parametrize("size", SIZES)
def test_queued_filter_reversed(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    app = LabApp(stalled_model())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=keys("2", "u", "r"))


@pytest.mark.parametrize("size", SIZES)
def test_search_prompt(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    app = LabApp(stalled_model())
    assert snap_compare(app, terminal_size=SIZES[size], run_before=keys("slash", *"alice"))


@pytest.mark.parametrize("size", SIZES)
def test_connection_detail(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    """Exact bytes, the state history of both ends, and the connection's own packets."""
    model = stalled_model()
    model.tcp.set_filters(Filters(client=STALLED))
    app = LabApp(model)
    assert snap_compare(app, terminal_size=SIZES[size], run_before=keys("2", "enter"))


@pytest.mark.parametrize("size", SIZES)
def test_help_screen_keys_first(snap_compare, size: str) -> None:  # type: ignore[no-untyped-def]
    assert snap_compare(LabApp(sample_model()), terminal_size=SIZES[size], run_before=keys("question_mark"))
