"""The TUI's kernel-facing sources against real loopback sockets, threads and epoll sets.

Every wait polls a condition with a deadline (tests.support.waiting); nothing sleeps to
synchronise. Packet capture is skipped, with the reason, where it cannot run.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator

import pytest

from tests.support.waiting import wait_until
from tui.sources.epoll_fdinfo import (
    EpollInterest,
    ProcFds,
    decode_events,
    epoll_interest,
    parse_fdinfo,
    socket_inodes,
)
from tui.sources.packet_capture import PacketCapture, Segment
from tui.sources.tcp_activity import tcp_counters
from tui.sources.tcp_sampler import TcpSampler
from tui.sources.tcp_states import LISTEN_ONLY, TcpSocket, state_counts, tcp_sockets
from tui.sources.threads import ThreadMonitor, ThreadRow, parse_stat, read_thread, read_threads

LOOPBACK = "127.0.0.1"


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.create_server((LOOPBACK, 0), backlog=5) as server:
        yield server


@pytest.fixture
def connection(listener: socket.socket) -> Iterator[tuple[socket.socket, socket.socket]]:
    """(client, accepted server end) of one loopback connection."""
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    with client, accepted:
        yield client, accepted


def port_of(sock: socket.socket) -> int:
    return sock.getsockname()[1]


def row_of(sock: socket.socket, port: int) -> TcpSocket | None:
    """The sock_diag row for a connected socket, matched by its local and remote address."""
    local, remote = sock.getsockname()[:2], sock.getpeername()[:2]
    return next((row for row in tcp_sockets(port) if row.local == local and row.remote == remote), None)


def rows_between(local: tuple[str, int], remote: tuple[str, int], port: int) -> list[TcpSocket]:
    """Rows for one connection in either direction, found by address: works after close()."""
    ends = {(local, remote), (remote, local)}
    return [row for row in tcp_sockets(port) if (row.local, row.remote) in ends]


def fill_until_blocked(sender: socket.socket) -> int:
    """Write into a peer that never reads until the kernel refuses more; return bytes sent."""
    sender.setblocking(False)
    sent = 0
    chunk = b"x" * 65536
    while True:
        try:
            sent += sender.send(chunk)
        except BlockingIOError:
            return sent


# ---------------------------------------------------------------- tcp_states


def test_established_connection_shows_both_ends_with_unacked_and_unread_bytes(connection):
    client, accepted = connection
    port = port_of(accepted)
    sent = fill_until_blocked(client)

    def queues() -> tuple[TcpSocket, TcpSocket] | None:
        sender, receiver = row_of(client, port), row_of(accepted, port)
        # Every byte written is either unacknowledged (sender's Send-Q) or unread (receiver's Recv-Q).
        if sender and receiver and sender.send_q + receiver.recv_q == sent:
            return sender, receiver
        return None

    sender, receiver = wait_until(queues, what="Send-Q + Recv-Q to account for every byte")
    assert sender.state == receiver.state == "ESTABLISHED"
    assert sender.send_q > 0 and sender.recv_q == 0
    assert receiver.recv_q > 0 and receiver.send_q == 0
    assert sender.inode == os.fstat(client.fileno()).st_ino
    assert sender.uid == os.geteuid()


def test_listen_row_counts_the_accept_queue_against_the_backlog(listener):
    port = port_of(listener)
    waiting = [socket.create_connection(listener.getsockname()) for _ in range(2)]
    try:
        listen_row = wait_until(
            lambda: next((r for r in tcp_sockets(port) if r.state == "LISTEN" and r.recv_q == 2), None),
            what="two connections in the accept queue",
        )
        assert listen_row.send_q == 5  # the backlog given to listen()
        assert listen_row.remote == ("0.0.0.0", 0)
        # Server ends not yet accepted are ESTABLISHED but have no file, hence no inode.
        unaccepted = [r for r in tcp_sockets(port) if r.local[1] == port and r.state == "ESTABLISHED"]
        assert len(unaccepted) == 2 and all(r.inode == 0 for r in unaccepted)
    finally:
        for client in waiting:
            client.close()


def test_side_closing_first_waits_in_fin_wait_2_while_peer_sits_in_close_wait(connection):
    client, accepted = connection
    port = port_of(accepted)
    client_address, server_address = client.getsockname(), client.getpeername()
    client.close()

    def by_local_address() -> dict[tuple[str, int], TcpSocket] | None:
        rows = {row.local: row for row in rows_between(client_address, server_address, port)}
        return rows if getattr(rows.get(client_address), "state", None) == "FIN_WAIT_2" else None

    rows = wait_until(by_local_address, what="FIN_WAIT_2 on the closing side")
    assert rows[server_address].state == "CLOSE_WAIT"  # until the server calls close() too
    assert rows[server_address].recv_q == 1  # the FIN's sequence number, until recv() returns b""
    assert rows[client_address].inode == 0  # close(), not shutdown(): an orphan with no file


def test_both_closed_leaves_time_wait_on_the_active_closer_only(connection):
    client, accepted = connection
    port = port_of(accepted)
    client_address, server_address = client.getsockname(), client.getpeername()
    client.close()
    wait_until(lambda: getattr(row_of(accepted, port), "state", None) == "CLOSE_WAIT", what="CLOSE_WAIT")
    accepted.close()

    def settled() -> list[TcpSocket] | None:
        rows = rows_between(client_address, server_address, port)
        return rows if [row.state for row in rows] == ["TIME_WAIT"] else None

    rows = wait_until(settled, what="one TIME_WAIT row and nothing else")
    assert (rows[0].local, rows[0].timer) == (client_address, "timewait")
    assert 0 < rows[0].timer_left_ms <= 60_000 and rows[0].inode == 0


def test_port_filter_keeps_only_sockets_using_that_port(connection):
    _client, accepted = connection
    port = port_of(accepted)
    with socket.create_server((LOOPBACK, 0)) as other_listener:
        other = socket.create_connection(other_listener.getsockname())
        with other:
            rows = tcp_sockets(port)
            assert rows and all(port in (r.local[1], r.remote[1]) for r in rows)
            # Other runs may leave TIME_WAIT rows that happen to use this port number too,
            # so count only this test's own sockets, found by address.
            ours = rows_between(_client.getsockname(), _client.getpeername(), port)
            assert state_counts(ours) == {"ESTABLISHED": 2}
            assert any(r.state == "LISTEN" and r.local == (LOOPBACK, port) for r in rows)
            assert port_of(other) not in {r.local[1] for r in rows}


def test_ipv6_sockets_are_listed_under_af_inet6_only():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 support")
    try:
        server = socket.create_server(("::1", 0), family=socket.AF_INET6)
    except OSError as error:
        pytest.skip(f"no ::1 here: {error}")
    port = port_of(server)
    with server, socket.create_connection(("::1", port)) as client:
        rows = wait_until(lambda: [r for r in tcp_sockets(port, socket.AF_INET6) if r.state == "ESTABLISHED"])
        assert {r.local[0] for r in rows} == {"::1"}
        # An AF_INET dump must not list this IPv6 connection (stray IPv4 rows on the same
        # port number, e.g. TIME_WAIT from other runs, are not ours and are allowed).
        client_port = client.getsockname()[1]
        assert not [r for r in tcp_sockets(port, socket.AF_INET) if client_port in (r.local[1], r.remote[1])]


def steady(sampler: TcpSampler) -> list[TcpSocket]:
    """A dump equal to the one before: stray TIME_WAIT rows of other runs (their timers tick) may
    share this port number until they expire."""
    previous = [sampler.sample()]

    def repeated() -> list[TcpSocket] | None:
        current = sampler.sample()
        same, previous[0] = current is previous[0], current
        return current if same else None

    return wait_until(repeated, timeout=65, what="two byte-identical dumps in a row")


def test_tcp_sampler_hands_back_an_unchanged_dump_as_is_and_decodes_a_changed_socket(connection):
    client, accepted = connection
    port = port_of(accepted)
    sampler = TcpSampler(port)
    try:
        rows = steady(sampler)
        assert sampler.sample() is rows and sampler.decoded == 0
        client.send(b"hello")
        local, remote = accepted.getsockname(), accepted.getpeername()
        changed = wait_until(
            lambda: next(
                (r for r in sampler.sample() if (r.local, r.remote, r.recv_q) == (local, remote, 5)), None
            ),
            what="five unread bytes on the server's end",
        )
        assert changed.inode == os.fstat(accepted.fileno()).st_ino
        listener = next(row for row in rows if row.state == "LISTEN")
        assert listener in sampler.rows  # unchanged rows are reused, not decoded again
    finally:
        sampler.close()


def test_listen_only_dump_leaves_the_connections_out(connection):
    _client, accepted = connection
    port = port_of(accepted)
    assert {row.state for row in tcp_sockets(port)} >= {"LISTEN", "ESTABLISHED"}
    only = tcp_sockets(port, states=LISTEN_ONLY)
    assert [(row.state, row.local[1]) for row in only] == [("LISTEN", port)]


def test_tcp_counters_move_when_a_segment_is_sent(connection):
    client, _accepted = connection
    before = tcp_counters()
    client.send(b"x")
    wait_until(lambda: tcp_counters() != before, what="InSegs/OutSegs to count the segment")


# ---------------------------------------------------------------- threads

THREADED_CHILD = textwrap.dedent("""
    import sys, threading, time

    def name_me(name):
        # The kernel's per-thread name, what top -H and /proc show (15 bytes at most).
        with open(f"/proc/self/task/{threading.get_native_id()}/comm", "w") as comm:
            comm.write(name)

    def spin(name, named):
        name_me(name)
        named.release()
        deadline = time.monotonic() + 20  # bounded: never outlive a broken test for long
        while time.monotonic() < deadline:
            pass

    def block(name, named, forever):
        name_me(name)
        named.release()
        forever.wait()

    named, forever = threading.Semaphore(0), threading.Event()
    threads = [threading.Thread(target=spin, args=("busy) (spin", named), daemon=True)]
    for i in (1, 2):
        threads.append(threading.Thread(target=block, args=(f"waiter-{i}", named, forever), daemon=True))
    for thread in threads:
        thread.start()
    for _ in threads:
        named.acquire()
    print("ready", flush=True)
    sys.stdin.readline()
""")


@pytest.fixture
def threaded_child() -> Iterator[int]:
    """A process with three named threads: one spinning, two blocked; yields its pid."""
    child = subprocess.Popen(
        [sys.executable, "-c", THREADED_CHILD], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert child.stdout is not None and child.stdout.readline() == "ready\n"
        yield child.pid
    finally:
        child.kill()
        child.wait()


def test_thread_monitor_reads_names_states_and_cpu_from_another_process(threaded_child):
    monitor = ThreadMonitor(threaded_child)
    first = {row.sample.name: row for row in monitor.sample()}
    assert {"busy) (spin", "waiter-1", "waiter-2"} <= set(first)
    assert all(row.cpu_percent == 0.0 for row in first.values())  # no previous sample yet
    # A waiter may still be on its way into Event.wait(); then it sleeps ("S") for good.
    wait_until(
        lambda: {r.sample.state for r in monitor.sample() if r.sample.name.startswith("waiter-")} == {"S"},
        what="both waiters asleep",
    )

    def spinner_busy() -> ThreadRow | None:
        spinner = next(row for row in monitor.sample() if row.sample.name == "busy) (spin")
        return spinner if spinner.cpu_percent > 10 and spinner.sample.state == "R" else None

    spinner = wait_until(spinner_busy, what="the spinning thread to use CPU")
    assert spinner.sample.utime_ticks + spinner.sample.stime_ticks > 0
    waiter = read_thread(threaded_child, first["waiter-1"].sample.tid)
    assert waiter is not None and waiter.voluntary_ctxt_switches >= 1
    assert waiter.syscall == "futex"  # Event.wait(): a lock's wait, which sleeps in futex(2)
    main = read_thread(threaded_child, threaded_child)  # the main thread's tid is the pid
    assert main is not None and (main.syscall, main.syscall_arg) == ("read", 0)  # readline() of stdin


def test_stat_parsing_splits_on_the_last_parenthesis():
    line = "4242 (a) b (c)) S 1 4242 4242 0 -1 4194368 10 0 0 0 17 3 0 0 20 0 1 0 1 2 3\n"
    assert parse_stat(line) == ("a) b (c)", "S", 17, 3)


def test_thread_that_vanished_is_skipped_and_a_gone_process_is_reported():
    assert read_thread(os.getpid(), 2**22 + 1) is None  # above pid_max: no such task
    assert read_threads(os.getpid())[0].tid == os.getpid()  # the main thread's tid is the pid
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    with pytest.raises(ProcessLookupError):
        ThreadMonitor(child.pid).sample()


# ---------------------------------------------------------------- epoll_fdinfo


def test_epoll_fdinfo_shows_edge_triggered_interest_joined_to_the_socket_inode(connection):
    _client, accepted = connection
    with select.epoll() as epoll:
        epoll.register(accepted.fileno(), select.EPOLLIN | select.EPOLLET)
        interest = epoll_interest(os.getpid())[epoll.fileno()]

    [row] = [row for row in interest if row.tfd == accepted.fileno()]
    # epoll_ctl always adds ERR and HUP to what was asked for.
    assert row.event_names == ("EPOLLIN", "EPOLLERR", "EPOLLHUP", "EPOLLET")
    assert row.data == accepted.fileno()  # Python's select.epoll stores the fd as epoll_data
    assert row.inode == socket_inodes(os.getpid())[accepted.fileno()]
    assert row.inode == row_of(accepted, port_of(accepted)).inode


def test_oneshot_interest_is_disarmed_after_it_fires(connection):
    client, accepted = connection
    with select.epoll() as epoll:
        epoll.register(accepted.fileno(), select.EPOLLIN | select.EPOLLONESHOT)
        client.send(b"!")
        assert epoll.poll(5) == [(accepted.fileno(), select.EPOLLIN)]
        [row] = epoll_interest(os.getpid())[epoll.fileno()]
    assert row.event_names == ("EPOLLONESHOT",)  # nothing armed until EPOLL_CTL_MOD


def test_proc_fds_takes_inodes_from_fdinfo_and_hands_back_unchanged_samples_as_is(connection):
    client, accepted = connection
    read_end, write_end = os.pipe()
    sampler = ProcFds(os.getpid())
    try:
        with select.epoll() as epoll:
            epoll.register(accepted.fileno(), select.EPOLLIN)
            epoll.register(read_end, select.EPOLLIN)
            inodes, interest = sampler.sample(0.0)
            watched = {entry.tfd for entry in interest[epoll.fileno()]}
            assert {accepted.fileno(), read_end} <= watched
            assert inodes[accepted.fileno()] == os.fstat(accepted.fileno()).st_ino
            assert read_end not in inodes  # watched, but a pipe: not a socket
            scans = sampler.full_scans
            assert sampler.sample(1.0) == (inodes, interest)
            assert sampler.inodes is inodes and sampler.interest is interest  # unchanged: the same objects
            epoll.register(client.fileno(), select.EPOLLOUT)  # the set changes: fdinfo says so
            inodes_now, interest_now = sampler.sample(2.0)
            assert sampler.full_scans == scans  # no readlink of every fd: fdinfo gave the new inode
            assert interest_now is not interest
            assert inodes_now[client.fileno()] == os.fstat(client.fileno()).st_ino
    finally:
        os.close(read_end)
        os.close(write_end)


def test_fdinfo_lines_already_parsed_are_reused_and_a_changed_line_is_parsed_again():
    def line(tfd: int, events: int, inode: int) -> str:
        return f"tfd: {tfd:8d} events: {events:8x} data: {tfd:16x}  pos:0 ino:{inode:x} sdev:8\n"

    header = "pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\n"
    known: dict[str, EpollInterest] = {}
    first = parse_fdinfo(header + line(9, 0x19, 500) + line(7, 0x19, 400), known)
    assert [(entry.tfd, entry.inode) for entry in first] == [(7, 400), (9, 500)]  # in fd order
    again = parse_fdinfo(header + line(9, 0x1D, 500) + line(7, 0x19, 400), known)
    assert again[0] is first[0]  # fd 7's line is unchanged: the same object
    assert again[1].event_names == ("EPOLLIN", "EPOLLOUT", "EPOLLERR", "EPOLLHUP")  # fd 9 now wants OUT
    assert again[1] == EpollInterest(9, 0x1D, 9, 500)


def test_event_mask_decoding_names_unknown_bits_in_hex():
    assert decode_events(0x80002005) == ("EPOLLIN", "EPOLLOUT", "EPOLLRDHUP", "EPOLLET")
    assert decode_events(0x800) == ("0x800",)


# ---------------------------------------------------------------- packet_capture


def require_capture() -> None:
    usable, reason = PacketCapture.available()
    if not usable:
        pytest.skip(reason)


@pytest.fixture(params=[LOOPBACK, "::1"], ids=["ipv4", "ipv6"])
def captured_server(request: pytest.FixtureRequest) -> Iterator[tuple[socket.socket, PacketCapture]]:
    """A listening socket whose port is being captured, the capture already running."""
    require_capture()
    family = socket.AF_INET6 if ":" in request.param else socket.AF_INET
    try:
        server = socket.create_server((request.param, 0), family=family)
    except OSError as error:
        pytest.skip(f"cannot listen on {request.param}: {error}")
    capture = PacketCapture(port_of(server))
    capture.start()
    try:
        if not capture.wait_ready(timeout=15):
            pytest.fail(f"capture did not start: {capture.error}")
        yield server, capture
    finally:
        capture.stop()
        server.close()


def collect_until(
    capture: PacketCapture, client_port: int, enough: Callable[[list[str]], bool]
) -> list[Segment]:
    """Poll the capture until the flags seen on ``client_port``'s connection are ``enough``."""
    seen: list[Segment] = []

    def done() -> bool:
        seen.extend(s for s in capture.poll() if client_port in (s.sport, s.dport))
        return enough([s.flags for s in seen])

    wait_until(done, timeout=10, what=f"segments of the connection from port {client_port}")
    return seen


def test_capture_sees_handshake_and_close_once_each(captured_server):
    server, capture = captured_server
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()
    client_port = port_of(client)
    client.close()
    accepted.close()

    seen = collect_until(capture, client_port, lambda flags: sum("F" in f for f in flags) >= 2)
    # One copy of each: without L2socket=conf.L2socket every segment on lo shows twice.
    assert [s.flags for s in seen] == ["S", "SA", "FA", "FA"]
    syn, syn_ack = seen[0], seen[1]
    assert (syn.sport, syn.dport, syn.ack) == (client_port, port_of(server), 0)
    assert syn_ack.ack == syn.seq + 1  # a SYN uses up one sequence number
    assert [s.t for s in seen] == sorted(s.t for s in seen)


def test_capture_shows_an_abortive_close_as_a_reset(captured_server):
    server, capture = captured_server
    client = socket.create_connection(server.getsockname()[:2])
    accepted, _ = server.accept()
    client_port = port_of(client)
    # SO_LINGER on with a zero timeout: close() sends RST instead of FIN.
    client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()
    accepted.close()

    seen = collect_until(capture, client_port, lambda flags: any("R" in f for f in flags))
    assert [s.flags for s in seen][:2] == ["S", "SA"]
    assert "R" in seen[2].flags and seen[2].sport == client_port


def test_capture_on_a_missing_interface_says_why():
    require_capture()
    capture = PacketCapture(9, iface="no-such-if0")
    capture.start()
    try:
        assert not capture.wait_ready(timeout=15)
        assert capture.error and "no-such-if0" in capture.error
    finally:
        capture.stop()
