"""Lab 05's crowds: a broker, holder processes with N idle subscribers, and one final publisher.

The clients are raw sockets spread over holder processes (``labs/bench/holder.py``, at most
5,000 each: the fd limit is per process). Everything a crowd starts is stopped on the way
out, Ctrl-C included. ``mosquitto1_loop`` is this lab's model of mosquitto 1.x's poll loop.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from labs.bench.clients import ClientOpener, close_all, run_tag
from labs.bench.connections import Holders
from labs.bench.targets import Broker, await_listening, spawn
from labs.bench.wire import BatchBuilder, PublishLayout, connect_packet
from labs.lab import running_server

TOPIC = b"hello/world"
MOSQUITTO1_LOOP = Path(__file__).resolve().parent / "mosquitto1_loop.py"


class FinalPublisher:
    """One client, connected before the crowd, that publishes a single message to hello/world.

    The payload is the benchmark's (publisher 0, sequence 0, send time), so each holder process
    can check cheaply that every one of its clients got exactly one copy.
    """

    def __init__(self, broker: Broker, tag: str) -> None:
        report = ClientOpener(broker.address, [connect_packet(f"{tag}-publisher")], 1).run()
        if not report.opened:
            raise RuntimeError(f"the publisher could not connect: {dict(report.failures)}")
        self.sock = report.opened[0]

    def publish(self) -> None:
        frame = BatchBuilder(PublishLayout(topic=TOPIC), 1).fill(0, 0, 1, time.monotonic_ns())
        self.sock.setblocking(True)
        self.sock.sendall(frame)

    def close(self) -> None:
        close_all([self.sock])


def close_holders(holders: Holders) -> None:
    """DISCONNECT and close every client; if the holders are already gone, just reap them."""
    try:
        holders.close()
    except Exception:
        holders.group.stop()  # each holder by its own pid


@contextlib.contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold a Ctrl-C back while a process or socket is being acquired, so that its cleanup is
    registered before the KeyboardInterrupt lands. (A Ctrl-C inside ``running_server``'s start-up
    would otherwise leave the half-started broker running.) Processes started meanwhile inherit
    the blocked SIGINT: they ignore the terminal's Ctrl-C and are stopped by this script instead.
    """
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def crowd(variant: str, clients: int) -> Iterator[tuple[Broker, Holders, FinalPublisher]]:
    """A broker, holder processes for ``clients`` and the final publisher, all released on exit."""
    with contextlib.ExitStack() as cleanup:
        with sigint_deferred():
            broker = cleanup.enter_context(started(variant))
        tag = run_tag()
        with sigint_deferred():
            holders = Holders.start(broker, clients, TOPIC, tag)
            cleanup.callback(close_holders, holders)
        with sigint_deferred():
            publisher = FinalPublisher(broker, tag)
            cleanup.callback(publisher.close)
        yield broker, holders, publisher


@contextlib.contextmanager
def started(variant: str) -> Iterator[Broker]:
    """A kit server (``servers.<variant>``), or this lab's ``mosquitto1_loop`` script."""
    if variant != "mosquitto1_loop":
        with running_server(variant) as broker:
            yield broker
        return
    command = [sys.executable, str(MOSQUITTO1_LOOP), "--host", "127.0.0.1", "--port", "0"]
    broker = await_listening(spawn(variant, command))  # stops it if it never listens
    try:
        yield broker
    finally:
        broker.stop()
