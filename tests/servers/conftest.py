"""Fixtures that start real server processes: one per variant and module, torn down by pid."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.servers import ServerProcess, available_variants


@pytest.fixture(scope="module", params=available_variants())
def server(request: pytest.FixtureRequest) -> Iterator[ServerProcess]:
    """One running server per variant, shared by the tests of a module."""
    process = ServerProcess(request.param, "--sys-interval", "1")
    yield process
    assert process.stop() == 0, process.stderr()
