"""Deterministic data for the TUI's snapshot tests: one made-up server, fed through the Model.

Everything goes in the way live data does (telemetry events and source rows in Batches), so
the snapshots exercise the same code paths as a real session, minus the clock and the kernel.
"""

from __future__ import annotations

from typing import Any

from tui.model import Batch, Model
from tui.sources.epoll_fdinfo import EpollInterest
from tui.sources.packet_capture import Segment
from tui.sources.tcp_states import TcpSocket
from tui.sources.threads import ThreadRow, ThreadSample

PORT = 1883
PID = 4242
LOOPBACK = "127.0.0.1"
EPOLLIN, EPOLLOUT, EPOLLERR, EPOLLHUP, EPOLLET = 0x1, 0x4, 0x8, 0x10, 1 << 31
START = 1000.0  # monotonic seconds of the first event
CLIENTS = {7: ("sub-alice", 50001), 8: ("pub-bob", 50002), 9: ("sensor-17", 50003)}


def event(kind: str, t: float, **fields: Any) -> dict[str, Any]:
    return {"v": 1, "t": t, "k": kind, **fields}


def connection_events() -> list[dict[str, Any]]:
    events = []
    for fd, (client_id, port) in CLIENTS.items():
        peer = f"{LOOPBACK}:{port}"
        events.append(event("accept", START, fd=fd, peer=peer))
        events.append(event("conn", START, fd=fd, peer=peer, client_id=client_id))
    # A client whose keepalive expired: its socket lingers in FIN_WAIT_2 / CLOSE_WAIT.
    events.append(event("conn", START, fd=10, peer=f"{LOOPBACK}:50004", client_id="silent-dave"))
    events.append(
        event("close", START + 1.5, fd=10, peer=f"{LOOPBACK}:50004", client_id="silent-dave",
              reason="keepalive timeout (1.5 s without a packet)")
    )  # fmt: skip
    return events


def wait_events(mode: str) -> list[dict[str, Any]]:
    """A 1 KB PUBLISH read 64 bytes per readiness: LT reports fd 8 sixteen times, ET once."""
    events = []
    t = START + 2.0
    call = 0

    def wait(blocked: float, ready: list[list[int]]) -> None:
        nonlocal t, call
        call += 1
        t += blocked + 0.0001
        events.append(event("wait", t, variant=f"epoll_{mode.lower()}", mode=mode, call=call,
                            blocked_s=blocked, ready=ready, watched=4, part=0, parts=1))  # fmt: skip

    for second in range(6):
        wait(0.5 + second * 0.05, [])
    wait(0.2, [[7, EPOLLIN]])
    wait(0.01, [[9, EPOLLIN]])
    if mode == "LT":
        for _ in range(16):
            wait(0.000004, [[8, EPOLLIN]])
    else:
        wait(0.3, [[8, EPOLLIN | EPOLLOUT]])
    wait(0.000004, [[7, EPOLLOUT]])
    return events


def tcp_rows() -> list[TcpSocket]:
    server = (LOOPBACK, PORT)

    def pair(port: int, state: str, peer_state: str, **queues: int) -> list[TcpSocket]:
        client = (LOOPBACK, port)
        timer, left = queues.get("timer", "off"), queues.get("left", 0)
        client_recv_q = queues.get("client_recv_q", 0)
        return [
            TcpSocket(state, server, client, 0, 0, timer, left, 60000 + port, 0),
            TcpSocket(peer_state, client, server, 0, client_recv_q, "off", 0, 70000 + port, 0),
        ]

    rows = [TcpSocket("LISTEN", server, ("0.0.0.0", 0), 4096, 0, "off", 0, 55555, 0)]
    rows += pair(50001, "ESTABLISHED", "ESTABLISHED")
    rows += pair(50002, "ESTABLISHED", "ESTABLISHED")
    rows += pair(50003, "ESTABLISHED", "ESTABLISHED")
    rows += pair(50004, "FIN_WAIT_2", "CLOSE_WAIT", timer="timewait", left=58200, client_recv_q=1)
    rows.append(TcpSocket("TIME_WAIT", server, (LOOPBACK, 50005), 0, 0, "timewait", 41000, 0, 0))
    rows.append(TcpSocket("FIN_WAIT_1", server, ("10.0.0.9", 40000), 21480, 0, "persist", 3200, 0, 0))
    rows.append(TcpSocket("LAST_ACK", server, (LOOPBACK, 50006), 1, 0, "on", 200, 0, 0))
    return rows


def interest(mode: str = "LT") -> tuple[dict[int, list[EpollInterest]], dict[int, int]]:
    flags = EPOLLIN | EPOLLERR | EPOLLHUP | (EPOLLET if mode == "ET" else 0)
    interests = [EpollInterest(3, flags, 3, 55555)]
    interests += [EpollInterest(fd, flags, fd, 60000 + port) for fd, (_, port) in CLIENTS.items()]
    inodes = {3: 55555, **{fd: 60000 + port for fd, (_, port) in CLIENTS.items()}}
    return {5: interests}, inodes


def thread_samples(tick: int) -> list[ThreadRow]:
    """The naive boss/worker server under load: workers take turns, so each gets about half a core."""
    busy = (tick % 2) * 40.0
    names = [(4242, "boss", 2.0), (4243, "worker-1", 50.0 + busy), (4244, "worker-2", 90.0 - busy)]
    return [
        ThreadRow(ThreadSample(tid, name, "R" if cpu > 60 else "S", tick, tick, tick * 300, tick * 40), cpu)
        for tid, name, cpu in names
    ]


def lock_events(now: float) -> list[dict[str, Any]]:
    events = []
    holders = (  # tid, name, wait, hold: the workers hold the lock across recv and wait for each other
        (4243, "worker-1", 0.004, 0.011),
        (4244, "worker-2", 0.012, 0.009),
        (4242, "boss", 0.02, 0.0002),
    )
    for index in range(40):
        t = now - 1.9 + index * 0.045
        for tid, thread, wait_s, hold_s in holders:
            lock = {"thread": thread, "tid": tid, "wait_s": wait_s, "hold_s": hold_s, "across_recv": True}
            events.append(event("lock", t, **lock))
    events.append(event("queue", now, depth=3))
    return events


def segments() -> list[Segment]:
    client, server = (LOOPBACK, 50004), (LOOPBACK, PORT)

    def segment(t: float, source: tuple[str, int], flags: str) -> Segment:
        destination = server if source == client else client
        return Segment(START + t, source[0], source[1], destination[0], destination[1], flags, 0, 0)

    rows = [
        segment(0.0, client, "S"),
        segment(0.0001, server, "SA"),
        segment(1.5, server, "FA"),  # keepalive expired: the server closes first
        segment(9.0, client, "FA"),  # the client finally closes: server TIME_WAIT
    ]
    other = (LOOPBACK, 50007)
    rows.append(Segment(START + 9.5, other[0], other[1], LOOPBACK, PORT, "S", 0, 0))
    rows.append(Segment(START + 9.5001, LOOPBACK, PORT, other[0], other[1], "RA", 0, 0))
    return rows


def sample_model(mode: str = "LT") -> Model:
    """A server with three clients, one lingering close, LT (or ET) waits, naive-style threads."""
    model = Model(PORT, PID, variant=f"epoll_{mode.lower()}")
    now = START + 12.0
    inodes_by_fd = interest(mode)
    model.apply(Batch(now=now - 1, events=connection_events(), threads=thread_samples(0)))
    for tick in range(1, 30):
        model.apply(Batch(now=now - 1 + tick / 30, threads=thread_samples(tick)))
    model.apply(
        Batch(
            now=now,
            events=wait_events(mode) + lock_events(now),
            tcp=tcp_rows(),
            interest=inodes_by_fd[0],
            inodes=inodes_by_fd[1],
            segments=segments(),
        )
    )
    return model
