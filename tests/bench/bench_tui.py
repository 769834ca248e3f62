"""Benchmark: the TUI watching thousands of idle MQTT clients, measured from outside like a user.

For each N: a server variant with --telemetry, N idle clients (CONNECT, long keepalive, then
silence) spread over child processes of at most 5,000 fds, and ``python -m tui --attach PORT`` in a
120x40 tmux session. Measured: the TUI's CPU (utime+stime from /proc, the capture child apart),
live and paused, on the TCP tab; data age, from k clients connecting or resetting at a known
instant (CLOCK_MONOTONIC is system-wide) to the screen showing the new ESTABLISHED count and
the table's new total; key latency, from ``tmux send-keys`` to the screen changing.
Run: ``python -m tests.bench.bench_tui --connections 2000,10000 --repeat 3`` (about 5 minutes).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import resource
import socket
import statistics
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mqtt.codec import encode
from mqtt.packets import Connect

ROOT = Path(__file__).resolve().parents[2]
FDS_PER_CHILD = 5_000
SIZE = (120, 40)
KEYS = {
    "tab 2/1": ("1", "2"),
    "sort s": ("s",),
    "page ]/[": ("]", "["),
    "pagedown": ("NPage",),
    "down": ("down",),
    # "/" opens the prompt, "4" narrows 20,000 rows to port 4's (none), backspace brings them all
    # back, Enter closes the prompt. (Not Esc: a terminal waits to tell Esc from Alt+key, and a
    # key sent within that wait merges with it.)
    "search / 4 ⌫ ⏎": ("/", "4", "BSpace", "Enter"),
}
LINGER_ABORT = struct.pack("ii", 1, 0)  # close() sends RST: no TIME_WAIT left to skew the next run


# ---------------------------------------------------------------- the client swarm (child side)


def swarm_child(port: int, count: int) -> None:
    """Hold ``count`` MQTT connections; obey "open K", "reset K", "close K", "quit" on stdin."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 2 * count + 64), hard))
    held: list[socket.socket] = []
    serial = iter(range(10**9))

    def open_clients(how_many: int) -> float:
        fresh = [socket.create_connection(("127.0.0.1", port)) for _ in range(how_many)]
        connected = time.monotonic()  # both ends exist in the kernel now: ESTABLISHED x 2
        for sock in fresh:
            sock.sendall(encode(Connect(f"bench-{os.getpid()}-{next(serial)}", keepalive=65535)))
        for sock in fresh:
            if sock.recv(4)[:1] != b"\x20":
                raise SystemExit("no CONNACK")
        held.extend(fresh)
        return connected

    def close_clients(how_many: int, abort: bool) -> float:
        for sock in held[:how_many]:
            if abort:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER_ABORT)
            sock.close()
        del held[:how_many]
        return time.monotonic()

    print("ready", open_clients(count), flush=True)
    for line in sys.stdin:
        command, _, argument = line.partition(" ")
        if command == "open":
            print("done", open_clients(int(argument)), flush=True)
        elif command in ("reset", "close"):
            print("done", close_clients(int(argument), abort=command == "reset"), flush=True)
        else:
            break
    close_clients(len(held), abort=True)


class Swarm:
    """N idle clients over several child processes; commands go to all children at once."""

    def __init__(self, port: int, count: int) -> None:
        shares = [FDS_PER_CHILD] * (count // FDS_PER_CHILD) + (
            [count % FDS_PER_CHILD] if count % FDS_PER_CHILD else []
        )
        self.children = [
            subprocess.Popen(
                [sys.executable, "-m", "tests.bench.bench_tui", "--swarm-child", str(port), str(share)],
                cwd=ROOT,
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
            )
            for share in shares
        ]
        self.shares = shares
        self._replies()

    def _replies(self) -> float:
        """The latest completion instant the children report (their last connect or close)."""
        instants = []
        for child in self.children:
            assert child.stdout is not None
            reply = child.stdout.readline().split()
            if len(reply) != 2:
                raise RuntimeError(f"swarm child {child.pid} failed")
            instants.append(float(reply[1]))
        return max(instants)

    def command(self, verb: str, total: int) -> float:
        """Split ``total`` clients over the children, run ``verb`` on them; the instant it finished."""
        each = -(-total // len(self.children))
        for child in self.children:
            assert child.stdin is not None
            child.stdin.write(f"{verb} {each}\n")
            child.stdin.flush()
        return self._replies()

    def stop(self) -> None:
        for child in self.children:
            with contextlib.suppress(OSError):
                assert child.stdin is not None
                child.stdin.close()
        for child in self.children:
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


# ---------------------------------------------------------------- the TUI in tmux


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def children_of(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                    found.append(int(entry))
    return found


class TuiSession:
    """``python -m tui --attach PORT`` in a detached tmux session of 120x40."""

    def __init__(self, port: int, source_root: Path, extra: str = "") -> None:
        self.name = f"bench-tui-{os.getpid()}"
        tui = f"{sys.executable} -m tui --attach {port} {extra}"
        command = f"cd {source_root} && TERM=xterm-256color exec {tui}"
        width, height = SIZE
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", self.name, "-x", str(width), "-y", str(height), command],
            check=True,
        )
        self._tmux("set-option", "-t", self.name, "remain-on-exit", "on")  # a crash's traceback stays
        pane = self._tmux("list-panes", "-t", self.name, "-F", "#{pane_pid}").strip()
        self.pid = int(pane)

    def _tmux(self, *arguments: str) -> str:
        return subprocess.run(["tmux", *arguments], check=True, capture_output=True, text=True).stdout

    def screen(self) -> str:
        return self._tmux("capture-pane", "-p", "-e", "-t", self.name)

    def plain(self) -> str:
        return self._tmux("capture-pane", "-p", "-t", self.name)

    def press(self, key: str) -> None:
        self._tmux("send-keys", "-t", self.name, key)

    def check_alive(self, phase: str) -> None:
        """Stop the run with the TUI's last screen (its traceback) if it died."""
        if self._tmux("display-message", "-p", "-t", self.name, "#{pane_dead}").strip() == "1":
            raise RuntimeError(f"the TUI died during {phase}; its last screen:\n{self.plain()}")

    def helpers(self) -> list[int]:
        return children_of(self.pid)

    def close(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self._tmux("kill-session", "-t", self.name)


def poll(condition: Callable[[], object], timeout: float, interval: float = 0.003) -> float | None:
    """Seconds until ``condition()`` held (monotonic clock), or None after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return time.monotonic()
        time.sleep(interval)  # polling interval; the deadline decides
    return None


def established(text: str) -> int | None:
    """The ESTABLISHED count in the TCP tab's legend (the state-machine drawing may show it too)."""
    counts = [int(n.replace(",", "")) for n in re.findall(r"ESTABLISHED[ \t]+(\d[\d,]*)", text)]
    return max(counts) if counts else None


def table_total(text: str) -> int | None:
    match = re.search(r"\bof (\d[\d,]*)", text)
    return int(match[1].replace(",", "")) if match else None


# ---------------------------------------------------------------- measurements


@dataclass
class Results:
    cpu_live: list[float] = field(default_factory=list)
    cpu_paused: list[float] = field(default_factory=list)
    helpers_live: list[float] = field(default_factory=list)
    count_age: list[float] = field(default_factory=list)
    table_age: list[float] = field(default_factory=list)
    close_all_age: list[float] = field(default_factory=list)
    keys: dict[str, list[float]] = field(default_factory=dict)
    misses: dict[str, int] = field(default_factory=dict)


def cpu_window(tui: TuiSession, seconds: float) -> tuple[float, float]:
    """(TUI %, its helper processes' %) of one core over ``seconds``."""
    helpers = tui.helpers()
    before = cpu_seconds(tui.pid), sum(cpu_seconds(pid) for pid in helpers)
    started = time.monotonic()
    time.sleep(seconds)  # the measurement window itself
    elapsed = time.monotonic() - started
    after = cpu_seconds(tui.pid), sum(cpu_seconds(pid) for pid in helpers if os.path.exists(f"/proc/{pid}"))
    return 100 * (after[0] - before[0]) / elapsed, 100 * (after[1] - before[1]) / elapsed


def data_age(tui: TuiSession, swarm: Swarm, verb: str, k: int, results: Results) -> int:
    """k clients connect (or reset) at a known instant; time until the counts and the table show it.

    Returns k rounded up to a multiple of the number of children (each takes an equal share)."""
    text = tui.plain()
    before, total = established(text), table_total(text)
    if before is None or total is None:
        raise RuntimeError(f"cannot read counts from the screen:\n{text}")
    k = -(-k // len(swarm.children)) * len(swarm.children)
    sign = 1 if verb == "open" else -1
    instant = swarm.command(verb, k)
    wanted_count, wanted_total = before + sign * 2 * k, total + sign * 2 * k
    seen: dict[str, float] = {}

    def shown() -> bool:
        screen = tui.plain()
        now = time.monotonic()
        if "count" not in seen and established(screen) == wanted_count:
            seen["count"] = now
        if "table" not in seen and table_total(screen) == wanted_total:
            seen["table"] = now
        return len(seen) == 2

    poll(shown, timeout=20)
    results.count_age.append(seen.get("count", float("inf")) - instant)
    results.table_age.append(seen.get("table", float("inf")) - instant)
    return k


def key_latency(tui: TuiSession, name: str, keys: tuple[str, ...], presses: int, results: Results) -> None:
    """Press each key in turn; time until anything below the status line changes (colours too)."""
    for index in range(presses):
        key = keys[index % len(keys)]
        body = tui.screen().split("\n", 1)[1]
        sent = time.monotonic()
        tui.press(key)
        changed = poll(lambda body=body: tui.screen().split("\n", 1)[1] != body, timeout=1.0)
        if changed is None:
            results.misses[name] = results.misses.get(name, 0) + 1
        else:
            results.keys.setdefault(name, []).append(changed - sent)
        time.sleep(0.15)  # let the frame after the key settle before the next press
    # End where the cycle started (the search prompt closed), whatever the number of presses.
    for key in keys[presses % len(keys) :] if presses % len(keys) else ():
        body = tui.screen().split("\n", 1)[1]
        tui.press(key)
        poll(lambda body=body: tui.screen().split("\n", 1)[1] != body, timeout=1.0)
        time.sleep(0.15)


def settle(tui: TuiSession, wanted: int, what: str) -> None:
    if poll(lambda: established(tui.plain()) == wanted, timeout=60, interval=0.1) is None:
        raise RuntimeError(f"the TUI never showed {wanted:,} ESTABLISHED ({what}):\n{tui.plain()}")


def measure(count: int, arguments: argparse.Namespace) -> Results:
    results = Results()
    with server_on_free_port(arguments.variant) as port:
        swarm = Swarm(port, count)
        tui = TuiSession(port, arguments.source_root, arguments.tui_args)
        try:
            tui.press("2")
            settle(tui, 2 * count, "after start")
            k = max(50, count // 10)
            for _ in range(arguments.repeat):
                live, helpers = cpu_window(tui, arguments.window)
                results.cpu_live.append(live)
                results.helpers_live.append(helpers)
                tui.press("p")
                poll(lambda: "PAUSED" in tui.plain(), timeout=5)
                results.cpu_paused.append(cpu_window(tui, arguments.window)[0])
                tui.press("p")
                poll(lambda: "PAUSED" not in tui.plain(), timeout=5)
                k = data_age(tui, swarm, "reset", k, results)
                settle(tui, 2 * (count - k), "after the reset")
                data_age(tui, swarm, "open", k, results)
                settle(tui, 2 * count, "after reconnecting")
                tui.check_alive("the data-age rounds")
                for name, keys in KEYS.items():
                    key_latency(tui, name, keys, arguments.presses, results)
                    tui.check_alive(f"the key {name}")
                tui.press("2")
                tui.press("Home")
                settle(tui, 2 * count, "back on the TCP tab")
            before = 2 * count
            instant = swarm.command("close", count)  # the case: all clients close at once
            shown = poll(lambda: (established(tui.plain()) or 0) <= before - 2 * count, timeout=30)
            tui.check_alive("the close of every client")
            results.close_all_age.append((shown or float("inf")) - instant)
            if shown is None:
                print(f"all-close never showed; before {before:,}; screen:\n{tui.plain()}", file=sys.stderr)
        finally:
            tui.close()
            swarm.stop()
    return results


@contextlib.contextmanager
def server_on_free_port(variant: str) -> Iterator[int]:
    command = [sys.executable, "-m", f"servers.{variant}", "--port", "0", "--telemetry"]
    server = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert server.stdout is not None
        line = server.stdout.readline()
        match = re.match(r"listening on \S+:(\d+)", line)
        if not match:
            raise RuntimeError(f"{variant} did not start: {line!r}")
        yield int(match[1])
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


# ---------------------------------------------------------------- the report


def spread(values: list[float], scale: float = 1.0, unit: str = "") -> str:
    finite = [value * scale for value in values if value != float("inf")]
    lost = len(values) - len(finite)
    if not finite:
        return "never" if values else "-"
    text = f"{statistics.median(finite):.0f}{unit} ({min(finite):.0f}–{max(finite):.0f})"
    return text + (f" +{lost} never" if lost else "")


def report(all_results: dict[int, Results], arguments: argparse.Namespace) -> None:
    rows: list[tuple[str, ...]] = []
    for count, results in all_results.items():
        rows.append((f"{count:,}", "TUI CPU live, TCP tab", spread(results.cpu_live, unit=" %"), "≤ 10 %"))
        rows.append((f"{count:,}", "TUI CPU paused", spread(results.cpu_paused, unit=" %"), ""))
        rows.append((f"{count:,}", "capture child CPU live", spread(results.helpers_live, unit=" %"), ""))
        rows.append((f"{count:,}", "state-count age", spread(results.count_age, 1000, " ms"), "≤ 500 ms"))
        rows.append((f"{count:,}", "table age", spread(results.table_age, 1000, " ms"), "≤ 1000 ms"))
        rows.append(
            (f"{count:,}", "all close: count age", spread(results.close_all_age, 1000, " ms"), "≤ 500 ms")
        )
        for name in KEYS:
            misses = results.misses.get(name, 0)
            value = spread(results.keys.get(name, []), 1000, " ms") + (
                f", {misses} no change" if misses else ""
            )
            rows.append((f"{count:,}", f"key {name}", value, "≤ 100 ms"))
    print(f"\nvariant {arguments.variant}, {arguments.repeat} repeats, {arguments.window:.0f} s CPU windows;")
    print("median (min–max) over all samples; 'never' = not shown within the timeout\n")
    widths = [max(len(row[column]) for row in rows) for column in range(4)]
    for row in [("N", "measure", "median (min–max)", "target"), *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)))


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--swarm-child":
        swarm_child(int(sys.argv[2]), int(sys.argv[3]))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--connections", default="2000,10000", help="comma-separated N (default 2000,10000)")
    parser.add_argument("--repeat", type=int, default=3, help="measurement rounds per N (default 3)")
    parser.add_argument("--window", type=float, default=15.0, help="CPU window, seconds (default 15)")
    parser.add_argument("--presses", type=int, default=10, help="presses per key and round (default 10)")
    parser.add_argument("--variant", default="epoll_lt", help="server variant (default epoll_lt)")
    parser.add_argument("--source-root", type=Path, default=ROOT, help="run the TUI from this tree")
    parser.add_argument("--tui-args", default="", help='more flags for the TUI, e.g. "--no-capture"')
    arguments = parser.parse_args()
    all_results = {}
    for count in (int(n) for n in arguments.connections.split(",")):
        print(f"N = {count:,}: measuring…", file=sys.stderr, flush=True)
        all_results[count] = measure(count, arguments)
    report(all_results, arguments)


if __name__ == "__main__":
    main()
