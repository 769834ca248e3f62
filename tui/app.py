"""The Textual app: four tabs over one Model, redrawn about ten times a second.

A collector thread gathers data (tui/collector.py); a 10 Hz timer here takes what it merged,
applies it to the model and redraws the visible tab only. Tables hold one page of rows, so
the cost of a frame does not grow with the number of sockets. A key redraws at once rather
than waiting for the next frame, so the screen answers a key within one redraw.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, Input, TabbedContent, TabPane

from tui.collector import Collector
from tui.model import Model
from tui.model.tcp import Filters
from tui.widgets.detail_screen import DetailScreen
from tui.widgets.help_screen import HelpScreen
from tui.widgets.navigation import Move
from tui.widgets.packets_view import PacketsView
from tui.widgets.ready_list import ReadyListView
from tui.widgets.search_bar import SearchBar
from tui.widgets.status_bar import StatusBar
from tui.widgets.tcp_view import TcpView
from tui.widgets.threads_view import ThreadsView

FRAME_SECONDS = 0.1  # redraw at most ten times a second, whatever the event rate
TABS = ("ready", "tcp", "threads", "packets")
VIEWS = "ReadyListView, TcpView, ThreadsView, PacketsView"
View = ReadyListView | TcpView | ThreadsView | PacketsView
TCP_ONLY = ("tcp",)
TAB_ACTIONS = {
    "filter": TCP_ONLY, "sort": TCP_ONLY, "reverse": TCP_ONLY, "queued": TCP_ONLY, "one_client": TCP_ONLY,
    "detail": TCP_ONLY, "clear_filters": TCP_ONLY,
}  # fmt: skip
NAVIGATION_KEYS = {"up": "up", "down": "down", "pageup": "page_up", "pagedown": "page_down", "home": "home",
                   "end": "end"}  # fmt: skip


class LabApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "epoll-mqtt-lab"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q,ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("p", "toggle_pause", "Pause"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("slash", "search", "Search", key_display="/"),
        Binding("enter", "detail", "Detail"),
        Binding("f", "filter", "State"),
        Binding("u", "queued", "Send-Q>0", show=False),  # u, c, r: in the help; 80 columns hold no more
        Binding("c", "one_client", "Client", show=False),
        Binding("s", "sort", "Sort"),
        Binding("r", "reverse", "Reverse", show=False),
        Binding("escape", "clear_filters", "Clear", show=False),
        *(Binding(key, f"navigate('{move}')", show=False) for key, move in NAVIGATION_KEYS.items()),
        Binding("left_square_bracket", "navigate('page_up')", show=False),
        Binding("right_square_bracket", "navigate('page_down')", show=False),
        *(Binding(str(number), f"show_tab('{tab}')", show=False) for number, tab in enumerate(TABS, 1)),
    ]

    def __init__(self, model: Model, collector: Collector | None = None) -> None:
        super().__init__()
        self.model = model
        self.collector = collector
        self.paused = False
        model.tcp.client_ids = lambda end: model.names.by_peer.get(f"{end[0]}:{end[1]}", "")
        if collector is not None:
            model.capturing = collector.capture is not None

    def compose(self) -> ComposeResult:
        yield StatusBar()
        with TabbedContent(initial="ready"):
            with TabPane("1 Ready list", id="ready"):
                yield ReadyListView()
            with TabPane("2 TCP", id="tcp"):
                yield TcpView()
            with TabPane("3 Threads", id="threads"):
                yield ThreadsView()
            with TabPane("4 Packets", id="packets"):
                yield PacketsView()
        yield SearchBar()
        yield Footer()

    def on_mount(self) -> None:
        if self.collector is not None:
            loop = asyncio.get_running_loop()

            def draw_soon() -> None:
                """From the sampler thread, when new rows arrive: draw now, not at the next tick
                (up to FRAME_SECONDS of data age saved). Once the loop is closed, nothing to do."""
                with contextlib.suppress(RuntimeError):
                    loop.call_soon_threadsafe(self.next_frame)

            self.collector.on_change = draw_soon
            self.collector.start()
        # The app's Mount comes after its compose, so the first frame finds the widgets built.
        # The last ones may not: the timer stops only once the screens are gone, and a shutdown
        # that skips App.exit() (run_test's, or one after a crash) lets it tick meanwhile.
        self.set_interval(FRAME_SECONDS, self.next_frame)
        self.call_after_refresh(self.redraw)

    def on_unmount(self) -> None:
        if self.collector is not None:
            self.collector.stop()

    def next_frame(self) -> None:
        """Take the collector's merged batch (unless paused) and redraw the visible tab."""
        if self.collector is not None and not self.paused:
            batch = self.collector.take()
            if batch is not None:
                self.model.apply(batch)
        self.redraw()

    def redraw(self) -> None:
        """Draw the status bar, the visible tab and an open detail screen; skipped while they are
        not mounted (before the main screen exists, or during shutdown)."""
        widgets = self.mounted_views()
        if widgets is None:
            return
        status_bar, view = widgets
        status_bar.draw(self.model, self.paused)
        view.refresh_from(self.model)
        if isinstance(self.screen, DetailScreen) and self.screen.is_attached:
            self.screen.refresh_from(self.model)

    def mounted_views(self) -> tuple[StatusBar, View] | None:
        """The status bar and the visible tab's view, or None before the main screen has them,
        or once shutdown has begun to take them down: a frame then is skipped, never an error."""
        if not self.screen_stack:
            return None
        screen = self.main_screen
        status_bars, tabs = screen.query(StatusBar), screen.query(TabbedContent)
        try:
            # TabbedContent looks its active pane up by id in its ContentSwitcher, and raises
            # while that pane is still being mounted or already being removed.
            pane = tabs.first().active_pane if tabs else None
        except NoMatches:
            return None
        views = pane.query(VIEWS) if pane is not None else None
        if not status_bars or not views:
            return None
        status_bar, view = status_bars.first(), views.first()
        if not (status_bar.is_attached and view.is_attached):
            return None
        return status_bar, view  # type: ignore[return-value]

    def active_view(self) -> View:
        pane = self.tabbed_content.active_pane
        assert pane is not None
        return pane.query_one(VIEWS)  # type: ignore[return-value]

    @property
    def main_screen(self) -> Screen[None]:
        """The tabs' screen. App.query_one searches the *active* screen, which is the help
        screen while it is open, and the views must keep updating underneath it."""
        return self.screen_stack[0]

    @property
    def tabbed_content(self) -> TabbedContent:
        return self.main_screen.query_one(TabbedContent)

    @property
    def search_bar(self) -> SearchBar:
        return self.main_screen.query_one(SearchBar)

    def active_tab(self) -> str:
        return self.tabbed_content.active

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()  # the TCP keys apply to one tab only
        self.call_after_refresh(self.redraw)  # after layout, so page sizes are known

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if self.screen is not self.main_screen and action not in ("quit", "toggle_pause", "help"):
            return False  # the help and detail screens have their own keys; q, p and ? work everywhere
        tabs = TAB_ACTIONS.get(action)
        if tabs is None:
            return True
        try:
            return self.active_tab() in tabs
        except NoMatches:  # asked while the screen is still being built
            return False

    # ------------------------------------------------------------------ actions

    def action_show_tab(self, tab: str) -> None:
        self.tabbed_content.active = tab

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if self.collector is not None and hasattr(self.collector, "set_paused"):
            self.collector.set_paused(self.paused)  # the kernel polls stop; telemetry keeps draining
        self.redraw()

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            self.screen.dismiss()
        else:
            self.push_screen(HelpScreen())

    def action_navigate(self, move: Move) -> None:
        view = self.active_view()
        if hasattr(view, "navigate"):
            view.navigate(move)
            self.redraw()

    def action_filter(self) -> None:
        self.model.tcp.cycle_filter()
        self.redraw()

    def action_queued(self) -> None:
        tcp = self.model.tcp
        filters = tcp.filters
        tcp.set_filters(Filters(filters.state, not filters.queued, filters.client, filters.search))
        self.redraw()

    def action_one_client(self) -> None:
        """Only the connection under the cursor (both ends); again: all of them."""
        tcp = self.model.tcp
        filters, row = tcp.filters, self.tcp_view.selected()
        client = None if filters.client is not None or row is None else tcp.client_end(row)
        if row is not None and row.state == "LISTEN":
            client = None
        tcp.set_filters(Filters(filters.state, filters.queued, client, filters.search))
        self.redraw()

    def action_clear_filters(self) -> None:
        self.model.tcp.set_filters(Filters())
        self.redraw()

    def action_sort(self) -> None:
        self.model.tcp.cycle_sort()
        self.redraw()

    def action_reverse(self) -> None:
        self.model.tcp.reverse_sort()
        self.redraw()

    def action_search(self) -> None:
        if self.active_tab() != "tcp":
            self.action_show_tab("tcp")
        self.search_bar.open(self.model.tcp.filters.search)

    def action_detail(self) -> None:
        row = self.tcp_view.selected()
        if row is None or row.state == "LISTEN":
            self.notify("move the cursor to a connection first (the listener has no peer)", timeout=2)
            return
        screen = DetailScreen(self.model.tcp.client_end(row))
        self.push_screen(screen)
        self.call_after_refresh(self.redraw)

    @property
    def tcp_view(self) -> TcpView:
        return self.main_screen.query_one(TcpView)

    # ------------------------------------------------------------------ the search prompt

    def on_input_changed(self, event: Input.Changed) -> None:
        if isinstance(event.input, SearchBar) and event.input.display:
            self._search(event.value)

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if isinstance(event.input, SearchBar):
            event.input.close()
            self._search(event.value)

    def on_search_bar_cancelled(self, event: SearchBar.Cancelled) -> None:
        self.search_bar.close()
        self._search(self.search_bar.before)

    def _search(self, query: str) -> None:
        tcp = self.model.tcp
        filters = tcp.filters
        tcp.set_filters(Filters(filters.state, filters.queued, filters.client, query.strip()))
        self.redraw()
