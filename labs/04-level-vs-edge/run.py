"""Lab 04: level- vs edge-triggered epoll, and the notes' 2 KB / 1 KB trap with real servers.

Field notes §9 (docs/field-notes.md): level-triggered epoll reports a readable fd on every
wait while bytes remain; edge-triggered reports it once per arrival, so a loop that reads 1 KB
of a 2 KB request and goes back to epoll_wait never hears about the other 1 KB until the peer
sends again.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

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
# How long the raw client waits for a PUBACK. On loopback one takes well under a millisecond,
# so even --quick's window leaves a busy machine a thousandfold margin; the stuck request waits
# for its new edge however long the window is.
STALL_WINDOW = 2.0  # seconds
QUICK_STALL_WINDOW = 1.0  # seconds, under --quick
SETTLE_TIMEOUT = 5.0  # seconds for the server to read a PUBLISH or accept a connection
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


def trap(lab: Lab, window: float, variant: str, *flags: str) -> tuple[float | None, list[Packet], int]:
    """Send the ~2 KB QoS 1 PUBLISH, then a PINGREQ if no PUBACK comes within ``window`` seconds.

    Returns the seconds to the PUBACK (None if stuck), what the PINGREQ brought, and the Recv-Q
    the server's socket showed while stuck.
    """
    lab.say(f"$ .venv/bin/python -m servers.{variant} --port 0 {' '.join(flags)}")
    with running_server(variant, *flags) as broker:
        client = RawClient(broker.address, f"lab04-{variant}")
        try:
            started = time.monotonic()
            size = client.send(Publish("lab04/trap", b"x" * TRAP_PAYLOAD, qos=1, packet_id=1))
            first = client.packets_within(window, 1)
            waited = time.monotonic() - started
            got = f"{names(first)} after {waited * 1000:.2f} ms" if first else "nothing"
            lab.say(f"  sent a {size:,}-byte QoS 1 PUBLISH in one send(); within {window:.0f} s: {got}")
            if first:
                return waited, [], 0
            stuck = server_recv_q(broker)
            lab.say(f"  ss: the server's socket has Recv-Q {stuck:,} bytes: the rest of the PUBLISH, unread")
            client.send(Pingreq())
            started = time.monotonic()
            after = client.packets_within(window, 2)
            elapsed_ms = (time.monotonic() - started) * 1000
            lab.say(f"  sent PINGREQ (2 bytes, a new edge): {names(after)} after {elapsed_ms:.2f} ms")
            return None, after, stuck
        finally:
            client.close()


def the_trap(lab: Lab, window: float) -> None:
    lab.step("The trap: edge-triggered, one 1 KB read per edge (epoll_et --bug read-once).")
    waited, after, stuck = trap(lab, window, "epoll_et", "--bug", "read-once", "--read-chunk", "1024")
    lab.check(waited is None, f"ET + read-once: no PUBACK within {window:.0f} s (the request is stuck)")
    lab.check(stuck > 0, "the unread bytes are visible in the kernel: Recv-Q > 0 on the server's socket")
    acked = [type(packet) for packet in after] == [Puback, Pingresp]
    lab.check(acked, "the PINGREQ's edge lets the server read on: PUBACK, then PINGRESP")

    # What tells the fixed loops from the trap is whether the PUBACK comes before the client
    # sends anything else (a new edge), not how many milliseconds it takes: the state is checked,
    # the time (well under a millisecond on loopback) is only printed.
    lab.step("Level-triggered, same 1 KB reads (epoll_lt --read-chunk 1024).")
    waited, _, _ = trap(lab, window, "epoll_lt", "--read-chunk", "1024")
    lab.check(waited is not None, "LT: PUBACK with no new edge; the fd was reported again for the rest")

    lab.step("Edge-triggered done right: read until EAGAIN (epoll_et --read-chunk 1024).")
    waited, _, _ = trap(lab, window, "epoll_et", "--read-chunk", "1024")
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


def reports(event: dict[str, Any], client_fd: int) -> bool:
    """Whether a wait event's ready list holds ``client_fd``."""
    return any(fd == client_fd for fd, _ in event["ready"])


def waits_until_read(reader: TelemetryReader, broker: Broker, client_fd: int) -> list[dict[str, Any]]:
    """Wait events until one has reported our fd and the kernel holds none of its bytes (Recv-Q 0)."""
    waits: list[dict[str, Any]] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT
    while time.monotonic() < deadline:
        waits += [event for event in reader.read() if event["k"] == "wait"]
        if any(reports(event, client_fd) for event in waits) and server_recv_q(broker) == 0:
            return waits
        time.sleep(0.01)
    raise RuntimeError(f"the server did not read the PUBLISH within {SETTLE_TIMEOUT:g} s")


def waits_before_marker(reader: TelemetryReader, broker: Broker) -> list[dict[str, Any]]:
    """The wait events still on their way, up to the one that reported a marker connection.

    Telemetry travels in batches, so the last waits may not have arrived yet. A second
    connection, made once every byte was read, is accepted after all of them: stop there.
    """
    events: list[dict[str, Any]] = []
    deadline = time.monotonic() + SETTLE_TIMEOUT
    with socket.create_connection(broker.address, timeout=5):
        while not any(event["k"] == "accept" for event in events):
            if time.monotonic() > deadline:
                raise RuntimeError("no 'accept' telemetry event for the marker connection")
            events += reader.read()
            time.sleep(0.01)
    accepted = next(index for index, event in enumerate(events) if event["k"] == "accept")
    waits = [event for event in events[:accepted] if event["k"] == "wait"]
    return waits[:-1]  # the last one reported the listener, for the marker


def ready_lists(lab: Lab, variant: str) -> list[bool]:
    """Send one ~300-byte PUBLISH to a server reading 64 bytes per recv; print each wait's ready list.

    Returns, for each wait call from the first that reported our client's fd until the server
    had read it all, whether that fd was in its ready list.
    """
    flags = ("--telemetry", "--read-chunk", "64")
    lab.say(f"$ .venv/bin/python -m servers.{variant} --port 0 {' '.join(flags)}")
    with running_server(variant, *flags) as broker:
        reader = TelemetryReader(broker.address[1])
        client = RawClient(broker.address, f"lab04-ready-{variant}")
        try:
            client_fd = connected_fd(reader)
            # QoS 0 to a topic nobody subscribes to: nothing comes back, no other fd wakes up.
            size = client.send(Publish("lab04/nobody-listens", b"r" * READY_PAYLOAD))
            waits = waits_until_read(reader, broker, client_fd)
            waits += waits_before_marker(reader, broker)
        finally:
            client.close()
            reader.close()
    first = next(index for index, event in enumerate(waits) if reports(event, client_fd))
    lab.say(f"  sent one {size}-byte PUBLISH from client fd {client_fd}; the server's waits from its arrival")
    lab.say("  until a second connection, made once the kernel showed every byte read (Recv-Q 0):")
    for event in waits[first:]:
        ready = ", ".join(f"({fd}, {mask_text(mask)})" for fd, mask in event["ready"])
        blocked = f"blocked {event['blocked_s'] * 1000:7.3f} ms"
        lab.say(f"  wait #{event['call']:<3} {event['mode']}  {blocked}  ready [{ready}]")
    return [reports(event, client_fd) for event in waits[first:]]


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
    the_trap(lab, QUICK_STALL_WINDOW if arguments.quick else STALL_WINDOW)
    with_mosquitto_pub(lab)
    the_ready_lists(lab)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
