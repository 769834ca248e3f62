"""Property tests for the codec: every packet round-trips, however the stream is split.

Garbage and damaged streams may only yield packets or raise ``ProtocolError``; any other
exception would take a whole server loop down instead of one connection.
"""

from __future__ import annotations

from collections.abc import Iterator

from hypothesis import given
from hypothesis import strategies as st

from mqtt.codec import Decoder, encode
from mqtt.errors import ProtocolError
from mqtt.packets import (
    SUBACK_FAILURE,
    Connack,
    Connect,
    Disconnect,
    Packet,
    Pingreq,
    Pingresp,
    Puback,
    Pubcomp,
    Publish,
    Pubrec,
    Pubrel,
    Suback,
    Subscribe,
    Unsuback,
    Unsubscribe,
    Will,
)

# ---------------------------------------------------------------------------------------------
# Strategies



def is_noncharacter(character: str) -> bool:
    code_point = ord(character)
    return 0xFDD0 <= code_point <= 0xFDEF or code_point & 0xFFFE == 0xFFFE


def text_characters(exclude: str = "") -> st.SearchStrategy[str]:
    """Characters a string field may carry: codec="utf-8" leaves out surrogates, category Cc the
    control characters (U+0000-U+001F, U+007F-U+009F), the filter the non-characters (1.5.3)."""
    characters = st.characters(codec="utf-8", exclude_categories=("Cc",), exclude_characters=exclude)
    return characters.filter(lambda character: not is_noncharacter(character))


strings = st.text(text_characters(), max_size=20)
# One topic level: no separator, no wildcard; empty levels and "$"-levels included on purpose.
levels = st.one_of(
    st.sampled_from(["", "a", "$SYS", "sport"]),
    st.text(text_characters(exclude="/+#"), max_size=6),
)
topic_names = st.lists(levels, min_size=1, max_size=5).map("/".join).filter(bool)
filter_levels = st.one_of(levels, st.just("+"))
topic_filters = st.builds(
    lambda head, ends_in_hash: "/".join([*head, "#"] if ends_in_hash else head),
    st.lists(filter_levels, max_size=5),
    st.booleans(),
).filter(bool)
packet_ids = st.integers(1, 0xFFFF)
qos_levels = st.integers(0, 2)
wills = st.builds(Will, topic_names, st.binary(max_size=64), qos_levels, st.booleans())
subscriptions = st.lists(st.tuples(topic_filters, qos_levels), min_size=1, max_size=4).map(tuple)
suback_codes = st.lists(st.sampled_from([0, 1, 2, SUBACK_FAILURE]), min_size=1, max_size=4).map(tuple)


def payloads(max_size: int) -> st.SearchStrategy[bytes]:
    """Mostly short random payloads, plus cheap long ones up to ``max_size`` bytes."""
    long_payloads = st.builds(bytes.__mul__, st.binary(min_size=1, max_size=8), st.integers(0, max_size // 8))
    return st.one_of(st.binary(max_size=min(64, max_size)), long_payloads)


@st.composite
def publishes(draw: st.DrawFn, max_payload: int = 4096) -> Publish:
    qos = draw(qos_levels)
    return Publish(
        topic=draw(topic_names),
        payload=draw(payloads(max_payload)),
        qos=qos,
        retain=draw(st.booleans()),
        dup=qos > 0 and draw(st.booleans()),  # [MQTT-3.3.1-2]: DUP only with QoS > 0
        packet_id=draw(packet_ids) if qos else None,
    )


@st.composite
def connects(draw: st.DrawFn) -> Connect:
    username = draw(st.none() | strings)
    # [MQTT-3.1.2-22]: a password only together with a user name.
    password = None if username is None else draw(st.none() | st.binary(max_size=32))
    protocol_name, protocol_level = draw(st.sampled_from([("MQTT", 4), ("MQIsdp", 3)]))
    return Connect(
        client_id=draw(strings),
        clean_session=draw(st.booleans()),
        keepalive=draw(st.integers(0, 0xFFFF)),
        username=username,
        password=password,
        will=draw(st.none() | wills),
        protocol_name=protocol_name,
        protocol_level=protocol_level,
    )


def packets(max_payload: int = 4096) -> st.SearchStrategy[Packet]:
    """Any of the fourteen packet types, valid as the spec defines them."""
    return st.one_of(
        connects(),
        st.builds(Connack, st.booleans(), st.integers(0, 5)),
        publishes(max_payload),
        st.builds(Puback, packet_ids),
        st.builds(Pubrec, packet_ids),
        st.builds(Pubrel, packet_ids),
        st.builds(Pubcomp, packet_ids),
        st.builds(Subscribe, packet_ids, subscriptions),
        st.builds(Suback, packet_ids, suback_codes),
        st.builds(Unsubscribe, packet_ids, st.lists(topic_filters, min_size=1, max_size=4).map(tuple)),
        st.builds(Unsuback, packet_ids),
        st.just(Pingreq()),
        st.just(Pingresp()),
        st.just(Disconnect()),
    )


@st.composite
def streams_with_cuts(draw: st.DrawFn, stream: st.SearchStrategy[bytes]) -> tuple[bytes, list[int]]:
    """A byte stream and the offsets (sorted, repeats allowed) at which it arrives in pieces."""
    data = draw(stream)
    return data, sorted(draw(st.lists(st.integers(0, len(data)), max_size=12)))


def pieces(stream: bytes, cuts: list[int]) -> Iterator[bytes]:
    start = 0
    for cut in [*cuts, len(stream)]:
        yield stream[start:cut]
        start = cut


def encoded(packet_list: list[Packet]) -> bytes:
    return b"".join(encode(packet) for packet in packet_list)


# ---------------------------------------------------------------------------------------------
# Valid streams


@given(packets())
def test_every_packet_decodes_to_itself_after_encoding(packet: Packet) -> None:
    assert Decoder().feed(encode(packet)) == [packet]


@given(st.data(), st.lists(packets(), max_size=6))
def test_a_stream_split_anywhere_decodes_to_the_same_packets(data: st.DataObject, sent: list[Packet]) -> None:
    stream, cuts = data.draw(streams_with_cuts(st.just(encoded(sent))))
    decoder = Decoder()
    received = [packet for piece in pieces(stream, cuts) for packet in decoder.feed(piece)]
    assert received == sent
    assert decoder.buffered == 0


@given(st.lists(packets(max_payload=512), max_size=4))
def test_a_stream_fed_one_byte_at_a_time_decodes_to_the_same_packets(sent: list[Packet]) -> None:
    stream = encoded(sent)
    decoder = Decoder()
    received = [packet for index in range(len(stream)) for packet in decoder.feed(stream[index : index + 1])]
    assert received == sent
    assert decoder.buffered == 0


@given(st.lists(packets(), min_size=1, max_size=6))
def test_frame_spans_slice_out_each_packets_wire_bytes(sent: list[Packet]) -> None:
    # A broker forwards a PUBLISH as buffer[frame_start:frame_end], so the span must be exact.
    spans = [buffer[start:end] for buffer, start, _body, end in Decoder().frames(encoded(sent))]
    assert spans == [encode(packet) for packet in sent]


@given(st.data(), st.lists(packets(max_payload=256), min_size=1, max_size=4))
def test_frame_spans_survive_the_receive_buffer_being_reused(data: st.DataObject, sent: list[Packet]) -> None:
    # Drivers recv_into one reused bytearray and pass a memoryview of it: a span handed out
    # for forwarding must not change when the next recv overwrites that buffer.
    stream, cuts = data.draw(streams_with_cuts(st.just(encoded(sent))))
    receive_buffer = bytearray(len(stream))
    decoder = Decoder()
    spans = []
    for piece in pieces(stream, cuts):
        receive_buffer[: len(piece)] = piece
        spans += decoder.frames(memoryview(receive_buffer)[: len(piece)])
        receive_buffer[:] = b"\xff" * len(receive_buffer)
    assert [bytes(buffer[start:end]) for buffer, start, _body, end in spans] == [encode(p) for p in sent]


# ---------------------------------------------------------------------------------------------
# Damaged streams

small_packet_lists = st.lists(packets(max_payload=64), min_size=1, max_size=4)


def decode_until_error(stream: bytes, cuts: list[int]) -> tuple[list[Packet], str | None]:
    """Feed a fresh Decoder piece by piece: the packets it returned, and the rule it raised, if any.

    Any exception other than ProtocolError propagates and fails the test.
    """
    decoder = Decoder()
    received: list[Packet] = []
    try:
        for piece in pieces(stream, cuts):
            received += decoder.feed(piece)
    except ProtocolError as error:
        return received, error.rule
    return received, None


def assert_only_valid_packets(received: list[Packet]) -> None:
    """Whatever the decoder accepted must itself be a packet the codec can write and read back."""
    for packet in received:
        assert Decoder().feed(encode(packet)) == [packet]


@st.composite
def damaged(draw: st.DrawFn, stream: bytes) -> bytes:
    """``stream`` after one to four random edits: a flipped bit, a changed, inserted or deleted byte."""
    damaged_stream = bytearray(stream)
    for _ in range(draw(st.integers(1, 4))):
        edit = draw(st.sampled_from(["flip", "set", "insert", "delete"]))
        if edit == "insert":
            index = draw(st.integers(0, len(damaged_stream)))
            damaged_stream[index:index] = draw(st.binary(min_size=1, max_size=4))
            continue
        if not damaged_stream:
            continue
        index = draw(st.integers(0, len(damaged_stream) - 1))
        if edit == "flip":
            damaged_stream[index] ^= 1 << draw(st.integers(0, 7))
        elif edit == "set":
            damaged_stream[index] = draw(st.integers(0, 255))
        else:
            del damaged_stream[index]
    return bytes(damaged_stream)


# Garbage framed with a correct length prefix, mostly behind a valid first byte, so that every
# body decoder sees random input rather than the fixed-header check rejecting nearly all of it.
VALID_FIRST_BYTES = [
    0x10,
    0x20,
    0x30,
    0x31,
    0x32,
    0x35,
    0x3A,
    0x3D,
    0x40,
    0x50,
    0x62,
    0x70,
    0x82,
    0x90,
    0xA2,
    0xB0,
    0xC0,
    0xD0,
    0xE0,
]
random_frames = st.builds(
    lambda first, body: bytes((first, len(body))) + body,
    st.sampled_from(VALID_FIRST_BYTES) | st.integers(0, 255),
    st.binary(max_size=127),
)


@given(streams_with_cuts(st.binary(max_size=512) | st.lists(random_frames, max_size=8).map(b"".join)))
def test_random_bytes_yield_packets_or_protocol_error_only(stream_and_cuts: tuple[bytes, list[int]]) -> None:
    received, _rule = decode_until_error(*stream_and_cuts)
    assert_only_valid_packets(received)


@given(st.data(), small_packet_lists)
def test_damaged_packets_yield_packets_or_protocol_error_only(
    data: st.DataObject, sent: list[Packet]
) -> None:
    stream, cuts = data.draw(streams_with_cuts(damaged(encoded(sent))))
    received, _rule = decode_until_error(stream, cuts)
    assert_only_valid_packets(received)


@given(st.data(), small_packet_lists)
def test_truncated_stream_yields_a_prefix_of_the_packets_and_waits(
    data: st.DataObject, sent: list[Packet]
) -> None:
    stream = encoded(sent)
    prefixes = st.integers(0, len(stream) - 1).map(lambda end: stream[:end])
    truncated, cuts = data.draw(streams_with_cuts(prefixes))
    decoder = Decoder()
    received = [packet for piece in pieces(truncated, cuts) for packet in decoder.feed(piece)]
    assert received == sent[: len(received)]
    assert len(received) < len(sent)
    assert decoder.buffered == len(truncated) - len(encoded(received))


@given(st.data(), small_packet_lists)
def test_how_a_damaged_stream_is_split_does_not_change_its_outcome(
    data: st.DataObject, sent: list[Packet]
) -> None:
    stream, cuts = data.draw(streams_with_cuts(damaged(encoded(sent))))
    # One byte per feed completes at most one frame per call, so no packet is lost to a later error.
    one_byte_at_a_time = decode_until_error(stream, list(range(1, len(stream))))
    received, rule = decode_until_error(stream, cuts)
    assert rule == one_byte_at_a_time[1]
    assert received == one_byte_at_a_time[0][: len(received)]
