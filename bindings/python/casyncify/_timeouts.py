"""Timeouts, one rule for the whole binding (high-level API and ``lowlevel``).

A timeout is seconds or None. None and ``inf`` wait as long as it takes; below 0
is 0 (a poll, as in ``concurrent.futures``); ``nan`` is a ``ValueError``. The C
functions take milliseconds, -1 meaning no limit.
"""

from __future__ import annotations

import math

#: asyncify's "no limit" in milliseconds.
FOREVER_MS = -1
_INT64_MAX = 2**63 - 1


def seconds(name: str, timeout: float | None) -> float | None:
    """A timeout in seconds: None or ``inf`` mean forever (None), below 0 is 0, nan is refused."""
    if timeout is None:
        return None
    value = float(timeout)  # TypeError for what is not a number
    if math.isnan(value):
        raise ValueError(f"{name} must be a number of seconds or None, not nan")
    if math.isinf(value) and value > 0:
        return None
    return max(0.0, value)


def milliseconds(name: str, timeout: float | None) -> int:
    """``seconds()`` as the C functions' ``timeout_ms``: -1 for forever."""
    value = seconds(name, timeout)
    if value is None:
        return FOREVER_MS
    return min(_INT64_MAX, int(value * 1000))
