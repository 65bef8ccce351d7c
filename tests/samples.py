"""Moved to tests/support/samples.py; this name stays only for the test files being edited in parallel.

Delete it once nothing imports `tests.samples` (grep -rn "tests.samples" tests bench).
"""
from tests.support.samples import SAMPLES, sample  # noqa: F401
