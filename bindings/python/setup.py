"""Bundles the built libasyncify into the package at build time.

`pip install bindings/python` (from a checkout where `cargo build --release`
has run) copies ../../target/release/libasyncify.so -- or the file named by
ASYNCIFY_LIBRARY -- next to casyncify/__init__.py in the built package, so the
installed package works wherever it is imported from. Without a built library
the package is still built (pure Python) and finds the library at import time
through ASYNCIFY_LIBRARY, its own directory or the repository's target/release.
The wheel is tagged for the platform (py3-none-<platform>) when a library is bundled.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
LIB_NAME = "libasyncify.so"


def built_library() -> Path | None:
    env = os.environ.get("ASYNCIFY_LIBRARY")
    for candidate in ([Path(env)] if env else []) + [HERE.parent.parent / "target" / "release" / LIB_NAME]:
        if candidate.is_file():
            return candidate
    return None


class build_py_with_library(build_py):
    def run(self):
        super().run()
        lib = built_library()
        target = Path(self.build_lib) / "casyncify" / LIB_NAME
        if lib is None:
            sys.stderr.write(
                "casyncify: no built libasyncify found (run `cargo build --release` in the repository "
                "or set ASYNCIFY_LIBRARY); building without a bundled library\n"
            )
            return
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(lib, target)
        sys.stderr.write(f"casyncify: bundled {lib} as {target}\n")


cmdclass = {"build_py": build_py_with_library}

try:  # setuptools >= 70.1 ships bdist_wheel; older ones take it from `wheel`
    from setuptools.command.bdist_wheel import bdist_wheel
except ImportError:  # pragma: no cover
    try:
        from wheel.bdist_wheel import bdist_wheel  # type: ignore[no-redef]
    except ImportError:
        bdist_wheel = None  # type: ignore[assignment,misc]

if bdist_wheel is not None:

    class bdist_wheel_platform(bdist_wheel):  # type: ignore[misc,valid-type]
        """No compiled extension, but a bundled shared library: py3-none-<platform>."""

        def finalize_options(self):
            super().finalize_options()
            if built_library() is not None:
                self.root_is_pure = False

        def get_tag(self):
            python, abi, plat = super().get_tag()
            return ("py3", "none", plat) if not self.root_is_pure else (python, abi, plat)

    cmdclass["bdist_wheel"] = bdist_wheel_platform

setup(cmdclass=cmdclass)
