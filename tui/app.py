"""The Textual app: four tabs over one Model, redrawn about ten times a second.

A collector thread gathers data (tui/collector.py); a 10 Hz timer here takes what it merged,
applies it to the model and redraws the visible tab only. Tables hold one page of rows, so
the cost of a frame does not grow with the number of sockets.
"""

from __future__ import annotations

from typing import ClassVar

from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import Footer, TabbedContent, TabPane

from tui.collector import Collector
from tui.model import Model
from tui.widgets.help_screen import HelpScreen
from tui.widgets.packets_view import PacketsView
from tui.widgets.ready_list import ReadyListView
from tui.widgets.status_bar import StatusBar
from tui.widgets.tcp_view import TcpView
from tui.widgets.threads_view import ThreadsView

FRAME_SECONDS = 0.1  # redraw at most ten times a second, whatever the event rate
TABS = ("ready", "tcp", "threads", "packets")
VIEWS = "ReadyListView, TcpView, ThreadsView, PacketsView"
View = ReadyListView | TcpView | ThreadsView | PacketsView
TAB_ACTIONS = {"filter": ("tcp",), "sort": ("tcp",), "turn": ("ready", "tcp")}


class LabApp(App[None]):
    CSS_PATH = "app.tcss"
    TITLE = "epoll-mqtt-lab"
    ENABLE_COMMAND_PALETTE = False
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "quit", "Quit"),
        Binding("ctrl+q,ctrl+c", "quit", "Quit", show=False, priority=True),
        Binding("p", "toggle_pause", "Pause"),
        Binding("question_mark,f1", "help", "Help", key_display="?"),
        Binding("left_square_bracket", "turn(-1)", "Page", key_display="["),
        Binding("right_square_bracket", "turn(1)", "Page", key_display="]", show=False),
        Binding("f", "filter", "Filter state"),
        Binding("s", "sort", "Sort"),
        *(Binding(str(number), f"show_tab('{tab}')", show=False) for number, tab in enumerate(TABS, 1)),
    ]

    def __init__(self, model: Model, collector: Collector | None = None) -> None:
        super().__init__()
        self.model = model
        self.collector = collector
        self.paused = False
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
        yield Footer()

    def on_mount(self) -> None:
        if self.collector is not None:
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
        """Draw the status bar and the visible tab; skipped while they are not mounted."""
        widgets = self.mounted_views()
        if widgets is None:
            return
        status_bar, view = widgets
        status_bar.draw(self.model, self.paused)
        view.refresh_from(self.model)

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

    def active_tab(self) -> str:
        return self.tabbed_content.active

    def on_tabbed_content_tab_activated(self, event: TabbedContent.TabActivated) -> None:
        self.refresh_bindings()  # f, s and [ ] apply to some tabs only
        self.call_after_refresh(self.redraw)  # after layout, so page sizes are known

    def on_resize(self) -> None:
        self.call_after_refresh(self.redraw)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        tabs = TAB_ACTIONS.get(action)
        if tabs is None:
            return True
        try:
            return self.active_tab() in tabs
        except NoMatches:  # asked while the screen is still being built
            return False

    def action_show_tab(self, tab: str) -> None:
        self.tabbed_content.active = tab

    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        self.redraw()

    def action_help(self) -> None:
        self.push_screen(HelpScreen())

    def action_turn(self, pages: int) -> None:
        view = self.active_view()
        if isinstance(view, ReadyListView | TcpView):
            view.turn(pages)
            self.redraw()

    def action_filter(self) -> None:
        state = self.model.tcp.cycle_filter()
        self.notify(f"showing {state or 'all states'}", timeout=1.5)
        self.redraw()

    def action_sort(self) -> None:
        self.notify(f"sorted by {self.model.tcp.cycle_sort()}", timeout=1.5)
        self.redraw()
