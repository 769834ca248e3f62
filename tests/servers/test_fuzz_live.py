"""Server-level fuzzing: no generated sequence of packets, over many connections at once, may hurt a server.

Each variant gets a dedicated server with explicit, small limits. The generator
(tests/support/fuzz.py) produces a fixed set of seeds' cases: legal packets at every limit,
legal packets in illegal orders, mutated streams and hostile strings, each fragmented its own
way. They run ``CONCURRENCY`` connections at a time from one selectors loop, while a bystander
publisher and subscriber, connected first, keep a QoS 1 conversation going. Afterwards the
process and each of its worker threads must be alive, nothing may have logged a traceback,
every reply the server sent must decode (strictly, as a client decodes it), every bystander
message must have arrived exactly once and in order, and the server's fds must be back to
their baseline.

A death fails the test at once with the seed, the cases sent, the case that kills a fresh
server when the run is replayed one case at a time, and the server's stderr. For longer runs
over many seeds: ``python tests/bench/fuzz_live.py --minutes N --seed S``.
"""

from __future__ import annotations

import pytest

from tests.support.fuzz import FuzzConfig
from tests.support.fuzz_bystanders import Bystanders
from tests.support.fuzz_health import (
    explain_death,
    final_health,
    fuzz_seed,
    fuzz_server,
    malformed_report,
)
from tests.support.servers import ServerProcess, available_variants

from .helpers import fd_baseline, fds_back_to

SEEDS = (101, 102, 103)
CASES_PER_SEED = 200
# select_srv cannot watch an fd >= 1024; 40 clients stay far below that, and leave CPU to spare.
CONCURRENCY = 40


@pytest.mark.parametrize("variant", available_variants())
def test_fuzzed_server_survives_and_keeps_serving_bystanders(variant: str) -> None:
    config = FuzzConfig()
    with fuzz_server(variant, config) as server:
        baseline = fd_baseline(server)
        bystanders = Bystanders(server.port)
        try:
            bystanders.start()
            for seed in SEEDS:
                fuzz_and_check_alive(server, config, seed)
            problems = bystanders.finish()
        finally:
            bystanders.close()
        assert not problems, f"{variant} survived the fuzz but failed its bystanders: {problems}"
        death = final_health(server)
        assert death is None, f"{variant} {death} after the fuzz:\n{server.stderr()}"
        fds_back_to(server, baseline)
        assert server.stop() == 0, server.stderr()


def fuzz_and_check_alive(server: ServerProcess, config: FuzzConfig, seed: int) -> None:
    """One seed's cases; on a death, fail with the seed, the triaged case and the stderr.

    Malformed replies fail after a death is ruled out: a dying server is the bigger news.
    """
    result = fuzz_seed(server, config, seed, CASES_PER_SEED, CONCURRENCY)
    if result.death is not None:
        pytest.fail(explain_death(server, config, seed, result), pytrace=False)
    assert not result.malformed, malformed_report(server.variant, seed, result)
    assert not result.outcomes["run-timed-out"], f"seed {seed} did not finish: {dict(result.outcomes)}"
