"""The TUI against real servers and real client sockets: what each view shows while it happens.

Each test starts a server variant with --telemetry, attaches the app (as ``--attach`` does),
drives real sockets, and polls the app with a deadline until the view shows the expected
state; nothing sleeps to synchronise.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest

from mqtt.packets import Publish, Subscribe
from tests.support.clients import RawClient
from tests.tui.live import abort, address, rows, run_async, running, tcp_row, text_of, until, watching
from tui.app import LabApp
from tui.format import count_text
from tui.model import Model
from tui.model.waits import ReadyFd
from tui.sources.packet_capture import PacketCapture, capture_available

# ---------------------------------------------------------------- TCP view


@run_async
async def test_tcp_view_shows_both_ends_of_an_established_connection() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot:
            await pilot.press("2")
            client = RawClient(server.port)
            try:
                client.connect("tcp-established")
                end = address(client.sock.getsockname())
                server_row = await until(
                    pilot, lambda: tcp_row(pilot, "ESTABLISHED", "server", end), "the server's end"
                )
                assert server_row["client_id"] == "tcp-established"  # joined from telemetry
                assert tcp_row(pilot, "ESTABLISHED", "client", end)
                assert tcp_row(pilot, "LISTEN", "server", f"127.0.0.1:{server.port}")
                assert "ESTABLISHED" in text_of(pilot, "StateCountBar")
                # >= 2: on a busy machine another connection may share the port number.
                assert pilot.app.model.tcp.counts["ESTABLISHED"] >= 2
            finally:
                abort(client)


def send_nothing(client: RawClient) -> None:
    """Stay silent: the server closes the connection when keepalive x 1.5 expires."""


def send_a_reserved_packet_type(client: RawClient) -> None:
    client.send(b"\xf0\x00")  # packet type 15 is reserved: the server must close (MQTT-2.2.1)


@pytest.mark.parametrize(
    "provoke", [send_nothing, send_a_reserved_packet_type], ids=["keepalive-expiry", "protocol-violation"]
)
@run_async
async def test_server_close_shows_fin_wait_2_and_close_wait_then_time_wait(
    provoke: Callable[[RawClient], None],
) -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot:
            await pilot.press("2")
            client = RawClient(server.port)
            try:
                client.connect("half-closed", keepalive=1)
                end = address(client.sock.getsockname())
                provoke(client)
                # The server closed; the client never does: its kernel ACKed the FIN, its app did not close.
                await until(pilot, lambda: tcp_row(pilot, "FIN_WAIT_2", "server", end), "server FIN_WAIT_2")
                assert tcp_row(pilot, "CLOSE_WAIT", "client", end)
                machine = text_of(pilot, "CloseStateMachine")
                assert "FIN_WAIT_2" in machine and "CLOSE_WAIT" in machine
                assert "closed half-closed:" in text_of(pilot, "#tcp-status")
            finally:
                client.close()
            # Now the client closes too: the server, which closed first, waits out TIME_WAIT.
            await until(pilot, lambda: tcp_row(pilot, "TIME_WAIT", "server", end), "server TIME_WAIT")
            assert tcp_row(pilot, "TIME_WAIT", "server", end)["timer"].startswith("timewait ")  # type: ignore[index]


@run_async
async def test_tcp_view_filters_by_state() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot:
            await pilot.press("2")
            client = RawClient(server.port)
            try:
                client.connect("filtered")
                end = address(client.sock.getsockname())
                await until(pilot, lambda: tcp_row(pilot, "ESTABLISHED", "client", end), "the connection")
                for _ in range(8):  # all -> LISTEN -> ... -> ESTABLISHED
                    if pilot.app.model.tcp.state_filter == "ESTABLISHED":
                        break
                    await pilot.press("f")
                states = lambda: {row["state"] for row in rows(pilot, "#sockets")}  # noqa: E731
                await until(pilot, lambda: states() == {"ESTABLISHED"}, "only ESTABLISHED rows")
                assert "showing ESTABLISHED" in text_of(pilot, "#tcp-status")
            finally:
                abort(client)


# ---------------------------------------------------------------- ready-list view


def fd_of(model: Model, client_id: str) -> int | None:
    return next((fd for fd, name in model.names.client_ids.items() if name == client_id), None)


def quiet_wait(model: Model, fd: int) -> int | None:
    """The call number of the latest wait seen, if it did not report ``fd``."""
    latest = model.waits.waits[-1] if model.waits.waits else None
    return latest.call if latest and all(entry.fd != fd for entry in latest.ready) else None


def ended_run(model: Model, fd: int, call: int) -> list[ReadyFd] | None:
    """``fd``'s entries in the waits after wait number ``call``, once a later wait has not reported
    it: the run is over, and as telemetry arrives in order, the model has applied all of it.
    (Counting "two more waits" instead raced: they could be the run's first two.)"""
    waits = [wait for wait in model.waits.waits if wait.call > call]
    reporting = [index for index, wait in enumerate(waits) if any(entry.fd == fd for entry in wait.ready)]
    if not reporting or reporting[-1] == len(waits) - 1:
        return None
    return [entry for wait in waits for entry in wait.ready if entry.fd == fd]


@pytest.mark.parametrize("variant", ["epoll_lt", "epoll_et"])
@run_async
async def test_ready_list_shows_lt_reporting_unread_bytes_again_and_et_not(variant: str) -> None:
    # 64 bytes per recv and a 4 KB PUBLISH: LT reads it over ~65 waits, ET drains it in one.
    # (4 KB rather than 1 KB: the telemetry channel may drop a burst of waits, see the summary's
    # "waits lost"; the run stays far above 10 even then.)
    with running(variant, "--read-chunk", "64", "--sys-interval", "0.2") as server:
        async with watching(server) as pilot:
            subscriber, publisher = RawClient(server.port), RawClient(server.port)
            try:
                subscriber.connect("sub-ready")
                subscriber.send(Subscribe(1, (("lab/ready", 0),)))
                subscriber.next_packet()  # SUBACK
                publisher.connect("pub-ready")
                model: Model = pilot.app.model
                fd = await until(pilot, lambda: fd_of(model, "pub-ready"), "the publisher's fd")
                # Start from a wait that did not report the publisher ($SYS wakes the loop every
                # 0.2 s), so the run measured below is the PUBLISH's alone, not CONNECT's too.
                before = await until(pilot, lambda: quiet_wait(model, fd), "a wait without the publisher")
                publisher.send(Publish("lab/ready", b"x" * 4096))
                assert isinstance(subscriber.next_packet(), Publish)  # the server has read all of it
                run = await until(pilot, lambda: ended_run(model, fd, before), "a wait after the run")
                streak = run[-1].streak
                table = rows(pilot, "#ready")
                watched = lambda: rows(pilot, "#interest")  # noqa: E731
                publisher_interest = await until(
                    pilot,
                    lambda: next((row for row in watched() if row["client"] == "pub-ready"), None),
                    "the publisher in the interest set (/proc is sampled every 0.5 s)",
                )
                summary = text_of(pilot, "#wait-summary")
            finally:
                abort(subscriber)
                abort(publisher)
    publisher_rows = [row for row in table if row["client"] == "pub-ready"]
    if variant == "epoll_lt":
        # Every wait of the run reported the fd (a lost wait would not break the count either).
        assert [entry.streak for entry in run] == list(range(1, len(run) + 1))
        assert streak >= 10, f"LT should report the fd again and again, got {streak}"
        assert publisher_rows[0]["streak"] == f"×{count_text(streak)}"  # the newest row: the run's end
        assert f"ready in {count_text(streak)} waits in a row" in summary  # now, or "ended N s ago"
        assert "ET" not in publisher_interest["events"].split("|")
    else:
        assert [entry.streak for entry in run] == [1], "ET reports the fd once per arrival of data"
        assert publisher_rows[0]["streak"] == "1"  # the newest row: the PUBLISH, drained in one readiness
        assert "ET: one report per arrival" in summary
        assert "ET" in publisher_interest["events"].split("|")  # EPOLLET, read from /proc/PID/fdinfo


# ---------------------------------------------------------------- threads view


@run_async
async def test_threads_view_lists_the_boss_and_worker_threads() -> None:
    with running("threaded_boss_worker") as server:
        async with watching(server) as pilot:
            await pilot.press("3")
            client = RawClient(server.port)
            try:
                client.connect("threads")  # a worker takes the lock: lock telemetry flows
                lanes = await until(
                    pilot,
                    lambda: {"boss", "worker-1", "worker-2"} <= set(text_of(pilot, "#lanes").split()),
                    "boss, worker-1 and worker-2 lanes",
                )
                assert lanes
                summary = lambda: text_of(pilot, "#threads-summary")  # noqa: E731
                await until(pilot, lambda: "held only around core calls" in summary(), "the lock summary")
            finally:
                abort(client)


@run_async
async def test_threads_view_flags_the_naive_lock_held_across_recv() -> None:
    with running("threaded_boss_worker", "--naive") as server:
        async with watching(server) as pilot:
            await pilot.press("3")
            client = RawClient(server.port)
            try:
                client.connect("naive")
                summary = lambda: text_of(pilot, "#threads-summary")  # noqa: E731
                flagged = lambda: "worker-" in summary() and "across socket I/O" in summary()  # noqa: E731
                await until(pilot, flagged, "workers flagged for holding the lock across recv")
            finally:
                abort(client)


# ---------------------------------------------------------------- packets view


@pytest.mark.skipif(not capture_available()[0], reason=capture_available()[1] or "capture available")
@run_async
async def test_packets_view_draws_the_open_and_close_handshake() -> None:
    with running("epoll_lt") as server:
        capture = PacketCapture(server.port)
        async with watching(server, capture) as pilot:
            await pilot.press("4")
            await until(pilot, lambda: capture.ready, "the capture child to start", timeout=20)
            client = RawClient(server.port)
            client.connect("ladder")
            port = client.sock.getsockname()[1]
            client.close()
            ladder = await until(
                pilot,
                lambda: (text := text_of(pilot, "#ladder")).count(f":{port}") >= 4 and text,
                "SYN, SYN+ACK and both FINs",
            )
    lines = [line for line in ladder.splitlines() if f":{port}" in line]
    assert "SYN" in lines[0] and "▶" in lines[0]
    assert "SYN,ACK" in lines[1] and "◀" in lines[1]
    assert "client FIN_WAIT_1; server CLOSE_WAIT" in lines[2]
    assert "server LAST_ACK; client TIME_WAIT" in lines[3]


# ---------------------------------------------------------------- manners


@run_async
async def test_pause_freezes_the_views_until_resumed() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot:
            app: LabApp = pilot.app  # type: ignore[assignment]
            await pilot.press("p")
            assert "PAUSED" in text_of(pilot, "StatusBar")
            seen = app.model.events_seen
            client = RawClient(server.port)
            try:
                client.connect("while-paused")
                await until(pilot, lambda: app.collector and app.collector.backlog() >= 2, "events held back")
                assert app.model.events_seen == seen
                await pilot.press("p")
                await until(pilot, lambda: "while-paused" in app.model.names.client_ids.values(), "resumed")
            finally:
                abort(client)


@run_async
async def test_help_screen_opens_and_closes() -> None:
    app = LabApp(Model(1883))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert type(app.screen).__name__ == "HelpScreen"
        await pilot.press("escape")
        assert type(app.screen).__name__ != "HelpScreen"
