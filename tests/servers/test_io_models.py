"""What each I/O model does at its edges, seen from outside: the ET trap (field notes §9),
select's FD_SETSIZE, and the EMFILE guard at a tiny ``ulimit -n``.

Every test starts its own server with the flags it needs. The 2,000-connection test for the
variants without select's limit lives in test_many_connections.py; the select test here is
its counterpart. ``MODELS`` (every variant plus ``--naive``) is shared with the other files.
"""

from __future__ import annotations

import contextlib
import os
import resource
import select
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt.packets import Pingreq, Pingresp, Puback, Publish
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess, available_variants
from tests.support.waiting import stays_false, wait_until

from .helpers import Clients, dedicated_server, next_publish, publish, subscribe, unique

# Every model a learner can start: the five variants plus the notes' flawed boss/worker.
MODELS = [pytest.param((variant,), id=variant) for variant in available_variants()]
if "threaded_boss_worker" in available_variants():
    MODELS.append(pytest.param(("threaded_boss_worker", "--naive"), id="naive_boss_worker"))

STALL_WINDOW = 1.5  # seconds: a reply on loopback takes well under a millisecond

# -- the edge-triggered trap (field notes §9) ------------------------------------------------


def send_two_kilobyte_request(clients: Clients) -> RawClient:
    """A client whose keepalive is 0 (no PINGREQ raises a new edge) sends ~2 KB in one sendall."""
    raw = clients.raw(keepalive=0)  # the CONNECT is small: read whole by the first 1 KB recv
    raw.send(Publish(unique("et-trap"), b"x" * 2000, qos=1, packet_id=1))
    return raw


def test_epoll_et_read_once_stalls_a_request_larger_than_one_read_until_the_next_segment() -> None:
    with (
        dedicated_server("epoll_et", "--bug", "read-once", "--read-chunk", "1024") as server,
        Clients(server) as clients,
    ):
        raw = send_two_kilobyte_request(clients)
        # One edge, one 1 KB recv: the rest of the PUBLISH sits unread and no new edge comes.
        with pytest.raises(TimeoutError):
            raw.next_packet(timeout=STALL_WINDOW)
        raw.send(Pingreq())  # a new segment: a new edge, and the stalled bytes are read too
        assert raw.expect(Puback) == Puback(1)
        assert raw.expect(Pingresp) == Pingresp()


@pytest.mark.parametrize("variant", ["epoll_lt", "epoll_et"])
def test_request_larger_than_one_read_completes_promptly(variant: str) -> None:
    # LT reports the fd again while bytes remain; a correct ET loop reads until EAGAIN.
    with dedicated_server(variant, "--read-chunk", "1024") as server, Clients(server) as clients:
        raw = send_two_kilobyte_request(clients)
        assert raw.expect(Puback, timeout=STALL_WINDOW) == Puback(1)


# -- select's FD_SETSIZE --------------------------------------------------------------------

FD_SETSIZE = 1024


@pytest.fixture
def enough_fds_for_the_test() -> Iterator[None]:
    """The test process itself holds one socket per client: make room for ~1,100."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = 4096 if hard == resource.RLIM_INFINITY else min(hard, 4096)
    if wanted < FD_SETSIZE + 100:
        pytest.skip(f"hard RLIMIT_NOFILE {hard} is too low for {FD_SETSIZE + 100} client sockets")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, wanted), hard))
    yield
    resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def connect_or_none(clients: Clients, client_id: str) -> RawClient | None:
    """CONNECT; None when the server closed the socket (EOF or reset) without a CONNACK."""
    raw = clients.socket()
    try:
        raw.connect(client_id)
    except ConnectionError:
        assert raw.received == []
        return None
    return raw


def server_fds(server: ServerProcess) -> list[int]:
    return sorted(int(name) for name in os.listdir(f"/proc/{server.pid}/fd"))


@pytest.mark.usefixtures("enough_fds_for_the_test")
def test_select_closes_connections_whose_fd_would_reach_fd_setsize_and_keeps_serving() -> None:
    with dedicated_server("select_srv") as server, Clients(server) as clients:
        accepted: list[RawClient] = []
        refusals = 0
        for attempt in range(FD_SETSIZE + 100):
            raw = connect_or_none(clients, f"select-{attempt}")
            if raw is not None:
                assert refusals == 0, "a connection was accepted after the limit was reached"
                accepted.append(raw)
            else:
                refusals += 1
                if refusals == 3:
                    break
        assert refusals == 3
        # Every fd below FD_SETSIZE is in use: the server's own few plus one per accepted client.
        fds = server_fds(server)
        assert fds[-1] == FD_SETSIZE - 1 and len(fds) == FD_SETSIZE
        assert len(accepted) >= FD_SETSIZE - 10, f"the server holds {len(fds) - len(accepted)} fds itself"
        assert any("FD_SETSIZE" in line and "select()" in line for line in server.stderr().splitlines())
        assert server.process.poll() is None

        topic = unique("select-limit")
        subscriber, publisher = accepted[0], accepted[1]
        assert subscribe(subscriber, (topic, 1)) == (1,)
        publish(publisher, topic, b"still here", qos=1)
        assert next_publish(subscriber).payload == b"still here"

        # Closing a client frees an fd below the limit: the next client is served again.
        accepted[-1].close()
        wait_until(lambda: len(server_fds(server)) < FD_SETSIZE, what="the server to close the fd")
        assert connect_or_none(clients, "select-after") is not None


# -- the EMFILE guard -----------------------------------------------------------------------

FD_LIMIT = 64
FIRST_CLIENTS = 10
EXCESS_SOCKETS = 100
CPU_WINDOW = 2.0  # seconds of knocking at the limit
KNOCK_INTERVAL = 0.2  # seconds between knocks


def limit_fds() -> None:
    """In the server's child process: both limits, since servers raise soft to hard at start."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (FD_LIMIT, FD_LIMIT))


def count_closed_by_server(sockets: list[RawClient], expected: int, timeout: float) -> int:
    """How many of ``sockets`` the server closes (EOF or reset), waiting until ``expected`` did."""
    by_fd = {raw.sock.fileno(): raw for raw in sockets}
    poller = select.poll()
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = 0
    deadline = time.monotonic() + timeout
    while closed < expected and (remaining := deadline - time.monotonic()) > 0:
        for fd, _ in poller.poll(remaining * 1000):
            poller.unregister(fd)
            closed += by_fd[fd].is_closed_by_server(timeout=1.0)
    return closed


def cpu_wanted_seconds(pid: int) -> float:
    """Seconds the process's threads ran or sat runnable waiting for a CPU (``schedstat``).

    CPU time alone shrinks when other processes crowd the two cores; a busy loop wants the
    CPU the whole time whether or not it gets it, so this tells spinning from idling under load.
    """
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            running_ns, waiting_ns, _ = Path(f"/proc/{pid}/task/{tid}/schedstat").read_text().split()
            total += int(running_ns) + int(waiting_ns)
    return total / 1e9


class AtTheFdLimit:
    """A server with RLIMIT_NOFILE 64 and ten connected clients, then 100 more sockets knock."""

    def __init__(self, server: ServerProcess, clients: Clients) -> None:
        self.server = server
        self.clients = clients
        self.first = [clients.raw(f"first-{index}") for index in range(FIRST_CLIENTS)]
        free_fds = FD_LIMIT - server.open_fds()
        # The kernel completes every handshake from the backlog, whatever the server does; the
        # server accepts and keeps as many as it has fds for, and must close the rest.
        excess = [clients.socket() for _ in range(EXCESS_SOCKETS)]
        self.expected_closed = EXCESS_SOCKETS - free_fds
        self.closed = count_closed_by_server(excess, self.expected_closed, timeout=10)

    def knock(self) -> bool:
        """One more connection: True when the server closes it, as it must at the limit."""
        raw = self.clients.socket()
        closed = raw.is_closed_by_server(timeout=2.0)
        raw.close()
        return closed


@pytest.fixture
def at_the_fd_limit(request: pytest.FixtureRequest) -> Iterator[AtTheFdLimit]:
    server = ServerProcess(*request.param, preexec_fn=limit_fds)
    try:
        with Clients(server) as clients:
            yield AtTheFdLimit(server, clients)
    finally:
        assert server.stop() == 0, server.stderr()


@pytest.mark.parametrize("at_the_fd_limit", MODELS, indirect=True)
def test_connections_beyond_the_fd_limit_are_closed_with_a_ulimit_hint(at_the_fd_limit: AtTheFdLimit) -> None:
    limit = at_the_fd_limit
    assert limit.closed == limit.expected_closed
    assert "ulimit -n" in limit.server.stderr()
    assert limit.server.process.poll() is None


@pytest.mark.parametrize("at_the_fd_limit", MODELS, indirect=True)
def test_server_at_the_fd_limit_does_not_spin(at_the_fd_limit: AtTheFdLimit) -> None:
    limit = at_the_fd_limit
    cpu_before, wanted_before = limit.server.cpu_seconds(), cpu_wanted_seconds(limit.server.pid)
    deadline = time.monotonic() + CPU_WINDOW
    knocks = 0
    while time.monotonic() < deadline:
        assert limit.knock(), "a connection beyond the fd limit was kept open"
        knocks += 1
        # Paces the knocks; also a bounded check that the server does not die meanwhile.
        assert stays_false(lambda: limit.server.process.poll() is not None, KNOCK_INTERVAL)
    cpu = limit.server.cpu_seconds() - cpu_before
    wanted = cpu_wanted_seconds(limit.server.pid) - wanted_before
    assert cpu < 0.5 and wanted < 0.5, (
        f"in {CPU_WINDOW} s at the fd limit ({knocks} knocks) the server used {cpu:.2f} CPU seconds "
        f"and wanted {wanted:.2f}"
    )


@pytest.mark.parametrize("at_the_fd_limit", MODELS, indirect=True)
def test_clients_connected_before_the_fd_limit_still_publish_and_subscribe(
    at_the_fd_limit: AtTheFdLimit,
) -> None:
    subscriber, publisher = at_the_fd_limit.first[0], at_the_fd_limit.first[-1]
    topic = unique("at-the-limit")
    assert subscribe(subscriber, (topic, 1)) == (1,)
    publish(publisher, topic, b"served", qos=1)
    assert next_publish(subscriber).payload == b"served"
