"""The speed rules read off the syscalls: one send per connection per loop turn, one wake-up per worker.

strace records every ``epoll_wait`` and ``write`` of a server while clients that both publish
and subscribe (the load that made epoll_et write twice after a read edge, mask 0x5) exchange
messages. Between two waits of the loop, a client's socket may get a second ``write`` only
when the first was short or hit EAGAIN. For the boss/worker server, the eventfd writes that wake a
worker are counted: at most one per worker per wake-up, not one per connection it must flush.
"""

from __future__ import annotations

import contextlib
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from mqtt.codec import encode
from mqtt.packets import Publish, Suback, Subscribe
from servers.process import parse_listening, stop_process
from tests.support.clients import RawClient
from tests.support.servers import ROOT

pytestmark = pytest.mark.skipif(shutil.which("strace") is None, reason="strace is not installed")

# "PID write(FD, "..."..., LEN) = RESULT", "PID epoll_wait(...) = N", "PID accept4(...) = FD"
WRITE = re.compile(r"^(\d+)\s+write\((\d+), .*, (\d+)\)\s+= (-?\d+)")
WAIT = re.compile(r"^(\d+)\s+epoll_wait\(")
ACCEPT = re.compile(r"^(\d+)\s+accept4\(.*\)\s+= (\d+)")
EVENTFD = re.compile(r"^(\d+)\s+eventfd2\(.*\)\s+= (\d+)")


class TracedServer:
    """``strace -f`` around ``python -m servers.VARIANT``; the trace is read after it stops."""

    def __init__(self, variant: str, trace: Path, *args: str) -> None:
        self.trace = trace
        command = [
            "strace", "-f", "-qq", "-s", "0", "-o", str(trace),
            "-e", "trace=epoll_wait,accept4,eventfd2,write",
            sys.executable, "-m", f"servers.{variant}", "--port", "0", *args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
        )
        self.port = self._await_port()

    def _await_port(self) -> int:
        assert self.process.stdout is not None
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if select.select([self.process.stdout], [], [], 0.1)[0]:
                address = parse_listening(self.process.stdout.readline())
                if address:
                    return address[1]
            if self.process.poll() is not None:
                break
        self.process.kill()
        raise AssertionError("server under strace did not start")

    def stop(self) -> list[str]:
        """SIGTERM to the server itself (strace exits with it); SIGKILL both if that fails."""
        children = Path(f"/proc/{self.process.pid}/task/{self.process.pid}/children")
        with contextlib.suppress(OSError):
            for pid in children.read_text().split():
                os.kill(int(pid), signal.SIGTERM)
        try:
            self.process.wait(20)
        finally:
            stop_process(self.process, 1)  # strace, and with it the server, if still there
        return self.trace.read_text().splitlines()


def publish_and_subscribe_together(port: int, clients: int = 4, messages: int = 40) -> None:
    """Every client subscribes to all and publishes in bursts; each gets every message once."""
    peers = [RawClient(port) for _ in range(clients)]
    try:
        for index, peer in enumerate(peers):
            peer.connect(f"both-{index}")
            peer.send(Subscribe(1, (("both/#", 0),)))
            peer.expect(Suback)
        for burst in range(messages // 4):
            for index, peer in enumerate(peers):
                frames = b"".join(
                    encode(Publish(f"both/{index}", b"m%d" % (burst * 4 + n))) for n in range(4)
                )
                peer.send(frames)
        for peer in peers:
            got = [peer.expect(Publish) for _ in range(clients * messages)]
            assert len(got) == clients * messages
    finally:
        for peer in peers:
            peer.close()


def double_sends(lines: list[str]) -> tuple[int, int]:
    """(writes to clients, second writes to one socket in one loop turn that no short one explains)."""
    main_pid = next(int(match.group(1)) for line in lines if (match := WAIT.match(line)))
    clients = {int(match.group(2)) for line in lines if (match := ACCEPT.match(line))}
    sends = doubles = 0
    sent_this_turn: dict[int, bool] = {}  # fd -> whether every write to it this turn was whole
    for line in lines:
        if WAIT.match(line) and int(line.split()[0]) == main_pid:
            sent_this_turn.clear()
            continue
        match = WRITE.match(line)
        if not match or int(match.group(1)) != main_pid or int(match.group(2)) not in clients:
            continue  # another thread, or not a client's socket (stderr, an eventfd)
        fd, wanted, result = int(match.group(2)), int(match.group(3)), int(match.group(4))
        sends += 1
        if sent_this_turn.get(fd):
            doubles += 1
        sent_this_turn[fd] = result == wanted
    return sends, doubles


@pytest.mark.parametrize("variant", ["epoll_lt", "epoll_et", "broker"])
def test_a_socket_gets_one_send_per_loop_turn(variant: str, tmp_path: Path) -> None:
    server = TracedServer(variant, tmp_path / "trace")
    try:
        publish_and_subscribe_together(server.port)
    finally:
        lines = server.stop()
    sends, doubles = double_sends(lines)
    assert sends >= 4 * 2  # CONNACK and SUBACK at least, and the deliveries
    assert doubles == 0, f"{doubles} of {sends} writes went to a socket already flushed in that turn"


def test_a_worker_is_woken_once_not_once_per_dirty_connection(tmp_path: Path) -> None:
    """A fan-out to subscribers on the other worker costs that worker one eventfd write."""
    server = TracedServer("threaded_boss_worker", tmp_path / "trace", "--workers", "2")
    subscribers, publishes = 20, 30
    peers: list[RawClient] = []
    try:
        for index in range(subscribers):  # the boss deals connections out round robin
            peer = RawClient(server.port)
            peer.connect(f"fan-{index}")
            peer.send(Subscribe(1, (("fan/out", 0),)))
            peer.expect(Suback)
            peers.append(peer)
        publisher = RawClient(server.port)
        publisher.connect("fan-publisher")
        for sequence in range(publishes):  # one at a time: each publish is its own loop turn
            publisher.send(Publish("fan/out", b"%d" % sequence))
            for peer in peers:
                assert peer.expect(Publish).payload == b"%d" % sequence  # type: ignore[union-attr]
        publisher.close()
    finally:
        for peer in peers:
            peer.close()
        lines = server.stop()
    eventfds = {int(match.group(2)) for line in lines if (match := EVENTFD.match(line))}
    assert len(eventfds) == 2  # one per worker
    wakes = Counter(int(match.group(2)) for line in lines if (match := WRITE.match(line)))
    wake_writes = sum(count for fd, count in wakes.items() if fd in eventfds)
    handoffs = subscribers + 1  # the boss pokes a worker for each connection it hands over
    # One per connection flushed would be about publishes x subscribers / 2 = 300.
    assert wake_writes <= handoffs + 2 * publishes, f"{wake_writes} eventfd writes"
