"""`python -m tui`: watch a server variant live, started here or already running.

    python -m tui --run epoll_lt [--port 1883] [-- server flags]   start it with --telemetry, watch it
    python -m tui --attach 1883 [--pid PID]                        watch a server started with --telemetry

The TUI binds the telemetry socket ``\\0epoll-mqtt-lab.<port>``; quitting stops a server it started.
``--attach`` may come before the server: the TUI finds its pid once something listens on the port.
"""

from __future__ import annotations

import argparse
import errno
import signal
import sys
from pathlib import Path

from servers.telemetry import TelemetryReader
from tui.app import LabApp
from tui.collector import Collector
from tui.launch import VARIANTS, LaunchedServer, find_server_pid, variant_of
from tui.model import Model
from tui.sources.packet_capture import PacketCapture, capture_available

EPILOG = """\
Flags after -- go to the server, e.g. python -m tui --run epoll_et -- --read-chunk 64

--run's server log: the server's output goes to a file without a name that exists only while
the TUI runs, so nothing is left in /tmp. If the server fails to start, or ends by itself while
the TUI runs, its last lines are printed when the TUI exits. --server-log PATH keeps the whole
log at PATH instead.
"""
NO_TERMINAL = (
    "python -m tui needs a terminal (stdin and stdout must be a tty).\n"
    "Without one, run the server alone, e.g.: python -m servers.epoll_lt --port 1883 -v"
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m tui",
        description="Watch an MQTT server variant: ready lists, TCP states, threads, packets.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    what = parser.add_mutually_exclusive_group(required=True)
    what.add_argument("--attach", type=int, metavar="PORT", help="watch the server listening on PORT")
    what.add_argument("--run", metavar="VARIANT", help=f"start servers.VARIANT: {', '.join(VARIANTS)}")
    parser.add_argument("--port", type=int, default=1883, help="--run: the server's port (default 1883)")
    parser.add_argument("--pid", type=int, help="--attach: the server's pid (found from the port if omitted)")
    parser.add_argument("--no-capture", action="store_true", help="do not capture SYN/FIN/RST packets")
    parser.add_argument(
        "--server-log", type=Path, metavar="PATH", help="--run: keep the server's output in PATH (see below)"
    )
    return parser


def split_server_args(argv: list[str]) -> tuple[list[str], list[str]]:
    """Our own flags, and the ones after ``--`` that go to the server."""
    if "--" in argv:
        index = argv.index("--")
        return argv[:index], argv[index + 1 :]
    return argv, []


def open_reader(port: int) -> TelemetryReader:
    try:
        return TelemetryReader(port)
    except OSError as error:
        if error.errno == errno.EADDRINUSE:
            raise SystemExit(
                f"another watcher (a TUI or a lab script) already holds the telemetry socket for port {port}"
            ) from None
        raise


def packet_capture(port: int, disabled: bool) -> tuple[PacketCapture | None, str]:
    if disabled:
        return None, "turned off with --no-capture"
    available, why_not = capture_available()
    return (PacketCapture(port), "") if available else (None, why_not)


def main(argv: list[str] | None = None) -> int:
    own_args, server_args = split_server_args(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(own_args)
    if server_args and args.attach is not None:
        parser.error("flags after -- are for a server started with --run")
    if args.server_log is not None and args.attach is not None:
        parser.error("--server-log is for a server started with --run")
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print(NO_TERMINAL, file=sys.stderr)
        return 2
    server: LaunchedServer | None = None
    reader: TelemetryReader | None = None
    try:
        if args.run is not None:
            # Bind first, so the server's first events (its first accept) are not lost.
            reader = open_reader(args.port) if args.port else None
            print(f"starting servers.{args.run} on port {args.port}…", file=sys.stderr, flush=True)
            server = LaunchedServer(args.run, args.port, server_args, args.server_log)
            port, pid = server.port, server.pid
            variant = variant_of(pid) or server.variant
            reader = reader or open_reader(port)  # --port 0: the port is known only now
        else:
            port = args.attach
            reader = open_reader(port)
            pid = args.pid or find_server_pid(port)
            variant = variant_of(pid) if pid is not None else ""
        capture, capture_note = packet_capture(port, args.no_capture)
        model = Model(port, pid, variant)
        model.notes["packets"] = capture_note
        collector = Collector(port, pid, reader, capture, server.exit_status if server else None)
        app = LabApp(model, collector)
        for signum in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, lambda *_: app.exit())
        app.run()
    except (ValueError, RuntimeError) as error:
        print(error, file=sys.stderr)
        return 1
    finally:
        if reader is not None:
            reader.close()
        if server is not None:
            server.stop()
            print(f"stopped servers.{server.variant}", file=sys.stderr)
            if server.farewell:
                print(server.farewell, file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
