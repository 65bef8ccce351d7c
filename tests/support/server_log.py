"""Reading a served backend's log: which worker processes answered a route."""

from __future__ import annotations

import re

from backend.web.app import log as request_log


def answering_pids(log: str, route: str = "/predict") -> set[str]:
    """The pids of the worker processes that logged an answer to POST `route` (each request logs
    one line, `... INFO <pid> <logger>: POST <route> <status> ...`)."""
    pattern = rf"INFO (\d+) {re.escape(request_log.name)}: POST {re.escape(route)} \d{{3}}"
    return set(re.findall(pattern, log))
