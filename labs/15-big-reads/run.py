"""Lab 15: big reads: how many reads and loop turns a message costs at 64 B, 1 KiB and 256 KiB.

Field notes §2.4: "read as much as possible per read, to avoid entering the kernel repeatedly".
``--read-chunk`` sets the size of the loop's one receive buffer. Four publishers flood one
subscriber (fan-in) with a bounded count of QoS 0 messages; the kernel counts the server's
reads (/proc/PID/io) and its telemetry numbers its waits, so both are exact per message.
"""

from __future__ import annotations

import contextlib
import socket
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.bench.proctree import sample_process
from labs.bench.targets import Broker
from labs.lab import Lab, lab_arguments, running_server
from labs.proc import proc_io
from labs.telemetry_counts import WaitCounter
from mqtt.codec import encode, encode_publish
from mqtt.packets import Connect, Subscribe

CHUNKS = (64, 1024, 256 * 1024)  # --read-chunk, bytes
PUBLISHERS = 4
BATCH = 500  # frames per sendall
PAYLOAD = b"x" * 56
DEADLINE = 60.0  # seconds for a run's messages to arrive


@dataclass(frozen=True)
class FanIn:
    """One bounded fan-in run: messages delivered, the server's reads and waits, its CPU."""

    messages: int
    delivered: int
    read_bytes: int
    reads: int
    waits: int
    cpu_seconds: float


def connected(broker: Broker, client_id: str) -> socket.socket:
    client = socket.create_connection(broker.address, timeout=10)
    client.sendall(encode(Connect(client_id, keepalive=0)))
    receive_exactly(client, 4)  # CONNACK
    return client


def receive_exactly(client: socket.socket, size: int) -> None:
    while size > 0:
        data = client.recv(size)
        if not data:
            raise ConnectionError("the server closed the connection")
        size -= len(data)


def delivered_bytes(subscriber: socket.socket, total: int) -> int:
    """Read the subscriber's socket until ``total`` bytes came, or DEADLINE passed."""
    buffer, got, deadline = bytearray(1 << 20), 0, time.monotonic() + DEADLINE
    while got < total and time.monotonic() < deadline:
        subscriber.settimeout(max(0.01, deadline - time.monotonic()))
        try:
            count = subscriber.recv_into(buffer)
        except TimeoutError:
            break
        if not count:
            break
        got += count
    return got


@contextlib.contextmanager
def clients(broker: Broker) -> Iterator[tuple[socket.socket, list[socket.socket]]]:
    """One subscriber to lab15/#, then PUBLISHERS publishers, all connected; closed afterwards."""
    sockets = [connected(broker, "lab15-sub")]
    try:
        sockets[0].sendall(encode(Subscribe(1, (("lab15/#", 0),))))
        receive_exactly(sockets[0], 5)  # SUBACK
        sockets += [connected(broker, f"lab15-pub{index}") for index in range(PUBLISHERS)]
        yield sockets[0], sockets[1:]
    finally:
        for client in sockets:
            client.close()


def fan_in(broker: Broker, messages: int, waits: WaitCounter | None) -> FanIn:
    """PUBLISHERS threads each send messages / PUBLISHERS frames, in sendall()s of BATCH, at once."""
    assert broker.pid is not None
    pid, each = broker.pid, messages // PUBLISHERS
    frames = [publish_frame(index) for index in range(PUBLISHERS)]
    with clients(broker) as (subscriber, publishers):
        waits_before = waits.settled() if waits else 0
        before, cpu = proc_io(pid), sample_process(pid)
        senders = [
            threading.Thread(target=flood, args=(publisher, frame, each), daemon=True)
            for publisher, frame in zip(publishers, frames, strict=True)
        ]
        for sender in senders:
            sender.start()
        got = delivered_bytes(subscriber, each * sum(map(len, frames)))
        after, cpu_after = proc_io(pid), sample_process(pid)
        waits_after = waits.settled() if waits else 0
        for sender in senders:
            sender.join(DEADLINE)
    seconds = cpu_after.cpu_since(cpu) if cpu and cpu_after else 0.0
    delivered = got // len(frames[0])  # every frame has the same size
    reads, read_bytes = after["syscr"] - before["syscr"], after["rchar"] - before["rchar"]
    return FanIn(each * PUBLISHERS, delivered, read_bytes, reads, waits_after - waits_before, seconds)


def publish_frame(publisher: int) -> bytes:
    """Publisher N's QoS 0 PUBLISH on lab15/pN: every publisher's frame has the same size."""
    return encode_publish(b"lab15/p%d" % publisher, PAYLOAD, qos=0, retain=False, dup=False, packet_id=None)


def flood(publisher: socket.socket, frame: bytes, count: int) -> None:
    batch = frame * BATCH
    for _ in range(count // BATCH):
        publisher.sendall(batch)  # blocks while the server's receive buffer is full: saturation
    publisher.sendall(frame * (count % BATCH))


def count_run(chunk: int, messages: int) -> FanIn:
    flags = ("--read-chunk", str(chunk), "--telemetry", "--sys-interval", "0")
    with running_server("epoll_lt", *flags) as broker:
        waits = WaitCounter(broker.address[1])
        try:
            return fan_in(broker, messages, waits)
        finally:
            waits.close()


def cpu_run(chunk: int, messages: int) -> FanIn:
    with running_server("epoll_lt", "--read-chunk", str(chunk), "--sys-interval", "0") as broker:
        return fan_in(broker, messages, None)


def chunk_label(chunk: int) -> str:
    return f"{chunk // 1024} KiB" if chunk >= 1024 else f"{chunk} B"


def counts(lab: Lab, messages: int) -> dict[int, FanIn]:
    lab.say(f"{PUBLISHERS} publishers → 1 subscriber, {messages:,} QoS 0 PUBLISHes in all, --telemetry on")
    lab.say("reads: /proc/PID/io syscr (the kernel's count); waits: the server's telemetry")
    columns = f"{'reads':>8}{'waits':>8}{'reads/msg':>11}{'waits/msg':>11}{'bytes/read':>12}"
    lab.say(f"{'chunk':<9}{'delivered':>10}{columns}")
    runs = {}
    for chunk in CHUNKS:
        run = runs[chunk] = count_run(chunk, messages)
        per_read = run.read_bytes / run.reads if run.reads else 0.0
        ratios = f"{run.reads / run.messages:>11.4f}{run.waits / run.messages:>11.4f}{per_read:>12,.0f}"
        lab.say(f"{chunk_label(chunk):<9}{run.delivered:>10,}{run.reads:>8,}{run.waits:>8,}{ratios}")
    return runs


def cpu_rounds(lab: Lab, messages: int, rounds: int) -> dict[int, list[float]]:
    lab.say(f"the same load without telemetry, {rounds} round(s); broker CPU from /proc")
    lab.say(f"{'chunk':<9}{'delivered':>10}{'CPU s':>8}{'msgs/CPU-s':>12}")
    rates: dict[int, list[float]] = {chunk: [] for chunk in CHUNKS}
    order = list(CHUNKS)
    for _ in range(rounds):
        for chunk in order:
            run = cpu_run(chunk, messages)
            rate = run.delivered / run.cpu_seconds if run.cpu_seconds else 0.0
            rates[chunk].append(rate)
            lab.say(f"{chunk_label(chunk):<9}{run.delivered:>10,}{run.cpu_seconds:>8.2f}{rate:>12,.0f}")
        order.reverse()
    return rates


def checks(lab: Lab, runs: dict[int, FanIn], rates: dict[int, list[float]]) -> None:
    small, big = runs[CHUNKS[0]], runs[CHUNKS[-1]]
    complete = all(run.delivered == run.messages for run in runs.values())
    lab.check(complete, "every run delivered all its messages")
    read_fall = (small.reads / small.messages) / (big.reads / big.messages) if big.reads else 0.0
    lab.check(read_fall >= 10, f"reads per message fall ≥ 10x from 64 B to 256 KiB ({read_fall:,.0f}x)")
    wait_fall = (small.waits / small.messages) / (big.waits / big.messages) if big.waits else 0.0
    lab.check(wait_fall >= 10, f"wait calls per message fall ≥ 10x from 64 B to 256 KiB ({wait_fall:,.0f}x)")
    medians = {chunk: statistics.median(values) for chunk, values in rates.items()}
    shown = ", ".join(f"{chunk_label(chunk)} {rate:,.0f}" for chunk, rate in medians.items())
    lab.say(f"median msgs/CPU-s (shown, not asserted): {shown}")


def main() -> int:
    args = lab_arguments(__doc__.splitlines()[0]).parse_args()
    messages, rounds = (50_000, 1) if args.quick else (200_000, 3)
    lab = Lab("Lab 15: big reads")

    lab.step("Where the chunk size acts: servers/loop.py.")
    lab.say("self.read_buffer = bytearray(read_chunk)  # --read-chunk BYTES, default 262144")
    lab.say("count = os.readv(fd, self.read_into)      # at most read_chunk bytes per call")
    lab.say("epoll_lt: one read per readiness; bytes left behind make the next wait report the fd again")

    lab.step("Count reads and loop turns per message at three chunk sizes.")
    runs = counts(lab, messages)

    lab.step("Messages per CPU-second at the same three sizes.")
    rates = cpu_rounds(lab, messages, rounds)

    lab.step("Self-checks.")
    checks(lab, runs, rates)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
