"""Seeded generator of hostile MQTT connections, for fuzzing a live server process.

``generate(seed, count, config)`` returns ``count`` ``FuzzCase``s, always the same ones for the
same seed and config: each is one connection's bytes, already split into the chunks to send
(one ``send`` each), a short label saying what it is, whether the client reads, and how it
closes. A crash is then reported as "seed S, connection C, case LABEL".

The mix, per seed: every family once (in a seed-shuffled order), then weighted draws. A
family is a method of ``MisuseFamilies`` (fuzz_cases.py: legal packets at every limit,
sessions, flow control; fuzz_misuse.py: illegal orders and hostile strings). About a fifth
of the draws mutate an ordinary draft instead (bit flips, truncation, inserted or deleted
bytes, bad or 5-byte remaining lengths, reserved flags and types, reordered packets). Every
case is then fragmented: one chunk, one per packet, random cuts, or byte by byte.
"""

from __future__ import annotations

import itertools
import math
import random
import re
from dataclasses import dataclass

from mqtt.fields import encode_remaining_length

from .fuzz_cases import Draft, FuzzConfig
from .fuzz_misuse import MisuseFamilies
from .fuzz_packets import DISCONNECT

__all__ = ["FuzzCase", "FuzzConfig", "generate"]

FAMILY_WEIGHTS = {
    "subscribe_many": 8,
    "unsubscribe_many": 3,
    "long_strings": 4,
    "deep": 8,
    "packet_ids": 2,
    "qos_flows": 5,
    "big_payload": 2,
    "claims_too_long": 1,
    "retained": 3,
    "connect_variants": 8,
    "sessions": 6,
    "unknown_acks": 3,
    "slow_consumer": 2,
    "unacked_subscriber": 4,
    "ordinary_session": 3,
    "before_connect": 4,
    "second_connect": 2,
    "server_only": 3,
    "wrong_acks": 3,
    "bad_strings": 7,
    "odd_chars": 6,
    "mutation": 22,
}
# Drafts worth mutating: small, so a mutation is cheap, and varied in packet kinds.
MUTATION_BASES = (
    "ordinary_session",
    "connect_variants",
    "qos_flows",
    "packet_ids",
    "retained",
    "sessions",
    "unknown_acks",
    "odd_chars",
    "unacked_subscriber",
    "server_only",
)
MUTATIONS = ("bitflip", "truncate-packet", "truncate-stream", "insert-bytes", "delete-bytes",
             "bad-remaining-length", "five-byte-length", "nonminimal-length", "reserved-flags",
             "reserved-type", "swap-packets", "repeat-packet")  # fmt: skip
CLOSE_WEIGHTS = {"reset": 40, "fin": 35, "server": 25}
FRAGMENT_WEIGHTS = {"whole": 25, "per-packet": 25, "random-cuts": 35, "bytewise": 15}
MAX_CHUNKS = 256  # bounds the send calls per case: a 1 MB flood is not sent packet by packet


@dataclass(frozen=True, slots=True)
class FuzzCase:
    """One fuzz connection: what it sends, whether it reads, and how it ends."""

    label: str
    chunks: tuple[bytes, ...]
    reads: bool = True  # False: never reads, so the server's output to it piles up
    close: str = "reset"  # reset: SO_LINGER 0 close; fin: shutdown(SHUT_WR); server: wait for its close
    heavy: bool = False

    @property
    def data(self) -> bytes:
        return b"".join(self.chunks)

    def describe(self, preview: int = 48) -> str:
        data = self.data
        head = data[:preview].hex(" ") + (" ..." if len(data) > preview else "")
        return (
            f"{self.label}: {len(data)} bytes in {len(self.chunks)} chunks, close={self.close}, "
            f"reads={self.reads}; bytes: {head}"
        )


def generate(seed: int, count: int, config: FuzzConfig | None = None) -> list[FuzzCase]:
    """``count`` cases for ``seed``: deterministic, bounded in heavy cases, excluding config.exclude."""
    config = config or FuzzConfig()
    rng = random.Random(seed)
    families = MisuseFamilies(rng, config)
    order = list(FAMILY_WEIGHTS)
    rng.shuffle(order)
    excluded = [re.compile(pattern) for pattern in config.exclude]
    cases: list[FuzzCase] = []
    heavy = 0
    for attempt in range(count * 50):  # bounded even if exclusions reject nearly everything
        if len(cases) >= count:
            break
        name = order[attempt] if attempt < len(order) else families.choose(FAMILY_WEIGHTS)
        draft = draw(rng, families, name)
        if draft is None or any(pattern.search(draft.label) for pattern in excluded):
            continue
        if draft.heavy and heavy >= config.heavy_per_seed:
            continue
        heavy += draft.heavy
        cases.append(finish(rng, draft))
    return cases


def draw(rng: random.Random, families: MisuseFamilies, name: str) -> Draft | None:
    if name == "mutation":
        return mutate(rng, getattr(families, rng.choice(MUTATION_BASES))())
    draft: Draft = getattr(families, name)()
    return draft


def finish(rng: random.Random, draft: Draft) -> FuzzCase:
    """Choose how the case closes, and fragment its bytes."""
    close = rng.choices(list(CLOSE_WEIGHTS), list(CLOSE_WEIGHTS.values()))[0]
    if close == "server" and not draft.reads:
        close = "fin"  # waiting for the server's close needs reading
    packets = draft.packets
    if close == "server" and draft.legal and not draft.finished:
        packets = [*packets, DISCONNECT]  # so the server has a reason to close
    return FuzzCase(draft.label, fragment(rng, packets), draft.reads, close, draft.heavy)


def fragment(rng: random.Random, packets: list[bytes]) -> tuple[bytes, ...]:
    data = b"".join(packets)
    if len(data) <= 1:
        return (data,) if data else ()
    mode = rng.choices(list(FRAGMENT_WEIGHTS), list(FRAGMENT_WEIGHTS.values()))[0]
    if mode == "whole":
        return (data,)  # many packets coalesced into one send
    if mode == "per-packet":
        step = math.ceil(len(packets) / MAX_CHUNKS)
        return tuple(b"".join(packets[index : index + step]) for index in range(0, len(packets), step))
    if mode == "random-cuts":
        return random_cuts(rng, data, rng.randint(1, 64))
    head = len(data) if len(data) <= 2048 else 256  # byte by byte, then (for big cases) random cuts
    tail = random_cuts(rng, data[head:], 32) if head < len(data) else ()
    return tuple(data[index : index + 1] for index in range(head)) + tail


def random_cuts(rng: random.Random, data: bytes, most: int) -> tuple[bytes, ...]:
    if len(data) <= 1:
        return (data,) if data else ()
    cuts = sorted(rng.sample(range(1, len(data)), min(len(data) - 1, most)))
    bounds = [0, *cuts, len(data)]
    return tuple(data[start:end] for start, end in itertools.pairwise(bounds))


# -- mutations -----------------------------------------------------------------------------------


def mutate(rng: random.Random, draft: Draft) -> Draft | None:
    """One mutation of one packet (or of the packet order) of ``draft``; None if it has no bytes."""
    candidates = [index for index, packet in enumerate(draft.packets) if packet]
    if not candidates:
        return None
    kind = rng.choice(MUTATIONS)
    out = list(draft.packets)
    index = rng.choice(candidates)
    if kind == "swap-packets" and len(candidates) > 1:
        other = rng.choice(candidates)
        out[index], out[other] = out[other], out[index]
    elif kind == "repeat-packet":
        out.insert(index, out[index])
    elif kind == "truncate-stream":
        out = [*out[:index], out[index][: rng.randrange(len(out[index]))]]
    else:
        out[index] = mutate_packet(rng, kind, out[index])
    return Draft(f"{kind}({draft.label})", out, draft.reads, draft.heavy, legal=False)


def mutate_packet(rng: random.Random, kind: str, packet: bytes) -> bytes:
    first, length, body = split_frame(packet)
    data = bytearray(packet)
    position = rng.randrange(len(data))
    if kind == "bitflip":
        for _ in range(rng.randint(1, 4)):
            # Headers are where parsing decisions live: flip there more often than in payloads.
            spot = rng.randrange(min(len(data), 16)) if rng.random() < 0.6 else rng.randrange(len(data))
            data[spot] ^= 1 << rng.randrange(8)
        return bytes(data)
    if kind == "truncate-packet":
        return packet[:position]
    if kind == "insert-bytes":
        return packet[:position] + rng.randbytes(rng.randint(1, 16)) + packet[position:]
    if kind == "delete-bytes":
        return packet[:position] + packet[position + rng.randint(1, 16) :]
    if kind == "bad-remaining-length":
        choices = (0, 1, len(body) - 1, len(body) + 1, rng.randint(0, 4096))
        wrong = rng.choice([value for value in choices if value >= 0])
        return bytes((first,)) + encode_remaining_length(wrong) + body
    if kind == "five-byte-length":
        return bytes((first,)) + b"\xff\xff\xff\xff\x7f" + body
    if kind == "nonminimal-length" and len(length) < 4:
        # The same value, one byte longer: a continuation bit and a zero digit.
        return bytes((first,)) + length[:-1] + bytes((length[-1] | 0x80, 0)) + body
    if kind == "reserved-flags":
        return bytes((first ^ rng.randint(1, 15),)) + packet[1:]
    if kind == "reserved-type":
        return bytes((rng.choice((0x00, 0xF0)) | (first & 0x0F),)) + packet[1:]
    return bytes(data)


def split_frame(packet: bytes) -> tuple[int, bytes, bytes]:
    """(first byte, remaining-length bytes, body) of a packet, however mangled its length is."""
    end = 1
    while end < len(packet) and end < 5 and packet[end] & 0x80:
        end += 1
    end = min(end + 1, len(packet))
    return packet[0], packet[1:end], packet[end:]
