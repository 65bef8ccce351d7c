"""Moved to tests/support/torch_threads.py; this name stays only for the test files being edited in parallel.

Delete it once nothing imports `tests.torch_threads` (grep -rn "tests.torch_threads" tests bench).
"""
from tests.support.torch_threads import torch_threads  # noqa: F401
