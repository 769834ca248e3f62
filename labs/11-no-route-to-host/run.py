"""Lab 11: "No route to host", staged between two network namespaces with a firewall of their own.

Field notes §6: a VM's firewall answered the broker's port with ICMP host-unreachable, and
flushing iptables fixed it. Here a REJECT rule in the server's namespace gives the same error;
a DROP rule, a stopped broker and a missing route give three others. Each is told apart by its
errno and by what came back (an ICMP message, a RST, or nothing), read without tcpdump.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs`` imports from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.bench.targets import Broker, await_listening, spawn
from labs.lab import Lab, lab_arguments
from labs.netns import delete_namespace, namespaces

HERE = Path(__file__).resolve().parent
SERVER_ADDRESS, CLIENT_ADDRESS, PREFIX = "10.211.0.2", "10.211.0.1", 24
UNROUTED_ADDRESS = "10.99.0.1"  # in no route of the client's namespace, which has no default route
PORT = 1883
TOPIC, MESSAGE = "lab11/hello", "123456"
NAMESPACE_PREFIX = "epoll-mqtt-lab11-"
REJECT = ["INPUT", "-p", "tcp", "--dport", str(PORT), "-j", "REJECT", "--reject-with"]
DROP = ["INPUT", "-p", "tcp", "--dport", str(PORT), "-j", "DROP"]
TOOLS = ("ip", "iptables", "mosquitto_pub", "mosquitto_sub")


@dataclass
class Pair:
    """The two namespaces, and the broker running in the server's."""

    server: str
    client: str
    broker: Broker | None = None
    rows: list[tuple[str, str, str, str]] = field(default_factory=list)  # the summary table

    def names(self, text: str) -> str:
        """A command as the README prints it: SRV and CLI instead of the pid-suffixed names."""
        return text.replace(self.server, "SRV").replace(self.client, "CLI")


def run(command: list[str], timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)


def in_namespace(namespace: str, *command: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return run(["ip", "netns", "exec", namespace, *command], timeout)


def say_command(lab: Lab, text: str, width: int = 92) -> None:
    """``$ command``, broken with a backslash before ``width`` as a learner would type it."""
    line = "$"
    for word in text.split():
        if len(line) + 1 + len(word) > width - 2:
            lab.say(line + " \\")
            line = "     "
        line += " " + word
    lab.say(line)


def shown(lab: Lab, pair: Pair, namespace: str, *command: str) -> subprocess.CompletedProcess[str]:
    """Run ``command`` in ``namespace``, printing it first as the learner would type it."""
    say_command(lab, pair.names(f"ip netns exec {namespace} {' '.join(command)}"))
    completed = in_namespace(namespace, *command)
    if completed.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr.strip()}")
    return completed


def host_state() -> tuple[str, str]:
    """The host's filter rules (comment lines dropped: they hold a date) and tcp_syn_retries."""
    saved = run(["iptables-save"]).stdout
    rules = "\n".join(line for line in saved.splitlines() if not line.startswith("#"))
    rules += run(["iptables", "-S"]).stdout
    return rules, Path("/proc/sys/net/ipv4/tcp_syn_retries").read_text().strip()


def create_pair(lab: Lab, pair: Pair, syn_retries: int) -> None:
    commands = [
        ["ip", "netns", "add", pair.server],
        ["ip", "netns", "add", pair.client],
        # Both ends are created inside the namespaces: the host's own interfaces are never touched.
        [
            "ip",
            "link",
            "add",
            "veth0",
            "netns",
            pair.client,
            "type",
            "veth",
            "peer",
            "name",
            "veth0",
            "netns",
            pair.server,
        ],
        ["ip", "-n", pair.client, "addr", "add", f"{CLIENT_ADDRESS}/{PREFIX}", "dev", "veth0"],
        ["ip", "-n", pair.server, "addr", "add", f"{SERVER_ADDRESS}/{PREFIX}", "dev", "veth0"],
        ["ip", "-n", pair.client, "link", "set", "veth0", "up"],
        ["ip", "-n", pair.server, "link", "set", "veth0", "up"],
        ["ip", "-n", pair.server, "link", "set", "lo", "up"],
        # Per namespace: the host keeps its 6 retries (about 127 s); the client gives up sooner.
        ["ip", "netns", "exec", pair.client, "sysctl", "-qw", f"net.ipv4.tcp_syn_retries={syn_retries}"],
    ]
    for command in commands:
        say_command(lab, pair.names(" ".join(command)))
        completed = run(command)
        if completed.returncode != 0:
            raise RuntimeError(f"{' '.join(command)} failed: {completed.stderr.strip()}")


def remove_pair(pair: Pair) -> None:
    """Stop our broker, kill anything else left inside (only ours can be there), delete both."""
    if pair.broker is not None:
        pair.broker.stop()
    for namespace in (pair.server, pair.client):
        delete_namespace(namespace)  # deleting one end of a veth deletes the pair


def start_broker(lab: Lab, pair: Pair) -> None:
    command = [sys.executable, "-m", "servers.broker", "--host", SERVER_ADDRESS, "--port", str(PORT)]
    say_command(
        lab,
        pair.names(
            f"ip netns exec {pair.server} .venv/bin/python -m servers.broker "
            f"--host {SERVER_ADDRESS} --port {PORT} &"
        ),
    )
    pair.broker = await_listening(spawn("broker", ["ip", "netns", "exec", pair.server, *command]))
    lab.say(f"listening on {SERVER_ADDRESS}:{PORT}")


def listening(lab: Lab, pair: Pair) -> bool:
    """``ss -tln`` in the server's namespace, the first thing to look at: does anything listen?"""
    output = shown(lab, pair, pair.server, "ss", "-tln").stdout
    rows = [line.split() for line in output.splitlines()[1:]]
    for row in rows:
        lab.say(f"  {row[0]:<8}{row[3]:<20}")
    if not rows:
        lab.say("  (no listening socket at all)")
    return any(row[0] == "LISTEN" and row[3] == f"{SERVER_ADDRESS}:{PORT}" for row in rows)


def firewall(lab: Lab, pair: Pair, *rule: str) -> None:
    shown(lab, pair, pair.server, "iptables", *rule)


def rule_hits(pair: Pair) -> int:
    """Packets the first INPUT rule matched: the first column of ``iptables -L INPUT -n -v -x``."""
    output = in_namespace(pair.server, "iptables", "-L", "INPUT", "-n", "-v", "-x").stdout
    rules = output.splitlines()[2:]
    return int(rules[0].split()[0]) if rules else 0


@dataclass(frozen=True)
class Attempt:
    """One connection attempt, seen by mosquitto_pub (its message) and by probe.py (the rest)."""

    publisher_exit: int
    publisher_said: str
    probe: dict[str, object]

    @property
    def errno(self) -> object:
        return self.probe.get("errno")

    def agrees(self) -> bool:
        """mosquitto_pub printed exactly the strerror() of the errno connect_ex returned."""
        return self.publisher_exit != 0 and str(self.probe.get("strerror")) in self.publisher_said


def attempt(lab: Lab, pair: Pair, host: str, case: str) -> Attempt:
    """mosquitto_pub, then probe.py, both from the client's namespace, one after the other."""
    publish = ["mosquitto_pub", "-h", host, "-p", str(PORT), "-t", TOPIC, "-m", MESSAGE]
    say_command(lab, pair.names(f"ip netns exec {pair.client} {' '.join(publish)}"))
    published = in_namespace(pair.client, *publish)
    said = (published.stderr + published.stdout).strip()
    lab.say(f"  {said or '(nothing)'}   (exit status {published.returncode})")
    say_command(
        lab,
        pair.names(
            f"ip netns exec {pair.client} .venv/bin/python labs/11-no-route-to-host/probe.py {host} {PORT}"
        ),
    )
    output = in_namespace(pair.client, sys.executable, str(HERE / "probe.py"), host, str(PORT)).stdout
    probe = json.loads(output) if output.strip() else {}
    seconds = float(probe.get("seconds", 0))
    lab.say(
        f"  connect_ex → {probe.get('errno')} {probe.get('name')} ({probe.get('strerror')}) "
        f"after {seconds:.2f} s"
    )
    replies = [str(reply) for reply in probe.get("replies") or ["nothing"]]
    lab.say(f"  came back: {replies[0]}" + (f", {len(replies)} times" if len(replies) > 1 else ""))
    lab.say(f"  SYN sent: {probe.get('syn_sent')}, sent again: {probe.get('syn_retransmitted')}")
    pair.rows.append(
        (case, f"{probe.get('errno')} {probe.get('name')}", replies[0].split(" from ")[0], f"{seconds:.2f} s")
    )
    return Attempt(published.returncode, said, probe)


def rejected(lab: Lab, pair: Pair) -> None:
    lab.step("The server's firewall REJECTs port 1883, as stock CentOS does.")
    firewall(lab, pair, "-A", *REJECT, "icmp-host-prohibited")
    prohibited = attempt(lab, pair, SERVER_ADDRESS, "REJECT icmp-host-prohibited")
    lab.say("the notes' firewall sent 'host unreachable' (code 1); swap the rule and try again:")
    firewall(lab, pair, "-R", "INPUT", "1", *REJECT[1:], "icmp-host-unreachable")
    unreachable = attempt(lab, pair, SERVER_ADDRESS, "REJECT icmp-host-unreachable")
    busy = prohibited.probe.get("icmp_while_busy")
    lab.say("why 1 s: the first ICMP came back while connect() still held its socket (veth is")
    lab.say(f"that fast; TcpExt LockDroppedIcmps +{busy}), so the kernel kept it as a soft error;")
    lab.say("the SYN sent again 1 s later met the same ICMP, which ended it. Across a real")
    lab.say("network the ICMP arrives after connect() sleeps, and the first one is enough.")
    icmp = all(
        str(a.probe.get("replies", [""])[0]).startswith("ICMP type 3") for a in (prohibited, unreachable)
    )
    lab.check(
        all(a.errno == 113 and a.agrees() for a in (prohibited, unreachable)) and icmp,
        "REJECT: 'No route to host', errno 113 EHOSTUNREACH, an ICMP type 3 came back",
    )

    lab.step("Diagnose it on the server: is anything listening? what did the firewall do?")
    still_listening = listening(lab, pair)
    hits = rule_hits(pair)
    say_command(lab, pair.names(f"ip netns exec {pair.server} iptables -L INPUT -n -v -x"))
    lab.say(f"  the REJECT rule matched {hits} packets: the SYNs it answered with ICMP")
    lab.say("the broker listens; the error came from the network, not from the broker")
    lab.check(still_listening and hits >= 2, "the broker listens all along; the REJECT rule counted the SYNs")


def dropped(lab: Lab, pair: Pair, syn_retries: int) -> None:
    host = host_state()[1]
    lab.step(f"A silent DROP instead; tcp_syn_retries is {syn_retries} in CLI, {host} on the host.")
    firewall(lab, pair, "-R", "INPUT", "1", *DROP[1:])
    timed_out = attempt(lab, pair, SERVER_ADDRESS, "DROP")
    linear = in_namespace(pair.client, "sysctl", "-n", "net.ipv4.tcp_syn_linear_timeouts").stdout.strip()
    lab.say(
        f"tcp_syn_retries={syn_retries} gives connect() about 2^{syn_retries + 1} - 1 = "
        f"{2 ** (syn_retries + 1) - 1} s; the host's {host}, about {2 ** (int(host) + 1) - 1} s"
    )
    if linear:
        lab.say(f"(this kernel resends a SYN every second for the first tcp_syn_linear_timeouts = {linear}")
        lab.say(" resends, so it sends more SYNs than tcp_syn_retries says)")
    lab.check(
        timed_out.errno == 110
        and timed_out.agrees()
        and int(timed_out.probe.get("syn_retransmitted", 0)) >= 1
        and not timed_out.probe.get("replies"),
        "DROP: 'Connection timed out', errno 110 ETIMEDOUT, the SYN sent again, nothing came back",
    )


def flushed(lab: Lab, pair: Pair) -> None:
    lab.step("Flush the rules, as the notes did: iptables -F.")
    firewall(lab, pair, "-F")
    publish = ["mosquitto_pub", "-h", SERVER_ADDRESS, "-p", str(PORT), "-t", TOPIC, "-m", MESSAGE, "-r"]
    published = shown(lab, pair, pair.client, *publish)
    # -r (retained): the subscriber gets the message whenever it subscribes, so no race.
    subscribe = ["mosquitto_sub", "-h", SERVER_ADDRESS, "-p", str(PORT), "-t", TOPIC, "-C", "1", "-W", "10"]
    received = shown(lab, pair, pair.client, *subscribe).stdout.strip()
    lab.say(f"  {received}")
    pair.rows.append(("no rule (iptables -F)", "0", "SYN-ACK: connected", "-"))
    lab.check(
        published.returncode == 0 and received == MESSAGE,
        "after iptables -F: mosquitto_pub succeeds and mosquitto_sub receives 123456",
    )


def refused(lab: Lab, pair: Pair) -> None:
    lab.step("No firewall, but nothing listening: stop the broker.")
    assert pair.broker is not None
    lab.say(f"$ kill {pair.broker.pid}   (the broker's pid)")
    pair.broker.stop()
    pair.broker = None
    nothing = not listening(lab, pair)
    refusal = attempt(lab, pair, SERVER_ADDRESS, "nothing listening")
    lab.check(
        nothing
        and refusal.errno == 111
        and refusal.agrees()
        and str(refusal.probe.get("replies", [""])[0]).startswith("TCP RST"),
        "nothing listening: 'Connection refused', errno 111 ECONNREFUSED, a RST came back",
    )


def unrouted(lab: Lab, pair: Pair) -> None:
    lab.step(f"An address no route covers ({UNROUTED_ADDRESS}; CLI has no default route).")
    for line in shown(lab, pair, pair.client, "ip", "route").stdout.splitlines():
        lab.say(f"  {line}")
    route = in_namespace(pair.client, "ip", "route", "get", UNROUTED_ADDRESS)
    say_command(lab, pair.names(f"ip netns exec {pair.client} ip route get {UNROUTED_ADDRESS}"))
    lab.say(f"  {route.stderr.strip()}")
    nowhere = attempt(lab, pair, UNROUTED_ADDRESS, "no route")
    lab.check(
        nowhere.errno == 101 and nowhere.agrees() and nowhere.probe.get("syn_sent") == 0,
        "no route: 'Network is unreachable', errno 101 ENETUNREACH, no SYN ever left",
    )


def summary(lab: Lab, pair: Pair) -> None:
    lab.step("Every answer side by side.")
    lab.say(f"{'case':<30}{'errno':<17}{'what came back':<40}time")
    for case, code, reply, seconds in pair.rows:
        lab.say(f"{case:<30}{code:<17}{reply:<40}{seconds}")


def main() -> int:
    args = lab_arguments(__doc__.splitlines()[0]).parse_args()
    lab = Lab('Lab 11: "No route to host"')
    lab.step("Two network namespaces joined by a veth pair: CLI 10.211.0.1, SRV 10.211.0.2.")
    missing = [tool for tool in TOOLS if shutil.which(tool) is None]
    if os.geteuid() != 0 or missing:
        reason = f"missing {', '.join(missing)}" if missing else "not root"
        lab.say(f"skipped: namespaces and iptables need root, ip, iptables and mosquitto clients ({reason})")
        return lab.finish()
    syn_retries = 1 if args.quick else 2
    host_before = host_state()
    pair = Pair(f"{NAMESPACE_PREFIX}{os.getpid()}-srv", f"{NAMESPACE_PREFIX}{os.getpid()}-cli")
    try:
        create_pair(lab, pair, syn_retries)
        lab.say(f"host: net.ipv4.tcp_syn_retries = {host_before[1]} (unchanged)")
        start_broker(lab, pair)
        rejected(lab, pair)
        dropped(lab, pair, syn_retries)
        flushed(lab, pair)
        refused(lab, pair)
        unrouted(lab, pair)
        summary(lab, pair)
    finally:
        remove_pair(pair)
    lab.step("Delete both namespaces; the host's rules and sysctl were never touched.")
    lab.say("$ ip netns del SRV; ip netns del CLI")
    left = [name for name in namespaces() if name in (pair.server, pair.client)]
    lab.say(f"of our two namespaces, left: {len(left)}")
    lab.check(
        host_state() == host_before and not left,
        "the host's iptables rules and tcp_syn_retries are untouched, the namespaces are gone",
    )
    return lab.finish()


if __name__ == "__main__":
    sys.exit(main())
