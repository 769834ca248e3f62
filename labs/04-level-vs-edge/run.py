"""Lab 04: level- vs edge-triggered epoll, and the notes' 2 KB / 1 KB trap with real servers.

SEED-NOTES §9: level-triggered epoll reports a readable fd on every wait while bytes remain;
edge-triggered reports it once per arrival, so a loop that reads 1 KB of a 2 KB request and
goes back to epoll_wait never hears about the other 1 KB until the peer sends again.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs``, ``mqtt``, ``servers`` and ``tui`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


from grade import SKELETON, grade_student  # this lab's grader, beside this file

from labs.bench.targets import Broker
from labs.exercise import student_arguments
from labs.lab import Lab, lab_arguments, running_server
from mqtt.codec import Decoder, encode
from mqtt.packets import Connack, Connect, Packet, Pingreq, Pingresp, Puback, Publish
from servers.telemetry import TelemetryReader
from tui.sources.tcp_states import tcp_sockets

PUB_KEEPALIVE = 5  # seconds; the smallest keepalive mosquitto's clients accept
STALL_WINDOW = 2.0  # seconds: on loopback a PUBACK takes well under a millisecond
TRAP_PAYLOAD = 2000  # bytes: with the header, a ~2 KB PUBLISH sent in one send()
READY_PAYLOAD = 280  # bytes: a ~300-byte PUBLISH read 64 bytes at a time
MASKS = {1: "IN", 4: "OUT", 8: "ERR", 16: "HUP"}


class RawClient:
    """A blocking TCP socket speaking MQTT through the project's codec; keepalive 0, so no PINGREQ
    of its own ever raises a new edge behind the lab's back."""

    def __init__(self, address: tuple[str, int], client_id: str) -> None:
        self.sock = socket.create_connection(address, timeout=5)
        self.decoder = Decoder()
        self.send(Connect(client_id, keepalive=0))
        if not any(isinstance(packet, Connack) for packet in self.packets_within(5.0, 1)):
            raise RuntimeError(f"{client_id}: no CONNACK")

    def send(self, packet: Packet) -> int:
        frame = encode(packet)
        self.sock.sendall(frame)  # one send: one segment on loopback, so one edge
        return len(frame)

    def packets_within(self, seconds: float, wanted: int) -> list[Packet]:
        """Whatever arrives within ``seconds``, returning early once ``wanted`` packets came."""
        deadline = time.monotonic() + seconds
        packets: list[Packet] = []
        while len(packets) < wanted and (remaining := deadline - time.monotonic()) > 0:
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                break
            if not data:
                break
            packets.extend(self.decoder.feed(data))
        return packets

    def close(self) -> None:
        self.sock.close()


def names(packets: list[Packet]) -> str:
    return " + ".join(type(packet).__name__.upper() for packet in packets) or "nothing"


def server_recv_q(broker: Broker) -> int:
    """Bytes the kernel holds for the server's side of our connection, unread (ss's Recv-Q)."""
    port = broker.address[1]
    return sum(row.recv_q for row in tcp_sockets(port) if row.local[1] == port and row.state == "ESTABLISHED")


def trap(lab: Lab, variant: str, *flags: str) -> tuple[float | None, list[Packet], int]:
    """Send the ~2 KB QoS 1 PUBLISH, then a PINGREQ if no PUBACK comes.

    Returns the seconds to the PUBACK (None if stuck), what the PINGREQ brought, and the Recv-Q
    the server's socket showed while stuck.
    """
    lab.say(f"$ .venv/bin/python -m servers.{variant} --port 0 {' '.join(flags)}")
    with running_server(variant, *flags) as broker:
        client = RawClient(broker.address, f"lab04-{variant}")
        try:
            started = time.monotonic()
            size = client.send(Publish("lab04/trap", b"x" * TRAP_PAYLOAD, qos=1, packet_id=1))
            first = client.packets_within(STALL_WINDOW, 1)
            waited = time.monotonic() - started
            got = f"{names(first)} after {waited * 1000:.2f} ms" if first else "nothing"
            lab.say(f"  sent a {size:,}-byte QoS 1 PUBLISH in one send(); within {STALL_WINDOW:.0f} s: {got}")
            if first:
                return waited, [], 0
            stuck = server_recv_q(broker)
            lab.say(f"  ss: the server's socket has Recv-Q {stuck:,} bytes: the rest of the PUBLISH, unread")
            client.send(Pingreq())
            started = time.monotonic()
            after = client.packets_within(STALL_WINDOW, 2)
            elapsed_ms = (time.monotonic() - started) * 1000
            lab.say(f"  sent PINGREQ (2 bytes, a new edge): {names(after)} after {elapsed_ms:.2f} ms")
            return None, after, stuck
        finally:
            client.close()


def the_trap(lab: Lab) -> None:
    lab.step("The trap: edge-triggered, one 1 KB read per edge (epoll_et --bug read-once).")
    waited, after, stuck = trap(lab, "epoll_et", "--bug", "read-once", "--read-chunk", "1024")
    lab.check(waited is None, f"ET + read-once: no PUBACK within {STALL_WINDOW:.0f} s (the request is stuck)")
    lab.check(stuck > 0, "the unread bytes are visible in the kernel: Recv-Q > 0 on the server's socket")
    acked = [type(packet) for packet in after] == [Puback, Pingresp]
    lab.check(acked, "the PINGREQ's edge lets the server read on: PUBACK, then PINGRESP")

    # What tells the fixed loops from the trap is whether the PUBACK comes before the client
    # sends anything else (a new edge), not how many milliseconds it takes: the state is checked,
    # the time (well under a millisecond on loopback) is only printed.
    lab.step("Level-triggered, same 1 KB reads (epoll_lt --read-chunk 1024).")
    waited, _, _ = trap(lab, "epoll_lt", "--read-chunk", "1024")
    lab.check(waited is not None, "LT: PUBACK with no new edge; the fd was reported again for the rest")

    lab.step("Edge-triggered done right: read until EAGAIN (epoll_et --read-chunk 1024).")
    waited, _, _ = trap(lab, "epoll_et", "--read-chunk", "1024")
    lab.check(waited is not None, "ET draining until EAGAIN: PUBACK with no new edge")


def timed_mosquitto_pub(lab: Lab, variant: str, *flags: str) -> list[str]:
    """mosquitto_pub -q 1 -k 5 of a 2,000-byte message, timed; its -d lines."""
    with running_server(variant, *flags) as broker:
        command = ["mosquitto_pub", "-p", str(broker.address[1]), "-q", "1", "-k", str(PUB_KEEPALIVE)]
        command += ["-t", "lab04", "-m", "x" * TRAP_PAYLOAD, "-d"]
        lab.say(f"$ .venv/bin/python -m servers.{variant} --port 0 {' '.join(flags)}")
        lab.say(
            f'$ time mosquitto_pub -p {broker.address[1]} -q 1 -k {PUB_KEEPALIVE} -t lab04 -m "$PAYLOAD" -d'
        )
        started = time.monotonic()
        completed = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        elapsed = time.monotonic() - started
    lines = completed.stdout.splitlines()
    for line in lines:
        lab.say(f"  pub│ {line}")
    lab.say(f"  real {elapsed:.3f} s")
    return lines


def line_number(lines: list[str], text: str) -> int | None:
    """Where mosquitto_pub -d first printed ``text``, or None if it never did."""
    return next((number for number, line in enumerate(lines) if text in line), None)


def with_mosquitto_pub(lab: Lab) -> None:
    lab.step(f"The same trap with mosquitto_pub: its keepalive PINGREQ (-k {PUB_KEEPALIVE}) is the new edge.")
    if shutil.which("mosquitto_pub") is None:
        lab.say("(mosquitto_pub is not installed: skipped)")
        return
    lab.say('$ PAYLOAD=$(head -c 2000 /dev/zero | tr "\\0" x)')
    # Judged by the order of mosquitto_pub's own -d lines, not by its run time (printed above):
    # the PUBACK received after the PINGREQ sent is the stall, whatever the machine's load.
    lines = timed_mosquitto_pub(lab, "epoll_et", "--bug", "read-once", "--read-chunk", "1024")
    ping, ack = line_number(lines, "sending PINGREQ"), line_number(lines, "received PUBACK")
    lab.check(
        ping is not None and ack is not None and ping < ack,
        f"ET + read-once: the PUBACK waited for the keepalive PINGREQ (-k {PUB_KEEPALIVE})",
    )
    lines = timed_mosquitto_pub(lab, "epoll_lt", "--read-chunk", "1024")
    ping, ack = line_number(lines, "sending PINGREQ"), line_number(lines, "received PUBACK")
    lab.check(
        ack is not None and ping is None, "LT: mosquitto_pub is done at once: PUBACK, no PINGREQ needed"
    )


def mask_text(mask: int) -> str:
    return "|".join(name for bit, name in MASKS.items() if mask & bit) or str(mask)


def connected_fd(reader: TelemetryReader, timeout: float = 5.0) -> int:
    """The server-side fd of the client whose CONNECT the telemetry reported (a ``conn`` event)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event in reader.read():
            if event["k"] == "conn":
                return event["fd"]
        time.sleep(0.05)
    raise RuntimeError("no 'conn' telemetry event: did the server start with --telemetry?")


def ready_lists(lab: Lab, variant: str) -> list[bool]:
    """Send one ~300-byte PUBLISH to a server reading 64 bytes per recv; print each wait's ready list.

    Returns, for each wait call that followed, whether our client's fd was in its ready list.
    """
    flags = ("--telemetry", "--read-chunk", "64")
    lab.say(f"$ .venv/bin/python -m servers.{variant} --port 0 {' '.join(flags)}")
    with running_server(variant, *flags) as broker:
        reader = TelemetryReader(broker.address[1])
        client = RawClient(broker.address, f"lab04-ready-{variant}")
        try:
            client_fd = connected_fd(reader)
            size = client.send(Publish("lab04/nobody-listens", b"r" * READY_PAYLOAD))
            time.sleep(0.3)  # QoS 0 to no subscriber: nothing comes back, so just let it settle
            waits = [event for event in reader.read() if event["k"] == "wait"]
        finally:
            client.close()
            reader.close()
    lab.say(f"  sent one {size}-byte PUBLISH from client fd {client_fd}; the server's waits that followed:")
    reported = []
    for event in waits:
        ready = ", ".join(f"({fd}, {mask_text(mask)})" for fd, mask in event["ready"])
        reported.append(any(fd == client_fd for fd, _ in event["ready"]))
        blocked = f"blocked {event['blocked_s'] * 1000:7.3f} ms"
        lab.say(f"  wait #{event['call']:<3} {event['mode']}  {blocked}  ready [{ready}]")
    return reported


def the_ready_lists(lab: Lab) -> None:
    lab.step("Watch the ready lists: --read-chunk 64 and --telemetry, LT first.")
    reported = ready_lists(lab, "epoll_lt")
    run = 0
    while run < len(reported) and reported[run]:
        run += 1
    lab.check(run >= 5, f"LT reported the fd in {run} consecutive waits: one per 64-byte read")

    lab.step("The same with ET: one edge, and the loop drains the socket in one turn.")
    reported = ready_lists(lab, "epoll_et")
    lab.check(sum(reported) == 1, f"ET reported the fd in {sum(reported)} wait: once for the one arrival")


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    student_arguments(parser, SKELETON)
    arguments = parser.parse_args()
    if arguments.student:
        return grade_student(Path(arguments.student))
    lab = Lab("Lab 04: level- vs edge-triggered epoll")
    the_trap(lab)
    with_mosquitto_pub(lab)
    the_ready_lists(lab)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
