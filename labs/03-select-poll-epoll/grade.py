"""Lab 03's grader: black-box stages for a learner's server that swaps poll() for epoll.

The stages talk MQTT over real sockets, read the server's epoll interest set from the kernel
(/proc/PID/fdinfo) and trace its wait calls with strace; none looks inside the learner's code.
The untouched skeleton waits with poll(), so it holds no epoll instance and fails at stage 3.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from labs.exercise import (
    RawClient,
    Stage,
    StageFailed,
    StudentServer,
    grade,
    listening_inodes,
    subscriber_and_publisher,
)
from labs.tracing import AttachFailed, calls_in, strace_lines
from mqtt.codec import encode
from mqtt.packets import Pingreq, Pingresp, Publish
from tui.sources.epoll_fdinfo import epoll_interest, socket_inodes

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
DELIVERY_WINDOW = 2.0  # seconds for a packet to arrive; on loopback it takes well under 1 ms
IDLE_CLIENTS = 200  # connected at once: 200 sockets here and 200 in the server, far below any limit
PING_CLIENTS = 20
PING_ROUNDS = 5  # PINGREQ/PINGRESP exchanges per client while strace watches
CTL_ALLOWED = 2  # epoll_ctl calls tolerated during that traffic (a write-interest change or two)
SETTLE_TIMEOUT = 10.0  # seconds for the server to close the sockets of clients the grader closed
LIVE_TIMEOUT = 3.0  # seconds for strace's first line: the wait call the server sat in when attached
POLL_CALLS = ("poll", "ppoll", "select", "pselect6")
EPOLL_WAITS = ("epoll_wait", "epoll_pwait")
TRACED = ",".join(("epoll_ctl", *EPOLL_WAITS, *POLL_CALLS))


def connect_and_deliver(server: StudentServer) -> str:
    with subscriber_and_publisher(server.port, "lab03/hello") as (subscriber, publisher):
        publisher.send(encode(Publish("lab03/hello", b"123456", qos=0)))
        message = subscriber.expect(Publish, DELIVERY_WINDOW, what="the PUBLISH of '123456' on lab03/hello")
        assert isinstance(message, Publish)
        if bytes(message.payload) != b"123456":
            raise StageFailed("the payload 123456", repr(bytes(message.payload)))
        return "CONNECT → CONNACK twice, SUBSCRIBE → SUBACK, PUBLISH '123456' reached the subscriber"


def connected_clients(server: StudentServer, count: int, prefix: str) -> list[RawClient]:
    """``count`` clients, each past its CONNACK: the server has accepted and watched every one."""
    clients: list[RawClient] = []
    try:
        for number in range(count):
            clients.append(RawClient(server.port, f"{prefix}-{number}", keepalive=0))
            clients[-1].connect()
    except BaseException:
        close_all(clients)
        raise
    return clients


def close_all(clients: list[RawClient]) -> None:
    for client in clients:
        client.close()


def epoll_watches_every_socket(server: StudentServer) -> str:
    clients = connected_clients(server, IDLE_CLIENTS, "grader-idle")
    try:
        held = set(socket_inodes(server.pid).values())  # the listener and every accepted client
        instances = epoll_interest(server.pid)  # epoll fd -> the tfd lines of its fdinfo
    finally:
        close_all(clients)
    expected = f"an epoll fd watching {1 + IDLE_CLIENTS} fds (the listener and {IDLE_CLIENTS} idle clients)"
    if not instances:
        arrived = f"found none (0 epoll instances) in /proc/{server.pid}/fd, beside its {len(held)} sockets"
        raise StageFailed(expected, arrived, todo="TODO(epoll)")
    unwatched = {fd: held - {entry.inode for entry in entries} for fd, entries in instances.items()}
    fullest = min(unwatched, key=lambda fd: len(unwatched[fd]))
    if unwatched[fullest]:
        missing = unwatched[fullest]
        listener = " (the listener among them)" if missing & listening_inodes(server.port) else ""
        arrived = (
            f"{len(instances)} epoll instance(s); the fullest, fd {fullest}, watches {len(held - missing)} "
            f"of the server's {len(held)} sockets: {len(missing)} not registered{listener}"
        )
        raise StageFailed(expected, arrived, todo="TODO(epoll)")
    return f"/proc/{server.pid}/fdinfo/{fullest}: an epoll instance, all {len(held)} sockets in its tfd lines"


def socket_count_reaches(server: StudentServer, wanted: int) -> int:
    """Wait until the server holds ``wanted`` sockets (it closes those the grader closed)."""
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while (held := len(socket_inodes(server.pid))) != wanted and time.monotonic() < deadline:
        time.sleep(0.05)
    return held


def exchange_pings(clients: list[RawClient]) -> None:
    for _ in range(PING_ROUNDS):
        for client in clients:
            client.send(encode(Pingreq()))
        for client in clients:
            client.expect(Pingresp, DELIVERY_WINDOW, what=f"PINGRESP for {client.client_id}'s PINGREQ")


def registered_once(server: StudentServer) -> str:
    if shutil.which("strace") is None:  # without it this stage cannot see the loop's syscalls
        raise StageFailed("strace, to count the loop's syscalls", "no strace (make test installs it)")
    clients = connected_clients(server, PING_CLIENTS, "grader-ping")
    try:
        held = socket_count_reaches(server, 1 + PING_CLIENTS)
        if held != 1 + PING_CLIENTS:
            raise StageFailed(
                f"the server to close the sockets of clients that left, holding {1 + PING_CLIENTS}",
                f"it still holds {held} sockets {SETTLE_TIMEOUT:g} s after the grader closed its clients",
            )
        options = ("-f", "-qq", "-e", f"trace={TRACED}")
        try:
            # Live once strace printed the wait the server sat in: it resumes it at once.
            with strace_lines(server.pid, *options, first_line_timeout=LIVE_TIMEOUT) as trace:
                exchange_pings(clients)
        except AttachFailed as problem:
            raise StageFailed("strace attached to your server, to count its syscalls", str(problem)) from None
        calls = calls_in(trace)
    finally:
        close_all(clients)
    exchanges = PING_CLIENTS * PING_ROUNDS
    counts = ", ".join(f"{name} {calls[name]}" for name in ("epoll_ctl", *EPOLL_WAITS, *POLL_CALLS))
    polls, waits = sum(calls[name] for name in POLL_CALLS), sum(calls[name] for name in EPOLL_WAITS)
    controls = calls["epoll_ctl"]
    if polls or controls > CTL_ALLOWED or not waits:
        raise StageFailed(
            f"epoll waits only, no poll/select, and at most {CTL_ALLOWED} epoll_ctl calls while "
            f"{PING_CLIENTS} registered clients made {exchanges} PINGREQ/PINGRESP exchanges",
            f"strace counted {counts}",
            todo="TODO(epoll)",
        )
    return f"strace -f -p {server.pid} over {exchanges} PINGREQ/PINGRESP exchanges: {counts}"


STAGES = [
    Stage("CONNECT gets a CONNACK, and a PUBLISH reaches a subscriber", connect_and_deliver),
    Stage(
        f"with {IDLE_CLIENTS} idle clients, one epoll instance watches every socket",
        epoll_watches_every_socket,
    ),
    Stage("traffic needs no epoll_ctl and no poll(): registered once, waits on epoll", registered_once),
]


def grade_student(path: Path) -> int:
    return grade("Lab 03 exercise: the poll → epoll swap", path, STAGES)
