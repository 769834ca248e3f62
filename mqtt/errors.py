"""The exceptions the sans-I/O core raises for bad input; either closes that one connection.

Every protocol violation names the normative statement it breaks, e.g. ``[MQTT-3.3.2-2]``, so
a learner can look the rule up in the MQTT 3.1.1 specification. ``LimitExceeded`` is legal
input past a limit this broker sets (``mqtt.limits.Limits``).
"""


class ProtocolError(Exception):
    """Malformed or forbidden input; the broker answers by closing that one connection."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule} {message}")
        self.rule = rule


class UnacceptableProtocolLevel(ProtocolError):
    """CONNECT with a protocol level this broker does not speak: answer CONNACK 0x01, then close."""


class PacketTooLarge(ProtocolError):
    """A packet whose declared size exceeds the configured limit (checked before it is buffered)."""


class LimitExceeded(Exception):
    """Legal MQTT past one of the broker's configured limits, e.g. a topic with too many levels."""
