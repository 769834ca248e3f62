"""Every core test checks the broker's output too: all it queued must decode, twice over.

An autouse fixture records every byte any ``Connection`` queues during a test. At teardown
each connection's stream must decode, packet by packet, with the core's own ``Decoder`` and
with an independent decoder that shares no code with it, and the two must agree. A SUBACK
with a one-byte length for 300 codes, say, fails whichever test provoked it.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from mqtt.connection import Connection
from tests.support.broker_output import assert_decodes_alike


@pytest.fixture(autouse=True)
def broker_output_decodes(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[Connection, bytearray]]:
    streams: dict[Connection, bytearray] = {}
    queue_output = Connection.send

    def recording_send(connection: Connection, data: bytes, packets: int = 1) -> None:
        streams.setdefault(connection, bytearray()).extend(data)
        queue_output(connection, data, packets)

    monkeypatch.setattr(Connection, "send", recording_send)
    yield streams
    for connection, stream in streams.items():
        assert_decodes_alike(bytes(stream), f"output queued for {connection!r}")
