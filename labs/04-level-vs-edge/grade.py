"""Lab 04's grader: black-box stages for a learner's edge-triggered server (exercise/my_server.py).

Each stage talks MQTT over a real socket and reads the kernel's view of the server's sockets;
none looks inside the learner's code. The untouched skeleton reads one chunk per edge, so the
2 KB request stalls at stage 3 with its unread bytes visible in Recv-Q.
"""

from __future__ import annotations

from pathlib import Path

from labs.exercise import (
    RawClient,
    Stage,
    StageFailed,
    StudentServer,
    connack_stage,
    grade,
    shown,
    subscriber_and_publisher,
)
from mqtt.codec import encode, encode_publish
from mqtt.packets import Puback, Publish
from tui.sources.tcp_states import tcp_sockets

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
STALL_WINDOW = 2.0  # seconds: on loopback a PUBACK takes well under a millisecond
BIG_PAYLOAD = 2000  # bytes: with its header, a ~2 KB PUBLISH, more than the skeleton's 1 KB chunk


def unread_bytes(port: int) -> int:
    """Bytes the kernel holds, unread, on the server's side of established connections (Recv-Q)."""
    return sum(row.recv_q for row in tcp_sockets(port) if row.local[1] == port and row.state == "ESTABLISHED")


def big_publish_is_acknowledged(server: StudentServer) -> str:
    # keepalive 0: no PINGREQ of ours may raise a new edge and rescue a loop that reads once.
    client = RawClient(server.port, "grader-big", keepalive=0)
    try:
        client.connect()
        frame = encode_publish(b"lab04/big", b"x" * BIG_PAYLOAD, qos=1, retain=False, dup=False, packet_id=7)
        client.send(frame)  # one send: one segment on loopback, so one edge
        try:
            wanted = f"PUBACK (40 02 00 07) for a {len(frame):,}-byte PUBLISH"
            client.expect(Puback, STALL_WINDOW, what=wanted)
        except StageFailed as stalled:
            waiting = unread_bytes(server.port)
            raise StageFailed(
                stalled.expected,
                f"{stalled.arrived}; the kernel still holds {waiting:,} unread bytes on the server's "
                "socket (Recv-Q): your loop went back to epoll_wait with data left, and no new edge came",
                todo="TODO(drain)",
            ) from None
        return f"{len(frame):,}-byte PUBLISH → PUBACK, Recv-Q {unread_bytes(server.port)} afterwards"
    finally:
        client.close()


def subscriber_gets_a_big_message(server: StudentServer) -> str:
    with subscriber_and_publisher(server.port, "lab04/fan") as (subscriber, publisher):
        payload = bytes(range(256)) * 20  # 5,120 bytes: five chunks of the skeleton's READ_CHUNK
        publisher.send(encode(Publish("lab04/fan", payload, qos=0)))
        message = subscriber.expect(Publish, STALL_WINDOW, what="the 5,120-byte message on lab04/fan")
        assert isinstance(message, Publish)
        if bytes(message.payload) != payload:
            arrived = f"{len(message.payload):,} bytes: {shown(message.payload)}"
            raise StageFailed("the 5,120 bytes published", arrived)
        return "5,120-byte PUBLISH delivered intact to a subscriber"


STAGES = [
    connack_stage(),
    Stage(f"a {BIG_PAYLOAD:,}-byte QoS 1 PUBLISH is acknowledged, no new edge", big_publish_is_acknowledged),
    Stage("a 5 KB message reaches a subscriber intact", subscriber_gets_a_big_message),
]


def grade_student(path: Path) -> int:
    return grade("Lab 04 exercise: drain until EAGAIN", path, STAGES)
