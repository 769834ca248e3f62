"""Lab 02's experiments on the limits themselves, each in a forked child whose limits die with it.

What they measure is what the kernel enforces: open() fails with EMFILE once the fd table is as
big as ``ulimit -n``; the soft limit may not exceed the hard one; raising the hard limit needs
CAP_SYS_RESOURCE, and nothing goes above /proc/sys/fs/nr_open; file-nr counts file handles.
"""

from __future__ import annotations

import errno
import json
import os
import resource
from collections.abc import Callable
from pathlib import Path
from typing import Any

from labs.proc import status_fields

CAP_SYS_RESOURCE = 24  # bit number in the CapEff mask of /proc/PID/status (linux/capability.h)


def in_child(probe: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """Run ``probe`` in a forked child and return what it returned (sent back as JSON on a pipe).

    Forked, so that a limit lowered or an fd table filled there never touches this process.
    The pipe is opened before the fork: a child at its fd limit can still write its answer.
    """
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child
        os.close(read_end)
        try:
            result = probe()
        except BaseException as error:  # report it rather than die silently
            result = {"error": repr(error)}
        os.write(write_end, json.dumps(result).encode())
        os._exit(0)
    os.close(write_end)
    with os.fdopen(read_end) as answer:
        text = answer.read()
    os.waitpid(pid, 0)
    return json.loads(text or '{"error": "the child sent nothing"}')


def open_fd_numbers(highest: int) -> list[int]:
    """Which of fds 0..highest are open, found with fstat(): it needs no new descriptor."""
    found = []
    for fd in range(highest + 1):
        try:
            os.fstat(fd)
        except OSError:
            continue
        found.append(fd)
    return found


def until_emfile(limit: int) -> dict[str, Any]:
    """Set ``ulimit -n limit`` and open /dev/null until open() fails; what failed, and what was open."""
    resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))
    already = len(open_fd_numbers(limit + 16))
    opened: list[int] = []
    try:
        while True:
            opened.append(os.open("/dev/null", os.O_RDONLY))
    except OSError as error:
        failed = errno.errorcode.get(error.errno or 0, str(error.errno))
    numbers = open_fd_numbers(limit + 16)
    return {
        "already": already,
        "opened": len(opened),
        "errno": failed,
        "open": len(numbers),
        "top": numbers[-1],
    }


def set_limit(soft: int, hard: int) -> str:
    """'ok', or why setrlimit refused: Python maps EINVAL and EPERM to ValueError with these texts."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    except ValueError as error:
        return {
            "current limit exceeds maximum limit": "EINVAL",
            "not allowed to raise maximum limit": "EPERM",
        }.get(str(error), str(error))
    except OSError as error:
        return errno.errorcode.get(error.errno or 0, str(error))
    return "ok"


def soft_above_hard() -> dict[str, Any]:
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"result": set_limit(hard + 1, hard)}


def lower_then_raise_hard(lowered: int) -> dict[str, Any]:
    """Lower the hard limit, then try to put it back: a one-way step without CAP_SYS_RESOURCE."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    return {"lower": set_limit(lowered, lowered), "raise": set_limit(hard, hard)}


def above_nr_open() -> dict[str, Any]:
    ceiling = nr_open()
    return {"result": set_limit(ceiling + 1, ceiling + 1)}


def nr_open() -> int:
    return int(Path("/proc/sys/fs/nr_open").read_text())


def has_cap_sys_resource(pid: int | str = "self") -> bool:
    """CAP_SYS_RESOURCE in the effective set: root usually has it; a container may drop it."""
    return bool(int(status_fields(pid)["CapEff"], 16) >> CAP_SYS_RESOURCE & 1)


def file_handles() -> int:
    """First field of /proc/sys/fs/file-nr: file handles allocated in the whole system now."""
    return int(Path("/proc/sys/fs/file-nr").read_text().split()[0])


def handles_added(count: int) -> tuple[int, int]:
    """How much file-nr grew while ``count`` files were open(), then while ``count`` dup()s were.

    open() creates a file handle (struct file) per call; dup() makes one more descriptor for the
    same handle. file-max limits handles, so only the first should move file-nr.
    """
    before = file_handles()
    opened = [os.open("/dev/null", os.O_RDONLY) for _ in range(count)]
    after_open = file_handles()
    for fd in opened:
        os.close(fd)
    single = os.open("/dev/null", os.O_RDONLY)
    before_dup = file_handles()
    duplicates = [os.dup(single) for _ in range(count)]
    after_dup = file_handles()
    for fd in [*duplicates, single]:
        os.close(fd)
    return after_open - before, after_dup - before_dup
