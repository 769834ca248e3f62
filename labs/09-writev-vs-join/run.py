"""Lab 09: one write per packet, join + write, and writev: what batching the writes saves.

Field notes §2.1: "send with writev (scatter/gather): one syscall for many queued packets". The
baseline is one write per packet (``--send-per-packet``). The lab counts the server's writes
for a pre-queued burst, where the counts are fixed, then measures fan-out CPU in all three
modes and, on a socketpair, where scatter/gather beats a join: a few large buffers.
"""

from __future__ import annotations

import multiprocessing
import socket
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from grade import BURST, SKELETON, burst_frames, grade_student  # this lab's grader, beside this file

from labs.bench.progress import NullUi
from labs.bench.throughput import FlowSpec, run_flow
from labs.exercise import StageFailed, student_arguments, subscriber_and_publisher
from labs.lab import Lab, TimingComparison, lab_arguments, running_server, times
from labs.proc import proc_io
from labs.telemetry_counts import WaitCounter
from mqtt.packets import Publish

KIB, MIB = 1024, 1 << 20
CASES = ((64, 64), (4, 64 * KIB), (4, MIB))  # (buffers per call, bytes per buffer)
MODES = {"per-packet": ("--send-per-packet",), "join": (), "writev": ("--writev",)}


@dataclass(frozen=True)
class Burst:
    """What one pre-queued burst cost the server: packets delivered, write calls, loop turns."""

    delivered: int
    in_order: bool
    writes: int
    waits: int


def burst(mode: str) -> Burst:
    """BURST QoS 0 PUBLISHes (one topic each) in one sendall, to one subscriber of them all."""
    with running_server("epoll_lt", *MODES[mode], "--telemetry", "--sys-interval", "0") as broker:
        assert broker.pid is not None
        port = broker.address[1]
        waits = WaitCounter(port)
        try:
            with subscriber_and_publisher(port, "lab09/burst/#", "lab09") as (subscriber, publisher):
                waits_before, writes_before = waits.settled(), proc_io(broker.pid)["syscw"]
                publisher.send(burst_frames())  # one sendall: read in one or a few loop turns
                topics = []
                try:
                    for _ in range(BURST):
                        packet = subscriber.expect(Publish, 5.0, what="the burst")
                        assert isinstance(packet, Publish)
                        topics.append(packet.topic)
                except StageFailed:
                    pass  # counted as not delivered
                waits_after, writes_after = waits.settled(), proc_io(broker.pid)["syscw"]
        finally:
            waits.close()
    in_order = topics == [f"lab09/burst/{index}" for index in range(BURST)]
    return Burst(len(topics), in_order, writes_after - writes_before, waits_after - waits_before)


def bursts(lab: Lab) -> dict[str, Burst]:
    lab.say(f"{BURST} QoS 0 PUBLISHes on {BURST} topics in one sendall(); one subscriber to lab09/burst/#")
    lab.say("writes: /proc/PID/io syscw (the kernel's count); loop turns: the server's telemetry")
    lab.say(f"{'mode':<12}{'delivered':>10}{'writes':>8}{'loop turns':>12}{'packets/write':>15}")
    results = {}
    for mode in MODES:
        result = results[mode] = burst(mode)
        per_write = result.delivered / result.writes if result.writes else 0.0
        lab.say(f"{mode:<12}{result.delivered:>10}{result.writes:>8}{result.waits:>12}{per_write:>15,.0f}")
    return results


def burst_checks(lab: Lab, results: dict[str, Burst]) -> None:
    each = results["per-packet"]
    lab.check(
        each.in_order and each.writes == each.delivered == BURST,
        f"--send-per-packet: one write per packet: {each.writes} writes, {each.delivered} delivered in order",
    )
    for mode in ("join", "writev"):
        result = results[mode]
        lab.check(
            result.in_order and 0 < result.writes <= result.waits and result.writes * 10 <= BURST,
            f"{mode}: at most one write per loop turn: {result.writes} write(s) in {result.waits} turn(s),"
            f" {result.delivered} packets in order",
        )


def fanout_round(lab: Lab, mode: str, duration: float) -> float:
    """One fan-out run against a fresh epoll_lt; returns broker CPU µs per delivery."""
    spec = FlowSpec("fanout", 1, 50, duration, publisher_procs=1, subscriber_procs=2)
    with running_server("epoll_lt", *MODES[mode], "--sys-interval", "0") as broker:
        assert broker.pid is not None
        writes_before = proc_io(broker.pid)["syscw"]
        metrics, errors = run_flow(broker, spec, NullUi(), f"fanout {mode}")
        writes = proc_io(broker.pid)["syscw"] - writes_before
    per_cpu, delivered = metrics["msgs_per_cpu_s"] or 0.0, metrics["delivered"]
    error_count = errors.lost + errors.duplicated + errors.reordered + errors.disconnects
    per_write = delivered / writes if writes else 0.0
    lab.say(f"{mode:<12}{delivered:>12,}{per_cpu:>14,.0f}{per_write:>18,.1f}{error_count:>8}")
    return 1e6 / per_cpu if per_cpu and not error_count else 0.0


def broker_comparison(lab: Lab, rounds: int, duration: float) -> dict[str, list[float]]:
    """Rotate the modes' order each round so that drift on a shared machine hits all alike."""
    lab.say(f"{'mode':<12}{'deliveries':>12}{'msgs/CPU-s':>14}{'deliveries/write':>18}{'errors':>8}")
    costs: dict[str, list[float]] = {mode: [] for mode in MODES}
    order = list(MODES)
    for _ in range(rounds):
        for mode in order:
            costs[mode].append(fanout_round(lab, mode, duration))
        order = order[1:] + order[:1]
    return costs


def drain(reader: socket.socket, writer: socket.socket) -> None:
    """The far end of the socketpair, in its own process: read everything until EOF."""
    writer.close()  # the forked copy of the writing end, or EOF would never come
    buffer = bytearray(MIB)
    while reader.recv_into(buffer):
        pass


def send_once(writer: socket.socket, way: str, buffers: list[bytes]) -> None:
    if way == "each":
        for buffer in buffers:
            writer.sendall(buffer)  # one call per buffer: the baseline
    elif way == "join":
        writer.sendall(b"".join(buffers))  # one copy in user space, one send
    else:
        writer.sendmsg(buffers)  # the kernel gathers; blocking, so it sends all


def micro(count: int, size: int, seconds: float) -> dict[str, float]:
    """CPU µs per call of the sending thread (user + kernel), best of three, for each way."""
    writer, reader = socket.socketpair()
    process = multiprocessing.get_context("fork").Process(target=drain, args=(reader, writer))
    process.start()
    reader.close()
    buffers = [bytes([index]) * size for index in range(count)]
    best: dict[str, float] = {}
    try:
        for way in ("each", "join", "sendmsg") * 3:
            calls, started_cpu, started = 0, time.thread_time(), time.monotonic()
            while time.monotonic() - started < seconds:
                send_once(writer, way, buffers)
                calls += 1
            cost = (time.thread_time() - started_cpu) / calls * 1e6
            best[way] = min(best.get(way, cost), cost)
    finally:
        writer.close()
        process.join(timeout=10)
    return best


def byte_size(size: int) -> str:
    return f"{size // MIB} MiB" if size >= MIB else f"{size // KIB} KiB" if size >= KIB else f"{size} B"


def micro_benchmark(lab: Lab, seconds: float) -> None:
    header = f"{'each µs':>10}{'join µs':>10}{'sendmsg µs':>12}{'each/join':>11}{'sendmsg/join':>14}"
    lab.say(f"{'buffers x size':<15}{header}")
    for count, size in CASES:
        cost = micro(count, size, seconds)
        label = f"{count} x {byte_size(size)}"
        each, join, gather = cost["each"], cost["join"], cost["sendmsg"]
        ratios = f"{times(each / join):>11}{times(gather / join):>14}"
        lab.say(f"{label:<15}{each:>10,.1f}{join:>10,.1f}{gather:>12,.1f}{ratios}")


def show_the_code(lab: Lab) -> None:
    lab.say("--send-per-packet: os.write(fd, packet) for each packet queued  (write_pending_per_packet)")
    lab.say("default:           os.write(fd, connection.pending())          # b''.join of the queue")
    lab.say("--writev:          os.writev(fd, connection.pending_buffers())  # the queue, as it is")
    lab.say("the last two: one call per connection per loop turn, whatever is queued")


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    student_arguments(parser, SKELETON)
    args = parser.parse_args()
    if args.student:
        return grade_student(Path(args.student))
    rounds, duration = (2, 1.0) if args.quick else (3, 3.0)
    lab = Lab("Lab 09: one write per packet, join + write, writev")

    lab.step("Where the three ways differ: servers/loop.py.")
    show_the_code(lab)

    lab.step("A pre-queued burst: count the server's write calls and loop turns.")
    results = bursts(lab)

    lab.step(f"Fan-out, 1 publisher → 50 subscribers, {rounds} round(s) of {duration:g} s per mode.")
    lab.say("$ .venv/bin/python labs/compare.py --only epoll_lt,fanout --rate 0 \\")
    lab.say("      --server-args=--send-per-packet")
    lab.say("the same load, driven here through labs/bench so all three run in one sequence:")
    costs = broker_comparison(lab, rounds, duration)

    lab.step("Micro-benchmark on a socketpair: K buffers of S bytes, three ways.")
    micro_benchmark(lab, 0.1 if args.quick else 0.4)

    lab.step("Self-checks.")
    burst_checks(lab, results)
    lab.check(all(all(values) for values in costs.values()), "every mode delivered the fan-out, no errors")
    timing = TimingComparison.of(costs["per-packet"], costs["join"])
    lab.check_timing(timing, "fan-out: one write per packet costs ≥ 5x the CPU per delivery of join + write")
    writev = TimingComparison.of(costs["writev"], costs["join"])
    lab.say("writev / join, CPU per delivery (shown, not asserted):")
    lab.say(f"  {writev.describe()}")
    medians = {mode: statistics.median(values) for mode, values in costs.items()}
    lab.say("median µs per delivery: " + ", ".join(f"{mode} {cost:.3f}" for mode, cost in medians.items()))
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
