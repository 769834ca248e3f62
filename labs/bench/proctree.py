"""A broker's cost read from /proc: CPU time over its whole process tree, and its resident size.

Some brokers are more than one process (a supervisor and workers, a helper it spawns), so CPU
is summed over the broker's pid and every descendant, found through the kernel's
``/proc/PID/task/TID/children`` lists (or by scanning every ``/proc/*/stat`` for parent pids
where that file does not exist). Each process counts utime + stime, plus cutime + cstime: the
time of children it has already reaped, which would otherwise vanish from the sum the moment
a child exits. The main process keeps nanosecond precision from schedstat; descendants are
counted in clock ticks (10 ms), which is plenty for helpers. Resident size is the main
process's, read exactly from ``smaps_rollup`` where the kernel allows it.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


@dataclass(frozen=True)
class StatFields:
    """The few fields of one ``/proc/PID/stat`` the benchmark and the labs need (CPU in seconds)."""

    parent_pid: int
    minor_faults: int  # pages the kernel mapped without I/O (minflt): e.g. fresh malloc'd memory
    own_cpu_seconds: float  # utime + stime, all threads
    reaped_cpu_seconds: float  # cutime + cstime: children this process has waited for
    rss_bytes: int


def read_stat(pid: int) -> StatFields | None:
    """One process's stat fields; None once it has gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat_file:
            stat = stat_file.read()
    except OSError:
        return None
    fields = stat[stat.rindex(b")") + 2 :].split()  # the command name may contain spaces
    # Fields after the name, counted from 0: ppid 1, minflt 7, utime 11, stime 12, cutime 13,
    # cstime 14, rss 21.
    return StatFields(
        parent_pid=int(fields[1]),
        minor_faults=int(fields[7]),
        own_cpu_seconds=(int(fields[11]) + int(fields[12])) / CLOCK_TICKS,
        reaped_cpu_seconds=(int(fields[13]) + int(fields[14])) / CLOCK_TICKS,
        rss_bytes=int(fields[21]) * PAGE_SIZE,
    )


def resident_bytes(pid: int) -> int | None:
    """Exact resident size from ``smaps_rollup`` (the kernel walks the page tables); None if unreadable.

    The RSS in ``/proc/PID/stat`` is a counter the kernel updates in per-CPU batches, so it can
    be off by a hundred KB or so: too coarse for "RSS per connection" over a thousand clients.
    """
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as rollup:
            for line in rollup:
                if line.startswith(b"Rss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def children(pid: int) -> list[int] | None:
    """Direct children of ``pid`` from every thread's children list; None where the kernel has none."""
    try:
        tasks = os.listdir(f"/proc/{pid}/task")
    except OSError:
        return []
    found: list[int] = []
    for task in tasks:
        try:
            with open(f"/proc/{pid}/task/{task}/children", "rb") as listing:
                found += [int(child) for child in listing.read().split()]
        except FileNotFoundError:
            return None  # CONFIG_PROC_CHILDREN is off: the caller scans parent pids instead
        except OSError:
            continue  # the thread exited meanwhile
    return found


def children_by_scan(pid: int) -> list[int]:
    """Direct children of ``pid`` found by reading every process's parent pid."""
    found = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            stat = read_stat(int(name))
            if stat and stat.parent_pid == pid:
                found.append(int(name))
    return found


def descendants(pid: int) -> list[int]:
    """Every live descendant of ``pid`` (children, grandchildren, ...), not ``pid`` itself."""
    found: list[int] = []
    pending = [pid]
    while pending:
        parent = pending.pop()
        direct = children(parent)
        if direct is None:
            direct = children_by_scan(parent)
        found += direct
        pending += direct
    return found


def task_runtimes(pid: int) -> dict[int, int]:
    """Nanoseconds on CPU of each thread (first field of schedstat); empty where unavailable."""
    runtimes = {}
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/schedstat", "rb") as schedstat:
                runtimes[int(task)] = int(schedstat.read().split()[0])
    except (OSError, ValueError, IndexError):
        return {}
    return runtimes


@dataclass(frozen=True)
class ProcessSample:
    """CPU and memory of a broker's process tree at one instant."""

    own_cpu_seconds: float  # the main process: utime + stime over all its threads, in 10 ms ticks
    tree_cpu_seconds: float  # descendants' utime + stime and every reaped child's, in ticks
    # RSS is the main process's only: forked workers share most pages with it, so a sum over the
    # tree would count the same memory several times.
    rss_bytes: int
    task_runtime_ns: dict[int, int] = field(default_factory=dict)  # main process, per thread
    descendant_pids: tuple[int, ...] = ()

    @property
    def cpu_seconds(self) -> float:
        """Everything the tree has used since it started, in clock-tick precision."""
        return self.own_cpu_seconds + self.tree_cpu_seconds

    def cpu_since(self, earlier: ProcessSample) -> float:
        """CPU seconds the whole tree used between two samples.

        The main process counts to the nanosecond when none of its threads came or went:
        ``/proc/PID/task/*/schedstat`` holds each thread's run time in ns, the same time that
        utime + stime report in 10 ms ticks, but a thread that exits takes its ns with it, so
        then the tick figure (which keeps dead threads' time) is used instead.
        """
        return self._own_cpu_since(earlier) + (self.tree_cpu_seconds - earlier.tree_cpu_seconds)

    def _own_cpu_since(self, earlier: ProcessSample) -> float:
        ticks = self.own_cpu_seconds - earlier.own_cpu_seconds
        if not earlier.task_runtime_ns or earlier.task_runtime_ns.keys() - self.task_runtime_ns.keys():
            return ticks
        precise = sum(self.task_runtime_ns.values()) - sum(earlier.task_runtime_ns.values())
        return precise / 1e9 if abs(precise / 1e9 - ticks) < 0.05 + 0.05 * ticks else ticks


def sample_process(pid: int) -> ProcessSample | None:
    """Read a broker's CPU time (whole tree) and resident size (main process); None once it has gone."""
    main = read_stat(pid)
    if main is None:
        return None
    family = descendants(pid)
    tree = main.reaped_cpu_seconds
    for child in family:
        stat = read_stat(child)
        if stat:  # a child that exited since the walk is in its parent's reaped time, or soon will be
            tree += stat.own_cpu_seconds + stat.reaped_cpu_seconds
    rss = resident_bytes(pid) or main.rss_bytes
    return ProcessSample(main.own_cpu_seconds, tree, rss, task_runtimes(pid), tuple(family))
