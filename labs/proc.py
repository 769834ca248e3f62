"""What the kernel counts for a process, read from /proc: its I/O calls, page faults and status.

/proc/PID/io counts every read- and write-family call (syscr, syscw) and byte (rchar, wchar),
whatever the fd; /proc/PID/stat counts minor faults, pages the kernel mapped without I/O; and
/proc/PID/status names memory (VmSize reserved, VmRSS resident, in KiB), threads, capabilities.
"""

from __future__ import annotations

from labs.bench.proctree import read_stat


def proc_io(pid: int) -> dict[str, int]:
    """/proc/PID/io: ``rchar`` bytes read, ``syscr`` read calls, ``syscw`` write calls, as counted."""
    with open(f"/proc/{pid}/io") as counters:
        return {name: int(value) for name, value in (line.split(":") for line in counters)}


def minor_faults(pid: int) -> int:
    """Field 10 of /proc/PID/stat: faults the kernel served without I/O, here mapping fresh pages."""
    stat = read_stat(pid)
    if stat is None:
        raise ProcessLookupError(f"no process {pid}")
    return stat.minor_faults


def status_fields(pid: int | str = "self") -> dict[str, str]:
    """/proc/PID/status as {'VmRSS': '1234 kB', 'Threads': '3', 'CapEff': '000001ffffffffff', ...}."""
    with open(f"/proc/{pid}/status") as status:
        return {name: value.strip() for name, _, value in (line.partition(":") for line in status)}


def status_numbers(pid: int, *names: str) -> tuple[int, ...]:
    """The named fields' numbers, in order: ``status_numbers(pid, "VmRSS", "Threads")`` → (KiB, threads)."""
    fields = status_fields(pid)
    return tuple(int(fields[name].split()[0]) for name in names)
