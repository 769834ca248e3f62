"""SYN, FIN and RST segments on the port, with the TCP state each one moves its sender or receiver to.

Only segments with SYN, FIN or RST are captured (a kernel BPF filter drops the rest), so pure
ACKs are missing from the ladder; the notes below each FIN say what the ACK would complete.
The first FIN of a connection marks its sender as the active closer (FIN_WAIT_1, then
TIME_WAIT); its peer is the passive closer (CLOSE_WAIT, then LAST_ACK).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tui.sources.packet_capture import Segment

LADDER_KEPT = 2_000
FLAG_NAMES = {"S": "SYN", "F": "FIN", "R": "RST", "P": "PSH", "A": "ACK", "U": "URG", "E": "ECE", "C": "CWR"}


@dataclass(frozen=True, slots=True)
class Rung:
    """One segment on the ladder. ``client`` is the client end's address, ``to_server`` its direction."""

    segment: Segment
    client: tuple[str, int]
    to_server: bool
    flags: str  # spelled out: "SYN,ACK"
    note: str


def spell_flags(flags: str) -> str:
    """scapy's "FA" -> "FIN,ACK"; SYN/FIN/RST first, since they are what the ladder is about."""
    names = [FLAG_NAMES.get(letter, letter) for letter in flags]
    order = ["SYN", "FIN", "RST"]
    return ",".join(sorted(names, key=lambda name: order.index(name) if name in order else len(order)))


class Ladder:
    """Segments in arrival order, annotated with the close handshake's states."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.rungs: deque[Rung] = deque(maxlen=LADDER_KEPT)
        self.total = 0
        self.first_t = 0.0  # the first segment's time: the ladder counts from it
        self._first_fin_from_server: dict[tuple[str, int], bool] = {}

    def add(self, segment: Segment) -> None:
        if not self.total:
            self.first_t = segment.t
        to_server = segment.dport == self.port
        client = (segment.src, segment.sport) if to_server else (segment.dst, segment.dport)
        note = self._note(segment, client, to_server)
        self.rungs.append(Rung(segment, client, to_server, spell_flags(segment.flags), note))
        self.total += 1

    def _note(self, segment: Segment, client: tuple[str, int], to_server: bool) -> str:
        sender, receiver = ("client", "server") if to_server else ("server", "client")
        flags = segment.flags
        if "R" in flags:
            self._first_fin_from_server.pop(client, None)
            return "reset: CLOSED at once, no TIME_WAIT"
        if "S" in flags:
            self._first_fin_from_server.pop(client, None)  # a new connection reusing the port
            if "A" in flags:
                return "server SYN_RECV; client ESTABLISHED"
            return "client SYN_SENT"
        if "F" not in flags:
            return ""
        first = self._first_fin_from_server.get(client)
        if first is None:
            self._first_fin_from_server[client] = not to_server
            return f"{sender} FIN_WAIT_1; {receiver} CLOSE_WAIT"
        if first == (not to_server):
            return f"{sender} FIN again: retransmitted"
        return f"{sender} LAST_ACK; {receiver} TIME_WAIT (60 s)"
