"""Check a broker's output stream with two decoders: the core's ``Decoder`` and an independent one."""

from __future__ import annotations

from mqtt.codec import Decoder
from mqtt.packets import Connack, Packet, Pingresp, Publish, Suback

from .independent_decoder import decode_server_stream


def as_tuple(packet: Packet) -> tuple:
    """The core's packet object in the independent decoder's tuple form."""
    name = type(packet).__name__.upper()
    if isinstance(packet, Connack):
        return (name, packet.session_present, packet.return_code)
    if isinstance(packet, Publish):
        fields = (packet.topic, packet.payload, packet.qos, packet.retain, packet.dup, packet.packet_id)
        return (name, *fields)
    if isinstance(packet, Suback):
        return (name, packet.packet_id, packet.return_codes)
    if isinstance(packet, Pingresp):
        return (name,)
    return (name, packet.packet_id)  # type: ignore[union-attr]


def assert_decodes_alike(stream: bytes, what: str) -> list[tuple]:
    """Both decoders read ``stream`` to its last byte and find the same packets; returns them."""
    decoder = Decoder()
    core = [as_tuple(packet) for packet in decoder.feed(stream)]
    assert decoder.buffered == 0, f"{what}: {decoder.buffered} bytes left after the last whole packet"
    independent = decode_server_stream(stream)
    assert core == independent, f"{what}: the two decoders disagree"
    return core
