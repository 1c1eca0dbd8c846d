"""Finding and loading ``libasyncify``.

Looked up in this order: ``$ASYNCIFY_LIBRARY``, the package's own copy (what
``pip install`` builds into it), the repository's ``target/release`` (a checkout
used in place). When none loads, ``ImportError`` lists every path tried and why.
"""

from __future__ import annotations

import ctypes
import os
import warnings
from collections.abc import Iterable
from pathlib import Path

__all__ = ["load"]

_PACKAGE_DIR = Path(__file__).resolve().parent
_NAMES = ("libasyncify.so", "libasyncify.dylib", "asyncify.dll")
#: What the package build (setup.py, setuptools-rust) puts next to this file.
_PACKAGED = "libasyncify.abi3.so"


def _candidates() -> list[tuple[str, Path]]:
    """``(origin, path)`` of every place to try, in order."""
    found: list[tuple[str, Path]] = []
    env = os.environ.get("ASYNCIFY_LIBRARY")
    if env:
        found.append(("ASYNCIFY_LIBRARY", Path(env)))
    found.append(("package directory", _PACKAGE_DIR / _PACKAGED))
    # bindings/python/casyncify/_library.py -> the repository root is three levels up.
    repo = _PACKAGE_DIR.parent.parent.parent
    for name in _NAMES:
        found.append(("repository target/release", repo / "target" / "release" / name))
    return found


def load(required: Iterable[str]) -> tuple[ctypes.CDLL, ctypes.PyDLL, str]:
    """The first library that loads and exports every name of ``required``:
    ``(CDLL handle, PyDLL handle, path)``. ``ImportError`` when there is none."""
    required = list(required)
    tried: list[str] = []
    for origin, path in _candidates():
        if not path.exists():
            tried.append(f"  {path} ({origin}): not found")
            if origin == "ASYNCIFY_LIBRARY":
                warnings.warn(
                    f"ASYNCIFY_LIBRARY={path} does not exist; looking further",
                    RuntimeWarning,
                    stacklevel=3,
                )
            continue
        try:
            c = ctypes.CDLL(str(path))
            p = ctypes.PyDLL(str(path))
        except OSError as e:
            tried.append(f"  {path} ({origin}): {e}")
            continue
        missing = [n for n in required if not hasattr(c, n)]
        if missing:
            tried.append(f"  {path} ({origin}): not an asyncify library (missing {', '.join(missing)})")
            continue
        return c, p, str(path)
    raise ImportError(
        "casyncify: cannot load libasyncify. Install the package with pip (it builds the "
        "library), build it with `cargo build --release` in the repository, or set "
        "ASYNCIFY_LIBRARY to its path. Tried, in order:\n" + "\n".join(tried)
    )
