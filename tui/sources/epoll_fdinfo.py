"""An epoll instance's interest set, read from outside the process: /proc/PID/fdinfo/EPFD.

The kernel keeps the interest list that epoll_ctl builds; fdinfo prints one line per
watched fd with its event mask (ET and ONESHOT included) and the target file's inode,
which for a socket is the inode that sock_diag reports, so the two views join.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from operator import attrgetter

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


def parse_fdinfo(text: str, known: dict[str, EpollInterest] | None = None) -> list[EpollInterest]:
    """The tfd lines of an eventpoll fdinfo file, in fd order.

    ``known`` maps lines already parsed to their interest (and learns the new ones): a watched
    fd whose line is unchanged is not parsed again. A line holds everything its interest is
    made of, so a cached entry cannot go stale."""
    known = {} if known is None else known
    interests = []
    for line in text.splitlines():
        interest = known.get(line)
        if interest is None:
            match = INTEREST_LINE.match(line)
            if match is None:
                continue  # pos:, flags:, mnt_id: and ino: lines of the epoll file itself
            interest = known[line] = EpollInterest(
                tfd=int(match["tfd"]),
                events=int(match["events"], 16),
                data=int(match["data"], 16),
                inode=int(match["ino"], 16),  # hex here, decimal in socket:[N] and sock_diag
            )
        interests.append(interest)
    return sorted(interests, key=attrgetter("tfd"))


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


def read_fdinfo(pid: int, fd: int) -> str | None:
    """/proc/PID/fdinfo/FD as text, or None if the fd was closed meanwhile."""
    try:
        with open(f"/proc/{pid}/fdinfo/{fd}") as fdinfo:
            return fdinfo.read()
    except FileNotFoundError:
        if not os.path.isdir(f"/proc/{pid}"):
            raise ProcessLookupError(pid) from None
        return None


def epoll_interest(pid: int) -> dict[int, list[EpollInterest]]:
    """epoll fd -> its interest list, for every epoll instance ``pid`` has open."""
    interest: dict[int, list[EpollInterest]] = {}
    for fd, target in sorted(fd_links(pid).items()):
        if target == EVENTPOLL_LINK and (text := read_fdinfo(pid, fd)) is not None:
            interest[fd] = parse_fdinfo(text)  # None: the epoll fd was closed after we listed it
    return interest


class ProcFds:
    """One process's fd -> socket inode map and epoll interest sets, sampled again and again cheaply.

    Reading every /proc/PID/fd link costs a syscall per fd (10,000 for a busy server), yet an
    epoll server's fdinfo already gives each watched fd's inode. So the full readlink scan runs
    only every FULL_SCAN_S (to find new epoll instances and sockets nobody watches) or when an
    epoll fd vanished; in between, only the epoll fds' fdinfo is read, and parsed only when its
    text changed. A server without epoll (select, poll) has nothing cheaper: every sample scans.
    Unchanged results come back as the same objects, which tells the model to skip its join.
    """

    FULL_SCAN_S = 5.0

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._scanned: dict[int, int] = {}  # fd -> socket inode, from the last full scan
        self._not_sockets: set[int] = set()  # fds the last full scan saw as pipes, eventfds, files...
        self._epoll_fds: list[int] = []
        self._texts: dict[int, tuple[str, list[EpollInterest]]] = {}
        self._lines: dict[int, dict[str, EpollInterest]] = {}  # epoll fd -> its lines already parsed
        self._scan_due = 0.0
        self.inodes: dict[int, int] = {}
        self.interest: dict[int, list[EpollInterest]] = {}
        self.full_scans = 0

    def sample(self, now: float) -> tuple[dict[int, int], dict[int, list[EpollInterest]]]:
        """(fd -> socket inode, epoll fd -> interest list); raises ProcessLookupError once it is gone."""
        changed = False
        if not self._epoll_fds or now >= self._scan_due:
            self._full_scan(now)
            changed = True
        interest = {}
        for fd in self._epoll_fds:
            text = read_fdinfo(self.pid, fd)
            if text is None or ("tfd:" not in text and not self._is_epoll(fd)):
                self._scan_due = 0.0  # closed, or the number names another file now: rescan next time
                changed = True
                continue
            cached = self._texts.get(fd)
            if cached is None or cached[0] != text:
                lines = self._lines.setdefault(fd, {})
                if len(lines) > 2 * text.count("\n") + 64:
                    lines.clear()  # forget the lines of fds long closed
                cached = self._texts[fd] = (text, parse_fdinfo(text, lines))
                changed = True
            interest[fd] = cached[1]
        if changed:
            self._merge(interest)
        return self.inodes, self.interest

    def _merge(self, interest: dict[int, list[EpollInterest]]) -> None:
        """Watched fds take their inode from fdinfo (fresh); the rest keep the full scan's."""
        inodes = dict(self._scanned)
        for entries in interest.values():
            for entry in entries:
                if entry.tfd not in self._not_sockets:
                    inodes[entry.tfd] = entry.inode
        if interest != self.interest:
            self.interest = interest
        if inodes != self.inodes:
            self.inodes = inodes

    def _full_scan(self, now: float) -> None:
        links = fd_links(self.pid)
        self._scanned = {
            fd: int(match[1]) for fd, target in links.items() if (match := SOCKET_LINK.fullmatch(target))
        }
        self._not_sockets = set(links) - set(self._scanned)
        self._epoll_fds = sorted(fd for fd, target in links.items() if target == EVENTPOLL_LINK)
        self._texts = {fd: cached for fd, cached in self._texts.items() if fd in self._epoll_fds}
        self._lines = {fd: lines for fd, lines in self._lines.items() if fd in self._epoll_fds}
        self._scan_due = now + self.FULL_SCAN_S if self._epoll_fds else 0.0
        self.full_scans += 1

    def _is_epoll(self, fd: int) -> bool:
        try:
            return os.readlink(f"/proc/{self.pid}/fd/{fd}") == EVENTPOLL_LINK
        except FileNotFoundError:
            return False
