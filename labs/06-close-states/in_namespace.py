"""Lab 06's namespace part, run by run.py as ``ip netns exec NS python in_namespace.py``.

Inside a namespace whose net.ipv4.tcp_fin_timeout is 5, it makes three sockets at once:
an orphaned FIN_WAIT_2 (the server closed a silent client), a FIN_WAIT_2 whose fd is still
open (shutdown(SHUT_WR) only) and a TIME_WAIT, then samples them until the orphan is gone.
Every line it prints is one JSON object: {"say": text} or {"summary": {...}}.
"""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

# The folder name has dashes, so this file runs as a script, not a module: put the repo root
# on sys.path so that ``labs``, ``mqtt`` and ``tui`` import from this checkout.
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.lab import running_server
from mqtt.codec import Decoder, encode
from mqtt.packets import Connect
from tui.sources.tcp_states import TcpSocket, tcp_sockets

OBSERVE_SECONDS = 12.0


def say(text: str) -> None:
    print(json.dumps({"say": text}), flush=True)


def silent_client(port: int, client_id: str) -> socket.socket:
    """CONNECT with keepalive 1, read the CONNACK, then say nothing: expired after 1.5 s."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    sock.sendall(encode(Connect(client_id, keepalive=1)))
    Decoder().feed(sock.recv(4))
    return sock


def half_closed_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    """A connection whose accepting end called shutdown(SHUT_WR) but keeps its fd open."""
    listener = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(listener.getsockname())
    accepted, _ = listener.accept()
    accepted.shutdown(socket.SHUT_WR)  # FIN sent; the socket is not closed, so not orphaned
    return listener, client, accepted


def find(rows: list[TcpSocket], local_port: int, remote_port: int) -> TcpSocket | None:
    return next((r for r in rows if r.local[1] == local_port and r.remote[1] == remote_port), None)


def describe(row: TcpSocket | None) -> str:
    """One cell: the state and, when a timer runs, the seconds left on it."""
    if row is None:
        return "gone"
    return row.state if row.timer == "off" else f"{row.state} {row.timer_left_ms / 1000:4.1f} s"


def main() -> None:
    fin_timeout = Path("/proc/sys/net/ipv4/tcp_fin_timeout").read_text().strip()
    say(f"inside: net.ipv4.tcp_fin_timeout = {fin_timeout}")
    say("three server-side sockets, sampled with sock_diag (timer left in seconds):")
    say("   t    closed, fd gone    shutdown, fd kept   closed, then peer closed")
    with running_server("epoll_lt", "--sys-interval", "0") as server:
        port = server.address[1]
        orphan_client = silent_client(port, "orphan")
        closing_client = silent_client(port, "closes-later")
        listener, kept_client, kept = half_closed_pair()
        kept_port = listener.getsockname()[1]
        orphan_port, closing_port = orphan_client.getsockname()[1], closing_client.getsockname()[1]
        started = time.monotonic()
        orphan_seen = orphan_gone = None
        closed = False
        time_wait_left = 0
        kept_state = ""
        next_report = 0.0
        while time.monotonic() - started < OBSERVE_SECONDS:
            now = time.monotonic() - started
            rows = tcp_sockets(port) + tcp_sockets(kept_port)
            orphan = find(rows, port, orphan_port)
            if orphan is not None and orphan.state == "FIN_WAIT_2" and orphan_seen is None:
                orphan_seen = now
            if orphan is None and orphan_seen is not None and orphan_gone is None:
                orphan_gone = now
            if not closed and orphan_seen is not None:
                closing_client.close()  # its server end goes FIN_WAIT_2 -> TIME_WAIT at once
                closed = True
            closing = find(rows, port, closing_port)
            kept_row = find(rows, kept_port, kept_client.getsockname()[1])
            time_wait_left = closing.timer_left_ms if closing and closing.state == "TIME_WAIT" else 0
            kept_state = kept_row.state if kept_row else "gone"
            if now >= next_report or (orphan_gone is not None and orphan_gone == now):
                say(f"{now:4.1f} s  {describe(orphan):<19}{describe(kept_row):<20}{describe(closing)}")
                next_report = now + 1.0
            if orphan_gone is not None and now - orphan_gone > 1.0:
                break
            time.sleep(0.1)
        for sock in (orphan_client, kept_client, kept, listener):
            sock.close()
    lifetime = None if orphan_seen is None or orphan_gone is None else orphan_gone - orphan_seen
    say(f"the orphaned FIN_WAIT_2 lived {lifetime:.1f} s" if lifetime else "the orphan never went away")
    summary = {"orphan_lifetime_s": lifetime, "kept_state": kept_state, "time_wait_left_ms": time_wait_left}
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
