"""SYN, FIN and RST segments on one port, and how many the kernel dropped: the handshake ladder's source.

A child process owns an AF_PACKET socket; in the server's (or the TUI's) process the GIL
would stall everything else. A kernel BPF filter (compiled by libpcap) passes only the
segments that open or close connections, cut to their headers, and the child decodes those
with ``struct`` and writes one JSON line per segment to a pipe; ``PacketCapture.poll()``
never blocks.

The socket's receive buffer is where a burst waits while the child is busy. When it is full
the kernel drops the segment and counts it: ``getsockopt(PACKET_STATISTICS)`` returns
``struct tpacket_stats {tp_packets, tp_drops}`` since the last call (reading resets them,
and tp_packets includes the drops). The child reads them after every segment it receives,
so each segment carries the drops that happened before it was handed over (``Segment.dropped``),
and it also reports the running totals every ``STATS_SECONDS``.
"""

from __future__ import annotations

import ctypes.util
import importlib.util
import json
import os
import select
import socket
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tui.child import die_with_parent

CAP_NET_RAW = 13  # include/uapi/linux/capability.h: needed for an AF_PACKET socket
PROJECT_ROOT = Path(__file__).resolve().parents[2]
STOP_GRACE_SECONDS = 2.0
# A queued segment costs its skb's truesize, about 830 bytes on lo (measured: 158 segments
# filled the 128 KiB buffer scapy used to ask for, hence "176 of 1,200"). The kernel doubles
# the value asked for, so 32 MiB holds about 80,000 segments: both the open and the close
# burst of 10,000 clients twice over. It costs nothing while the child keeps up: the kernel
# charges memory per queued segment, not up front.
RCVBUF_BYTES = 32 * 1024 * 1024
# Ethernet 14 + IPv6 40 + TCP with the most options 60 = 114 bytes: every header, no payload.
# The kernel trims each frame to this before queueing, so a FIN carrying 30 KB of last data
# queues as ~830 bytes, not ~33 KB (measured), and the child copies out only headers.
SNAP_BYTES = 128
STATS_SECONDS = 0.5  # the running totals are reported at most this often, and when idle
BATCH_FRAMES = 256  # frames read before the child writes what it has to the pipe

# include/uapi/linux/if_packet.h, asm-generic/socket.h, if_ether.h, if_arp.h
SOL_PACKET, PACKET_STATISTICS, PACKET_IGNORE_OUTGOING = 263, 6, 23
SO_ATTACH_FILTER, SO_RCVBUFFORCE, SO_TIMESTAMPNS = 26, 33, 35
ETH_P_ALL = 0x0003
TPACKET_STATS = struct.Struct("=II")  # tp_packets, tp_drops
TIMESPEC = struct.Struct("=qq")
# ARPHRD (from /sys/class/net/IF/type) -> (libpcap DLT, bytes of link header before IP)
LINK_TYPES = {1: (1, 14), 772: (1, 14), 65534: (12, 0)}  # Ethernet, loopback, none (tun)
TCP_FLAG_LETTERS = "FSRPAUEC"  # bit 0 upwards, spelled as scapy spells them: "SA", "FA", "FPA"


@dataclass(frozen=True, slots=True)
class Segment:
    """One captured TCP segment. ``t`` is time.monotonic() seconds, the telemetry's clock.

    ``flags`` spells the TCP flags as scapy does: "S" (SYN), "SA" (SYN+ACK), "FA" (FIN+ACK),
    "R"/"RA" (reset), "FPA" (FIN with the last data). ``dropped``: segments the kernel dropped
    (buffer full) since the previous segment was handed over, all before ``dropped_until``.
    """

    t: float
    src: str
    sport: int
    dst: str
    dport: int
    flags: str
    seq: int
    ack: int
    dropped: int = 0
    dropped_until: float = 0.0


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

    Cheap checks only: a broken installation shows up as ``PacketCapture.error`` after ``start()``.
    """
    if not _has_capability(CAP_NET_RAW):
        return False, "packet capture needs root (CAP_NET_RAW) to open an AF_PACKET socket"
    if importlib.util.find_spec("scapy") is None:
        return False, "scapy is not installed"
    # The filter is compiled with libpcap through scapy's ctypes bindings, found this way.
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
    """Runs the capture child for ``port`` on ``iface`` and collects its segments and counts.

    ``captured``: segments handed over so far. ``kernel_packets`` and ``dropped``: the kernel's
    own totals (tp_packets, which includes the drops, and tp_drops) at the child's last report.
    """

    available = staticmethod(capture_available)

    def __init__(self, port: int, iface: str = "lo", rcvbuf_bytes: int = RCVBUF_BYTES) -> None:
        self.port = port
        self.iface = iface
        self.rcvbuf_bytes = rcvbuf_bytes
        self.ready = False  # the child's socket is open and its filter attached
        self.error: str | None = None  # why the child stopped, if it said
        self.captured = 0
        self.kernel_packets = 0
        self.dropped = 0
        self._child: subprocess.Popen[bytes] | None = None
        self._pipe: IO[bytes] | None = None  # the child's stdout
        self._partial_line = b""
        self._segments: list[Segment] = []

    @property
    def child_pid(self) -> int | None:
        return self._child.pid if self._child is not None else None

    def start(self) -> None:
        """Spawn the child; it reports readiness or an error asynchronously (see poll)."""
        if self._child is not None:
            return
        # -m needs the project importable even when the TUI was started from elsewhere.
        search_path = [str(PROJECT_ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]
        environment = {**os.environ, "PYTHONPATH": os.pathsep.join(search_path)}
        arguments = [str(self.port), self.iface, str(self.rcvbuf_bytes)]
        self._child = subprocess.Popen(
            [sys.executable, "-m", "tui.sources.packet_capture", *arguments],
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
        elif "kernel" in message:
            self.kernel_packets, self.dropped = message["kernel"]
        else:
            self._segments.append(Segment(**message))
            self.captured += 1


def _reap(child: subprocess.Popen[bytes]) -> int:
    """Wait for ``child`` to exit (killing it if it lingers); return its exit status."""
    try:
        return child.wait(STOP_GRACE_SECONDS)
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait()


# ---------------------------------------------------------------- the child process


def _emit(lines: list[dict[str, Any]]) -> None:
    if lines:
        sys.stdout.write("".join(json.dumps(line) + "\n" for line in lines))
        sys.stdout.flush()  # a pipe is block-buffered: without this the parent sees nothing


def _open_capture_socket(port: int, iface: str, rcvbuf_bytes: int) -> tuple[socket.socket, int]:
    """The AF_PACKET socket, filtered and sized before it is bound; and its link header's length."""
    try:
        hardware_type = int(Path(f"/sys/class/net/{iface}/type").read_text())
    except (OSError, ValueError) as error:
        raise OSError(f"no network interface {iface!r} ({error})") from error
    if hardware_type not in LINK_TYPES:
        raise OSError(f"interface {iface!r} has link type {hardware_type}: not Ethernet, loopback or tun")
    link_type, header_bytes = LINK_TYPES[hardware_type]
    # Protocol 0: the socket receives nothing until bind(), after the filter is attached. Created
    # with ETH_P_ALL it would queue every frame of every interface, unfiltered, in between.
    capture = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    # SO_RCVBUFFORCE (root) may exceed net.core.rmem_max, which SO_RCVBUF is capped by.
    capture.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, rcvbuf_bytes)
    # On lo every packet is both sent and received; without this the kernel queues (and
    # counts) each one twice, the outgoing copy first.
    capture.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
    # Kernel timestamps of arrival: the drop accounting below compares them with its own reads.
    capture.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    _attach_filter(capture, capture_filter(port), link_type)
    capture.bind((iface, ETH_P_ALL))  # from here on, lo's frames that pass the filter are queued
    capture.getsockopt(SOL_PACKET, PACKET_STATISTICS, TPACKET_STATS.size)  # start the counts at zero
    return capture, header_bytes


def _attach_filter(capture: socket.socket, expression: str, link_type: int) -> None:
    """Compile ``expression`` with libpcap (snap length SNAP_BYTES) and attach it as classic BPF."""
    from scapy.libs.structures import bpf_program, sock_fprog
    from scapy.libs.winpcapy import pcap_close, pcap_compile, pcap_freecode, pcap_geterr, pcap_open_dead

    program = bpf_program()
    pcap = pcap_open_dead(link_type, SNAP_BYTES)  # no device needed: only the link type matters
    try:
        if pcap_compile(pcap, ctypes.byref(program), expression.encode(), 1, 0xFFFFFFFF) != 0:
            raise OSError(f"libpcap rejected the filter: {pcap_geterr(pcap).decode(errors='replace')}")
    finally:
        pcap_close(pcap)
    try:
        capture.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, sock_fprog(program.bf_len, program.bf_insns))
    finally:
        pcap_freecode(ctypes.byref(program))


def _decode(frame: bytes, header_bytes: int) -> dict[str, Any] | None:
    """Addresses, ports, sequence numbers and flags of an IPv4 or IPv6 TCP segment, or None."""
    ip = memoryview(frame)[header_bytes:]
    if len(ip) < 20:
        return None
    if ip[0] >> 4 == 4:
        family, source, destination, tcp = socket.AF_INET, ip[12:16], ip[16:20], ip[(ip[0] & 0x0F) * 4 :]
    elif ip[0] >> 4 == 6 and len(ip) >= 40:
        family, source, destination, tcp = socket.AF_INET6, ip[8:24], ip[24:40], ip[40:]
    else:
        return None
    if len(tcp) < 14:
        return None
    sport, dport, seq, ack = struct.unpack_from("!HHII", tcp)
    flags = "".join(letter for bit, letter in enumerate(TCP_FLAG_LETTERS) if tcp[13] >> bit & 1)
    src, dst = socket.inet_ntop(family, source), socket.inet_ntop(family, destination)
    return {"src": src, "sport": sport, "dst": dst, "dport": dport, "flags": flags, "seq": seq, "ack": ack}


class _KernelCounts:
    """PACKET_STATISTICS, accumulated (each read resets the kernel's counters)."""

    def __init__(self, capture: socket.socket, clock_offset: float) -> None:
        self.capture = capture
        self.clock_offset = clock_offset  # wall clock -> monotonic, as for the timestamps
        self.packets = self.drops = 0
        self.unreported_drops = 0  # counted but not yet attached to a segment
        self.drops_until = 0.0

    def read(self) -> None:
        packets, drops = TPACKET_STATS.unpack(self.capture.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8))
        self.packets += packets
        self.drops += drops
        if drops:
            self.unreported_drops += drops
            # Every drop counted so far happened before this instant; the ladder needs the bound.
            self.drops_until = time.time() + self.clock_offset

    def attach(self, message: dict[str, Any]) -> dict[str, Any]:
        if self.unreported_drops:
            message.update(dropped=self.unreported_drops, dropped_until=self.drops_until)
            self.unreported_drops = 0
        return message


def _receive(capture: socket.socket, header_bytes: int, clock_offset: float) -> dict[str, Any] | None:
    """One frame from the socket, decoded and stamped with its arrival time; None if not TCP."""
    frame, ancillary, _, _ = capture.recvmsg(SNAP_BYTES, socket.CMSG_SPACE(TIMESPEC.size))
    message = _decode(frame, header_bytes)
    if message is None:
        return None
    arrival = time.time()  # fallback only: SO_TIMESTAMPNS gives the kernel's arrival time
    for level, kind, data in ancillary:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
            seconds, nanoseconds = TIMESPEC.unpack(data[: TIMESPEC.size])
            arrival = seconds + nanoseconds / 1e9
    return {"t": arrival + clock_offset, **message}


def _child_main(port: int, iface: str, rcvbuf_bytes: int) -> None:
    """Capture until killed, writing one JSON line per segment and the kernel's totals."""
    try:
        capture, header_bytes = _open_capture_socket(port, iface, rcvbuf_bytes)
    except Exception as error:
        _emit([{"error": f"capture on {iface} failed: {type(error).__name__}: {error}"}])
        return
    capture.setblocking(False)
    # Kernel timestamps are wall-clock; shift them onto the monotonic clock once.
    clock_offset = time.monotonic() - time.time()
    counts = _KernelCounts(capture, clock_offset)
    _emit([{"ready": True}])
    reported = (0, 0)
    next_report = 0.0
    while True:
        select.select([capture], [], [], STATS_SECONDS)
        lines = []
        for _ in range(BATCH_FRAMES):
            try:
                message = _receive(capture, header_bytes, clock_offset)
            except BlockingIOError:
                break
            # Read the counts after each receive, before handing the segment over: every drop
            # before this segment arrived is then reported with it or earlier, never after.
            counts.read()
            if message is not None:
                lines.append(counts.attach(message))
        now = time.monotonic()
        if now >= next_report:
            counts.read()
            if (counts.packets, counts.drops) != reported:
                reported = (counts.packets, counts.drops)
                lines.append({"kernel": reported})
            next_report = now + STATS_SECONDS
        _emit(lines)


if __name__ == "__main__":
    _child_main(int(sys.argv[1]), sys.argv[2], int(sys.argv[3]) if len(sys.argv) > 3 else RCVBUF_BYTES)
