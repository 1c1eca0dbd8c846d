"""Overrides: the contextvars mapping, its C mirror, scopes, values' lifetime, bad input."""

from __future__ import annotations

import asyncio
import gc
import threading
import weakref

import casyncify
import pytest
from casyncify import _overrides
from casyncify import lowlevel as ll
from conftest import eventually, run


class Value:
    """A weak-referenceable override value."""

    def __init__(self, name: str):
        self.name = name

    def __repr__(self) -> str:
        return f"Value({self.name})"


def c_view(key: str):
    """What C code on this thread sees for ``key``: the Python object behind a
    binding pointer, bytes, a foreign address, or None."""
    try:
        ptr, release = ll.override_get_ptr_ex(key)
    except casyncify.NotFoundError:
        return None
    except casyncify.InvalidArgumentError:
        return ll.override_get(key)
    if release == _overrides.RELEASE_ADDR:
        import ctypes

        return ctypes.cast(ptr, ctypes.py_object).value
    return ("foreign", ptr)


def test_set_get_remove_and_the_view():
    assert casyncify.get("model") is None
    assert casyncify.get("model", "dflt") == "dflt"
    casyncify.set("model", "gpt-4o")
    casyncify.set("temperature", 0.5)
    assert casyncify.get("model") == "gpt-4o"
    view = casyncify.overrides()
    assert dict(view) == {"model": "gpt-4o", "temperature": 0.5}
    with pytest.raises(TypeError):
        view["x"] = 1  # read-only
    casyncify.remove("temperature")
    assert dict(casyncify.overrides()) == {"model": "gpt-4o"}
    assert dict(view) == {"model": "gpt-4o", "temperature": 0.5}, "an earlier view is a snapshot"
    with pytest.raises(casyncify.NotFoundError) as e:
        casyncify.remove("temperature")
    assert isinstance(e.value, KeyError)
    assert e.value.status == ll.E_NOT_FOUND and "temperature" in e.value.message


def test_nested_context_scopes_restore_exactly():
    casyncify.set("a", 1)
    before = _overrides.current.get()
    with casyncify.context(a=2, b=3):
        assert dict(casyncify.overrides()) == {"a": 2, "b": 3}
        with casyncify.context({"c.d": 4}, a=5):
            assert dict(casyncify.overrides()) == {"a": 5, "b": 3, "c.d": 4}
            casyncify.remove("b")  # changes inside a scope are undone by its exit too
            casyncify.set("e", 6)
            assert dict(casyncify.overrides()) == {"a": 5, "c.d": 4, "e": 6}
        assert dict(casyncify.overrides()) == {"a": 2, "b": 3}
    assert _overrides.current.get() is before, "the exact previous mapping (same snapshot object)"
    assert dict(casyncify.overrides()) == {"a": 1}


def test_context_restores_on_exception_and_is_reusable():
    cm = casyncify.context(k="v")
    with pytest.raises(ZeroDivisionError):
        with cm:
            assert casyncify.get("k") == "v"
            1 / 0  # noqa: B018
    assert casyncify.get("k") is None
    with cm:
        with cm:  # nested reuse of one instance
            assert casyncify.get("k") == "v"
        assert casyncify.get("k") == "v"
    assert casyncify.get("k") is None


def test_two_tasks_on_one_loop_never_see_each_other():
    seen: dict[str, list] = {"A": [], "B": []}

    async def worker(name: str):
        with casyncify.context(who=name):
            for i in range(50):
                with casyncify.context(step=(name, i)):
                    await asyncio.sleep(0)  # interleave with the other task at every await
                    seen[name].append((casyncify.get("who"), casyncify.get("step")))
                await asyncio.sleep(0)
                seen[name].append((casyncify.get("who"), casyncify.get("step")))

    async def main():
        await asyncio.gather(worker("A"), worker("B"))
        assert casyncify.get("who") is None

    run(main())
    for name in "AB":
        assert len(seen[name]) == 100
        for i, (who, step) in enumerate(seen[name]):
            assert who == name
            assert step in (None, (name, i // 2))


def test_threads_have_their_own_overrides():
    casyncify.set("k", "main")
    out = {}

    def thread_body():
        out["initial"] = casyncify.get("k")  # a new thread starts empty, like the C table
        casyncify.set("k", "thread")
        out["after"] = casyncify.get("k")

    t = threading.Thread(target=thread_body)
    t.start()
    t.join()
    assert out == {"initial": None, "after": "thread"}
    assert casyncify.get("k") == "main"


def test_identity_preserved_and_released_when_no_snapshot_holds_it(make_pool):
    pool = make_pool(2)
    value = Value("lm")
    ref = weakref.ref(value)

    def task():
        return casyncify.get("lm"), c_view("lm")

    with casyncify.context(lm=value):
        seen_py, seen_c = pool.submit(task).result(5)
    assert seen_py is value, "the task gets the very same object"
    assert seen_c is value, "and C code in the task sees a pointer to it"
    del seen_py, seen_c, value
    assert eventually(lambda: ref() is None), "released once no snapshot holds it"


def test_value_kept_alive_by_a_running_call_only(make_pool, gate):
    pool = make_pool(1)
    value = Value("held")
    ref = weakref.ref(value)
    seen = []

    def task():
        gate.block()
        seen.append(casyncify.get("v") is not None and casyncify.get("v").name)

    with casyncify.context(v=value):
        fut = pool.submit(task)
    del value
    assert gate.started.wait(5)
    gc.collect()
    assert ref() is not None, "the running call's snapshot holds the value"
    gate.open()
    fut.result(5)
    assert seen == ["held"]
    del fut
    assert eventually(lambda: ref() is None)


def test_overwritten_and_removed_values_are_released():
    a, b = Value("a"), Value("b")
    ra, rb = weakref.ref(a), weakref.ref(b)
    casyncify.set("k", a)
    casyncify.set("k", b)
    del a
    assert eventually(lambda: ra() is None), "overwritten and no snapshot left: released"
    casyncify.remove("k")
    del b
    assert eventually(lambda: rb() is None)


def test_c_code_sees_python_values_and_python_sees_c_values(make_pool):
    obj = Value("py")

    def task():
        out = {"py_via_c": c_view("py")}
        # C code in the task sets bytes and a pointer of its own:
        ll.override_set("c_bytes", b"\x00raw\xff")
        ll.override_set_ptr("c_ptr", 0xDEADBEE0, None)
        out["bytes"] = casyncify.get("c_bytes")
        out["ptr"] = casyncify.get("c_ptr")
        out["count"] = ll.override_count()
        return out

    with casyncify.context(py=obj):
        out = make_pool(1).submit(task).result(5)
    assert out["py_via_c"] is obj
    assert out["bytes"] == b"\x00raw\xff" and type(out["bytes"]) is bytes
    assert isinstance(out["ptr"], casyncify.ForeignPointer) and out["ptr"] == 0xDEADBEE0
    assert out["count"] == 3
    # Nothing the task set in C reached this thread.
    assert casyncify.get("c_bytes") is None and c_view("c_ptr") is None


def test_c_values_set_on_this_thread_and_globally():
    ll.override_set("here", b"abc")
    try:
        assert casyncify.get("here") == b"abc"
        casyncify.set("here", "python wins")
        assert casyncify.get("here") == "python wins"
    finally:
        ll.override_remove("here")
    ll.global_set("glob", b"g")
    try:
        assert casyncify.get("glob") == b"g"
    finally:
        ll.global_remove("glob")
    assert casyncify.get("glob") is None


def test_configure_settings_are_the_fallback():
    casyncify.configure(some_setting="global")
    try:
        assert casyncify.get("some_setting") == "global"
        with casyncify.context(some_setting="local"):
            assert casyncify.get("some_setting") == "local"
            assert casyncify.submit(casyncify.get, "some_setting").result(5) == "local"
        assert casyncify.submit(casyncify.get, "some_setting").result(5) == "global"
    finally:
        _overrides._settings = {}


def test_removed_in_a_call_stays_removed_for_python(make_pool):
    def task():
        casyncify.remove("k")
        # The C table installed for the call still has k (C code sees the
        # submit-time snapshot), but Python code sees its own removal.
        return casyncify.get("k"), c_view("k")

    with casyncify.context(k="v"):
        py, c = make_pool(1).submit(task).result(5)
    assert py is None
    assert c == "v"


def test_call_installs_the_current_overrides_for_c_code():
    with casyncify.context(k="v"):
        assert c_view("k") is None  # outside a call this thread's C table is its own
        assert casyncify.call(c_view, "k") == "v"
    assert c_view("k") is None, "and it is restored afterwards"
    err = ValueError("x")

    def boom():
        raise err

    with pytest.raises(ValueError) as e:
        casyncify.call(boom)
    assert e.value is err


def test_bad_keys_raise_errors_with_status_and_message():
    with pytest.raises(TypeError):
        casyncify.set(1, "x")  # type: ignore[arg-type]
    with pytest.raises(casyncify.InvalidArgumentError) as e:
        casyncify.set("", "x")
    assert e.value.status == ll.E_INVALID_ARGUMENT == -2
    assert "key" in e.value.message and e.value.message.startswith("asyncify_")
    assert isinstance(e.value, ValueError) and isinstance(e.value, casyncify.Error)
    with pytest.raises(casyncify.InvalidArgumentError) as e:
        casyncify.set("\ud800", "x")  # not UTF-8: refused by the library itself
    assert e.value.status == -2 and e.value.message
    with pytest.raises(casyncify.InvalidArgumentError) as e:
        casyncify.set("a\0b", "x")
    assert "NUL" in e.value.message
    assert dict(casyncify.overrides()) == {}, "nothing changed"
    with pytest.raises(casyncify.InvalidArgumentError):
        casyncify.context({"": 1}).__enter__()
    assert dict(casyncify.overrides()) == {}


def test_failed_set_does_not_leak_the_value():
    v = Value("x")
    r = weakref.ref(v)
    with pytest.raises(casyncify.InvalidArgumentError):
        casyncify.set("", v)
    del v
    assert eventually(lambda: r() is None), "on error the binding gives its reference back"


class UnhashableKey(str):
    """A str key whose hash fails: refused by the mapping, after the C side could have taken it."""

    def __hash__(self):
        raise RuntimeError("no hash for this key")


def test_a_refused_key_leaks_neither_the_value_nor_its_c_context():
    v = Value("kept?")
    r = weakref.ref(v)
    with pytest.raises(RuntimeError, match="no hash"):
        casyncify.set(UnhashableKey("k"), v)
    with pytest.raises(RuntimeError, match="no hash"):
        with casyncify.context({UnhashableKey("k"): v}):
            pass
    for bad in ("", "a\0b", "\ud800"):
        with pytest.raises(casyncify.InvalidArgumentError):
            casyncify.set(bad, v)
    with pytest.raises(TypeError):
        casyncify.set(1, v)  # type: ignore[arg-type]
    del v
    assert eventually(lambda: r() is None), "no C context kept the value"
    assert dict(casyncify.overrides()) == {}


def test_get_of_a_key_nothing_can_hold_is_the_default():
    assert casyncify.get("") is None
    assert casyncify.get("\ud800", "dflt") == "dflt"
    assert casyncify.get("a\0b", 0) == 0
    with casyncify.context(k=1):  # with overrides of its own, too
        assert casyncify.get("", "d") == "d"
    with pytest.raises(TypeError):
        casyncify.get(1)  # type: ignore[arg-type]


def test_remove_of_a_non_str_key_is_a_type_error():
    with pytest.raises(TypeError):
        casyncify.remove(1)  # type: ignore[arg-type]
    with pytest.raises(casyncify.NotFoundError):
        casyncify.remove("absent")


def test_lowlevel_keys_follow_the_same_rule():
    """lowlevel encodes keys as the high-level API does: a NUL is refused (C once cut the key there)."""
    with pytest.raises(casyncify.InvalidArgumentError, match="NUL"):
        ll.override_set("a\0b", b"x")
    with pytest.raises(casyncify.NotFoundError):
        ll.override_get("a")
    with pytest.raises(TypeError):
        ll.override_get(1)  # type: ignore[arg-type]


def test_the_overrides_view_reads_the_snapshot():
    with casyncify.context({"b": 2, "a": 1}):
        view = casyncify.overrides()
        assert len(view) == 2 and list(view) == ["a", "b"], "the C context's key order"
        assert "a" in view and "z" not in view and 1 not in view
        assert view.get("z", 0) == 0 and view["b"] == 2
        assert view == {"a": 1, "b": 2} and repr(view) == "casyncify.overrides({'a': 1, 'b': 2})"
    assert dict(view) == {"a": 1, "b": 2}, "it does not follow later changes"
    assert len(casyncify.overrides()) == 0


def test_reading_many_absent_keys_does_not_grow_a_snapshot():
    casyncify.set("k", "v")
    for i in range(1000):
        assert casyncify.get(f"absent{i}") is None
    assert casyncify.get("k") == "v"
    assert len(_overrides.current.get().cache) <= _overrides._ABSENT_CACHED
