"""The fuzzer's case families: what one hostile (or merely extreme) connection sends.

Each family method draws one ``Draft``: a short label saying what it is, and the packets in
order. ``tests/support/fuzz.py`` picks families by weight, mutates some drafts and fragments
the bytes. The families here send legal packets at every limit (filter counts around the
SUBACK length's one-byte boundary, 65,535-byte strings, 65,536-level topics, packets at the
size limit), every CONNECT option, shared-id sessions, and flow control pushed to its
limits; fuzz_misuse.py adds illegal orders and hostile strings. Everything is drawn from one
``random.Random``, so a seed always yields the same bytes. ``FuzzConfig`` holds the server
limits both the generator and the server under test use.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from mqtt.fields import encode_remaining_length

from . import fuzz_packets as packets
from .fuzz_packets import DISCONNECT, MAX_STRING, PINGREQ, WillSpec, deep_name, max_filters_that_fit

SESSION_IDS = [b"fuzz-%d" % index for index in range(6)]  # reused: takeovers and resumed sessions
BOUNDARY_PACKET_IDS = (1, 65535)
FILTER_COUNTS = (1, 125, 126, 253, 254, 255, 300, 2000, 8000, -1)  # -1: as many as fit in one packet
DEPTHS = (1, 199, 200, 201, 1000, 65536)  # 65536: 65,535 '/' characters, the deepest string there is
ODD_RANGES = {  # legal UTF-8 the spec lets a receiver refuse [MQTT-1.5.3-2]: servers must not crash
    "c0-controls": (0x01, 0x1F),
    "c1-controls": (0x7F, 0x9F),
    "noncharacters": (0xFDD0, 0xFDEF),
    "fffe-ffff": (0xFFFE, 0xFFFF),
}
BAD_UTF8 = (b"\xff\xfe", b"\xc0\x80", b"\xed\xa0\x80", b"\xf4\x90\x80\x80", b"fz/\xe2\x82", b"a\x80b")
STRING_FIELDS = ("client-id", "username", "will-topic", "topic", "filter", "unsubscribe-filter")


@dataclass(frozen=True, slots=True)
class FuzzConfig:
    """The server's limits (passed to it as flags) and the generator's knobs."""

    max_packet_size: int = 262_144  # well below the 1 MiB default, so packets at the limit stay cheap
    max_inflight: int = 8
    max_queued_messages: int = 64
    max_queued_bytes: int = 1 << 20
    max_pending_output: int = 65_536
    max_connections: int = 256
    max_topic_levels: int = 200  # DEPTHS straddle it: 199, 200, 201 levels, then far past it
    connect_timeout: float = 0.5  # the server closes sockets that never send CONNECT: keep that wait short
    heavy_per_seed: int = 6  # cases of 100 KB+ or thousands of filters: the costliest for the server
    exclude: tuple[str, ...] = ()  # regular expressions; a label matching one is never generated

    def server_flags(self) -> list[str]:
        return [
            *("--max-packet-size", str(self.max_packet_size)),
            *("--max-inflight", str(self.max_inflight)),
            *("--max-queued-messages", str(self.max_queued_messages)),
            *("--max-queued-bytes", str(self.max_queued_bytes)),
            *("--max-pending-output", str(self.max_pending_output)),
            *("--max-connections", str(self.max_connections)),
            *("--max-topic-levels", str(self.max_topic_levels)),
            *("--connect-timeout", str(self.connect_timeout)),
            *("--sys-interval", "1"),
        ]


@dataclass(slots=True)
class Draft:
    """One connection's packets before mutation and fragmentation."""

    label: str
    packets: list[bytes]
    reads: bool = True  # False: never reads what the server sends (a slow consumer)
    heavy: bool = False
    legal: bool = True  # a DISCONNECT appended to a legal draft makes the server close cleanly
    finished: bool = False  # already ends with DISCONNECT, or with something the server closes on


class CaseFamilies:
    """Draws drafts; each public method is one family."""

    def __init__(self, rng: random.Random, config: FuzzConfig) -> None:
        self.rng = rng
        self.config = config

    # -- building blocks ------------------------------------------------------------------

    def fresh_id(self) -> bytes:
        return b"fz-%08x" % self.rng.getrandbits(32)

    def hello(self, client_id: bytes | None = None, clean: bool | None = None) -> bytes:
        """A legal CONNECT: a fresh id, or (clean or not) one of the shared session ids."""
        rng = self.rng
        if client_id is None:
            client_id = rng.choice(SESSION_IDS) if rng.random() < 0.25 else self.fresh_id()
        if clean is None:
            clean = client_id not in SESSION_IDS or rng.random() < 0.4
        return packets.connect(client_id, clean, rng.choice((0, 5, 60, 65535)))

    def topic(self) -> bytes:
        return self.rng.choice((b"fz/t/%d" % self.rng.randrange(8), b"fz/shared", b"fz", b"$SYS/fz"))

    def topic_filter(self) -> bytes:
        return self.rng.choice((self.topic(), b"fz/#", b"fz/+/1", b"#", b"+/+", b"$SYS/#", b"+", b"fz/t/#"))

    def packet_id(self) -> int:
        return self.rng.choice((*BOUNDARY_PACKET_IDS, self.rng.randint(1, 65535)))

    def filler(self, most: int) -> list[bytes]:
        """Up to ``most`` ordinary legal packets, for variety around a draft's main point."""
        rng = self.rng
        out: list[bytes] = []
        for _ in range(rng.randint(0, most)):
            kind = rng.randrange(5)
            packet_id = self.packet_id()
            if kind == 0:
                qos = rng.randrange(3)
                out.append(packets.publish(self.topic(), rng.randbytes(rng.randint(0, 64)), qos, packet_id))
                if qos == 2:
                    out.append(packets.ack("pubrel", packet_id))
            elif kind == 1:
                out.append(packets.subscribe(packet_id, [(self.topic_filter(), rng.randrange(3))]))
            elif kind == 2:
                out.append(packets.unsubscribe(packet_id, [self.topic_filter()]))
            else:
                out.append(PINGREQ)
        return out

    def choose(self, weights: dict[str, int]) -> str:
        return self.rng.choices(list(weights), list(weights.values()))[0]

    # -- legal packets at every limit -------------------------------------------------------

    def ordinary_session(self) -> Draft:
        """Nothing extreme: a base for mutations, and background traffic."""
        ends = [DISCONNECT] if self.rng.random() < 0.5 else []
        return Draft("ordinary-session", [self.hello(), *self.filler(8), *ends], finished=bool(ends))

    def subscribe_many(self) -> Draft:
        rng = self.rng
        count = rng.choice(FILTER_COUNTS)
        if count < 0:
            count = max_filters_that_fit(self.config.max_packet_size)
            filters, label = [(b"a", rng.randrange(3))] * count, "subscribe-max-filters"
        else:
            filters = [(b"fz/m/%d" % index, rng.randrange(3)) for index in range(count)]
            label = f"subscribe-{count}-filters"
        body = [packets.subscribe(self.packet_id(), filters), packets.publish(filters[0][0], b"m", 1, 7)]
        return Draft(label, [self.hello(), *body, *self.filler(2)], heavy=count >= 2000)

    def unsubscribe_many(self) -> Draft:
        rng = self.rng
        count = rng.choice(FILTER_COUNTS)
        if count < 0:
            names, label = (
                [b"a"] * max_filters_that_fit(self.config.max_packet_size),
                "unsubscribe-max-filters",
            )
        else:
            names, label = [b"fz/u/%d" % index for index in range(count)], f"unsubscribe-{count}-filters"
        first = packets.subscribe(self.packet_id(), [(name, 1) for name in names[:10]])
        body = [first, packets.unsubscribe(self.packet_id(), names)]
        return Draft(label, [self.hello(), *body], heavy=len(names) >= 2000)

    def long_strings(self) -> Draft:
        rng = self.rng
        long = bytes(rng.choice(b"abcxyz") for _ in range(MAX_STRING - 2))
        kind = rng.choice(("topic", "filter", "client-id", "username-password", "will"))
        qos = rng.randrange(3)
        if kind == "topic":
            body = [packets.subscribe(2, [(long + b"/t", qos)]), packets.publish(long + b"/t", b"x", qos, 3)]
            return Draft("topic-65535-bytes", [self.hello(), *body])
        if kind == "filter":
            body = [packets.subscribe(2, [(long + b"/#", qos)]), packets.publish(long + b"/x", b"y", qos, 3)]
            return Draft("filter-65535-bytes", [self.hello(), *body])
        if kind == "client-id":
            return Draft("client-id-65535-bytes", [packets.connect(long + b"id"), *self.filler(3)])
        if kind == "username-password":
            hello = packets.connect(self.fresh_id(), username=long + b"un", password=long + b"pw")
            return Draft("username-password-65535-bytes", [hello, *self.filler(3)])
        will = WillSpec(long + b"/w", rng.randbytes(MAX_STRING), qos, rng.random() < 0.5)
        hello = packets.connect(self.fresh_id(), will=will)
        return Draft("will-topic-payload-65535-bytes", [hello, *self.filler(2)])

    def deep(self) -> Draft:
        """Deep topics and filters: a trie walked by recursion meets its match here."""
        rng = self.rng
        levels = rng.choice(DEPTHS)
        kind = rng.choice(("subscribe-publish", "retained", "plus", "hash"))
        topic, topic_filter, qos = deep_name(levels), deep_name(levels), rng.randrange(3)
        if kind == "plus":
            levels = min(levels, (MAX_STRING + 1) // 2)  # '+/' per level
            topic, topic_filter = deep_name(levels), deep_name(levels, b"+")
        elif kind == "hash":
            topic_filter = topic[:-1] + b"#" if topic.endswith(b"/") else topic + b"/#"
        body = [packets.subscribe(5, [(topic_filter, qos)]), packets.publish(topic, b"deep", qos, 6)]
        if kind == "retained":
            # Cleared again at the end, so later SUBSCRIBEs do not rescan a 65,536-level topic.
            retained = packets.publish(topic, b"deep", qos, 6, retain=True)
            body = [
                retained,
                packets.subscribe(5, [(topic_filter, qos)]),
                packets.publish(topic, retain=True),
            ]
        return Draft(f"deep-{kind}-{levels}-levels", [self.hello(), *body])

    def packet_ids(self) -> Draft:
        body = []
        for packet_id in BOUNDARY_PACKET_IDS:
            body += [
                packets.publish(b"fz/ids", b"1", 1, packet_id),
                packets.publish(b"fz/ids", b"2", 2, packet_id),
            ]
            body += [packets.ack("pubrel", packet_id), packets.subscribe(packet_id, [(b"fz/ids", 2)])]
            body += [packets.unsubscribe(packet_id, [b"fz/ids"])]
        return Draft("packet-ids-1-and-65535", [self.hello(), *body])

    def qos_flows(self) -> Draft:
        rng = self.rng
        kind = rng.choice(("qos0", "qos1", "qos2-complete", "qos2-incomplete", "qos2-duplicate"))
        topic, packet_id, payload = self.topic(), self.packet_id(), rng.randbytes(rng.randint(0, 512))
        qos = 2 if kind.startswith("qos2") else int(kind[-1])
        body = [packets.publish(topic, payload, qos, packet_id)]
        if kind == "qos2-duplicate":
            body += [packets.publish(topic, payload, 2, packet_id, dup=True)]
        if kind != "qos2-incomplete" and qos == 2:
            body += [packets.ack("pubrel", packet_id)] * rng.randint(1, 2)
        return Draft(f"publish-{kind}", [self.hello(), *self.filler(2), *body, *self.filler(2)])

    def big_payload(self) -> Draft:
        rng, limit = self.rng, self.config.max_packet_size
        offsets = {"max-minus-1": -1, "at-max": 0, "over-max-by-1": 1, "over-max-by-4096": 4096}
        name = rng.choice(list(offsets))
        qos = rng.randrange(3)
        body = [
            packets.subscribe(1, [(b"fz/big", qos)]),
            packets.publish_of_size(b"fz/big", qos, limit + offsets[name]),
        ]
        over = offsets[name] > 0
        return Draft(
            f"publish-{name}-size", [self.hello(), *body], reads=rng.random() < 0.7, heavy=True, finished=over
        )

    def claims_too_long(self) -> Draft:
        """A header announcing more than the limit, then a few bytes: refused before buffering."""
        claim = self.rng.choice((self.config.max_packet_size, 2 * self.config.max_packet_size, 268_435_455))
        header = b"\x30" + encode_remaining_length(claim)
        return Draft(
            "length-claims-over-max", [self.hello(), header + b"\x00\x02fz" + b"z" * 100], finished=True
        )

    def retained(self) -> Draft:
        rng = self.rng
        topic = b"fz/retained/%d" % rng.randrange(6)
        body = [packets.publish(topic, rng.randbytes(rng.randint(1, 256)), rng.randrange(3), 9, retain=True)]
        body.append(packets.subscribe(10, [(b"fz/retained/#", rng.randrange(3))]))
        clears = rng.random() < 0.5
        if clears:
            body.append(packets.publish(topic, b"", rng.randrange(3), 11, retain=True))
        return Draft("retained-set-and-clear" if clears else "retained-set", [self.hello(), *body])

    # -- CONNECT options, sessions and flow control ----------------------------------------

    def connect_variants(self) -> Draft:
        rng = self.rng
        will_qos, will_retain = rng.randrange(3), rng.random() < 0.5
        will = WillSpec(
            b"fz/will/%d" % rng.randrange(4), rng.randbytes(rng.randint(0, 300)), will_qos, will_retain
        )
        variants: dict[str, bytes] = {
            "keepalive-0": packets.connect(self.fresh_id(), keepalive=0),
            "keepalive-65535": packets.connect(self.fresh_id(), keepalive=65535),
            "empty-id-clean": packets.connect(b""),
            "empty-id-persistent": packets.connect(b"", clean=False),
            "client-id-23-chars": packets.connect(self.fresh_id().ljust(23, b"x")),
            f"will-qos{will_qos}-retain{int(will_retain)}": packets.connect(self.fresh_id(), will=will),
            "username-password": packets.connect(
                self.fresh_id(), username=b"user", password=rng.randbytes(16)
            ),
            "username-only": packets.connect(self.fresh_id(), username=b""),
            "mqtt-3.1": packets.connect(self.fresh_id(), protocol=(b"MQIsdp", 3), will=will),
            "mqtt-3.1-empty-id": packets.connect(b"", protocol=(b"MQIsdp", 3)),
            "level-5": packets.connect(self.fresh_id(), protocol=(b"MQTT", 5)),
            "mqisdp-level-4": packets.connect(self.fresh_id(), protocol=(b"MQIsdp", 4)),
            "unknown-protocol": packets.connect(self.fresh_id(), protocol=(b"MQTX", 4)),
        }
        name = rng.choice(list(variants))
        ends = [DISCONNECT] if rng.random() < 0.5 else []  # without it, the will fires
        return Draft(f"connect-{name}", [variants[name], *self.filler(4), *ends], finished=bool(ends))

    def sessions(self) -> Draft:
        """Shared client ids: persistent sessions resumed (session present) and taken over."""
        rng = self.rng
        client_id, clean = rng.choice(SESSION_IDS), rng.random() < 0.3
        topic = b"fz/session/%d" % SESSION_IDS.index(client_id)
        body = [
            packets.subscribe(self.packet_id(), [(topic, rng.randrange(1, 3)), (b"fz/#", rng.randrange(3))])
        ]
        for index in range(rng.randint(1, 12)):
            body.append(packets.publish(topic, b"s%d" % index, rng.randrange(3), index + 1))
        acks = [
            packets.ack(rng.choice(("puback", "pubrec", "pubcomp")), pid)
            for pid in range(1, rng.randint(1, 8))
        ]
        label = "session-clean-takeover" if clean else "session-persistent-resume"
        return Draft(label, [packets.connect(client_id, clean, 60), *body, *acks, *self.filler(3)])

    def unknown_acks(self) -> Draft:
        kinds = ("puback", "pubrec", "pubrel", "pubcomp")
        body = [packets.ack(self.rng.choice(kinds), self.packet_id()) for _ in range(self.rng.randint(1, 12))]
        return Draft("acks-for-unknown-ids", [self.hello(), *body, *self.filler(2)])

    def slow_consumer(self) -> Draft:
        """Subscribe, then flood the same topic and never read: output piles up in the server."""
        rng = self.rng
        qos, everything = rng.randrange(2), rng.random() < 0.25
        topic = b"fz/slow/%08x" % rng.getrandbits(32)
        size, total = rng.choice((256, 1024, 4096)), rng.choice((256 << 10, 1 << 20))
        flood = [
            packets.publish(topic, b"f" * size, qos, index % 65535 + 1) for index in range(total // size)
        ]
        subscription = [(b"#" if everything else topic, qos)]
        label = "slow-consumer-of-everything" if everything else f"slow-consumer-qos{qos}"
        return Draft(
            label, [self.hello(), packets.subscribe(1, subscription), *flood], reads=False, heavy=True
        )

    def unacked_subscriber(self) -> Draft:
        """QoS 1/2 deliveries to itself that it never (or only partly) acknowledges."""
        rng = self.rng
        config = self.config
        topic = b"fz/unacked/%08x" % rng.getrandbits(32)
        kind = rng.choice(("qos1-never-acks", "qos2-completes", "qos2-stalls-after-pubrec"))
        qos = 1 if kind.startswith("qos1") else 2
        count = config.max_inflight + config.max_queued_messages + 16 if qos == 1 else rng.randint(1, 12)
        body = [packets.subscribe(1, [(topic, qos)])]
        for packet_id in range(1, count + 1):
            body.append(packets.publish(topic, b"u%d" % packet_id, qos, packet_id))
            if qos == 2:
                body.append(packets.ack("pubrel", packet_id))
        if qos == 2:
            # A new clean session numbers its deliveries 1, 2, ...: acknowledge them by guess.
            body += [packets.ack("pubrec", packet_id) for packet_id in range(1, count + 1)]
        if kind == "qos2-completes":
            body += [packets.ack("pubcomp", packet_id) for packet_id in range(1, count + 1)]
        return Draft(f"subscriber-{kind}", [packets.connect(self.fresh_id()), *body])
