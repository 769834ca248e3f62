"""The trivial broker ``--selftest`` measures the load generator against: it forwards, nothing more.

Every PUBLISH goes, as the same bytes, to every subscriber whatever its filter. Once a client
has sent one QoS 0 PUBLISH, its later reads are split into frames of that size with stepped
slices, so the sink costs far less per message than a real broker and the selftest shows the
generator's own ceiling. Not a broker: no topics, sessions, QoS 1 retries or keepalive.
Usage: ``python -m labs.bench.sink --host 127.0.0.1 --port 0`` (prints ``listening on HOST:PORT``).
"""

from __future__ import annotations

import argparse
import select
import signal
import socket
from dataclasses import dataclass, field

from mqtt.codec import Decoder, decode_packet, encode
from mqtt.errors import ProtocolError
from mqtt.packets import Connack, Connect, Disconnect, Pingreq, Pingresp, Puback, Publish, Suback, Subscribe

RECEIVE_SIZE = 1 << 20


@dataclass
class Client:
    sock: socket.socket
    leftover: bytes = b""
    subscriber: bool = False
    outbox: list[bytes] = field(default_factory=list)
    header: bytes = b""  # first two bytes of this client's QoS 0 PUBLISHes, once seen
    frame_size: int = 0


class Sink:
    def __init__(self, host: str, port: int, options: argparse.Namespace | None = None) -> None:
        self.buffer = bytearray(RECEIVE_SIZE)
        self.listener = socket.create_server((host, port), backlog=4096)
        self.listener.setblocking(False)
        self.epoll = select.epoll()
        self.epoll.register(self.listener.fileno(), select.EPOLLIN)
        self.clients: dict[int, Client] = {}
        self.subscribers: list[Client] = []
        self.dirty: set[int] = set()
        self.running = True

    @property
    def address(self) -> tuple[str, int]:
        return self.listener.getsockname()[:2]

    def serve_forever(self) -> None:
        listener_fd = self.listener.fileno()
        while self.running:
            for fd, events in self.epoll.poll(0.5):
                if fd == listener_fd:
                    self._accept()
                elif events & select.EPOLLOUT:
                    self.dirty.add(fd)
                else:
                    self._read(fd)
            self._flush()
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                sock, _peer = self.listener.accept()
            except BlockingIOError:
                return
            sock.setblocking(False)
            self.clients[sock.fileno()] = Client(sock)
            self.epoll.register(sock.fileno(), select.EPOLLIN)

    def _read(self, fd: int) -> None:
        client = self.clients[fd]
        try:
            received = client.sock.recv_into(self.buffer)
        except OSError:
            received = 0
        if not received:
            self._close(client)
            return
        data = bytes(self.buffer[:received])
        data = client.leftover + data if client.leftover else data
        size = client.frame_size
        count = len(data) // size if size else 0
        stop = count * size
        if (
            count
            and data[0:stop:size] == client.header[:1] * count
            and data[1:stop:size] == client.header[1:] * count
        ):
            client.leftover = data[stop:]
            self.publish(data[:stop], size)
        else:
            self._read_slowly(client, data)

    def _read_slowly(self, client: Client, data: bytes) -> None:
        decoder = Decoder()
        try:
            for buffer, start, body, end in decoder.frames(data):
                self._handle(client, buffer[start:end], decode_packet(buffer[start], buffer[body:end]))
        except ProtocolError:
            self._close(client)
            return
        client.leftover = data[len(data) - decoder.buffered :]

    def _handle(self, client: Client, frame: bytes, packet: object) -> None:
        match packet:
            case Publish(qos=0) if len(frame) < 130:
                client.header, client.frame_size = frame[:2], len(frame)
                self.publish(frame, len(frame))
            case Publish(qos=1, packet_id=packet_id):
                self._queue(client, encode(Puback(packet_id)))
                self.publish(frame, len(frame))
            case Publish():
                self.publish(frame, len(frame))
            case Connect():
                self._queue(client, encode(Connack(False, 0)))
            case Subscribe(packet_id=packet_id, subscriptions=subscriptions):
                self._queue(client, encode(Suback(packet_id, tuple(min(qos, 1) for _, qos in subscriptions))))
                if not client.subscriber:
                    client.subscriber = True
                    self.subscribers.append(client)
            case Pingreq():
                self._queue(client, encode(Pingresp()))
            case Disconnect():
                self._close(client)

    def publish(self, frames: bytes, frame_size: int) -> None:
        """Forward whole frames (each ``frame_size`` long) to every subscriber; the fault-stub hook."""
        for subscriber in self.subscribers:
            self._queue(subscriber, frames)

    def _queue(self, client: Client, data: bytes) -> None:
        client.outbox.append(data)
        self.dirty.add(client.sock.fileno())

    def _flush(self) -> None:
        """One send per dirty client per loop turn, of its queued frames joined."""
        for fd in self.dirty:
            client = self.clients.get(fd)
            if client is None or not client.outbox:
                continue
            data = b"".join(client.outbox)
            try:
                written = client.sock.send(data)
            except BlockingIOError:
                written = 0
            except OSError:
                written = len(data)
            client.outbox = [data[written:]] if written < len(data) else []
            wanted = select.EPOLLIN | (select.EPOLLOUT if client.outbox else 0)
            self.epoll.modify(fd, wanted)
        self.dirty.clear()

    def _close(self, client: Client) -> None:
        fd = client.sock.fileno()
        self.clients.pop(fd, None)
        self.dirty.discard(fd)
        if client.subscriber:
            self.subscribers.remove(client)
        self.epoll.unregister(fd)
        client.sock.close()

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        """Extra command-line options a subclass understands (the tests' faulty stub has some)."""

    def stop(self, *_args: object) -> None:
        self.running = False


def serve(sink_class: type[Sink] = Sink, argv: list[str] | None = None) -> None:
    """Command-line entry: start, print the listening line, serve until SIGTERM."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    sink_class.add_arguments(parser)
    args = parser.parse_args(argv)
    sink = sink_class(args.host, args.port, args)
    signal.signal(signal.SIGTERM, sink.stop)
    host, port = sink.address
    print(f"listening on {host}:{port}", flush=True)
    sink.serve_forever()


if __name__ == "__main__":
    serve()
