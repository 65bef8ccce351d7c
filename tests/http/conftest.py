"""HTTP test fixtures: a fake Label Studio serving the sample tasks' images, real gunicorn backends, real Redis.

The parts live in tests/support (fake_ls, samples, and backend_fixtures: the module-scoped
Redis and backend factory); one backend process per module where possible.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.backend_fixtures import redis_server, start_backend  # noqa: F401 - this folder's fixtures
from tests.support.fake_ls import FakeLabelStudio
from tests.support.samples import SAMPLE_IMAGES


@pytest.fixture(scope="module")
def fake_ls() -> Iterator[FakeLabelStudio]:
    ls = FakeLabelStudio()
    for path, image in SAMPLE_IMAGES.items():
        ls.add(path, image)
    yield ls
    ls.close()
