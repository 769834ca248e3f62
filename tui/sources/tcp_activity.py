"""Has any TCP socket changed since the last dump? The kernel's own counters answer for 0.1 ms.

A sock_diag dump walks the whole established-connection hash: with 20,000 sockets it costs
about 25 ms of kernel CPU here (10 ms of it just to walk the empty buckets), so four dumps a
second cost a tenth of a core. Yet nearly every change a dump could show is caused by a
segment sent or received, and /proc/net/snmp counts every one (Tcp: InSegs, OutSegs, resets,
opens), while /proc/net/netstat counts TIME_WAIT sockets that expire (TcpExt: TW, TWKilled).
If none of those counters moved, no segment arrived or left and no TIME_WAIT ended, so the
last dump still stands. The counters cover the whole network namespace: on a busy machine
they always move, and the TUI simply dumps at the full rate.

What no counter sees: an application reading (Recv-Q shrinks) or writing into a zero window
(Send-Q grows), and accept() giving a queued connection its file. Those follow a segment
closely or come with telemetry, so the collector keeps dumping for a while after any change
and whenever telemetry arrives, and dumps at least once a second regardless.
"""

from __future__ import annotations

SOURCES = (("/proc/net/snmp", b"Tcp:"), ("/proc/net/netstat", b"TcpExt:"))


def tcp_counters() -> bytes | None:
    """The value lines of the Tcp and TcpExt counters, as one byte string to compare with the last;
    None if they cannot be read (then nothing vouches for the last dump, and every look dumps)."""
    values = []
    for path, prefix in SOURCES:
        try:
            with open(path, "rb") as counters:
                lines = [line for line in counters.read().splitlines() if line.startswith(prefix)]
        except OSError:
            return None
        values.append(lines[-1] if lines else b"")  # the second line of each pair holds the values
    return b"\n".join(values)


class DumpGate:
    """At each look (every tick), whether to dump the port, vouch for the last dump, or wait.

    Dump if the counters moved since the last dump, telemetry arrived since, the last dump found
    changes less than ``settle_s`` ago (an application may still be reading what a segment
    brought), or the last dump is ``at_least_s`` old; at most once a ``period_s`` (longer if
    dumps cost much CPU, up to ``period_max_s``), except that the first change after a quiet
    look is dumped at once. Otherwise, if nothing moved, the last dump still stands: vouch.
    """

    COST_MULTIPLIER = 10  # a dump that cost 30 ms of CPU waits 300 ms (capped) for the next

    def __init__(
        self, period_s: float = 0.2, period_max_s: float = 0.3, settle_s: float = 1.0, at_least_s: float = 1.0
    ) -> None:
        self.period_s, self.period_max_s = period_s, period_max_s
        self.settle_s, self.at_least_s = settle_s, at_least_s
        self._counters: bytes | None = None  # read just before the last dump
        self._dumped_at = self._settle_until = self._due = 0.0
        self._looked: bytes | None = None  # the counters at the previous look
        self._stood_still, self._early_at = False, -settle_s

    def decide(self, counters: bytes | None, now: float, heard_at: float | None) -> str:
        """One of "dump", "vouch" (nothing could have changed) or "wait" (dumped too recently)."""
        first_change = self._first_change_after_quiet(counters, now)
        heard = heard_at is not None and heard_at >= self._dumped_at
        settling = now < self._settle_until
        overdue = now - self._dumped_at >= self.at_least_s
        if not (counters is None or counters != self._counters or heard or settling or overdue):
            return "vouch"
        return "dump" if now >= self._due or first_change else "wait"

    def dumped(self, counters: bytes | None, now: float, changed: bool, cost_s: float) -> None:
        """Record a dump started at ``now`` with ``counters`` read just before; it cost ``cost_s`` of CPU."""
        self._counters, self._dumped_at = counters, now
        if changed:
            self._settle_until = now + self.settle_s
        self._due = now + min(max(self.period_s, self.COST_MULTIPLIER * cost_s), self.period_max_s)

    def resume(self) -> None:
        """After a pause: the next look may dump at once."""
        self._due = 0.0

    def _first_change_after_quiet(self, counters: bytes | None, now: float) -> bool:
        """The first look whose counters moved after one where they stood still (at most once a
        ``settle_s``, so counters that flicker on a busy machine still wait for the period)."""
        moved = counters is None or counters != self._looked
        first = moved and self._stood_still and now - self._early_at >= self.settle_s
        self._looked, self._stood_still = counters, not moved
        if first:
            self._early_at = now
        return first
