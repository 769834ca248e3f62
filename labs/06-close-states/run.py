"""Lab 06: the notes' FIN_WAIT1 pile-up, then the clean close states, read from the kernel.

A subscriber that stops reading while a publisher floods it leaves megabytes queued in the
server's socket; when the server then closes it (keepalive expiry), the FIN waits behind that
data and the socket sits in FIN_WAIT_1, probing a zero window. Then the ordinary close:
FIN_WAIT_2 / CLOSE_WAIT, TIME_WAIT, and, in a network namespace, what tcp_fin_timeout governs.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs``, ``servers`` and ``tui`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from grade import SKELETON, grade_student  # this lab's grader, beside this file

from labs.exercise import student_arguments
from labs.lab import Lab, lab_arguments, running_server
from labs.netns import delete_namespace, namespaces
from mqtt.codec import Decoder, encode
from mqtt.packets import Connect, Publish, Subscribe
from tui.sources.tcp_states import TcpSocket, state_counts, tcp_sockets

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
FLOOD_TOPIC = "flood/x"
PAYLOAD = b"x" * 1000
STALLED_KEEPALIVE = 2  # seconds; the server closes after 1.5 x this without a packet
SMALL_RECEIVE_BUFFER = 4096

DIAGRAM = """\
server (closes first)                 client
ESTABLISHED                           ESTABLISHED
close() ──── FIN ──────────────▶      CLOSE_WAIT: recv() returns b""
FIN_WAIT_1
        ◀──────────────── ACK ────
FIN_WAIT_2                            ... until the client calls close()
        ◀──────────────── FIN ────    LAST_ACK
TIME_WAIT ── ACK ──────────────▶      CLOSED
(2 x MSL, 60 s on Linux; then CLOSED)"""


def mqtt_client(
    port: int, client_id: str, keepalive: int, subscribe: str = "", receive_buffer: int = 0
) -> socket.socket:
    """A blocking MQTT client on a raw socket: CONNECT (and SUBSCRIBE), then wait for the acks."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer:
        # Before connect(): the window scale is agreed in the handshake, so set it first.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    greeting = encode(Connect(client_id, keepalive=keepalive))
    if subscribe:
        greeting += encode(Subscribe(1, ((subscribe, 0),)))
    sock.sendall(greeting)
    decoder, acks = Decoder(), 0
    while acks < (2 if subscribe else 1):
        acks += len(decoder.feed(sock.recv(4)))  # tiny reads: take the acks, leave anything else
    return sock


def server_side(port: int) -> dict[int, TcpSocket]:
    """The server's end of every connection on ``port``, keyed by the client's port."""
    return {row.remote[1]: row for row in tcp_sockets(port) if row.local[1] == port and row.state != "LISTEN"}


def timer_text(row: TcpSocket) -> str:
    return "off" if row.timer == "off" else f"{row.timer} {row.timer_left_ms:,} ms"


def show_rows(lab: Lab, rows: list[tuple[str, TcpSocket]]) -> None:
    """Rows as `ss -tno` would print them, under one header: who, ports, state, queues, timer."""
    lab.say(f"{'who':<10}{'local→remote':<14}{'state':<12}{'Send-Q':>9}{'Recv-Q':>8}  timer")
    for who, row in rows:
        ports = f"{row.local[1]}→{row.remote[1]}"
        lab.say(f"{who:<10}{ports:<14}{row.state:<12}{row.send_q:>9,}{row.recv_q:>8,}  {timer_text(row)}")


def wait_for(condition: Callable[[], bool], timeout: float, interval: float = 0.05) -> float | None:
    """Seconds until ``condition()`` held, or None if it never did within ``timeout``."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if condition():
            return time.monotonic() - started
        time.sleep(interval)
    return None


def pile_up(lab: Lab, stalled_count: int, watch_seconds: float) -> None:
    lab.step("Start epoll_lt with a large per-connection output limit.")
    lab.say("$ .venv/bin/python -m servers.epoll_lt --port 0 \\")
    lab.say("      --max-pending-output 67108864 --sys-interval 0")
    with running_server("epoll_lt", "--max-pending-output", str(64 << 20), "--sys-interval", "0") as server:
        port = server.address[1]
        lab.say(f"listening on 127.0.0.1:{port} (pid {server.pid}; both will differ)")

        lab.step(f"Connect {stalled_count} subscribers that will stop reading.")
        stalled = [
            mqtt_client(port, f"stalled-{i}", STALLED_KEEPALIVE, "flood/#", SMALL_RECEIVE_BUFFER)
            for i in range(1, stalled_count + 1)
        ]
        names = {sock.getsockname()[1]: f"stalled-{i}" for i, sock in enumerate(stalled, 1)}
        lab.say("each: SO_RCVBUF 4096, CONNECT keepalive 2, SUBSCRIBE flood/#, read the acks;")
        lab.say("then it never calls recv() or send() again")

        lab.step("A publisher floods 8 MB of QoS 0 (1,000-byte payloads) to flood/x.")
        publisher = mqtt_client(port, "publisher", 60)
        batch = encode(Publish(FLOOD_TOPIC, PAYLOAD)) * 256
        for _ in range(32):
            publisher.sendall(batch)
        wait_for(lambda: all(row.timer == "persist" for row in stalled_rows(port, names).values()), 5)
        time.sleep(0.3)  # let the server finish queueing before the snapshot
        rows = stalled_rows(port, names)
        client_row = next(r for r in tcp_sockets(port) if r.local[1] == stalled[0].getsockname()[1])
        show_rows(lab, [*named(rows, names), ("client-1", client_row)])
        lab.say("the client's window is zero: the server probes it (timer 'persist')")
        lab.check(
            len(rows) == stalled_count and all(r.send_q > 0 and r.timer == "persist" for r in rows.values()),
            "each stalled subscriber's server socket: bytes in Send-Q, persist timer",
        )

        lab.step("Wait for keepalive expiry: the server closes the stalled ones.")
        waited = wait_for(
            lambda: all(r.state == "FIN_WAIT_1" for r in stalled_rows(port, names).values()), 10
        )
        rows = stalled_rows(port, names)
        lab.say(f"{waited or 10:.1f} s later (3 s, 1.5 x keepalive, after each SUBSCRIBE):")
        count_states(lab, port)
        show_rows(lab, named(rows, names))
        lab.say("Send-Q grew by 1: the FIN takes a sequence number, queued behind the data;")
        lab.say("inode 0 (not shown): no process owns them any more, they are orphans")
        lab.check(
            len(rows) == stalled_count
            and all(r.state == "FIN_WAIT_1" and r.send_q > 1000 and r.inode == 0 for r in rows.values()),
            "closed by the server, yet each sits orphaned in FIN_WAIT_1, KBs in Send-Q",
        )

        lab.step(f"Watch stalled-1 for {watch_seconds:.0f} s: zero-window probes keep it alive.")
        watch(lab, port, names, watch_seconds)
        rows = stalled_rows(port, names)
        lab.check(
            len(rows) == stalled_count and all(r.state == "FIN_WAIT_1" for r in rows.values()),
            f"still FIN_WAIT_1 after {watch_seconds:.0f} s: nothing times them out soon",
        )

        lab.step("Release: stalled-1 reads to the end, the others close unread.")
        release(lab, port, names, stalled)
        publisher.close()


def count_states(lab: Lab, port: int) -> None:
    """The notes' `netstat -na | awk ...` count, split into the server's and the clients' ends."""
    server: Counter[str] = Counter()
    clients: Counter[str] = Counter()
    for row in tcp_sockets(port):
        (server if row.local[1] == port else clients)[row.state] += 1
    lab.say(f"{'state':<14}{'server ends':>12}{'client ends':>13}")
    for state in sorted(server.keys() | clients.keys()):
        lab.say(f"{state:<14}{server[state]:>12}{clients[state]:>13}")
    lab.say("the clients still see ESTABLISHED: the FIN is stuck behind the data")


def stalled_rows(port: int, names: dict[int, str]) -> dict[int, TcpSocket]:
    return {client_port: row for client_port, row in server_side(port).items() if client_port in names}


def named(rows: dict[int, TcpSocket], names: dict[int, str], most: int = 3) -> list[tuple[str, TcpSocket]]:
    """The first ``most`` rows, stalled-1 first, with their client's name (the rest look the same)."""
    return [(name, rows[client_port]) for client_port, name in names.items() if client_port in rows][:most]


def watch(lab: Lab, port: int, names: dict[int, str], seconds: float) -> None:
    started = time.monotonic()
    first = next(iter(names))  # stalled-1's client port
    while time.monotonic() - started < seconds:
        row = stalled_rows(port, names).get(first)
        if row is None:
            break
        elapsed = time.monotonic() - started
        probe = f"next probe in {row.timer_left_ms:,} ms"
        lab.say(f"t+{elapsed:4.1f} s  {row.state}  Send-Q {row.send_q:,}  {probe}")
        time.sleep(max(0.5, seconds / 6))
    lab.say("each probe that finds the window still shut doubles the wait; an orphan")
    lab.say("gives up after tcp_orphan_retries of them (about 340 s, measured here);")
    lab.say("a socket its process still holds would keep probing for as long as it lives")


def release(lab: Lab, port: int, names: dict[int, str], stalled: list[socket.socket]) -> None:
    reader = stalled[0]
    reader_port = reader.getsockname()[1]
    rows = tcp_sockets(port)
    queued = sum(r.send_q - 1 for r in rows if r.local[1] == port and r.remote[1] == reader_port)  # - FIN
    unread = sum(r.recv_q for r in rows if r.local[1] == reader_port)
    total = 0
    while chunk := reader.recv(1 << 20):  # the queued data, then b"": the FIN arrived behind it
        total += len(chunk)
    lab.say(f"stalled-1 read {total:,} bytes, then recv() returned b'' (EOF):")
    lab.say(f"{queued:,} from the server's Send-Q + {unread:,} already in its own Recv-Q")
    wait_for(lambda: state_of(port, reader_port) == "FIN_WAIT_2", 1)
    show_rows(lab, named(stalled_rows(port, names), names, 1))
    reader.close()
    for sock in stalled[1:]:
        sock.close()  # unread data in the receive queue: close() sends RST, not FIN (RFC 2525)
    wait_for(lambda: not any(r.state == "FIN_WAIT_1" for r in server_side(port).values()), 2)
    rows = stalled_rows(port, names)
    left = ", ".join(f"{count} {state}" for state, count in state_counts(rows.values()).items())
    lab.say(f"after every close(), the stalled ones' server ends: {left or 'none'}")
    lab.say("stalled-1's went FIN_WAIT_2 → TIME_WAIT; the others got an RST: gone")
    lab.check(
        total > 0 and not any(r.state == "FIN_WAIT_1" for r in rows.values()),
        "reading the backlog, or a reset, is what frees a FIN_WAIT_1 socket",
    )


def state_of(port: int, client_port: int) -> str:
    row = server_side(port).get(client_port)
    return row.state if row else ""


def clean_close(lab: Lab) -> None:
    lab.step("The clean case: a client with keepalive 1 that then stays silent.")
    with running_server("epoll_lt", "--sys-interval", "0") as server:
        port = server.address[1]
        quiet = mqtt_client(port, "quiet", 1)
        quiet_port = quiet.getsockname()[1]
        waited = wait_for(lambda: state_of(port, quiet_port) == "FIN_WAIT_2", 5)
        lab.say(f"after {waited or 5:.1f} s the server closed it (keepalive expired):")
        both = {row.local[1]: row for row in tcp_sockets(port) if quiet_port in (row.local[1], row.remote[1])}
        server_row, client_row = both.get(port), both.get(quiet_port)
        show_rows(lab, [(side, row) for side, row in (("server", server_row), ("client", client_row)) if row])
        lab.say("client Recv-Q 1: the FIN, until the application reads EOF;")
        lab.say("server timer 'timewait': an orphaned FIN_WAIT_2 waits tcp_fin_timeout")
        lab.check(
            server_row is not None
            and server_row.state == "FIN_WAIT_2"
            and client_row is not None
            and client_row.state == "CLOSE_WAIT",
            "server FIN_WAIT_2, client CLOSE_WAIT: half closed until the client closes",
        )
        for line in DIAGRAM.splitlines():
            lab.say(line)

        lab.step("Now the client closes: its FIN moves the server's end to TIME_WAIT.")
        quiet.close()
        wait_for(lambda: state_of(port, quiet_port) == "TIME_WAIT", 2)
        after = server_side(port).get(quiet_port)
        client_left = [row for row in tcp_sockets(port) if row.local[1] == quiet_port]
        if after is not None:
            show_rows(lab, [("server", after)])
        lab.say(f"client rows left: {len(client_left)} (its LAST_ACK lasted microseconds)")
        lab.check(
            after is not None and after.state == "TIME_WAIT" and after.timer_left_ms > 55_000,
            "the side that closed first ends in TIME_WAIT, about 60 s on its timer",
        )


def namespace_part(lab: Lab) -> None:
    lab.step("In a network namespace: set tcp_fin_timeout=5 there, never on the host.")
    if os.geteuid() != 0 or shutil.which("ip") is None:
        lab.say("skipped: creating a network namespace needs root and iproute2 (ip netns)")
        return
    name = f"epoll-mqtt-lab06-{os.getpid()}"
    host_before = read_fin_timeout()
    try:
        for command in (
            ["ip", "netns", "add", name],
            ["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"],
            ["ip", "netns", "exec", name, "sysctl", "-qw", "net.ipv4.tcp_fin_timeout=5"],
        ):
            lab.say("$ " + " ".join(command).replace(name, "NS"))
            subprocess.run(command, check=True, timeout=10)
        lab.say(f"host: net.ipv4.tcp_fin_timeout = {read_fin_timeout()} (unchanged)")
        lab.say("$ ip netns exec NS .venv/bin/python labs/06-close-states/in_namespace.py")
        summary = run_in_namespace(lab, name)
    finally:
        delete_namespace(name)
    lab.say(f"$ ip netns del NS → namespaces named like ours left: {namespaces().count(name)}")
    # A state, not a timing: in_namespace.py saw the orphan in FIN_WAIT_2 and then saw it gone
    # within its 12 s watch, which a 60 s timer would not allow. The lifetime it measured by
    # polling (about 5 s) is printed above, not asserted.
    orphan_s = summary.get("orphan_lifetime_s")
    lab.check(
        orphan_s is not None,
        "the orphaned FIN_WAIT_2 vanished on tcp_fin_timeout (5 s here), not after 60",
    )
    lab.check(
        summary.get("kept_state") == "FIN_WAIT_2", "a FIN_WAIT_2 whose fd is still open stays: no timer"
    )
    lab.check(summary.get("time_wait_left_ms", 0) > 50_000, "TIME_WAIT still counts down from 60 s")
    lab.check(
        read_fin_timeout() == host_before and name not in namespaces(),
        "the host's sysctl is untouched and the namespace is gone",
    )


def read_fin_timeout() -> int:
    return int(Path("/proc/sys/net/ipv4/tcp_fin_timeout").read_text())


def run_in_namespace(lab: Lab, name: str) -> dict[str, object]:
    """Run in_namespace.py inside ``name``; print its samples as they come, return its summary."""
    command = ["ip", "netns", "exec", name, sys.executable, str(HERE / "in_namespace.py")]
    summary: dict[str, object] = {}
    with subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, text=True) as child:
        assert child.stdout is not None
        try:
            for line in child.stdout:
                event = json.loads(line)
                if "say" in event:
                    lab.say(event["say"])
                summary.update(event.get("summary", {}))
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()  # our own child, by pid
    return summary


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    student_arguments(parser, SKELETON)
    args = parser.parse_args()
    if args.student:
        return grade_student(Path(args.student))
    lab = Lab("Lab 06: close states, and the FIN_WAIT1 pile-up")
    pile_up(lab, stalled_count=3 if args.quick else 10, watch_seconds=2 if args.quick else 15)
    clean_close(lab)
    namespace_part(lab)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
