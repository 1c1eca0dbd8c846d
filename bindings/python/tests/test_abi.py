"""The binding's view of the C ABI equals include/asyncify.h: every ASYNCIFY_* value the binding
defines, and the layout (size, and offset of each field) of every struct it declares, as a C compiler
sees the header."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from ctypes import sizeof
from pathlib import Path

import pytest
from casyncify import _ffi
from conftest import REPO_ROOT

HEADER = REPO_ROOT / "include" / "asyncify.h"

#: The binding's ctypes structs and the C types they mirror.
STRUCTS = {
    "asyncify_completion": _ffi.Completion,
    "asyncify_pool_options": _ffi.PoolOptions,
    "asyncify_pool_stats": _ffi.PoolStats,
    "asyncify_latency": _ffi.Latency,
    "asyncify_submit_options": _ffi.SubmitOptions,
    "asyncify_limiter_options": _ffi.LimiterOptions,
    "asyncify_limiter_stats": _ffi.LimiterStats,
}


def header_defines() -> dict[str, int]:
    """Every integer ``#define ASYNCIFY_NAME value`` of the header, by NAME."""
    found = {}
    for name, value in re.findall(r"^#define ASYNCIFY_(\w+) (\S+)$", HEADER.read_text(), re.M):
        literal = value.strip("()").rstrip("u")
        if re.fullmatch(r"-?\d+", literal):
            found[name] = int(literal)
    return found


def test_every_value_the_binding_defines_is_the_headers() -> None:
    defines = header_defines()
    assert "E_NULL" in defines and "SUBMIT_DETACHED" in defines, "the header was parsed"
    ours = {name: getattr(_ffi, name) for name in defines if hasattr(_ffi, name)}
    # The statuses at least: each one the header has, the binding has with the same value.
    statuses = [n for n in defines if n in {"OK", "PENDING", "FAILED", "CANCELLED", "TIMEOUT"} or n.startswith("E_")]
    missing = [n for n in statuses if n not in ours]
    assert not missing, f"statuses of the header the binding lacks: {missing}"
    wrong = {n: (ours[n], defines[n]) for n in ours if ours[n] != defines[n]}
    assert not wrong, f"binding value != header value: {wrong}"


def c_layouts(tmp_path: Path) -> dict[str, dict]:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        if os.environ.get("CASYNCIFY_REQUIRE_DSPY") == "1":
            pytest.fail("no C compiler to read the header's layouts with")
        pytest.skip("no C compiler")
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "asyncify.h"', "int main(void) {", 'printf("{");']
    for i, (c_name, struct) in enumerate(STRUCTS.items()):
        sep = "," if i else ""
        lines.append(f'printf("{sep}\\"{c_name}\\": {{\\"size\\": %zu", sizeof({c_name}));')
        for field, _ in struct._fields_:
            lines.append(f'printf(", \\"{field}\\": %zu", offsetof({c_name}, {field}));')
        lines.append('printf("}");')
    lines += ['printf("}\\n");', "return 0; }"]
    src = tmp_path / "layouts.c"
    src.write_text("\n".join(lines))
    exe = tmp_path / "layouts"
    subprocess.run([cc, "-std=c11", "-I", str(HEADER.parent), str(src), "-o", str(exe)], check=True)
    return json.loads(subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout)


def test_every_struct_has_the_headers_layout(tmp_path: Path) -> None:
    layouts = c_layouts(tmp_path)
    for c_name, struct in STRUCTS.items():
        c = layouts[c_name]
        assert sizeof(struct) == c["size"], f"sizeof({c_name})"
        for field, _ in struct._fields_:
            assert getattr(struct, field).offset == c[field], f"offsetof({c_name}, {field})"


def test_pool_latency_through_lowlevel() -> None:
    from casyncify import NotFoundError
    from casyncify import lowlevel as ll

    opts = ll.pool_options_init()
    opts.flags = _ffi.POOL_RECORD_LATENCY
    pool = ll.pool_new_ex(opts)
    try:
        assert ll.pool_latency(pool, _ffi.LATENCY_RUN).count == 0
    finally:
        ll.pool_free(pool)
    plain = ll.pool_new_ex(ll.pool_options_init())
    try:
        with pytest.raises(NotFoundError):
            ll.pool_latency(plain, _ffi.LATENCY_QUEUE_WAIT)
    finally:
        ll.pool_free(plain)


def test_limiters_and_start_deadlines_through_lowlevel() -> None:
    """A task on a paused limiter waits for it, then runs once the cap is raised; a task
    not started within its deadline completes with EXPIRED and never runs."""
    from casyncify import lowlevel as ll

    ran: list[int] = []
    work = ll.WORK_FN(lambda arg, _out: ran.append(arg or 0) or 0)
    lopts = ll.limiter_options_init()
    lopts.max_running = 0  # paused
    lopts.name = b"test"
    lim = ll.limiter_new(lopts)
    pool = ll.pool_new(1)
    try:
        opts = ll.submit_options_init()
        opts.pool = pool
        opts.limiter = lim
        waiting = ll.submit(work, 1, opts)
        assert ll.limiter_stats_get(lim).waiting == 1
        ll.limiter_set(lim, 1)
        assert ll.wait(waiting, 10)[0] == ll.OK and ran == [1]
        ll.release(waiting)
        stats = ll.limiter_stats_get(lim)
        assert (stats.admitted, stats.max_running) == (1, 1)
        assert ll.limiter_latency(lim, ll.LATENCY_RUN).count == 0, "the pool records no latency"
        paused = ll.pool_new(0)
        try:
            late = ll.submit_options_init()
            late.pool = paused
            late.start_within_ms = 10
            expiring = ll.submit(work, 2, late)
            assert ll.wait(expiring, 10)[0] == ll.EXPIRED and ran == [1]
            ll.release(expiring)
            assert ll.stats(paused).expired == 1
        finally:
            ll.pool_free(paused)
    finally:
        ll.pool_free(pool)
        ll.limiter_free(lim)
