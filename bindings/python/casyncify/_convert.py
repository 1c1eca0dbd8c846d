"""Python values as the C functions take and give them: one rule each, for the
high-level API and ``lowlevel`` alike.

* **Keys** are ``str``, passed as UTF-8. Anything else is a ``TypeError``; a NUL
  is an ``InvalidArgumentError`` (C would cut the key there). Empty keys and
  lone surrogates reach the library, which refuses them with its own message.
* **Timeouts** are seconds or None. None and ``inf`` wait as long as it takes;
  below 0 is 0 (a poll, as in ``concurrent.futures``); ``nan`` is a
  ``ValueError``. The C functions take milliseconds, -1 meaning no limit.
* **Start deadlines** (``start_within``) are seconds or None (no deadline): a positive,
  finite number, rounded up to a whole millisecond (the C option is ``uint32_t``
  milliseconds, so at most 2**32-1 ms, about 49.7 days); anything else is a
  ``ValueError`` (a ``TypeError`` for what is not a number).
* **Bytes out**: a size query, then a copy (again if the value grew meanwhile).
"""

from __future__ import annotations

import ctypes
import math
import numbers
from ctypes import byref, c_size_t
from typing import TYPE_CHECKING, Callable, Optional

from . import _ffi
from ._errors import InvalidArgumentError, check

if TYPE_CHECKING:
    from _ctypes import _CArgObject

    #: ``read(buf, cap, byref(out_len)) -> status``: one C getter with its key bound.
    Reader = Callable[[Optional["ctypes.Array[ctypes.c_char]"], int, _CArgObject], int]

__all__ = ["key_bytes", "name_bytes", "seconds", "milliseconds", "deadline_ms", "copy_out", "FOREVER_MS"]

#: asyncify's "no limit" in milliseconds.
FOREVER_MS = -1
_INT64_MAX = 2**63 - 1


def key_bytes(key: str) -> bytes:
    """``key`` as the library takes it (see the module's rule for keys)."""
    if not isinstance(key, str):
        raise TypeError(f"override keys are str, not {type(key).__name__}")
    # surrogatepass: a key that is not valid UTF-8 reaches the library, which
    # refuses it with ASYNCIFY_E_INVALID_ARGUMENT and its own message.
    kb = key.encode("utf-8", "surrogatepass")
    if b"\0" in kb:
        raise InvalidArgumentError(_ffi.E_INVALID_ARGUMENT, f"casyncify: the key {key!r} contains a NUL character")
    return kb


def name_bytes(name: str, value: str) -> bytes:
    """A name the library copies (a thread prefix, a limiter's): ``str``, no NUL (C would
    cut it there), as UTF-8."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, not {type(value).__name__}")
    if "\0" in value:
        raise ValueError(f"{name} must not contain a NUL character")
    return value.encode()


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


def deadline_ms(name: str, value: float | None) -> int:
    """A start deadline in seconds as the C option's milliseconds, rounded up (0: none)."""
    if value is None:
        return 0
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of seconds or None, not {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of seconds or None, got {value}")
    # Rounded to the nanosecond first: 0.05 * 1000 is 50.00000000000001, which is 50 ms.
    ms = max(1, math.ceil(round(value * 1000, 6)))
    if ms > _ffi.UINT32_MAX:
        raise ValueError(f"{name} must be at most {_ffi.UINT32_MAX / 1000:.3f} s (2**32-1 ms), got {value}")
    return ms


def copy_out(read: Reader) -> bytes:
    """The bytes ``read`` gives: error statuses raise (``check``)."""
    n = c_size_t(0)
    status = read(None, 0, byref(n))
    while True:
        if status not in (_ffi.OK, _ffi.E_BUFFER_TOO_SMALL):
            check(status)
        if n.value == 0:
            return b""
        buf = ctypes.create_string_buffer(n.value)
        status = read(buf, n.value, byref(n))
        if status == _ffi.OK:
            return buf.raw[: n.value]
