"""Reference brokers to compare against: Debian's mosquitto, amqtt (Python), aedes (Node.js).

mosquitto gets a temporary config on a port we pick; amqtt and aedes run small launchers that
obey the same ``listening on HOST:PORT`` contract as this project's servers. Each is optional:
a missing one is reported as "not available", with the command that would install it (aedes
is installed on first use when node and npm are here: ``aedes.py``).
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from . import aedes
from .targets import Broker, BrokerFailed, Target, await_listening, spawn

AMQTT_INSTALL = "pip install amqtt"
MOSQUITTO_CONFIG = """\
listener {port} 127.0.0.1
allow_anonymous true
max_connections -1
max_queued_messages 1000
{persistence}
log_dest stderr
log_type error
log_type warning
connection_messages false
"""


def mosquitto_path() -> str | None:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if os.access("/usr/sbin/mosquitto", os.X_OK) else None


def free_port(host: str = "127.0.0.1") -> int:
    """A port that was free a moment ago (bind port 0, close); callers retry if it is taken."""
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def await_port(broker: Broker, timeout: float = 10.0) -> Broker:
    """Poll until the broker accepts TCP connections, or fail if it exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        broker.check_alive()
        try:
            socket.create_connection(broker.address, timeout=0.5).close()
            return broker
        except OSError:
            time.sleep(0.02)
    broker.stop()
    raise BrokerFailed(f"{broker.name} did not accept connections on {broker.address}")


def launch_mosquitto(attempts: int = 3, persistence: str = "persistence false") -> Broker:
    """mosquitto on a free port; ``persistence`` is the config's persistence lines."""
    binary = mosquitto_path()
    assert binary
    last_error: BrokerFailed | None = None
    for _ in range(attempts):  # the port may be taken between our probe and mosquitto's bind
        port = free_port()
        handle, config_name = tempfile.mkstemp(prefix="compare-mosquitto-", suffix=".conf")
        with os.fdopen(handle, "w") as config:
            config.write(MOSQUITTO_CONFIG.format(port=port, persistence=persistence))
        os.chmod(config_name, 0o644)  # mosquitto drops root privileges after reading it
        broker = spawn("mosquitto", [binary, "-c", config_name])
        broker.address = ("127.0.0.1", port)
        broker.temp_paths.append(Path(config_name))
        try:
            return await_port(broker)
        except BrokerFailed as error:
            broker.stop()
            last_error = error
    raise last_error or BrokerFailed("mosquitto did not start")


def launch_amqtt() -> Broker:
    for _ in range(3):
        port = free_port()
        command = [
            sys.executable,
            "-m",
            "labs.bench.amqtt_server",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
        ]
        try:
            return await_listening(spawn("amqtt", command), timeout=30.0)
        except BrokerFailed as error:
            last_error = error
    raise last_error


def reference_targets(install_aedes: bool = False, say: Callable[[str], None] = print) -> list[Target]:
    """mosquitto, amqtt and aedes, each marked available or not (with the reason).

    ``install_aedes``: aedes is wanted in this run, so install it with npm if it is missing.
    """
    has_mosquitto = mosquitto_path() is not None
    has_amqtt = importlib.util.find_spec("amqtt") is not None
    has_aedes, aedes_reason = aedes.ensure_installed(say) if install_aedes else aedes.aedes_available()
    return [
        Target(
            "mosquitto",
            "reference",
            launch_mosquitto,
            has_mosquitto,
            ""
            if has_mosquitto
            else "mosquitto not found on PATH or in /usr/sbin (apt-get install mosquitto)",
        ),
        Target(
            "amqtt",
            "reference",
            launch_amqtt,
            has_amqtt,
            "" if has_amqtt else f"amqtt not installed: {AMQTT_INSTALL}",
        ),
        Target("aedes", "reference", aedes.launch_aedes, has_aedes, aedes_reason),
    ]


def versions() -> dict[str, str | None]:
    """Versions of the reference brokers, for the JSON environment block."""
    found: dict[str, str | None] = {"mosquitto": None, "amqtt": None, "aedes": None, "node": None}
    binary = mosquitto_path()
    if binary:
        output = subprocess.run([binary, "-h"], capture_output=True, text=True, timeout=10).stdout
        found["mosquitto"] = (
            output.splitlines()[0].removeprefix("mosquitto version ").strip() if output else None
        )
    with contextlib.suppress(importlib.metadata.PackageNotFoundError):
        found["amqtt"] = importlib.metadata.version("amqtt")
    node = shutil.which("node")
    if node:
        found["node"] = subprocess.run(
            [node, "--version"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        found["aedes"] = aedes.installed_version()
    return found
