"""Two thousand concurrent clients on one server: connect, subscribe, all receive one publish, leave.

The clients are raw non-blocking sockets driven by one ``select.epoll`` loop in the test, so
the test itself needs no thread per connection; paho would need one each.
"""

from __future__ import annotations

import errno
import select
import socket
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest

from mqtt.codec import Decoder, encode
from mqtt.packets import Connack, Connect, Packet, Publish, Suback, Subscribe
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until

from .helpers import Clients, fd_baseline, fds_back_to, publish, unique

CLIENTS = 2000
# select() cannot watch an fd >= FD_SETSIZE (1024), and select_srv closes such connections on
# purpose; stay below that limit there (its own tests cover the refusal).
CLIENTS_BY_VARIANT = {"select_srv": 900}
# Spread source addresses so repeated runs do not exhaust one address's ephemeral ports while
# earlier runs' sockets sit in TIME_WAIT.
SOURCE_ADDRESSES = [f"127.0.0.{host}" for host in range(2, 42)]


@dataclass
class Client:
    sock: socket.socket
    decoder: Decoder = field(default_factory=Decoder)
    state: str = "connecting"  # -> connected -> subscribed -> received


class ClientSwarm:
    """Many non-blocking clients and the epoll loop that moves each through its states."""

    def __init__(self, port: int, count: int) -> None:
        self.port = port
        self.epoll = select.epoll()
        self.clients: dict[int, Client] = {}
        for index in range(count):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setblocking(False)
            sock.bind((SOURCE_ADDRESSES[index % len(SOURCE_ADDRESSES)], 0))
            code = sock.connect_ex(("127.0.0.1", port))
            assert code in (0, errno.EINPROGRESS), errno.errorcode.get(code, code)
            self.clients[sock.fileno()] = Client(sock)
            self.epoll.register(sock, select.EPOLLOUT)  # writable once the handshake completes

    def count(self, state: str) -> int:
        return sum(client.state == state for client in self.clients.values())

    def run_until(self, done: Callable[[], bool], on_packet: Callable[[Client, Packet], None]) -> bool:
        """One pass of the test's own event loop; ``wait_until`` repeats it until ``done``."""
        for fd, events in self.epoll.poll(0.05):
            client = self.clients[fd]
            if events & select.EPOLLOUT:
                client.sock.send(encode(Connect(unique("swarm"))))
                self.epoll.modify(fd, select.EPOLLIN)
                continue
            data = client.sock.recv(65536)
            assert data, f"server closed a client in state {client.state}"
            for packet in client.decoder.feed(data):
                on_packet(client, packet)
        return done()

    def close(self) -> None:
        for client in self.clients.values():
            client.sock.close()
        self.epoll.close()


def advance(topic: str) -> Callable[[Client, Packet], None]:
    def on_packet(client: Client, packet: Packet) -> None:
        if isinstance(packet, Connack):
            assert packet.return_code == 0
            client.state = "connected"
            client.sock.send(encode(Subscribe(1, ((topic, 0),))))
        elif isinstance(packet, Suback):
            assert packet.return_codes == (0,)
            client.state = "subscribed"
        elif isinstance(packet, Publish):
            assert (packet.topic, packet.payload) == (topic, b"to everyone")
            client.state = "received"

    return on_packet


@pytest.mark.slow
def test_two_thousand_clients_connect_subscribe_and_all_receive_one_publish(server: ServerProcess) -> None:
    count = CLIENTS_BY_VARIANT.get(server.variant, CLIENTS)
    topic = unique("swarm")
    on_packet = advance(topic)
    baseline = fd_baseline(server)
    swarm = ClientSwarm(server.port, count)
    try:
        wait_until(
            lambda: swarm.run_until(lambda: swarm.count("subscribed") == count, on_packet),
            timeout=20,
            interval=0,
            what=f"{count} clients subscribed",
        )
        assert server.open_fds() >= baseline + count
        with Clients(server) as clients:
            publish(clients.raw(), topic, b"to everyone", qos=1)
        wait_until(
            lambda: swarm.run_until(lambda: swarm.count("received") == count, on_packet),
            timeout=10,
            interval=0,
            what=f"the publish to reach all {count} clients",
        )
    finally:
        swarm.close()
    fds_back_to(server, baseline, timeout=15)
