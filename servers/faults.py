"""The fault barrier's log: a bug met while handling one client is reported, not fatal.

Every driver wraps its per-connection work in ``try``/``except Exception`` and hands what it
catches to ``Broker.contain``, which closes that one connection and calls ``FaultLog.report``.
A fuzzer can trigger the same bug thousands of times a second, so the log is rate-limited:
the first few faults of each minute are logged with their traceback, the rest only counted,
and the count is logged when the next minute's first fault arrives (``$SYS/broker/faults``
always has the total).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mqtt.connection import Connection

FULL_REPORTS_PER_WINDOW = 5
WINDOW_SECONDS = 60.0


class FaultLog:
    """Logs contained faults with client id and peer; rate-limited per one-minute window."""

    def __init__(
        self,
        logger: logging.Logger,
        full_reports: int = FULL_REPORTS_PER_WINDOW,
        window: float = WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.full_reports = full_reports
        self.window = window
        self.clock = clock
        self.window_start = clock()
        self.in_window = 0  # faults seen in the current window
        self.total = 0

    def report(self, connection: Connection | None, error: Exception) -> None:
        """Log one contained fault: in full while the window allows, otherwise just count it."""
        now = self.clock()
        if now - self.window_start >= self.window:
            self._summarise_window()
            self.window_start, self.in_window = now, 0
        self.in_window += 1
        self.total += 1
        if self.in_window > self.full_reports:
            return
        who = "no connection (broker timers)"
        if connection is not None:
            who = f"client_id={connection.client_id} peer={connection.peer}"
        self.logger.error(
            "fault contained (%d so far): %s: %s; closed %s; the server goes on",
            self.total,
            type(error).__name__,
            error,
            who,
            exc_info=(type(error), error, error.__traceback__),
        )
        if self.in_window == self.full_reports:
            self.logger.error(
                "fault log: %d faults in %.0f s; counting further ones without tracebacks",
                self.full_reports,
                self.window,
            )

    def _summarise_window(self) -> None:
        suppressed = self.in_window - self.full_reports
        if suppressed > 0:
            self.logger.error(
                "fault log: %d more faults in the last %.0f s (tracebacks suppressed)",
                suppressed,
                self.window,
            )
