"""Builds the C++ ring buffer extension ``affedge._ringbuf`` (pybind11, C++17).

Everything else is declared in pyproject.toml.
"""
from pybind11.setup_helpers import Pybind11Extension, build_ext
from setuptools import setup

ext_modules = [
    Pybind11Extension(
        "affedge._ringbuf",
        ["cpp_ext/ringbuf_module.cpp"],
        include_dirs=["cpp_ext"],
        depends=["cpp_ext/ringbuf.hpp"],  # header-only core: rebuild when it changes
        cxx_std=17,
        extra_compile_args=["-O3"],
    ),
]

setup(ext_modules=ext_modules, cmdclass={"build_ext": build_ext})
