"""A DataTable that holds one page of rows, however many the data has.

Refilling a 10,000-row DataTable ten times a second cannot keep up, so this widget keeps
only the rows that fit on screen and a caption with the position and total. The page is
rebuilt only when its cells change, so an idle view costs nothing to redraw.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

Row = TypeVar("Row")
Cells = tuple[str | Text, ...]


class PagedTable(Vertical):
    """Columns are (label, key, width); ``show(rows, render)`` draws the current page."""

    DEFAULT_CSS = """
    PagedTable { height: 1fr; }
    PagedTable > DataTable { height: 1fr; overflow: hidden hidden; }
    PagedTable > .caption { height: 1; color: $text-muted; }
    """

    def __init__(
        self, columns: Sequence[tuple[str, str, int]], noun: str, pageable: bool = True, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.columns = columns
        self.noun = noun
        self.pageable = pageable  # False: always the first page (the newest rows)
        self.page = 0
        self._cells: list[Cells] | None = None
        self._caption = ""

    def compose(self) -> ComposeResult:
        table: DataTable[str | Text] = DataTable(cursor_type="none", zebra_stripes=True, show_cursor=False)
        table.can_focus = False  # keys belong to the app's bindings ([ ] f s), not to a cursor
        yield table
        yield Static(classes="caption")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label, key, width in self.columns:
            table.add_column(label, key=key, width=width)

    @property
    def page_size(self) -> int:
        """Rows that fit under the header; at least one, before the first layout too."""
        return max(1, self.query_one(DataTable).size.height - 1)

    def turn(self, pages: int) -> None:
        if self.pageable:
            self.page = max(0, self.page + pages)

    def show(self, rows: Sequence[Row], render: Callable[[Row], Cells], note: str = "") -> None:
        """Draw the page of ``rows`` the user is on; ``render`` turns a row into cells."""
        size = self.page_size
        pages = max(1, -(-len(rows) // size))
        self.page = min(self.page, pages - 1)
        start = self.page * size
        cells = [render(row) for row in rows[start : start + size]]
        if cells != self._cells:
            table = self.query_one(DataTable)
            table.clear()
            table.add_rows(cells)
            self._cells = cells
        if rows:
            where = f"{self.noun} {start + 1}–{start + len(cells)} of {len(rows):,}"
            if pages > 1 and self.pageable:
                where += f" · page {self.page + 1}/{pages} ([ ])"
        else:
            where = f"no {self.noun}"
        caption = f"{where}  {note}" if note else where
        if caption != self._caption:
            self.query_one(".caption", Static).update(Text(caption))  # literal: "[ ]" is not markup
            self._caption = caption
