"""Every TCP socket on the server's port, as sock_diag reports it: the TCP view's data.

Both ends of a loopback connection share the port, so each row is marked as the server's
side (local port = the server's) or the client's. The view shows one page of rows at a time;
filtering and sorting happen here, once per poll, never per drawn frame.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from tui.sources.tcp_states import TcpSocket, state_counts

# The order states take in a connection's life: the default sort and the count bar's order.
STATE_ORDER = (
    "LISTEN", "SYN_SENT", "SYN_RECV", "NEW_SYN_RECV", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
    "CLOSING", "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK", "CLOSE",
)  # fmt: skip
STATE_RANK = {state: rank for rank, state in enumerate(STATE_ORDER)}
SORT_KEYS = ("state", "client", "send-q", "recv-q", "timer")


def is_stuck_closing(row: TcpSocket) -> bool:
    """FIN_WAIT_1 with unsent data: the FIN queues behind bytes the peer will not take (notes §6)."""
    return row.state == "FIN_WAIT_1" and row.send_q > 0


class TcpTable:
    """The latest sock_diag rows for ``port``, with counts, a state filter and a sort key."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rows: list[TcpSocket] = []
        self.counts: dict[str, int] = {}
        self.by_inode: dict[int, TcpSocket] = {}
        self.stuck = 0  # FIN_WAIT_1 sockets with a non-empty Send-Q
        self.polls = 0
        self.state_filter: str | None = None
        self.sort_key = "state"
        self._shown: list[TcpSocket] | None = None  # filtered and sorted; None = stale

    def update(self, rows: list[TcpSocket]) -> None:
        self.rows = rows
        self.counts = state_counts(rows)
        self.by_inode = {row.inode: row for row in rows if row.inode}
        self.stuck = sum(1 for row in rows if is_stuck_closing(row)) if "FIN_WAIT_1" in self.counts else 0
        self.polls += 1
        self._shown = None

    def side(self, row: TcpSocket) -> str:
        return "server" if row.local[1] == self.port else "client"

    def client_end(self, row: TcpSocket) -> tuple[str, int]:
        """The client's address of the connection a row belongs to, whichever end the row is."""
        return row.remote if row.local[1] == self.port else row.local

    def _sort_key(self) -> Callable[[TcpSocket], Any]:
        client_end, port = self.client_end, self.port
        keys: dict[str, Callable[[TcpSocket], Any]] = {
            "state": lambda row: (STATE_RANK.get(row.state, 99), client_end(row), row.local[1] != port),
            "client": lambda row: (client_end(row), row.local[1] != port),
            "send-q": lambda row: (-row.send_q, client_end(row)),
            "recv-q": lambda row: (-row.recv_q, client_end(row)),
            "timer": lambda row: (row.timer == "off", row.timer_left_ms, client_end(row)),
        }
        return keys[self.sort_key]

    def ordered_counts(self) -> list[tuple[str, int]]:
        """(state, count) in life-cycle order, present states only."""
        return sorted(self.counts.items(), key=lambda item: STATE_RANK.get(item[0], 99))

    def shown(self) -> list[TcpSocket]:
        """Rows passing the filter, sorted; recomputed only after a poll or a setting change."""
        if self._shown is None:
            rows: Sequence[TcpSocket] = self.rows
            if self.state_filter is not None:
                rows = [row for row in rows if row.state == self.state_filter]
            self._shown = sorted(rows, key=self._sort_key())
        return self._shown

    def set_filter(self, state: str | None) -> None:
        self.state_filter = state
        self._shown = None

    def cycle_filter(self) -> str | None:
        """all -> each state present, in life-cycle order -> all."""
        choices: list[str | None] = [None, *(state for state, _ in self.ordered_counts())]
        if self.state_filter not in choices:
            choices.append(self.state_filter)
        self.set_filter(choices[(choices.index(self.state_filter) + 1) % len(choices)])
        return self.state_filter

    def set_sort(self, key: str) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}; one of {', '.join(SORT_KEYS)}")
        self.sort_key = key
        self._shown = None

    def cycle_sort(self) -> str:
        self.set_sort(SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)])
        return self.sort_key
