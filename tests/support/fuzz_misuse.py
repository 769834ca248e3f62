"""The fuzzer's protocol-misuse families: legal packets in illegal orders, and hostile strings.

``MisuseFamilies`` extends the limit and session families of ``fuzz_cases.py``; the server
must close each of these connections (or, for merely odd strings, serve it) and survive.
"""

from __future__ import annotations

from . import fuzz_packets as packets
from .fuzz_cases import BAD_UTF8, ODD_RANGES, STRING_FIELDS, CaseFamilies, Draft
from .fuzz_packets import CONNACK, DISCONNECT, PINGREQ, PINGRESP, WillSpec

INVALID_FILTERS = (b"fz#", b"fz/#/x", b"+x", b"fz/+x/y", b"##")
WILDCARD_TOPICS = (b"fz/+", b"fz/#", b"#", b"+", b"fz/+/x")


class MisuseFamilies(CaseFamilies):
    # -- legal packets in illegal orders ---------------------------------------------------

    def before_connect(self) -> Draft:
        """Anything but CONNECT first [MQTT-3.1.0-1]; or nothing, or half a CONNECT (timeout)."""
        rng = self.rng
        firsts = {
            "publish": packets.publish(b"fz/early", b"x", rng.randrange(3), 1),
            "subscribe": packets.subscribe(1, [(b"fz/#", 1)]),
            "unsubscribe": packets.unsubscribe(1, [b"fz/#"]),
            "pingreq": PINGREQ,
            "disconnect": DISCONNECT,
            "puback": packets.ack("puback", 1),
            "pubrel": packets.ack("pubrel", 1),
            "connack": CONNACK,
            "nothing": b"",
            "half-a-connect": self.hello()[:7],
        }
        name = rng.choice(list(firsts))
        later = [self.hello()] if name not in ("nothing", "half-a-connect") and rng.random() < 0.5 else []
        draft = Draft(f"before-connect-{name}", [firsts[name], *later], legal=False)
        draft.finished = name not in ("nothing", "half-a-connect")
        return draft

    def second_connect(self) -> Draft:
        """A second CONNECT on one connection [MQTT-3.1.0-2], with the same id or another."""
        first = self.hello()
        second = first if self.rng.random() < 0.5 else self.hello()
        return Draft("second-connect", [first, *self.filler(3), second], legal=False, finished=True)

    def server_only(self) -> Draft:
        """Packets only a server sends, arriving from a client."""
        rng = self.rng
        kinds = {
            "connack": CONNACK,
            "suback": packets.suback(self.packet_id(), bytes(rng.choice((0, 1, 2, 0x80)) for _ in range(3))),
            "unsuback": packets.ack("unsuback", self.packet_id()),
            "pingresp": PINGRESP,
        }
        name = rng.choice(list(kinds))
        body = [*self.filler(2), kinds[name], *self.filler(2)]
        return Draft(f"client-sends-{name}", [self.hello(), *body], legal=False, finished=True)

    def wrong_acks(self) -> Draft:
        """Acknowledgements of the wrong kind, or with a malformed header or body."""
        rng = self.rng
        packet_id = self.packet_id()
        pid = packets.U16.pack(packet_id)
        kinds = {
            "pubrec-for-qos1": [
                packets.publish(b"fz/a", b"1", 1, packet_id),
                packets.ack("pubrec", packet_id),
            ],
            "pubcomp-before-pubrel": [
                packets.publish(b"fz/a", b"2", 2, packet_id),
                packets.ack("pubcomp", packet_id),
            ],
            "puback-for-qos2": [
                packets.publish(b"fz/a", b"2", 2, packet_id),
                packets.ack("puback", packet_id),
            ],
            "pubrel-flags-0": [b"\x60\x02" + pid],
            "puback-flags-2": [b"\x42\x02" + pid],
            "ack-with-3-bytes": [bytes((rng.choice((0x40, 0x50, 0x62, 0x70)), 3)) + pid + b"\x00"],
            "ack-with-1-byte": [bytes((rng.choice((0x40, 0x50, 0x62, 0x70)), 1)) + pid[:1]],
            "ack-packet-id-0": [packets.ack(rng.choice(("puback", "pubrec", "pubrel", "pubcomp")), 0)],
        }
        name = rng.choice(list(kinds))
        legal = name in (
            "pubrec-for-qos1",
            "pubcomp-before-pubrel",
            "puback-for-qos2",
        )  # ignored, not refused
        return Draft(f"wrong-ack-{name}", [self.hello(), *kinds[name]], legal=legal, finished=not legal)

    # -- strings -------------------------------------------------------------------------------

    def bad_strings(self) -> Draft:
        """Ill-formed UTF-8, U+0000, wildcards in topic names, empty and invalid filters."""
        rng = self.rng
        where = rng.choice(STRING_FIELDS)
        badness = rng.choice(("bad-utf8", "nul", "wildcard", "empty"))
        if where in ("client-id", "username") and badness in ("wildcard", "empty"):
            badness = "bad-utf8"  # any characters may appear in these, and empty ones are legal
        value = {  # each of these is a malformed packet: the server must close the connection
            "bad-utf8": rng.choice(BAD_UTF8),
            "nul": rng.choice((b"a\x00b", b"\x00", b"fz/\x00")),
            "wildcard": rng.choice(INVALID_FILTERS if "filter" in where else WILDCARD_TOPICS),
            "empty": b"",
        }[badness]
        draft = self.with_string(where, value, f"{badness}-in-{where}")
        draft.legal = False
        draft.finished = True
        return draft

    def odd_chars(self) -> Draft:
        """Legal but unusual characters (controls, noncharacters) in every string field."""
        rng = self.rng
        where, name = rng.choice(STRING_FIELDS), rng.choice(list(ODD_RANGES))
        low, high = ODD_RANGES[name]
        text = "fz/" + "".join(chr(rng.randint(low, high)) for _ in range(rng.randint(1, 10)))
        return self.with_string(where, text.encode("utf-8"), f"odd-chars-{name}-in-{where}")

    def with_string(self, where: str, value: bytes, label: str) -> Draft:
        """A connection that carries ``value`` in the field ``where``, and a little more."""
        rng = self.rng
        qos = rng.randrange(3)
        if where == "client-id":
            return Draft(label, [packets.connect(value), *self.filler(3)])
        if where == "username":
            return Draft(
                label, [packets.connect(self.fresh_id(), username=value, password=b"pw"), *self.filler(2)]
            )
        if where == "will-topic":
            hello = packets.connect(self.fresh_id(), will=WillSpec(value, b"will", qos, rng.random() < 0.5))
            return Draft(label, [hello, *self.filler(2)])  # no DISCONNECT: the will is published
        if where == "topic":
            body = [packets.subscribe(1, [(b"fz/#", qos)]), packets.publish(value, b"odd", qos, 2)]
            return Draft(label, [self.hello(), *body, *self.filler(2)])
        if where == "filter":
            body = [packets.subscribe(1, [(value, qos)]), packets.publish(b"fz/odd", b"odd", qos, 2)]
            return Draft(label, [self.hello(), *body, *self.filler(2)])
        return Draft(label, [self.hello(), packets.unsubscribe(1, [value]), *self.filler(2)])
