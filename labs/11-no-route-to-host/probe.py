"""Lab 11's client-side probe, run by run.py as ``ip netns exec CLIENT python probe.py HOST PORT``.

One blocking connect(), its errno, and what came back from the network, read without tcpdump:
raw sockets see every ICMP message and every TCP segment the namespace receives, and the
kernel's own counters (/proc/net/snmp and netstat, per namespace) count the SYNs it sent again.
Prints one JSON object.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import socket
import time
from pathlib import Path

ICMP_NAMES = {  # type 3 (destination unreachable): the codes a REJECT rule can send
    0: "net unreachable",
    1: "host unreachable",
    3: "port unreachable",
    9: "net prohibited",
    10: "host prohibited",
    13: "administratively prohibited",
}
TCP_RST = 0x04


def kernel_counters() -> dict[str, int]:
    """/proc/net/snmp and /proc/net/netstat (this namespace's), as {'TcpExt.TCPSynRetrans': n}.

    Both files come in pairs of lines, a header of names and a row of numbers, per group.
    """
    counters: dict[str, int] = {}
    for name in ("snmp", "netstat"):
        lines = Path(f"/proc/net/{name}").read_text().splitlines()
        for header, values in zip(lines[::2], lines[1::2], strict=True):
            group, names = header.split(":", 1)
            numbers = values.split(":", 1)[1].split()
            counters.update({f"{group}.{n}": int(v) for n, v in zip(names.split(), numbers, strict=True)})
    return counters


def raw_listener(protocol: int) -> socket.socket:
    """A raw socket that receives a copy of every incoming packet of ``protocol`` (root only)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, protocol)
    sock.setblocking(False)
    return sock


def drain(sock: socket.socket) -> list[bytes]:
    packets = []
    while True:
        try:
            packets.append(sock.recv(65535))
        except BlockingIOError:
            return packets


def describe_icmp(packet: bytes, port: int) -> str | None:
    """'ICMP type 3 code 10 (host prohibited) from A', if it is about a TCP segment to ``port``."""
    header = (packet[0] & 0x0F) * 4
    kind, code = packet[header], packet[header + 1]
    inner = packet[header + 8 :]  # the offending packet's IP header and first 8 bytes come back
    inner_header = (inner[0] & 0x0F) * 4 if inner else 0
    if len(inner) < inner_header + 4 or inner[9] != socket.IPPROTO_TCP:
        return None
    if int.from_bytes(inner[inner_header + 2 : inner_header + 4], "big") != port:
        return None
    name = ICMP_NAMES.get(code, "?") if kind == 3 else "?"
    return f"ICMP type {kind} code {code} ({name}) from {socket.inet_ntoa(packet[12:16])}"


def describe_rst(packet: bytes, port: int) -> str | None:
    """'TCP RST from A:PORT' for a reset sent from ``port``; None for any other segment."""
    header = (packet[0] & 0x0F) * 4
    source_port = int.from_bytes(packet[header : header + 2], "big")
    if source_port != port or not packet[header + 13] & TCP_RST:
        return None
    return f"TCP RST from {socket.inet_ntoa(packet[12:16])}:{port}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    args = parser.parse_args()
    icmp, tcp = raw_listener(socket.IPPROTO_ICMP), raw_listener(socket.IPPROTO_TCP)
    before = kernel_counters()
    started = time.monotonic()
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as client:
        # Blocking, no Python timeout: connect_ex returns the kernel's own errno, whether it came
        # from the routing table, an ICMP error, a RST, or the SYN retransmissions running out.
        code = client.connect_ex((args.host, args.port))
    seconds = time.monotonic() - started
    after = kernel_counters()
    replies = [describe_icmp(p, args.port) for p in drain(icmp)] + [
        describe_rst(p, args.port) for p in drain(tcp)
    ]
    result = {
        "errno": code,
        "name": errno.errorcode.get(code, "OK") if code else "OK",
        "strerror": os.strerror(code) if code else "connected",
        "seconds": round(seconds, 2),
        "replies": [reply for reply in replies if reply],
        # ActiveOpens: connect() calls that sent a SYN; TCPSynRetrans: SYNs sent again.
        "syn_sent": after["Tcp.ActiveOpens"] - before["Tcp.ActiveOpens"],
        "syn_retransmitted": after["TcpExt.TCPSynRetrans"] - before["TcpExt.TCPSynRetrans"],
        # ICMP errors that arrived while the socket was busy in a system call (here: connect()).
        "icmp_while_busy": after["TcpExt.LockDroppedIcmps"] - before["TcpExt.LockDroppedIcmps"],
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
