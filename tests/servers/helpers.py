"""Helpers shared by the end-to-end protocol tests: unique names, client bookkeeping, raw flows.

Every server test module shares one server process, so each test names its own topics and
client ids with ``unique``. ``Clients`` closes whatever a test opened, even when it fails.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType

import pytest

from mqtt.packets import (
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
)
from tests.support.clients import PahoClient, RawClient, paho_client
from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until

needs_mosquitto_clients = pytest.mark.skipif(
    shutil.which("mosquitto_sub") is None or shutil.which("mosquitto_pub") is None,
    reason="mosquitto-clients not installed",
)


def unique(prefix: str) -> str:
    """A topic or client id no other test in the shared server uses."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class Clients:
    """Opens raw and paho clients against one server and closes them all on exit."""

    def __init__(self, server: ServerProcess) -> None:
        self.port = server.port
        self._raw: list[RawClient] = []
        self._paho: list[PahoClient] = []

    def __enter__(self) -> Clients:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        for client in self._paho:
            client.close()
        for raw in self._raw:
            raw.close()

    def socket(self) -> RawClient:
        """A raw TCP connection that has sent nothing yet."""
        raw = RawClient(self.port)
        self._raw.append(raw)
        return raw

    def raw(self, client_id: str = "", session_present: bool = False, **fields: object) -> RawClient:
        """A raw client whose CONNECT was accepted (and whose session-present flag was as given)."""
        raw = self.socket()
        connack = raw.connect(client_id, **fields)
        assert (connack.session_present, connack.return_code) == (session_present, 0)
        return raw

    def paho(self, **options: object) -> PahoClient:
        client = paho_client(self.port, **options)  # type: ignore[arg-type]
        self._paho.append(client)
        return client


# -- raw-client flows ----------------------------------------------------------------------


def subscribe(raw: RawClient, *filters: tuple[str, int], packet_id: int = 1) -> tuple[int, ...]:
    """SUBSCRIBE and return the SUBACK's return codes (after checking its packet id)."""
    raw.send(Subscribe(packet_id, filters))
    suback = raw.expect(Suback)
    assert suback.packet_id == packet_id
    return suback.return_codes


def publish(
    raw: RawClient, topic: str, payload: bytes, qos: int = 0, packet_id: int = 1, retain: bool = False
) -> None:
    """Publish and complete the inbound flow: PUBACK for QoS 1, PUBREC/PUBREL/PUBCOMP for QoS 2.

    Either way the server has handled the PUBLISH when this returns. QoS 0 has no
    acknowledgement, so a PINGREQ fences it: the server handles one connection's packets in
    order, so the PINGRESP comes after the PUBLISH was routed. Without the fence, a threaded
    server could route another connection's SUBSCRIBE first (another worker, no ordering).
    """
    raw.send(Publish(topic, payload, qos, retain, packet_id=packet_id if qos else None))
    if qos == 0:
        raw.received[:0] = packets_before_pingresp(raw)  # keep what arrived before the PINGRESP
    elif qos == 1:
        assert raw.expect(Puback) == Puback(packet_id)
    elif qos == 2:
        assert raw.expect(Pubrec) == Pubrec(packet_id)
        raw.send(Pubrel(packet_id))
        assert raw.expect(Pubcomp) == Pubcomp(packet_id)


def acknowledge(raw: RawClient, message: Publish) -> None:
    """What a subscriber owes for a delivered PUBLISH: PUBACK, or PUBREC then (after PUBREL) PUBCOMP."""
    if message.qos == 0:
        return
    assert message.packet_id is not None
    if message.qos == 1:
        raw.send(Puback(message.packet_id))
    elif message.qos == 2:
        raw.send(Pubrec(message.packet_id))
        assert raw.expect(Pubrel) == Pubrel(message.packet_id)
        raw.send(Pubcomp(message.packet_id))


def next_publish(raw: RawClient, timeout: float = 5.0) -> Publish:
    packet = raw.expect(Publish, timeout)
    assert isinstance(packet, Publish)
    return packet


def packets_before_pingresp(raw: RawClient, timeout: float = 5.0) -> list[Packet]:
    """Send PINGREQ and return every packet that arrives before its PINGRESP.

    The server writes a connection's output in order, so whatever it had queued for this client
    when the PINGREQ was handled comes first: a bounded proof that nothing else is pending.
    """
    raw.send(Pingreq())
    packets = []
    while not isinstance(packet := raw.next_packet(timeout), Pingresp):
        packets.append(packet)
    return packets


def publishes_before_pingresp(raw: RawClient) -> list[Publish]:
    """``packets_before_pingresp`` for a subscriber that expects only PUBLISHes."""
    packets = packets_before_pingresp(raw)
    publishes = [packet for packet in packets if isinstance(packet, Publish)]
    assert publishes == packets, packets
    return publishes


def connect_bytes(flags: int, payload: bytes = b"\x00\x01c") -> bytes:
    """A CONNECT ("MQTT", level 4, keepalive 60) with hand-set flags, for flag-rule violations."""
    body = b"\x00\x04MQTT\x04" + bytes((flags,)) + b"\x00\x3c" + payload
    return bytes((0x10, len(body))) + body


# -- paho flows ----------------------------------------------------------------------------


def payloads_until(client: PahoClient, marker: bytes, timeout: float = 5.0) -> list[bytes]:
    """Payloads received before the one equal to ``marker`` (which a test publishes last)."""
    payloads = []
    while (payload := client.next_message(timeout).payload) != marker:
        payloads.append(payload)
    return payloads


# -- servers ---------------------------------------------------------------------------------


@contextlib.contextmanager
def dedicated_server(variant: str, *flags: str) -> Iterator[ServerProcess]:
    """A server of the same variant with its own limits, for tests that change a flag."""
    process = ServerProcess(variant, "--sys-interval", "1", *flags)
    try:
        yield process
    finally:
        assert process.stop() == 0, process.stderr()


def sys_value(
    client: PahoClient, topic: str, accept: Callable[[str], bool] = bool, timeout: float = 5.0
) -> str:
    """Wait for a published value of ``$SYS`` ``topic`` that ``accept(value)`` likes; return it.

    ``client`` must already subscribe to ``topic``: $SYS values are republished every
    ``--sys-interval`` seconds, so a counter that lags catches up on a later message.
    """
    latest: list[str] = []

    def accepted() -> bool:
        with contextlib.suppress(Exception):
            while True:
                message = client.messages.get_nowait()
                if message.topic == topic:
                    latest.append(message.payload.decode())
        return bool(latest) and accept(latest[-1])

    wait_until(accepted, timeout=timeout, what=f"{topic} satisfying {accept}, last seen {latest[-1:]}")
    return latest[-1]


def rss_kib(pid: int) -> int:
    """Resident set size of a process in KiB, from /proc/PID/status."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError(f"no VmRSS for pid {pid}")


def fd_baseline(server: ServerProcess) -> int:
    """The server's descriptor count once it has served one client and closed it.

    A variant may create per-thread resources (an epoll fd per worker) on first use, so the
    baseline is taken after one full CONNECT/DISCONNECT: after the EOF, that socket is closed.
    """
    warm_up = RawClient(server.port)
    try:
        warm_up.connect(unique("warm-up"))
        warm_up.send(Disconnect())
        assert warm_up.is_closed_by_server()
    finally:
        warm_up.close()
    return server.open_fds()


def fds_back_to(server: ServerProcess, baseline: int, timeout: float = 10.0) -> None:
    """Poll until the server holds no more descriptors than ``baseline``."""
    try:
        wait_until(lambda: server.open_fds() <= baseline, timeout=timeout)
    except AssertionError:
        raise AssertionError(
            f"server still holds {server.open_fds()} fds after {timeout} s; baseline {baseline}"
        ) from None


def mosquitto(*args: str, timeout: float = 15.0) -> subprocess.CompletedProcess[str]:
    """Run mosquitto_pub/mosquitto_sub to completion (each call passes its own -W limit)."""
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)
