"""Lab 13-thread-formula: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes, skip_without

EXPECTED_PASSES = [
    "at each stack size the count is within ±15% of (limit − baseline) / (stack + guard)",
    "halving the stack doubles the count, quartering it quadruples it (±15%)",
    "creation failed on the address space: RuntimeError, mmap ENOMEM, VmSize at the limit",
    "at the limit, RSS is under a fifth of VmSize: the stacks were reserved, not used",
]


def test_lab_13_runs_quick_and_every_self_check_passes() -> None:
    skip_without("prlimit")
    assert_quick_run_passes("13-thread-formula", EXPECTED_PASSES)
