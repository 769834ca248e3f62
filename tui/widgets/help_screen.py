"""The help screen: what each tab shows, which keys work, and where the data comes from."""

from __future__ import annotations

from typing import ClassVar

from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Markdown

HELP = """\
# epoll-mqtt-lab TUI

**1 Ready list**: one column per wait call (height = ready fds, yellow = an fd ready in three
or more waits in a row: level-triggered epoll does that while bytes stay unread), the
latest ready lists fd by fd with the MQTT client behind each fd, and the interest set the
kernel keeps, read from `/proc/PID/fdinfo/EPFD` (ET and ONESHOT flags, socket inode, Recv-Q).

**2 TCP**: every socket of the port from netlink sock_diag (the kernel filters by port):
state, Send-Q, Recv-Q, timer. The count bar is the notes'
`netstat -tan | awk '/^tcp/ {++S[$NF]} END {for (a in S) print a, S[a]}'`.
The drawing is TCP's close: the side that closes first goes FIN_WAIT_1 → FIN_WAIT_2 →
TIME_WAIT (60 s); the other sits in CLOSE_WAIT until it closes, then LAST_ACK.
FIN_WAIT_1 with a non-empty Send-Q (red) is a FIN stuck behind data the peer will not take.

**3 Threads**: one lane per server thread from `/proc/PID/task` (state, CPU, context switches
per second, voluntary/involuntary) with lock wait and hold from the server's telemetry.

**4 Packets**: SYN, FIN and RST segments on the port, captured by a scapy child process
behind a kernel BPF filter (needs root and libpcap).

| key | does |
|---|---|
| `1`–`4` | switch tab |
| `p` | pause / resume the display (data keeps being collected) |
| `[` `]` | previous / next page of a long table |
| `f` | TCP: filter by state (cycles through the states present) |
| `s` | TCP: sort by state, client, Send-Q, Recv-Q, timer (or click a header) |
| `?` | this help; `Esc` closes it |
| `q`, `ctrl+q`, `ctrl+c` | quit (stops a server the TUI started) |
"""


class HelpScreen(ModalScreen[None]):
    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll { width: 90%; max-width: 100; height: 90%; border: round $accent;
                                  background: $surface; padding: 0 1; }
    """
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,question_mark,h,f1", "dismiss", "Close"),
    ]

    def compose(self) -> ComposeResult:
        with VerticalScroll():
            yield Markdown(HELP)
