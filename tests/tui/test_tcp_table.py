"""TcpTable on made-up sock_diag rows: sorting (LISTEN kept out of queue sorts), reversing, filters,
search by client id, address or port, and the state history each poll adds to."""

from __future__ import annotations

from tui.model.tcp import Filters, TcpTable
from tui.sources.tcp_states import TcpSocket

PORT = 1883
HOST = "127.0.0.1"


def end_pair(
    client_port: int, state: str = "ESTABLISHED", send_q: int = 0, client_state: str = ""
) -> list[TcpSocket]:
    """The server's and the client's socket of one loopback connection."""
    server = TcpSocket(state, (HOST, PORT), (HOST, client_port), send_q, 0, "off", 0, client_port, 0)
    client = TcpSocket(client_state or state, (HOST, client_port), (HOST, PORT), 0, 0, "off", 0, 0, 0)
    return [server, client]


LISTENER = TcpSocket("LISTEN", (HOST, PORT), ("0.0.0.0", 0), 4096, 3, "off", 0, 1, 0)


def table_of(*pairs: list[TcpSocket]) -> TcpTable:
    table = TcpTable(PORT)
    table.update([LISTENER, *(row for pair in pairs for row in pair)], sampled_at=1.0)
    return table


def test_queue_sorts_keep_listen_last_in_both_directions() -> None:
    table = table_of(end_pair(50001, send_q=10), end_pair(50002, send_q=99_000), end_pair(50003))
    table.set_sort("send-q")
    shown = table.shown()
    assert [row.send_q for row in shown[:2]] == [99_000, 10]
    assert shown[-1].state == "LISTEN"  # its Send-Q (4096) is a backlog, not bytes: not ranked
    table.reverse_sort()
    shown = table.shown()
    assert shown[0].send_q == 0 and shown[-2].send_q == 99_000 and shown[-1].state == "LISTEN"


def test_state_sort_puts_listen_first_and_reverse_turns_it_around() -> None:
    table = table_of(end_pair(50002, "FIN_WAIT_2", client_state="CLOSE_WAIT"), end_pair(50001))
    assert [row.state for row in table.shown()][:3] == ["LISTEN", "ESTABLISHED", "ESTABLISHED"]
    table.reverse_sort()
    assert table.shown()[0].state == "CLOSE_WAIT" and table.shown()[-1].state == "LISTEN"


def test_filters_combine_and_the_queued_filter_leaves_listen_out() -> None:
    table = table_of(end_pair(50001, send_q=5), end_pair(50002), end_pair(50003, send_q=7))
    table.set_filters(Filters(queued=True))
    assert {row.remote[1] for row in table.shown()} == {50001, 50003}
    table.set_filters(Filters(queued=True, client=(HOST, 50003)))
    assert [(row.local[1], row.remote[1]) for row in table.shown()] == [(PORT, 50003)]
    table.set_filters(Filters(client=(HOST, 50003)))
    assert len(table.shown()) == 2  # both ends of that connection


def test_search_matches_client_id_port_and_address() -> None:
    table = table_of(end_pair(50001), end_pair(50002), end_pair(51234))
    ids = {(HOST, 50002): "sensor-17"}
    table.client_ids = lambda end: ids.get(end, "")
    table.set_filters(Filters(search="SENSOR"))
    assert {table.client_end(row) for row in table.shown()} == {(HOST, 50002)}
    table.set_filters(Filters(search="51234"))
    assert {table.client_end(row) for row in table.shown()} == {(HOST, 51234)}
    table.set_filters(Filters(search="5000"))  # digits: a port, not a prefix of one
    assert table.shown() == []
    table.set_filters(Filters(search="127.0.0.1:5000"))
    assert {table.client_end(row)[1] for row in table.shown()} == {50001, 50002}


def test_history_records_each_end_changing_state_and_leaving_the_dump() -> None:
    table = TcpTable(PORT)
    table.update(end_pair(50001), sampled_at=1.0)
    table.update(end_pair(50001, "FIN_WAIT_2", client_state="CLOSE_WAIT"), sampled_at=2.0)
    table.update(end_pair(50001, "FIN_WAIT_2", client_state="CLOSE_WAIT"), sampled_at=3.0)  # no change
    assert [change.state for change in table.history_of((HOST, 50001))][-2:] == ["FIN_WAIT_2", "CLOSE_WAIT"]
    server, _client = end_pair(50001, "TIME_WAIT")
    table.update([server], sampled_at=4.0)  # the client's socket is gone: it closed and was reaped
    history = [(change.t, change.side, change.state) for change in table.history_of((HOST, 50001))]
    assert history == [
        (1.0, "server", "ESTABLISHED"), (1.0, "client", "ESTABLISHED"),
        (2.0, "server", "FIN_WAIT_2"), (2.0, "client", "CLOSE_WAIT"),
        (4.0, "server", "TIME_WAIT"), (4.0, "client", ""),
    ]  # fmt: skip
    assert table.history_of((HOST, 50002)) == []  # another connection: nothing of this one's
