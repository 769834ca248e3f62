"""The machine a comparison ran on, for the JSON ``environment`` block.

Figures from a 2-core VM and a 32-core workstation are not comparable, so the CPU model, core
count, kernel, load average and every broker's version travel with the numbers.
"""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform
import resource
import subprocess
import sys
from typing import Any

from .references import versions
from .targets import REPO_ROOT


def cpu_model() -> str | None:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


def git_commit() -> str | None:
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=10
        )
    except OSError:
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def package_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def collect(argv: list[str], settings: dict[str, Any], baseline: str | None) -> dict[str, Any]:
    return {
        "started_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "argv": argv,
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "kernel": platform.release(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "python_implementation": platform.python_implementation(),
        "loadavg": list(os.getloadavg()),
        "fd_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1],
        "git_commit": git_commit(),
        "versions": {
            **versions(),
            "rich": package_version("rich"),
            "matplotlib": package_version("matplotlib"),
        },
        "baseline": baseline,
        "settings": settings,
    }
