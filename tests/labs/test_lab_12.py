"""Lab 12-persistence-store: runs end to end with ``--quick`` and every self-check passes."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from tests.labs.lab_runner import assert_quick_run_passes

# Part A runs Debian's mosquitto; without it the lab says it skipped and runs Part B only.
MOSQUITTO_PASSES = [
    "mosquitto loads the whole store: RSS grows by at least half the payload, at each size",
    "under the limit: 'Error: Out of memory.', exit status 1, the port never listened",
    "truncated: 'Error: Couldn't open database.', exit status 1, the port never listened",
    "mosquitto.db deleted: it starts under the same limit, and every retained message is gone",
]
BROKER_PASSES = [
    "the kit's broker reads topics only: RSS grows by under a quarter of the payload",
    "under that limit it starts, and serves every retained message, byte for byte",
    "truncated: logged as damaged, moved aside whole, and the broker listens, empty",
]


def has_mosquitto() -> bool:
    return shutil.which("mosquitto") is not None or Path("/usr/sbin/mosquitto").exists()


def test_lab_12_runs_quick_and_every_self_check_passes() -> None:
    expected = (MOSQUITTO_PASSES if has_mosquitto() else []) + BROKER_PASSES
    before = stores_left()
    assert_quick_run_passes("12-persistence-store", expected)
    assert stores_left() <= before  # its temporary directory, stores and all, is gone


def stores_left() -> set[Path]:
    return set(Path(tempfile.gettempdir()).glob("epoll-mqtt-lab12-*"))
