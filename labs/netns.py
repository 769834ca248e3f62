"""The network namespaces a lab makes for itself: listing them, and deleting one for good.

``ip netns del`` only removes a namespace's name: while a process still runs inside, the
namespace (its interfaces, sockets and sysctls) lives on, nameless. So whatever the lab left
inside is killed first; only the lab's own processes can be there.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess

TIMEOUT = 30.0  # seconds for one ip command


def ip(*arguments: str) -> str:
    """``ip ARGUMENTS``; its standard output."""
    command = ["ip", *arguments]
    return subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT, check=False).stdout


def namespaces() -> list[str]:
    """The names ``ip netns list`` shows."""
    return [line.split()[0] for line in ip("netns", "list").splitlines() if line.strip()]


def delete_namespace(name: str) -> None:
    """Kill any process still inside ``name``, then delete it (a veth end inside goes with it)."""
    if name not in namespaces():
        return
    for pid in ip("netns", "pids", name).split():
        with contextlib.suppress(ProcessLookupError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name)
