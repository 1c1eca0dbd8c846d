"""Limiters (a cap and a rate per model, shared by every pool), the limits of a call
(its limiter, or what picks one in the caller's context, and its start deadline),
and latency figures.

A ``Limiter`` owns one C ``asyncify_limiter``, freed with the object (tasks that
hold it keep their own reference). ``close()`` only refuses new calls, so a call is
submitted with the limiter's pointer without a lock: the memory lives as long as
the submitting thread holds the object. ``KeyedLimiter`` keeps one ``Limiter`` per value
of a key read in the caller's context (an override, ``dspy.settings.lm``...).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import numbers
import threading
from collections.abc import Hashable
from typing import TYPE_CHECKING, Any, Callable, Optional, Union

from . import _ffi, lowlevel
from ._convert import deadline_ms, name_bytes
from ._errors import ForkedError, ShutDownError
from ._ffi import fast, plib
from ._lifecycle import life
from ._overrides import get

if TYPE_CHECKING:
    from _ctypes import CFuncPtr, _CArgObject

__all__ = [
    "Latency", "LimiterStats", "Limiter", "KeyedLimiter", "LimiterChoice", "CallLimits", "submit_limited",
]  # fmt: skip

_KEEP: Any = object()


@dataclasses.dataclass(frozen=True)
class Latency:
    """Queue-wait or run-time figures (``asyncify_latency``), in seconds.

    Percentiles come from the library's histogram (within a few percent of the
    values recorded); ``count``, ``max`` and ``total`` are exact once the pool is quiet.
    """

    count: int
    p50: float
    p90: float
    p99: float
    max: float
    total: float

    @property
    def mean(self) -> float:
        """``total / count`` (0.0 when nothing was recorded)."""
        return self.total / self.count if self.count else 0.0

    @classmethod
    def from_c(cls, c: _ffi.Latency) -> Latency:
        """From the C struct (nanoseconds)."""
        return cls(c.count, c.p50_ns / 1e9, c.p90_ns / 1e9, c.p99_ns / 1e9, c.max_ns / 1e9, c.sum_ns / 1e9)


@dataclasses.dataclass(frozen=True)
class LimiterStats:
    """A limiter's settings and counters (``asyncify_limiter_stats``), with the queue wait
    (submit, the wait for the limiter included, to the start) and run time of its calls
    on pools that record latency (``count`` 0 when none does)."""

    name: str
    max_running: int  # the cap (UNBOUNDED: none; 0: paused)
    rate: float  # starts per second (0.0: no rate cap)
    burst: int
    waiting: int  # calls waiting to be admitted
    running: int  # places held: admitted calls not started yet, and calls running
    admitted: int
    expired: int  # calls whose start deadline passed while they waited for this limiter
    cancelled_waiting: int  # calls cancelled while they waited for this limiter
    queue_wait: Latency
    run: Latency


def _cap(max_running: int | None) -> int:
    if max_running is None:
        return _ffi.UINT32_MAX
    if isinstance(max_running, bool) or not isinstance(max_running, int):
        raise TypeError(f"max_running must be an int or None, not {type(max_running).__name__}")
    if not 0 <= max_running <= _ffi.UINT32_MAX:
        raise ValueError(f"max_running must be between 0 and {_ffi.UINT32_MAX} (UNBOUNDED), got {max_running}")
    return max_running


def _rate(rate: float | None) -> float:
    if rate is None:
        return 0.0
    if isinstance(rate, bool) or not isinstance(rate, numbers.Real):
        raise TypeError(f"rate must be a number of starts per second or None, not {type(rate).__name__}")
    value = float(rate)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"rate must be a finite number of starts per second, 0 or more (or None), got {rate}")
    return value


def _burst(burst: int) -> int:
    if isinstance(burst, bool) or not isinstance(burst, int):
        raise TypeError(f"burst must be an int, not {type(burst).__name__}")
    if not 1 <= burst <= _ffi.UINT32_MAX:
        raise ValueError(f"burst must be between 1 and {_ffi.UINT32_MAX}, got {burst}")
    return burst


class Limiter:
    """At most ``max_running`` calls holding this limiter run at once, and with a
    ``rate`` at most that many start per second (a token bucket of ``burst`` tokens,
    full at first), across every pool and thread: one per model, provider or tenant,
    on top of each pool's own limit.

    ``max_running``: None (or ``UNBOUNDED``) is no cap, 0 pauses it. ``rate``: None or
    0 is no rate cap. A call with a limiter waits, FIFO among that limiter's calls and
    without holding a pool slot, until the limiter admits it, then enters its pool's
    queue; it holds its place until its function returns (an abandoned one too).
    Cancelling a waiting call: it never runs. ``set()`` changes the cap and rate at
    once (raising admits waiting calls at once). ``close()`` (or leaving ``with``)
    refuses new calls; the C limiter is freed with the object, and calls already
    made with it keep it alive.
    """

    def __init__(self, max_running: int | None = None, *, rate: float | None = None, burst: int = 1, name: str = ""):
        cap, per_s, size = _cap(max_running), _rate(rate), _burst(burst)
        opts = lowlevel.limiter_options_init()
        opts.name = name_bytes("name", name)
        opts.max_running = cap
        opts.rate_per_s = per_s
        opts.burst = size
        self._name = name
        self._max_running, self._rate, self._burst = cap, per_s, size
        # set() writes all three settings, in C and here; stats() reads them together.
        self._lock = threading.Lock()
        self._generation = life.fork_generation
        #: The C limiter, from here until the object goes (``__del__`` frees it).
        self._ptr: int | None = lowlevel.limiter_new(opts)
        self._closed = False

    def _pointer(self) -> int:
        """The C limiter, for a call or a setting; ``ShutDownError`` once closed. No
        lock: the memory lives as long as the caller holds this object."""
        if self._generation != life.fork_generation:
            raise ForkedError(_ffi.E_FORKED, "casyncify: this Limiter was created by the parent process before fork()")
        ptr = self._ptr
        if ptr is None or self._closed:
            raise ShutDownError(_ffi.E_SHUT_DOWN, f"casyncify: the limiter {self._name!r} is closed")
        return ptr

    @property
    def name(self) -> str:
        """The name given (shown in stats, messages and ``ExpiredError``)."""
        return self._name

    @property
    def max_running(self) -> int:
        """The cap (``UNBOUNDED``: none; 0: paused)."""
        return self._max_running

    @property
    def rate(self) -> float:
        """Starts per second (0.0: no rate cap)."""
        return self._rate

    @property
    def burst(self) -> int:
        """How many may start at once after a quiet spell, with a rate."""
        return self._burst

    @property
    def closed(self) -> bool:
        """Whether ``close()`` ran (new calls with it raise ``ShutDownError``)."""
        return self._closed

    def set(self, *, max_running: int | None = _KEEP, rate: float | None = _KEEP, burst: int = _KEEP) -> None:
        """Change the cap, the rate or the burst (those not given stay), at once for every
        pool: raising the cap or the rate admits waiting calls at once; lowering them
        interrupts nothing. ``max_running=0`` pauses the limiter."""
        with self._lock:
            ptr = self._pointer()
            cap = self._max_running if max_running is _KEEP else _cap(max_running)
            per_s = self._rate if rate is _KEEP else _rate(rate)
            size = self._burst if burst is _KEEP else _burst(burst)
            lowlevel.limiter_set(ptr, cap, per_s, size)
            self._max_running, self._rate, self._burst = cap, per_s, size

    def stats(self) -> LimiterStats:
        """The limiter's counters now, and the latency of its calls."""
        with self._lock:  # the settings as one set() left them, in C and here
            ptr = self._pointer()
            s = lowlevel.limiter_stats_get(ptr)
            queue_wait = lowlevel.limiter_latency(ptr, _ffi.LATENCY_QUEUE_WAIT)
            run = lowlevel.limiter_latency(ptr, _ffi.LATENCY_RUN)
            rate, burst = self._rate, self._burst
        return LimiterStats(
            self._name, s.max_running, rate, burst, s.waiting, s.running, s.admitted, s.expired,
            s.cancelled_waiting, Latency.from_c(queue_wait), Latency.from_c(run),
        )  # fmt: skip

    def close(self) -> None:
        """Refuse new calls with this limiter: they raise ``ShutDownError``. Calls made
        with it keep it (and their place) until they are done; the C limiter is freed
        with this object. Idempotent."""
        self._closed = True

    def __enter__(self) -> Limiter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __copy__(self) -> Limiter:
        raise TypeError("a casyncify.Limiter cannot be copied (it owns its C limiter): share the object")

    def __deepcopy__(self, memo: Any) -> Limiter:
        return self.__copy__()

    def __del__(self, _life: Any = life, _free: Any = plib.asyncify_limiter_free) -> None:
        # Globals bound as defaults: this may run during interpreter teardown, where
        # it frees nothing once the binding's exit is done (the process frees all).
        ptr = getattr(self, "_ptr", None)
        if ptr and not _life.finalized and self._generation == _life.fork_generation:
            self._ptr = None
            _free(ptr)

    def __repr__(self) -> str:
        if self._closed:
            return f"<casyncify.Limiter {self._name!r} closed>"
        cap = "None" if self._max_running == _ffi.UINT32_MAX else str(self._max_running)
        rate = f" rate={self._rate:g}/s burst={self._burst}" if self._rate else ""
        return f"<casyncify.Limiter {self._name!r} max_running={cap}{rate}>"


class KeyedLimiter:
    """One ``Limiter`` per distinct value of a key, chosen at call time in the caller's
    context: pass it as ``limiter=`` and each call holds the limiter of the value its
    caller sees, without naming it.

    ``key`` is an override key (a ``str``: its value is ``casyncify.get(key)``) or a
    function of the context called with no argument (``lambda: dspy.settings.lm.model``,
    any ``ContextVar``...), in the caller's context. A call whose key value is None has
    no limiter. Each limiter is made on first use of its value by ``make(value)``, or
    with ``max_running``, ``rate`` and ``burst`` (then named ``str(value)``); values
    must be hashable, and the limiters are kept until ``close()``.
    """

    def __init__(
        self,
        key: str | Callable[[], Hashable | None],
        /,
        make: Callable[[Any], Limiter] | None = None,
        *,
        max_running: int | None = None,
        rate: float | None = None,
        burst: int = 1,
    ):
        if isinstance(key, str):
            name = key

            def read_key() -> Hashable | None:
                value: Hashable | None = get(name)
                return value

            self._key: Callable[[], Hashable | None] = read_key
        elif callable(key):
            self._key = key
        else:
            raise TypeError(f"key must be an override key (str) or a function, not {type(key).__name__}")
        if make is not None:
            if not callable(make):
                raise TypeError(f"make must be a function of the key value, not {type(make).__name__}")
            if (max_running, rate, burst) != (None, None, 1):
                raise TypeError("give make or max_running/rate/burst, not both")
        else:  # checked now, not at the first call
            _cap(max_running), _rate(rate), _burst(burst)
        self._make = make
        self._limits = (max_running, rate, burst)
        self._by_value: dict[Hashable, Limiter] = {}

    def __call__(self) -> Limiter | None:
        """The limiter of the key value the current context sees (None: no limiter)."""
        value = self._key()
        if value is None:
            return None
        return self[value]

    def __getitem__(self, value: Hashable) -> Limiter:
        """The limiter of ``value`` (made on first use)."""
        try:
            lim = self._by_value.get(value)
        except TypeError:
            raise TypeError(f"casyncify.KeyedLimiter: the key value {value!r} is not hashable") from None
        if lim is not None and not lim.closed and lim._generation == life.fork_generation:
            return lim
        # No lock: making one runs user code (make). A racing thread's limiter loses
        # the setdefault and is closed at once (nothing was submitted with it).
        fresh = self._new(value)
        if lim is not None:  # closed, or the parent's (after fork): replace it,
            # unless a racing thread did already (then keep the one it stored)
            with contextlib.suppress(KeyError):
                if self._by_value[value] is lim:
                    del self._by_value[value]
        lim = self._by_value.setdefault(value, fresh)
        if lim is not fresh:
            fresh.close()
        return lim

    def _new(self, value: Hashable) -> Limiter:
        if self._make is not None:
            lim = self._make(value)
            if not isinstance(lim, Limiter):
                raise TypeError(f"make({value!r}) must return a casyncify.Limiter, not {type(lim).__name__}")
            return lim
        max_running, rate, burst = self._limits
        return Limiter(max_running, rate=rate, burst=burst, name=str(value))

    def limiters(self) -> dict[Hashable, Limiter]:
        """The limiters made so far, by key value (a copy)."""
        return dict(self._by_value)

    def close(self) -> None:
        """Close every limiter made so far (calls made with them keep theirs); the next
        call makes new ones."""
        for lim in list(self._by_value.values()):
            lim.close()
        self._by_value.clear()

    def __repr__(self) -> str:
        return f"<casyncify.KeyedLimiter of {len(self._by_value)} limiters>"


#: What ``limiter=`` accepts: a limiter, a function of the caller's context that
#: returns one (or None: no limiter), such as a ``KeyedLimiter``, or None.
LimiterChoice = Union[Limiter, Callable[[], Optional[Limiter]], None]


class CallLimits:
    """What a call waits for: its limiter (or the function that picks one, in the
    caller's context) and its start deadline (``ms``, the C value)."""

    __slots__ = ("limiter", "picker", "start_within", "ms")

    def __init__(self, limiter: LimiterChoice, start_within: float | None):
        self.ms = deadline_ms("start_within", start_within)
        self.start_within = float(start_within) if start_within is not None else 0.0
        self.limiter: Limiter | None = None
        self.picker: Callable[[], Limiter | None] | None = None
        if isinstance(limiter, Limiter):
            self.limiter = limiter
        elif callable(limiter):
            self.picker = limiter
        elif limiter is not None:
            raise TypeError(
                f"limiter must be a casyncify.Limiter, a function returning one, or None, not {type(limiter).__name__}"
            )

    @classmethod
    def of(cls, limiter: LimiterChoice, start_within: float | None) -> CallLimits | None:
        """The limits, or None for a call with neither (the plain path)."""
        if limiter is None and start_within is None:
            return None
        return cls(limiter, start_within)

    def pick(self) -> Limiter | None:
        """The limiter of a call made now, in the caller's context."""
        if self.picker is None:
            return self.limiter
        lim = self.picker()
        if lim is not None and not isinstance(lim, Limiter):
            raise TypeError(f"the limiter function returned {type(lim).__name__}, not a casyncify.Limiter or None")
        return lim


def submit_limited(
    work: CFuncPtr,
    cid: int,
    opts: _ffi.SubmitOptions,
    opts_ref: _CArgObject,
    handle_ref: _CArgObject,
    lim: Limiter | None,
    ms: int,
) -> int:
    """``asyncify_submit`` of the call ``cid`` with ``opts`` (whose other fields are set)
    plus this limiter and deadline, which are cleared again afterwards; the status."""
    opts.start_within_ms = ms
    try:
        if lim is None:
            status: int = fast.asyncify_submit(work, cid, opts_ref, handle_ref)
            return status
        # No lock: the limiter's memory lives as long as `lim` (see Limiter._ptr). A
        # close() racing this submit may let it in, even once close() has returned.
        opts.limiter = lim._pointer()
        status = fast.asyncify_submit(work, cid, opts_ref, handle_ref)
        return status
    finally:
        opts.limiter = None
        opts.start_within_ms = 0
