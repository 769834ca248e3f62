"""The answer to exercise 02, as the grader's reference: my_server.py with its TODO(spare-fd) done.

Only what the TODOs name changes (the constructor keeps a spare fd, ``out_of_descriptors``
spends it); everything else is the skeleton's own code, imported from beside this file.
"""

from __future__ import annotations

import os

import my_server


class SpareFdServer(my_server.LevelTriggeredServer):
    def __init__(self, host: str, port: int) -> None:
        super().__init__(host, port)
        self.spare: int | None = os.open("/dev/null", os.O_RDONLY)  # one fd held in reserve

    def out_of_descriptors(self) -> None:
        super().out_of_descriptors()  # the skeleton's log line, at most once a second
        if self.spare is not None:
            os.close(self.spare)  # one free slot in the fd table...
            self.spare = None
        try:
            refused, _ = self.listener.accept()  # ...takes the waiting connection off the queue,
            refused.close()  # and closing it tells the client at once (FIN, or RST if it sent data)
        except OSError:
            pass  # EAGAIN: the client gave up meanwhile
        try:
            self.spare = os.open("/dev/null", os.O_RDONLY)  # ready for the next one
        except OSError:
            self.spare = None  # still full: the next EMFILE tries again


if __name__ == "__main__":
    my_server.LevelTriggeredServer = SpareFdServer  # main() builds whatever this name holds
    my_server.main()
