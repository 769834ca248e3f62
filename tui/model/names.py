"""Which client is behind an fd: the names every view puts next to a bare descriptor number.

The server tells us through telemetry (``accept`` gives the peer, ``conn`` the MQTT client
id, ``close`` retires the fd, whose number the kernel will soon hand out again). When the TUI
attaches late, the fd -> socket inode -> sock_diag row join still yields the peer address.
"""

from __future__ import annotations

from typing import Any

PEERS_REMEMBERED = 50_000  # closed connections stay named while their sockets linger in TIME_WAIT


def peer_key(endpoint: tuple[str, int]) -> str:
    """How the servers spell a peer in telemetry (servers.listener.peer_name)."""
    return f"{endpoint[0]}:{endpoint[1]}"


class FdNames:
    """fd -> client id, peer address, or "listener".

    The kernel reuses fd numbers at once, so each ``accept`` starts a new *generation* of its
    fd; a ready list remembers the generation it saw, and older rows keep their old names.
    """

    def __init__(self) -> None:
        self.client_ids: dict[int, str] = {}
        self.peers: dict[int, str] = {}  # from telemetry: accept/conn events
        self.joined_peers: dict[int, str] = {}  # from /proc fd -> inode -> sock_diag remote address
        self.listeners: set[int] = set()
        self.generations: dict[int, int] = {}  # fd -> how many times it was accepted
        self.retired: dict[tuple[int, int], str] = {}  # (fd, generation) -> its name once closed
        # peer address -> client id, kept after close: a socket outlives its fd (FIN_WAIT_2, TIME_WAIT).
        self.by_peer: dict[str, str] = {}

    def on_event(self, event: dict[str, Any]) -> None:
        kind, fd = event["k"], event.get("fd")
        if fd is None:
            return
        if kind in ("accept", "conn") and self.peers.get(fd) != event["peer"]:
            # A new connection behind a reused fd number. Usually ``accept`` says so first, but
            # threaded servers hand the socket over before they report the accept, so ``conn``
            # can come first: the peer address, not the event order, tells connections apart.
            self.client_ids.pop(fd, None)
            self.generations[fd] = self.generations.get(fd, 0) + 1
            self.peers[fd] = event["peer"]
        if kind == "conn":
            if event.get("client_id"):
                self.client_ids[fd] = event["client_id"]
                self.by_peer.pop(event["peer"], None)  # re-insert: dicts keep insertion order
                self.by_peer[event["peer"]] = event["client_id"]
                if len(self.by_peer) > PEERS_REMEMBERED:
                    del self.by_peer[next(iter(self.by_peer))]  # forget the oldest
        elif kind == "close":
            self.retired[(fd, self.generations.get(fd, 0))] = self.label(fd)
            if len(self.retired) > PEERS_REMEMBERED:
                del self.retired[next(iter(self.retired))]
            self.client_ids.pop(fd, None)
            self.peers.pop(fd, None)

    def label(self, fd: int) -> str:
        """The best name we have: the MQTT client id, else the peer address, else ""."""
        if fd in self.client_ids:
            return self.client_ids[fd]
        if fd in self.listeners:
            return "listener"
        return self.peers.get(fd) or self.joined_peers.get(fd, "")

    def label_at(self, fd: int, generation: int) -> str:
        """The name ``fd`` had in its ``generation``: the current one, or the one it closed with."""
        if generation == self.generations.get(fd, 0):
            return self.label(fd) or self.retired.get((fd, generation), "")
        return self.retired.get((fd, generation), "")
