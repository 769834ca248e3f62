"""Helpers for the TUI's live tests: a real server, the app attached to it, and polling with a deadline.

``watching(server)`` builds the app as ``python -m tui --attach PORT --pid PID`` does; ``until``
lets the app run until a condition holds (nothing sleeps to synchronise); ``rows`` and ``text_of``
read what a view shows as plain text.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import inspect
import io
import socket
import struct
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator
from typing import Any, TypeVar

from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable, Static

from servers.telemetry import TelemetryReader
from tests.support.clients import RawClient
from tests.support.servers import ServerProcess
from tui.app import LabApp
from tui.collector import Collector
from tui.format import short_address
from tui.model import Model
from tui.sources.packet_capture import PacketCapture

T = TypeVar("T")
SIZE = (120, 50)  # big enough that every test's rows fit on the first page


def run_async(test: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Run an async test on a fresh event loop (Pilot needs one; no pytest asyncio plugin here)."""

    @functools.wraps(test)
    def run(*args: Any, **kwargs: Any) -> None:
        asyncio.run(test(*args, **kwargs))

    return run


@contextlib.asynccontextmanager
async def watching(
    server: ServerProcess, capture: PacketCapture | None = None, size: tuple[int, int] = SIZE
) -> AsyncIterator[Pilot]:
    """The app attached to ``server``, as ``python -m tui --attach PORT --pid PID`` builds it."""
    reader = TelemetryReader(server.port)
    collector = Collector(server.port, server.pid, reader, capture)
    app = LabApp(Model(server.port, server.pid, server.variant), collector)
    try:
        async with app.run_test(size=size) as pilot:
            yield pilot
    finally:
        reader.close()


@contextlib.contextmanager
def running(variant: str, *flags: str) -> Iterator[ServerProcess]:
    server = ServerProcess(variant, "--telemetry", *flags)
    try:
        yield server
    finally:
        server.stop()


async def until(
    pilot: Pilot, condition: Callable[[], T | Awaitable[T]], what: str, timeout: float = 10.0
) -> T:
    """Let the app run until ``condition()`` is truthy; fail after ``timeout`` seconds.

    ``condition`` may be a coroutine function (one that drives the test as it checks)."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await pilot.pause(0.05)  # a polling interval; the deadline decides


def rows(pilot: Pilot, selector: str) -> list[dict[str, str]]:
    """The rows a view's DataTable shows now, as {column key: plain text}."""
    table = pilot.app.query_one(f"{selector} DataTable", DataTable)
    keys = [str(key.value) for key in table.columns]
    cells = (map(str, table.get_row_at(index)) for index in range(table.row_count))
    return [dict(zip(keys, row, strict=True)) for row in cells]


def text_of(pilot: Pilot, selector: str) -> str:
    """What a Static shows, as plain text (rich Tables rendered at the widget's width)."""
    screen = pilot.app.screen  # the active one (help, detail) first, then the tabs underneath
    found = screen.query(selector) or pilot.app.screen_stack[0].query(selector)
    widget = found.only_one(Static)
    content = widget.content
    if isinstance(content, Text):
        return content.plain
    console = Console(width=max(20, widget.size.width), file=io.StringIO(), color_system=None)
    console.print(content)
    return console.file.getvalue()  # type: ignore[attr-defined]


def abort(client: RawClient) -> None:
    """Close with a reset (SO_LINGER 0): no TIME_WAIT left behind for later tests to trip over."""
    with contextlib.suppress(OSError):
        client.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    client.close()


def address(endpoint: tuple[str, int]) -> str:
    return f"{endpoint[0]}:{endpoint[1]}"


def tcp_row(pilot: Pilot, state: str, side: str, client_end: str) -> dict[str, str] | None:
    """The TCP view's row for one end of a connection, found by its state, side and client address
    ("127.0.0.1:50004"; the view spells loopback addresses by their port alone, ":50004")."""
    host, _, port = client_end.rpartition(":")
    wanted = {"state": state, "side": side, "client": short_address((host, int(port)))}
    return next((row for row in rows(pilot, "#sockets") if wanted.items() <= row.items()), None)
