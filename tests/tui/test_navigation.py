"""Finding one client among many: the row cursor, `/` search, quick filters, sort marks, the detail
screen, and the help screen's keys, against a real server with real client sockets."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

import pytest
from textual.widgets import DataTable, Footer

from mqtt.codec import encode
from mqtt.packets import Publish, Suback, Subscribe
from tests.support.clients import RawClient
from tests.tui.live import abort, rows, run_async, running, text_of, until, watching
from tui.app import LabApp
from tui.format import short_address, size_text
from tui.model import Model
from tui.sources.packet_capture import PacketCapture, capture_available
from tui.widgets.detail_screen import DetailScreen
from tui.widgets.help_screen import HelpScreen
from tui.widgets.paged_table import PagedTable

CLIENTS = 30


@contextlib.asynccontextmanager
async def clients_of(port: int, count: int, prefix: str = "nav") -> AsyncIterator[list[RawClient]]:
    """Clients connected while the TUI watches, so their CONNECTs' client ids reach it."""
    opened: list[RawClient] = []
    try:
        for index in range(count):
            client = RawClient(port)
            client.connect(f"{prefix}-{index:02d}")
            opened.append(client)
        yield opened
    finally:
        for client in opened:
            abort(client)


def table(pilot) -> PagedTable:  # type: ignore[no-untyped-def]
    return pilot.app.query_one("#sockets", PagedTable)


def two_rows(pilot) -> list[dict[str, str]]:  # type: ignore[no-untyped-def]
    shown = rows(pilot, "#sockets")
    return shown if len(shown) == 2 else []


def connections_shown(pilot) -> int:  # type: ignore[no-untyped-def]
    """ESTABLISHED ends the table holds, on screen or on other pages."""
    return sum(1 for row in table(pilot).rows_shown if row.state == "ESTABLISHED")


@run_async
async def test_search_finds_one_client_and_enter_opens_its_detail() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot, clients_of(server.port, CLIENTS) as opened:
            app: LabApp = pilot.app  # type: ignore[assignment]
            await pilot.press("2")
            # Both ends of every connection, once telemetry has named them all.
            await until(pilot, lambda: connections_shown(pilot) == 2 * CLIENTS, "every connection")
            await until(pilot, lambda: len(app.model.names.by_peer) >= CLIENTS, "every client id")
            await pilot.press("slash", *"nav-17")
            wanted = short_address(opened[17].sock.getsockname())
            shown = await until(pilot, lambda: rows(pilot, "#sockets"), "search results")
            assert {row["client"] for row in shown} == {wanted}  # both ends of nav-17, nothing else
            assert {row["side"] for row in shown} == {"server", "client"}
            assert {row["client_id"] for row in shown} == {"nav-17"}
            await pilot.press("enter")  # keep the search, close the prompt
            await pilot.press("enter")  # open the detail of the row under the cursor
            detail = await until(pilot, lambda: isinstance(app.screen, DetailScreen) and app.screen, "detail")
            await until(pilot, lambda: "nav-17" in text_of(pilot, "#detail-ends"), "the detail's title")
            ends = text_of(pilot, "#detail-ends")
            assert f"server :{server.port} " in ends and f"client {wanted} " in ends
            assert detail.client == opened[17].sock.getsockname()
            assert "ESTABLISHED" in text_of(pilot, "#detail-history")
            await pilot.press("escape")
            await until(pilot, lambda: not isinstance(app.screen, DetailScreen), "back to the table")
            await pilot.press("escape")  # clears the search
            await until(pilot, lambda: connections_shown(pilot) == 2 * CLIENTS, "every connection again")


@run_async
async def test_search_by_port_and_the_one_client_filter() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot, clients_of(server.port, 5) as opened:
            await pilot.press("2")
            await until(pilot, lambda: connections_shown(pilot) == 10, "every connection")
            port = opened[3].sock.getsockname()[1]
            await pilot.press("slash", *str(port), "enter")
            shown = await until(pilot, lambda: two_rows(pilot), "the two ends of that port")
            assert {row["client"] for row in shown} == {f":{port}"}
            await pilot.press("escape", "home", "down", "down")  # onto a connection, off the listener
            selected = table(pilot).cursor_row
            assert selected is not None and selected.state == "ESTABLISHED"
            await pilot.press("c")
            end = pilot.app.model.tcp.client_end(selected)  # type: ignore[attr-defined]
            shown = await until(pilot, lambda: two_rows(pilot), "the two ends of that connection")
            assert {row["client"] for row in shown} == {short_address(end)}
            await pilot.press("c")
            await until(pilot, lambda: connections_shown(pilot) == 10, "all again")


@run_async
async def test_cursor_keys_move_by_row_page_and_end_and_follow_a_resort() -> None:
    with running("epoll_lt") as server:
        async with watching(server, size=(100, 24)) as pilot, clients_of(server.port, CLIENTS):
            await pilot.press("2")
            await until(pilot, lambda: connections_shown(pilot) >= 8, "a full page")
            await until(pilot, lambda: len(pilot.app.model.tcp.shown()) == 2 * CLIENTS + 1, "every socket")  # type: ignore[attr-defined]
            paged = table(pilot)
            total = len(pilot.app.model.tcp.shown())  # type: ignore[attr-defined]
            await pilot.press("down", "down", "down")
            assert paged.cursor == 3
            await pilot.press("pagedown")
            assert paged.cursor == 3 + paged.page_size
            await pilot.press("end")
            assert paged.cursor == total - 1
            grid = pilot.app.query_one("#sockets DataTable", DataTable)
            assert paged.start + grid.cursor_row == total - 1  # the highlighted row is the last one
            assert "of 61" in text_of(pilot, "#sockets .caption")
            await pilot.press("home", "down", "down", "down", "down", "down")
            before = paged.cursor_row
            await pilot.press("s")  # sort by client: the cursor stays on its socket, wherever it went
            assert paged.cursor_row is not None and before is not None
            assert (paged.cursor_row.local, paged.cursor_row.remote) == (before.local, before.remote)


@run_async
async def test_sort_marks_its_column_reverses_and_keeps_listen_out_of_queue_sorts() -> None:
    with running("epoll_lt") as server:
        async with watching(server) as pilot, clients_of(server.port, 3):
            await pilot.press("2")
            await until(pilot, lambda: connections_shown(pilot) == 6, "every connection")
            grid = pilot.app.query_one("#sockets DataTable", DataTable)
            labels = lambda: [str(column.label) for column in grid.columns.values()]  # noqa: E731
            assert labels()[0] == "state▼"
            await pilot.press("s", "s")  # state -> client -> send-q
            await until(pilot, lambda: "Send-Q▼" in labels(), "the Send-Q mark")
            assert rows(pilot, "#sockets")[-1]["state"] == "LISTEN"
            await pilot.press("r")
            await until(pilot, lambda: "Send-Q▲" in labels(), "the reversed mark")
            assert rows(pilot, "#sockets")[-1]["state"] == "LISTEN"  # still out of the queue sort
            assert "reversed" in text_of(pilot, "#tcp-status")


@run_async
async def test_a_multi_megabyte_send_q_shows_in_full_in_the_table_and_to_the_byte_in_the_detail() -> None:
    """A subscriber that never reads, a publisher that floods: the server's Send-Q grows into MB."""
    with running("epoll_lt") as server:
        async with watching(server) as pilot:
            app: LabApp = pilot.app  # type: ignore[assignment]
            await pilot.press("2")
            stalled, publisher = RawClient(server.port), RawClient(server.port)
            try:
                stalled.connect("stalled")
                stalled.send(Subscribe(1, (("flood", 0),)))
                stalled.expect(Suback)
                publisher.connect("flooder")
                publisher.sock.setblocking(False)
                payload = encode(Publish(topic="flood", payload=b"x" * 60_000))
                server_end = lambda: next(  # noqa: E731
                    (row for row in app.model.tcp.rows if row.state == "ESTABLISHED"
                     and row.remote == stalled.sock.getsockname()), None,
                )  # fmt: skip

                async def flood_until_megabytes() -> bool:
                    with contextlib.suppress(BlockingIOError):
                        publisher.sock.send(payload)
                    row = server_end()
                    return row is not None and row.send_q >= 1_100_000

                await until(pilot, flood_until_megabytes, "a Send-Q over 1 MB", timeout=20)
                await pilot.press("p")  # freeze the frame: the screen and the model's sample agree
                await pilot.press("s", "s")  # by Send-Q, biggest first
                row = server_end()
                assert row is not None
                top = await until(pilot, lambda: rows(pilot, "#sockets")[0], "the sorted table")
                assert top["send-q"] == size_text(row.send_q)
                assert top["send-q"].endswith("M")
                await pilot.press("home", "enter")
                await until(pilot, lambda: isinstance(app.screen, DetailScreen), "the detail")
                await until(pilot, lambda: f"{row.send_q:,}" in text_of(pilot, "#detail-ends"), "exact bytes")
            finally:
                abort(stalled)
                abort(publisher)


@run_async
async def test_help_screen_keeps_quit_and_pause_and_shows_esc() -> None:
    app = LabApp(Model(1883))
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "Esc" in text_of_footer(app)
        await pilot.press("p")
        assert app.paused and isinstance(app.screen, HelpScreen)
        await pilot.press("escape")
        assert not isinstance(app.screen, HelpScreen)
        await pilot.press("question_mark", "q")
    assert app.return_code == 0 and not app.is_running


def text_of_footer(app: LabApp) -> str:
    footer = app.screen.query_one(Footer)
    return " ".join(str(key.render()) for key in footer.query("FooterKey"))


@pytest.mark.skipif(not capture_available()[0], reason=capture_available()[1] or "capture available")
@run_async
async def test_detail_shows_the_connections_own_packets_and_its_close() -> None:
    """Enter on a connection the server closed: its ladder holds its own SYN and FIN, no other's."""
    with running("epoll_lt") as server:
        capture = PacketCapture(server.port)
        async with watching(server, capture) as pilot:
            app: LabApp = pilot.app  # type: ignore[assignment]
            await until(pilot, lambda: capture.ready, "the capture child to start", timeout=20)
            async with clients_of(server.port, 3, prefix="ladder") as opened:
                chosen = opened[1]
                chosen.send(b"\xf0\x00")  # a reserved packet type: the server closes this one
                end = chosen.sock.getsockname()
                await pilot.press("2", "slash", *str(end[1]), "enter")
                await until(pilot, lambda: two_rows(pilot), "both ends of that connection")
                states = lambda: {row["state"] for row in two_rows(pilot)}  # noqa: E731
                await until(pilot, lambda: "CLOSE_WAIT" in states(), "the client end in CLOSE_WAIT")
                await pilot.press("home")
                await until(pilot, lambda: table(pilot).cursor_row is not None, "a row under the cursor")
                await pilot.press("enter")
                await until(pilot, lambda: isinstance(app.screen, DetailScreen), "the detail")
                ladder = await until(pilot, lambda: "FIN" in text_of(pilot, "#detail-ladder") and
                                     text_of(pilot, "#detail-ladder"), "the connection's FIN")  # fmt: skip
                assert "SYN" in ladder
                assert f":{end[1]}" in ladder
                others = {f":{client.sock.getsockname()[1]}" for client in opened if client is not chosen}
                assert not any(other in ladder for other in others)
                history = text_of(pilot, "#detail-history")
                # ESTABLISHED may have lasted less than one poll here; the close states last.
                assert "server   FIN_WAIT_2" in history and "client   CLOSE_WAIT" in history
