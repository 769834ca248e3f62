"""Labs 01-05 run end to end with ``--quick`` and every self-check passes.

Each lab is run the way a learner runs it, as a script from the repository root. Only the
self-check lines are asserted, by their fixed wording: the figures inside them (fd limits,
microseconds, kilobytes) belong to the machine, not to the lab.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT = 60  # seconds; each lab promises under 30 s with --quick

# Lab folder -> the start of each PASS line it must print (up to the first machine figure).
EXPECTED_PASSES = {
    "01-first-broker": [
        "mosquitto_sub received 123456 from mosquitto_pub through the broker",
        "a fresh snapshot counts the $SYS watcher itself: connected 1",
        "the connected count went up to",
        "the connected count went back down to 1 once they disconnected",
    ],
    "02-fd-limits": [
        "soft ≤ hard ≤ nr_open: anyone may raise soft up to hard",
        "the whole system uses fewer file handles than file-max allows",
        "started with soft 1024, the server now has soft = hard =",
        "every client beyond the limit was refused, none lost",
        "the log says why: 'raise ulimit -n'",
        "at the limit the server stays near idle",
        "clients connected before the limit still publish and receive",
        "unguarded:",
    ],
    "03-select-poll-epoll": [
        "select, poll and epoll each returned exactly the active fd",
        "select() refuses fd",
        "select grows with N:",
        "poll grows with N:",
        "epoll stays flat:",
        "at N = 10,000 epoll is",
    ],
    "04-level-vs-edge": [
        "ET + read-once: no PUBACK within",
        "the unread bytes are visible in the kernel: Recv-Q > 0 on the server's socket",
        "the PINGREQ's edge lets the server read on: PUBACK, then PINGRESP",
        "LT: PUBACK at once; the fd was reported again for the rest",
        "ET draining until EAGAIN: PUBACK at once",
        "ET + read-once: the PUBACK waited for the keepalive PINGREQ",
        "LT: mosquitto_pub is done at once",
        "LT reported the fd in",
        "ET reported the fd in 1 wait",
    ],
    "05-ten-thousand-connections": [
        "all 2,000 clients connected and subscribed",
        "the broker holds 2,001 ESTABLISHED: clients + publisher",
        "idle connections cost the epoll loop no CPU",
        "one publish reached every held client exactly once",
        "select_srv stops near 1,020 clients",
        "the clients select_srv kept are still served",
        "no holder process left running",
        "no connection left open: at most TIME_WAIT remains",
    ],
}
NEEDS = {
    "01-first-broker": ("mosquitto_sub", "mosquitto_pub", "stdbuf"),
    "04-level-vs-edge": ("mosquitto_pub",),
}


def run_quick(lab: str) -> subprocess.CompletedProcess[str]:
    # A wide console, so that rich never wraps a PASS line in two.
    environment = {**os.environ, "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, f"labs/{lab}/run.py", "--quick"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("lab", sorted(EXPECTED_PASSES))
def test_lab_runs_quick_and_every_self_check_passes(lab: str) -> None:
    missing = [tool for tool in NEEDS.get(lab, ()) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    completed = run_quick(lab)
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    passes = [
        line.strip().removeprefix("PASS ") for line in output.splitlines() if line.strip().startswith("PASS ")
    ]
    for claim in EXPECTED_PASSES[lab]:
        assert any(line.startswith(claim) for line in passes), f"no 'PASS {claim}...' line in:\n{output}"
    assert "FAIL" not in output
    assert "all self-checks passed" in output


def test_every_lab_folder_has_a_readme_and_a_run_script() -> None:
    for lab in EXPECTED_PASSES:
        assert (ROOT / "labs" / lab / "README.md").is_file(), lab
        assert (ROOT / "labs" / lab / "run.py").is_file(), lab
