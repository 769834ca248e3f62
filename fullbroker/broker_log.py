"""mosquitto's log: where it goes (``log_dest``), what it keeps (``log_type``), and its words.

A mosquitto user greps for ``New client connected from`` and ``Client c1 closed its
connection.``; this broker writes the same lines, prefixed with a Unix timestamp as mosquitto
does, so the same habits and scripts work. Passwords never reach a log line.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from mqtt.connection import Connection

NOTICE = 25  # mosquitto's level between information and warning, where connection lines go
logging.addLevelName(NOTICE, "NOTICE")

# log_type -> the lowest level it lets through; Python filters by threshold, so the most
# verbose type named wins (mosquitto filters by set; close enough for these six).
LOG_TYPE_LEVELS = {
    "debug": logging.DEBUG,
    "all": logging.DEBUG,
    "information": logging.INFO,
    "subscribe": logging.INFO,
    "unsubscribe": logging.INFO,
    "notice": NOTICE,
    "warning": logging.WARNING,
    "error": logging.ERROR,
}
DEFAULT_LOG_TYPES = {"error", "warning", "notice", "information"}  # mosquitto 2.0's default

log = logging.getLogger("broker")


class MosquittoFormatter(logging.Formatter):
    """``1700000000: message``: mosquitto's default ``log_timestamp`` format."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{int(record.created)}: {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


def configure_logging(
    destinations: list[tuple[str, Path | None]], log_types: set[str], verbose: bool
) -> None:
    """Send the broker's log (and the servers' shared logger) where the config says."""
    handlers: list[logging.Handler] = []
    for kind, path in destinations or [("stderr", None)]:
        if kind == "stdout":
            handlers.append(logging.StreamHandler(sys.stdout))
        elif kind == "stderr":
            handlers.append(logging.StreamHandler(sys.stderr))
        elif kind == "file" and path is not None:
            handlers.append(logging.FileHandler(path))
    types = set(log_types) or DEFAULT_LOG_TYPES
    if verbose:
        types.add("all")  # -v: mosquitto's "verbose mode", every log type
    if "none" in types:
        level = logging.CRITICAL + 1
    else:
        level = min((LOG_TYPE_LEVELS[name] for name in types if name in LOG_TYPE_LEVELS), default=NOTICE)
    root = logging.getLogger()
    for handler in list(root.handlers):
        root.removeHandler(handler)
    for handler in handlers:
        handler.setFormatter(MosquittoFormatter())
        root.addHandler(handler)
    root.setLevel(level)


def client_name(connection: Connection) -> str:
    return connection.client_id or "<unknown>"


def connected_line(connection: Connection) -> str:
    """``New client connected from 127.0.0.1:50000 as c1 (p2, c1, k60, u'alice').``"""
    session = connection.session
    protocol = {3: 1, 4: 2}.get(connection.protocol_level, connection.protocol_level)
    clean = 1 if session is None or session.clean else 0
    user = f", u'{connection.username}'" if connection.username is not None else ""
    return (
        f"New client connected from {connection.peer} as {client_name(connection)} "
        f"(p{protocol}, c{clean}, k{connection.keepalive}{user})."
    )


def closed_line(connection: Connection, reason: str) -> str:
    """mosquitto's words for the usual ends, and our reason for the others."""
    name = client_name(connection)
    if reason == "client sent DISCONNECT":
        return f"Client {name} disconnected."
    if reason == "peer closed the connection":
        return f"Client {name} closed its connection."
    if reason.startswith("keepalive expired"):
        return f"Client {name} has exceeded timeout, disconnecting."
    if "not authorised" in reason:
        return f"Client {name} disconnected, not authorised."
    return f"Client {name} disconnected: {reason}."
