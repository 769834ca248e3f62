"""Lab 01: run a broker, prove it works with mosquitto's own clients, and watch it through $SYS.

The notes' first afternoon (field notes §1): start the epoll broker, send 123456 from
mosquitto_pub to mosquitto_sub, then subscribe to ``$SYS/#`` and see the connected-clients
counter follow clients as they come and go.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` and ``servers`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))


from labs.bench.targets import Broker
from labs.lab import Lab, lab_arguments, running_server

CONNECTED_TOPIC = "$SYS/broker/clients/connected"
SYS_INTERVAL = "1"  # seconds between $SYS snapshots (the broker's default is 10)
QUICK_SYS_INTERVAL = "0.5"  # --quick: snapshots twice as often, and fewer subscribers


class Lines:
    """A child process whose stdout lines are collected, with their arrival time, by a thread."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.started = time.monotonic()
        self.lines: list[tuple[float, str]] = []
        # Into a pipe, stdio buffers 4 KiB before writing; stdbuf -oL makes mosquitto_sub
        # write each line as it prints it, as it does on a terminal.
        self.process = subprocess.Popen(
            ["stdbuf", "-oL", *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append((time.monotonic() - self.started, line.rstrip("\n")))

    def wait_for(self, predicate: Callable[[str], bool], timeout: float) -> bool:
        """True once some line satisfies ``predicate`` (a callable on the text), within ``timeout``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if any(predicate(text) for _, text in list(self.lines)):
                return True
            time.sleep(0.05)
        return False

    def stop(self) -> None:
        # SIGTERM to this client's own pid: mosquitto_sub then sends DISCONNECT and exits.
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(3)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def mosquitto(tool: str, broker: Broker, *args: str) -> list[str]:
    host, port = broker.address
    return [tool, "-h", host, "-p", str(port), *args]


def shown(command: list[str]) -> str:
    """A command as the learner would type it (quoting the one argument that needs it)."""
    return " ".join(f"'{word}'" if "$" in word or "#" in word else word for word in command)


def smoke_test(lab: Lab, broker: Broker) -> None:
    lab.step("Smoke test, as in the notes: mosquitto_sub in one terminal, mosquitto_pub in another.")
    # -d prints each MQTT packet, so the script can tell when the SUBACK has come back; typed by
    # hand, the subscriber is simply started before the publisher.
    subscriber = Lines(mosquitto("mosquitto_sub", broker, "-t", "test", "-C", "1", "-i", "lab01-sub", "-d"))
    lab.say(f"$ {shown(subscriber.command)}")
    try:
        subscribed = subscriber.wait_for(lambda text: "received SUBACK" in text, timeout=5)
        publish = mosquitto("mosquitto_pub", broker, "-t", "test", "-m", "123456", "-i", "lab01-pub")
        lab.say(f"$ {shown(publish)}")
        subprocess.run(publish, check=False, timeout=10)
        arrived = subscriber.wait_for(lambda text: text == "123456", timeout=5)
        subscriber.process.wait(5)
    finally:
        subscriber.stop()
    lab.say("what mosquitto_sub printed (-d shows every packet it sent and received):")
    for _, text in subscriber.lines:
        lab.say(f"  sub│ {text}")
    lab.check(subscribed and arrived, "mosquitto_sub received 123456 from mosquitto_pub through the broker")


def connected_counts(watcher: Lines) -> list[tuple[float, int]]:
    return [
        (at, int(text.split()[-1])) for at, text in list(watcher.lines) if text.startswith(CONNECTED_TOPIC)
    ]


def wait_for_count(watcher: Lines, wanted: int, after: int, timeout: float) -> bool:
    """True once a snapshot later than the ``after``-th shows ``wanted`` connected clients."""
    return watcher.wait_for(lambda _: any(n == wanted for _, n in connected_counts(watcher)[after:]), timeout)


def watch_sys(lab: Lab, broker: Broker, idle_clients: int) -> None:
    lab.step("Watch the broker through $SYS (retained, republished every --sys-interval seconds).")
    watcher = Lines(mosquitto("mosquitto_sub", broker, "-v", "-t", "$SYS/#", "-i", "lab01-sys"))
    lab.say(f"$ {shown(watcher.command)}")
    idle: list[Lines] = []
    try:
        watcher.wait_for(lambda text: text.startswith(CONNECTED_TOPIC), timeout=5)
        time.sleep(0.2)  # the rest of the first snapshot
        lab.say("the first snapshot: the retained copy of the last one, taken before we connected")
        for _, text in list(watcher.lines):
            lab.say(f"  sys│ {text}")
        sees_itself = wait_for_count(watcher, 1, 0, timeout=5)
        lab.check(sees_itself, "a fresh snapshot counts the $SYS watcher itself: connected 1")
        lab.step(f"Start {idle_clients} more subscribers (mosquitto_sub -t hello/world), then stop them.")
        port = broker.address[1]
        lab.say(f"$ for i in $(seq {idle_clients}); do mosquitto_sub -p {port} -t hello/world -k 900 & done")
        seen = len(connected_counts(watcher))
        idle = [
            Lines(mosquitto("mosquitto_sub", broker, "-t", "hello/world", "-k", "900", "-i", f"lab01-{n}"))
            for n in range(idle_clients)
        ]
        went_up = wait_for_count(watcher, 1 + idle_clients, seen, timeout=5)
        lab.say("$ kill $(jobs -p)   # SIGTERM: each mosquitto_sub sends DISCONNECT and exits")
        seen = len(connected_counts(watcher))
        for client in idle:
            client.stop()
        went_down = wait_for_count(watcher, 1, seen, timeout=5)
    finally:
        for client in [*idle, watcher]:
            client.stop()
    lab.say(f"{CONNECTED_TOPIC} over time (only the changes):")
    previous = None
    for at, count in connected_counts(watcher):
        if count != previous:
            lab.say(f"  +{at:4.1f} s  {count}")
            previous = count
    lab.check(
        went_up, f"the connected count went up to {1 + idle_clients} (the $SYS watcher + {idle_clients})"
    )
    lab.check(went_down, "the connected count went back down to 1 once they disconnected")


def show_log(lab: Lab, broker: Broker) -> None:
    lab.step("Read the broker's log (-v logs every connect and disconnect with its reason).")
    assert broker.stderr_path is not None
    lines = broker.stderr_path.read_text().splitlines()
    events = [line for line in lines if " connect " in line or " disconnect " in line]
    for line in events[:4]:
        _date, clock, *rest = line.split()
        lab.say(f"log│ {clock[:8]} {' '.join(word for word in rest if not word.startswith('peer='))}")
    if len(events) > 4:
        lab.say(f"log│ ... {len(events) - 4} more")


def main() -> int:
    parser = lab_arguments(__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, help="subscribers to start in the $SYS step (5; --quick: 2)")
    args = parser.parse_args()
    clients = args.clients or (2 if args.quick else 5)
    interval = QUICK_SYS_INTERVAL if args.quick else SYS_INTERVAL
    lab = Lab("Lab 01: a first broker, watched through $SYS")
    lab.step("Start the epoll broker (the lab uses --port 0: any free port).")
    with running_server("epoll_lt", "--sys-interval", interval, "-v") as broker:
        host, port = broker.address
        lab.say(f"$ .venv/bin/python -m servers.epoll_lt --port 0 --sys-interval {interval} -v")
        lab.say(f"listening on {host}:{port}   (pid {broker.pid}; the port will differ)")
        smoke_test(lab, broker)
        watch_sys(lab, broker, clients)
        show_log(lab, broker)
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
