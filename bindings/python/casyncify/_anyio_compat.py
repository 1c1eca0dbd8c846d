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

import sys
import warnings
import weakref
from typing import Any, Callable

_MISSING = object()
_broken: set = set()  # libraries whose hooks are missing: warned once, then skipped


def _warn_once(library: str, problem: str) -> None:
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
# Captured on the event loop's thread, at call time
# ---------------------------------------------------------------------------

_backends: dict[str, Any] = {}  # "asyncio"/"trio" -> AnyIO's backend class (public current_token)


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


class Marks:
    """What the worker needs to mark itself as the caller's loop's worker thread.

    The loop and the cancel scope are held weakly: a pending call must not keep
    a dropped event loop alive (the worker holds them only while the call runs).
    """

    __slots__ = ("backend", "loop_ref", "scope_ref", "trio_token", "cancel_register")

    def __init__(self, backend, loop_ref, scope_ref, trio_token, cancel_register):
        self.backend = backend  # AnyIO's backend class, or None when AnyIO is not in use
        self.loop_ref = loop_ref  # asyncio: weakref to the loop
        self.scope_ref = scope_ref  # asyncio: weakref to the host task's AnyIO cancel scope
        self.trio_token = trio_token  # trio: the run's TrioToken
        self.cancel_register = cancel_register  # trio: [raise_cancel or None], filled on abort


def asyncio_marks(loop, task) -> Marks | None:
    """Marks for a call made by ``task`` on ``loop``; None when AnyIO is not imported."""
    if "anyio" not in sys.modules or "anyio" in _broken:
        return None
    backend = _anyio_backend("asyncio")
    if backend is None:
        return None
    scope_ref = None
    backend_module = sys.modules.get("anyio._backends._asyncio")
    if backend_module is not None:
        try:
            task_state = backend_module._task_states.get(task)
        except AttributeError:
            _warn_once("anyio", "anyio._backends._asyncio._task_states is gone")
            task_state = None
        scope = getattr(task_state, "cancel_scope", None)
        if scope is not None:
            scope_ref = weakref.ref(scope)
    return Marks(backend, weakref.ref(loop), scope_ref, None, None)


def trio_marks(token, cancel_register: list) -> Marks:
    """Marks for a call made under trio (``trio.from_thread`` works with or without AnyIO)."""
    backend = None
    if "anyio" in sys.modules and "anyio" not in _broken:
        backend = _anyio_backend("trio")
    return Marks(backend, None, None, token, cancel_register)


# ---------------------------------------------------------------------------
# Set on the worker, around the user function (inside the call's context)
# ---------------------------------------------------------------------------


def _swap(ns: Any, name: str, value: Any) -> Any:
    """Set ``ns.name`` and return its previous value (``_MISSING`` when unset)."""
    old = ns.__dict__.get(name, _MISSING)
    setattr(ns, name, value)
    return old


def _restore(ns: Any, name: str, old: Any) -> None:
    if old is _MISSING:
        ns.__dict__.pop(name, None)
    else:
        setattr(ns, name, old)


def run_marked(marks: Marks, fn: Callable, args: tuple, kwargs: dict) -> Any:
    """``fn(*args, **kwargs)`` with this thread marked as the caller's worker thread.

    Previous marks are restored afterwards: a call may run inline inside another
    call on the same thread (a nested wait), which keeps its own marks.
    """
    saved: list = []
    try:
        _enter(marks, saved)
        return fn(*args, **kwargs)
    finally:
        for ns, name, old in reversed(saved):
            _restore(ns, name, old)


def _enter(marks: Marks, saved: list) -> None:
    sniffio = sys.modules.get("sniffio")
    if sniffio is not None:
        # As in AnyIO's and trio's workers: this thread is not in async context
        # (this context is the call's own copy, so nothing leaks out).
        sniffio.current_async_library_cvar.set(None)
    if marks.trio_token is not None:
        _enter_trio(marks, saved)
    if marks.backend is not None:
        _enter_anyio(marks, saved)


def _enter_trio(marks: Marks, saved: list) -> None:
    try:
        from trio._threads import PARENT_TASK_DATA as data
    except ImportError:
        _warn_once("trio", "trio._threads.PARENT_TASK_DATA is gone")
        return
    for name, value in (
        ("token", marks.trio_token),
        ("abandon_on_cancel", True),  # casyncify abandons a running call on cancel
        ("cancel_register", marks.cancel_register),
        ("task_register", [None]),  # read only when not abandoning: never here
    ):
        saved.append((data, name, _swap(data, name, value)))


def _enter_anyio(marks: Marks, saved: list) -> None:
    try:
        from anyio._core._eventloop import threadlocals
        from anyio.lowlevel import EventLoopToken
    except ImportError:
        _warn_once("anyio", "anyio._core._eventloop.threadlocals is gone")
        return
    if marks.trio_token is not None:
        native = marks.trio_token
    else:
        native = marks.loop_ref()
        if native is None:
            return  # the loop is gone: nothing to call back into
        scope = marks.scope_ref() if marks.scope_ref is not None else None
        saved.append((threadlocals, "current_cancel_scope", _swap(threadlocals, "current_cancel_scope", scope)))
    token = EventLoopToken(marks.backend, native)
    saved.append((threadlocals, "current_token", _swap(threadlocals, "current_token", token)))
