"""Every TCP socket on the server's port, as sock_diag reports it: the TCP view's data.

Both ends of a loopback connection share the port, so each row is marked as the server's
side (local port = the server's) or the client's. The view shows one page of rows at a time;
filtering and sorting happen here, once per poll or per key press, never per drawn frame.
Each poll is also compared with the one before, so every connection keeps the history of the
states its two ends went through: the detail screen shows it.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from itertools import compress
from operator import attrgetter

from tui.sources.tcp_states import TcpSocket, state_counts

# The order states take in a connection's life: the default sort and the count bar's order.
STATE_ORDER = (
    "LISTEN", "SYN_SENT", "SYN_RECV", "NEW_SYN_RECV", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
    "CLOSING", "TIME_WAIT", "CLOSE_WAIT", "LAST_ACK", "CLOSE",
)  # fmt: skip
STATE_RANK = {state: rank for rank, state in enumerate(STATE_ORDER)}
SORT_KEYS = ("state", "client", "send-q", "recv-q", "timer")
QUEUE_SORTS = ("send-q", "recv-q", "timer")  # LISTEN's queues mean something else: kept out, at the end
HISTORY_KEPT = 32  # state changes shown per connection
HISTORY_ROWS_KEPT = 400_000  # changed rows the history log holds: 20 open/close waves of 10,000 clients

Endpoint = tuple[str, int]


def is_stuck_closing(row: TcpSocket) -> bool:
    """FIN_WAIT_1 with unsent data: the FIN queues behind bytes the peer will not take (notes §6)."""
    return row.state == "FIN_WAIT_1" and row.send_q > 0


@dataclass(frozen=True, slots=True)
class StateChange:
    """One end of a connection seen in a new state at the poll taken at ``t`` (monotonic s)."""

    t: float
    side: str  # "server" or "client"
    state: str  # "" once the socket is gone from the dump


@dataclass(frozen=True, slots=True)
class Filters:
    """What the table shows: every filter set here must hold for a row to be shown."""

    state: str | None = None
    queued: bool = False  # Send-Q > 0 only
    client: Endpoint | None = None  # one connection: both its ends
    search: str = ""  # client id, address or port

    def describe(self) -> str:
        parts = [self.state or "all states"]
        if self.queued:
            parts.append("Send-Q > 0")
        if self.client is not None:
            parts.append(f"client {self.client[0]}:{self.client[1]}")
        if self.search:
            parts.append(f"search “{self.search}”")
        return " · ".join(parts)

    @property
    def any(self) -> bool:
        return self != Filters()


class TcpTable:
    """The latest sock_diag rows for ``port``, with counts, filters, a sort key and state histories."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rows: list[TcpSocket] = []
        self.counts: dict[str, int] = {}
        self.by_inode: dict[int, TcpSocket] = {}
        self.stuck = 0  # FIN_WAIT_1 sockets with a non-empty Send-Q
        self.polls = 0
        self.sampled_at = 0.0  # monotonic time of the poll the rows come from
        self.filters = Filters()
        self.sort_key = "state"
        self.reverse = False
        self.client_ids: Callable[[Endpoint], str] = lambda end: ""  # set by the Model: names.by_peer
        # (poll number, poll time, rows new in that poll, rows gone in it): what history_of reads
        self._change_log: deque[tuple[int, float, list[TcpSocket], list[TcpSocket]]] = deque()
        self._logged_rows = 0
        # the detail screen's connection: (client, last poll read, each end's last state, changes)
        self._history: tuple[Endpoint, int, dict[str, str], list[StateChange]] | None = None
        self._client_keys: dict[int, int | None] = {}  # id(row) -> client-order key (None: not yet)
        self._host_numbers: dict[str, int] = {}
        self._shown: list[TcpSocket] | None = None  # filtered and sorted; None = stale

    # ------------------------------------------------------------------ data

    def update(self, rows: list[TcpSocket], sampled_at: float = 0.0) -> None:
        """A new poll. Rows the source hands over again unchanged are the same objects (the
        sock_diag decoder caches them by their bytes), so what changed is found by identity,
        with loops that run in C (map, set operations, compress): at 20,000 rows a Python-level
        pass per row costs milliseconds each, on the UI thread. Sort keys of new rows and the
        state histories are worked out later, only when a sort or a detail screen asks."""
        if rows is self.rows:  # the source saw the very same dump: only the sample time moves
            self.sampled_at = sampled_at
            return
        old_rows, old_keys = self.rows, self._client_keys
        # The old rows are still referenced here, so no new row can have reused an old row's id.
        old_ids, new_ids = set(map(id, old_rows)), list(map(id, rows))
        arrived_ids = set(new_ids).difference(old_ids)
        self._client_keys = dict(zip(new_ids, map(old_keys.get, new_ids), strict=True))
        gone_ids = old_ids.difference(self._client_keys)
        if arrived_ids or gone_ids:
            arrived = list(compress(rows, map(arrived_ids.__contains__, new_ids)))
            gone = list(compress(old_rows, map(gone_ids.__contains__, map(id, old_rows))))
            self._log_changes(sampled_at, arrived, gone)
        self.rows = rows
        self.sampled_at = sampled_at
        self.counts = state_counts(rows)
        by_inode = dict(zip(map(attrgetter("inode"), rows), rows, strict=True))
        by_inode.pop(0, None)  # TIME_WAIT, orphans and not-yet-accepted connections have no inode
        self.by_inode = by_inode
        self.stuck = sum(1 for row in rows if is_stuck_closing(row)) if "FIN_WAIT_1" in self.counts else 0
        self.polls += 1
        self._shown = None

    def _client_key(self, row: TcpSocket) -> int:
        """One int that orders rows by client address, then port, server's end before client's."""
        server = row.local[1] == self.port
        host, port = row.remote if server else row.local
        number = self._host_numbers.get(host)
        if number is None:
            try:
                number = int(ipaddress.ip_address(host))
            except ValueError:
                number = 0
            self._host_numbers[host] = number
        return ((number << 16 | port) << 1) | (not server)

    def _log_changes(self, t: float, arrived: list[TcpSocket], gone: list[TcpSocket]) -> None:
        """Keep what this poll changed, as it came: (time, new row objects, vanished ones).

        Nothing per connection is built here: 10,000 clients closing at once would cost a
        Python step per socket on the UI thread. ``history_of`` reads the log for the one
        connection a detail screen shows. The log keeps about HISTORY_ROWS_KEPT rows."""
        self._change_log.append((self.polls, t, arrived, gone))
        self._logged_rows += len(arrived) + len(gone)
        while self._logged_rows > HISTORY_ROWS_KEPT and len(self._change_log) > 1:
            _, _, old_arrived, old_gone = self._change_log.popleft()
            self._logged_rows -= len(old_arrived) + len(old_gone)

    def history_of(self, client: Endpoint) -> list[StateChange]:
        """Each end's states as the kept polls saw them change, oldest first; "" = left the dump.

        The detail screen asks ten times a second: the answer for its one connection is kept and
        only polls logged since the last call are read."""
        cached = self._history if self._history is not None and self._history[0] == client else None
        _, read_up_to, last, changes = cached or (client, -1, {}, [])
        for sequence, t, arrived, gone in self._change_log:
            if sequence <= read_up_to:
                continue
            seen_now = set()
            for row in arrived:
                side = self._side_of(row, client)
                if side is not None:
                    seen_now.add(side)
                    if last.get(side) != row.state:
                        last[side] = row.state
                        changes.append(StateChange(t, side, row.state))
            for row in gone:  # gone, unless a new row of the same end arrived in the same poll
                side = self._side_of(row, client)
                if side is not None and side not in seen_now and last.get(side):
                    last[side] = ""
                    changes.append(StateChange(t, side, ""))
            read_up_to = sequence
        del changes[:-HISTORY_KEPT]
        self._history = (client, read_up_to, last, changes)
        return list(changes)

    def _side_of(self, row: TcpSocket, client: Endpoint) -> str | None:
        """"server" or "client" if ``row`` is an end of ``client``'s connection, else None."""
        if row.state == "LISTEN":
            return None
        if row.local[1] == self.port:
            return "server" if row.remote == client else None
        return "client" if row.local == client else None

    # ------------------------------------------------------------------ reading

    def side(self, row: TcpSocket) -> str:
        return "server" if row.local[1] == self.port else "client"

    def client_end(self, row: TcpSocket) -> Endpoint:
        """The client's address of the connection a row belongs to, whichever end the row is."""
        return row.remote if row.local[1] == self.port else row.local

    def ends_of(self, client: Endpoint) -> list[TcpSocket]:
        """Both ends of one connection (server's first), as the latest poll saw them."""
        port = self.port
        ends = [row for row in self.rows if row.state != "LISTEN" and client in (row.remote, row.local)]
        return sorted(ends, key=lambda row: row.local[1] != port)

    def ordered_counts(self) -> list[tuple[str, int]]:
        """(state, count) in life-cycle order, present states only."""
        return sorted(self.counts.items(), key=lambda item: STATE_RANK.get(item[0], 99))

    def shown(self) -> list[TcpSocket]:
        """Rows passing the filters, sorted; recomputed only after a poll or a setting change."""
        if self._shown is None:
            rows = self._filtered()
            self._shown = self._sorted(rows)
        return self._shown

    def _filtered(self) -> list[TcpSocket]:
        filters, port = self.filters, self.port
        rows = self.rows
        if filters.state is not None:
            rows = [row for row in rows if row.state == filters.state]
        if filters.queued:
            rows = [row for row in rows if row.send_q > 0 and row.state != "LISTEN"]
        if filters.client is not None:
            client = filters.client
            rows = [row for row in rows if (row.remote if row.local[1] == port else row.local) == client]
        if filters.search:
            rows = self._searched(rows, filters.search)
        return rows

    def _searched(self, rows: list[TcpSocket], query: str) -> list[TcpSocket]:
        """Rows whose client id contains ``query``, or whose client address contains it, or whose
        client port is it: one pass, with the id looked up once per distinct client end."""
        port, client_ids = self.port, self.client_ids
        wanted_port = int(query) if query.isdigit() else None
        lowered = query.lower()
        matches: dict[Endpoint, bool] = {}
        kept = []
        for row in rows:
            if row.state == "LISTEN":
                continue
            end = row.remote if row.local[1] == port else row.local
            hit = matches.get(end)
            if hit is None:
                hit = (
                    end[1] == wanted_port
                    or lowered in client_ids(end).lower()
                    or (wanted_port is None and lowered in f"{end[0]}:{end[1]}")
                )
                matches[end] = hit
            if hit:
                kept.append(row)
        return kept

    def _sorted(self, rows: list[TcpSocket]) -> list[TcpSocket]:
        """Order by client first (one cached int per row), then stable-sort by the chosen column,
        so ties stay in client order; at 20,000 rows both passes take a few milliseconds.
        LISTEN stays out of queue and timer sorts, whichever the direction: its queues are an
        accept queue and a backlog, not bytes."""
        key_name, keys = self.sort_key, self._client_keys
        listeners = [row for row in rows if row.state == "LISTEN"] if key_name in QUEUE_SORTS else []
        if listeners:
            rows = [row for row in rows if row.state != "LISTEN"]
        missing = [row for row in rows if keys.get(id(row)) is None]
        for row in missing:  # rows new since the last sort; unchanged rows keep theirs
            keys[id(row)] = self._client_key(row)
        ordered = sorted(rows, key=lambda row: keys[id(row)])
        if key_name == "state":
            rank = STATE_RANK.get
            ordered.sort(key=lambda row: rank(row.state, 99), reverse=self.reverse)
        elif key_name == "client":
            if self.reverse:
                ordered.reverse()
        elif key_name == "send-q":
            ordered.sort(key=lambda row: -row.send_q, reverse=self.reverse)
        elif key_name == "recv-q":
            ordered.sort(key=lambda row: -row.recv_q, reverse=self.reverse)
        else:  # timer: running timers first, soonest first
            ordered.sort(key=lambda row: (row.timer == "off", row.timer_left_ms), reverse=self.reverse)
        return ordered + listeners

    # ------------------------------------------------------------------ settings

    def set_filters(self, filters: Filters) -> None:
        self.filters = filters
        self._shown = None

    def set_filter(self, state: str | None) -> None:
        self.set_filters(Filters(state, self.filters.queued, self.filters.client, self.filters.search))

    @property
    def state_filter(self) -> str | None:
        return self.filters.state

    def cycle_filter(self) -> str | None:
        """all -> each state present, in life-cycle order -> all."""
        choices: list[str | None] = [None, *(state for state, _ in self.ordered_counts())]
        current = self.filters.state
        if current not in choices:
            choices.append(current)
        self.set_filter(choices[(choices.index(current) + 1) % len(choices)])
        return self.filters.state

    def set_sort(self, key: str, reverse: bool | None = None) -> None:
        if key not in SORT_KEYS:
            raise ValueError(f"unknown sort key {key!r}; one of {', '.join(SORT_KEYS)}")
        self.sort_key = key
        if reverse is not None:
            self.reverse = reverse
        self._shown = None

    def cycle_sort(self) -> str:
        self.set_sort(SORT_KEYS[(SORT_KEYS.index(self.sort_key) + 1) % len(SORT_KEYS)], reverse=False)
        return self.sort_key

    def reverse_sort(self) -> bool:
        self.reverse = not self.reverse
        self._shown = None
        return self.reverse
