"""Runs a lab the way a learner does, as a script from the repository root, and reads its verdict.

Only the self-check lines are asserted, by their fixed wording (up to the first machine figure):
the figures the labs print (fd limits, microseconds, Send-Q, msgs per CPU-second) belong to the
machine, not to the lab. Each lab's expected PASS lines live in its own ``test_lab_NN.py``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
QUICK_TIMEOUT = 60  # seconds; each lab promises under 30 s with --quick


def lab_folder(number: str) -> str:
    """The folder name of lab ``number`` ("04" -> "04-level-vs-edge")."""
    (folder,) = [path.name for path in (ROOT / "labs").glob(f"{number}-*") if path.is_dir()]
    return folder


def skip_without(*tools: str) -> None:
    missing = [tool for tool in tools if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}")


def can_use_namespaces() -> bool:
    return os.geteuid() == 0 and shutil.which("ip") is not None


def run_lab(lab: str, *arguments: str, timeout: float = QUICK_TIMEOUT) -> subprocess.CompletedProcess[str]:
    """``python labs/<lab>/run.py ARGS`` from the repository root, its output captured."""
    environment = {**os.environ, "COLUMNS": "200"}  # wide, so rich never wraps a PASS line
    return subprocess.run(
        [sys.executable, f"labs/{lab}/run.py", *arguments],
        cwd=ROOT,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def pass_lines(output: str) -> list[str]:
    stripped = (line.strip() for line in output.splitlines())
    return [line.removeprefix("PASS ") for line in stripped if line.startswith("PASS ")]


def assert_quick_run_passes(lab: str, expected: Sequence[str]) -> str:
    """Run ``lab`` with --quick; assert it exits 0 and prints a PASS line starting with each claim."""
    completed = run_lab(lab, "--quick")
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output
    passes = pass_lines(output)
    for claim in expected:
        assert any(line.startswith(claim) for line in passes), f"no 'PASS {claim}...' line in:\n{output}"
    assert "FAIL" not in output
    assert "all self-checks passed" in output
    return output
