"""Job bodies for the worker-mechanics tests: they leave a trace in a file, nothing else."""

import os
import time


def slow_append(path: str, seconds: float) -> str:
    with open(path, "a") as f:
        f.write(f"start {os.getpid()}\n")
    time.sleep(seconds)
    with open(path, "a") as f:
        f.write(f"end {os.getpid()}\n")
    return "ok"
