"""Lab 08's grader: black-box stages for a learner's boss/worker server (exercise/my_server.py).

Each stage talks MQTT over real sockets while a silent client, a TCP connection that never
sends a byte, sits connected; when something does not arrive, it reads where the server's
threads sleep from /proc. The untouched skeleton holds its lock across a blocking recv, so the
silent client stops every thread at stage 3.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

from thread_states import describe, one_reader_others_on_futex, thread_states

from labs.exercise import (
    RawClient,
    Stage,
    StageFailed,
    StudentServer,
    connack_stage,
    grade,
    subscriber_and_publisher,
)
from mqtt.codec import encode, encode_publish
from mqtt.packets import Packet, Puback, Publish

SKELETON = Path(__file__).resolve().parent / "exercise" / "my_server.py"
MESSAGES = 50
DEADLINE = 3.0  # seconds for the messages to arrive; on loopback they take milliseconds
PICKUP_WAIT = 1.5  # seconds for the server to take the silent socket in (a thread reads it)
TOPIC = "lab08/grader"


@contextlib.contextmanager
def silent_client(server: StudentServer, name: str) -> Iterator[RawClient]:
    """A TCP connection that sends nothing (yet): RawClient opens it and waits to be told."""
    silent = RawClient(server.port, name, keepalive=0)
    try:
        yield silent
    finally:
        silent.close()


def taken_in(server: StudentServer) -> str:
    """Wait until one of the server's threads reads the silent socket; say where they all sleep.

    A server that never blocks in a read never shows one: after PICKUP_WAIT the stage goes on.
    """
    deadline = time.monotonic() + PICKUP_WAIT
    states = thread_states(server.pid)
    while not any(state.reading for state in states) and time.monotonic() < deadline:
        time.sleep(0.02)
        states = thread_states(server.pid)
    return describe(states)


def arrived(client: RawClient, kind: type, count: int, timeout: float) -> list[Packet]:
    """The packets of ``kind`` that reached ``client`` once ``count`` did, or when ``timeout`` ran out."""
    deadline = time.monotonic() + timeout
    while sum(isinstance(packet, kind) for packet in client.packets) < count:
        left = deadline - time.monotonic()
        if left <= 0 or not client.read_some(min(left, 0.2)):
            break
    return [packet for packet in client.packets if isinstance(packet, kind)]


def stalled(server: StudentServer, delivered: int, what: str) -> StageFailed:
    """The failure, with where each thread sleeps: the measured reason nothing moved."""
    states = thread_states(server.pid)
    holder = one_reader_others_on_futex(states)
    reason = (
        f": {holder.name} sleeps in {holder.syscall} on the silent socket, and every other thread "
        "in futex, waiting for the lock it holds"
        if holder
        else ""
    )
    return StageFailed(
        f"{MESSAGES} of {MESSAGES} {what} within {DEADLINE:g} s while a silent client is connected",
        f"{delivered} of {MESSAGES} delivered in {DEADLINE:g} s while a silent client is connected; "
        f"threads (from /proc/{server.pid}/task/*/syscall): {describe(states)}{reason}",
        todo="TODO(lock-scope)",
    )


def silent_client_stalls_nobody(server: StudentServer) -> str:
    pair = subscriber_and_publisher(server.port, TOPIC, "grader-qos0")
    with pair as (subscriber, publisher), silent_client(server, "grader-silent"):
        threads = taken_in(server)
        publisher.send(b"".join(encode(Publish(TOPIC, b"m%03d" % index)) for index in range(MESSAGES)))
        delivered = len(arrived(subscriber, Publish, MESSAGES, DEADLINE))
        if delivered < MESSAGES:
            raise stalled(server, delivered, "messages at the subscriber")
    return f"{MESSAGES} of {MESSAGES} delivered beside a silent client; threads meanwhile: {threads}"


def exactly_once_in_order(server: StudentServer) -> str:
    pair = subscriber_and_publisher(server.port, TOPIC, "grader-qos1")
    with pair as (subscriber, publisher), silent_client(server, "grader-quiet"):
        taken_in(server)
        frames = (
            encode_publish(TOPIC.encode(), b"q%03d" % index, qos=1, retain=False, dup=False, packet_id=index)
            for index in range(1, MESSAGES + 1)
        )
        publisher.send(b"".join(frames))
        acks = arrived(publisher, Puback, MESSAGES, DEADLINE)
        acked = sorted(ack.packet_id for ack in acks if isinstance(ack, Puback))
        if acked != list(range(1, MESSAGES + 1)):
            if not acked:
                raise stalled(server, 0, "PUBACKs")
            raise StageFailed(f"one PUBACK for each of packet ids 1..{MESSAGES}", f"PUBACKs for ids {acked}")
        payloads = [bytes(packet.payload) for packet in arrived(subscriber, Publish, MESSAGES, DEADLINE)]
        wanted = [b"q%03d" % index for index in range(1, MESSAGES + 1)]
        if payloads != wanted:
            lost = sorted(set(wanted) - set(payloads))
            doubled = sorted({payload for payload in payloads if payloads.count(payload) > 1})
            got = f"{len(payloads)} messages; lost {lost[:5]}, duplicated {doubled[:5]}"
            raise StageFailed(f"q001..q{MESSAGES:03d}, each once and in order", got)
    return f"{MESSAGES} PUBACKs, and q001..q{MESSAGES:03d} each delivered once, in order"


def silent_client_speaks_at_last(server: StudentServer) -> str:
    with silent_client(server, "grader-late") as late:
        taken_in(server)
        late.connect(timeout=DEADLINE)  # its CONNECT, at last: the server must still be reading it
    return "the silent client's late CONNECT → CONNACK"


STAGES = [
    connack_stage(),
    Stage(
        f"with a silent client connected, a subscriber gets all {MESSAGES} messages",
        silent_client_stalls_nobody,
    ),
    Stage(
        f"beside a silent client, {MESSAGES} QoS 1 messages: acked, each once, in order",
        exactly_once_in_order,
    ),
    Stage("a silent client that finally sends CONNECT gets its CONNACK", silent_client_speaks_at_last),
]


def grade_student(path: Path) -> int:
    return grade("Lab 08 exercise: no lock across a read", path, STAGES)
