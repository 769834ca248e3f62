"""Lab 03's grader: black-box stages for a learner's server that swaps poll() for epoll.

The stages talk MQTT over real sockets, read the server's epoll interest set from the kernel
(/proc/PID/fdinfo) and trace its wait calls with strace; none looks inside the learner's code.
The untouched skeleton waits with poll(), so it holds no epoll instance and fails at stage 3.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from labs.exercise import RawClient, Stage, StageFailed, StudentServer, grade, listening_inodes
from mqtt.codec import encode
from mqtt.packets import Pingreq, Pingresp, Publish
from servers.process import stop_process
from tui.sources.epoll_fdinfo import epoll_interest, socket_inodes

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
DELIVERY_WINDOW = 2.0  # seconds for a packet to arrive; on loopback it takes well under 1 ms
IDLE_CLIENTS = 200  # connected at once: 200 sockets here and 200 in the server, far below any limit
PING_CLIENTS = 20
PING_ROUNDS = 5  # PINGREQ/PINGRESP exchanges per client while strace watches
CTL_ALLOWED = 2  # epoll_ctl calls tolerated during that traffic (a write-interest change or two)
SETTLE_TIMEOUT = 10.0  # seconds for the server to close sockets the grader closed, or strace to attach
LIVE_TIMEOUT = 3.0  # seconds for strace's first line: the wait call the server sat in when attached
POLL_CALLS = ("poll", "ppoll", "select", "pselect6")
EPOLL_WAITS = ("epoll_wait", "epoll_pwait")
TRACED = ",".join(("epoll_ctl", *EPOLL_WAITS, *POLL_CALLS))
CALL = re.compile(r"^\d+\s+(\w+)\(")  # strace -f -o: "PID name(args...", one line per call started


def connect_and_deliver(server: StudentServer) -> str:
    subscriber = RawClient(server.port, "grader-sub", keepalive=0)
    publisher = RawClient(server.port, "grader-pub", keepalive=0)
    try:
        subscriber.connect()
        subscriber.subscribe("lab03/hello", qos=0)
        publisher.connect()
        publisher.send(encode(Publish("lab03/hello", b"123456", qos=0)))
        message = subscriber.expect(Publish, DELIVERY_WINDOW, what="the PUBLISH of '123456' on lab03/hello")
        assert isinstance(message, Publish)
        if bytes(message.payload) != b"123456":
            raise StageFailed("the payload 123456", repr(bytes(message.payload)))
        return "CONNECT → CONNACK twice, SUBSCRIBE → SUBACK, PUBLISH '123456' reached the subscriber"
    finally:
        subscriber.close()
        publisher.close()


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


def traced_by(pid: int, tracer: int) -> bool:
    """True once ``tracer`` is attached to every thread of ``pid``: their status says TracerPid."""
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/status") as status:
                line = next(line for line in status if line.startswith("TracerPid:"))
            if int(line.split()[1]) != tracer:
                return False
        return True
    return False


@contextlib.contextmanager
def strace_attached(pid: int, output: Path) -> Iterator[str]:
    """``strace -f -p PID -e trace=... -o OUTPUT`` for a ``with`` block, attached before it starts.

    Yields '' once strace traces the server, or why it could not. Leaving the block detaches
    strace (SIGTERM) and waits for it, so the trace file is whole when it is read.
    """
    command = ["strace", "-f", "-qq", "-p", str(pid), "-e", f"trace={TRACED}", "-o", str(output)]
    tracer = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + SETTLE_TIMEOUT
        while not traced_by(pid, tracer.pid) and tracer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        if not traced_by(pid, tracer.pid):
            stop_process(tracer, grace=1.0)
            said = tracer.stderr.read().strip().splitlines() if tracer.stderr else []
            yield "strace could not attach" + (f": {said[-1]}" if said else "")
            return
        # strace prints the wait the server sits in as soon as it resumes it: then it is live.
        deadline = time.monotonic() + LIVE_TIMEOUT
        while not (output.exists() and output.stat().st_size) and time.monotonic() < deadline:
            time.sleep(0.01)
        yield ""
    finally:
        stop_process(tracer, grace=5.0)


def exchange_pings(clients: list[RawClient]) -> None:
    for _ in range(PING_ROUNDS):
        for client in clients:
            client.send(encode(Pingreq()))
        for client in clients:
            client.expect(Pingresp, DELIVERY_WINDOW, what=f"PINGRESP for {client.client_id}'s PINGREQ")


def calls_in(trace: Path) -> Counter[str]:
    """How many times each traced syscall was started, from strace's output file."""
    return Counter(match[1] for line in trace.read_text().splitlines() if (match := CALL.match(line)))


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
        with tempfile.TemporaryDirectory() as scratch:
            trace = Path(scratch) / "strace.out"
            with strace_attached(server.pid, trace) as problem:
                if problem:
                    raise StageFailed("strace attached to your server, to count its syscalls", problem)
                exchange_pings(clients)
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
