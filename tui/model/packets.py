"""SYN, FIN and RST segments on the port, with the TCP state each one moves its sender or receiver to.

Only segments with SYN, FIN or RST are captured (a kernel BPF filter drops the rest), so pure
ACKs are missing from the ladder; the notes below each FIN say what the ACK would complete.
The first FIN of a connection marks its sender as the active closer (FIN_WAIT_1, then
TIME_WAIT); its peer is the passive closer (CLOSE_WAIT, then LAST_ACK).

That inference needs every FIN of the connection, so a FIN's note names states only when the
ladder holds the connection's whole life up to that FIN:

- its opening was captured (a SYN or SYN+ACK). Without it the capture started mid-connection
  and the peer may have sent its FIN before: the note says "SYN not seen: state unknown".
- no segment was dropped between that opening and the FIN. The capture child reads the kernel's
  drop counter after every segment it receives and hands the drops over with that segment,
  bounded by the instant of the read (``Segment.dropped_until``). So when a FIN is annotated,
  every drop before the FIN's arrival is already known, and each lies before the latest such
  bound (``drops_until``). A connection opened after ``drops_until`` lost nothing; one opened
  before may have (the rule cannot tell a drop just before the opening from one just after, so
  it errs towards "unknown"): its FINs say "segments dropped: state unknown".

Segments the TUI itself lets go (``skip``: its backlog limit during a long pause) count apart
from the kernel's drops but widen ``drops_until`` the same way. SYN, SYN+ACK and RST notes
describe what that one segment does, true whatever was dropped.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from tui.sources.packet_capture import Segment

# One close burst of the 10,000-client lab is 20,000 FINs: it stays whole on the ladder for
# scrolling back, at a few hundred bytes a rung (about 6 MB).
LADDER_KEPT = 20_000
# Connections whose opening and first FIN the ladder remembers, beyond the rungs it keeps: the
# 10,000-client lab five times over. The oldest are forgotten first (their FINs then say "SYN
# not seen").
CONNECTIONS_KEPT = 50_000
FLAG_NAMES = {"S": "SYN", "F": "FIN", "R": "RST", "P": "PSH", "A": "ACK", "U": "URG", "E": "ECE", "C": "CWR"}
DROPPED_NOTE = "segments dropped: state unknown"
NO_SYN_NOTE = "SYN not seen: state unknown"

Client = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Rung:
    """One segment on the ladder. ``client`` is the client end's address, ``to_server`` its direction."""

    segment: Segment
    client: Client
    to_server: bool
    flags: str  # spelled out: "SYN,ACK"
    note: str


@dataclass(slots=True)
class Connection:
    """What the ladder knows of one connection: when its opening was seen, who sent the first FIN."""

    opened_t: float | None = None  # None: its SYN and SYN+ACK were never captured
    first_fin_from_server: bool | None = None


def spell_flags(flags: str) -> str:
    """scapy's "FA" -> "FIN,ACK"; SYN/FIN/RST first, since they are what the ladder is about."""
    names = [FLAG_NAMES.get(letter, letter) for letter in flags]
    order = ["SYN", "FIN", "RST"]
    return ",".join(sorted(names, key=lambda name: order.index(name) if name in order else len(order)))


class Ladder:
    """Segments in arrival order, annotated with the close handshake's states, and the drop count.

    ``total``: segments captured (rung numbers run 0 .. total-1; the oldest are let go beyond
    LADDER_KEPT, so ``rungs[0]`` is rung number ``first_kept``). ``dropped``: segments the kernel
    dropped because the capture buffer was full; ``skipped``: captured ones the TUI let go unseen.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.rungs: deque[Rung] = deque()
        self.total = 0
        self.dropped = 0
        self.skipped = 0
        self.drops_until = 0.0  # every drop reported so far happened before this time
        self.first_t = 0.0  # the first segment's time: the ladder counts from it
        self._by_client: dict[Client, deque[Rung]] = {}
        self._connections: dict[Client, Connection] = {}

    @property
    def first_kept(self) -> int:
        """The rung number of ``rungs[0]``."""
        return self.total - len(self.rungs)

    def add(self, segment: Segment) -> None:
        if not self.total:
            self.first_t = segment.t
        if segment.dropped:
            self.dropped += segment.dropped
            self.drops_until = max(self.drops_until, segment.dropped_until)
        to_server = segment.dport == self.port
        client = (segment.src, segment.sport) if to_server else (segment.dst, segment.dport)
        note = self._note(segment, client, to_server)
        self._keep(Rung(segment, client, to_server, spell_flags(segment.flags), note))
        self.total += 1

    def skip(self, count: int, kernel_drops: int, until: float) -> None:
        """``count`` captured segments that never reach the ladder, all before ``until``, carrying
        ``kernel_drops`` (their ``Segment.dropped``): a gap in the ladder, like the kernel's drops."""
        self.skipped += count
        self.dropped += kernel_drops
        self.drops_until = max(self.drops_until, until)

    def rungs_for(self, client: Client) -> list[Rung]:
        """The kept rungs of one connection (by its client end), oldest first."""
        return list(self._by_client.get(client, ()))

    def _keep(self, rung: Rung) -> None:
        if len(self.rungs) >= LADDER_KEPT:
            oldest = self.rungs.popleft()
            same_client = self._by_client[oldest.client]
            same_client.popleft()  # the oldest rung overall is the oldest of its connection too
            if not same_client:
                del self._by_client[oldest.client]
        self.rungs.append(rung)
        self._by_client.setdefault(rung.client, deque()).append(rung)

    def _connection(self, client: Client, opening: bool) -> Connection:
        """The connection's record; an opening (SYN) starts a fresh one: a new connection on the port."""
        connection = self._connections.pop(client, None)
        if connection is None or opening:
            connection = Connection()
            if len(self._connections) >= CONNECTIONS_KEPT:
                del self._connections[next(iter(self._connections))]  # the least recently touched
        self._connections[client] = connection
        return connection

    def _note(self, segment: Segment, client: Client, to_server: bool) -> str:
        sender, receiver = ("client", "server") if to_server else ("server", "client")
        flags = segment.flags
        if "R" in flags:
            self._connections.pop(client, None)
            return "reset: CLOSED at once, no TIME_WAIT"
        if "S" in flags:
            connection = self._connection(client, opening="A" not in flags)
            if connection.opened_t is None:  # the SYN+ACK opens it if its SYN was not captured
                connection.opened_t = segment.t
            return "server SYN_RECV; client ESTABLISHED" if "A" in flags else "client SYN_SENT"
        if "F" not in flags:
            return ""
        return self._fin_note(self._connection(client, opening=False), sender, receiver)

    def _fin_note(self, connection: Connection, sender: str, receiver: str) -> str:
        from_server = sender == "server"
        first = connection.first_fin_from_server
        if first is None:
            connection.first_fin_from_server = from_server
        if connection.opened_t is None:
            return f"{sender} FIN; {NO_SYN_NOTE}"
        if connection.opened_t < self.drops_until:
            return f"{sender} FIN; {DROPPED_NOTE}"
        if first is None:
            return f"{sender} FIN_WAIT_1; {receiver} CLOSE_WAIT"
        if first == from_server:
            return f"{sender} FIN again: retransmitted"
        return f"{sender} LAST_ACK; {receiver} TIME_WAIT (60 s)"
