"""The durability rule read off the syscalls: the WAL write comes before the bytes it covers.

A kill -9 lands in a microsecond-wide window only by luck, so the loop test cannot prove the
order. strace can: in the broker's loop thread, between the ``readv`` that read a QoS 1
PUBLISH and the ``write`` of its PUBACK (or of the forwarded PUBLISH) to a client's socket,
there must be a ``pwrite64`` to the store's WAL file: the commit.
"""

from __future__ import annotations

import os
import re
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from mqtt.packets import Puback, Publish, Suback, Subscribe
from servers.process import parse_listening
from tests.support.clients import RawClient
from tests.support.servers import ROOT

from .broker_process import write_config
from .test_broker_persistence import persistent_config

SYSCALL = re.compile(r"^(\d+)\s+(\w+)\((\d+|[^,]*),\s*(\"(?:[^\"\\]|\\.)*\")?")
WAL_OPEN = re.compile(r'^(\d+)\s+openat\(.*-wal",.*\)\s*=\s*(\d+)')


def start_under_strace(config: Path, trace: Path) -> tuple[subprocess.Popen[str], int]:
    command = [
        "strace", "-f", "-qq", "-s", "8", "-o", str(trace),
        "-e", "trace=openat,readv,write,pwrite64",
        sys.executable, "-m", "servers.broker", "-c", str(config), "-p", "0",
    ]  # fmt: skip
    log = (trace.parent / "broker.log").open("w")
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True)
    assert process.stdout is not None
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if select.select([process.stdout], [], [], 0.1)[0]:
            address = parse_listening(process.stdout.readline())
            if address:
                return process, address[1]
        if process.poll() is not None:
            break
    process.kill()
    raise AssertionError(f"broker under strace did not start: {log.name}")


def stop_traced(process: subprocess.Popen[str], broker_pid: int) -> None:
    """SIGTERM to the broker itself (strace exits with it); SIGKILL both if that fails."""
    os.kill(broker_pid, signal.SIGTERM)
    try:
        process.wait(20)
    except subprocess.TimeoutExpired:  # leave nothing running, whatever went wrong
        os.kill(broker_pid, signal.SIGKILL)
        process.kill()
        process.wait()
        raise


def loop_thread_events(trace: Path, main_pid: int) -> tuple[list[tuple[str, int, str]], int]:
    """(syscall, fd, first bytes) in the loop thread, and the WAL's fd."""
    events = []
    wal_fd = -1
    for line in trace.read_text().splitlines():
        opened = WAL_OPEN.match(line)
        if opened and int(opened.group(1)) == main_pid:
            wal_fd = int(opened.group(2))
        match = SYSCALL.match(line)
        if match and int(match.group(1)) == main_pid and match.group(3).isdigit():
            events.append((match.group(2), int(match.group(3)), match.group(4) or ""))
    return events, wal_fd


def test_every_puback_and_forwarded_publish_follows_its_commit(tmp_path: Path) -> None:
    config = write_config(tmp_path, persistent_config(tmp_path))
    trace = tmp_path / "strace.log"
    process, port = start_under_strace(config, trace)
    try:
        subscriber = RawClient(port)
        subscriber.connect("durable", clean_session=False)
        subscriber.send(Subscribe(1, [("k", 1)]))
        assert subscriber.expect(Suback) == Suback(1, (1,))
        publisher = RawClient(port)
        publisher.connect("pub")
        for packet_id in range(1, 6):
            publisher.send(Publish("k", b"m%d" % packet_id, qos=1, packet_id=packet_id))
            assert publisher.expect(Puback) == Puback(packet_id)
            delivered = subscriber.expect(Publish)
            subscriber.send(Puback(delivered.packet_id))  # type: ignore[attr-defined]
    finally:
        # strace -f names the first process by its own pid: the broker's main (loop) thread.
        main_pid = int(trace.read_text().split(None, 1)[0])
        stop_traced(process, main_pid)
    events, wal_fd = loop_thread_events(trace, main_pid)
    assert wal_fd >= 0, "the loop thread never opened the WAL"
    checked = 0
    wrote_since_read = False
    for name, fd, data in events:
        if name == "readv":
            wrote_since_read = False
        elif name == "pwrite64" and fd == wal_fd:
            wrote_since_read = True
        elif name == "write" and fd > 2 and data.startswith(('"@\\2', '"2')):  # PUBACK, PUBLISH QoS 1
            assert wrote_since_read, f"a {data} left before the commit covering it"
            checked += 1
    assert checked >= 10  # five PUBACKs and five forwarded PUBLISHes
