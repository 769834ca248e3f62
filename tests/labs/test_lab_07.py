"""Lab 07-threads-cost-memory: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "each thread reserves at least its whole stack (ulimit -s), virtually",
    "but touches a few pages of it: RSS per thread is a sliver of the stack",
    "stack_size(256 KiB) cuts VmSize by ~7.75 MiB a thread; RSS stays put",
    "epoll_lt's RSS per connection is under a third of a thread's",
]


def test_lab_07_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("07-threads-cost-memory", EXPECTED_PASSES)
