"""The full broker's longest loop turn under a steady QoS 1 stream, store on and off.

    python -m tests.bench.broker_persistence [--rate 5000] [--seconds 10] [--repeats 3]

A publisher sends QoS 1 at ``--rate`` messages/s to a persistent subscriber (clean session
0) that acknowledges each delivery, so every message is written to the store and deleted
again. At SIGTERM the broker logs its longest loop turn (from a wait's return to the next
wait); this prints the median and the spread over the repeats, with and without
persistence, and the ratio between the two taken in the same run.
"""

from __future__ import annotations

import argparse
import re
import statistics
import tempfile
import time
from pathlib import Path

from mqtt.packets import Puback, Publish, Suback, Subscribe
from tests.fullbroker.broker_process import start_broker
from tests.fullbroker.crash_clients import Link
from tests.support.clients import RawClient

LONGEST = re.compile(r"Longest loop turn ([\d.]+) ms over (\d+) turns")


def one_run(rate: int, seconds: float, persistence: bool) -> tuple[float, int, int]:
    """(longest turn in ms, turns, messages delivered) for one broker lifetime."""
    with tempfile.TemporaryDirectory(prefix="bench-store-") as directory:
        config = "listener 1883 127.0.0.1\nallow_anonymous true\n"
        if persistence:
            config += f"persistence true\npersistence_location {directory}/\n"
        broker = start_broker(Path(directory), config)
        subscriber = RawClient(broker.port)
        subscriber.connect("bench-sub", clean_session=False)
        subscriber.send(Subscribe(1, [("bench", 1)]))
        subscriber.expect(Suback)
        publisher = Link("bench-pub")
        publisher.open(broker.port)
        delivered = 0
        started = time.monotonic()
        sent = 0
        packet_id = 0
        while time.monotonic() - started < seconds:
            due = int((time.monotonic() - started) * rate)
            while sent < due:
                packet_id = packet_id % 65535 + 1
                publisher.send(Publish("bench", b"x" * 64, 1, packet_id=packet_id))
                sent += 1
            publisher.receive()  # PUBACKs, read and dropped
            try:
                while True:
                    packet = subscriber.next_packet(timeout=0.001)
                    if isinstance(packet, Publish):
                        subscriber.send(Puback(packet.packet_id))  # type: ignore[arg-type]
                        delivered += 1
            except TimeoutError:
                pass
        broker.stop()
        match = LONGEST.search(broker.stderr())
        assert match, broker.stderr()[-2000:]
        return float(match.group(1)), int(match.group(2)), delivered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=5000)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    results: dict[bool, list[float]] = {True: [], False: []}
    for repeat in range(args.repeats):
        for persistence in (True, False):
            longest, turns, delivered = one_run(args.rate, args.seconds, persistence)
            results[persistence].append(longest)
            print(
                f"repeat {repeat + 1} store {'on ' if persistence else 'off'}: longest turn {longest:.1f} ms"
                f" over {turns} turns, {delivered} delivered ({delivered / args.seconds:.0f}/s)"
            )
    for persistence, values in results.items():
        print(
            f"store {'on ' if persistence else 'off'}: longest turn median {statistics.median(values):.1f} ms"
            f" (min {min(values):.1f}, max {max(values):.1f}) over {args.repeats} runs"
        )
    ratios = [on / off for on, off in zip(results[True], results[False], strict=True)]
    print(f"on/off ratio per run: {', '.join(f'{ratio:.2f}' for ratio in ratios)}")


if __name__ == "__main__":
    main()
