"""Benchmark packets on the wire: pre-encoded PUBLISH batches and their bulk verification.

Every payload carries (publisher id, sequence number, send time in ns), so a subscriber can
tell a lost message from a duplicated or a reordered one exactly. Subscribers parse whole
``recv`` buffers at once: when every frame is one of ours (the usual case) the frames are
checked with a few stepped slices and unpacked by ``struct.iter_unpack``, all in C.
"""

from __future__ import annotations

import struct
from array import array
from dataclasses import dataclass, field

from mqtt.codec import Decoder, decode_packet, encode, encode_publish
from mqtt.packets import Connect, Packet, Subscribe

PAYLOAD_FIELDS = struct.Struct("!IQQ")  # publisher id, sequence number, monotonic send time (ns)
PACKET_ID = struct.Struct("!H")
_SENT_NS = struct.Struct("!Q")
LOAD_TOPIC = b"bench/load"
CONN_TOPIC = b"bench/conn"
IDLE_TOPIC = b"bench/idle"
MAX_GAP = 10_000_000  # a jump further ahead than any run can send is corruption, not loss


@dataclass(frozen=True)
class PublishLayout:
    """The fixed shape of one benchmark PUBLISH: topic, QoS and payload size never vary in a run."""

    topic: bytes = LOAD_TOPIC
    payload_size: int = 64
    qos: int = 0

    def __post_init__(self) -> None:
        if self.payload_size < PAYLOAD_FIELDS.size:
            raise ValueError(f"payload must hold at least {PAYLOAD_FIELDS.size} bytes")

    @property
    def template(self) -> bytes:
        """One complete frame with zeroed fields (packet id 1 for QoS 1, rewritten per message)."""
        payload = bytes(self.payload_size)
        return encode_publish(self.topic, payload, self.qos, False, False, 1 if self.qos else None)

    @property
    def frame_size(self) -> int:
        return len(self.template)

    @property
    def prefix(self) -> bytes:
        """The bytes every frame starts with: fixed header and topic (not the packet id)."""
        return self.template[: self.frame_size - self.payload_size - (2 if self.qos else 0)]

    def row_struct(self) -> struct.Struct:
        """Unpacks one whole frame into ([packet id,] publisher id, sequence, send time)."""
        padding = self.payload_size - PAYLOAD_FIELDS.size
        packet_id = "H" if self.qos else ""
        return struct.Struct(f"!{len(self.prefix)}x{packet_id}IQQ{padding}x")


def connect_packet(client_id: str, keepalive: int = 900, clean_session: bool = True) -> bytes:
    """CONNECT; ``clean_session=False`` asks the broker to keep the session (and its QoS 1 queue)."""
    return encode(Connect(client_id, clean_session=clean_session, keepalive=keepalive))


def subscribe_packet(topic: bytes, qos: int = 0, packet_id: int = 1) -> bytes:
    return encode(Subscribe(packet_id, ((topic.decode(), qos),)))


class BatchBuilder:
    """Fills a reused buffer of pre-encoded frames; only the payload fields change per message."""

    def __init__(self, layout: PublishLayout, capacity: int) -> None:
        self.layout = layout
        self.capacity = capacity
        self.frame_size = layout.frame_size
        self.buffer = bytearray(layout.template * capacity)
        self.view = memoryview(self.buffer)
        self.fields_offset = self.frame_size - layout.payload_size
        self.packet_id_offset = self.fields_offset - 2

    def fill(self, publisher_id: int, first_seq: int, count: int, now_ns: int) -> memoryview:
        """Frames for sequence numbers first_seq .. first_seq+count-1, all stamped now_ns."""
        pack_into, buffer, size = PAYLOAD_FIELDS.pack_into, self.buffer, self.frame_size
        offset = self.fields_offset
        for seq in range(first_seq, first_seq + count):
            pack_into(buffer, offset, publisher_id, seq, now_ns)
            offset += size
        return self.view[: count * size]

    def set_packet_ids(self, packet_ids: list[int]) -> None:
        """QoS 1: write the packet id of each frame filled by the last ``fill``."""
        offset, size = self.packet_id_offset, self.frame_size
        for index, packet_id in enumerate(packet_ids):
            PACKET_ID.pack_into(self.buffer, offset + index * size, packet_id)


@dataclass
class Parsed:
    """What one buffer held: our fixed-size frames as rows, anything else decoded, and a partial tail."""

    rows: list[tuple[int, ...]]
    others: list[Packet]
    leftover: bytes


class FrameParser:
    """Splits a received byte stream into rows of one fixed-size frame shape, in bulk when it can.

    ``prefix`` is what every such frame starts with and ``row`` unpacks a whole frame. When every
    complete frame in a buffer has the prefix (the usual case in a benchmark), the check is one
    stepped slice per prefix byte and the unpacking one ``iter_unpack``, both in C.
    """

    def __init__(self, prefix: bytes, frame_size: int, row: struct.Struct) -> None:
        self.prefix = prefix
        self.frame_size = frame_size
        self.row = row
        self._repeats: dict[int, list[bytes]] = {}

    @classmethod
    def for_publish(cls, layout: PublishLayout) -> FrameParser:
        """Rows of ([packet id,] publisher id, sequence, send time)."""
        return cls(layout.prefix, layout.frame_size, layout.row_struct())

    @classmethod
    def for_puback(cls) -> FrameParser:
        """Rows of (packet id,)."""
        return cls(b"\x40\x02", 4, struct.Struct("!2xH"))

    def uniform_frames(self, buffer: bytearray, end: int) -> int:
        """How many whole frames ``buffer[:end]`` starts with if every one of them has our prefix, else 0."""
        frames = end // self.frame_size
        return frames if frames and self._uniform(buffer, frames, frames * self.frame_size) else 0

    def parse(self, buffer: bytearray, end: int, frames: int | None = None) -> Parsed:
        """Parse ``buffer[:end]`` (``frames``: a known ``uniform_frames`` result); keep ``leftover``."""
        frames = self.uniform_frames(buffer, end) if frames is None else frames
        if frames:
            stop = frames * self.frame_size
            with memoryview(buffer) as view:
                rows = list(self.row.iter_unpack(view[:stop]))
            return Parsed(rows, [], bytes(buffer[stop:end]))
        return self.parse_slowly(bytes(buffer[:end]))

    def _uniform(self, buffer: bytearray, frames: int, stop: int) -> bool:
        repeats = self._repeats.get(frames)
        if repeats is None:
            repeats = [bytes((byte,)) * frames for byte in self.prefix]
            if len(self._repeats) < 64:
                self._repeats[frames] = repeats
        size = self.frame_size
        return all(buffer[index:stop:size] == repeat for index, repeat in enumerate(repeats))

    def parse_slowly(self, data: bytes) -> Parsed:
        """Frame by frame: mixed packet types, or frames of another size or topic."""
        decoder = Decoder()
        rows: list[tuple[int, ...]] = []
        others: list[Packet] = []
        size, prefix, row = self.frame_size, self.prefix, self.row
        for buffer, start, body, end in decoder.frames(data):
            if end - start == size and buffer.startswith(prefix, start):
                rows.append(row.unpack_from(buffer, start))
            else:
                others.append(decode_packet(buffer[start], buffer[body:end]))
        return Parsed(rows, others, data[len(data) - decoder.buffered :])


_LOW_BYTES = bytes(index & 0xFF for index in range(1 << 17))
_SECOND_BYTES = bytes((index >> 8) & 0xFF for index in range(1 << 17))


class RunCheck:
    """Checks in C that whole frames are one publisher's messages ``first .. first+n-1``, in order.

    Each byte of the publisher id and of the sequence number is a column of the buffer, read with
    one stepped slice. The expected columns are constants, or windows into precomputed counting
    patterns, so verifying a fan-out subscriber's read costs no Python work per message.
    """

    def __init__(self, layout: PublishLayout) -> None:
        self.frame_size = layout.frame_size
        self.publisher_at = layout.frame_size - layout.payload_size
        self.seq_at = self.publisher_at + 4
        self.sent_at = self.seq_at + 8

    def matches(self, buffer: bytearray, frames: int, publisher: int, first: int) -> bool:
        if frames > 1 << 16:
            return False
        size, stop, seq_at = self.frame_size, frames * self.frame_size, self.seq_at
        for index, byte in enumerate(publisher.to_bytes(4, "big")):
            if buffer[self.publisher_at + index : stop : size] != bytes((byte,)) * frames:
                return False
        last, low = first + frames - 1, first & 0xFFFF
        before_carry = min(frames, 0x10000 - low)  # frames before bits 16 and up change (once at most)
        for index in range(6):  # the six high bytes of the big-endian 64-bit sequence number
            shift = 8 * (7 - index)
            expected = bytes(((first >> shift) & 0xFF,)) * before_carry
            expected += bytes(((last >> shift) & 0xFF,)) * (frames - before_carry)
            if buffer[seq_at + index : stop : size] != expected:
                return False
        return (
            buffer[seq_at + 6 : stop : size] == _SECOND_BYTES[low : low + frames]
            and buffer[seq_at + 7 : stop : size] == _LOW_BYTES[low : low + frames]
        )


@dataclass
class StreamChecker:
    """Per subscriber connection: exact loss, duplicate and reorder accounting per publisher.

    ``expected[p]`` is the next sequence number due from publisher ``p``; a jump records the
    skipped numbers as missing. A late arrival of a missing number is a reordering; any other
    number below ``expected`` is a duplicate. What is still missing at the end is lost.
    """

    publishers: int
    seq_index: int = 1  # position of the sequence number in a row (publisher id just before)
    expected: list[int] = field(init=False)
    missing: dict[int, set[int]] = field(default_factory=dict)
    received: int = 0
    duplicated: int = 0
    reordered: int = 0
    foreign: int = 0  # rows naming a publisher this run does not have

    def __post_init__(self) -> None:
        self.expected = [0] * self.publishers

    def check(self, rows: list[tuple[int, ...]]) -> None:
        expected, publishers = self.expected, self.publishers
        pub_index, seq_index = self.seq_index - 1, self.seq_index
        for row in rows:
            publisher, seq = row[pub_index], row[seq_index]
            if publisher < publishers and seq == expected[publisher]:
                expected[publisher] = seq + 1
            else:
                self._out_of_line(publisher, seq)
        self.received += len(rows)

    def _out_of_line(self, publisher: int, seq: int) -> None:
        if publisher >= self.publishers or seq - self.expected[publisher] > MAX_GAP:
            self.foreign += 1  # not one of ours, or a corrupted sequence number
            return
        due = self.expected[publisher]
        missing = self.missing.setdefault(publisher, set())
        if seq > due:
            missing.update(range(due, seq))
            self.expected[publisher] = seq + 1
        elif seq in missing:
            missing.discard(seq)
            self.reordered += 1
        else:
            self.duplicated += 1

    def unique_from(self, publisher: int) -> int:
        return self.expected[publisher] - len(self.missing.get(publisher, ()))

    def lost(self, sent: list[int]) -> int:
        """Messages publishers sent that this stream never received."""
        return sum(max(0, count - self.unique_from(index)) for index, count in enumerate(sent))


class LatencySampler:
    """Keeps at most ``capacity`` evenly spaced samples: when full, drops every other one."""

    def __init__(self, capacity: int = 20_000) -> None:
        self.capacity = capacity
        self.samples = array("q")
        self.stride = 1
        self._countdown = 0

    def add_rows(self, rows: list[tuple[int, ...]], now_ns: int) -> None:
        """Sample end-to-end latencies from rows whose last field is the send time."""
        start = self._countdown
        if start >= len(rows):
            self._countdown -= len(rows)
            return
        for row in rows[start :: self.stride]:
            self.samples.append(now_ns - row[-1])
        self._countdown = (start - len(rows)) % self.stride
        self._shrink()

    def add_frames(self, buffer: bytearray, frames: int, frame_size: int, sent_at: int, now_ns: int) -> None:
        """Sample end-to-end latencies straight from whole frames (the ``RunCheck`` path)."""
        start = self._countdown
        if start >= frames:
            self._countdown -= frames
            return
        for index in range(start, frames, self.stride):
            self.samples.append(now_ns - _SENT_NS.unpack_from(buffer, index * frame_size + sent_at)[0])
        self._countdown = (start - frames) % self.stride
        self._shrink()

    def add(self, value_ns: int) -> None:
        if self._countdown:
            self._countdown -= 1
            return
        self.samples.append(value_ns)
        self._countdown = self.stride - 1
        self._shrink()

    def _shrink(self) -> None:
        if len(self.samples) > self.capacity:
            self.samples = self.samples[::2]
            self.stride *= 2
