"""Lab 09's grader: black-box stages for a learner's server that must batch its writes.

A publisher sends a burst of small PUBLISHes in one sendall, so the server reads them in one
or a few loop turns; strace, attached to the learner's process, records its write-family calls
and its waits. The subscriber's socket must get at most one send per loop turn. The untouched
skeleton sends each queued packet on its own: one send per packet, all in one turn.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
from collections import Counter
from pathlib import Path

from labs.exercise import (
    RawClient,
    Stage,
    StageFailed,
    StudentServer,
    connack_stage,
    grade,
    subscriber_and_publisher,
)
from labs.tracing import AttachFailed, strace_lines
from mqtt.codec import encode
from mqtt.packets import Publish
from tui.sources.tcp_states import tcp_sockets

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
BURST = 200  # PUBLISHes in one sendall: about 4.6 KB, one segment on loopback
MOST_SENDS = 10  # sends to the subscriber allowed for the whole burst
# strace -e trace=TRACED: the calls a Python server may send with, and the waits of a loop.
TRACED = "write,writev,sendto,sendmsg,epoll_wait,epoll_pwait,poll,ppoll,select,pselect6"
# "[PID ]write(FD, ...) = N" and "[PID ]epoll_wait(...": one line per call started.
WRITE = re.compile(r"^(?:\d+\s+)?(write|writev|sendto|sendmsg|send)\((\d+),")
WAIT = re.compile(r"^(?:\d+\s+)?(epoll_wait|epoll_pwait|epoll_pwait2|poll|ppoll|select|pselect6)\(")


def burst_frames() -> bytes:
    """BURST QoS 0 PUBLISHes, one topic each, so the core queues each as its own buffer."""
    return b"".join(encode(Publish(f"lab09/burst/{index}", b"%03d" % index)) for index in range(BURST))


def receive_burst(subscriber: RawClient) -> list[str]:
    """The topics of the burst as they arrive, in order; StageFailed if some never come."""
    topics = []
    for index in range(BURST):
        packet = subscriber.expect(Publish, 5.0, what=f"PUBLISH {index + 1} of {BURST} (lab09/burst/{index})")
        assert isinstance(packet, Publish)
        topics.append(packet.topic)
    return topics


def burst_arrives_in_order(server: StudentServer) -> str:
    with subscriber_and_publisher(server.port, "lab09/burst/#") as (subscriber, publisher):
        publisher.send(burst_frames())
        topics = receive_burst(subscriber)
    expected = [f"lab09/burst/{index}" for index in range(BURST)]
    if topics != expected:
        pairs = enumerate(zip(topics, expected, strict=True))
        first = next(index for index, (got, want) in pairs if got != want)
        raise StageFailed(f"lab09/burst/0 to /{BURST - 1} in order", f"{topics[first]!r} at position {first}")
    return f"{BURST} PUBLISHes sent in one sendall() arrived at the subscriber, in order"


def server_fd_of(server: StudentServer, client: RawClient) -> int:
    """The server's fd for ``client``'s connection: its socket inode, found in /proc/PID/fd."""
    local_port = client.socket.getsockname()[1]
    inodes = {row.inode for row in tcp_sockets(server.port) if row.remote[1] == local_port and row.inode}
    for entry in Path(f"/proc/{server.pid}/fd").iterdir():
        with contextlib.suppress(OSError):
            target = os.readlink(entry)
            if target.startswith("socket:[") and int(target[8:-1]) in inodes:
                return int(entry.name)
    raise StageFailed("the subscriber's connection among the server's open fds", "no such socket")


def sends_per_turn(lines: list[str], fd: int) -> tuple[list[int], Counter[str]]:
    """Sends to ``fd`` between one wait call and the next, for each loop turn that had any; and
    how many of each call (write, sendto...) there were."""
    turns, current, names = [], 0, Counter[str]()
    for line in lines:
        if WAIT.match(line):
            if current:
                turns.append(current)
            current = 0
        elif (match := WRITE.match(line)) and int(match.group(2)) == fd:
            current += 1
            names[match.group(1)] += 1
    return ([*turns, current] if current else turns), names


def one_send_per_turn(server: StudentServer) -> str:
    if shutil.which("strace") is None:
        raise StageFailed("strace on this machine (scripts/install-system-deps.sh)", "strace: not found")
    try:
        with subscriber_and_publisher(server.port, "lab09/burst/#") as (subscriber, publisher):
            fd = server_fd_of(server, subscriber)
            with strace_lines(server.pid, "-f", "-qq", "-s", "0", "-e", f"trace={TRACED}") as trace:
                publisher.send(burst_frames())
                receive_burst(subscriber)
    except AttachFailed as problem:
        raise StageFailed("strace to attach to your server", str(problem)) from None
    turns, names = sends_per_turn(trace, fd)
    sends, most = sum(turns), max(turns, default=0)
    calls = ", ".join(f"{name} x{count}" for name, count in names.most_common())
    plural = "s" if sends != 1 else ""
    seen = f"{sends} send{plural} ({calls}) to the subscriber's socket (fd {fd}) for {BURST} packets"
    if sends > MOST_SENDS or most > 1:
        raise StageFailed(
            f"at most one send per loop turn to the subscriber's socket (≤ {MOST_SENDS} for the burst)",
            f"{seen}, {most} in one loop turn",
            todo="TODO(batch)",
        )
    return f"{seen}, in {len(turns)} loop turn(s)"


STAGES = [
    connack_stage(),
    Stage(f"a burst of {BURST} PUBLISHes reaches a subscriber in order", burst_arrives_in_order),
    Stage("the burst costs at most one send per loop turn (strace)", one_send_per_turn),
]


def grade_student(path: Path) -> int:
    return grade("Lab 09 exercise: batching the writes", path, STAGES)
