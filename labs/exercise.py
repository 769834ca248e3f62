"""Grading a learner's own server: start it sandboxed, run black-box stages, report like a tester.

A lab's ``run.py --student [PATH]`` starts the learner's file through ``exercise_sandbox.py``
(so it cannot borrow the kit's servers), checks that the listening socket really belongs to
that process, then runs the lab's stages in order. The first stage that fails stops the run and
says what was expected, what arrived (the exact bytes or kernel state seen) and which TODO in the
file to look at, one stage at a time, as CodeCrafters' stage testers do.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import re
import resource
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from rich.console import Console

from mqtt.codec import Decoder, encode
from mqtt.packets import Connack, Connect, Packet, Suback, Subscribe
from servers.process import parse_listening, stop_process

REPO_ROOT = Path(__file__).resolve().parents[1]
SANDBOX = REPO_ROOT / "labs" / "exercise_sandbox.py"
START_TIMEOUT = 10.0  # seconds for the learner's server to print its listening line
LOG_LINES = 1000  # the server's last output lines kept for a failure report
EXCEPTION_LINE = re.compile(r"^[A-Za-z_.]*(Error|Exception|Exit)\b.*")  # a traceback's last line

console = Console(highlight=False)


class StageFailed(Exception):
    """A stage saw something other than what the lesson requires."""

    def __init__(self, expected: str, arrived: str, todo: str = "") -> None:
        super().__init__(f"expected {expected}; arrived {arrived}")
        self.expected = expected
        self.arrived = arrived
        self.todo = todo  # which TODO (its tag, e.g. "TODO(drain)") the failure points at


@dataclass
class Stage:
    """One black-box check of the running server: ``run(server)`` returns what it saw (printed
    under the pass line) or raises StageFailed."""

    title: str
    run: Callable[[StudentServer], str]


def student_arguments(parser: argparse.ArgumentParser, skeleton: Path) -> None:
    """``--student [PATH]``: grade the learner's file (by default, the lab's exercise skeleton)."""
    parser.add_argument(
        "--student",
        nargs="?",
        const=str(skeleton.relative_to(REPO_ROOT)),
        metavar="PATH",
        help=f"grade your server instead of running the lab (default {skeleton.relative_to(REPO_ROOT)})",
    )


def todo_lines(path: Path, tag: str = "TODO") -> list[tuple[int, str]]:
    """(line number, text) of each line of ``path`` containing ``tag``."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    return [(number, line.strip()) for number, line in enumerate(lines, 1) if tag in line]


def grade(
    title: str,
    path: Path,
    stages: Sequence[Stage],
    server_args: Sequence[str] = (),
    nofile: int | None = None,
) -> int:
    """Start the learner's file, then run ``stages`` against it in order.

    Returns 0 if every stage passed, 1 at the first failure (starting counts as stage 1).
    ``server_args`` and ``nofile`` are passed to :func:`student_server`.
    """
    console.rule(f"[bold]{title}: grading {display_path(path)}")
    total = len(stages) + 1
    with contextlib.ExitStack() as cleanup:
        try:
            server = cleanup.enter_context(student_server(path, *server_args, nofile=nofile))
        except StageFailed as failure:
            return report(path, failure, 1, total, "your file starts in the sandbox and listens")
        console.print(f"[green]passed[/] stage 1/{total}  your file starts in the sandbox and listens")
        console.print(f"         pid {server.pid} listens on 127.0.0.1:{server.port}", markup=False)
        for number, stage in enumerate(stages, 2):
            try:
                seen = stage.run(server)
            except StageFailed as failure:
                return report(path, failure, number, total, stage.title)
            console.print(f"[green]passed[/] stage {number}/{total}  {stage.title}")
            if seen:
                console.print(f"         {seen}", markup=False)
    passed = f"all {total} stages passed"
    console.print(f"\n[green]{passed}[/]: {display_path(path)} does what the lab teaches")
    return 0


def report(path: Path, failure: StageFailed, number: int, total: int, title: str) -> int:
    console.print(f"[red]FAILED[/] stage {number}/{total}  {title}")
    report_failure(path, failure)
    console.print(f"\n[red]FAILED at stage {number}/{total}[/]: fix it and run again")
    return 1


def report_failure(path: Path, failure: StageFailed) -> None:
    console.print(f"  expected: {failure.expected}", markup=False)
    console.print(f"  arrived:  {failure.arrived}", markup=False)
    pointers = todo_lines(path, failure.todo) if failure.todo else []
    for number, text in pointers:
        console.print(f"  look at:  {display_path(path)}:{number}  {text}", markup=False)
    if failure.todo and not pointers:
        console.print(f"  look at:  the code the skeleton marked {failure.todo}", markup=False)


def display_path(path: Path) -> str:
    resolved = path.resolve()
    return str(resolved.relative_to(REPO_ROOT)) if REPO_ROOT in resolved.parents else str(path)


# -- the learner's server as a process --------------------------------------------------------


@dataclass
class StudentServer:
    """The learner's server, running in the sandbox; ``log`` collects what it printed."""

    path: Path
    process: subprocess.Popen[str]
    port: int
    log: deque[str] = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    reader: threading.Thread | None = None

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        stop_process(self.process, grace=3.0)


@contextlib.contextmanager
def student_server(path: Path, *server_args: str, nofile: int | None = None) -> Iterator[StudentServer]:
    """``python labs/exercise_sandbox.py PATH --port 0 ARGS`` for a ``with`` block.

    ``nofile`` lowers the server's RLIMIT_NOFILE (soft and hard) before it starts. Fails the
    stage, not the grader, when the file does not start or someone else owns the listener.
    """
    if not path.is_file():
        raise StageFailed(f"a server file at {path}", "no such file")
    preexec = None if nofile is None else functools.partial(limit_open_files, nofile)

    environment = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(SANDBOX), str(path), "--port", "0", *server_args],
        cwd=REPO_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=preexec,
        start_new_session=True,  # a Ctrl-C on the grader reaches the grader only
    )
    server = StudentServer(path, process, port=0)
    try:
        server.port = wait_for_listening_line(server)
        owner_problem = listener_owner_problem(server.pid, server.port)
        if owner_problem:
            expected = "the listening socket to belong to the process running your file"
            raise StageFailed(expected, owner_problem)
        yield server
    finally:
        server.stop()
        drain_output(server)


def limit_open_files(count: int) -> None:
    """preexec_fn: the server may hold at most ``count`` fds, as ``ulimit -n COUNT`` would set."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (count, count))


def wait_for_listening_line(server: StudentServer) -> int:
    """The port from the server's ``listening on HOST:PORT`` line; StageFailed if it never comes.

    A thread reads the server's output for as long as it runs: a server that logs a line per
    event must never block on a full pipe while it is graded, and a line printed just before
    the listening line must not hide it in a read buffer.
    """
    listening = threading.Event()
    server.reader = threading.Thread(target=collect_output, args=(server, listening), daemon=True)
    server.reader.start()
    listening.wait(START_TIMEOUT)
    if server.port:
        return server.port
    status = server.process.poll()
    state = f"exit status {status}" if status is not None else "no listening line"
    lines = list(server.log)
    errors = [line for line in lines if EXCEPTION_LINE.match(line)]
    said = errors[-1] if errors else "its last lines: " + (" | ".join(lines[-6:]) or "(no output)")
    raise StageFailed(
        f"your server to print 'listening on 127.0.0.1:PORT' within {START_TIMEOUT:g} s", f"{state}; {said}"
    )


def collect_output(server: StudentServer, listening: threading.Event) -> None:
    """Every line the server prints, into ``server.log``; ``listening`` is set at its port or at EOF."""
    assert server.process.stdout is not None
    for raw in server.process.stdout:
        line = raw.rstrip("\n")
        server.log.append(line)
        address = parse_listening(line.strip())
        if address and not server.port:
            server.port = address[1]
            listening.set()
    listening.set()  # end of output: the process is gone


def drain_output(server: StudentServer) -> None:
    """Let the reader take whatever the server printed before it ended, for a failure report."""
    if server.reader is not None:
        server.reader.join(timeout=5.0)


def listener_owner_problem(pid: int, port: int) -> str:
    """'' when ``pid`` holds the socket listening on ``port``; otherwise what was found instead."""
    inodes = listening_inodes(port)
    if not inodes:
        return f"nothing listens on port {port}"
    held = socket_inodes_of(pid)
    if inodes & held:
        return ""
    return f"port {port} is listened on by socket inode(s) {sorted(inodes)}, none of them held by pid {pid}"


def listening_inodes(port: int) -> set[int]:
    """Inodes of TCP sockets in LISTEN (state 0A) on ``port``, from /proc/net/tcp and tcp6."""
    inodes: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError), open(table) as rows:
            next(rows)  # the header line
            for row in rows:
                fields = row.split()
                if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    inodes.add(int(fields[9]))
    return inodes


def socket_inodes_of(pid: int) -> set[int]:
    inodes: set[int] = set()
    fd_folder = Path(f"/proc/{pid}/fd")
    for entry in fd_folder.iterdir() if fd_folder.exists() else ():
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


# -- a raw MQTT client, so a stage can say exactly which bytes arrived --------------------------


class RawClient:
    """A blocking TCP socket speaking MQTT through the kit's codec, with deadlines on every read."""

    def __init__(self, port: int, client_id: str, keepalive: int = 60, host: str = "127.0.0.1") -> None:
        self.socket = socket.create_connection((host, port), timeout=5.0)
        self.client_id = client_id
        self.keepalive = keepalive
        self.decoder = Decoder()
        self.received = bytearray()  # every byte that arrived, for reports
        self.packets: list[Packet] = []

    def connect(self, timeout: float = 3.0) -> Connack:
        self.send(encode(Connect(client_id=self.client_id, keepalive=self.keepalive)))
        packet = self.expect(Connack, timeout, what=f"CONNACK for CONNECT from {self.client_id!r}")
        assert isinstance(packet, Connack)
        return packet

    def subscribe(self, topic: str, qos: int = 0, packet_id: int = 1, timeout: float = 3.0) -> None:
        self.send(encode(Subscribe(packet_id=packet_id, subscriptions=((topic, qos),))))
        self.expect(Suback, timeout, what=f"SUBACK for SUBSCRIBE {topic!r}")

    def send(self, data: bytes) -> None:
        self.socket.sendall(data)

    def read_some(self, timeout: float) -> bool:
        """Read what arrives within ``timeout``; False on EOF or reset (the server closed)."""
        self.socket.settimeout(timeout)
        try:
            data = self.socket.recv(65536)
        except TimeoutError:
            return True
        except ConnectionResetError:
            return False
        if not data:
            return False
        self.received += data
        self.packets.extend(self.decoder.feed(data))
        return True

    def expect(self, kind: type, timeout: float, what: str) -> Packet:
        """The first packet of type ``kind`` within ``timeout`` seconds, or StageFailed."""
        deadline = time.monotonic() + timeout
        while True:
            for index, packet in enumerate(self.packets):
                if isinstance(packet, kind):
                    return self.packets.pop(index)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            if not self.read_some(min(left, 0.2)):
                closed = f"the server closed the connection; bytes seen: {shown(self.received)}"
                raise StageFailed(what, closed)
        raise StageFailed(f"{what} within {timeout:g} s", f"nothing more; bytes seen: {shown(self.received)}")

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.socket.close()


def shown(data: bytes | bytearray, most: int = 24) -> str:
    """Bytes as hex, the way a stage reports what arrived: '20 02 00 00' or '(none)'."""
    if not data:
        return "(none)"
    text = data[:most].hex(" ")
    return text + (f" ... ({len(data):,} bytes)" if len(data) > most else "")


@contextlib.contextmanager
def subscriber_and_publisher(
    port: int, topic: str, name: str = "grader"
) -> Iterator[tuple[RawClient, RawClient]]:
    """A subscriber (QoS 0 on ``topic``) and a publisher, both past CONNACK, closed afterwards.

    Each socket is opened only when it is about to send its CONNECT: one opened early would be
    a silent client meanwhile, which a stage (lab 08's) may count on not being there.
    """
    with contextlib.ExitStack() as opened:
        subscriber = RawClient(port, f"{name}-sub", keepalive=0)
        opened.callback(subscriber.close)
        subscriber.connect()
        subscriber.subscribe(topic, qos=0)
        publisher = RawClient(port, f"{name}-pub", keepalive=0)
        opened.callback(publisher.close)
        publisher.connect()
        yield subscriber, publisher


# -- the stage every exercise starts with --------------------------------------------------------

CONNACK_TITLE = "CONNECT gets a CONNACK"


def connect_gets_connack(server: StudentServer) -> str:
    """One client sends CONNECT and must get its CONNACK; then it leaves."""
    client = RawClient(server.port, "grader-hello", keepalive=0)
    try:
        client.connect()
    finally:
        client.close()
    return "CONNECT → CONNACK (20 02 00 00)"


def connack_stage(run: Callable[[StudentServer], str] = connect_gets_connack) -> Stage:
    """The stage "CONNECT gets a CONNACK"; ``run`` may wrap connect_gets_connack with more waiting."""
    return Stage(CONNACK_TITLE, run)
