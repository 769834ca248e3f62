"""Property: whatever clients send, every byte the broker sends back is a well-formed packet.

Hypothesis scripts several clients sending any packets in any order, including legal packets
at their limits (hundreds of filters, packet id 65535) and ones in illegal orders. A driver
loop sends each connection's output in random-sized pieces, and the bytes that went out must
decode, packet by packet, with the core's decoder and with an independent one, identically.
"""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from mqtt.broker import Broker
from mqtt.codec import encode
from mqtt.connection import Connection
from mqtt.limits import Limits
from mqtt.packets import Connect, Packet, Subscribe, Unsubscribe
from tests.core.test_broker import FakeClock
from tests.core.test_codec_properties import packets, qos_levels
from tests.support.broker_output import assert_decodes_alike

CLIENTS = 3
wide_subscribes = st.builds(
    lambda count, packet_id, qos: Subscribe(packet_id, tuple((f"t/{index}", qos) for index in range(count))),
    st.sampled_from([125, 126, 253, 254, 300]),
    st.sampled_from([1, 65535]),
    qos_levels,
)
wide_unsubscribes = st.builds(
    lambda count: Unsubscribe(65535, tuple(f"t/{index}" for index in range(count))),
    st.sampled_from([1, 300]),
)
client_packets = st.one_of(packets(max_payload=256), wide_subscribes, wide_unsubscribes)
steps = st.tuples(st.integers(0, CLIENTS - 1), client_packets, st.integers(0, 64))


def send_some(connection: Connection, most: int, sent: bytearray) -> None:
    """What a driver's send does: take up to ``most`` bytes from the front of the output."""
    data = connection.pending()[:most]
    connection.sent(len(data))
    sent += data


@given(st.lists(steps, max_size=25), st.booleans())
def test_whatever_clients_send_the_broker_answers_in_well_formed_packets(
    script: list[tuple[int, Packet, int]], connect_first: bool
) -> None:
    broker = Broker(FakeClock(), Limits(sys_interval=0, max_inflight=3, max_queued_messages=5))
    connections = [broker.open(f"peer-{index}") for index in range(CLIENTS)]
    wire = {connection: bytearray() for connection in connections}
    if connect_first:
        for index, connection in enumerate(connections):
            connection.receive(encode(Connect(f"client-{index}", clean_session=index != 0)))
    for who, packet, send_budget in script:
        connection = connections[who]
        if not connection.wants_close:
            connection.receive(encode(packet))
        for each in connections:
            send_some(each, send_budget * 16, wire[each])
    for connection in connections:
        send_some(connection, connection.output_bytes, wire[connection])  # the rest, then decode
        assert_decodes_alike(bytes(wire[connection]), repr(connection))
