"""Moved to tests/support/fake_ls.py; this name stays only for the test files being edited in parallel.

Delete it once nothing imports `tests.reliability.fake_ls` (grep -rn "reliability.fake_ls" tests bench).
"""
from tests.support.fake_ls import FakeLabelStudioAPI  # noqa: F401
