"""Lab 02's grader: black-box stages for a learner's server run at ``ulimit -n 32`` (exercise/my_server.py).

The stages fill the server's fd table with real clients (counted in /proc/PID/fd), then knock
with more. What they judge is what the kernel shows: whether the extra connection is closed or
left in the listen queue (the LISTEN row's Recv-Q), the server's CPU ticks in /proc/PID/stat,
and its accept/epoll_wait calls counted by ``strace -c``. None looks inside the learner's code.
"""

from __future__ import annotations

import os
import shutil
import socket
import time
from pathlib import Path

from watch import CLOCK_TICKS, usage_of  # beside this file

from labs.exercise import (
    RawClient,
    Stage,
    StageFailed,
    StudentServer,
    connack_stage,
    connect_gets_connack,
    grade,
    shown,
)
from labs.tracing import AttachFailed, strace_lines, summary_rows
from mqtt.codec import encode
from mqtt.packets import Connect, Publish
from tui.sources.tcp_states import tcp_sockets

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
NOFILE = 32  # the learner's server runs with RLIMIT_NOFILE 32, soft and hard
REFUSAL_DEADLINE = 2.0  # seconds for the server to close an extra client; on loopback it takes < 1 ms
KNOCKS = 3  # extra clients per stage
WINDOW = 1.5  # seconds of strace counting at the limit
TRACED = ("accept", "accept4", "epoll_wait", "epoll_pwait")


def fds_open(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def listen_queue(port: int) -> int:
    """Connections waiting to be accepted: the LISTEN socket's Recv-Q (as ``ss -ltn`` shows it)."""
    return sum(row.recv_q for row in tcp_sockets(port) if row.state == "LISTEN")


def knock(port: int, wait: float) -> str:
    """One more client sends CONNECT; '' if nothing at all happened within ``wait`` seconds."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(encode(Connect(client_id="grader-extra", keepalive=0)))
        sock.settimeout(wait)
        try:
            data = sock.recv(64)
        except ConnectionResetError:
            return "reset (RST)"
        except TimeoutError:
            return ""
        return "closed (EOF)" if not data else f"bytes {shown(data)}"


class AtTheLimit:
    """The stages, sharing the clients that fill the server's fd table."""

    def __init__(self) -> None:
        self.clients: list[RawClient] = []

    def stages(self) -> list[Stage]:
        return [
            connack_stage(self.connack_then_let_go),
            Stage(f"with all {NOFILE} fds in use, extra clients are refused at once", self.extras_refused),
            Stage("at the limit the loop sleeps: about one accept per refused client", self.loop_sleeps),
            Stage("clients connected before the limit still get their messages", self.still_served),
        ]

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def connack_then_let_go(self, server: StudentServer) -> str:
        before = fds_open(server.pid)
        seen = connect_gets_connack(server)
        # The next stage counts fds: wait (2 s at most) until the server has let this one go.
        deadline = time.monotonic() + 2.0
        while fds_open(server.pid) > before and time.monotonic() < deadline:
            time.sleep(0.02)
        return seen

    def fill(self, server: StudentServer) -> int:
        """Connect clients (each waits for its CONNACK) until the server holds NOFILE fds."""
        while fds_open(server.pid) < NOFILE and len(self.clients) < NOFILE:
            client = RawClient(server.port, f"grader-{len(self.clients)}", keepalive=0)
            self.clients.append(client)
            client.connect()
        held = fds_open(server.pid)
        if held < NOFILE:
            raise StageFailed(f"{NOFILE} fds in use after at most {NOFILE} clients", f"{held} fds")
        return len(self.clients)

    def extras_refused(self, server: StudentServer) -> str:
        filled = self.fill(server)
        seen = []
        for number in range(1, KNOCKS + 1):
            before = usage_of(server.pid)
            outcome = knock(server.port, REFUSAL_DEADLINE)
            if not outcome:
                used = usage_of(server.pid).since(before)
                ticks = used.user_ticks + used.system_ticks
                raise StageFailed(
                    f"extra client {number} to be closed by the server within {REFUSAL_DEADLINE:g} s "
                    "(EOF or reset): with no fd left, refusing it is all the server can do",
                    f"nothing for {REFUSAL_DEADLINE:g} s; the connection still waits in the listen queue "
                    f"(LISTEN Recv-Q {listen_queue(server.port)}), and meanwhile your server used {ticks} of "
                    f"{int(REFUSAL_DEADLINE * CLOCK_TICKS)} possible CPU ticks: epoll_wait keeps reporting "
                    "the readable listener and accept() keeps failing with EMFILE",
                    todo="TODO(spare-fd)",
                )
            if outcome.startswith("bytes"):
                raise StageFailed(f"extra client {number} to be refused at the fd limit", f"{outcome}")
            seen.append(outcome)
        return f"{filled} clients filled {NOFILE} fds; {KNOCKS} extra clients: {', '.join(seen)}"

    def loop_sleeps(self, server: StudentServer) -> str:
        if shutil.which("strace") is None:
            return self.ticks_only(server)
        started = time.monotonic()
        try:
            with strace_lines(server.pid, "-f", "-c", "-e", "trace=" + ",".join(TRACED)) as summary:
                outcomes = [knock(server.port, REFUSAL_DEADLINE) for _ in range(KNOCKS)]
                time.sleep(max(0.0, WINDOW - (time.monotonic() - started)))  # a fixed counting window
        except AttachFailed:  # e.g. ptrace not permitted here: the CPU ticks tell the same story
            return self.ticks_only(server)
        counts = summary_rows(summary)
        waits = sum(counts.get(name, (0, 0))[0] for name in ("epoll_wait", "epoll_pwait"))
        accepts = sum(counts.get(name, (0, 0))[0] for name in ("accept", "accept4"))
        failed = sum(counts.get(name, (0, 0))[1] for name in ("accept", "accept4"))
        seen = f"{waits:,} epoll_wait and {accepts:,} accept calls ({failed:,} failed) for {KNOCKS} knocks"
        most = 10 + 4 * KNOCKS  # each refusal: one wake, a failed accept and the spare's accept
        if waits > most or accepts > most or not all(outcomes):
            raise StageFailed(
                f"at most {most} of each over {WINDOW:g} s while {KNOCKS} clients knock, each refused",
                f"{seen}; refusals seen: {[outcome or 'none' for outcome in outcomes]}",
                todo="TODO(spare-fd)",
            )
        return f"strace -c over {WINDOW:g} s: {seen}"

    def ticks_only(self, server: StudentServer) -> str:
        """Without strace: the server's CPU ticks while it sits at the limit, from /proc/PID/stat."""
        before = usage_of(server.pid)
        outcomes = [knock(server.port, REFUSAL_DEADLINE) for _ in range(KNOCKS)]
        time.sleep(WINDOW)
        used = usage_of(server.pid).since(before)
        ticks = used.user_ticks + used.system_ticks
        if ticks > 0.3 * WINDOW * CLOCK_TICKS or not all(outcomes):
            raise StageFailed("under 30% of a core at the limit", f"{ticks} CPU ticks", todo="TODO(spare-fd)")
        return f"strace not installed; {ticks} CPU ticks in {WINDOW:g} s at the limit"

    def still_served(self, server: StudentServer) -> str:
        subscriber, publisher = self.clients[0], self.clients[-1]
        subscriber.subscribe("lab02/still-here")
        publisher.send(encode(Publish("lab02/still-here", b"served at the limit")))
        message = subscriber.expect(Publish, 2.0, what="the message published by another held client")
        assert isinstance(message, Publish)
        return f"{subscriber.client_id} received {bytes(message.payload)!r} from {publisher.client_id}"


def grade_student(path: Path) -> int:
    stages = AtTheLimit()
    try:
        return grade("Lab 02 exercise: the spare-fd EMFILE guard", path, stages.stages(), nofile=NOFILE)
    finally:
        stages.close()
