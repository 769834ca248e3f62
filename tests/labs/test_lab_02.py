"""Lab 02-fd-limits: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes

EXPECTED_PASSES = [
    "soft ≤ hard ≤ nr_open: anyone may raise soft up to hard",
    "the whole system uses fewer file handles than file-max allows",
    "started with soft 1024, the server now has soft = hard =",
    "every client beyond the limit was refused, none lost",
    "the log says why: 'raise ulimit -n'",
    "at the limit the server stays near idle",
    "clients connected before the limit still publish and receive",
    "unguarded:",
]


def test_lab_02_runs_quick_and_every_self_check_passes() -> None:
    assert_quick_run_passes("02-fd-limits", EXPECTED_PASSES)
