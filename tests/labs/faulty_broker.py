"""A deliberately faulty broker, for the tests only: the selftest sink with one fault switched on.

``--fault drop`` loses every Nth PUBLISH, ``duplicate`` delivers it twice, ``reorder`` delivers it
after the one that follows. The compare tests check that the error counters catch each exactly.
Usage: ``python tests/labs/faulty_broker.py --port 0 --fault drop --every 100``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from labs.bench.sink import Sink, serve

FAULTS = ("none", "drop", "duplicate", "reorder")


class FaultySink(Sink):
    def __init__(self, host: str, port: int, options: argparse.Namespace | None = None) -> None:
        super().__init__(host, port, options)
        self.fault = options.fault if options else "none"
        self.every = options.every if options else 100
        self.count = 0
        self.held: dict[bytes, bytes] = {}  # reorder: publisher id -> frame waiting for its successor
        self.due = 0  # faults owed: a hit on a frame that releases a held one moves to the next frame

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--fault", choices=FAULTS, default="none")
        parser.add_argument("--every", type=int, default=100, help="the fault hits every Nth PUBLISH")

    def publish(self, frames: bytes, frame_size: int) -> None:
        out: list[bytes] = []
        for start in range(0, len(frames), frame_size):
            frame = frames[start : start + frame_size]
            self.count += 1
            self.due += self.count % self.every == 0
            publisher = publisher_of(frame)
            if publisher in self.held:  # order only counts within one publisher's messages
                out += [frame, self.held.pop(publisher)]
            elif self.due and self.fault == "drop":
                self.due -= 1
            elif self.due and self.fault == "duplicate":
                self.due -= 1
                out += [frame, frame]
            elif self.due and self.fault == "reorder":
                self.due -= 1
                self.held[publisher] = frame
            else:
                out.append(frame)
        if out:
            super().publish(b"".join(out), frame_size)


def publisher_of(frame: bytes) -> bytes:
    """The publisher id field of a benchmark PUBLISH: first in the payload, after topic [and packet id]."""
    topic_length = int.from_bytes(frame[2:4], "big")  # remaining length < 128 here: one byte
    packet_id = 2 if frame[0] & 0x06 else 0
    start = 4 + topic_length + packet_id
    return frame[start : start + 4]


if __name__ == "__main__":
    serve(FaultySink)
