"""Runs a learner's server file so that it cannot borrow the kit's own servers.

Usage: ``python labs/exercise_sandbox.py PATH [server args]``. The file runs as ``__main__``
with the MQTT core (``mqtt/``) importable, as the exercise intends, but with three doors shut:
importing ``servers``, ``labs`` or ``tui`` raises ImportError; reading a file under ``servers/``
is refused; and starting another process (fork, exec, spawn, subprocess) is refused. A "solution"
that imports, execs or launches the kit's own server therefore fails at start, with a message
that says why, instead of passing the grader with the kit's code.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import runpy
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
KIT_PACKAGES = ("servers", "labs", "tui")
PROCESS_EVENTS = ("os.fork", "os.exec", "os.posix_spawn", "os.spawn", "os.system", "subprocess.Popen")


class KitPackagesBlocked(importlib.abc.MetaPathFinder):
    """An import hook consulted before the normal ones: the kit's servers are off limits."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: object = None
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname.split(".")[0] in KIT_PACKAGES:
            raise ImportError(
                f"exercise code may use the MQTT core (mqtt/) but not the kit's own '{fullname}': "
                "the grader checks your I/O loop, so write it yourself"
            )
        return None  # anything else: let the normal finders look


def refuse_kit_reads_and_new_processes(event: str, arguments: tuple[Any, ...]) -> None:
    """An audit hook (PEP 578): the interpreter calls it before each audited action."""
    if event in PROCESS_EVENTS:
        raise RuntimeError(f"exercise code runs in one process; {event} is refused by the grader")
    if event == "open" and arguments and isinstance(arguments[0], (str, bytes, Path)):
        opened = Path(arguments[0].decode() if isinstance(arguments[0], bytes) else arguments[0])
        if (REPO_ROOT / "servers") in opened.resolve().parents:
            raise PermissionError(f"exercise code may not read the kit's server sources ({opened})")


def main(argv: list[str]) -> None:
    if not argv:
        sys.exit("usage: python labs/exercise_sandbox.py PATH [server args]")
    student_file = Path(argv[0]).resolve()
    # As if the learner ran ``python PATH``: their folder first on sys.path, then the repository
    # root for mqtt/; never labs/ (where this file lives).
    sys.path[:] = [str(student_file.parent), str(REPO_ROOT)] + [
        entry for entry in sys.path[1:] if Path(entry or ".").resolve() != REPO_ROOT
    ]
    sys.argv = [str(student_file), *argv[1:]]
    sys.meta_path.insert(0, KitPackagesBlocked())
    sys.addaudithook(refuse_kit_reads_and_new_processes)
    runpy.run_path(str(student_file), run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
