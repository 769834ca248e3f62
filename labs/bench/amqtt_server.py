"""Serves amqtt, the asyncio Python MQTT broker (an optional extra), for ``labs/compare.py``.

Same contract as this project's servers: prints ``listening on HOST:PORT`` once the listener is
up and exits 0 on SIGTERM. Anonymous access, no $SYS and no packet logging, so the comparison
measures the broker and not its plugins. Usage: ``python -m labs.bench.amqtt_server --port P``.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any


def configurations(host: str, port: int) -> list[dict[str, Any]]:
    """amqtt >= 0.11 configures plugins by class path; older releases used 'auth' and 'plugins' lists."""
    listeners = {"default": {"type": "tcp", "bind": f"{host}:{port}", "max_connections": -1}}
    current = {
        "listeners": listeners,
        "plugins": {"amqtt.plugins.authentication.AnonymousAuthPlugin": {"allow_anonymous": True}},
    }
    legacy = {
        "listeners": listeners,
        "sys_interval": 0,
        "auth": {"allow-anonymous": True, "plugins": ["auth_anonymous"]},
        "topic-check": {"enabled": False},
    }
    return [current, legacy]


async def serve(host: str, port: int) -> None:
    from amqtt.broker import Broker

    error: Exception | None = None
    for config in configurations(host, port):
        try:
            broker = Broker(config)
            await broker.start()
            break
        except Exception as problem:  # a config this amqtt release does not understand: try the next
            error = problem
    else:
        raise SystemExit(f"amqtt would not start: {error}")
    print(f"listening on {host}:{port}", flush=True)
    stopping = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stopping.set)
    await stopping.wait()
    await broker.shutdown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    asyncio.run(serve(args.host, args.port))


if __name__ == "__main__":
    main()
