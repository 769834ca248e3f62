"""A second MQTT 3.1.1 decoder for what a broker sends, written apart from ``mqtt.codec``.

It shares no code with the core, so a bug in the core's encoder cannot hide behind the same
bug in the core's decoder: a test decodes the broker's output with both and compares. It
reads only the packets a server sends (CONNACK, PUBLISH, the four QoS acks, SUBACK, UNSUBACK,
PINGRESP) and describes each as a plain tuple.
"""

from __future__ import annotations

SERVER_PACKET_NAMES = {
    2: "CONNACK",
    3: "PUBLISH",
    4: "PUBACK",
    5: "PUBREC",
    6: "PUBREL",
    7: "PUBCOMP",
    9: "SUBACK",
    11: "UNSUBACK",
    13: "PINGRESP",
}
REQUIRED_LOW_NIBBLE = {2: 0, 4: 0, 5: 0, 6: 2, 7: 0, 9: 0, 11: 0, 13: 0}


class MalformedOutput(AssertionError):
    """The broker sent bytes that are not a well-formed server packet."""


def split_frames(stream: bytes) -> list[tuple[int, bytes]]:
    """(first byte, body) of every frame; the stream must end exactly at a frame boundary."""
    frames = []
    offset = 0
    while offset < len(stream):
        first = stream[offset]
        length, multiplier, index = 0, 1, offset + 1
        while True:
            if index >= len(stream) or index - offset > 4:
                raise MalformedOutput(f"bad remaining length at offset {offset}")
            digit = stream[index]
            index += 1
            length += (digit & 127) * multiplier
            multiplier *= 128
            if digit < 128:
                break
        if index + length > len(stream):
            raise MalformedOutput(f"frame at offset {offset} claims {length} bytes, stream ends first")
        frames.append((first, stream[index : index + length]))
        offset = index + length
    return frames


def describe(first: int, body: bytes) -> tuple:
    """One server packet as a tuple: its name, then its fields in wire order."""
    kind = first >> 4
    name = SERVER_PACKET_NAMES.get(kind)
    if name is None:
        raise MalformedOutput(f"packet type {kind} is not one a server sends")
    if kind != 3 and first & 0x0F != REQUIRED_LOW_NIBBLE[kind]:
        raise MalformedOutput(f"{name} with flags {first & 0x0F:#x}")
    if kind == 2:
        expect_length(name, body, 2)
        return (name, bool(body[0] & 1), body[1])
    if kind == 3:
        return describe_publish(first, body)
    if kind == 9:
        if len(body) < 3:
            raise MalformedOutput("SUBACK without return codes")
        return (name, int.from_bytes(body[:2], "big"), tuple(body[2:]))
    if kind == 13:
        expect_length(name, body, 0)
        return (name,)
    expect_length(name, body, 2)
    return (name, int.from_bytes(body, "big"))


def describe_publish(first: int, body: bytes) -> tuple:
    qos = (first >> 1) & 3
    if qos == 3:
        raise MalformedOutput("PUBLISH with QoS 3")
    topic_length = int.from_bytes(body[:2], "big")
    topic = body[2 : 2 + topic_length].decode("utf-8")
    rest = body[2 + topic_length :]
    packet_id = None
    if qos:
        packet_id = int.from_bytes(rest[:2], "big")
        rest = rest[2:]
    if len(body) < 2 + topic_length + (2 if qos else 0):
        raise MalformedOutput("PUBLISH shorter than its topic and packet id")
    return ("PUBLISH", topic, rest, qos, bool(first & 1), bool(first & 8), packet_id)


def expect_length(name: str, body: bytes, length: int) -> None:
    if len(body) != length:
        raise MalformedOutput(f"{name} body of {len(body)} bytes, expected {length}")


def decode_server_stream(stream: bytes) -> list[tuple]:
    """Every packet in a server's output, described; raises MalformedOutput on any flaw."""
    return [describe(first, body) for first, body in split_frames(stream)]
