"""The deadline wheel and ``Broker.next_deadline``: never early, at most one slot late, and a
driver that skips ``tick()`` until ``next_deadline`` misses no keepalive."""

from __future__ import annotations

from mqtt.codec import encode
from mqtt.packets import Pingreq
from mqtt.timers import DeadlineWheel
from tests.core.test_broker import connected, make_broker, take_output


class Item:
    def __init__(self, name: str) -> None:
        self.name = name
        self.next_check = 0


def test_an_item_comes_due_at_its_slot_never_before() -> None:
    wheel = DeadlineWheel(resolution=0.25)
    item = Item("a")
    assert wheel.schedule(item, 10.1) == 10.25  # rounded up to the slot's end
    assert list(wheel.due(10.24)) == []
    assert [due.name for due in wheel.due(10.25)] == ["a"]
    assert list(wheel.due(11.0)) == []  # taken once


def test_a_rescheduled_item_leaves_a_stale_entry_that_is_skipped() -> None:
    wheel = DeadlineWheel(resolution=0.25)
    item = Item("a")
    wheel.schedule(item, 5.0)
    wheel.schedule(item, 9.0)  # moved later: the 5.0 entry is stale now
    assert list(wheel.due(6.0)) == []
    assert [due.name for due in wheel.due(9.0)] == ["a"]
    assert len(wheel) == 0


def test_items_in_one_slot_share_it_and_next_due_follows_the_earliest() -> None:
    wheel = DeadlineWheel(resolution=1.0)
    items = [Item(str(n)) for n in range(100)]
    for n, item in enumerate(items):
        wheel.schedule(item, 20.001 + n / 1000)  # all within one second: one slot
    wheel.schedule(Item("early"), 3.5)
    assert wheel.next_due() == 4.0
    assert [due.name for due in wheel.due(4.0)] == ["early"]
    assert wheel.next_due() == 21.0
    assert len(list(wheel.due(21.0))) == 100
    assert wheel.next_due() == float("inf")


def test_skipping_tick_until_next_deadline_still_expires_a_silent_client_on_time() -> None:
    """A driver that calls tick() only once now >= next_deadline, as the servers do."""
    broker, clock = make_broker()
    silent = connected(broker, "silent", keepalive=2)  # expires 3 s after its last packet
    chatty = connected(broker, "chatty", keepalive=2)
    connected_at = clock.now
    closed_at = None
    while clock.now < connected_at + 10 and closed_at is None:
        clock.now += 0.05
        chatty.receive(encode(Pingreq()))
        take_output(chatty)
        if clock.now >= broker.next_deadline:
            broker.tick(clock.now)
        if silent.wants_close:
            closed_at = clock.now
    assert closed_at is not None and "keepalive" in silent.close_reason
    assert connected_at + 3.0 <= closed_at <= connected_at + 3.0 + 0.25 + 0.05  # one slot late at most
    assert not chatty.wants_close


def test_a_new_connection_brings_next_deadline_forward() -> None:
    broker, clock = make_broker(connect_timeout=30.0)
    broker.tick(clock.now)
    assert broker.next_deadline == float("inf")  # nothing to time: no $SYS in these tests
    broker.open("quiet")
    assert clock.now + 30.0 <= broker.next_deadline <= clock.now + 30.25
