"""How a row cursor moves: the keys every table and the packet ladder share, as htop has them.

Up/Down move one row, PgUp/PgDn one screenful, Home/End to the ends. Views keep an index into
their full row list (not into the page on screen), so the cursor survives a redraw and the
page follows the cursor rather than the other way round.
"""

from __future__ import annotations

from typing import Literal, get_args

Move = Literal["up", "down", "page_up", "page_down", "home", "end"]
MOVES: tuple[Move, ...] = get_args(Move)


def moved(cursor: int, move: Move, rows: int, page_rows: int) -> int:
    """The cursor's index after ``move`` over ``rows`` rows, ``page_rows`` of them on screen."""
    if rows <= 0:
        return 0
    step = {"up": -1, "down": 1, "page_up": -max(1, page_rows), "page_down": max(1, page_rows)}
    if move == "home":
        return 0
    if move == "end":
        return rows - 1
    return max(0, min(rows - 1, cursor + step[move]))


def page_start(cursor: int, start: int, page_rows: int, rows: int) -> int:
    """The first row on screen: unchanged while the cursor is visible, else scrolled just enough."""
    page_rows = max(1, page_rows)
    if cursor < start:
        start = cursor
    elif cursor >= start + page_rows:
        start = cursor - page_rows + 1
    return max(0, min(start, max(0, rows - page_rows)))
