"""Start the full broker (``python -m servers.broker``) with a config file a test writes.

The harness passes ``--port 0``, which replaces the first listener's port, so every test
gets a free port while its config file reads as a user's would.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from tests.support.servers import ServerProcess
from tests.support.waiting import wait_until


def write_config(directory: Path, text: str, name: str = "mosquitto.conf") -> Path:
    path = directory / name
    path.write_text(text)
    return path


def start_broker(directory: Path, config: str | None, *args: str) -> ServerProcess:
    """The broker on 127.0.0.1 and a free port, reading ``config`` (None: no -c at all)."""
    if config is None:
        return ServerProcess("broker", *args)
    path = write_config(directory, config)
    return ServerProcess("broker", "-c", str(path), *args)


def make_password_file(path: Path, users: dict[str, str], sha512: bool = False) -> Path:
    """A password file written by Debian's real ``mosquitto_passwd``."""
    for index, (user, password) in enumerate(users.items()):
        command = ["mosquitto_passwd", "-b"]
        if index == 0:
            command.append("-c")  # create the file with the first user
        if sha512:
            command += ["-H", "sha512"]
        subprocess.run([*command, str(path), user, password], check=True, capture_output=True)
    return path


def log_shows(broker: ServerProcess, text: str, timeout: float = 5.0) -> None:
    wait_until(lambda: text in broker.stderr(), timeout=timeout, what=f"log line containing {text!r}")
