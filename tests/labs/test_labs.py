"""Every lab runs end to end with ``--quick`` and every self-check passes.

Each lab runs the way a learner runs it, as a script from the repository root. Only the
self-check lines are asserted, by their fixed wording (up to the first machine figure): the
figures the labs print (fd limits, microseconds, Send-Q, msgs per CPU-second) belong to the
machine, not to the lab. A lab asserts a timing only when it is large and stable over repeats
(labs/lab.py, TimingComparison); the smaller ones it prints, so they are in no list here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from labs.lab import TimingComparison

ROOT = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT = 60  # seconds; each lab promises under 30 s with --quick

# Lab folder -> the start of each PASS line it must print.
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
        "at N = 10,000 epoll is",
    ],
    "04-level-vs-edge": [
        "ET + read-once: no PUBACK within",
        "the unread bytes are visible in the kernel: Recv-Q > 0 on the server's socket",
        "the PINGREQ's edge lets the server read on: PUBACK, then PINGRESP",
        "LT: PUBACK with no new edge; the fd was reported again for the rest",
        "ET draining until EAGAIN: PUBACK with no new edge",
        "ET + read-once: the PUBACK waited for the keepalive PINGREQ",
        "LT: mosquitto_pub is done at once: PUBACK, no PINGREQ needed",
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
    "06-close-states": [
        "each stalled subscriber's server socket: bytes in Send-Q, persist timer",
        "closed by the server, yet each sits orphaned in FIN_WAIT_1, KBs in Send-Q",
        "still FIN_WAIT_1 after 2 s: nothing times them out soon",
        "reading the backlog, or a reset, is what frees a FIN_WAIT_1 socket",
        "server FIN_WAIT_2, client CLOSE_WAIT: half closed until the client closes",
        "the side that closed first ends in TIME_WAIT, about 60 s on its timer",
    ],
    "07-threads-cost-memory": [
        "each thread reserves at least its whole stack (ulimit -s), virtually",
        "but touches a few pages of it: RSS per thread is a sliver of the stack",
        "stack_size(256 KiB) cuts VmSize by ~7.75 MiB a thread; RSS stays put",
        "epoll_lt's RSS per connection is under a third of a thread's",
    ],
    "08-boss-worker": [
        "both models name their threads boss, worker-1, worker-2",
        "--naive: every lock hold spans the socket I/O (across_recv)",
        "default: no lock hold ever spans a recv",
        "--naive workers hold the lock over 10x longer (median)",
    ],
    "09-writev-vs-join": [
        "both modes delivered the fan-out",
    ],
    "10-reuseport": [
        "two listening sockets share one port",
        "a process without SO_REUSEPORT cannot join them: EADDRINUSE",
        "both processes got connections",
        "all 200 clients are accounted for",
        "B delivered the message to its own subscriber",
        "subscriber-A never got it: two processes are two brokers",
    ],
}
# Lab 06's namespace part runs only as root with iproute2; otherwise it says it skipped.
NAMESPACE_PASSES = [
    "the orphaned FIN_WAIT_2 vanished on tcp_fin_timeout (5 s here), not after 60",
    "a FIN_WAIT_2 whose fd is still open stays: no timer",
    "TIME_WAIT still counts down from 60 s",
    "the host's sysctl is untouched and the namespace is gone",
]
NEEDS = {
    "01-first-broker": ("mosquitto_sub", "mosquitto_pub", "stdbuf"),
    "04-level-vs-edge": ("mosquitto_pub",),
}


def can_use_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def run_quick(lab: str) -> str:
    """Run a lab with --quick; its whole output, after asserting it exited 0."""
    environment = {**os.environ, "COLUMNS": "200"}  # wide, so rich never wraps a PASS line
    completed = subprocess.run(
        [sys.executable, f"labs/{lab}/run.py", "--quick"],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=QUICK_TIMEOUT,
        check=False,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    return output


@pytest.mark.parametrize("lab", sorted(EXPECTED_PASSES))
def test_lab_runs_quick_and_every_self_check_passes(lab: str) -> None:
    missing = [tool for tool in NEEDS.get(lab, ()) if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")
    output = run_quick(lab)
    passes = [
        line.strip().removeprefix("PASS ") for line in output.splitlines() if line.strip().startswith("PASS ")
    ]
    expected = list(EXPECTED_PASSES[lab])
    if lab == "06-close-states" and can_use_namespaces():
        expected += NAMESPACE_PASSES
    for claim in expected:
        assert any(line.startswith(claim) for line in passes), f"no 'PASS {claim}...' line in:\n{output}"
    assert "FAIL" not in output
    assert "all self-checks passed" in output


def test_lab_06_leaves_no_network_namespace_behind() -> None:
    if not can_use_namespaces():
        pytest.skip("network namespaces need root and iproute2")
    listing = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True).stdout
    assert "epoll-mqtt-lab06-" not in listing


@pytest.mark.parametrize(
    ("slower", "faster", "at_least", "asserted"),
    [
        ([700, 750, 3000], [1.0, 1.1, 1.0], 5, True),  # poll vs epoll at N = 10,000, busy machine
        ([1.2, 1.7, 1.9], [1.0, 1.0, 1.0], 5, False),  # lab 09's sendmsg vs join: too small
        ([6.0, 6.2, 6.1], [1.0, 1.0, 1.0], 10, False),  # stable, but under the claim's 10x
        ([40, 400, 4000], [1.0, 1.0, 1.0], 5, False),  # large, but repeats 100x apart: unstable
        ([5.0, 5.0], [0.0, 1.0], 5, False),  # a zero to divide by is no measurement
    ],
)
def test_a_timing_is_asserted_only_when_large_and_stable(
    slower: list[float], faster: list[float], at_least: float, asserted: bool
) -> None:
    assert TimingComparison.of(slower, faster).large_and_stable(at_least) is asserted


def test_every_lab_folder_is_run_here_and_has_a_readme_and_a_run_script() -> None:
    folders = {path.name for path in (ROOT / "labs").iterdir() if path.is_dir() and path.name[:2].isdigit()}
    assert folders == set(EXPECTED_PASSES)
    for lab in folders:
        assert (ROOT / "labs" / lab / "README.md").is_file(), lab
        assert (ROOT / "labs" / lab / "run.py").is_file(), lab
