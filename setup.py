"""Build every ``src/udt/**/*.pyx`` as its own extension module.

Adding a Cython unit needs no edit here: drop ``src/udt/_name.pyx`` (and its ``.pxd``) in the tree.
"""

import os
from pathlib import Path

from Cython.Build import cythonize
from setuptools import Extension, setup

HERE = Path(__file__).parent
SRC = HERE / "src"
# UDT_DEBUG=1 builds with assertions, bounds checks and -O0 -g for debugging under gdb/valgrind.
DEBUG = os.environ.get("UDT_DEBUG") == "1"

extensions = [
    Extension(
        ".".join(pyx.relative_to(SRC).with_suffix("").parts),
        [str(pyx.relative_to(HERE))],
        extra_compile_args=(["-O0", "-g"] if DEBUG else ["-O3"]) + ["-Wno-unused-function"],
        define_macros=[("_GNU_SOURCE", "1")],
    )
    for pyx in sorted((SRC / "udt").rglob("*.pyx"))
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={
            "language_level": 3,
            "boundscheck": DEBUG,
            "wraparound": DEBUG,
            "cdivision": True,
            "initializedcheck": DEBUG,
            "embedsignature": True,
        },
        include_path=[str(SRC)],
        nthreads=2,
    ),
)
