"""Lab 06's grader: black-box stages for a learner's server that cuts off a stalled subscriber.

A subscriber with a tiny receive buffer stops reading while a publisher floods its topic. The
server's core soon cuts it off; what the stages judge is how the socket was closed, read from
the kernel: the server's end of that connection (state and Send-Q, by sock_diag), and what the
stalled client's own recv() reports (ECONNRESET for a reset, b"" for a FIN). None looks inside
the learner's code.
"""

from __future__ import annotations

import contextlib
import socket
import time
from pathlib import Path

from labs.exercise import RawClient, Stage, StageFailed, StudentServer, connack_stage, grade
from mqtt.codec import encode
from mqtt.packets import Connect, Publish, Subscribe
from tui.sources.tcp_states import TcpSocket, tcp_sockets

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
FLOOD_TOPIC = "lab06/flood"
OTHER_TOPIC = "lab06/other"
BATCH = encode(Publish(FLOOD_TOPIC, b"x" * 1000)) * 256  # 256 messages of 1,000 bytes per send
CUT_OFF_DEADLINE = 20.0  # seconds of flooding for the server to give up on the stalled client
SMALL_RECEIVE_BUFFER = 4096
ACKS = 4 + 5  # CONNACK (4 bytes) and SUBACK for one filter (5 bytes)


def stalled_subscriber(port: int) -> socket.socket:
    """CONNECT (keepalive 0: no keepalive expiry), SUBSCRIBE the flood, read the acks, never read again."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    # Before connect(): the window scale is agreed in the handshake, so a small buffer stays small.
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RECEIVE_BUFFER)
    sock.settimeout(5)
    sock.connect(("127.0.0.1", port))
    sock.sendall(encode(Connect("grader-stalled", keepalive=0)) + encode(Subscribe(1, ((FLOOD_TOPIC, 0),))))
    acks = b""
    while len(acks) < ACKS:  # exactly the acks: anything after them stays unread in the kernel
        chunk = sock.recv(ACKS - len(acks))
        if not chunk:
            raise StageFailed(
                "CONNACK and SUBACK for the stalled subscriber", f"the server closed; bytes {acks!r}"
            )
        acks += chunk
    return sock


def server_end(port: int, client_port: int) -> TcpSocket | None:
    """The server's side of the connection from ``client_port``, as sock_diag reports it."""
    return next(
        (row for row in tcp_sockets(port) if row.local[1] == port and row.remote[1] == client_port), None
    )


def queued_closes(port: int) -> list[TcpSocket]:
    """Server-side sockets the server has closed while data still waited in their Send-Q."""
    return [
        row for row in tcp_sockets(port) if row.local[1] == port and row.state == "FIN_WAIT_1" and row.send_q
    ]


def what_recv_says(sock: socket.socket, timeout: float = 2.0) -> str:
    """Read what is left until the connection ends: 'ECONNRESET', 'EOF' or 'nothing'."""
    sock.settimeout(timeout)
    try:
        while sock.recv(1 << 20):
            pass
    except ConnectionResetError:
        return "ECONNRESET"
    except TimeoutError:
        return "nothing"
    return "EOF"


class StalledSubscriber:
    """The stages, sharing the clients: the stalled one, a bystander and the flooding publisher."""

    def __init__(self) -> None:
        self.sockets: list[socket.socket] = []
        self.clients: list[RawClient] = []

    def stages(self) -> list[Stage]:
        return [
            connack_stage(),
            Stage(
                "a subscriber that stops reading is cut off with a reset, not left in FIN_WAIT_1",
                self.cut_off,
            ),
            Stage("the other clients are unaffected", self.others_unaffected),
        ]

    def close(self) -> None:
        for sock in self.sockets:
            sock.close()  # unread data in its receive queue: close() sends RST, which frees any orphan
        for client in self.clients:
            client.close()

    def cut_off(self, server: StudentServer) -> str:
        stalled = stalled_subscriber(server.port)
        self.sockets.append(stalled)
        bystander, publisher = (
            RawClient(server.port, "grader-bystander", 0),
            RawClient(server.port, "grader-pub", 0),
        )
        self.clients += [bystander, publisher]
        bystander.connect()
        bystander.subscribe(OTHER_TOPIC)
        publisher.connect()
        stalled_port = stalled.getsockname()[1]
        sent = self.flood_until_cut_off(server.port, stalled_port, publisher)
        left = queued_closes(server.port)
        if left:
            queued = ", ".join(f"{row.send_q:,}" for row in left)
            raise StageFailed(
                "the stalled subscriber's socket gone at once: SO_LINGER (on, 0 s) makes close() send RST",
                f"{len(left)} socket in FIN_WAIT_1 with Send-Q {queued} bytes, owned by no process (inode "
                f"{left[0].inode}): close() queued a FIN behind data the client will never read",
                todo="TODO(abort)",
            )
        heard = what_recv_says(stalled)
        if heard != "ECONNRESET":
            raise StageFailed("the stalled client's recv() to fail with ECONNRESET (the RST)", heard)
        return (
            f"flooded {sent:,} messages; the server's end vanished, the stalled client's recv(): ECONNRESET"
        )

    def flood_until_cut_off(self, port: int, stalled_port: int, publisher: RawClient) -> int:
        """Publish 1,000-byte messages until the server's end of the stalled connection leaves ESTABLISHED."""
        deadline, sent = time.monotonic() + CUT_OFF_DEADLINE, 0
        while time.monotonic() < deadline:
            row = server_end(port, stalled_port)
            if row is None or row.state != "ESTABLISHED":
                return sent
            publisher.send(BATCH)
            sent += 256
        row = server_end(port, stalled_port)
        raise StageFailed(
            f"the server to cut off the stalled subscriber within {CUT_OFF_DEADLINE:g} s of flooding",
            f"its end still {row.state if row else '?'}, Send-Q {row.send_q if row else 0:,} bytes",
        )

    def others_unaffected(self, server: StudentServer) -> str:
        bystander, publisher = self.clients
        publisher.send(encode(Publish(OTHER_TOPIC, b"still here")))
        message = bystander.expect(Publish, 2.0, what=f"the message published to {OTHER_TOPIC}")
        assert isinstance(message, Publish)
        newcomer = RawClient(server.port, "grader-newcomer", 0)
        with contextlib.closing(newcomer):
            newcomer.connect()
        return (
            f"the bystander got {bytes(message.payload)!r} from the publisher; a new client got its CONNACK"
        )


def grade_student(path: Path) -> int:
    stages = StalledSubscriber()
    try:
        return grade("Lab 06 exercise: cut off a stalled subscriber with a reset", path, stages.stages())
    finally:
        stages.close()
