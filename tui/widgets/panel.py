"""A Static that repaints only when what it shows has changed.

At ten frames a second most frames change nothing; skipping their updates keeps an idle
TUI idle and the terminal quiet (no flicker, no output to a slow ssh link).
"""

from __future__ import annotations

from typing import Any

from rich.console import RenderableType
from textual.widgets import Static


class Panel(Static):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._shown: object = None

    def show(self, content: RenderableType, key: object = None) -> None:
        """Display ``content`` unless ``key`` (default: the content itself) equals the last one."""
        key = content if key is None else key
        if key != self._shown:
            self._shown = key
            self.update(content)
