"""Benchmark: one sock_diag poll of a busy port, the query the TUI's TCP-state view runs.

Opens a listener and N loopback connections in this process (2N + 1 sockets on the port),
then times ``tcp_sockets(port)`` (a fresh decode), ``TcpSampler.sample()`` on an unchanged port
(what the TUI pays per dump at idle: the kernel's walk and copy, no decoding), the LISTEN-only
probe the status line runs while paused, and reading the kernel's TCP counters, the check that
spares most dumps. Times are this thread's CPU (the kernel's work for us included) and wall.
Run: ``python -m tests.bench.bench_sock_diag --connections 5000`` (needs 2N + 10 fds).
"""

from __future__ import annotations

import argparse
import resource
import socket
import statistics
import subprocess
import time
from collections.abc import Callable

from tui.sources.tcp_activity import tcp_counters
from tui.sources.tcp_sampler import TcpSampler
from tui.sources.tcp_states import (
    LISTEN_ONLY,
    NETLINK_SOCK_DIAG,
    NLMSG_DONE,
    NLMSG_HEADER,
    dump_request,
    state_counts,
    tcp_sockets,
)


def open_connections(count: int) -> tuple[socket.socket, list[socket.socket]]:
    """A listener plus ``count`` connected pairs; accepting as we go keeps the backlog short."""
    listener = socket.create_server(("127.0.0.1", 0), backlog=1024)
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    for _ in range(count):
        held.append(socket.create_connection(("127.0.0.1", port)))
        held.append(listener.accept()[0])
    return listener, held


def kernel_dump_only(port: int) -> int:
    """The same request, with replies only walked, not decoded: the kernel's share of a poll."""
    buffer = bytearray(64 * 1024)
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_SOCK_DIAG) as nl:
        nl.sendto(dump_request(port, socket.AF_INET, 1), (0, 0))
        total = 0
        while True:
            received = nl.recv_into(buffer)
            total += received
            offset = 0
            while offset < received:
                length, message_type = NLMSG_HEADER.unpack_from(buffer, offset)[:2]
                if message_type == NLMSG_DONE:
                    return total
                offset += (length + 3) & ~3


def time_calls(function: Callable[[], object], repeats: int) -> tuple[list[float], list[float]]:
    """(CPU, wall-clock) milliseconds per call; CPU is this thread's, in the kernel too."""
    cpu, wall = [], []
    for _ in range(repeats):
        cpu_started, started = time.thread_time(), time.perf_counter()
        function()
        cpu.append((time.thread_time() - cpu_started) * 1000)
        wall.append((time.perf_counter() - started) * 1000)
    return cpu, wall


def report(label: str, timings: tuple[list[float], list[float]]) -> None:
    cpu, wall = timings
    print(
        f"{label:<38} CPU median {statistics.median(cpu):7.2f} ms   "
        f"wall median {statistics.median(wall):7.2f} ms   min {min(wall):7.2f}   max {max(wall):7.2f}"
        f"   ({len(wall)} calls)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--connections", type=int, default=5000, help="connected pairs (default 5000)")
    parser.add_argument("--repeats", type=int, default=30, help="timed calls per method (default 30)")
    arguments = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * arguments.connections + 10
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(needed, hard), hard))

    listener, held = open_connections(arguments.connections)
    port = listener.getsockname()[1]
    rows = tcp_sockets(port)
    print(f"port {port}: {len(rows)} sockets {state_counts(rows)}")
    report("tcp_sockets (netlink sock_diag)", time_calls(lambda: tcp_sockets(port), arguments.repeats))
    print(f"  reply size {kernel_dump_only(port) / 1024:.0f} KiB")
    report("  kernel dump only, no decoding", time_calls(lambda: kernel_dump_only(port), arguments.repeats))
    sampler = TcpSampler(port)
    sampler.sample()
    report("TcpSampler, unchanged port", time_calls(sampler.sample, arguments.repeats))
    sampler.close()
    probe = lambda: tcp_sockets(port, states=LISTEN_ONLY)  # noqa: E731
    report("LISTEN-only dump (the paused probe)", time_calls(probe, arguments.repeats))
    report("kernel TCP counters (snmp, netstat)", time_calls(tcp_counters, arguments.repeats))
    ss_command = ["ss", "-tnH", f"( sport = :{port} or dport = :{port} )"]
    try:
        report(
            "`ss -tn` subprocess, same filter",
            time_calls(
                lambda: subprocess.run(ss_command, check=True, capture_output=True),
                max(3, arguments.repeats // 5),
            ),
        )
    except FileNotFoundError:
        print("ss not installed: no comparison")
    for connection in held:
        connection.close()
    listener.close()


if __name__ == "__main__":
    main()
