"""Fixtures for the reliability tests: real gunicorn backends, real redis-server, a tripwire.

The backend and Redis fixtures are module-scoped ones the HTTP tests use too
(tests/support/backend_fixtures.py); the fake LS that also speaks the prediction API is
tests/support/fake_ls.py. Added here: a tripwire listener (tests/support/net.py) that proves
refused URLs were never connected to.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backend_fixtures import redis_server, start_backend  # noqa: F401 - this folder's fixtures too
from tests.support.net import Tripwire


@pytest.fixture(scope="module")
def tripwire() -> Iterator[Tripwire]:
    wire = Tripwire()
    yield wire
    wire.close()
