"""Overrides: ``set``/``get``/``remove``/``overrides``/``context`` on ``contextvars``.

A ``ContextVar`` holds a ``Snapshot``: an immutable C ``asyncify_context*``,
built with ``asyncify_context_with_ptr`` (O(log n) per change, O(1) to submit
with a call). Values are read back from it (``asyncify_context_get_ptr``; the
keys with ``_count``/``_visit``), each key at most once per snapshot: the
snapshot caches what it read, which can never go stale. There is no Python
copy of the mapping, so ``set`` costs the same with 1 key or 100.

Each Python value is stored in C as a pointer value: the binding
``Py_IncRef``\\ s it, passes its address, and gives the library one
module-level release callback that ``Py_DecRef``\\ s it (ctypes takes the GIL).
The C context is freed when its snapshot is collected; the library releases a
value when no context, table or task holds it any more.
"""

from __future__ import annotations

import contextvars
import ctypes
import threading
from collections.abc import Iterator, Mapping
from ctypes import byref, c_void_p
from typing import Any

from . import _ffi, lowlevel
from ._convert import copy_out, key_bytes
from ._errors import InvalidArgumentError, NotFoundError, check, error_for
from ._ffi import plib
from ._lifecycle import after_fork_in_child, life

__all__ = ["ForeignPointer", "Snapshot", "ROOT", "current", "set", "get", "remove", "overrides", "context"]

_MISSING: Any = object()
_incref = _ffi.Py_IncRef
_decref = _ffi.Py_DecRef


def _release_value(ptr: int | None, _decref: Any = _decref) -> None:
    # The library calls this exactly once per stored value, on whichever thread
    # drops the last table/context/task holding it; ctypes holds the GIL here.
    if ptr:
        _decref(ptr)


#: The ONE release function of every Python value the binding hands to C.
RELEASE = _ffi.immortal(_ffi.FREE_FN(_release_value))
#: Its address: how a pointer read back from C is known to be a Python object.
RELEASE_ADDR: int = ctypes.cast(RELEASE, c_void_p).value or 0


class ForeignPointer(int):
    """A pointer value set by C code, exposed as its address (never dereferenced)."""

    def __repr__(self) -> str:
        return f"ForeignPointer(0x{int(self):x})"


#: What ``Snapshot.lookup`` caches for a key the context does not hold.
_ABSENT: Any = object()
#: A snapshot caches every present key it read, and absent ones only while its
#: cache is smaller than this: reading many absent keys cannot grow it unbounded.
_ABSENT_CACHED = 64


class Snapshot:
    """One immutable override mapping: a C context (freed with it) and the values
    already read from it (``cache``: key -> value or ``_ABSENT``)."""

    __slots__ = ("ptr", "cache")

    def __init__(self, ptr: int, cache: dict[str, Any]):
        self.ptr: int | None = ptr
        self.cache = cache

    def __del__(self, _free: Any = plib.asyncify_context_free, _life: Any = life) -> None:
        ptr = self.ptr
        if ptr and not _life.finalized:
            self.ptr = None
            _free(ptr)

    def lookup(self, key: str) -> Any:
        """The value of ``key`` here, or ``_ABSENT``: read from C, then cached."""
        if self is ROOT:
            return _ABSENT  # the root holds nothing (and caches nothing)
        kb = _readable(key)
        if kb is None:
            return _ABSENT  # nothing can be stored under that key
        out = c_void_p()
        status = plib.asyncify_context_get_ptr(self.ptr, kb, byref(out))
        if status == _ffi.OK:  # a Python value: only the binding builds these contexts
            value = ctypes.cast(out, ctypes.py_object).value
        elif status == _ffi.E_NOT_FOUND:
            value = _ABSENT
        else:
            raise error_for(status)
        cache = self.cache
        if value is not _ABSENT or len(cache) < _ABSENT_CACHED:
            cache[key] = value
        return value

    def with_(self, key: str, value: Any) -> Snapshot:
        """A new snapshot: this one with ``key`` set to ``value``."""
        kb = key_bytes(key)
        # Everything that can raise (a str subclass whose __hash__ fails, say)
        # comes before the C call: once C holds the value, nothing may fail.
        cache = {key: value}
        out = c_void_p()
        _incref(value)  # this reference now belongs to the C value
        status = plib.asyncify_context_with_ptr(self.ptr, kb, id(value), RELEASE, byref(out))
        if status < 0:
            err = error_for(status)  # read the message before anything else calls in
            _decref(id(value))  # on error the caller keeps the pointer
            raise err
        return Snapshot(out.value or 0, cache)

    def without(self, key: str) -> Snapshot:
        """A new snapshot: this one without ``key`` (``NotFoundError`` if absent)."""
        key_bytes(key)
        value = self.cache.get(key, _MISSING)
        if value is _MISSING:
            value = self.lookup(key)
        if value is _ABSENT:
            raise NotFoundError(_ffi.E_NOT_FOUND, f"casyncify.remove: no override {key!r}")
        return Snapshot(lowlevel.context_without(self.ptr or 0, key), {})


class _View(Mapping[str, Any]):
    """``overrides()``: one snapshot as a read-only mapping, read from its C context."""

    __slots__ = ("_snap",)

    def __init__(self, snap: Snapshot):
        self._snap = snap

    def __getitem__(self, key: str) -> Any:
        snap = self._snap
        value = snap.cache.get(key, _MISSING)
        if value is _MISSING:
            value = snap.lookup(key) if isinstance(key, str) else _ABSENT
        if value is _ABSENT:
            raise KeyError(key)
        return value

    def __len__(self) -> int:
        return lowlevel.context_count(self._snap.ptr or 0)

    def __iter__(self) -> Iterator[str]:
        return iter([key for key, _ in lowlevel.context_visit(self._snap.ptr or 0)])

    def __repr__(self) -> str:
        return f"casyncify.overrides({dict(self)!r})"


#: The mapping of a context that never set anything.
ROOT = Snapshot(lowlevel.context_empty(), {})
#: The overrides of the current context (a task's, a thread's).
current: contextvars.ContextVar[Snapshot] = contextvars.ContextVar("casyncify.overrides")
_settings: dict[str, Any] = {}  # configure(**settings): replaced, never mutated (copy on write)
_settings_lock = threading.Lock()


def set(key: str, value: Any) -> None:  # noqa: A001 - the API is casyncify.set
    """Set ``key`` to ``value`` in the current context (this asyncio task / thread).

    Any Python object; calls made from here on get the very same object.
    """
    current.set(current.get(ROOT).with_(key, value))


def remove(key: str) -> None:
    """Remove ``key`` from the current context; ``NotFoundError`` (a ``KeyError``) if absent."""
    current.set(current.get(ROOT).without(key))


def get(key: str, default: Any = None) -> Any:
    """The value the current context sees for ``key``.

    Order: the overrides of this context (``set``/``context``), then the
    process-wide settings (``configure(**settings)``), then what C code put in
    this thread's table or in the library's global layer: C bytes come back as
    ``bytes``, a C pointer as a ``ForeignPointer`` (its address).
    """
    snap = current.get(ROOT)
    value = snap.cache.get(key, _MISSING)
    if value is _MISSING:
        value = snap.lookup(key)
    if value is not _ABSENT:
        return value
    value = _settings.get(key, _MISSING)
    if value is not _MISSING:
        return value
    return _c_lookup(key, default, snap is ROOT)


def _readable(key: str) -> bytes | None:
    """``key`` in UTF-8 if the library could hold anything under it (not empty, no NUL, UTF-8)."""
    if not isinstance(key, str):
        raise TypeError(f"override keys are str, not {type(key).__name__}")
    if not key or "\0" in key:
        return None
    try:
        return key.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate
        return None


def _c_lookup(key: str, default: Any, own_values: bool) -> Any:
    """Read ``key`` from this thread's C table (then the C global layer).

    Pointers whose release function is the binding's are Python objects set from
    Python; any other pointer is foreign and only its address is returned. When
    this context has overrides of its own (``own_values`` false), its snapshot
    is authoritative for the binding's own values: one that is in the C table
    but not in the snapshot was removed from Python, so it is skipped.
    """
    kb = _readable(key)
    if kb is None:
        return default  # nothing can be stored under a key the library refuses
    ptr = c_void_p()
    rel = c_void_p()
    status = plib.asyncify_override_get_ptr_ex(kb, byref(ptr), byref(rel))
    if status == _ffi.OK:
        if rel.value == RELEASE_ADDR and ptr.value:
            return ctypes.cast(ptr, ctypes.py_object).value if own_values else default
        return ForeignPointer(ptr.value or 0)
    if status == _ffi.E_NOT_FOUND:
        return default
    if status != _ffi.E_INVALID_ARGUMENT:
        check(status)
    return _c_bytes(kb, default)


def _c_bytes(kb: bytes, default: Any) -> Any:
    """The bytes value of ``kb`` in this thread's C table (which may change meanwhile)."""
    try:
        return copy_out(lambda buf, cap, n: plib.asyncify_override_get(kb, buf, cap, n))
    except (InvalidArgumentError, NotFoundError):  # a key the library refuses, or removed meanwhile
        return default


def overrides() -> Mapping[str, Any]:
    """A read-only mapping of the current context's overrides (Python-set keys, in
    UTF-8 byte order); it does not change when the context's overrides do later."""
    return _View(current.get(ROOT))


class context:
    """``with casyncify.context(k=v, ...):`` like ``dspy.context``.

    Sets the keys for the block and restores the exact previous mapping on exit
    (``ContextVar.reset``). Nests; works in threads and asyncio tasks alike.
    A positional mapping allows keys that are not identifiers.
    """

    __slots__ = ("_items", "_tokens")

    def __init__(self, mapping: Mapping[str, Any] | None = None, /, **kwargs: Any):
        items = dict(mapping) if mapping else {}
        items.update(kwargs)
        self._items = items
        self._tokens: list[contextvars.Token[Snapshot]] = []

    def __enter__(self) -> context:
        snap = current.get(ROOT)
        for key, value in self._items.items():
            snap = snap.with_(key, value)
        self._tokens.append(current.set(snap))
        return self

    def __exit__(self, *exc: object) -> None:
        current.reset(self._tokens.pop())


def merge_settings(settings: Mapping[str, Any]) -> None:
    """Add ``configure(**settings)`` to the settings ``get`` falls back to.

    Copy on write; the lock only guards the swap (the copy may run GC finalizers).
    """
    global _settings
    while True:
        old = _settings
        new = dict(old)
        new.update(settings)
        with _settings_lock:
            if _settings is old:
                _settings = new
                return


def _forget_parent() -> None:
    global _settings_lock
    _settings_lock = threading.Lock()


after_fork_in_child(_forget_parent)
