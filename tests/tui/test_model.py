"""The TUI's model without Textual or a server: made-up events and rows in, view data out."""

from __future__ import annotations

import dataclasses

from tests.tui.sample_data import PORT, event, sample_model, tcp_rows
from tui.model import Batch, Model
from tui.model.packets import spell_flags
from tui.model.waits import WaitLog
from tui.sources.packet_capture import Segment
from tui.widgets.state_machine import bar_cells, draw_close_machine


def wait(call: int, ready: list[list[int]], part: int = 0, parts: int = 1) -> dict:
    return event("wait", float(call), variant="epoll_lt", mode="LT", call=call, blocked_s=0.0,
                 ready=ready, watched=3, part=part, parts=parts)  # fmt: skip


def test_streak_counts_consecutive_waits_reporting_an_fd() -> None:
    log = WaitLog()
    for call, ready in enumerate([[[7, 1]], [[7, 1]], [[7, 1], [8, 1]], [], [[7, 1]]], start=1):
        log.add(wait(call, ready))
    assert [[entry.streak for entry in w.ready] for w in log.waits] == [[1], [2], [3, 1], [], [1]]
    top = log.top_streak(now=5.0)  # the waits' t is their call number: the run of 3 ended at t=3
    assert top is not None and top.entry.streak == 3 and top.entry.fd == 7


def test_a_ready_list_split_across_events_is_one_wait() -> None:
    log = WaitLog()
    log.add(wait(1, [[7, 1]], part=0, parts=2))
    log.add(wait(1, [[8, 1]], part=1, parts=2))
    log.add(wait(2, [[8, 1]]))
    assert log.calls == 2
    assert [entry.fd for entry in log.waits[0].ready] == [7, 8]
    assert log.waits[1].ready[0].streak == 2


def test_gaps_in_call_numbers_count_as_lost_waits() -> None:
    log = WaitLog()
    for call in (1, 2, 6):
        log.add(wait(call, []))
    assert log.missed == 3


def test_fd_names_follow_accept_conn_and_close() -> None:
    model = Model(PORT)
    peer = "127.0.0.1:5"
    opened = [event("accept", 1, fd=7, peer=peer), event("conn", 1, fd=7, peer=peer, client_id="alice")]
    model.apply(Batch(now=1, events=opened))
    assert model.names.label(7) == "alice"
    model.apply(Batch(now=2, events=[event("close", 2, fd=7, peer=peer, client_id="alice", reason="bye")]))
    assert model.names.label_at(7, 1) == "alice"  # older ready lists still name it
    assert model.names.by_peer["127.0.0.1:5"] == "alice"  # its socket may linger in TIME_WAIT
    assert model.closes[-1].reason == "bye"
    model.apply(Batch(now=3, events=[event("accept", 3, fd=7, peer="127.0.0.1:6")]))  # fd 7 reused
    assert model.names.label(7) == model.names.label_at(7, 2) == "127.0.0.1:6"
    assert model.names.label_at(7, 1) == "alice"


def test_tcp_table_filters_sorts_and_flags_stuck_fin_wait_1() -> None:
    model = Model(PORT)
    model.apply(Batch(now=1, tcp=tcp_rows()))
    tcp = model.tcp
    assert tcp.stuck == 1
    assert [row.state for row in tcp.shown()][:2] == ["LISTEN", "ESTABLISHED"]
    assert tcp.cycle_filter() == "LISTEN"
    assert [row.state for row in tcp.shown()] == ["LISTEN"]
    tcp.set_filter(None)
    tcp.set_sort("send-q")
    assert tcp.shown()[0].state == "FIN_WAIT_1"
    sides = {(row.state, tcp.side(row)) for row in tcp.rows}
    assert ("FIN_WAIT_2", "server") in sides and ("CLOSE_WAIT", "client") in sides


def test_interest_set_joins_names_and_sockets_by_inode() -> None:
    rows = {row.tfd: row for row in sample_model().interest_rows}
    assert rows[3].label == "listener" and rows[3].state == "LISTEN" and rows[3].recv_q is None
    assert rows[7].label == "sub-alice" and rows[7].state == "ESTABLISHED" and rows[7].recv_q == 0


def test_naive_lock_holders_are_flagged() -> None:
    model = sample_model()
    assert model.threads.flawed_threads(model.now) == ["boss", "worker-1", "worker-2"]
    lanes = {lane.row.sample.name: lane for lane in model.threads.lanes(model.now)}
    assert lanes["worker-1"].lock is not None and lanes["worker-1"].lock.acquisitions == 40


def test_ladder_names_the_active_and_passive_closer() -> None:
    model = Model(PORT)
    client, server = ("127.0.0.1", 5000), ("127.0.0.1", PORT)
    segments = [
        Segment(0.5, *client, *server, "S", 0, 0),
        Segment(0.6, *server, *client, "SA", 0, 0),
        Segment(1.0, *server, *client, "FA", 0, 0),
        Segment(2.0, *client, *server, "FA", 0, 0),
    ]
    model.apply(Batch(now=3, segments=segments))
    notes = [rung.note for rung in model.ladder.rungs][2:]
    assert notes == ["server FIN_WAIT_1; client CLOSE_WAIT", "client LAST_ACK; server TIME_WAIT (60 s)"]
    assert spell_flags("FPA") == "FIN,PSH,ACK"


def test_batches_merge_events_and_keep_the_latest_samples() -> None:
    first = Batch(now=1, events=[{"k": "x"}], tcp=[])
    first.merge(Batch(now=2, events=[{"k": "y"}], notes={"proc": "gone"}))
    assert first.now == 2 and len(first.events) == 2 and first.tcp == [] and first.notes == {"proc": "gone"}


def test_count_bar_gives_every_state_a_cell_and_fills_the_width() -> None:
    assert bar_cells([1, 10_000, 3], 40) == [1, 38, 1]
    assert sum(bar_cells([5, 5, 5, 5], 10)) == 10


def test_close_machine_shows_each_states_count() -> None:
    drawing = draw_close_machine({"FIN_WAIT_2": 3, "CLOSE_WAIT": 12}).plain
    lines = drawing.splitlines()
    assert max(len(line) for line in lines) <= 78  # fits an 80-column terminal
    assert "3" in lines[1] and "12" in lines[5]


def test_bytes_left_unread_over_two_samples_mark_a_stalled_fd() -> None:
    model = sample_model("ET")
    interest, inodes = model.interest, model.inodes
    # pub-bob (fd 8, client end 50002) keeps 1,035 unread bytes across two /proc samples.
    pub_bob = 60000 + 50002  # its server-side socket's inode in sample_data
    stuck = [dataclasses.replace(row, recv_q=1035) if row.inode == pub_bob else row for row in tcp_rows()]
    model.apply(Batch(now=20, tcp=stuck, interest=interest, inodes=inodes))
    assert model.stalled is None  # once could be data that just arrived
    model.apply(Batch(now=21, tcp=stuck, interest=interest, inodes=inodes))
    assert model.stalled is not None and model.stalled.tfd == 8 and model.stalled.recv_q == 1035


def test_conn_reported_before_accept_still_names_the_fd() -> None:
    """Threaded servers hand a socket to a worker before the boss reports the accept."""
    model = Model(PORT)
    peer = "127.0.0.1:7"
    model.apply(Batch(now=1, events=[event("conn", 1, fd=9, peer=peer, client_id="early"),
                                     event("accept", 1, fd=9, peer=peer)]))  # fmt: skip
    assert model.names.label(9) == "early"
    assert model.names.generations[9] == 1


def test_segments_trimmed_during_a_long_pause_leave_a_gap_the_ladder_admits(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """A paused UI owes the capture's segments; past the cap the oldest go, and the ladder is told:
    the connection they belonged to says "state unknown" instead of naming states."""
    monkeypatch.setattr("tui.model.SEGMENTS_PENDING_MAX", 1)
    client, server = ("127.0.0.1", 5000), ("127.0.0.1", PORT)
    pending = Batch(now=0, segments=[Segment(0.5, *client, *server, "S", 0, 0, dropped=3, dropped_until=0.4)])
    pending.merge(Batch(now=1, segments=[Segment(0.6, *server, *client, "SA", 0, 0)]))
    pending.merge(Batch(now=2, segments=[Segment(1.0, *server, *client, "FA", 0, 0)]))
    assert (pending.dropped_segments, pending.segments_gap_drops, len(pending.segments)) == (2, 3, 1)
    model = Model(PORT)
    model.apply(pending)
    assert model.ladder.skipped == 2 and model.ladder.dropped == 3
    assert "state unknown" in model.ladder.rungs[-1].note  # its opening never reached the ladder
