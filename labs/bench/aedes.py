"""aedes, the Node.js MQTT broker, as a reference target: find it, install it on first use, start it.

aedes lives in ``labs/out/node`` (git-ignored), never in the system's node modules. When node is
on PATH and aedes is missing, ``ensure_installed`` runs ``npm install --prefix labs/out/node aedes``
once; if npm fails, aedes is reported as "not available" with npm's reason.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

from .targets import REPO_ROOT, Broker, await_listening, spawn

AEDES_PREFIX = REPO_ROOT / "labs" / "out" / "node"
AEDES_INSTALL = f"npm install --prefix {AEDES_PREFIX.relative_to(REPO_ROOT)} aedes"
INSTALL_TIMEOUT = 300.0
SCRIPT = Path(__file__).with_name("aedes_server.js")


def aedes_env() -> dict[str, str]:
    paths = [str(AEDES_PREFIX / "node_modules"), os.environ.get("NODE_PATH", "")]
    return {**os.environ, "NODE_PATH": os.pathsep.join(path for path in paths if path)}


def aedes_available() -> tuple[bool, str]:
    """Whether node can load aedes, and why not."""
    node = shutil.which("node")
    if not node:
        return False, "node is not on PATH"
    probe = subprocess.run(
        [node, "-e", "require.resolve('aedes')"], env=aedes_env(), capture_output=True, timeout=20
    )
    return probe.returncode == 0, "" if probe.returncode == 0 else f"aedes not installed: {AEDES_INSTALL}"


def ensure_installed(say: Callable[[str], None]) -> tuple[bool, str]:
    """aedes's availability, installing it with npm first when node is here and aedes is not."""
    available, reason = aedes_available()
    npm = shutil.which("npm")
    if available or not shutil.which("node") or not npm:
        return available, reason if npm or available else f"{reason}; npm is not on PATH"
    say(f"aedes is not installed: running {AEDES_INSTALL}")
    try:
        result = subprocess.run(
            [npm, "install", "--prefix", str(AEDES_PREFIX), "--no-audit", "--no-fund", "aedes"],
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=INSTALL_TIMEOUT,
        )
    except (OSError, subprocess.TimeoutExpired) as error:
        return False, f"{AEDES_INSTALL} failed: {error}"
    if result.returncode != 0:
        return False, f"{AEDES_INSTALL} failed (exit {result.returncode}): {npm_reason(result.stderr)}"
    return aedes_available()


def npm_reason(output: str) -> str:
    """The useful part of npm's error output: its error code and the first message with "Error"."""
    messages = [
        line.removeprefix("npm error").strip()
        for line in output.splitlines()
        if line.startswith("npm error") and not line.removeprefix("npm error").startswith("    at ")
    ]
    code = next((message for message in messages if message.startswith("code ")), "")
    error = next((message for message in messages if "Error" in message), messages[-1] if messages else "")
    return "; ".join(text for text in (code, error) if text)[:300] or output.strip()[-300:]


def launch_aedes() -> Broker:
    node = shutil.which("node")
    assert node
    return await_listening(spawn("aedes", [node, str(SCRIPT), "127.0.0.1", "0"], env=aedes_env()))


def installed_version() -> str | None:
    package = AEDES_PREFIX / "node_modules" / "aedes" / "package.json"
    return json.loads(package.read_text()).get("version") if package.exists() else None
