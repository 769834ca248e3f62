"""SYN, FIN and RST segments on one port: the source of the TUI's handshake ladder.

scapy decodes only a few thousand packets per second, so a kernel BPF filter passes just
the segments that open or close connections, and the capture runs in a child process:
in the server's (or the TUI's) process the GIL would stall everything else. The child
writes one JSON line per segment to a pipe; ``PacketCapture.poll()`` never blocks.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import select
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from tui.child import die_with_parent

CAP_NET_RAW = 13  # include/uapi/linux/capability.h: needed for an AF_PACKET socket
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment. ``t`` is time.monotonic() seconds, the telemetry's clock.

    ``flags`` spells the TCP flags in scapy's order: "S" (SYN), "SA" (SYN+ACK),
    "FA" (FIN+ACK), "R"/"RA" (reset), "FPA" (FIN with the last data).
    """

    t: float
    src: str
    sport: int
    dst: str
    dport: int
    flags: str
    seq: int
    ack: int


def capture_filter(port: int) -> str:
    """pcap filter: this port, and only segments carrying SYN, FIN or RST.

    libpcap's ``tcp[tcpflags]`` reads IPv4 only. For IPv6 the flags byte is read at a
    fixed offset, 40 (IPv6 header) + 13, valid when TCP follows the header directly
    (next header 6), as it does on loopback; FIN|SYN|RST are its low three bits.
    """
    ipv4 = "tcp[tcpflags] & (tcp-syn|tcp-fin|tcp-rst) != 0"
    ipv6 = "ip6[6] == 6 and ip6[53] & 0x07 != 0"
    return f"tcp port {port} and ({ipv4} or ({ipv6}))"


def capture_available() -> tuple[bool, str]:
    """(True, "") if a capture can start here, else (False, why not); never raises.

    Cheap checks only, without importing scapy (slow, and the point of the child): a
    broken scapy installation shows up as ``PacketCapture.error`` after ``start()``.
    """
    if not _has_capability(CAP_NET_RAW):
        return False, "packet capture needs root (CAP_NET_RAW) to open an AF_PACKET socket"
    if importlib.util.find_spec("scapy") is None:
        return False, "scapy is not installed"
    # scapy compiles filter= with libpcap through ctypes, found the same way.
    if ctypes.util.find_library("pcap") is None:
        return False, "libpcap not found; BPF filters need it (apt-get install libpcap0.8)"
    return True, ""


def _has_capability(bit: int) -> bool:
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> bit & 1)
    except OSError:
        pass
    return os.geteuid() == 0


class PacketCapture:
    """Runs the capture child for ``port`` on ``iface`` and collects its segments."""

    available = staticmethod(capture_available)

    def __init__(self, port: int, iface: str = "lo") -> None:
        self.port = port
        self.iface = iface
        self.ready = False  # the child's socket is open and its filter attached
        self.error: str | None = None  # why the child stopped, if it said
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None  # the child's stdout
        self._partial_line = b""
        self._segments: list[Segment] = []

    def start(self) -> None:
        """Spawn the child; it reports readiness or an error asynchronously (see poll)."""
        if self._child is not None:
            return
        # -m needs the project importable even when the TUI was started from elsewhere.
        search_path = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
        self._child = subprocess.Popen(
            [sys.executable, "-m", "tui.sources.packet_capture", str(self.port), self.iface],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,  # failures arrive as {"error": ...} lines instead
            env=environment,
            preexec_fn=die_with_parent,  # no orphaned capture if the TUI is killed
        )
        self._pipe = self._child.stdout
        assert self._pipe is not None
        # Non-blocking, so poll() can be called from a UI timer without ever stalling it.
        os.set_blocking(self._pipe.fileno(), False)

    def poll(self) -> list[Segment]:
        """Segments captured since the last call; returns at once."""
        self._drain()
        segments, self._segments = self._segments, []
        return segments

    def wait_ready(self, timeout: float) -> bool:
        """Block until the child is capturing (True), or it failed or ``timeout`` passed (False)."""
        deadline = time.monotonic() + timeout
        while not self.ready and self.error is None and self._pipe is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            select.select([self._pipe], [], [], remaining)
            self._drain()
        return self.ready

    def stop(self) -> None:
        """Stop the child and reap it. Segments not yet polled are discarded."""
        child, pipe = self._child, self._pipe
        self._child = self._pipe = None
        self.ready = False
        if child is None or pipe is None:
            return
        child.terminate()
        _reap(child)
        pipe.close()

    def _drain(self) -> None:
        """Read whatever the pipe holds and parse complete lines."""
        if self._child is None or self._pipe is None:
            return
        chunks = [self._partial_line]
        while True:
            try:
                chunk = os.read(self._pipe.fileno(), 65536)
            except BlockingIOError:
                break
            if not chunk:  # EOF: the child is exiting, whether it said why or not
                status = _reap(self._child)
                self.error = self.error or f"capture process exited with status {status}"
                break
            chunks.append(chunk)
        *lines, self._partial_line = b"".join(chunks).split(b"\n")
        for line in lines:
            self._handle(line)

    def _handle(self, line: bytes) -> None:
        try:
            message = json.loads(line)
        except ValueError:
            return  # not ours: a library printed to stdout
        if "error" in message:
            self.error = message["error"]
        elif "ready" in message:
            self.ready = True
        else:
            self._segments.append(Segment(**message))


def _reap(child: subprocess.Popen[bytes]) -> int:
    """Wait for ``child`` to exit (killing it if it lingers); return its exit status."""
    try:
        return child.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


# ---------------------------------------------------------------- the child process


def _emit(message: dict) -> None:
    sys.stdout.write(json.dumps(message) + "\n")
    sys.stdout.flush()  # a pipe is block-buffered: without this the parent sees nothing


def _child_main(port: int, iface: str) -> None:
    """Capture until killed, writing one JSON line per segment."""
    try:
        from scapy.config import conf
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
        from scapy.packet import Packet
        from scapy.sendrecv import sniff
    except Exception as error:
        _emit({"error": f"scapy import failed: {error}"})
        return
    # Capture timestamps are wall-clock; shift them onto the monotonic clock once.
    wall_to_monotonic = time.monotonic() - time.time()

    def segment(packet: Packet) -> None:
        network = packet.getlayer(IP) or packet.getlayer(IPv6)
        tcp = packet[TCP]
        _emit({
            "t": float(packet.time) + wall_to_monotonic,
            "src": network.src, "sport": tcp.sport, "dst": network.dst, "dport": tcp.dport,
            "flags": str(tcp.flags), "seq": tcp.seq, "ack": tcp.ack,
        })  # fmt: skip

    try:
        # L2socket=conf.L2socket: sniff's default listen socket also receives our own
        # outgoing copies (PACKET_OUTGOING), and on lo every packet is both sent and
        # received, so each would show twice; L2Socket drops the outgoing copy.
        sniff(
            iface=iface, filter=capture_filter(port), store=False, prn=segment,
            L2socket=conf.L2socket, started_callback=lambda: _emit({"ready": True}),
        )  # fmt: skip
    except Exception as error:
        _emit({"error": f"capture failed: {type(error).__name__}: {error}"})


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), sys.argv[2])
