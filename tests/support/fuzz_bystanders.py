"""Two well-behaved clients that keep a QoS 1 conversation going while a server is fuzzed.

A paho publisher publishes numbered QoS 1 messages from a thread, a steady trickle for as
long as the fuzz runs; a paho subscriber (connected first) collects them. ``finish`` stops
the publisher, sends one last marker and checks that every message arrived exactly once and
in order, and that no publish waited longer than ``GAP_LIMIT``: the server kept serving
other clients throughout. Client ids start with "bystander-", which the fuzzer never uses.
"""

from __future__ import annotations

import contextlib
import queue
import threading
import time
import uuid

from .clients import PahoClient, paho_client

WINDOW = 16  # messages the publisher may be ahead of the subscriber (stays below --max-inflight + queue)
PACE = 0.01  # seconds between publishes: a steady trickle that leaves the CPU to the fuzz
GAP_LIMIT = 5.0  # seconds: a publish (or the subscriber) stalled longer means the server stalled


class Bystanders:
    def __init__(self, port: int) -> None:
        tag = uuid.uuid4().hex[:10]
        self.topic = f"bystander/{tag}"
        self.subscriber: PahoClient = paho_client(port, client_id=f"bystander-sub-{tag}")
        self.subscriber.subscribe(self.topic, qos=1)
        self.publisher: PahoClient = paho_client(port, client_id=f"bystander-pub-{tag}")
        self.published: list[bytes] = []
        self.errors: list[str] = []
        self.longest_gap = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._publish_continuously, name="bystander", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _publish_continuously(self) -> None:
        last = time.monotonic()  # when the last publish was acknowledged
        try:
            while not self._stop.is_set():
                if self._ahead() < WINDOW:
                    self._publish_one(f"bystander {len(self.published)}".encode())
                    now = time.monotonic()
                    self.longest_gap, last = max(self.longest_gap, now - last), now
                elif time.monotonic() - last > GAP_LIMIT:
                    self.errors.append(f"the subscriber stayed {WINDOW} messages behind for {GAP_LIMIT} s")
                    return
                self._stop.wait(PACE)  # pacing only; every wait for the server has a deadline
        except Exception as error:  # reported by finish(), on the test's thread
            self.errors.append(f"publisher failed after {len(self.published)} messages: {error!r}")

    def _ahead(self) -> int:
        """Messages published but not yet received (the subscriber's queue is read only at the end)."""
        return len(self.published) - self.subscriber.messages.qsize()

    def _publish_one(self, payload: bytes) -> None:
        info = self.publisher.client.publish(self.topic, payload, qos=1)
        info.wait_for_publish(timeout=GAP_LIMIT)
        if not info.is_published():
            raise TimeoutError(f"no PUBACK within {GAP_LIMIT} s for {payload!r}")
        self.published.append(payload)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=2 * GAP_LIMIT)

    def finish(self) -> list[str]:
        """Stop publishing; return what went wrong (nothing, if the bystanders were served)."""
        self.stop()
        if self.errors:
            return self.errors
        marker = f"bystander final {uuid.uuid4().hex}".encode()
        try:
            self._publish_one(marker)
            received = self._received_until(marker)
        except (TimeoutError, queue.Empty) as error:
            return [f"the final bystander message did not arrive: {error!r}"]
        expected = self.published[:-1]
        if received != expected:
            return [describe_difference(expected, received)]
        if len(expected) < 10:
            return [f"the bystander publisher managed only {len(expected)} messages while fuzzing"]
        return []

    def _received_until(self, marker: bytes) -> list[bytes]:
        payloads = []
        while (message := self.subscriber.next_message(timeout=GAP_LIMIT)).payload != marker:
            payloads.append(message.payload)
        return payloads

    def close(self) -> None:
        self._stop.set()
        for client in (self.publisher, self.subscriber):
            with contextlib.suppress(Exception):  # the server may be dead; closing must not mask that
                client.close()
        self._thread.join(timeout=2 * GAP_LIMIT)  # a publish waiting for its PUBACK ends with the client


def describe_difference(expected: list[bytes], received: list[bytes]) -> str:
    missing = sorted(set(expected) - set(received))
    duplicated = sorted({payload for payload in received if received.count(payload) > 1})
    reordered = not missing and not duplicated
    return (
        f"bystander subscriber got {len(received)} of {len(expected)} messages: "
        f"missing {missing[:5]}, duplicated {duplicated[:5]}, reordered {reordered}"
    )
