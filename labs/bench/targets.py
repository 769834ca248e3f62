"""Brokers under test as processes: discover them, start each on a free loopback port, stop it by pid.

A broker's cost is read from /proc (``proctree``: CPU over its whole process tree, resident
pages of the main process), so it is the broker's own CPU time whatever else runs on the
machine. Every broker we start gets RLIMIT_NOFILE raised to the hard limit and its own session,
so a Ctrl-C reaches only us.
"""

from __future__ import annotations

import importlib.util
import os
import resource
import select
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from servers.process import parse_listening, stop_process

from .proctree import ProcessSample, sample_process

REPO_ROOT = Path(__file__).resolve().parents[2]
PROJECT_VARIANTS = ("select_srv", "poll_srv", "epoll_lt", "epoll_et", "threaded_boss_worker", "broker")
REFERENCE_BROKERS = ("mosquitto", "amqtt", "aedes")


class BrokerFailed(RuntimeError):
    """A broker did not start, or died while it was being measured."""


def raise_nofile_limit() -> None:
    """preexec_fn for brokers: soft RLIMIT_NOFILE up to the hard limit (20,000 here, even for root)."""
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


@dataclass
class Broker:
    """A running broker (``process`` is None for ``--target HOST:PORT``, which we only connect to)."""

    name: str
    address: tuple[str, int]
    process: subprocess.Popen[bytes] | None = None
    stderr_path: Path | None = None
    temp_paths: list[Path] = field(default_factory=list)
    temp_dirs: list[Path] = field(default_factory=list)  # e.g. a persistence directory, removed on stop
    output_tail: deque[str] = field(default_factory=lambda: deque(maxlen=20))

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def sample(self) -> ProcessSample | None:
        return sample_process(self.process.pid) if self.process else None

    def check_alive(self) -> None:
        if self.process and self.process.poll() is not None:
            raise BrokerFailed(
                f"{self.name} exited with code {self.process.returncode}: {self.diagnostics()}"
            )

    def diagnostics(self) -> str:
        text = self.stderr_path.read_text(errors="replace")[-2000:] if self.stderr_path else ""
        return (text + "".join(self.output_tail)).strip() or "(no output)"

    def stop(self, grace: float = 5.0) -> int | None:
        """SIGTERM by pid, then SIGKILL after ``grace`` seconds; the exit code (None if not ours)."""
        if self.process is None:
            return None
        stop_process(self.process, grace)
        for path in [*self.temp_paths, *([self.stderr_path] if self.stderr_path else [])]:
            path.unlink(missing_ok=True)
        for directory in self.temp_dirs:
            shutil.rmtree(directory, ignore_errors=True)
        return self.process.returncode


def spawn(name: str, command: list[str], env: dict[str, str] | None = None) -> Broker:
    """Start a broker process with stdout piped and stderr kept in a temp file for diagnostics."""
    handle, stderr_name = tempfile.mkstemp(prefix=f"compare-{name}-", suffix=".err")
    with os.fdopen(handle, "wb") as stderr_file:
        process = subprocess.Popen(
            command,
            cwd=REPO_ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
            env=env,
            preexec_fn=raise_nofile_limit,
            start_new_session=True,
        )
    return Broker(name, ("", 0), process, Path(stderr_name))


def await_listening(broker: Broker, timeout: float = 15.0) -> Broker:
    """Read stdout until the contract's ``listening on HOST:PORT`` line, then keep draining it."""
    try:
        address = _read_until_listening(broker, timeout)
    except BaseException:
        broker.stop()  # e.g. Ctrl-C while it starts: never leave the process behind
        raise
    if address is None:
        broker.stop()
        raise BrokerFailed(f"{broker.name} printed no 'listening on HOST:PORT' line: {broker.diagnostics()}")
    broker.address = address
    _drain_in_background(broker)
    return broker


def _read_until_listening(broker: Broker, timeout: float) -> tuple[str, int] | None:
    assert broker.process and broker.process.stdout
    stdout, deadline, pending = broker.process.stdout, time.monotonic() + timeout, b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([stdout], [], [], 0.1)
        chunk = os.read(stdout.fileno(), 4096) if ready else b""
        if ready and not chunk:
            return None  # EOF: the process exited
        pending += chunk
        *lines, pending = pending.split(b"\n")
        for line in lines:
            text = line.decode(errors="replace")
            broker.output_tail.append(text + "\n")
            address = parse_listening(text)
            if address:
                return address
    return None


def _drain_in_background(broker: Broker) -> None:
    """Keep reading the broker's stdout so a chatty broker never blocks on a full pipe."""
    assert broker.process and broker.process.stdout
    stdout, tail = broker.process.stdout, broker.output_tail

    def drain() -> None:
        for line in stdout:
            tail.append(line.decode(errors="replace"))

    threading.Thread(target=drain, name=f"drain-{broker.name}", daemon=True).start()


@dataclass(frozen=True)
class Target:
    """Something to benchmark: a name, whether it can run here (and why not), and how to start it."""

    name: str
    kind: str  # "project", "reference", "external" or "sink"
    launch: Callable[[], Broker]
    available: bool = True
    reason: str = ""
    # Starts the broker with persistence on (for qos1-persist); None where we cannot configure it.
    launch_persistent: Callable[[], Broker] | None = None


# The full broker reads mosquitto.conf. It gets the log settings of mosquitto's comparison config
# (references.MOSQUITTO_CONFIG), so neither pays for connection log lines the other skips.
FULL_BROKER_LOGGING = "log_type error\nlog_type warning\nconnection_messages false\n"


def project_target(module: str, server_args: list[str]) -> Target:
    """One of this project's servers, started as ``python -m servers.<module>``."""

    def launch() -> Broker:
        command = [sys.executable, "-m", f"servers.{module}", "--host", "127.0.0.1", "--port", "0"]
        config: Path | None = None
        if module == "broker":
            handle, name = tempfile.mkstemp(prefix="compare-broker-", suffix=".conf")
            with os.fdopen(handle, "w") as file:
                file.write(FULL_BROKER_LOGGING)
            config = Path(name)
            command += ["-c", name]  # explicit --host/--port win over the file
        broker = spawn(module, [*command, *server_args])
        if config is not None:
            broker.temp_paths.append(config)  # stop() removes it, even when start-up fails
        return await_listening(broker)

    available = _project_module_exists(module)
    return Target(module, "project", launch, available, "" if available else f"servers/{module}.py not found")


def _project_module_exists(module: str) -> bool:
    if str(REPO_ROOT) not in sys.path:
        sys.path.insert(0, str(REPO_ROOT))
    try:
        return importlib.util.find_spec(f"servers.{module}") is not None
    except ModuleNotFoundError:
        return False


def sink_target() -> Target:
    """The trivial broker ``--selftest`` measures the generator against."""

    def launch() -> Broker:
        command = [sys.executable, "-m", "labs.bench.sink", "--host", "127.0.0.1", "--port", "0"]
        return await_listening(spawn("sink", command))

    return Target("sink", "sink", launch)


def external_target(host: str, port: int) -> Target:
    """A broker someone else runs: no pid, so only the client-side figures."""
    return Target(f"{host}:{port}", "external", lambda: Broker(f"{host}:{port}", (host, port)))
