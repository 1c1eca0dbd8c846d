"""DSPy's ``asyncify`` and ``streamify`` on casyncify pools.

    import casyncify.integrations.dspy as casyncify_dspy

    casyncify_dspy.install()      # dspy.asyncify(program) now runs on casyncify
    ...
    casyncify_dspy.uninstall()    # DSPy's own asyncify again

``install()`` replaces DSPy's ``asyncify`` function wherever DSPy has bound it: the
``dspy.asyncify`` attribute, ``dspy.utils.asyncify.asyncify`` and the module global
that ``dspy.streamify`` calls for a synchronous program (``dspy.streaming.streamify``),
plus any other ``dspy.*`` module that imported it by name. ``uninstall()`` puts DSPy's
function back where ours still is. Wrappers made while installed stay casyncify's.

The limit follows DSPy's setting: each call reads ``dspy.settings.async_max_workers``
as the calling task sees it (``dspy.configure(async_max_workers=N)`` or a scoped
``dspy.context(async_max_workers=N)``) and runs on the casyncify pool of that limit,
made on first use and shared by every call with the same value. A scoped value thus
limits its own calls only: it never resizes the pool of anyone else's (DSPy's one
global ``CapacityLimiter`` is resized by each call instead).

A cap and a rate per LM: ``limiter_per_lm(max_running=4, rate=10)`` is a
``casyncify.KeyedLimiter`` that gives each call the limiter of the LM its caller's
DSPy settings hold (``dspy.settings.lm``, as ``dspy.context(lm=...)`` scopes it),
one per model name, so calls made under ``with dspy.context(lm=gpt4)`` share
gpt-4's cap without naming it. Pass it as ``limiter=`` to ``casyncify.asyncify``,
to ``asyncify`` here, or to ``install()`` for every ``dspy.asyncify`` call:

    per_lm = casyncify_dspy.limiter_per_lm(max_running=4, rate=10)
    casyncify_dspy.install(limiter=per_lm, start_within=30)

The rest is casyncify's contract: the caller's whole ``contextvars`` context (DSPy's
``dspy.context`` overrides included) is copied at call time; cancelling the awaiting
task (asyncio) or cancel scope (trio, AnyIO) cancels a queued call or abandons a
running one; inside a call ``anyio.from_thread`` works, which is how
``dspy.streamify`` gets status messages and LM chunks out of a synchronous program,
under asyncio and under AnyIO's trio backend alike.
"""

from __future__ import annotations

import functools
import math
import sys
import threading
from collections.abc import Awaitable, Hashable
from types import ModuleType
from typing import Any, Callable, Optional

from .._lifecycle import life
from .._limits import CallLimits, KeyedLimiter, Limiter, LimiterChoice
from .._pools import UNBOUNDED, Pool, is_async_callable
from .._pools import asyncify as casyncify_asyncify

__all__ = ["install", "uninstall", "installed", "asyncify", "pool_for", "limiter_per_lm", "model_of"]

#: Where DSPy binds its asyncify (module name, attribute), besides any other
#: ``dspy.*`` module found holding the very function at install time.
KNOWN_BINDINGS = (
    ("dspy", "asyncify"),
    ("dspy.utils.asyncify", "asyncify"),
    ("dspy.streaming.streamify", "asyncify"),
)

_pools: dict[Any, Pool] = {}  # async_max_workers value -> its pool (made on first use)
_installed: list[tuple[ModuleType, str, Callable[..., Any]]] = []  # (module, attribute, DSPy's function) replaced
_install_lock = threading.Lock()  # install()/uninstall() only: never held while a call runs
#: The limiter and start deadline of install(), for asyncify(program) calls that give none.
_installed_limits: tuple[LimiterChoice, Optional[float]] = (None, None)
_DEFAULT: Any = object()


def _limit(value: Any) -> int:
    """A pool limit for DSPy's ``async_max_workers``: an int >= 1, or inf/None for no limit."""
    if value is None or (isinstance(value, float) and math.isinf(value) and value > 0):
        return UNBOUNDED
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"dspy async_max_workers must be an int, not {type(value).__name__}")
    if value < 1:
        raise ValueError(f"dspy async_max_workers must be at least 1, got {value}")
    return min(int(value), UNBOUNDED)


def pool_for(async_max_workers: Any) -> Pool:
    """The casyncify pool of this ``async_max_workers`` value (one per value, made on first use)."""
    limit = _limit(async_max_workers)
    pool = _pools.get(limit)
    if pool is None or pool.closed or pool._generation != life.fork_generation:
        # No lock: making a pool may run any Python (GC). A racing thread's pool
        # loses the setdefault and is closed at once (it ran nothing).
        fresh = Pool(limit, thread_name="casyncify-dspy")
        if pool is not None:  # closed (by the user, at exit) or the parent's (after fork): replace it
            _pools.pop(limit, None)
        pool = _pools.setdefault(limit, fresh)
        if pool is not fresh:
            fresh.close(0)
    return pool


def _current_async_max_workers() -> Any:
    import dspy

    return dspy.settings.async_max_workers


def model_of(lm: Any) -> Hashable:
    """What ``limiter_per_lm`` keys an LM by: its ``model`` string ("openai/gpt-4o"), so
    every LM object of one model shares its limiter; the LM itself when it has none."""
    model = getattr(lm, "model", None)
    return model if isinstance(model, str) else lm


def limiter_per_lm(
    max_running: int | None = None,
    *,
    rate: float | None = None,
    burst: int = 1,
    make: Callable[[Any], Limiter] | None = None,
    key: Callable[[Any], Hashable] = model_of,
) -> KeyedLimiter:
    """A limiter per LM, chosen at call time from the caller's DSPy settings: each call
    holds the limiter of ``key(dspy.settings.lm)`` (its model name by default) as the
    calling task sees it (``dspy.configure(lm=...)``, ``with dspy.context(lm=...)``); a
    call with no LM configured has no limiter. Each limiter is made on first use with
    ``max_running``, ``rate`` and ``burst`` (named after the model), or by ``make(key)``
    for limits per model. Pass the result as ``limiter=``."""

    def current_lm() -> Hashable | None:
        import dspy  # imported already when DSPy runs: a lookup in sys.modules

        lm = dspy.settings.lm
        return None if lm is None else key(lm)

    return KeyedLimiter(current_lm, make, max_running=max_running, rate=rate, burst=burst)


def asyncify(
    program: Callable[..., Any], *, limiter: LimiterChoice = _DEFAULT, start_within: float | None = _DEFAULT
) -> Callable[..., Awaitable[Any]]:
    """DSPy's ``asyncify(program)`` on casyncify: an ``async def`` wrapper whose calls run
    on the pool of the ``async_max_workers`` value DSPy holds at call time, with
    ``limiter`` and ``start_within`` as in ``casyncify.asyncify`` (by default those given
    to ``install()``)."""
    per_pool: dict[Pool, Callable[..., Awaitable[Any]]] = {}
    default_limiter, default_within = _installed_limits
    lim = default_limiter if limiter is _DEFAULT else limiter
    within = default_within if start_within is _DEFAULT else start_within
    CallLimits.of(lim, within)  # bad values fail here, not at the first call

    async def async_program(*args: Any, **kwargs: Any) -> Any:
        pool = pool_for(_current_async_max_workers())
        call = per_pool.get(pool)
        if call is None:
            call = per_pool.setdefault(pool, casyncify_asyncify(program, pool=pool, limiter=lim, start_within=within))
        return await call(*args, **kwargs)

    if is_async_callable(program) or not callable(program):
        casyncify_asyncify(program)  # raises the same TypeError as casyncify.asyncify
    functools.update_wrapper(async_program, program, updated=())
    return async_program


def install(*, limiter: LimiterChoice = None, start_within: float | None = None) -> None:
    """Route DSPy's ``asyncify`` (and so ``streamify`` of a sync program) through casyncify.

    Idempotent. Imports DSPy (and the streaming module) if not yet imported.
    ``limiter`` and ``start_within`` apply to the calls of every program DSPy asyncifies
    from now on (``limiter_per_lm()``: a cap and a rate per LM); calling ``install()``
    again replaces them.
    """
    global _installed_limits
    import dspy.streaming.streamify  # noqa: F401 - make sure every known binding exists
    import dspy.utils.asyncify as dspy_asyncify_module

    CallLimits.of(limiter, start_within)  # checked before anything changes
    with _install_lock:
        _installed_limits = (limiter, start_within)
        if _installed:
            return
        original = dspy_asyncify_module.asyncify  # DSPy's own, as nothing of ours is installed
        targets = {(name, attr) for name, attr in KNOWN_BINDINGS}
        for name, module in list(sys.modules.items()):
            if (name == "dspy" or name.startswith("dspy.")) and getattr(module, "asyncify", None) is original:
                targets.add((name, "asyncify"))
        for name, attr in sorted(targets):
            target = sys.modules.get(name)
            if target is not None and getattr(target, attr, None) is original:
                setattr(target, attr, asyncify)
                _installed.append((target, attr, original))


def uninstall() -> None:
    """Put DSPy's own ``asyncify`` back wherever ``install()`` replaced it (and ours
    is still there), and forget ``install()``'s limiter and deadline. The pools made
    meanwhile stay usable (by wrappers made while installed) and are closed at exit."""
    global _installed_limits
    with _install_lock:
        _installed_limits = (None, None)
        if not _installed:
            return
        original = _installed[0][2]
        while _installed:
            module, attr, _ = _installed.pop()
            if getattr(module, attr, None) is asyncify:
                setattr(module, attr, original)
        # A dspy.* module imported while installed took ours by name: give it DSPy's too.
        for name, module in list(sys.modules.items()):
            if (name == "dspy" or name.startswith("dspy.")) and getattr(module, "asyncify", None) is asyncify:
                vars(module)["asyncify"] = original


def installed() -> bool:
    """Whether ``install()`` is in effect."""
    return bool(_installed)
