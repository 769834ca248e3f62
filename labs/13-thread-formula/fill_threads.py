"""Lab 13's child: start threads with a given stack size until the address space runs out.

run.py starts it as ``MALLOC_ARENA_MAX=1 prlimit --as=LIMIT -- python fill_threads.py
--stack-size S``. It measures its own VmSize first (the notes' "heap + reserved OS memory"),
then starts threads that block on one Event until ``Thread.start()`` fails, looks at why,
releases them all, and prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import mmap
import os
import resource
import threading
import time

KIB = 1024
# Reserved before the baseline and freed once creation has failed: with the address space
# full, even reading /proc/self/status may fail to allocate, so this makes room to measure.
BALLAST = 4 << 20


def status_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise KeyError(field)


def mapping_count() -> int:
    with open("/proc/self/maps") as maps:
        return sum(1 for _ in maps)


def one_more_stack(size: int) -> str:
    """Try to map what pthread_create maps for a stack: 'mapped', or why not (errno)."""
    try:
        mmap.mmap(-1, size).close()
    except OSError as error:
        return f"{error.errno} {os.strerror(error.errno)}"
    except MemoryError:
        return "MemoryError"
    return "mapped"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack-size", type=int, required=True, help="bytes, for threading.stack_size()")
    args = parser.parse_args()
    ballast = mmap.mmap(-1, BALLAST)
    threading.stack_size(args.stack_size)  # glibc maps this much per thread, plus a guard page
    baseline_kib, baseline_rss_kib, baseline_maps = status_kib("VmSize"), status_kib("VmRSS"), mapping_count()
    stop = threading.Event()
    threads: list[threading.Thread] = []
    started = time.monotonic()
    stopped_by = ""
    while not stopped_by:
        thread = threading.Thread(target=stop.wait, daemon=True)
        try:
            thread.start()  # pthread_create: mmap(stack + guard), then clone()
        except RuntimeError as error:
            stopped_by = f"RuntimeError: {error}"
        except MemoryError:
            stopped_by = "MemoryError"
        else:
            threads.append(thread)
    seconds = time.monotonic() - started
    mmap_answer = one_more_stack(args.stack_size)
    ballast.close()
    failure_kib = status_kib("VmSize") + BALLAST // KIB
    failure_rss_kib = status_kib("VmRSS")  # the ballast was never touched: no RSS to add back
    failure_maps = mapping_count() + 1  # + the ballast, counted in the baseline
    stop.set()
    for thread in threads:
        thread.join()
    limit = resource.getrlimit(resource.RLIMIT_AS)[0]
    result = {
        "limit_kib": limit // KIB if limit != resource.RLIM_INFINITY else 0,
        "stack_kib": args.stack_size // KIB,
        "baseline_kib": baseline_kib,
        "baseline_rss_kib": baseline_rss_kib,
        "threads": len(threads),
        "stopped_by": stopped_by,
        "one_more_stack": mmap_answer,
        "failure_kib": failure_kib,
        "failure_rss_kib": failure_rss_kib,
        "mappings_added": failure_maps - baseline_maps,
        "joined": sum(1 for thread in threads if not thread.is_alive()),
        "seconds": round(seconds, 2),
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
