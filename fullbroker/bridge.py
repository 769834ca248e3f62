"""mosquitto-style bridges: MQTT client links to other brokers, living inside the server's epoll loop.

A bridge subscribes on a remote broker and republishes locally (``in``), subscribes locally
and republishes remotely (``out``), or both, swapping topic prefixes on the way. It is a
client, not a server, yet it needs no thread of its own: its socket sits in the same epoll
set as the server's, its timers join the loop's deadline, and what the core writes for it is
sent in the server's flush phase. This module is the one object the server talks to; how a
bridge works is spread over one module per job:

    bridge_link     one bridge's life: connect, CONNACK, relay, link down, back-off, again
    bridge_relay    packets between the remote session and the core's local connection
    bridge_topics   topic rules: what each side subscribes to, prefix rewriting
    bridge_remote   the established remote connection: framing, keepalive, EPOLLOUT interest
    bridge_dial     from host:port to a connected socket without blocking
    bridge_socket   the non-blocking TCP client socket (connect_ex, SO_ERROR, send buffer)
    bridge_resolve  host names looked up on a thread that signals an eventfd
    bridge_backoff  the retry delays

The server's loop, with bridges:

    bridges = BridgeSet(configs, broker, epoll, log); bridges.start()
    while True:
        ready = bridges.split_ready(epoll.poll(timeout))   # bridge fds handled, the rest returned
        ... the server's own sockets ...
        ... commit the store ...
        for connection in broker.drain_dirty():           # the flush phase
            if not bridges.flush(connection): ... send on the server's socket ...
        timeout = min(broker.tick(now), bridges.tick(now)) - now
"""

from __future__ import annotations

import contextlib
import logging
import select
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from mqtt.broker import Broker
from mqtt.connection import Connection

from .bridge_link import Bridge, State

if TYPE_CHECKING:
    from .config import BridgeConfig

__all__ = ["Bridge", "BridgeSet", "State"]


class BridgeSet:
    """Every configured bridge, and the routing of epoll events and dirty connections to them."""

    def __init__(
        self,
        configs: list[BridgeConfig],
        broker: Broker,
        epoll: select.epoll,
        log: logging.Logger,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._epoll = epoll
        # fd -> bridge: epoll hands back only an fd (Python has no epoll_data.ptr), so look it up.
        self._routes: dict[int, Bridge] = {}
        self._started = False
        self.bridges = [Bridge(config, broker, self, log, clock) for config in configs]

    @property
    def active(self) -> bool:
        """Whether any bridge has an fd in the epoll set now (else split_ready has nothing to do)."""
        return bool(self._routes)

    # -- the server's calls ----------------------------------------------------------------------

    def start(self) -> None:
        """Begin connecting every bridge (numeric addresses connect at once, names resolve first).

        Optional: the first ``tick`` starts the bridges if the server did not.
        """
        if self._started:
            return
        self._started = True
        for bridge in self.bridges:
            bridge.start()

    def split_ready(self, ready: list[tuple[int, int]]) -> list[tuple[int, int]]:
        """Handle the events on bridge fds; return the rest, untouched, for the server."""
        routes = self._routes
        if not routes:
            return ready
        others = []
        for fd, events in ready:
            bridge = routes.get(fd)
            if bridge is None:
                others.append((fd, events))
            else:
                bridge.on_event(fd, events)
        return others

    def flush(self, connection: Connection) -> bool:
        """A dirty connection the server does not own: a bridge's? Then relay its output; True."""
        bridge = connection.tag
        if not isinstance(bridge, Bridge):
            return False
        bridge.flush(connection)
        return True

    def tick(self, now: float) -> float | None:
        """Retry timers, PINGREQs and keepalive expiry; the earliest next deadline, or None."""
        if not self._started:
            self.start()
        deadlines = [deadline for bridge in self.bridges if (deadline := bridge.tick(now)) is not None]
        return min(deadlines, default=None)

    def close(self) -> None:
        """At shutdown: DISCONNECT to each remote (best effort) and close every bridge socket."""
        self._started = True  # a tick after close must not start anything again
        for bridge in self.bridges:
            bridge.close()

    # -- the Interest protocol: bridges register their fds through these ----------------------

    def watch(self, fd: int, bridge: Bridge, writable: bool) -> None:
        self._epoll.register(fd, _mask(writable))
        self._routes[fd] = bridge

    def modify(self, fd: int, writable: bool) -> None:
        # Level-triggered EPOLLOUT only while output is pending: an idle socket is always
        # writable and would otherwise wake every wait for nothing.
        self._epoll.modify(fd, _mask(writable))

    def unwatch(self, fd: int) -> None:
        self._routes.pop(fd, None)
        # Before the fd is closed: closing would drop it from the set anyway, but unregistering
        # first keeps the interest set exact, and a later socket may get the same number.
        with contextlib.suppress(OSError):
            self._epoll.unregister(fd)


def _mask(writable: bool) -> int:
    return select.EPOLLIN | select.EPOLLOUT if writable else select.EPOLLIN
