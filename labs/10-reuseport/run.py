"""Lab 10: two broker processes on one port with SO_REUSEPORT, and why that alone is not a broker.

The notes' last optimisation: run several instances on the same port (spawn-fcgi style,
today SO_REUSEPORT) to use every core. The kernel spreads new connections across the
listening processes; this lab counts the spread, then shows the catch: each process is a
separate broker, so a message published on one never reaches a subscriber on the other.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs``, ``mqtt`` and ``tui`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.bench.clients import ClientOpener, close_all
from labs.bench.targets import Broker
from labs.bench.wire import connect_packet, subscribe_packet
from labs.lab import Lab, lab_arguments, running_server
from mqtt.codec import Decoder, encode
from mqtt.packets import Connect, Packet, Publish, Subscribe
from tui.sources.tcp_states import tcp_sockets

CLIENTS = 200  # --quick: 50
TOPIC = "lab10/catch"
CONNECTED = "$SYS/broker/clients/connected"
WAIT_SECONDS = 2.0  # --quick: 1 (the message reaches subscriber-B within milliseconds)
PRODUCTION = """\
SO_REUSEPORT suits servers whose connections share nothing (nginx, HAProxy).
A broker's connections share the subscription table, so either:
- one process, one core, as mosquitto runs (and this kit's servers);
- processes that forward to each other: a bridge (mosquitto's 'connection'),
  or a cluster with a shared routing table (EMQX, VerneMQ, HiveMQ);
- or a front that routes by client or topic, so peers land together."""


def free_port() -> int:
    """A port nobody listens on right now (the kernel picks it; we release it at once)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def socket_inodes(pid: int) -> set[int]:
    """Inodes of the sockets a process holds: `ls -l /proc/PID/fd` shows socket:[INODE]."""
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(int(target[8:-1]))
    return inodes


def owners(port: int, brokers: dict[str, Broker]) -> dict[int, str]:
    """Client port → which process holds the server end: sock_diag rows joined with /proc/PID/fd."""
    held = {name: socket_inodes(broker.pid or 0) for name, broker in brokers.items()}
    result = {}
    for row in tcp_sockets(port):
        if row.local[1] == port and row.state == "ESTABLISHED":
            for name, inodes in held.items():
                if row.inode in inodes:
                    result[row.remote[1]] = name
    return result


class Client:
    """A blocking MQTT client on a raw socket, enough to subscribe, publish and wait."""

    def __init__(self, port: int, client_id: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.decoder = Decoder()
        self.pending: list[Packet] = []
        self.sock.sendall(encode(Connect(client_id, keepalive=60)))
        self.next_packet(5)  # CONNACK

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def subscribe(self, topic: str) -> None:
        self.sock.sendall(encode(Subscribe(1, ((topic, 0),))))

    def publish(self, topic: str, payload: bytes) -> None:
        self.sock.sendall(encode(Publish(topic, payload)))

    def next_packet(self, timeout: float) -> Packet | None:
        """The next packet, or None if none arrives within ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not self.pending:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            self.sock.settimeout(remaining)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return None
            if not data:
                return None
            self.pending.extend(self.decoder.feed(data))
        return self.pending.pop(0)

    def payloads(self, topic: str, seconds: float) -> list[bytes]:
        """Payloads of every PUBLISH to ``topic`` that arrives within ``seconds`` (a bounded wait)."""
        deadline = time.monotonic() + seconds
        found = []
        while (packet := self.next_packet(deadline - time.monotonic())) is not None:
            if isinstance(packet, Publish) and packet.topic == topic:
                found.append(packet.payload)
        return found

    def close(self) -> None:
        self.sock.close()


def client_on(port: int, brokers: dict[str, Broker], name: str, client_id: str) -> Client:
    """Connect until the kernel puts the client on process ``name``; at most 50 tries."""
    for _ in range(50):
        client = Client(port, client_id)
        if owners(port, brokers).get(client.port) == name:
            return client
        client.close()
    raise RuntimeError(f"50 clients in a row never landed on process {name}")


def main() -> int:
    args = lab_arguments(__doc__.splitlines()[0]).parse_args()
    clients, wait_seconds = (50, 1.0) if args.quick else (CLIENTS, WAIT_SECONDS)
    lab = Lab("Lab 10: SO_REUSEPORT, two brokers on one port")
    port = free_port()

    lab.step(f"Start two epoll_lt processes on the same port, {port} (will differ).")
    flags = ["--port", str(port), "--reuseport", "--sys-interval", "1"]
    lab.say("$ for i in 1 2; do .venv/bin/python -m servers.epoll_lt \\")
    lab.say(f"      --reuseport --port {port} --sys-interval 1 & done")
    with running_server("epoll_lt", *flags) as first, running_server("epoll_lt", *flags) as second:
        brokers = {"A": first, "B": second}
        listeners = [row for row in tcp_sockets(port) if row.state == "LISTEN"]
        lab.say(f"process A: pid {first.pid}, process B: pid {second.pid}")
        lab.say(f"LISTEN sockets on port {port}: {len(listeners)}")
        lab.check(len(listeners) == 2, "two listening sockets share one port")
        lab.say(f"$ .venv/bin/python -m servers.epoll_lt --port {port}      # without --reuseport")
        refused = subprocess.run(
            [sys.executable, "-m", "servers.epoll_lt", "--port", str(port)],
            cwd=Path(__file__).resolve().parents[2],
            capture_output=True,
            text=True,
            timeout=15,
            check=False,
        )
        lab.say(
            refused.stderr.strip().splitlines()[-1].split(" by pid")[0] if refused.stderr else "(no error)"
        )
        lab.check(
            refused.returncode != 0 and "already in use" in refused.stderr,
            "a process without SO_REUSEPORT cannot join them: EADDRINUSE",
        )

        lab.step(f"Open {clients} MQTT clients (CONNECT + SUBSCRIBE) to 127.0.0.1:{port}.")
        greetings = [connect_packet(f"lab10-{i}") + subscribe_packet(b"lab10/idle") for i in range(clients)]
        report = ClientOpener(("127.0.0.1", port), greetings, acks_expected=2).run()
        held = owners(port, brokers)
        spread = Counter(held.get(sock.getsockname()[1], "?") for sock in report.opened)
        lab.say(f"$ ss -tnp 'sport = :{port}'  (here: sock_diag inodes ⋈ /proc/PID/fd)")
        for name in brokers:
            lab.say(f"process {name}: {spread.get(name, 0):>4} connections")
        lab.say("the kernel hashes each connection's 4-tuple to pick the listener:")
        lab.say("roughly even by chance; not round robin")
        lab.check(all(spread.get(name, 0) > 0 for name in brokers), "both processes got connections")
        lab.check(
            sum(spread.get(name, 0) for name in brokers) == clients,
            f"all {clients} clients are accounted for",
        )

        lab.step("Place clients: connect, look up the process, retry until it fits.")
        subscriber_a = client_on(port, brokers, "A", "subscriber-A")
        publisher_b = client_on(port, brokers, "B", "publisher-B")
        subscriber_b = client_on(port, brokers, "B", "subscriber-B")
        lab.say("subscriber-A on A; publisher-B and subscriber-B on B")
        time.sleep(1.2)  # one $SYS interval: each process republishes its own counters
        for name, client in (("A", subscriber_a), ("B", subscriber_b)):
            client.subscribe(CONNECTED)  # retained: the current value comes back at once
            counts = client.payloads(CONNECTED, 0.5)
            lab.say(f"process {name} says {CONNECTED} = {counts[0].decode() if counts else '?'}")
        lab.say(f"each counts only its own: its share of the {clients} plus the lab's clients on it")

        lab.step(f"The catch: publisher-B publishes to {TOPIC}.")
        for client in (subscriber_a, subscriber_b):
            client.subscribe(TOPIC)
        time.sleep(0.3)  # both SUBSCRIBEs processed before the PUBLISH
        publisher_b.publish(TOPIC, b"hello from process B")
        got_b = subscriber_b.payloads(TOPIC, wait_seconds)
        got_a = subscriber_a.payloads(TOPIC, wait_seconds)
        lab.say(f"subscriber-B (on B) received: {', '.join(map(repr, got_b)) or 'nothing'}")
        waited = f"subscriber-A (on A), {wait_seconds:g} s later:"
        lab.say(f"{waited} {', '.join(map(repr, got_a)) or 'nothing'}")
        lab.check(got_b == [b"hello from process B"], "B delivered the message to its own subscriber")
        lab.check(not got_a, "subscriber-A never got it: two processes are two brokers")
        for client in (subscriber_a, publisher_b, subscriber_b):
            client.close()
        close_all(report.sockets)

    lab.step("What production brokers do instead.")
    for line in PRODUCTION.splitlines():
        lab.say(line)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
