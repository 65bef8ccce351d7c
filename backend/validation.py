"""The one bounded conversion for numbers read from a request, shared by every reader.

Huge ints, NaN and Infinity (Python's json accepts all three) must never reach numpy, torch
or OpenCV, where they overflow or poison a computation: prompts, auto-annotate options and
routes all convert through `number`. No Flask here: RQ workers validate run options too.
"""

from __future__ import annotations

import math
from typing import Any

from backend.errors import BadRequest


def number(value: Any, what: str, low: float, high: float, *, whole: bool = False) -> float:
    """`value` as a float if it is a JSON number in [low, high] (an integer one when `whole`); else a 400.

    Range checks compare ints exactly, so a 400-digit integer is refused without the
    OverflowError float() would raise; NaN and +-Infinity are never in range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise BadRequest(f"{what} must be a number, got {type(value).__name__}", f"send a number in [{low}, {high}]")
    finite = isinstance(value, int) or math.isfinite(value)
    if not finite or not low <= value <= high:
        raise BadRequest(
            f"{what} must be a finite number in [{low}, {high}]; {_short(value)} is outside that",
            f"send a number in [{low}, {high}]",
        )
    if whole and not float(value).is_integer():
        raise BadRequest(
            f"{what} must be an integer (a whole number), got {_short(value)}", f"send an integer in [{low}, {high}]"
        )
    return float(value)


def _short(value: float) -> str:
    """The number for an error message; a 400-digit integer is shown by its length."""
    if isinstance(value, int) and abs(value) >= 10**15:
        return f"an integer of {len(str(abs(value)))} digits"
    return repr(value)
