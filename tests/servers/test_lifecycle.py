"""Starting and stopping: SIGTERM and SIGINT end every model with exit status 0, and a taken
port is reported with a hint instead of a traceback.

Two tests hold the server inside a write to its stderr, a one-page pipe the test has filled,
so that a signal lands in a chosen window every time rather than once in a while.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from mqtt.codec import encode
from mqtt.packets import Connect
from tests.support.servers import ROOT, ServerProcess
from tests.support.waiting import wait_until

from .helpers import Clients, subscribe, unique
from .test_io_models import MODELS


def server_command(model: tuple[str, ...], port: int, *flags: str) -> list[str]:
    return [sys.executable, "-m", f"servers.{model[0]}", *model[1:], "--port", str(port), *flags]


@pytest.mark.parametrize("signal_number", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
@pytest.mark.parametrize("model", MODELS)
def test_signal_with_clients_connected_exits_0_and_closes_them(
    model: tuple[str, ...], signal_number: signal.Signals
) -> None:
    server = ServerProcess(*model)
    try:
        with Clients(server) as clients:
            connected = [clients.raw() for _ in range(3)]
            assert subscribe(connected[0], (unique("signal"), 1)) == (1,)
            server.process.send_signal(signal_number)
            assert server.process.wait(timeout=10) == 0, server.stderr()
            assert all(raw.is_closed_by_server() for raw in connected)
    finally:
        server.stop()


@pytest.mark.parametrize("model", MODELS)
def test_port_already_in_use_exits_nonzero_naming_the_port_flag(model: tuple[str, ...]) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        command = server_command(model, holder.getsockname()[1])
        result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=15, check=False)
    assert result.returncode != 0
    assert "already in use" in result.stderr and "--port" in result.stderr, result.stderr


# -- signals in awkward places -------------------------------------------------------------------


class StderrPipe:
    """A child's stderr as a one-page pipe; once the test fills it, the child's next write blocks."""

    FILLER = b"\0"  # not in any text a server writes, so it can be removed again

    def __init__(self) -> None:
        self.read_end, self.write_end = os.pipe()
        fcntl.fcntl(self.write_end, fcntl.F_SETPIPE_SZ, os.sysconf("SC_PAGE_SIZE"))
        self.received = b""

    def fill(self) -> None:
        os.set_blocking(self.write_end, False)  # shared with the child: only while it is quiet
        with contextlib.suppress(BlockingIOError):
            while True:
                os.write(self.write_end, self.FILLER * 4096)
        os.set_blocking(self.write_end, True)

    def release(self) -> None:
        """Leave the write end to the child alone, so reading sees EOF when it exits."""
        os.close(self.write_end)

    def read(self, until: bytes | None, timeout: float) -> str:
        """Read until ``until`` was seen (None: until EOF) or ``timeout``; return all text read."""
        deadline = time.monotonic() + timeout
        while (until is None or until not in self.received) and (
            remaining := deadline - time.monotonic()
        ) > 0:
            if select.select([self.read_end], [], [], remaining)[0]:
                chunk = os.read(self.read_end, 65536)
                if not chunk:
                    break
                self.received += chunk
        return self.received.decode(errors="replace").replace(self.FILLER.decode(), "")

    def close(self) -> None:
        for fd in (self.read_end, self.write_end):
            with contextlib.suppress(OSError):
                os.close(fd)


@contextlib.contextmanager
def server_writing_to(
    stderr: StderrPipe, model: tuple[str, ...], *flags: str
) -> Iterator[tuple[subprocess.Popen[str], int]]:
    """A server whose stderr is ``stderr``'s pipe; yields the process and its port."""
    process = subprocess.Popen(
        server_command(model, 0, *flags), cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr.write_end, text=True
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert line.startswith("listening on "), line
        yield process, int(line.rsplit(":", 1)[1])
    finally:
        stderr.close()
        if process.poll() is None:
            process.kill()
            process.wait()
        if process.stdout is not None:
            process.stdout.close()


def exit_code_after(
    process: subprocess.Popen[str], stderr: StderrPipe, timeout: float
) -> tuple[int | None, str]:
    """Read the child's stderr until it exits (EOF) or ``timeout``; its exit code (None: alive)."""
    text = stderr.read(until=None, timeout=timeout)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=0.5)
    return process.returncode, text[-3000:]


@pytest.mark.parametrize("model", MODELS)
def test_sigterm_right_after_the_listening_line_exits_0(model: tuple[str, ...]) -> None:
    stderr = StderrPipe()
    stderr.fill()  # full before the start: the banner after the listening line blocks
    with server_writing_to(stderr, model) as (process, _):
        stderr.release()
        process.send_signal(signal.SIGTERM)
        exit_code, text = exit_code_after(process, stderr, timeout=10)
        assert exit_code == 0, text


def blocked_writing_to_a_pipe(pid: int) -> bool:
    """Whether any thread of ``pid`` sleeps in a pipe write (its kernel wait channel)."""
    channels = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(FileNotFoundError):
            channels.append(Path(f"/proc/{pid}/task/{tid}/wchan").read_text())
    return any("pipe" in channel for channel in channels)


@pytest.mark.parametrize("model", MODELS)
def test_sigterm_while_a_log_line_is_written_exits_0(model: tuple[str, ...]) -> None:
    # The signal handler raises an exception to unwind the loop; logging must not swallow it.
    stderr = StderrPipe()
    with server_writing_to(stderr, model, "-v") as (process, port):
        stderr.read(until=b"Ctrl-C stops the server.\n", timeout=10)
        stderr.fill()  # -v logs each CONNECT: that log line now blocks
        stderr.release()
        with socket.create_connection(("127.0.0.1", port)) as client:
            client.sendall(encode(Connect(unique("logged"))))
            wait_until(lambda: blocked_writing_to_a_pipe(process.pid), what="the log write to block")
            process.send_signal(signal.SIGTERM)
            exit_code, text = exit_code_after(process, stderr, timeout=2)
        assert exit_code == 0, f"exit code {exit_code} 2 s after SIGTERM:\n{text}"
