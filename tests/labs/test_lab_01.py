"""Lab 01-first-broker: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

from tests.labs.lab_runner import assert_quick_run_passes, skip_without

EXPECTED_PASSES = [
    "mosquitto_sub received 123456 from mosquitto_pub through the broker",
    "a fresh snapshot counts the $SYS watcher itself: connected 1",
    "the connected count went up to",
    "the connected count went back down to 1 once they disconnected",
]


def test_lab_01_runs_quick_and_every_self_check_passes() -> None:
    skip_without("mosquitto_sub", "mosquitto_pub", "stdbuf")
    assert_quick_run_passes("01-first-broker", EXPECTED_PASSES)
