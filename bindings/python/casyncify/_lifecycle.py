"""The binding's life in the process: interpreter exit, fork, and the worker
threads that hold a Python thread state.

At interpreter exit (``atexit``) the binding refuses new calls, closes every
open pool (queued calls cancelled, running ones waited for up to
``life.exit_timeout``) and waits for every worker to drop its thread state, so
that no worker touches a finalizing interpreter. In the child of a fork, each
module forgets the parent's pools, queues and workers (``after_fork_in_child``).
"""

from __future__ import annotations

import atexit
import os
import threading
import time
import weakref
from typing import Callable, Protocol

from ._errors import Error

__all__ = ["life", "worker", "open_pools", "SLICE", "worker_started", "worker_stopped", "after_fork_in_child"]

#: Seconds: every wait of the binding in Python wakes at least this often, so
#: that Ctrl-C (a KeyboardInterrupt, raised between two C calls) gets through.
SLICE = 0.1


class _Life:
    """Process-wide state (one instance: ``life``)."""

    closing = False  # atexit began: new calls are refused
    finalized = False  # atexit done: C contexts are no longer freed (leaked at exit)
    fork_generation = 0  # bumped in a forked child: parent pools are unusable there
    exit_timeout: float | None = 5.0  # seconds atexit waits for running Python calls (None: forever)
    live_workers = 0  # worker threads holding a thread state (start hook ran, stop hook not yet)


life = _Life()


class _Worker(threading.local):
    """This thread as a worker of a pool made by the binding (defaults: not one)."""

    pool: int | None = None  # the serial of its pool
    gilstate: int | None = None  # what PyGILState_Ensure returned in the start hook
    counted = False  # counted in life.live_workers
    started_wait_ns: int | None = None  # queue wait of the task about to start (on_task_start hook)
    call_wait_ns: int | None = None  # queue wait of the call running here (pools that record latency)


#: This thread's worker state (``worker.pool`` is None on any other thread).
worker = _Worker()
_workers_cv = threading.Condition(threading.Lock())


def worker_started() -> None:
    """A worker now holds a lasting thread state: exit waits for it."""
    with _workers_cv:
        life.live_workers += 1
    worker.counted = True


def worker_stopped() -> None:
    """The worker has dropped its thread state (the last thing it does in Python)."""
    if worker.__dict__.pop("counted", False):
        with _workers_cv:
            life.live_workers -= 1
            _workers_cv.notify_all()


class _Closable(Protocol):
    def close(self, timeout: float | None = None) -> bool:
        """Shut down, waiting up to ``timeout`` seconds; True when nothing was left running."""


#: The pools that exit closes (each registers itself; closing removes it).
open_pools: weakref.WeakSet[_Closable] = weakref.WeakSet()


def _at_exit() -> None:
    """Refuse new calls, cancel queued ones, wait (bounded) for running ones and
    for every worker to drop its thread state, so that no worker touches a
    finalizing interpreter. Every wait wakes each 100 ms: Ctrl-C ends it."""
    life.closing = True
    timeout = life.exit_timeout
    deadline = None if timeout is None else time.monotonic() + timeout
    try:
        for pool in list(open_pools):
            try:
                pool.close(None if deadline is None else max(0.0, deadline - time.monotonic()))
            except Error:
                pass
        _wait_for_workers(deadline)
        time.sleep(0.01)  # let the last worker finish returning from its stop hook
    finally:
        life.finalized = True


def _wait_for_workers(deadline: float | None) -> None:
    """Wait until no worker holds a thread state, or ``deadline`` (None: no limit), in slices."""
    with _workers_cv:
        while life.live_workers > 0:
            left = SLICE if deadline is None else min(SLICE, deadline - time.monotonic())
            if left <= 0:
                return
            _workers_cv.wait(left)


atexit.register(_at_exit)


def after_fork_in_child(forget: Callable[[], None]) -> None:
    """Call ``forget`` in the child of a fork: the parent's pools, queues and
    workers do not exist there (their memory does, and must not be freed)."""
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=forget)


def _forget_parent() -> None:
    global _workers_cv
    life.fork_generation += 1
    life.live_workers = 0
    _workers_cv = threading.Condition(threading.Lock())
    worker.__dict__.clear()
    open_pools.clear()


after_fork_in_child(_forget_parent)
