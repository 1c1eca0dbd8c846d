"""Worker-thread marks of AnyIO and trio: the only place casyncify touches their internals.

Inside ``anyio.to_thread.run_sync`` (and ``trio.to_thread.run_sync``) the worker
thread carries marks that let the function call back into the event loop without
being handed a token: ``anyio.from_thread.run``, ``anyio.from_thread.run_sync``,
``anyio.from_thread.check_cancelled`` and trio's ``trio.from_thread.*`` read them.
``casyncify.asyncify`` sets the same marks around the user function on its worker,
so those calls work there exactly as in AnyIO's own worker threads.

Neither library has a public API to mark a thread, so this module writes, and
restores, the thread-local state they read:

* AnyIO (4.x): ``anyio._core._eventloop.threadlocals.current_token`` (an
  ``anyio.lowlevel.EventLoopToken``), and for its asyncio backend
  ``threadlocals.current_cancel_scope`` (the host task's cancel scope, read by
  ``check_cancelled`` and ``from_thread.run``), found in
  ``anyio._backends._asyncio._task_states``. The token's backend class comes from
  the public ``anyio.lowlevel.current_token()``.
* trio: ``trio._threads.PARENT_TASK_DATA`` (``token``, ``abandon_on_cancel``,
  ``cancel_register``, ``task_register``), with ``abandon_on_cancel=True`` as an
  abandoned casyncify call behaves.

``check()`` says whether those names are still there; the test suite runs it so
that a change in either library fails with a clear message instead of quietly
losing the marks. At run time a missing hook only disables the marks (one
``RuntimeWarning``): calls still run.
"""

from __future__ import annotations

import asyncio
import sys
import warnings
import weakref
from typing import Any, Callable

_MISSING = object()
_broken: set[str] = set()  # libraries whose hooks are missing: warned once, then skipped


def warn_once(library: str, problem: str) -> None:
    """One ``RuntimeWarning`` per library whose hooks are missing; its marks are then skipped."""
    if library not in _broken:
        _broken.add(library)
        warnings.warn(
            f"casyncify: {problem}; {library}'s from_thread calls will need an explicit token "
            "inside casyncify calls (casyncify._anyio_compat needs updating for this version)",
            RuntimeWarning,
            stacklevel=3,
        )


def check() -> list[str]:
    """The private names this module relies on that are missing ([] when all are there).

    Only libraries already imported are checked.
    """
    problems = []
    if "anyio" in sys.modules:
        try:
            from anyio._core._eventloop import threadlocals  # noqa: F401
            from anyio.lowlevel import EventLoopToken, current_token  # noqa: F401
        except ImportError as e:
            problems.append(f"anyio: {e}")
        try:
            from anyio._backends._asyncio import _task_states

            if not hasattr(_task_states, "get"):
                problems.append("anyio: anyio._backends._asyncio._task_states is no mapping")
        except ImportError as e:
            problems.append(f"anyio: {e}")
    if "trio" in sys.modules:
        try:
            from trio._threads import PARENT_TASK_DATA
        except ImportError as e:
            problems.append(f"trio: {e}")
        else:
            for name in ("token", "abandon_on_cancel", "cancel_register", "task_register"):
                if name not in type(PARENT_TASK_DATA).__annotations__:
                    problems.append(f"trio: trio._threads.PARENT_TASK_DATA has no {name!r}")
    return problems


# ---------------------------------------------------------------------------
# The hooks, resolved once per library (None when missing: no marks, one warning)
# ---------------------------------------------------------------------------

_anyio_hooks: Any = _MISSING  # (threadlocals, EventLoopToken) or None
_trio_data: Any = _MISSING  # trio._threads.PARENT_TASK_DATA or None
_backends: dict[str, Any] = {}  # "asyncio"/"trio" -> AnyIO's backend class (public current_token)


def _anyio() -> Any:
    global _anyio_hooks
    if _anyio_hooks is _MISSING:
        try:
            from anyio._core._eventloop import threadlocals
            from anyio.lowlevel import EventLoopToken

            _anyio_hooks = (threadlocals, EventLoopToken)
        except ImportError:
            warn_once("anyio", "anyio._core._eventloop.threadlocals is gone")
            _anyio_hooks = None
    return _anyio_hooks


def _trio() -> Any:
    global _trio_data
    if _trio_data is _MISSING:
        try:
            from trio._threads import PARENT_TASK_DATA

            _trio_data = PARENT_TASK_DATA
        except ImportError:
            warn_once("trio", "trio._threads.PARENT_TASK_DATA is gone")
            _trio_data = None
    return _trio_data


def _anyio_backend(library: str) -> Any:
    """AnyIO's backend class for ``library`` (the running one), or None."""
    backend = _backends.get(library, _MISSING)
    if backend is _MISSING:
        try:
            from anyio.lowlevel import current_token

            backend = current_token().backend_class
        except Exception:  # noqa: BLE001 - an AnyIO without tokens: no AnyIO marks
            backend = None
        _backends[library] = backend
    return backend


# ---------------------------------------------------------------------------
# Captured on the event loop's thread, at call time. Marks are tuples. Under
# asyncio: (kind, weak reference to the loop's AnyIO token, weak reference to the
# host task's AnyIO cancel scope or None); under trio: (TRIO, AnyIO backend or
# None, TrioToken, trio's cancel register). The loop's token is made once per
# loop and owned by the loop (``_loops`` keeps it with the loop's reader), so
# marks hold it, and the scope, weakly: a pending call must not keep a dropped
# event loop alive (the worker holds them only while the call runs). A call
# made outside any AnyIO cancel scope gets the same marks as every other such
# call on its loop: made once, kept by the caller (``cache``), so the plain
# asyncio path allocates nothing here.
# ---------------------------------------------------------------------------

#: Marks kinds. ASYNCIO_CLEAN: sniffio's context variable is already unset in the
#: call's context (checked by the caller), so the worker need not clear it.
ASYNCIO, TRIO, ASYNCIO_CLEAN = 0, 1, 2

#: The keys of AnyIO's asyncio task states (``_task_states.data``: a plain dict,
#: read for emptiness without a Python call), and the map itself; found once.
_task_states: Any = _MISSING
_task_keys: Any = None


def _find_task_states() -> Any:
    global _task_states, _task_keys
    backend_module = sys.modules.get("anyio._backends._asyncio")
    if backend_module is None:
        return None  # not imported yet: looked for again at the next call
    states = getattr(backend_module, "_task_states", None)
    if states is None or not hasattr(states, "get"):
        warn_once("anyio", "anyio._backends._asyncio._task_states is gone")
    else:
        keys = getattr(states, "data", None)
        _task_keys = keys if isinstance(keys, dict) else None
    _task_states = states
    return states


def loop_token(loop: Any) -> Any:
    """AnyIO's ``EventLoopToken`` of ``loop`` (the running loop of this thread), or
    None when AnyIO is not imported or its hooks are missing."""
    if "anyio" not in sys.modules:
        return None
    backend = _backends.get("asyncio", _MISSING)
    if backend is _MISSING:
        backend = _anyio_backend("asyncio")
    hooks = _anyio()
    if backend is None or hooks is None:
        return None
    return hooks[1](backend, loop)


def asyncio_marks(token_ref: Callable[[], Any], clean: bool, cache: list[Any]) -> tuple[Any, ...]:
    """Marks for a call made by the running asyncio task (``token_ref``: a weak
    reference to its loop's ``loop_token``). ``clean``: sniffio's context variable
    is unset in the caller's context. ``cache``: a one-slot list the caller keeps
    per loop, holding the marks of calls made outside any AnyIO cancel scope."""
    states = _task_states if _task_states is not _MISSING else _find_task_states()
    if states is not None and (_task_keys is None or _task_keys):  # some AnyIO task exists
        scope = getattr(states.get(asyncio.current_task()), "cancel_scope", None)
        if scope is not None:
            return (ASYNCIO_CLEAN if clean else ASYNCIO, token_ref, weakref.ref(scope))
    if not clean:
        return (ASYNCIO, token_ref, None)
    marks: tuple[Any, ...] | None = cache[0]
    if marks is None:
        marks = cache[0] = (ASYNCIO_CLEAN, token_ref, None)
    return marks


def trio_marks(token: Any, cancel_register: list[Any]) -> tuple[Any, ...]:
    """Marks for a call made under trio (``trio.from_thread`` works with or without AnyIO)."""
    backend = _anyio_backend("trio") if "anyio" in sys.modules else None
    return (TRIO, backend, token, cancel_register)


# ---------------------------------------------------------------------------
# Set on the worker, around the user function (inside the call's context)
# ---------------------------------------------------------------------------


def run_marked(marks: tuple[Any, ...], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """``fn(*args, **kwargs)`` with this thread marked as the caller's worker thread.

    Previous marks are restored afterwards: a call may run inline inside another
    call on the same thread (a nested wait), which keeps its own marks. Under
    asyncio (every call once AnyIO is imported: the hot path) two thread-local
    names are set from the loop's token, with no allocation.
    """
    kind = marks[0]
    if kind == TRIO:
        return _run_trio_marked(marks, fn, args, kwargs)
    if kind != ASYNCIO_CLEAN:
        sniffio = sys.modules.get("sniffio")
        if sniffio is not None:
            # As in AnyIO's and trio's workers: this thread is not in async context
            # (this context is the call's own copy, so nothing leaks out).
            sniffio.current_async_library_cvar.set(None)
    token = marks[1]()
    if token is None:  # the loop is gone: nothing to call back into
        return fn(*args, **kwargs)
    scope_ref = marks[2]
    ns = _anyio_hooks[0].__dict__  # this thread's attributes (resolved with the token)
    old_token = ns.get("current_token", _MISSING)
    old_scope = ns.get("current_cancel_scope", _MISSING)
    ns["current_token"] = token
    ns["current_cancel_scope"] = None if scope_ref is None else scope_ref()  # check_cancelled reads it
    try:
        return fn(*args, **kwargs)
    finally:
        if old_token is _MISSING:
            ns.pop("current_token", None)
        else:
            ns["current_token"] = old_token
        if old_scope is _MISSING:
            ns.pop("current_cancel_scope", None)
        else:
            ns["current_cancel_scope"] = old_scope


def _run_trio_marked(
    marks: tuple[Any, ...], fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    _, backend, native, extra = marks
    sniffio = sys.modules.get("sniffio")
    if sniffio is not None:
        sniffio.current_async_library_cvar.set(None)  # as under asyncio, above
    saved: list[Any] = []
    try:
        _mark_trio(native, extra, saved)
        if backend is not None:
            _mark_anyio(backend, native, saved)
        return fn(*args, **kwargs)
    finally:
        for namespace, name, old in reversed(saved):
            if old is _MISSING:
                namespace.pop(name, None)
            else:
                namespace[name] = old


def _set(namespace: dict[str, Any], name: str, value: Any, saved: list[Any]) -> None:
    saved.append((namespace, name, namespace.get(name, _MISSING)))
    namespace[name] = value


def _mark_trio(token: Any, cancel_register: list[Any], saved: list[Any]) -> None:
    data = _trio()
    if data is None:
        return
    ns = data.__dict__  # this thread's attributes (a threading.local)
    _set(ns, "token", token, saved)
    _set(ns, "abandon_on_cancel", True, saved)  # casyncify abandons a running call on cancel
    _set(ns, "cancel_register", cancel_register, saved)
    _set(ns, "task_register", [None], saved)  # read only when not abandoning: never here


def _mark_anyio(backend: Any, token: Any, saved: list[Any]) -> None:
    hooks = _anyio()
    if hooks is None:
        return
    threadlocals, token_class = hooks
    _set(threadlocals.__dict__, "current_token", token_class(backend, token), saved)
