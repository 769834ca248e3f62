"""Lab 13: the notes' thread formula, tested: threads ≈ (memory limit − heap − reserved) / stack size.

Field notes §3 give the JVM rule; it holds for any pthread program whose address space is
limited. A child process under RLIMIT_AS starts threads until creation fails, at three stack
sizes, and the counts are compared with the formula's prediction and with each other.
"""

from __future__ import annotations

import errno
import json
import os
import resource
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.lab import Lab, lab_arguments

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
KIB, MIB = 1024, 1 << 20
GUARD_KIB = os.sysconf("SC_PAGESIZE") // KIB  # glibc adds one guard page below each stack
STACK_SIZES = (256 * KIB, 512 * KIB, 2 * MIB)  # halving and quartering: 256 → 512 → 2048 KiB
TOLERANCE = 0.15  # a count within ±15% of the formula's prediction


@dataclass(frozen=True)
class Fill:
    """What fill_threads.py reported for one stack size."""

    limit_kib: int
    stack_kib: int
    baseline_kib: int
    baseline_rss_kib: int
    threads: int
    stopped_by: str
    one_more_stack: str
    failure_kib: int
    failure_rss_kib: int
    mappings_added: int
    joined: int
    seconds: float

    @property
    def predicted(self) -> float:
        """The notes' formula: (memory limit − heap and reserved) / (stack + its guard page)."""
        return (self.limit_kib - self.baseline_kib) / (self.stack_kib + GUARD_KIB)

    @property
    def error(self) -> float:
        return self.threads / self.predicted - 1

    @property
    def per_thread_kib(self) -> float:
        return (self.failure_kib - self.baseline_kib) / max(self.threads, 1)


def read_int(path: str) -> int:
    return int(Path(path).read_text().split()[0])


def kernel_limits() -> dict[str, int]:
    """Each table that caps threads: a thread takes a TID, counts as a task, and maps memory."""
    nproc = resource.getrlimit(resource.RLIMIT_NPROC)[0]
    return {
        "kernel.pid_max": read_int("/proc/sys/kernel/pid_max"),
        "vm.max_map_count": read_int("/proc/sys/vm/max_map_count"),
        "kernel.threads-max": read_int("/proc/sys/kernel/threads-max"),
        "ulimit -u": nproc if nproc != resource.RLIM_INFINITY else 0,
    }


def tasks_running() -> int:
    """Threads on the whole machine now: each holds a TID out of kernel.pid_max."""
    return sum(
        len(os.listdir(f"/proc/{pid}/task"))
        for pid in os.listdir("/proc")
        if pid.isdigit() and os.path.isdir(f"/proc/{pid}/task")
    )


def machine(lab: Lab, limit: int) -> dict[str, int]:
    lab.step("The notes' formula, and what else caps threads on this machine.")
    lab.say("max threads ≈ (max process memory − heap − reserved OS memory) / thread stack size")
    limits = kernel_limits()
    for name, value in limits.items():
        lab.say(f"{value:>10,}  {name}")
    lab.say(f"{tasks_running():>10,}  threads running on the machine now (each holds a TID)")
    lab.say(f"address space limit for the child: {limit // MIB:,} MiB (prlimit --as, i.e. ulimit -v)")
    lab.say(
        f"largest count it allows: {limit // KIB // (STACK_SIZES[0] // KIB + GUARD_KIB):,} threads "
        f"of {STACK_SIZES[0] // KIB} KiB, below every table above:"
    )
    lab.say("the address space must be what stops creation")
    return limits


def fill(stack_size: int, limit: int) -> Fill:
    """fill_threads.py under RLIMIT_AS ``limit``, one malloc arena: its JSON report."""
    command = [
        "prlimit",
        f"--as={limit}",
        "--",
        sys.executable,
        str(HERE / "fill_threads.py"),
        "--stack-size",
        str(stack_size),
    ]
    # One arena: glibc would otherwise reserve 64 MiB of address space per thread-arena, up to
    # 8 per core, and that reservation, not the stacks, would fill the limit first.
    environment = {**os.environ, "MALLOC_ARENA_MAX": "1"}
    completed = subprocess.run(
        command, cwd=REPO_ROOT, env=environment, capture_output=True, text=True, timeout=60, check=False
    )
    lines = [line for line in completed.stdout.splitlines() if line.startswith("{")]
    if completed.returncode != 0 or not lines:
        raise RuntimeError(f"fill_threads.py failed ({completed.returncode}): {completed.stderr[-800:]}")
    return Fill(**json.loads(lines[-1]))


def fill_all(lab: Lab, limit: int) -> list[Fill]:
    lab.step("Start threads until creation fails, at three stack sizes.")
    lab.say(f"$ MALLOC_ARENA_MAX=1 prlimit --as={limit} -- \\")
    lab.say("      .venv/bin/python labs/13-thread-formula/fill_threads.py --stack-size S")
    fills = []
    for stack_size in STACK_SIZES:
        result = fill(stack_size, limit)
        fills.append(result)
        lab.say(
            f"S = {stack_size // KIB:>5} KiB: {result.threads:>6,} threads in {result.seconds:.2f} s, "
            f"then {result.stopped_by}"
        )
    baseline = fills[0].baseline_kib
    lab.say(f"VmSize before the first thread (heap + reserved, the baseline): {baseline / KIB:.1f} MiB")
    return fills


def compare(lab: Lab, fills: list[Fill]) -> None:
    lab.step("The formula against the counts: (limit − baseline) / (stack + guard page).")
    lab.say(
        f"{'stack':>9}{'predicted':>11}{'created':>9}{'off':>8}{'VmSize/thread':>15}{'outside stack':>15}"
    )
    for result in fills:
        outside = result.per_thread_kib - result.stack_kib - GUARD_KIB
        lab.say(
            f"{result.stack_kib:>5} KiB{result.predicted:>11,.0f}{result.threads:>9,}"
            f"{result.error:>+8.1%}{result.per_thread_kib:>11,.0f} KiB{outside:>11.0f} KiB"
        )
    mappings = fills[0].mappings_added / max(fills[0].threads, 1)
    lab.say(f"each thread added {mappings:.1f} mappings: its stack, its guard page, and a 16 KiB chunk")
    lab.say("Python maps for its frames: the 'heap' grows by ~20 KiB a thread, so fewer fit")
    lab.check(
        all(abs(result.error) <= TOLERANCE for result in fills),
        "at each stack size the count is within ±15% of (limit − baseline) / (stack + guard)",
    )
    ratios = []
    for bigger, smaller in zip(fills[1:], fills[:-1], strict=True):
        expected = (bigger.stack_kib + GUARD_KIB) / (smaller.stack_kib + GUARD_KIB)
        measured = smaller.threads / max(bigger.threads, 1)
        ratios.append(measured / expected - 1)
        lab.say(
            f"stack {smaller.stack_kib} → {bigger.stack_kib} KiB (×{bigger.stack_kib // smaller.stack_kib}): "
            f"threads {smaller.threads:,} → {bigger.threads:,}, ÷{measured:.2f} (formula ÷{expected:.2f})"
        )
    lab.check(
        all(abs(ratio) <= TOLERANCE for ratio in ratios),
        "halving the stack doubles the count, quartering it quadruples it (±15%)",
    )


def errno_name(answer: str) -> str:
    """'12 Cannot allocate memory' → 'ENOMEM'; anything else as it is."""
    number = answer.split()[0]
    return errno.errorcode.get(int(number), answer) if number.isdigit() else answer


def cause(lab: Lab, fills: list[Fill], limits: dict[str, int]) -> None:
    lab.step("What stopped creation: the address space, not a kernel table.")
    for result in fills:
        room = result.limit_kib - result.failure_kib
        lab.say(
            f"S = {result.stack_kib:>4} KiB: VmSize at failure {result.failure_kib:,} KiB, "
            f"{room:,} KiB short of the limit; mmap(S): {errno_name(result.one_more_stack)}"
        )
    most = max(result.threads for result in fills)
    per_thread_maps = max(result.mappings_added / max(result.threads, 1) for result in fills)
    walls = {
        "kernel.pid_max": limits["kernel.pid_max"],
        f"vm.max_map_count / {per_thread_maps:.0f}": limits["vm.max_map_count"] / per_thread_maps,
        "kernel.threads-max": limits["kernel.threads-max"],
    }
    lowest = min(walls, key=lambda name: walls[name])
    lab.say(f"most threads at once: {most:,}; the lowest table: {lowest}, {walls[lowest]:,.0f}")
    lab.say("pthread_create gets ENOMEM from mmap and returns EAGAIN; Python raises RuntimeError")
    lab.check(
        all(
            result.stopped_by == "RuntimeError: can't start new thread"
            and errno_name(result.one_more_stack) == "ENOMEM"
            and result.limit_kib - result.failure_kib < result.stack_kib + GUARD_KIB + 16
            for result in fills
        )
        and most < min(walls.values()),
        "creation failed on the address space: RuntimeError, mmap ENOMEM, VmSize at the limit",
    )
    joined = ", ".join(f"{result.joined:,}/{result.threads:,}" for result in fills)
    lab.say(f"each child then joined its threads ({joined}) and exited 0")


def reserved_not_used(lab: Lab, fills: list[Fill]) -> None:
    lab.step("Reserved, not used: the limit counts address space (VmSize), not RAM (VmRSS).")
    lab.say(f"{'stack':>9}{'threads':>9}{'VmSize':>12}{'VmRSS':>11}{'RSS/thread':>12}")
    for result in fills:
        rss_per_thread = (result.failure_rss_kib - result.baseline_rss_kib) / max(result.threads, 1)
        lab.say(
            f"{result.stack_kib:>5} KiB{result.threads:>9,}{result.failure_kib / KIB:>8,.0f} MiB"
            f"{result.failure_rss_kib / KIB:>7,.1f} MiB{rss_per_thread:>8.1f} KiB"
        )
    lab.say("a thread blocked in Event.wait() touches a few pages of its stack; the rest is only")
    lab.say("reserved, yet it counts in full against RLIMIT_AS, and against a 32-bit address space")
    lab.check(
        all(result.failure_rss_kib * 5 < result.failure_kib for result in fills),
        "at the limit, RSS is under a fifth of VmSize: the stacks were reserved, not used",
    )


def main() -> int:
    args = lab_arguments(__doc__.splitlines()[0]).parse_args()
    lab = Lab("Lab 13: the thread formula")
    limit = (256 if args.quick else 1024) * MIB
    limits = machine(lab, limit)
    fills = fill_all(lab, limit)
    compare(lab, fills)
    cause(lab, fills, limits)
    reserved_not_used(lab, fills)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
