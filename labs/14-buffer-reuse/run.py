"""Lab 14: buffer reuse: a fresh buffer per recv against one buffer reused, in minor page faults.

Field notes §2.5: "don't free buffers, keep them for reuse". ``--fresh-buffer`` makes the loop
read with ``os.read(fd, 256 KiB)``, a new block from malloc per read; the default reads into
one bytearray. The lab counts the server's minor faults (/proc/PID/stat) per message at light
load and per MiB read at saturation, with glibc's mmap threshold adaptive and pinned.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from grade import PIN_NAME, PIN_VALUE, SKELETON, LightLoad, grade_student, light_load

from labs.bench.proctree import sample_process
from labs.bench.targets import Broker, await_listening, spawn
from labs.exercise import student_arguments
from labs.lab import Lab, lab_arguments
from labs.proc import minor_faults, proc_io
from mqtt.codec import encode, encode_publish
from mqtt.packets import Connect

MIB = 1 << 20
PINNED = f"{PIN_NAME}={PIN_VALUE}"
FLOOD_FRAME = encode_publish(b"lab14/flood", b"x" * 56, qos=0, retain=False, dup=False, packet_id=None)
BATCH = 1000  # frames per sendall of the flood


@contextlib.contextmanager
def epoll_lt(fresh: bool, pinned: bool) -> Iterator[Broker]:
    """``python -m servers.epoll_lt`` with or without --fresh-buffer and the pinned threshold."""
    command = [sys.executable, "-m", "servers.epoll_lt", "--port", "0", "--sys-interval", "0"]
    command += ["--fresh-buffer"] if fresh else []
    environment = {**os.environ, PIN_NAME: str(PIN_VALUE)} if pinned else None
    broker = await_listening(spawn("epoll_lt", command, environment))
    try:
        yield broker
    finally:
        broker.stop()


def label(fresh: bool, pinned: bool) -> str:
    return f"{'fresh' if fresh else 'reused':<8}{PINNED if pinned else 'default':<31}"


def light_rows(lab: Lab, messages: int) -> dict[tuple[bool, bool], tuple[LightLoad, LightLoad]]:
    """Per server: light load on a new server, then again once that client has closed (an EOF read)."""
    lab.say(f"{messages} QoS 1 PUBLISHes of 32 bytes, each sent after the last one's PUBACK")
    lab.say(f"{'buffer':<8}{'malloc':<31}{'when':<22}{'faults':>7}{'faults/msg':>11}{'CPU µs/msg':>11}")
    rows = {}
    for fresh, pinned in ((False, False), (True, False), (True, True), (False, True)):
        with epoll_lt(fresh, pinned) as broker:
            assert broker.pid is not None
            first = light_load(broker.address[1], broker.pid, messages)
            second = light_load(broker.address[1], broker.pid, messages)  # after the first one's EOF
        rows[(fresh, pinned)] = (first, second)
        for when, load in (("new server", first), ("after an EOF read", second)):
            micros = 1e6 * load.cpu_seconds / load.messages
            figures = f"{load.faults:>7,}{load.per_message:>11.2f}{micros:>11.1f}"
            lab.say(f"{label(fresh, pinned)}{when:<22}{figures}")
    return rows


@dataclass(frozen=True)
class Flood:
    """What a flood of QoS 0 PUBLISHes to a topic nobody reads cost the server."""

    messages: int
    faults: int
    mebibytes: float
    reads: int
    cpu_seconds: float


def flood(broker: Broker, messages: int) -> Flood:
    """One publisher sends ``messages`` frames as fast as the socket takes them; no subscriber."""
    assert broker.pid is not None
    pid, total = broker.pid, messages * len(FLOOD_FRAME)
    publisher = socket.create_connection(broker.address, timeout=10)
    try:
        publisher.sendall(encode(Connect("lab14-flood", keepalive=0)))
        publisher.recv(4)  # CONNACK
        before, faults, cpu = proc_io(pid), minor_faults(pid), sample_process(pid)
        batch = FLOOD_FRAME * BATCH
        for _ in range(messages // BATCH):
            publisher.sendall(batch)
        deadline = time.monotonic() + 60
        while proc_io(pid)["rchar"] - before["rchar"] < total and time.monotonic() < deadline:
            time.sleep(0.01)  # polls the kernel's byte count of the server's reads, with a deadline
        after, faults, cpu_after = proc_io(pid), minor_faults(pid) - faults, sample_process(pid)
    finally:
        publisher.close()
    seconds = cpu_after.cpu_since(cpu) if cpu and cpu_after else 0.0
    read = (after["rchar"] - before["rchar"]) / MIB
    return Flood(messages, faults, read, after["syscr"] - before["syscr"], seconds)


def saturation_rows(lab: Lab, messages: int) -> dict[tuple[bool, bool], Flood]:
    frame = len(FLOOD_FRAME)
    lab.say(f"{messages:,} QoS 0 PUBLISHes of {frame} bytes in sendall()s of {BATCH}; nobody subscribed")
    columns = f"{'MiB':>5}{'reads':>6}{'faults':>7}{'faults/MiB':>11}{'faults/msg':>11}{'msgs/CPU-s':>12}"
    lab.say(f"{'buffer':<8}{'malloc':<31}{columns}")
    rows = {}
    for pinned in (False, True):
        for fresh in (False, True):
            with epoll_lt(fresh, pinned) as broker:
                result = rows[(fresh, pinned)] = flood(broker, messages)
            per_mib, per_message = result.faults / result.mebibytes, result.faults / result.messages
            rate = result.messages / result.cpu_seconds if result.cpu_seconds else 0.0
            counts = f"{result.mebibytes:>5.1f}{result.reads:>6}{result.faults:>7,}"
            lab.say(f"{label(fresh, pinned)}{counts}{per_mib:>11.0f}{per_message:>11.3f}{rate:>12,.0f}")
    return rows


def light_checks(lab: Lab, rows: dict[tuple[bool, bool], tuple[LightLoad, LightLoad]]) -> None:
    reused = [load.per_message for (fresh, _), loads in rows.items() if not fresh for load in loads]
    most = max(reused)
    lab.check(most < 0.1, f"light load, reused buffer: < 0.1 fault per message in every run ({most:.2f})")
    new = rows[(True, False)][0].per_message
    lab.check(new >= 1, f"light load, fresh buffer, new server: ≥ 1 fault per message ({new:.2f})")
    adapted = rows[(True, False)][1].per_message
    lab.check(
        adapted < 0.1,
        f"light load, fresh buffer, after an EOF read: glibc raised its threshold, < 0.1 ({adapted:.2f})",
    )
    pinned = rows[(True, True)][1].per_message
    lab.check(
        pinned >= 1, f"light load, fresh buffer, threshold pinned: ≥ 1 fault per message ({pinned:.2f})"
    )


def saturation_check(lab: Lab, rows: dict[tuple[bool, bool], Flood]) -> None:
    fresh, reused = rows[(True, True)], rows[(False, True)]
    extra = fresh.faults / fresh.mebibytes - reused.faults / reused.mebibytes
    lab.check(
        extra >= 128,
        f"saturation, threshold pinned: fresh buffers cost ≥ 128 more faults per MiB read ({extra:.0f})",
    )


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    student_arguments(parser, SKELETON)
    args = parser.parse_args()
    if args.student:
        return grade_student(Path(args.student))
    light, flooded = (300, 100_000) if args.quick else (1000, 400_000)
    lab = Lab("Lab 14: buffer reuse")

    lab.step("Where the two ways differ: servers/loop.py.")
    lab.say("default:         os.readv(fd, [self.read_buffer])  # one bytearray, filled in place")
    lab.say("--fresh-buffer:  os.read(fd, len(self.read_buffer))  # a new 256 KiB bytes object per read")

    lab.step("Light load: one small PUBLISH per read. Minor faults from /proc/PID/stat (field 10).")
    light = light_rows(lab, light)

    lab.step("Saturation: full 256 KiB reads. The same counts per MiB read.")
    saturated = saturation_rows(lab, flooded)

    lab.step("Self-checks.")
    light_checks(lab, light)
    saturation_check(lab, saturated)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
