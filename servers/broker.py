"""The full broker, the progression's last step: epoll_lt's loop plus what mosquitto.conf asks for.

    python -m servers.broker [-c FILE] [-p PORT] [-v]

Config, password and ACL files, the sqlite store, $SYS, signals, limits and bridges come from
``fullbroker/``, plugged in at the loop's hooks; how the loop waits, reads and writes is
exactly ``epoll_lt.py``'s. Without ``-c`` it listens on 127.0.0.1:1883 and allows anonymous
clients, as mosquitto 2.0 does.
"""

from __future__ import annotations

import sys

from fullbroker.cli import main
from fullbroker.server import FullBroker

from .epoll_lt import EpollLevelServer


class FullBrokerServer(FullBroker, EpollLevelServer):
    variant = "broker"


if __name__ == "__main__":
    sys.exit(main(FullBrokerServer, __doc__.splitlines()[0]))
