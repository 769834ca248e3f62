"""Compare the I/O models side by side: every server variant and reference broker, measured in one run.

Run ``python labs/compare.py --quick`` for a look in under 90 s, ``python labs/compare.py`` for the
full comparison, ``--selftest`` to see the load generator's own ceiling. The work is done by
``labs/bench/``; this file only parses the command line. Reading the numbers: labs/COMPARE.md.
"""

from __future__ import annotations

import sys
from pathlib import Path

# ``python labs/compare.py`` puts labs/ on sys.path, not the repository root that holds labs/ and mqtt/.
REPO_ROOT = Path(__file__).resolve().parent.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def main(argv: list[str] | None = None) -> int:
    # Imported here, not at the top: generator processes are spawned and re-import this module.
    from labs.bench.cli import run

    return run(sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
