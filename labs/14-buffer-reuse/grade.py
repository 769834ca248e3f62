"""Lab 14's grader: black-box stages for a learner's server that must reuse its receive buffer.

Light load, one small PUBLISH per read, is where a fresh buffer per recv shows: each 256 KiB
``recv`` asks malloc for new memory, whose pages the kernel maps on first touch (minor faults,
counted in /proc/PID/stat). The grader counts them for the learner's process; a server that
reads into one preallocated buffer takes almost none. glibc's mmap threshold is pinned at its
default for the learner's server, so the count does not depend on which clients closed before.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from labs.bench.proctree import sample_process
from labs.exercise import (
    RawClient,
    Stage,
    StageFailed,
    StudentServer,
    connack_stage,
    grade,
    subscriber_and_publisher,
)
from labs.proc import minor_faults
from mqtt.codec import encode_publish
from mqtt.packets import Puback, Publish

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
WARM_UP = 50  # messages before counting: first-time allocations of the connection and the core
LIGHT_MESSAGES = 300  # QoS 1 PUBLISHes, each sent only after the last one's PUBACK: one per read
MOST_FAULTS = 0.5  # minor faults per message the grader allows (fresh 256 KiB: 2.0; reused: 0.0)
DELIVERED = 20  # messages the delivery stage publishes
PIN_NAME, PIN_VALUE = "MALLOC_MMAP_THRESHOLD_", 128 * 1024  # glibc's default threshold, made fixed


def publish_and_wait(client: RawClient, frame: bytes) -> None:
    """One QoS 1 PUBLISH, then its PUBACK: the server reads this PUBLISH alone."""
    client.send(frame)
    client.expect(Puback, 5.0, what="PUBACK for a QoS 1 PUBLISH")


@dataclass(frozen=True)
class LightLoad:
    """What ``messages`` request/response PUBLISHes cost the server: minor faults and CPU seconds."""

    messages: int
    faults: int
    cpu_seconds: float

    @property
    def per_message(self) -> float:
        return self.faults / self.messages


def light_load(port: int, pid: int, messages: int) -> LightLoad:
    """QoS 1 PUBLISHes of 32 bytes, each after the last one's PUBACK: one small read apiece.

    The client closes at the end, so the server's last read of it returns 0 bytes.
    """
    client = RawClient(port, "lab14-light", keepalive=0)
    frame = encode_publish(b"lab14/light", b"x" * 32, qos=1, retain=False, dup=False, packet_id=1)
    try:
        client.connect()
        for _ in range(WARM_UP):
            publish_and_wait(client, frame)
        faults, cpu = minor_faults(pid), sample_process(pid)
        for _ in range(messages):
            publish_and_wait(client, frame)
        faults, cpu_after = minor_faults(pid) - faults, sample_process(pid)
    finally:
        client.close()
    seconds = cpu_after.cpu_since(cpu) if cpu and cpu_after else 0.0
    return LightLoad(messages, faults, seconds)


@contextlib.contextmanager
def pinned_mmap_threshold() -> Iterator[None]:
    """MALLOC_MMAP_THRESHOLD_ in the environment the servers we start inherit, for a ``with`` block.

    Set, glibc keeps its mmap threshold there for good: every block above it is mapped fresh.
    Unset, the threshold rises the first time a mapped block is freed whole, and from then on
    such blocks come from the heap. Pinned, the grade does not depend on what came before.
    """
    previous = os.environ.get(PIN_NAME)
    os.environ[PIN_NAME] = str(PIN_VALUE)
    try:
        yield
    finally:
        if previous is None:
            del os.environ[PIN_NAME]
        else:
            os.environ[PIN_NAME] = previous


def messages_are_delivered(server: StudentServer) -> str:
    with subscriber_and_publisher(server.port, "lab14/#") as (subscriber, publisher):
        for index in range(DELIVERED):
            frame = encode_publish(
                b"lab14/%d" % index, b"%03d" % index, qos=1, retain=False, dup=False, packet_id=index + 1
            )
            publish_and_wait(publisher, frame)
        for index in range(DELIVERED):
            packet = subscriber.expect(Publish, 5.0, what=f"message {index + 1} of {DELIVERED}")
            assert isinstance(packet, Publish)
            if (packet.topic, bytes(packet.payload)) != (f"lab14/{index}", b"%03d" % index):
                arrived = f"{packet.topic} {bytes(packet.payload)!r} as message {index + 1}"
                raise StageFailed(f"lab14/{index} b'{index:03d}'", arrived)
    return f"{DELIVERED} QoS 1 PUBLISHes acknowledged and delivered to a subscriber, in order"


def few_faults_at_light_load(server: StudentServer) -> str:
    load = light_load(server.port, server.pid, LIGHT_MESSAGES)
    seen = f"{load.faults:,} minor page faults for {LIGHT_MESSAGES} messages"
    seen += f" ({load.per_message:.2f} per message)"
    if load.per_message >= MOST_FAULTS:
        raise StageFailed(
            f"fewer than {MOST_FAULTS} minor faults per message, one small PUBLISH per read",
            f"{seen}: each recv gets a fresh block from malloc, and the kernel maps its pages anew",
            todo="TODO(reuse)",
        )
    return seen


STAGES = [
    connack_stage(),
    Stage("messages are acknowledged and delivered", messages_are_delivered),
    Stage(f"light load: fewer than {MOST_FAULTS} minor faults per message", few_faults_at_light_load),
]


def grade_student(path: Path) -> int:
    with pinned_mmap_threshold():
        return grade("Lab 14 exercise: reuse the receive buffer", path, STAGES)
