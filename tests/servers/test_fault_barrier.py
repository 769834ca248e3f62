"""The fault barrier: a bug met while handling one client closes that client, never the server.

Each variant is started with a core that raises on chosen packets (tests/support/
injected_faults.py), once at each place a driver calls the core for one connection:
``receive``, ``sent``, ``lost`` and that connection's part of ``tick``. After every fault
the faulting client is closed as an abnormal close (its will arrives), the traceback is
logged with its client id, and four bystanders spread over every worker thread still
publish to and receive from each other. ``$SYS/broker/faults`` counts exactly the faults.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator

import pytest

from mqtt.codec import encode
from mqtt.packets import Connack, Connect, Puback, Publish, Will
from servers.faults import FaultLog
from tests.support.clients import PahoClient, RawClient
from tests.support.injected_faults import FAULT_TOPIC
from tests.support.servers import ServerProcess, available_variants

from .helpers import Clients, fd_baseline, fds_back_to, sys_value, unique

MODELS = [(variant, ()) for variant in available_variants()] + [("threaded_boss_worker", ("--naive",))]
BYSTANDERS = 4  # round robin over two workers: two on each


@pytest.fixture(params=MODELS, ids=lambda model: " ".join([model[0], *model[1]]))
def faulty_server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    variant, flags = request.param
    launcher = ("tests.support.injected_faults",)
    process = ServerProcess(variant, "--sys-interval", "1", *flags, launcher=launcher)
    yield process
    assert process.stop() == 0, process.stderr()


def exchange(bystanders: list[PahoClient], topic: str, round_name: str) -> None:
    """Every bystander publishes one message; every bystander receives all of them."""
    sent = {f"{round_name}-{index}".encode() for index in range(len(bystanders))}
    for index, client in enumerate(bystanders):
        client.publish(topic, f"{round_name}-{index}", qos=1)
    for client in bystanders:
        received = {client.next_message().payload for _ in sent}
        assert received == sent, f"{round_name}: a bystander got {received}"


def will_of(client_id: str) -> Will:
    return Will(f"wills/{client_id}", b"abnormal close")


def fault_in_receive(clients: Clients) -> str:
    victim = clients.raw(unique("victim"), will=will_of("receive"))
    victim.send(Publish(FAULT_TOPIC, b"boom"))
    assert victim.is_closed_by_server()
    return "receive"


def fault_in_sent(clients: Clients) -> str:
    client_id = unique("fault-sent")
    victim = clients.socket()
    victim.send(Connect(client_id, will=will_of("sent")))
    assert victim.is_closed_by_server()  # sent() raised after the CONNACK went out
    assert victim.received[:1] == [Connack(False, 0)]
    return "sent"


def fault_in_lost(clients: Clients) -> str:
    victim = clients.raw(unique("fault-lost"), will=will_of("lost"))
    victim.close()  # the server's lost() raises when it sees the EOF
    return "lost"


def fault_in_tick(clients: Clients) -> str:
    victim = clients.raw(unique("fault-tick"), keepalive=1, will=will_of("tick"))
    assert victim.is_closed_by_server(timeout=10)  # deadline() raises once the check comes due
    return "tick"


FAULTS: list[Callable[[Clients], str]] = [fault_in_receive, fault_in_sent, fault_in_lost, fault_in_tick]


def test_a_fault_closes_only_its_connection_and_every_bystander_goes_on(faulty_server: ServerProcess) -> None:
    topic = unique("bystanders")
    baseline = fd_baseline(faulty_server)
    threads = faulty_server.thread_names()
    with Clients(faulty_server) as clients:
        bystanders = [clients.paho() for _ in range(BYSTANDERS)]
        for client in bystanders:
            client.subscribe(topic, qos=1)
        watcher = clients.paho()
        watcher.subscribe("wills/#")
        watcher.subscribe("$SYS/broker/faults")
        exchange(bystanders, topic, "before")
        for inject in FAULTS:
            where = inject(clients)
            will = watcher.next_message(timeout=10)
            while will.topic != f"wills/{where}":  # skip $SYS updates in between
                will = watcher.next_message(timeout=10)
            exchange(bystanders, topic, f"after-{where}")
            assert faulty_server.process.poll() is None and faulty_server.thread_names() == threads
        assert sys_value(watcher, "$SYS/broker/faults", lambda value: value == str(len(FAULTS)))
    fds_back_to(faulty_server, baseline)
    log = faulty_server.stderr()
    assert len(re.findall(r"fault contained \(\d+ so far\): InjectedFault", log)) == len(FAULTS), log
    for client_id in ("victim-", "fault-sent-", "fault-lost-", "fault-tick-"):
        assert f"client_id={client_id}" in log, log
    assert log.count("Traceback (most recent call last)") == len(FAULTS)


def test_a_fault_repeated_fifty_times_is_logged_five_times_in_full(faulty_server: ServerProcess) -> None:
    """The same faulting PUBLISH on fifty connections: fifty closes, five tracebacks, no exit."""
    with Clients(faulty_server) as clients:
        for _ in range(50):
            victim = RawClient(faulty_server.port)
            victim.send(encode(Connect(unique("repeat"))) + encode(Publish(FAULT_TOPIC, b"again")))
            assert victim.is_closed_by_server()
            victim.close()
        survivor = clients.raw(unique("survivor"))
        survivor.send(encode(Publish(unique("alive"), b"x", qos=1, packet_id=1)))
        assert survivor.next_packet() == Puback(1)
    log = faulty_server.stderr()
    assert log.count("Traceback (most recent call last)") == 5, "only the first five in full"
    assert "counting further ones without tracebacks" in log


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_fault_log_reports_the_first_few_per_window_in_full_then_counts(
    caplog: pytest.LogCaptureFixture,
) -> None:
    clock = Clock()
    fault_log = FaultLog(logging.getLogger("fault-test"), full_reports=3, window=60.0, clock=clock)
    with caplog.at_level(logging.ERROR, logger="fault-test"):
        for _ in range(10):
            fault_log.report(None, RuntimeError("bug"))
        clock.now = 61.0
        fault_log.report(None, RuntimeError("bug"))
    with_traceback = [record for record in caplog.records if record.exc_info]
    assert len(with_traceback) == 4  # three in the first window, one in the next
    assert any("7 more faults in the last 60 s" in record.getMessage() for record in caplog.records)
    assert fault_log.total == 11
