"""Lab 05: hold ten thousand idle MQTT connections on one epoll loop, count them, reach them all.

Field notes §5: a shell loop of ``mosquitto_sub -t hello/world -k 900`` clients, counted with
``netstat | awk``. Here the clients are raw sockets in a few child processes (the fd limit is
per process), the states come from the kernel's sock_diag, and one PUBLISH must reach them all.
Then the notes' 100% of a core at idle, with both suspects measured side by side (suspects.py).
"""

from __future__ import annotations

import multiprocessing
import shutil
import subprocess
import sys
import time
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` and ``tui`` import from this checkout (and from the holder
# processes, which are spawned and re-import this file), and lab 02's folder for its spinning
# loop and its view of a process from outside.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "02-fd-limits"))
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from crowd import FinalPublisher, crowd  # beside this file
from rich.table import Table
from suspects import Row, compare, measure, the_suspects  # beside this file

from labs.bench.connections import PER_HOLDER, Holders
from labs.bench.progress import NullUi
from labs.bench.targets import Broker
from labs.lab import Lab, console, lab_arguments
from labs.proc import status_numbers
from tui.sources.tcp_states import state_counts, tcp_sockets

IDLE_WINDOW = 2.0  # seconds of broker CPU measured with every client connected and silent
NETSTAT_ONE_LINER = "netstat -na | awk '/^tcp/ {++S[$NF]} END {for(a in S) print a, S[a]}'"
# Today's tool, filtered to this lab's port in the kernel; awk counts the first column (State).
SS_ONE_LINER = (
    "ss -tan '( sport = :{port} or dport = :{port} )'"
    " | awk 'NR>1 {{++S[$1]}} END {{for(a in S) print a, S[a]}}'"
)


def in_bash(command: str) -> list[str]:
    """The output lines of ``bash -c COMMAND``: the one-liners run exactly as printed."""
    output = subprocess.run(["bash", "-c", command], capture_output=True, text=True, timeout=60, check=False)
    return output.stdout.splitlines()


def show_states(lab: Lab, port: int) -> dict[str, int]:
    """The netstat|awk count for one port, by ss and by sock_diag; returns the server side's counts."""
    lab.say("the notes counted every TCP socket on the machine (lab 05's, and any other):")
    lab.say(f"$ {NETSTAT_ONE_LINER}")
    if shutil.which("netstat"):
        for line in sorted(in_bash(NETSTAT_ONE_LINER)):
            lab.say(f"  {line}")
    else:
        lab.say("  (netstat is not installed here: Debian's net-tools package has it)")
    lab.say("the same count with ss, filtered to this port in the kernel:")
    one_liner = SS_ONE_LINER.format(port=port)
    command, counter = one_liner.split(" | ", 1)
    lab.say(f"$ {command} \\")  # a backslash-newline: both lines paste into bash as one command
    lab.say(f"      | {counter}")
    for line in sorted(in_bash(one_liner)):
        lab.say(f"  {line}")
    started = time.monotonic()
    sockets = tcp_sockets(port)
    elapsed_ms = (time.monotonic() - started) * 1000
    lab.say(
        f"and from Python, tcp_sockets({port}) via sock_diag: {len(sockets):,} sockets in {elapsed_ms:.0f} ms"
    )
    server_side = state_counts(row for row in sockets if row.local[1] == port)
    client_side = state_counts(row for row in sockets if row.local[1] != port)
    table = Table(title=f"TCP sockets on port {port}", title_justify="left")
    table.add_column("state")
    table.add_column("server side", justify="right")
    table.add_column("client side", justify="right")
    for state in dict.fromkeys([*server_side, *client_side]):
        table.add_row(state, f"{server_side.get(state, 0):,}", f"{client_side.get(state, 0):,}")
    console.print(table)
    return server_side


def open_clients(lab: Lab, broker: Broker, holders: Holders, clients: int) -> int:
    lab.step(f"Open {clients:,} idle clients: CONNECT (keepalive 900) + SUBSCRIBE hello/world.")
    lab.say(f"the notes: for i in $(seq {clients}); do mosquitto_sub -t hello/world -k 900 & done")
    processes = len(holders.workers)
    lab.say(f"here: {processes} holder processes of up to {PER_HOLDER:,} sockets each, from 127.0.0.2-17")
    started = time.monotonic()
    opened = holders.open(clients, broker, NullUi(), "connecting")
    elapsed = time.monotonic() - started
    lab.say(
        f"{opened['opened']:,} connected in {elapsed:.1f} s ({opened['opened'] / elapsed:,.0f} per second)"
    )
    for reason, count in opened["failures"].items():
        lab.say(f"  failed: {count:,} × {reason}")
    lab.check(opened["opened"] == clients, f"all {clients:,} clients connected and subscribed")
    return opened["opened"]


def count_states(lab: Lab, port: int, clients: int) -> None:
    lab.step("Count the sockets by state, as the notes did with netstat | awk.")
    server_side = show_states(lab, port)
    lab.say("each loopback connection shows twice: the broker's end and the client's end")
    established = server_side.get("ESTABLISHED", 0)
    lab.check(
        established == clients + 1, f"the broker holds {established:,} ESTABLISHED: clients + publisher"
    )


def measure_cost(lab: Lab, pid: int, rss_before: int, clients: int) -> Row:
    lab.step("What they cost the broker: memory, and CPU while they sit idle.")
    rss_after = status_numbers(pid, "VmRSS")[0]
    per_connection = (rss_after - rss_before) / clients
    lab.say(f"VmRSS {rss_before:,} kB → {rss_after:,} kB: {per_connection:.1f} KiB per connection")
    usage, elapsed = measure(pid, IDLE_WINDOW)
    lab.say(f"broker CPU over {elapsed:.1f} idle seconds (/proc/{pid}/stat): {usage.describe(elapsed)}")
    lab.say(f"times it went to sleep and was woken (/proc/{pid}/status): {usage.voluntary_switches}")
    # A count: epoll_wait blocks until a socket is ready or a timer is due ($SYS, every 10 s),
    # so an idle loop wakes at most once in the window; a loop with a short timeout ~10 times a
    # second, a spinning one never sleeps at all.
    lab.check(
        usage.voluntary_switches <= 1 + IDLE_WINDOW / 10,
        "the idle epoll loop does not wake: it sleeps in epoll_wait while nothing happens",
    )
    return Row("epoll_lt", f"{clients:,}", usage, elapsed)


def publish_once(lab: Lab, publisher: FinalPublisher, holders: Holders, clients: int) -> None:
    lab.step("One PUBLISH to hello/world: does every client get exactly one copy?")
    publisher.publish()
    received = holders.ask("expect", 10.0 + clients / 2000, "received", 120.0)
    got = sum(reply["received"] for reply in received)
    duplicated = sum(reply["duplicated"] for reply in received)
    lab.say(f"{got:,} of {clients:,} clients received it; duplicates: {duplicated}")
    lab.check(got == clients and duplicated == 0, "one publish reached every held client exactly once")


def hold_many(lab: Lab, clients: int) -> tuple[int, Row]:
    """Steps 1-5: epoll_lt with ``clients`` idle subscribers; returns its port and idle figures."""
    lab.step("Start the epoll broker and note its resident memory.")
    lab.say("$ .venv/bin/python -m servers.epoll_lt --port 0")
    with crowd("epoll_lt", clients) as (broker, holders, publisher):
        pid, port = broker.pid or 0, broker.address[1]
        rss_before = status_numbers(pid, "VmRSS")[0]
        lab.say(f"listening on port {port}, pid {pid}; $ grep VmRSS /proc/{pid}/status → {rss_before:,} kB")
        opened = open_clients(lab, broker, holders, clients)
        count_states(lab, port, opened)
        idle = measure_cost(lab, pid, rss_before, opened)
        publish_once(lab, publisher, holders, opened)
    return port, idle


def select_contrast(lab: Lab, clients: int) -> None:
    lab.step(f"Contrast: select_srv with {clients:,} clients (fd_set holds fds 0-1023 only).")
    lab.say("$ .venv/bin/python -m servers.select_srv --port 0")
    with crowd("select_srv", clients) as (broker, holders, publisher):
        report = holders.open(clients, broker, NullUi(), "connecting")
        opened = report["opened"]
        lab.say(f"{opened:,} connected, {clients - opened:,} refused")
        for reason, count in report["failures"].items():
            lab.say(f"  refused: {count:,} × {reason}")
        assert broker.stderr_path is not None
        logged = [line for line in broker.stderr_path.read_text().splitlines() if "FD_SETSIZE" in line]
        if logged:
            lab.say(f"log│ {logged[0].split(' ', 2)[2]}")
        publisher.publish()
        got = sum(reply["received"] for reply in holders.ask("expect", 10.0, "received", 60.0))
    lab.say(f"the publish reached {got:,} of the {opened:,} it kept")
    lab.check(1_000 <= opened < 1_024, f"select_srv stops near 1,020 clients ({opened:,})")
    lab.check(got == opened, "the clients select_srv kept are still served")


def cleaned_up(lab: Lab, port: int) -> None:
    lab.step("Clean up: every holder process gone, every connection closed.")
    children = multiprocessing.active_children()
    lab.say(f"holder processes still running: {len(children)}")
    left = state_counts(tcp_sockets(port))
    lab.say(f"sockets left on port {port}: {left or 'none'}")
    lab.say("TIME_WAIT is the closing side's 60 s wait for late segments, not an open connection (lab 06)")
    lab.check(not children, "no holder process left running")
    lab.check(set(left) <= {"TIME_WAIT"}, "no connection left open: at most TIME_WAIT remains")


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, help="idle clients for epoll_lt (15,000; --quick: 2,000)")
    args = parser.parse_args()
    clients = args.clients or (2_000 if args.quick else 15_000)
    sizes = (200, 2_000) if args.quick else (1_000, 10_000)
    lab = Lab("Lab 05: ten thousand connections on one epoll loop")
    try:
        port, idle = hold_many(lab, clients)
        rows = the_suspects(lab, 1.0 if args.quick else 2.0, sizes, 2.0 if args.quick else 3.0)
        compare(lab, [*rows, idle])
        select_contrast(lab, 1_100)
    except KeyboardInterrupt:
        console.print("\ninterrupted: holders and brokers were stopped on the way out")
        return 130
    cleaned_up(lab, port)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
