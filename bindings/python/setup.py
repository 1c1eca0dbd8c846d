"""Builds libasyncify from its Rust sources into the package, with setuptools-rust.

`pip install bindings/python` (or of an sdist) runs cargo on rust/Cargo.toml: in the
repository, rust/ holds links to the crate's files at the root; in an sdist, copies of
them. The library lands in the package as casyncify/libasyncify.abi3.so, stripped; the
wheel is tagged cp39-abi3-<platform> (CPython 3.9 and later, this platform): the
package has no extension module, only a C library it loads with ctypes.
"""

from setuptools import setup
from setuptools_rust import Binding, RustExtension, Strip

setup(
    rust_extensions=[
        RustExtension(
            "casyncify.libasyncify",
            path="rust/Cargo.toml",
            binding=Binding.NoBinding,
            py_limited_api=True,
            strip=Strip.All,
        )
    ],
    options={"bdist_wheel": {"py_limited_api": "cp39"}},
    zip_safe=False,
)
