"""A DataTable that holds one page of rows, however many the data has, with a row cursor.

Refilling a 10,000-row DataTable ten times a second cannot keep up, so this widget keeps
only the rows that fit on screen and a caption with the position and total. The page is
rebuilt only when its cells change, so an idle view costs nothing to redraw. The cursor is an
index into the full row list and follows its row (by key) when the data is re-sorted or
refreshed, as htop's selection follows a process.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import Any, Generic, TypeVar

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from .navigation import Move, moved, page_start

Row = TypeVar("Row")
Cells = tuple[str | Text, ...]


class PagedTable(Vertical, Generic[Row]):
    """Columns are (label, key, width); ``show(rows, render)`` draws the page around the cursor."""

    DEFAULT_CSS = """
    PagedTable { height: 1fr; }
    PagedTable > DataTable { height: 1fr; overflow: hidden hidden; }
    PagedTable > DataTable > .datatable--cursor { background: $accent 45%; text-style: bold; }
    PagedTable > .caption { height: 1; color: $text-muted; }
    """

    def __init__(
        self,
        columns: Sequence[tuple[str, str, int]],
        noun: str,
        pageable: bool = True,
        row_key: Callable[[Any], Hashable] | None = None,
        widths: Callable[[int], list[int]] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.columns = columns
        self.noun = noun
        self.pageable = pageable  # False: always the first page (the newest rows), no cursor
        self.row_key = row_key  # keeps the cursor on its row when the rows change order
        self.widths = widths  # column widths for a given table width; None: the fixed ones
        self._widths: list[int] = []
        self.cursor = 0
        self.start = 0  # index of the first row on screen
        self.cursor_row: Any = None  # the row under the cursor at the last show()
        self._cursor_key: Hashable = None
        self._rows: Sequence[Any] | None = None
        self._cells: list[Cells] | None = None
        self._caption = ""
        self._labels: tuple[str, ...] = ()

    def compose(self) -> ComposeResult:
        table: DataTable[str | Text] = DataTable(
            cursor_type="row" if self.pageable else "none", zebra_stripes=True, show_cursor=self.pageable
        )
        table.can_focus = False  # keys belong to the app's bindings, which move this cursor
        yield table
        yield Static(classes="caption")

    def on_mount(self) -> None:
        self._add_columns([width for _, _, width in self.columns])

    def on_resize(self) -> None:
        if self.widths is not None and self.size.width and self.widths(self.size.width) != self._widths:
            self._add_columns(self.widths(self.size.width))

    def _add_columns(self, widths: list[int]) -> None:
        """(Re)build the columns; a resize that changes the widths rebuilds them and the page."""
        table = self.query_one(DataTable)
        table.clear(columns=True)
        labels = self._labels or tuple(label for label, _, _ in self.columns)
        for label, (_, key, _), width in zip(labels, self.columns, widths, strict=True):
            table.add_column(label, key=key, width=width)
        self._labels, self._widths, self._cells = labels, widths, None

    @property
    def page_size(self) -> int:
        """Rows that fit under the header; at least one, before the first layout too."""
        return max(1, self.query_one(DataTable).size.height - 1)

    @property
    def rows_shown(self) -> Sequence[Any]:
        """Every row of the last show(), on this page or another."""
        return self._rows or ()

    def navigate(self, move: Move) -> None:
        if self.pageable and self._rows is not None:
            self.cursor = moved(self.cursor, move, len(self._rows), self.page_size)
            self._remember_cursor_key()

    def set_labels(self, labels: Sequence[str]) -> None:
        """Rename the column headers (e.g. to mark the sort column) without rebuilding the table."""
        labels = tuple(labels)
        if labels == self._labels:
            return
        table = self.query_one(DataTable)
        for column, label in zip(table.columns.values(), labels, strict=True):
            column.label = Text(label)
        self._labels = labels
        table.refresh()

    def show(self, rows: Sequence[Row], render: Callable[[Row], Cells], note: str = "") -> None:
        """Draw the page of ``rows`` around the cursor; ``render`` turns a row into cells."""
        size = self.page_size
        if rows is not self._rows:
            self._follow_cursor_key(rows)
        self._rows = rows
        if self.pageable:
            self.cursor = max(0, min(self.cursor, len(rows) - 1))
            self.start = page_start(self.cursor, self.start, size, len(rows))
        else:
            self.cursor = self.start = 0
        start = self.start
        page = rows[start : start + size]
        self.cursor_row = rows[self.cursor] if rows and self.pageable else None
        self._remember_cursor_key()
        cells = [self._fitted(render(row)) for row in page]
        table = self.query_one(DataTable)
        if cells != self._cells:
            table.clear()
            table.add_rows(cells)
            self._cells = cells
        if self.pageable and cells and table.cursor_row != self.cursor - start:
            table.move_cursor(row=self.cursor - start, animate=False)
        self._show_caption(rows, start, len(cells), note)

    def _fitted(self, cells: Cells) -> Cells:
        """Cut a cell wider than its column with a visible "…": DataTable would cut it silently."""
        widths = self._widths
        if not widths or all(len(cell) <= width for cell, width in zip(cells, widths, strict=False)):
            return cells
        fitted: list[str | Text] = []
        for cell, width in zip(cells, widths, strict=True):
            if len(cell) > width:
                cell = Text(cell) if isinstance(cell, str) else cell.copy()
                cell.truncate(width, overflow="ellipsis")
            fitted.append(cell)
        return tuple(fitted)

    def _show_caption(self, rows: Sequence[Row], start: int, shown: int, note: str) -> None:
        if rows:
            where = f"{self.noun} {start + 1:,}–{start + shown:,} of {len(rows):,}"
            if self.pageable and len(rows) > shown:
                where += f" · row {self.cursor + 1:,} (↑↓ PgUp PgDn Home End)"
        else:
            where = f"no {self.noun}"
        caption = f"{where}  {note}" if note else where
        if caption != self._caption:
            self.query_one(".caption", Static).update(Text(caption))  # literal, not markup
            self._caption = caption

    def _remember_cursor_key(self) -> None:
        if self.row_key is not None and self._rows and 0 <= self.cursor < len(self._rows):
            self._cursor_key = self.row_key(self._rows[self.cursor])

    def _follow_cursor_key(self, rows: Sequence[Row]) -> None:
        """New rows (a poll, a re-sort): put the cursor back on the row it was on, if still there.

        One pass over the rows, done only when the row list itself changed, not per frame.
        """
        if self.row_key is None or self._cursor_key is None or self.cursor == 0:
            return  # at the top the cursor stays at the top, like a log following new rows
        key, row_key = self._cursor_key, self.row_key
        for index, row in enumerate(rows):
            if row_key(row) == key:
                self.cursor = index
                return
