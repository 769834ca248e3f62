"""The `/` prompt: type part of a client id, an address or a port, and the TCP table narrows to it.

Each keystroke filters again (one pass over the rows, the client id looked up once per
connection), so at 10,000 connections a few characters find one client; Enter keeps the
filter and closes the prompt, Esc closes it and restores what was shown before.
"""

from __future__ import annotations

from typing import ClassVar

from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Input


class SearchBar(Input):
    DEFAULT_CSS = "SearchBar { dock: bottom; height: 3; display: none; }"
    BINDINGS: ClassVar[list[BindingType]] = [Binding("escape", "cancel", "Cancel search")]

    class Cancelled(Message):
        """Esc in the prompt: the search before it opened is restored."""

    def __init__(self) -> None:
        super().__init__(placeholder="search client id, address or port; Enter keeps, Esc cancels")
        self.before = ""
        self.can_focus = False  # hidden, it must not take the keys (Textual focuses the first focusable)

    def open(self, current: str) -> None:
        self.before = current
        self.value = current
        self.display = True
        self.can_focus = True
        self.focus()

    def close(self) -> None:
        self.display = False
        self.blur()
        self.can_focus = False

    def action_cancel(self) -> None:
        self.post_message(self.Cancelled())
