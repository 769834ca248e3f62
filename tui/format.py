"""Text helpers the views share: durations, byte counts, epoll masks, bars and sparklines.

Rich Text only, no Textual, so the same strings appear in tests and labs. Bars use the eight
Unicode block fractions, so a bar one cell wide still shows 1/8 steps.
"""

from __future__ import annotations

from collections.abc import Sequence

from tui.sources.epoll_fdinfo import decode_events

SPARK_LEVELS = " ▁▂▃▄▅▆▇█"
BAR_EIGHTHS = " ▏▎▍▌▋▊▉█"
STATE_COLORS = {
    "LISTEN": "blue",
    "SYN_SENT": "cyan",
    "SYN_RECV": "cyan",
    "NEW_SYN_RECV": "cyan",
    "ESTABLISHED": "green",
    "FIN_WAIT_1": "red",
    "FIN_WAIT_2": "magenta",
    "CLOSING": "bright_red",
    "TIME_WAIT": "yellow",
    "CLOSE_WAIT": "dark_orange",
    "LAST_ACK": "bright_magenta",
    "CLOSE": "grey50",
}


def state_color(state: str) -> str:
    return STATE_COLORS.get(state, "white")


def duration(seconds: float) -> str:
    """12 µs, 3.4 ms, 1.20 s: the unit a human reads fastest."""
    if seconds < 0.001:
        return f"{seconds * 1e6:.0f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.1f} ms"
    return f"{seconds:.2f} s"


def size_text(count: int) -> str:
    """A byte count in at most 6 cells, never cut: 999, 12.3K, 2.9M (powers of 1024, as `ss -m`)."""
    if count < 1000:
        return str(count)
    value = float(count)
    for unit in "KMGT":
        value /= 1024
        if value < 9.95:
            return f"{value:.1f}{unit}"
        if value < 999.5:
            return f"{value:.0f}{unit}"
    return f"{value:.0f}P"


def count_text(count: int) -> str:
    """Counts of things (sockets, waits, fds): always with thousands separators, 10,002."""
    return f"{count:,}"


def timer_text(timer: str, left_ms: int) -> str:
    """`ss -o` style: "keepalive 58s", "on 0.2s", or just "off"."""
    if timer == "off":
        return "off"
    if left_ms >= 10_000:
        return f"{timer} {left_ms // 1000}s"
    return f"{timer} {left_ms / 1000:.1f}s"


def mask_text(mask: int) -> str:
    """EPOLLIN|EPOLLET -> "IN|ET"; epoll's bit values are used by every variant's telemetry."""
    return "|".join(name.removeprefix("EPOLL") for name in decode_events(mask)) or "-"


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "::ffff:127.0.0.1")


def address(endpoint: tuple[str, int]) -> str:
    host, port = endpoint
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def short_address(endpoint: tuple[str, int]) -> str:
    """ ":50004" for a loopback address, where only the port tells connections apart."""
    return f":{endpoint[1]}" if endpoint[0] in LOOPBACK_HOSTS else address(endpoint)


def bar(fraction: float, width: int) -> str:
    """A left-aligned bar ``width`` cells wide, filled to ``fraction`` in eighths of a cell."""
    eighths = round(max(0.0, min(1.0, fraction)) * width * 8)
    full, partial = divmod(eighths, 8)
    text = "█" * full + (BAR_EIGHTHS[partial] if partial else "")
    return text.ljust(width)


def spark(values: Sequence[float], ceiling: float | None = None) -> str:
    """One character per value: blank for 0, ▁ for the smallest non-zero, █ for ``ceiling``."""
    top = ceiling if ceiling is not None else max(values, default=0)
    if top <= 0:
        return " " * len(values)
    levels = len(SPARK_LEVELS) - 1
    return "".join(
        SPARK_LEVELS[0] if value <= 0 else SPARK_LEVELS[max(1, min(levels, round(value / top * levels)))]
        for value in values
    )
