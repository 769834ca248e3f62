"""Lab 02: every connection costs a file descriptor; see the limits, hit one, and survive it.

Field notes §4: ``ulimit -n`` caps one process, ``/proc/sys/fs/file-max`` the whole system
(about 100k per GB of RAM). The kernel's rules are measured in throwaway children; a server
raises its soft limit to the hard one at start, and when accept() still fails with EMFILE,
the spare-fd guard refuses the client instead of spinning.
"""

from __future__ import annotations

import os
import resource
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs``, ``mqtt`` and ``servers`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import probes  # this lab's kernel experiments, beside this file
from grade import SKELETON, grade_student  # this lab's grader, beside this file
from spin import spinning  # the unguarded loop, beside this file (lab 05 runs it too)
from watch import usage_of  # CPU split and sleeps from /proc, beside this file

from labs.bench.clients import ClientOpener, close_all
from labs.bench.targets import REPO_ROOT, Broker, await_listening
from labs.bench.wire import connect_packet, subscribe_packet
from labs.exercise import student_arguments
from labs.lab import Lab, lab_arguments
from mqtt.codec import Decoder, encode
from mqtt.packets import Publish
from servers.telemetry import TelemetryReader
from tui.sources.tcp_states import tcp_sockets

LOW_LIMIT = 64  # RLIMIT_NOFILE, soft and hard, for the server that runs out
TOPIC = "lab02/still-here"
KNOCK_INTERVAL = 0.2  # seconds between extra clients during the CPU window
HANDLES = 2_000  # files opened (then dup()ed) to watch file-nr move


def limits_line(pid: int) -> str:
    """The 'Max open files' row of /proc/PID/limits: soft, hard, units."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return line
    return "(no Max open files row)"


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int, wanted: int, timeout: float = 2.0) -> int:
    """The server's fd count once it reaches ``wanted`` (or after ``timeout``).

    A refused client hears its reset while the server is still putting its spare fd back.
    """
    deadline = time.monotonic() + timeout
    while (count := open_fds(pid)) != wanted and time.monotonic() < deadline:
        time.sleep(0.02)
    return count


def fd_role(fd: int, target: str, listen_inode: int) -> str:
    """What one of a fresh server's descriptors is for, judged from its /proc/PID/fd link."""
    if fd <= 2:
        return ("stdin", "stdout (the 'listening on' line)", "stderr (the log)")[fd]
    if target == f"socket:[{listen_inode}]":
        return "the listening socket (its inode is the LISTEN row's)"
    if target == "anon_inode:[eventpoll]":
        return "the epoll instance"
    if target == "/dev/null":
        return "the spare fd, kept for the day accept() hits EMFILE"
    return "the telemetry socket (unix datagrams)" if target.startswith("socket:") else ""


def start_server(variant: str, soft: int, hard: int, *args: str) -> Broker:
    """``python -m servers.<variant> --port 0`` with RLIMIT_NOFILE set to (soft, hard) before exec.

    Not ``labs.lab.running_server``: that one raises the soft limit to the hard one for every
    broker it starts, and this lab wants to see the server do it itself.
    """

    def set_limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))

    handle, stderr_name = tempfile.mkstemp(prefix=f"lab02-{variant}-", suffix=".err")
    with os.fdopen(handle, "wb") as stderr_file:
        process = subprocess.Popen(
            [sys.executable, "-m", f"servers.{variant}", "--host", "127.0.0.1", "--port", "0", *args],
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            preexec_fn=set_limit,
            start_new_session=True,  # a Ctrl-C in the terminal reaches only this script
        )
    return await_listening(Broker(variant, ("", 0), process, Path(stderr_name)))


def show_limits(lab: Lab) -> None:
    lab.step("This shell's limits: ulimit -n (soft), ulimit -Hn (hard), ulimit -u (processes).")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    processes, _ = resource.getrlimit(resource.RLIMIT_NPROC)
    lab.say(f"$ ulimit -n    → {soft}")
    lab.say(f"$ ulimit -Hn   → {hard}")
    lab.say(f"$ ulimit -u    → {'unlimited' if processes == resource.RLIM_INFINITY else processes}")
    lab.say(f"$ cat /proc/sys/fs/nr_open   → {probes.nr_open():,}  (the most any hard limit may be)")
    enough = "enough" if hard >= 15_100 else "not enough for lab 05 (raise it)"
    lab.say(f"the notes raised -n and -u to 12,000; a hard limit of {hard:,} is {enough}")


def enforce_limits(lab: Lab) -> None:
    lab.step(f"What the kernel enforces, tried in throwaway child processes (ulimit -n {LOW_LIMIT} first).")
    emfile = probes.in_child(lambda: probes.until_emfile(LOW_LIMIT))
    lab.say(
        f"child: ulimit -n {LOW_LIMIT}; it held {emfile.get('already')} fds, opened "
        f"{emfile.get('opened')} more, then open() failed: {emfile.get('errno')}"
    )
    lab.say(f"  open fds then: {emfile.get('open')}, highest fd number {emfile.get('top')}")
    lab.check(
        emfile.get("errno") == "EMFILE"
        and emfile.get("open") == LOW_LIMIT
        and emfile.get("top") == LOW_LIMIT - 1,
        f"at ulimit -n {LOW_LIMIT}, open() fails with EMFILE once fds 0-{LOW_LIMIT - 1} are all open",
    )
    above = probes.in_child(probes.soft_above_hard)
    lab.say(f"child: setrlimit(NOFILE, soft = hard + 1) → {above.get('result')}")
    lab.check(above.get("result") == "EINVAL", "the soft limit may not exceed the hard one: EINVAL")
    privileged = probes.has_cap_sys_resource()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    back = probes.in_child(lambda: probes.lower_then_raise_hard(hard // 2))
    lab.say(
        f"this process has CAP_SYS_RESOURCE: {'yes' if privileged else 'no'} (CapEff in /proc/self/status)"
    )
    lab.say(
        f"child: hard {hard:,} → {hard // 2:,}: {back.get('lower')}; back to {hard:,}: {back.get('raise')}"
    )
    expected = "ok" if privileged else "EPERM"
    lab.check(
        back.get("lower") == "ok" and back.get("raise") == expected,
        f"lowering the hard limit is one-way without CAP_SYS_RESOURCE (here: raising it back → {expected})",
    )
    ceiling = probes.in_child(probes.above_nr_open)
    lab.say(f"child: hard = nr_open + 1 = {probes.nr_open() + 1:,} → {ceiling.get('result')}")
    lab.check(ceiling.get("result") == "EPERM", "no hard limit above nr_open, whoever asks: EPERM")


def show_system(lab: Lab) -> None:
    lab.step("The system-wide ceiling: /proc/sys/fs/file-max and /proc/sys/fs/file-nr.")
    file_max = int(Path("/proc/sys/fs/file-max").read_text())
    mem_kib = next(
        int(line.split()[1])
        for line in Path("/proc/meminfo").read_text().splitlines()
        if line.startswith("MemTotal")
    )
    gib = mem_kib / 2**20
    lab.say(f"$ cat /proc/sys/fs/file-max  → {file_max:,}")
    lab.say(
        f"$ cat /proc/sys/fs/file-nr   → {probes.file_handles():,} open file handles, system-wide, right now"
    )
    lab.say(f"MemTotal {mem_kib:,} KiB = {gib:.1f} GiB → file-max per GiB: {file_max / gib:,.0f}")
    # fs/file_table.c, files_maxfiles_init(): at boot, file-max = RAM in KiB / 10, i.e. about
    # 105k per GiB: the notes' "about 100k per GB".
    boot_default = mem_kib // 10
    verdict = (
        "the kernel's boot default" if abs(file_max - boot_default) < 0.05 * boot_default else "set by sysctl"
    )
    lab.say(
        f"the notes' rule, 100k per GB → {gib * 100_000:,.0f}; the kernel's RAM-KiB/10 → {boot_default:,}"
    )
    lab.say(f"so this machine's file-max is {verdict}")
    opened, duplicated = probes.handles_added(HANDLES)
    lab.say(
        f"open() {HANDLES:,} files → file-nr {opened:+,}; "
        f"dup() one fd {HANDLES:,} times → file-nr {duplicated:+,}"
    )
    # Other processes open and close files meanwhile: a 10% margin either way.
    lab.check(
        abs(opened - HANDLES) <= HANDLES // 10 and abs(duplicated) <= HANDLES // 10,
        "file-nr counts file handles: one per open(), none per dup() of the same file",
    )


def show_raise(lab: Lab) -> None:
    lab.step("Every server raises its soft limit to the hard one at start (servers/listener.py).")
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    lab.say(f"$ (ulimit -Sn 1024; .venv/bin/python -m servers.epoll_lt --port 0) &   # hard stays {hard}")
    server = start_server("epoll_lt", min(1024, hard), hard)
    try:
        lab.say(f"$ grep 'Max open files' /proc/{server.pid}/limits")
        line = limits_line(server.pid or 0)
        lab.say(line)
        soft_now, hard_now = line.split()[3:5]
    finally:
        server.stop()
    lab.check(
        soft_now == hard_now == str(hard), f"started with soft 1024, the server now has soft = hard = {hard}"
    )


def fill_server(lab: Lab, server: Broker, clients: int) -> list[socket.socket]:
    """Connect ``clients`` subscribers; return the ones the server kept."""
    pid = server.pid or 0
    lab.say(f"$ ls -l /proc/{pid}/fd   → the {open_fds(pid)} fds the server holds before any client:")
    listener = next(row.inode for row in tcp_sockets(server.address[1]) if row.state == "LISTEN")
    for fd in sorted(os.listdir(f"/proc/{pid}/fd"), key=int):
        target = os.readlink(f"/proc/{pid}/fd/{fd}")
        lab.say(f"  {fd:>2} → {target:<34} {fd_role(int(fd), target, listener)}")
    greetings = [
        connect_packet(f"lab02-{index}", 900) + subscribe_packet(TOPIC.encode()) for index in range(clients)
    ]
    report = ClientOpener(server.address, greetings, 2, concurrency=16, timeout=5).run()
    kept = report.opened
    lab.say(f"connected {clients} clients: {len(kept)} kept, {clients - len(kept)} refused")
    for reason, count in report.failures.items():
        lab.say(f"  refused: {count} × {reason}")
    held = settled_fds(pid, LOW_LIMIT)
    lab.say(f"$ ls /proc/{pid}/fd | wc -l   → {held}  (the limit is {LOW_LIMIT})")
    return kept


def refusals_logged(server: Broker, expected: int) -> list[str]:
    """The server's 'refused a connection' log lines, once ``expected`` are there (or after 2 s).

    The server closes a refused socket just before it logs, so a client may hear of its
    refusal a moment before the line is written.
    """
    assert server.stderr_path is not None
    deadline = time.monotonic() + 2.0
    while True:
        lines = server.stderr_path.read_text().splitlines()
        logged = [line for line in lines if "refused a connection" in line]
        if len(logged) >= expected or time.monotonic() > deadline:
            return logged
        time.sleep(0.05)


def knock(address: tuple[str, int]) -> bool:
    """One more client at the limit: True when the server closes it, as the guard must."""
    with socket.create_connection(address, timeout=2) as sock:
        sock.sendall(connect_packet("lab02-knock"))
        try:
            return sock.recv(64) == b""
        except ConnectionResetError:
            return True  # closed with our CONNECT unread: the kernel answers with a reset
        except TimeoutError:
            return False


def idle_window(lab: Lab, server: Broker, reader: TelemetryReader, seconds: float) -> tuple[int, int]:
    """Knock every KNOCK_INTERVAL for ``seconds``; the knocks and the server's wait calls meanwhile."""
    pid = server.pid or 0
    reader.read()  # drop what came before the window
    before = usage_of(pid)
    knocks = closed = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        knocks += 1
        closed += knock(server.address)
        time.sleep(KNOCK_INTERVAL)
    used = usage_of(pid).since(before)
    waits = sum(1 for event in reader.read() if event["k"] == "wait")
    lab.say(f"{knocks} more clients knocked in {seconds:.0f} s; the server closed {closed} of them")
    lab.say(f"server CPU (utime+stime from /proc) over the window: {used.describe(seconds)}")
    lab.say(f"epoll_wait calls in the window (from --telemetry): {waits}")
    return knocks, waits


def still_served(lab: Lab, kept: list[socket.socket]) -> bool:
    """One PUBLISH from the last kept client; every kept client (all subscribed) must get it."""
    publisher = kept[-1]
    publisher.setblocking(True)
    publisher.sendall(encode(Publish(TOPIC, b"served at the limit")))
    received = 0
    for sock in kept:
        sock.settimeout(3)
        decoder, packets = Decoder(), []
        try:
            while not any(isinstance(packet, Publish) for packet in packets):
                data = sock.recv(4096)
                if not data:
                    break
                packets.extend(decoder.feed(data))
            else:
                received += 1
        except OSError:
            pass
    lab.say(f"one PUBLISH to {TOPIC}: received by {received} of the {len(kept)} clients kept")
    return received == len(kept)


def at_the_limit(lab: Lab, clients: int, window: float) -> float:
    """Steps 5-7: the guarded server at RLIMIT_NOFILE 64; returns its wait calls per second at the limit."""
    lab.step(f"Start epoll_lt with ulimit -n {LOW_LIMIT} (soft and hard), and connect {clients} clients.")
    lab.say(f"$ (ulimit -n {LOW_LIMIT}; .venv/bin/python -m servers.epoll_lt --port 0 --telemetry) &")
    server = start_server("epoll_lt", LOW_LIMIT, LOW_LIMIT, "--telemetry")
    kept: list[socket.socket] = []
    reader = TelemetryReader(server.address[1])
    try:
        kept = fill_server(lab, server, clients)
        held = settled_fds(server.pid or 0, LOW_LIMIT)
        logged = refusals_logged(server, clients - len(kept))
        lab.say("the server's log (stderr):")
        if logged:
            lab.say(f"  {logged[0].split(' ', 2)[2]}")
            lab.say(f"  ... {len(logged)} such lines in all")
        lab.check(
            held == LOW_LIMIT and logged and len(kept) + len(logged) == clients,
            f"its fd table full ({held} of {LOW_LIMIT}), every other client was refused, none lost",
        )
        lab.check(any("raise ulimit -n" in line for line in logged), "the log says why: 'raise ulimit -n'")

        lab.step(f"Keep knocking for {window:.0f} s at the limit: does the server spin?")
        knocks, waits = idle_window(lab, server, reader, window)
        # A count, not a time: the guarded loop wakes for a knock's connection and its close,
        # a spinning one hundreds of thousands of times a second.
        lab.check(
            waits <= 3 * knocks + 5,
            f"at the limit the loop sleeps: {waits} waits for {knocks} knocks (≤ 3 each + 5)",
        )

        lab.step("The clients it kept are still served: publish from one, all receive.")
        lab.check(still_served(lab, kept), "clients connected before the limit still publish and receive")
    finally:
        close_all(kept)
        reader.close()
        server.stop()
    return waits / window


def spin_demo(lab: Lab, seconds: float, guarded_rate: float) -> None:
    lab.step("The same situation without the spare fd: a bare LT accept loop at its fd limit.")
    lab.say(f"$ .venv/bin/python labs/02-fd-limits/spin.py --nofile {LOW_LIMIT} &   # then connect once")
    with spinning(LOW_LIMIT) as spinner:
        first, before = spinner.counts(), usage_of(spinner.pid)
        started = time.monotonic()
        time.sleep(seconds)
        last, used = spinner.counts(), usage_of(spinner.pid).since(before)
        elapsed = time.monotonic() - started
    wakeups = last["wakeups"] - first["wakeups"]
    failures = last["emfile"] - first["emfile"]
    lab.say(f"its fd table: {last['fds_open']} of {LOW_LIMIT}; one client waiting in the listen queue")
    lab.say(
        f"in {elapsed:.1f} s: epoll_wait returned {wakeups:,} times, "
        f"accept() failed with EMFILE {failures:,} times"
    )
    lab.say(f"CPU: {used.describe(elapsed)}; it slept {used.voluntary_switches} times")
    rate = wakeups / elapsed
    # Counts of wait calls, not times: a spin's count grows with the CPU it gets, but it woke
    # about 340,000 times a second here against the guarded server's few: 100x holds at 1% of a core.
    lab.check(
        rate > 100 * max(1.0, guarded_rate),
        f"unguarded: {rate:,.0f} wake-ups a second vs {guarded_rate:.1f} for the guarded server",
    )


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=100, help=f"clients to throw at ulimit -n {LOW_LIMIT}")
    student_arguments(parser, SKELETON)
    args = parser.parse_args()
    if args.student:
        return grade_student(Path(args.student))
    window = 2.0 if args.quick else 5.0
    lab = Lab("Lab 02: file-descriptor limits and the EMFILE guard")
    show_limits(lab)
    enforce_limits(lab)
    show_system(lab)
    show_raise(lab)
    guarded_rate = at_the_limit(lab, args.clients, window)
    spin_demo(lab, 1.0 if args.quick else 2.0, guarded_rate)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
