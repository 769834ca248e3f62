"""Lab 07: what a thread per connection costs in memory, against one epoll loop holding the same.

The notes' rule, max threads ≈ (max process memory − heap − reserved) / stack size, counts
each thread's stack at its full reserved size. This lab holds N idle connections two ways,
a thread blocked in recv() per connection and epoll_lt, and reads VmSize (reserved, virtual)
and VmRSS (resident, touched) of each process from /proc.
"""

from __future__ import annotations

import resource
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.bench.clients import ClientOpener, close_all
from labs.bench.targets import await_listening, spawn
from labs.bench.wire import connect_packet, subscribe_packet
from labs.lab import Lab, lab_arguments, running_server
from labs.proc import status_numbers

HERE = Path(__file__).resolve().parent
KIB = 1024
SMALL_STACK = 256 * KIB
NOTES = (("6,000 subscriber threads", 6000, 1.7e9), ("2,500 publisher connections", 2500, 591e6))


@dataclass(frozen=True)
class Memory:
    """A process's memory as /proc/PID/status reports it, in KiB."""

    size_kib: int  # VmSize: every mapping, touched or not (virtual)
    rss_kib: int  # VmRSS: pages actually in RAM (resident)
    threads: int


@dataclass(frozen=True)
class Row:
    holder: str
    connections: int
    before: Memory
    after: Memory

    def per_connection(self, field: str) -> float:
        return (getattr(self.after, field) - getattr(self.before, field)) / self.connections


def memory(pid: int) -> Memory:
    return Memory(*status_numbers(pid, "VmSize", "VmRSS", "Threads"))


def kernel_stack_kib() -> int:
    """System-wide KernelStack from /proc/meminfo: every thread has one, outside any RSS."""
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("KernelStack:"):
            return int(line.split()[1])
    return 0


@dataclass(frozen=True)
class Mappings:
    """What /proc/PID/smaps shows of the thread stacks and of glibc's per-thread malloc arenas."""

    stacks: int
    stack_touched_kib: float  # mean Rss of one stack mapping
    arenas: int  # 64 MiB reservations, mostly PROT_NONE: glibc keeps up to 8 per core


def mappings(pid: int, stack_kib: int) -> Mappings:
    """Count anonymous mappings exactly ``stack_kib`` big (stacks) and big PROT_NONE ones (arenas)."""
    resident: list[int] = []
    arenas = 0
    size_kib, anonymous, inaccessible = 0, False, False
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        fields = line.split()
        if "-" in fields[0] and len(fields) >= 5:  # a mapping's header: range, perms, ..., [path]
            anonymous, inaccessible = len(fields) == 5, fields[1] == "---p"
        elif fields[0] == "Size:":
            size_kib = int(fields[1])
            arenas += anonymous and inaccessible and size_kib >= 32 * KIB
        elif fields[0] == "Rss:" and anonymous and size_kib == stack_kib:
            resident.append(int(fields[1]))
    return Mappings(len(resident), sum(resident) / len(resident) if resident else 0.0, arenas)


def hold_with_threads(lab: Lab, connections: int, stack_size: int) -> tuple[Row, Mappings, int]:
    """N connections to thread_holder.py; its memory before and after, its stacks, kernel stacks."""
    reserved = f"{stack_size // KIB} KiB" if stack_size else f"{default_stack_size() >> 20} MiB"
    label = f"threads ({reserved})"
    command = [sys.executable, str(HERE / "thread_holder.py"), "--connections", str(connections)]
    holder = await_listening(spawn("thread-holder", [*command, "--stack-size", str(stack_size)]))
    try:
        before, kernel_before = memory(holder.pid), kernel_stack_kib()
        clients = [socket.create_connection(holder.address) for _ in range(connections)]
        deadline = time.monotonic() + 30
        while memory(holder.pid).threads < connections + 1 and time.monotonic() < deadline:
            time.sleep(0.05)
        time.sleep(0.2)  # let the last threads reach recv()
        after, kernel_after = memory(holder.pid), kernel_stack_kib()
        stacks = mappings(holder.pid, (stack_size or default_stack_size()) // KIB)
        for sock in clients:
            sock.close()
    finally:
        holder.stop()
    lab.say(f"{label}: {after.threads - 1:,} threads holding {connections:,} connections")
    return Row(label, connections, before, after), stacks, kernel_after - kernel_before


def hold_with_epoll(lab: Lab, connections: int) -> Row:
    """The same number of idle MQTT clients (CONNECT + SUBSCRIBE, keepalive 900) on epoll_lt."""
    with running_server("epoll_lt", "--sys-interval", "0") as server:
        assert server.pid is not None
        before = memory(server.pid)
        subscribe = subscribe_packet(b"lab07/idle")  # with CONNECT keepalive 900, as lab 05's clients
        greetings = [connect_packet(f"lab07-{i}") + subscribe for i in range(connections)]
        report = ClientOpener(server.address, greetings, acks_expected=2).run()
        time.sleep(0.2)
        after = memory(server.pid)
        close_all(report.sockets)
    lab.say(f"epoll_lt: {after.threads} thread holding {len(report.opened):,} MQTT clients")
    return Row("epoll_lt (1 thread)", len(report.opened), before, after)


def default_stack_size() -> int:
    soft, _hard = resource.getrlimit(resource.RLIMIT_STACK)
    return soft if soft != resource.RLIM_INFINITY else 8 << 20


def print_table(lab: Lab, rows: list[Row]) -> None:
    lab.say(f"{'holder':<22}{'N':>6}{'VmSize':>11}{'VmRSS':>10}{'virtual/conn':>14}{'RSS/conn':>10}")
    for row in rows:
        lab.say(
            f"{row.holder:<22}{row.connections:>6,}{size(row.after.size_kib):>11}"
            f"{size(row.after.rss_kib):>10}{row.per_connection('size_kib'):>10,.0f} KiB"
            f"{row.per_connection('rss_kib'):>6.1f} KiB"
        )


def size(kib: float) -> str:
    return f"{kib / KIB / KIB:.1f} GiB" if kib >= KIB * KIB else f"{kib / KIB:.1f} MiB"


def the_formula(lab: Lab) -> None:
    lab.step("The notes' rule, and the notes' own figures per thread.")
    lab.say("max threads ≈ (max process memory − heap − reserved OS memory) / stack size")
    for what, count, resident in NOTES:
        lab.say(f"notes: {what}: {resident / 1e6:,.0f} MB RES → {resident / count / KIB:,.0f} KiB each")
    stack = default_stack_size()
    lab.say(f"$ ulimit -s → {stack // KIB:,} (KiB): glibc reserves this per thread stack")
    threads = (3 << 30) // stack
    lab.say(f"a 3 GB (32-bit) address space: 3 GiB / {stack >> 20} MiB = {threads} threads at most")
    lab.say("on 64-bit, 128 TiB of address space: the reservation is no longer the limit")


def limits_here(lab: Lab, per_thread_kib: float) -> None:
    lab.step("What limits threads on this machine instead: the smallest of these.")
    proc = Path("/proc/sys")
    max_map_count = int((proc / "vm/max_map_count").read_text())
    processes, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    limits = {
        "vm.max_map_count / 2 (stack + guard page)": max_map_count // 2,
        "kernel.threads-max": int((proc / "kernel/threads-max").read_text()),
        "kernel.pid_max (each thread takes a TID)": int((proc / "kernel/pid_max").read_text()),
        f"RAM / {per_thread_kib:.0f} KiB (RSS + kernel stack)": int(mem_kib / per_thread_kib),
    }
    if processes != resource.RLIM_INFINITY:
        limits["ulimit -u (threads count as processes)"] = processes
    for what, count in sorted(limits.items(), key=lambda item: item[1]):
        lab.say(f"{count:>10,}  {what}")
    smallest = min(limits, key=limits.__getitem__)
    lab.say(f"here the first wall is {smallest.split(' (')[0]}, long before memory")


def main() -> int:
    args = lab_arguments(__doc__.splitlines()[0]).parse_args()
    sizes = [100, 500] if args.quick else [100, 1000, 2000]
    lab = Lab("Lab 07: threads cost memory")
    the_formula(lab)

    lab.step(f"Hold {' / '.join(f'{n:,}' for n in sizes)} idle connections: a thread each, then epoll_lt.")
    lab.say("$ .venv/bin/python labs/07-threads-cost-memory/thread_holder.py \\")
    lab.say("      --connections N [--stack-size 262144]")
    lab.say("$ .venv/bin/python -m servers.epoll_lt --port 0 --sys-interval 0")
    rows: list[Row] = []
    for connections in sizes:
        thread_row, stacks, kernel_kib = hold_with_threads(lab, connections, 0)
        rows += [thread_row, hold_with_epoll(lab, connections)]
    biggest = sizes[-1]
    small_row, _, _ = hold_with_threads(lab, biggest, SMALL_STACK)
    rows.append(small_row)

    lab.step("Reserved (VmSize) against resident (VmRSS), per connection.")
    print_table(lab, rows)
    thread_row, epoll_row = rows[-3], rows[-2]
    thread_cost = thread_row.per_connection("rss_kib")
    epoll_cost = epoll_row.per_connection("rss_kib")
    explain(lab, stacks, kernel_kib / biggest)
    lab.say(f"per connection: a thread {thread_cost:.1f} KiB resident, epoll_lt {epoll_cost:.1f} KiB")

    stack_kib = default_stack_size() // KIB
    lab.check(
        thread_row.per_connection("size_kib") >= stack_kib,
        "each thread reserves at least its whole stack (ulimit -s), virtually",
    )
    lab.check(
        thread_cost < 0.1 * stack_kib and stacks.stack_touched_kib < 64,
        "but touches a few pages of it: RSS per thread is a sliver of the stack",
    )
    saved = thread_row.per_connection("size_kib") - small_row.per_connection("size_kib")
    lab.check(
        saved > 0.9 * (stack_kib - SMALL_STACK // KIB)
        and small_row.per_connection("rss_kib") < 2 * thread_cost,
        "stack_size(256 KiB) cuts VmSize by ~7.75 MiB a thread; RSS stays put",
    )
    lab.check(3 * epoll_cost < thread_cost, "epoll_lt's RSS per connection is under a third of a thread's")
    limits_here(lab, thread_cost + max(kernel_kib / biggest, 0))
    return lab.finish()


def explain(lab: Lab, stacks: Mappings, kernel_per_thread_kib: float) -> None:
    stack_kib = default_stack_size() // KIB
    touched = stacks.stack_touched_kib
    lab.say(f"smaps: {stacks.stacks:,} stack mappings of {stack_kib:,} KiB, {touched:.0f} KiB touched each;")
    lab.say(f"{stacks.arenas} glibc malloc arenas of 64 MiB reserved too (up to 8 per core)")
    lab.say(f"KernelStack (/proc/meminfo) grew {kernel_per_thread_kib:.0f} KiB per thread: in no RSS")


if __name__ == "__main__":
    sys.exit(main())
