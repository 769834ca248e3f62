"""labs/compare.py: every scenario yields complete, self-consistent figures, and errors are never hidden.

Sizes are tiny (fractions of a second per run) so the whole file stays well under a minute on
two cores. Anything that needs Debian's mosquitto is skipped when it is not installed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from labs import compare
from labs.bench import aedes
from labs.bench.connections import run_conn, run_idle_scaling
from labs.bench.persistence import launch_broker_persistent
from labs.bench.plan import plan
from labs.bench.proctree import children_by_scan, read_stat, sample_process
from labs.bench.progress import NullUi
from labs.bench.references import launch_mosquitto, mosquitto_path
from labs.bench.results import COMMON_KEYS, ERROR_KEYS
from labs.bench.suite import Settings, Suite
from labs.bench.targets import Broker, Target, await_listening, project_target, spawn
from labs.bench.throughput import FlowSpec, run_flow
from labs.bench.validity import problems
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


# --- the plan, the matched-rate rule and the CPU sampler, no brokers --------------------------


def test_rate_list_gives_one_fanin_and_one_fanout_run_per_rate_and_no_saturation_on_request() -> None:
    settings = Settings(rates=(2_000.0, 5_000.0), saturation=False, scenarios=("fanin", "fanout", "qos1"))
    labels = [(run.scenario, run.label) for run in plan(settings)]
    assert labels == [
        ("fanin", "rate 2000/s"),
        ("fanout", "rate 2000/s"),
        ("fanin", "rate 5000/s"),
        ("fanout", "rate 5000/s"),
        ("qos1", "100 in flight"),
        ("qos1", "1 in flight"),  # the PUBLISH→PUBACK latency run
    ]
    with_saturation = [run.label for run in plan(Settings(rates=(), scenarios=("fanin",)))]
    assert with_saturation == ["saturation"]


def matched_row(target: str, delivered: float, p50: float, p99: float) -> dict:
    params = {"rate": 1_000.0, "subscribers": 10, "load": "rate 10000/s"}
    latency = {"p50": p50, "p99": p99, "max": p99}
    return {
        "target": target,
        "status": "ok",
        "params": params,
        "msgs_per_s": delivered,
        "latency_us": latency,
    }


def test_matched_rate_rule_checks_delivered_rate_and_latency_against_the_baseline() -> None:
    base = matched_row("mosquitto", 9_900.0, 100.0, 400.0)
    assert problems(base, None, is_baseline=True) == []  # the baseline: only the rate rule applies
    assert problems(matched_row("mosquitto", 9_700.0, 100.0, 400.0), None, is_baseline=True) == [
        "delivered 97% of the offered rate"
    ]
    assert problems(matched_row("broker", 10_000.0, 300.0, 600.0), base, is_baseline=False) == []
    slow = problems(matched_row("broker", 10_000.0, 301.0, 601.0), base, is_baseline=False)
    assert [reason.split()[0] for reason in slow] == ["p50", "p99"]
    assert problems(matched_row("broker", 10_000.0, 100.0, 400.0), None, is_baseline=False) == [
        "no baseline latency in this repeat"
    ]


BUSY_PARENT = """
import subprocess, sys
child = subprocess.Popen([sys.executable, "-c", "import time\\nwhile time.process_time() < 0.5: pass"])
print(child.pid, flush=True)
child.wait()
print("reaped", flush=True)
sys.stdin.read()
"""


def test_process_tree_cpu_counts_a_busy_child_while_it_runs_and_after_it_is_reaped() -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", BUSY_PARENT], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        before = sample_process(parent.pid)
        child_pid = int(parent.stdout.readline())
        deadline = time.monotonic() + 30
        while (stat := read_stat(child_pid)) is None or stat.own_cpu_seconds < 0.1:
            assert time.monotonic() < deadline, "the busy child never got 0.1 s of CPU"
            time.sleep(0.01)
        during = sample_process(parent.pid)
        assert child_pid in during.descendant_pids and children_by_scan(parent.pid) == [child_pid]
        assert during.tree_cpu_seconds >= 0.1  # found by walking the tree, not in the parent's own time
        assert parent.stdout.readline().strip() == "reaped"
        after = sample_process(parent.pid)
        assert after.descendant_pids == ()
        assert after.tree_cpu_seconds >= 0.4  # the reaped child's time lives on in the parent's cutime
        parent_own = after.own_cpu_seconds - before.own_cpu_seconds
        assert after.cpu_since(before) >= parent_own + 0.4
    finally:
        parent.stdin.close()
        parent.wait(10)


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_a_failed_aedes_install_makes_aedes_not_available_with_npms_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_npm = tmp_path / "bin" / "npm"  # stands in for npm: no registry is contacted
    fake_npm.parent.mkdir()
    fake_npm.write_text("#!/bin/sh\necho 'npm error code E404' >&2\nexit 1\n")
    fake_npm.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_npm.parent}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("NODE_PATH", "")
    monkeypatch.setattr(aedes, "AEDES_PREFIX", tmp_path / "node")
    said: list[str] = []
    available, reason = aedes.ensure_installed(said.append)
    assert not available and "failed (exit 1): code E404" in reason
    assert len(said) == 1 and "npm install --prefix labs/out/node aedes" in said[0]


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
    assert metrics["connects_per_cpu_s"] == pytest.approx(300 / metrics["broker_cpu_s"])
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


def test_conn_on_a_project_broker_reports_connections_per_cpu_second() -> None:
    broker = project_target("epoll_lt", []).launch()
    try:
        outcome = run_conn(broker, 200, NullUi())
    finally:
        assert broker.stop() == 0
    metrics = outcome.metrics
    assert metrics["connected"] == 200 and metrics["broker_cpu_s"] > 0
    assert metrics["connects_per_cpu_s"] == pytest.approx(200 / metrics["broker_cpu_s"])
    assert_clean(outcome.errors)


def test_qos1_has_a_separate_one_in_flight_row_with_puback_percentiles() -> None:
    target = project_target("epoll_lt", [])
    rows = Suite([target], Settings(scenarios=("qos1",), duration=0.3, in_flight=20), NullUi()).run()
    assert [row["params"]["load"] for row in rows] == ["20 in flight", "1 in flight"]
    for row in rows:
        assert row["status"] == "ok" and row["repeat"] == 0
        assert row["acked"] == row["sent"] == row["delivered"] > 0
        assert 0 < row["puback_rtt_us"]["p50"] <= row["puback_rtt_us"]["p99"]
        assert sum(row["errors"].values()) == 0


def test_qos1_persist_runs_the_broker_with_a_store_that_is_removed_afterwards() -> None:
    broker = launch_broker_persistent([])
    store = broker.temp_dirs[0]
    try:
        spec = FlowSpec("qos1-persist", 1, 1, 0.3, qos=1, in_flight=20, clean_session=False)
        metrics, errors = run_flow(broker, spec, NullUi(), "qos1-persist")
        assert (store / "mosquitto.db").exists()
    finally:
        assert broker.stop() == 0
    assert not store.exists()
    assert metrics["acked"] == metrics["sent"] == metrics["delivered"] > 0
    assert_clean(errors)


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


def test_cli_repeat_keeps_every_raw_row_and_summarizes_median_and_spread(tmp_path: Path) -> None:
    report = tmp_path / "repeat.json"
    argv = ["--only", "epoll_lt,epoll_et,fanin", "--repeat", "2", *SMALL, "--json", str(report), "--no-plots"]
    assert compare.main(argv) == 0
    document = json.loads(report.read_text())
    raw = [(row["target"], row["repeat"]) for row in document["results"]]
    assert sorted(raw) == [("epoll_et", 0), ("epoll_et", 1), ("epoll_lt", 0), ("epoll_lt", 1)]
    assert raw[:2] == [("epoll_lt", 0), ("epoll_et", 0)]  # interleaved: a repeat visits every target
    assert document["environment"]["baseline"] == "epoll_lt"
    for summary in document["summary"]:
        assert summary["repeats"] == summary["usable"] == 2
        for spread in [summary["figures"]["msgs_per_s"], *summary["ratios"].values()]:
            assert spread["min"] <= spread["median"] <= spread["max"]
        if summary["target"] == "epoll_lt":
            assert summary["ratios"]["msgs_per_cpu_s"] == {"median": 1.0, "min": 1.0, "max": 1.0}


def test_cli_rate_list_and_no_saturation_run_only_the_matched_rates(tmp_path: Path) -> None:
    report = tmp_path / "rates.json"
    rates = ["--rate", "1000,3000"]  # after SMALL's "--rate 0": the last one given wins
    argv = ["--only", "epoll_lt,fanin,fanout", "--no-saturation", *SMALL, *rates, "--json", str(report)]
    assert compare.main([*argv, "--no-plots"]) == 0
    document = json.loads(report.read_text())
    loads = [(row["scenario"], row["params"]["load"]) for row in document["results"]]
    assert loads == [
        ("fanin", "rate 1000/s"),
        ("fanout", "rate 1000/s"),
        ("fanin", "rate 3000/s"),
        ("fanout", "rate 3000/s"),
    ]
    assert all("valid" in summary for summary in document["summary"])


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
        ["--skip", "conn,fanin,fanout,qos1,qos1-persist,idle-scaling"],
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
