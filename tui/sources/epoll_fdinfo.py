"""An epoll instance's interest set, read from outside the process: /proc/PID/fdinfo/EPFD.

The kernel keeps the interest list that epoll_ctl builds; fdinfo prints one line per
watched fd with its event mask (ET and ONESHOT included) and the target file's inode,
which for a socket is the inode that sock_diag reports, so the two views join.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

EVENTPOLL_LINK = "anon_inode:[eventpoll]"
# include/uapi/linux/eventpoll.h; the rarely used RDNORM/RDBAND/WRNORM/WRBAND/MSG are named too.
EVENT_NAMES = (
    (0x001, "EPOLLIN"),
    (0x002, "EPOLLPRI"),
    (0x004, "EPOLLOUT"),
    (0x008, "EPOLLERR"),
    (0x010, "EPOLLHUP"),
    (0x040, "EPOLLRDNORM"),
    (0x080, "EPOLLRDBAND"),
    (0x100, "EPOLLWRNORM"),
    (0x200, "EPOLLWRBAND"),
    (0x400, "EPOLLMSG"),
    (0x2000, "EPOLLRDHUP"),
    (1 << 28, "EPOLLEXCLUSIVE"),
    (1 << 29, "EPOLLWAKEUP"),
    (1 << 30, "EPOLLONESHOT"),
    (1 << 31, "EPOLLET"),
)
# fs/eventpoll.c ep_show_fdinfo(): "tfd: %8d events: %8x data: %16llx  pos:%lli ino:%lx sdev:%x"
INTEREST_LINE = re.compile(
    r"tfd:\s*(?P<tfd>\d+)\s+events:\s*(?P<events>[0-9a-f]+)\s+data:\s*(?P<data>[0-9a-f]+)"
    r".*?\bino:(?P<ino>[0-9a-f]+)"
)
SOCKET_LINK = re.compile(r"socket:\[(\d+)\]")


@dataclass(frozen=True, slots=True)
class EpollInterest:
    """One fd watched by an epoll instance.

    ``events`` is the mask as the kernel stores it: epoll_ctl always adds EPOLLERR and
    EPOLLHUP, and after an EPOLLONESHOT event fires only the flag bits remain until the
    next EPOLL_CTL_MOD re-arms it. ``data`` is the 64-bit epoll_data; Python's
    select.epoll stores the fd there, where C programs often store a pointer.
    ``inode`` is the watched file's inode (a socket's matches TcpSocket.inode).
    """

    tfd: int
    events: int
    data: int
    inode: int

    @property
    def event_names(self) -> tuple[str, ...]:
        return decode_events(self.events)


def decode_events(mask: int) -> tuple[str, ...]:
    """Flag names set in an epoll event mask, low bits first; unknown bits as hex."""
    names = tuple(name for bit, name in EVENT_NAMES if mask & bit)
    known = sum(bit for bit, _ in EVENT_NAMES)
    return names + ((hex(mask & ~known),) if mask & ~known else ())


def parse_fdinfo(text: str) -> list[EpollInterest]:
    """The tfd lines of an eventpoll fdinfo file, in fd order."""
    interests = [
        EpollInterest(
            tfd=int(match["tfd"]),
            events=int(match["events"], 16),
            data=int(match["data"], 16),
            inode=int(match["ino"], 16),  # hex here, decimal in socket:[N] and sock_diag
        )
        for match in INTEREST_LINE.finditer(text)
    ]
    return sorted(interests, key=lambda interest: interest.tfd)


def fd_links(pid: int) -> dict[int, str]:
    """fd -> readlink target for every open fd of ``pid``; fds closed meanwhile are skipped."""
    directory = f"/proc/{pid}/fd"
    links: dict[int, str] = {}
    try:
        entries = os.listdir(directory)
    except FileNotFoundError:
        raise ProcessLookupError(pid) from None
    for entry in entries:
        try:
            links[int(entry)] = os.readlink(f"{directory}/{entry}")
        except FileNotFoundError:
            continue  # closed between listdir and readlink
    return links


def socket_inodes(pid: int) -> dict[int, int]:
    """fd -> socket inode for each socket ``pid`` holds (readlink gives 'socket:[INODE]')."""
    inodes = {}
    for fd, target in fd_links(pid).items():
        match = SOCKET_LINK.fullmatch(target)
        if match:
            inodes[fd] = int(match[1])
    return inodes


def epoll_interest(pid: int) -> dict[int, list[EpollInterest]]:
    """epoll fd -> its interest list, for every epoll instance ``pid`` has open."""
    interest: dict[int, list[EpollInterest]] = {}
    for fd, target in sorted(fd_links(pid).items()):
        if target != EVENTPOLL_LINK:
            continue
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as fdinfo:
                interest[fd] = parse_fdinfo(fdinfo.read())
        except FileNotFoundError:
            continue  # the epoll fd was closed after we listed it
    return interest
