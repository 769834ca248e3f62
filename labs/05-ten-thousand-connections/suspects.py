"""Lab 05's second half: why did the notes' idle broker take 100% of a core? Two suspects, measured.

Suspect 1, the EMFILE spin: at its fd limit, a loop with no spare fd finds the listener
readable and accept() failing, forever (lab 02's ``spin.py``, run as it is). Suspect 2,
mosquitto 1.x's own loop: poll() with a 100 ms timeout and a walk over every client on every
wake (``mosquitto1_loop.py``). Against them, loops that block while nothing happens: poll_srv
and epoll_lt. Each is measured the same way, from outside: CPU ticks split into user and
system, sleeps (voluntary context switches), and, for the poll loop, its poll() calls by strace.
"""

from __future__ import annotations

import re
import shutil
import time
from dataclasses import dataclass

from crowd import crowd  # beside this file
from rich.table import Table
from spin import spinning  # lab 02's unguarded loop (labs/02-fd-limits is on sys.path)
from watch import Usage, usage_of  # lab 02's outside view of a process

from labs.bench.progress import NullUi
from labs.lab import Lab, console
from labs.tracing import strace_lines

SPIN_LIMIT = 64  # the spinner's RLIMIT_NOFILE: any limit will do, the spin does not depend on it
# "poll([{fd=3, events=POLLIN}, ...], 10002, 100) = 0 (Timeout)": fds handed over, timeout, result
POLL_CALL = re.compile(r"^poll\(\[.*\], (\d+), (-?\d+)\)\s+= (\d+)")
NOTES = "the notes' mosquitto"


@dataclass(frozen=True)
class Row:
    """One line of the comparison table."""

    subject: str
    clients: str
    usage: Usage
    seconds: float
    loop_count: str = ""  # what the loop itself counted, where it counts

    @property
    def sleeps_per_second(self) -> float:
        return self.usage.voluntary_switches / self.seconds


def measure(pid: int, seconds: float) -> tuple[Usage, float]:
    """The process's usage over a window of ``seconds`` (and the window's exact length)."""
    before, started = usage_of(pid), time.monotonic()
    time.sleep(seconds)
    return usage_of(pid).since(before), time.monotonic() - started


def the_spin(lab: Lab, seconds: float) -> Row:
    lab.step("Suspect 1: a loop at its fd limit with no spare fd (lab 02's spin.py, as it is).")
    lab.say(f"$ .venv/bin/python labs/02-fd-limits/spin.py --nofile {SPIN_LIMIT} &   # then connect once")
    with spinning(SPIN_LIMIT) as spinner:
        first = spinner.counts()
        usage, elapsed = measure(spinner.pid, seconds)
        last = spinner.counts()
    accepts, failed = last["accept_calls"] - first["accept_calls"], last["emfile"] - first["emfile"]
    rate = accepts / elapsed
    lab.say(
        f"in {elapsed:.1f} s: {accepts:,} accept() calls ({rate:,.0f} a second), "
        f"{failed:,} failed with EMFILE"
    )
    lab.say(f"CPU {usage.describe(elapsed)}; it went to sleep {usage.voluntary_switches} times")
    # Counts: a spin's accept rate grows with the CPU it gets (about 350,000 a second here), so
    # 1,000 a second still holds on a machine three hundred times busier.
    lab.check(
        rate >= 1_000 and failed == accepts and usage.voluntary_switches <= 2,
        "the spin never sleeps: thousands of accept() a second, every one EMFILE",
    )
    return Row("EMFILE spin", "1 waiting", usage, elapsed, f"{rate:,.0f} accept/s")


def poll_calls(pid: int, seconds: float) -> list[tuple[int, int, int]]:
    """(nfds, timeout, result) of every poll() the process made in a window, read by strace."""
    with strace_lines(pid, "-e", "trace=poll") as lines:
        time.sleep(seconds)
    return [(int(m[1]), int(m[2]), int(m[3])) for m in map(POLL_CALL.match, lines) if m]


def the_short_timeout(lab: Lab, clients: int, seconds: float) -> Row:
    """mosquitto1_loop.py with ``clients`` idle subscribers: wake-ups, fds per poll, CPU split."""
    with crowd("mosquitto1_loop", clients) as (broker, holders, _publisher):
        opened = holders.open(clients, broker, NullUi(), "connecting")["opened"]
        pid = broker.pid or 0
        usage, elapsed = measure(pid, seconds)
        wakes = usage.voluntary_switches / elapsed
        lab.say(
            f"{opened:,} idle clients: CPU {usage.describe(elapsed)}, asleep and woken {wakes:.1f} times/s"
        )
        handed = opened + 2  # the clients, the final publisher and the listener
        if shutil.which("strace"):
            calls = poll_calls(pid, 1.0)
            timed_out = sum(1 for nfds, timeout, result in calls if result == 0 and timeout == 100)
            lab.say(
                f"$ strace -e trace=poll -p {pid}   → {len(calls)} calls in 1 s, {timed_out} timed out, e.g."
            )
            lab.say(
                f"  poll([{{fd=3, events=POLLIN}}, ...], {calls[0][0] if calls else '?'}, 100) = 0 (Timeout)"
            )
            lab.check(
                5 <= len(calls) <= 12
                and timed_out == len(calls)
                and {nfds for nfds, _, _ in calls} == {handed},
                f"{opened:,} clients: 5-12 poll() calls a second, each timing out with all {handed:,} fds",
            )
        else:
            lab.say("strace is not installed: the poll() calls are not shown")
        lab.check(5 <= wakes <= 11, f"{opened:,} idle clients, yet the loop wakes about 10 times a second")
        scanned = wakes * handed
        return Row("mosquitto1_loop", f"{opened:,}", usage, elapsed, f"{scanned:,.0f} fds/s")


def a_blocking_loop(lab: Lab, variant: str, clients: int, seconds: float) -> Row:
    """A kit server with ``clients`` idle subscribers: does it wake at all while nothing happens?"""
    lab.say(f"$ .venv/bin/python -m servers.{variant} --port 0   # and {clients:,} idle clients")
    with crowd(variant, clients) as (broker, holders, _publisher):
        opened = holders.open(clients, broker, NullUi(), "connecting")["opened"]
        usage, elapsed = measure(broker.pid or 0, seconds)
    lab.say(
        f"{opened:,} idle clients: CPU {usage.describe(elapsed)}; it woke {usage.voluntary_switches} times"
    )
    return Row(variant, f"{opened:,}", usage, elapsed)


def compare(lab: Lab, rows: list[Row]) -> None:
    lab.step("Side by side, with the notes' top line for the idle mosquitto at 15,088 connections.")
    table = Table(title="idle CPU: who wakes, and where the time goes", title_justify="left")
    for column in ("what", "clients", "% of a core", "user", "system", "sleeps/s", "counted"):
        table.add_column(column, justify="left" if column in ("what", "counted") else "right")
    table.add_row(NOTES, "15,088", "100", "31.2%", "68.8%", "?", "")
    for row in rows:
        ticks = row.usage.user_ticks + row.usage.system_ticks
        share = 100 * ticks / 100 / row.seconds
        user = f"{100 * row.usage.user_ticks / ticks:.0f}%" if ticks else "-"
        system = f"{100 * row.usage.system_ticks / ticks:.0f}%" if ticks else "-"
        table.add_row(
            row.subject,
            row.clients,
            f"{share:.1f}",
            user,
            system,
            f"{row.sleeps_per_second:.1f}",
            row.loop_count,
        )
    console.print(table)
    lab.say("CPU figures depend on the machine and are printed, not asserted; the counts are checked")


def the_suspects(lab: Lab, spin_seconds: float, sizes: tuple[int, int], window: float) -> list[Row]:
    """Steps: the spin, the short-timeout poll loop at two sizes, poll_srv idle; returns the rows."""
    rows = [the_spin(lab, spin_seconds)]
    small, large = sizes
    lab.step("Suspect 2: mosquitto 1.x's loop: poll() with a 100 ms timeout, every client walked.")
    lab.say("$ .venv/bin/python labs/05-ten-thousand-connections/mosquitto1_loop.py --port 0")
    lab.say(f"with {small:,} idle clients, then with {large:,}:")
    rows += [the_short_timeout(lab, small, window), the_short_timeout(lab, large, window)]
    lab.step(f"Against a loop that blocks: poll_srv with {large:,} idle clients.")
    row = a_blocking_loop(lab, "poll_srv", large, window)
    lab.check(
        row.sleeps_per_second < 1,
        f"poll_srv holds {row.clients} idle clients and does not wake: it blocks with no timeout due",
    )
    return [*rows, row]
