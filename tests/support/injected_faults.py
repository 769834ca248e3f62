"""A broker that raises on chosen packets, and a launcher that hands it to any server variant.

The fault barrier is proved by making the core fail on purpose, at each place a driver calls
it for one connection:

- ``receive``: a PUBLISH to ``fault/receive``;
- ``sent`` (and the session pump behind it): any client id starting ``fault-sent``;
- ``lost``: any client id starting ``fault-lost`` when its socket dies;
- that connection's part of ``tick``: any client id starting ``fault-tick`` once a keepalive
  check comes due.

Run it as ``python -m tests.support.injected_faults VARIANT [server flags]``; it prints the
same ``listening on HOST:PORT`` line as the variant itself.
"""

from __future__ import annotations

import sys
import time

from fullbroker import cli
from mqtt.broker import Broker
from mqtt.connection import Connection
from mqtt.limits import Limits
from mqtt.message import Message
from servers.broker import FullBrokerServer
from servers.common import BaseServer, main
from servers.epoll_et import EpollEdgeServer
from servers.epoll_lt import EpollLevelServer
from servers.poll_srv import PollServer
from servers.select_srv import SelectServer
from servers.threaded_boss_worker import ThreadedServer, pick_model

FAULT_TOPIC = "fault/receive"


class InjectedFault(RuntimeError):
    """Raised on purpose: the fault barrier must contain it."""


def chosen(connection: Connection, prefix: str) -> bool:
    return (connection.client_id or "").startswith(prefix)


class FaultyConnection(Connection):
    __slots__ = ()

    def sent(self, count: int, offered: int | None = None) -> None:
        if count > 0 and chosen(self, "fault-sent"):
            raise InjectedFault(f"injected fault in sent() for {self.client_id}")
        super().sent(count, offered)

    def lost(self, reason: str) -> None:
        if chosen(self, "fault-lost"):
            raise InjectedFault(f"injected fault in lost() for {self.client_id}")
        super().lost(reason)

    def deadline(self) -> float | None:
        # Not while CONNECT is handled (that asks too): only once a timer check comes due.
        if chosen(self, "fault-tick") and self.broker.clock() > self.last_seen + 0.5:
            raise InjectedFault(f"injected fault in tick() for {self.client_id}")
        return super().deadline()


class FaultyBroker(Broker):
    connection_class = FaultyConnection

    def publish(self, message: Message, origin: Connection | None) -> None:
        if message.topic == FAULT_TOPIC:
            raise InjectedFault(f"injected fault handling a PUBLISH to {FAULT_TOPIC}")
        super().publish(message, origin)


def faulty_broker(limits: Limits) -> Broker:
    return FaultyBroker(clock=time.monotonic, limits=limits)


SERVERS: dict[str, type[BaseServer]] = {
    "select_srv": SelectServer,
    "poll_srv": PollServer,
    "epoll_lt": EpollLevelServer,
    "epoll_et": EpollEdgeServer,
    "threaded_boss_worker": ThreadedServer,
}


class FaultyFullBroker(FullBrokerServer):
    core_class = FaultyBroker


def run(argv: list[str]) -> int:
    variant, *flags = argv
    if variant == "broker":
        return cli.main(FaultyFullBroker, "the full broker with injected faults", flags)
    pick = pick_model if variant == "threaded_boss_worker" else None
    description = f"{variant} with injected faults"
    return main(SERVERS[variant], description, flags, pick, broker_factory=faulty_broker)


if __name__ == "__main__":
    sys.exit(run(sys.argv[1:]))
