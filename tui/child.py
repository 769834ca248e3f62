"""Child processes the TUI starts (a server, the capture process) must not outlive it."""

from __future__ import annotations

import ctypes
import signal

PR_SET_PDEATHSIG = 1  # include/uapi/linux/prctl.h


def die_with_parent() -> None:
    """preexec_fn: the kernel sends this child SIGTERM when the TUI dies, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
