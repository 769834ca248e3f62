"""Start a server variant as a real process on a free port, and stop it by its pid."""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
import tempfile
import time
from importlib.util import find_spec
from pathlib import Path

from servers.process import parse_listening, stop_process

ROOT = Path(__file__).resolve().parents[2]
ALL_VARIANTS = ("select_srv", "poll_srv", "epoll_lt", "epoll_et", "threaded_boss_worker", "broker")


def available_variants() -> list[str]:
    return [name for name in ALL_VARIANTS if find_spec(f"servers.{name}") is not None]


class ServerProcess:
    """``python -m servers.<variant> --port 0 ...``, ready once it prints its listening line."""

    def __init__(  # type: ignore[no-untyped-def]
        self,
        variant: str,
        *args: str,
        timeout: float = 15.0,
        preexec_fn=None,
        launcher: tuple[str, ...] = (),
    ) -> None:
        """``launcher``: run ``python -m LAUNCHER... VARIANT`` instead of ``-m servers.VARIANT``."""
        self.variant = variant
        self.log = tempfile.NamedTemporaryFile(prefix=f"{variant}-", suffix=".log", delete=False)  # noqa: SIM115
        self._final_stderr: str | None = None  # kept once stop() removes the log file
        module = [*launcher, variant] if launcher else [f"servers.{variant}"]
        command = [sys.executable, "-m", *module, "--port", "0", *args]
        self.process = subprocess.Popen(
            command, cwd=ROOT, stdout=subprocess.PIPE, stderr=self.log, text=True, preexec_fn=preexec_fn
        )
        self.host, self.port = self._await_listening(timeout)

    @property
    def pid(self) -> int:
        return self.process.pid

    def _await_listening(self, timeout: float) -> tuple[str, int]:
        deadline = time.monotonic() + timeout
        assert self.process.stdout is not None
        while time.monotonic() < deadline:
            readable, _, _ = select.select([self.process.stdout], [], [], 0.1)
            if readable:
                line = self.process.stdout.readline()
                address = parse_listening(line)
                if address:
                    return address
                if not line and self.process.poll() is not None:
                    break
        self.stop()
        raise RuntimeError(f"{self.variant} did not start:\n{self.stderr()}")

    def stderr(self) -> str:
        if self._final_stderr is not None:
            return self._final_stderr
        return Path(self.log.name).read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """utime + stime of the server process, from /proc (for 'stays idle' checks)."""
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def open_fds(self) -> int:
        return len(os.listdir(f"/proc/{self.pid}/fd"))

    def thread_names(self) -> list[str]:
        """The kernel's names of the server's threads, sorted; empty once the process is gone."""
        names = []
        with contextlib.suppress(FileNotFoundError):
            for task in os.listdir(f"/proc/{self.pid}/task"):
                with contextlib.suppress(FileNotFoundError):  # a thread may end between the two calls
                    names.append(Path(f"/proc/{self.pid}/task/{task}/comm").read_text().strip())
        return sorted(names)

    def stop(self, timeout: float = 10.0) -> int | None:
        stop_process(self.process, timeout)
        if self.process.stdout is not None:
            self.process.stdout.close()
        self.log.close()
        if self._final_stderr is None:  # the test may still read it; /tmp must not keep it
            self._final_stderr = self.stderr()
            Path(self.log.name).unlink(missing_ok=True)
        return self.process.returncode
