"""What holds for every lab: each folder has a README, a run script and its own test file, and the
timing rule the labs share asserts only effects that are large and stable.

Each lab's own run, and its exercise when it has one, is tested in ``test_lab_NN.py``.
"""

from __future__ import annotations

import pytest

from labs.lab import TimingComparison
from tests.labs.lab_runner import ROOT


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


def test_every_lab_folder_has_a_readme_a_run_script_and_its_own_test_file() -> None:
    folders = [path for path in (ROOT / "labs").iterdir() if path.is_dir() and path.name[:2].isdigit()]
    assert len(folders) >= 10
    for folder in folders:
        assert (folder / "README.md").is_file(), folder.name
        assert (folder / "run.py").is_file(), folder.name
        assert (ROOT / "tests" / "labs" / f"test_lab_{folder.name[:2]}.py").is_file(), folder.name
