"""Brokers started with persistence on, for the ``qos1-persist`` scenario.

Only two targets are configured this way: this project's full broker (``servers.broker -c
FILE``, which reads mosquitto.conf keys) and mosquitto. Each run gets a fresh temporary
directory for the store, removed when the broker stops, so no run inherits another's sessions.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from .references import launch_mosquitto
from .targets import FULL_BROKER_LOGGING, Broker, Target, await_listening, spawn

PERSISTENT_TARGETS = ("broker", "mosquitto")
MOSQUITTO_USER = "mosquitto"  # mosquitto started as root drops to this user before opening its store


def store_directory(name: str) -> Path:
    """A fresh directory for one broker's store, writable by the user the broker ends up as."""
    directory = Path(tempfile.mkdtemp(prefix=f"compare-{name}-store-"))
    if os.geteuid() == 0 and name == "mosquitto":
        with contextlib.suppress(LookupError, OSError):  # no such user: mosquitto stays root
            shutil.chown(directory, user=MOSQUITTO_USER)
    return directory


def launch_broker_persistent(server_args: list[str]) -> Broker:
    """``servers.broker`` with a config file that turns persistence on (the flags pick the port)."""
    directory = store_directory("broker")
    config = directory / "broker.conf"
    config.write_text(f"persistence true\npersistence_location {directory}/\n{FULL_BROKER_LOGGING}")
    command = [sys.executable, "-m", "servers.broker", "--host", "127.0.0.1", "--port", "0"]
    command += ["-c", str(config)]  # explicit --host/--port win over the file's listener
    broker = spawn("broker", [*command, *server_args])
    broker.temp_dirs.append(directory)  # stop() removes it even when start-up fails
    return await_listening(broker)


def launch_mosquitto_persistent() -> Broker:
    """mosquitto saving its store every second (``autosave_interval 1``), as the scenario asks."""
    directory = store_directory("mosquitto")
    lines = f"persistence true\npersistence_location {directory}/\nautosave_interval 1"
    try:
        broker = launch_mosquitto(persistence=lines)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    broker.temp_dirs.append(directory)
    return broker


def with_persistence(target: Target, server_args: list[str]) -> Target:
    """The target, with a persistent launcher when it is one we know how to configure."""
    launchers: dict[str, Callable[[], Broker]] = {
        "broker": lambda: launch_broker_persistent(server_args),
        "mosquitto": launch_mosquitto_persistent,
    }
    if target.kind not in ("project", "reference") or target.name not in launchers:
        return target
    return dataclasses.replace(target, launch_persistent=launchers[target.name])
