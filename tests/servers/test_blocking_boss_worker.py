"""``threaded_boss_worker --blocking``: one client that connects and says nothing stops everyone.

The notes' C server (field notes §7) holds its one mutex across a blocking read of the socket
it dequeued. Here, with real sockets: a publisher and a subscriber connected before a silent
client get nothing through while it is silent, and everything once it sends CONNECT, closes,
or is dropped by ``--connect-timeout``; the default model delivers beside the same client.
Each test waits for the server's ``accept`` event for the silent client before publishing:
by then its socket is queued ahead of the publisher's, so the stall comes first. Assertions
are counts; waits poll with deadlines.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator

from mqtt.packets import Publish
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess
from tests.support.waiting import stays_false, wait_until

from .helpers import Clients, subscribe
from .test_telemetry import Watcher, watched_server

TOPIC = "blocking/news"
MESSAGES = 20
QUIET = 1.0  # seconds in which a stalled server must deliver nothing


class Pair:
    """A subscriber on TOPIC and a publisher, both connected before any silent client."""

    def __init__(self, clients: Clients) -> None:
        self.subscriber = clients.raw("blocking-sub")
        assert subscribe(self.subscriber, (TOPIC, 0)) == (0,)
        self.publisher = clients.raw("blocking-pub")
        self.sent = 0

    def publish(self, count: int) -> None:
        for _ in range(count):
            self.publisher.send(Publish(TOPIC, b"%04d" % self.sent))
            self.sent += 1

    def delivered(self) -> int:
        """Read what has arrived by now, without waiting; the PUBLISH count so far."""
        self.subscriber.sock.settimeout(0.01)
        with contextlib.suppress(TimeoutError):
            data = self.subscriber.sock.recv(65536)
            self.subscriber.received.extend(self.subscriber.decoder.feed(data))
        return sum(isinstance(packet, Publish) for packet in self.subscriber.received)

    def all_delivered(self) -> bool:
        return self.delivered() == self.sent


Stalled = tuple[ServerProcess, Pair, RawClient, Watcher]


@contextlib.contextmanager
def stalled(*flags: str) -> Iterator[Stalled]:
    """A --blocking server whose pair works, then a silent client that it has accepted."""
    blocking = watched_server("threaded_boss_worker", "--blocking", *flags)
    with blocking as (server, watcher), Clients(server) as clients:
        pair = Pair(clients)
        pair.publish(MESSAGES)
        wait_until(pair.all_delivered, what="the messages sent before any silent client")
        silent = clients.socket()  # connected; sends nothing
        watcher.wait_for("accept", peer=peer_of(silent))
        yield server, pair, silent, watcher


def peer_of(client: RawClient) -> str:
    """The client's address as the server's telemetry names it."""
    host, port = client.sock.getsockname()[:2]
    return f"{host}:{port}"


def test_a_silent_client_stalls_every_delivery_until_it_sends_connect() -> None:
    with stalled() as (_server, pair, silent, watcher):
        pair.publish(MESSAGES)
        assert stays_false(lambda: pair.delivered() > MESSAGES, QUIET)
        assert pair.delivered() == MESSAGES  # nothing of the second batch
        silent.connect("blocking-late")  # it speaks: its CONNACK, then everyone else's messages
        wait_until(pair.all_delivered, what="the messages held up by the silent client")
        assert pair.delivered() == 2 * MESSAGES
        # The worker that read the silent socket held the lock through the whole silence.
        holds = [event for event in watcher.events() if event["k"] == "lock" and event["hold_s"] >= QUIET]
        assert [event["thread"][:7] for event in holds] == ["worker-"]


def test_a_silent_client_that_closes_releases_everyone() -> None:
    with stalled() as (_server, pair, silent, _watcher):
        pair.publish(MESSAGES)
        assert stays_false(lambda: pair.delivered() > MESSAGES, QUIET)
        silent.sock.shutdown(socket.SHUT_WR)  # its FIN: the blocked read returns 0
        wait_until(pair.all_delivered, what="the messages held up by the silent client")
        assert pair.delivered() == 2 * MESSAGES
        assert silent.is_closed_by_server()


def test_connect_timeout_drops_a_silent_client_and_delivery_resumes() -> None:
    with stalled("--connect-timeout", "1") as (_server, pair, silent, watcher):
        pair.publish(MESSAGES)
        assert silent.is_closed_by_server(timeout=10.0)
        wait_until(pair.all_delivered, timeout=10.0, what="the messages held up by the silent client")
        assert pair.delivered() == 2 * MESSAGES
        closes = watcher.wait_for("close", client_id=None)
        assert closes[-1]["reason"] == "no CONNECT within 1 s"


def test_the_server_stops_cleanly_while_a_worker_sleeps_in_read() -> None:
    with stalled() as (server, pair, _silent, _watcher):
        pair.publish(MESSAGES)
        assert stays_false(lambda: pair.delivered() > MESSAGES, QUIET)
        # SIGTERM with the read still blocked and the silent client still connected: a hung
        # shutdown would end in SIGKILL after the grace period, and a non-zero status.
        assert server.stop() == 0, server.stderr()


def test_the_default_model_delivers_beside_a_silent_client() -> None:
    with watched_server("threaded_boss_worker") as (server, watcher), Clients(server) as clients:
        pair = Pair(clients)
        silent = clients.socket()
        watcher.wait_for("accept", peer=peer_of(silent))
        pair.publish(MESSAGES)
        wait_until(pair.all_delivered, what="the messages, beside a silent client")
        assert pair.delivered() == MESSAGES
