"""labs/compare.py: every scenario yields complete, self-consistent figures, and errors are never hidden.

Sizes are tiny (fractions of a second per run) so the whole file stays well under a minute on
two cores. Anything that needs Debian's mosquitto is skipped when it is not installed.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs import compare
from labs.bench.connections import run_conn, run_idle_scaling
from labs.bench.progress import NullUi
from labs.bench.references import launch_mosquitto, mosquitto_path
from labs.bench.results import COMMON_KEYS, ERROR_KEYS
from labs.bench.suite import Settings, Suite
from labs.bench.targets import Broker, Target, await_listening, project_target, spawn
from labs.bench.throughput import FlowSpec, run_flow
from labs.bench.wire import BatchBuilder, FrameParser, PublishLayout, RunCheck, StreamChecker

FAULTY_BROKER = Path(__file__).with_name("faulty_broker.py")
requires_mosquitto = pytest.mark.skipif(
    mosquitto_path() is None, reason="Debian's mosquitto is not installed"
)


def launch_faulty(fault: str, every: int = 50) -> Broker:
    command = [
        sys.executable,
        str(FAULTY_BROKER),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--fault",
        fault,
        "--every",
        str(every),
    ]
    return await_listening(spawn(f"faulty-{fault}", command))


@pytest.fixture(scope="module")
def mosquitto() -> Iterator[Broker]:
    if mosquitto_path() is None:
        pytest.skip("Debian's mosquitto is not installed")
    broker = launch_mosquitto()
    yield broker
    assert broker.stop() == 0


def fanin(duration: float = 0.4, **overrides: object) -> FlowSpec:
    return FlowSpec("fanin", publishers=3, subscribers=1, duration=duration, publisher_procs=2, **overrides)


def fanout(duration: float = 0.4, **overrides: object) -> FlowSpec:
    return FlowSpec("fanout", publishers=1, subscribers=6, duration=duration, subscriber_procs=2, **overrides)


def assert_clean(errors: object) -> None:
    assert errors.as_dict() == dict.fromkeys(ERROR_KEYS, 0)


def assert_consistent_flow(metrics: dict, spec: FlowSpec) -> None:
    assert metrics["sent"] > 0
    assert metrics["delivered"] == metrics["sent"] * spec.subscribers
    assert metrics["duration_s"] > 0
    assert metrics["msgs_per_s"] == pytest.approx(metrics["delivered"] / metrics["duration_s"])
    assert metrics["broker_cpu_s"] > 0
    assert metrics["msgs_per_cpu_s"] == pytest.approx(metrics["delivered"] / metrics["broker_cpu_s"])
    assert metrics["broker_rss_bytes"] > 0
    latency = metrics["latency_us"]
    assert 0 < latency["p50"] <= latency["p99"] <= latency["max"]


# --- the verification core, no sockets -------------------------------------------------------


def test_stream_checker_counts_loss_duplicates_and_reordering_exactly() -> None:
    checker = StreamChecker(publishers=2)
    checker.check([(0, 0, 0), (0, 1, 0), (0, 3, 0), (0, 2, 0), (0, 3, 0), (1, 0, 0), (1, 2, 0), (7, 0, 0)])
    assert (checker.reordered, checker.duplicated, checker.foreign) == (1, 1, 1)
    assert checker.lost([5, 3]) == 1 + 1  # publisher 0's seq 4 and publisher 1's seq 1 never arrived


def test_run_check_accepts_only_one_publishers_exact_sequence() -> None:
    layout = PublishLayout()
    size = layout.frame_size
    for first in (0, 65_500, 2**40 - 3):  # across the carry into bit 16, and a large number
        frames = bytearray(BatchBuilder(layout, 200).fill(4, first, 200, 1))
        check = RunCheck(layout)
        assert check.matches(frames, 200, 4, first)
        assert not check.matches(frames, 200, 3, first)
        assert not check.matches(frames, 200, 4, first + 1)
        swapped = frames[:size] + frames[2 * size : 3 * size] + frames[size : 2 * size] + frames[3 * size :]
        assert not check.matches(bytearray(swapped), 200, 4, first)


def test_frame_parser_takes_other_packets_and_partial_frames_in_its_stride() -> None:
    layout = PublishLayout()
    size = layout.frame_size
    frames = bytes(BatchBuilder(layout, 3).fill(1, 10, 3, 5))
    data = bytearray(frames[:size] + b"\xd0\x00" + frames[size : 2 * size + 9])  # PINGRESP in between
    parsed = FrameParser.for_publish(layout).parse(data, len(data))
    assert [row[:2] for row in parsed.rows] == [(1, 10), (1, 11)]
    assert len(parsed.others) == 1
    assert parsed.leftover == frames[2 * size : 2 * size + 9]


# --- real brokers ------------------------------------------------------------------------------


@requires_mosquitto
def test_fanin_and_fanout_against_mosquitto_give_complete_clean_figures(mosquitto: Broker) -> None:
    for spec in (fanin(), fanout(), fanin(rate=4_000.0)):
        metrics, errors = run_flow(mosquitto, spec, NullUi(), spec.scenario)
        assert_consistent_flow(metrics, spec)
        assert_clean(errors)


@requires_mosquitto
def test_qos1_times_every_puback_and_delivers_each_message_once(mosquitto: Broker) -> None:
    spec = FlowSpec("qos1", 1, 1, 0.4, qos=1, in_flight=20)
    metrics, errors = run_flow(mosquitto, spec, NullUi(), "qos1")
    assert_consistent_flow(metrics, spec)
    assert metrics["acked"] == metrics["sent"] and metrics["unacked"] == 0
    rtt = metrics["puback_rtt_us"]
    assert 0 < rtt["p50"] <= rtt["p99"]
    assert_clean(errors)


@requires_mosquitto
def test_conn_holds_every_client_and_each_gets_the_final_publish_once(mosquitto: Broker) -> None:
    outcome = run_conn(mosquitto, 300, NullUi())
    metrics, errors = outcome.metrics, outcome.errors
    assert (metrics["connected"], metrics["failed"], metrics["cap_hit"]) == (300, 0, False)
    assert metrics["delivered"] == 300
    assert metrics["connects_per_s"] > 0 and metrics["rss_per_conn_bytes"] is not None
    assert metrics["handshake_us"]["p50"] <= metrics["handshake_us"]["p99"]
    assert_clean(errors)


@requires_mosquitto
def test_idle_scaling_reports_broker_cpu_per_message_at_each_point(mosquitto: Broker) -> None:
    pair = FlowSpec("idle-scaling", 1, 1, 0.4, rate=3_000.0)
    rows = run_idle_scaling(mosquitto, [0, 200], pair, NullUi())
    assert [(row.params["idle"], row.metrics["idle_connected"], row.status) for row in rows] == [
        (0, 0, "ok"),
        (200, 200, "ok"),
    ]
    for row in rows:
        assert row.metrics["cpu_us_per_msg"] > 0
        assert_clean(row.errors)


@pytest.mark.parametrize(
    ("fault", "counter"), [("drop", "lost"), ("duplicate", "duplicated"), ("reorder", "reordered")]
)
def test_error_counters_catch_a_faulty_broker(fault: str, counter: str) -> None:
    for spec in (fanin(0.3), fanout(0.3)):
        broker = launch_faulty(fault)  # a fresh one per run: the fault counts PUBLISHes from its start
        try:
            metrics, errors = run_flow(broker, spec, NullUi(), spec.scenario)
        finally:
            assert broker.stop() == 0
        hits = metrics["sent"] // 50 * spec.subscribers
        counts = errors.as_dict()
        assert hits > 0
        if fault == "reorder":  # frames still held back (or a fault still owed) when the run ends
            assert hits - spec.publishers * spec.subscribers <= counts["reordered"] + counts["lost"] <= hits
            assert counts["lost"] <= spec.publishers * spec.subscribers and counts["duplicated"] == 0
            continue
        assert counts[counter] == hits
        assert sum(counts.values()) == hits


def test_missing_targets_are_reported_as_not_available() -> None:
    missing = project_target("no_such_variant", [])
    rows = Suite([missing], Settings(scenarios=("fanin",)), NullUi()).run()
    assert [(row["target"], row["status"]) for row in rows] == [("no_such_variant", "not available")]
    assert "not found" in rows[0]["note"]


# --- the command line --------------------------------------------------------------------------

SMALL = [
    "--duration",
    "0.3",
    "--publishers",
    "2",
    "--subscribers",
    "4",
    "--rate",
    "0",
    "--clients",
    "100",
    "--idle-points",
    "0,50",
    "--idle-rate",
    "2000",
    "--idle-duration",
    "0.4",
    "--quiet",
]


@requires_mosquitto
def test_cli_writes_the_json_schema_and_both_plots(tmp_path: Path) -> None:
    report = tmp_path / "compare.json"
    argv = ["--only", "mosquitto,fanin,idle-scaling", *SMALL, "--json", str(report), "--plots", str(tmp_path)]
    assert compare.main(argv) == 0
    document = json.loads(report.read_text())
    environment = document["environment"]
    for key in ("cpu_model", "cores", "kernel", "python", "versions"):
        assert key in environment
    assert environment["versions"]["mosquitto"]
    rows = document["results"]
    assert {(row["target"], row["scenario"]) for row in rows} == {
        ("mosquitto", "fanin"),
        ("mosquitto", "idle-scaling"),
    }
    for row in rows:
        assert set(COMMON_KEYS) <= set(row) and set(row["errors"]) == set(ERROR_KEYS)
        assert {"target", "scenario", "params"} <= set(row) and row["status"] == "ok"
    assert (tmp_path / "throughput.png").stat().st_size > 0
    assert (tmp_path / "idle-scaling.png").stat().st_size > 0


def test_cli_target_measures_a_running_broker_from_the_client_side(tmp_path: Path) -> None:
    variant = project_target("epoll_lt", [])
    broker = variant.launch() if variant.available else launch_faulty("none")
    try:
        host, port = broker.address
        report = tmp_path / "target.json"
        argv = [
            "--target",
            f"{host}:{port}",
            "--only",
            "fanin,fanout,conn",
            *SMALL,
            "--json",
            str(report),
            "--no-plots",
        ]
        assert compare.main(argv) == 0
        rows = json.loads(report.read_text())["results"]
        assert {row["scenario"] for row in rows} == {"conn", "fanin", "fanout"}
        for row in rows:
            assert row["target"] == f"{host}:{port}" and row["status"] == "ok"
            assert row["broker_cpu_s"] is None and row["delivered"] > 0  # no pid: client-side figures only
    finally:
        broker.stop()


def test_cli_exits_1_when_a_broker_loses_messages() -> None:
    broker = launch_faulty("drop")
    try:
        host, port = broker.address
        assert compare.main(["--target", f"{host}:{port}", "--only", "fanin", *SMALL, "--no-plots"]) == 1
    finally:
        broker.stop()


@pytest.mark.parametrize(
    "argv",
    [
        ["--only", "nonsense"],
        ["--target", "no-port"],
        ["--duration", "soon"],
        ["--skip", "conn,fanin,fanout,qos1,idle-scaling"],
    ],
)
def test_cli_exits_2_on_bad_usage(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        compare.main(argv)
    assert exit_info.value.code == 2


def test_targets_are_named_by_module_and_reference_broker() -> None:
    from labs.bench.cli import TARGET_NAMES

    assert TARGET_NAMES == (
        "select_srv",
        "poll_srv",
        "epoll_lt",
        "epoll_et",
        "threaded_boss_worker",
        "broker",
        "mosquitto",
        "amqtt",
        "aedes",
    )
    assert isinstance(project_target("epoll_lt", []), Target)
