"""Lab 07's thread-per-connection holder: one thread blocked in recv() on each accepted socket.

This is the model the notes' Java harness used (a thread per client), reduced to its cost:
accept N connections and park one thread in a blocking recv() on each. run.py measures it
from outside, through /proc/PID/status and /proc/PID/smaps.
"""

from __future__ import annotations

import argparse
import socket
import threading


def park(sock: socket.socket) -> None:
    """Block in recv() until the peer closes: what a thread per idle client spends its life doing."""
    while sock.recv(4096):
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--connections", type=int, required=True, help="how many to accept")
    parser.add_argument("--stack-size", type=int, default=0, help="threading.stack_size(); 0 = default")
    args = parser.parse_args()
    # 0 keeps the default: glibc then reserves RLIMIT_STACK (ulimit -s, 8 MiB) per thread.
    # Careful: threading.stack_size() with no argument does not just read the size, it sets 0.
    threading.stack_size(args.stack_size)
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.connections)
    host, port = listener.getsockname()
    print(f"listening on {host}:{port}", flush=True)
    for _ in range(args.connections):
        sock, _ = listener.accept()
        threading.Thread(target=park, args=(sock,), daemon=True).start()
    print(f"holding {args.connections} connections, one thread each", flush=True)
    threading.Event().wait()  # until SIGTERM


if __name__ == "__main__":
    main()
