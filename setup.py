"""Build the compiled extension; all metadata is in pyproject.toml.

Compiler flags are portable (never tuned to the build machine): the kernels for AVX2/FMA and
AVX-512 are compiled with per-function target attributes and chosen at run
time, so a wheel runs on any x86-64 CPU (``python tools/check_isa.py``
checks the built extension for AVX instructions outside those functions).
Release builds drop debug information (-g0: the extension is 5x smaller).

Switches (environment variables):

* ``FASTLAZY_DEBUG=1`` -- Cython bounds, wraparound and initialization
  checks on, ``-O0 -g``.
* ``FASTLAZY_SANITIZE=1`` -- AddressSanitizer and UndefinedBehaviorSanitizer
  (``-fsanitize=address,undefined``); see ``tools/sanitize.sh``.

The C kernels use GCC/Clang vector extensions, statement expressions and
``__builtin_cpu_supports``: they build with GCC or Clang (Linux, macOS, and
MinGW-w64 on Windows), not with MSVC.
"""

import glob
import os

import numpy as np
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

debug = os.environ.get("FASTLAZY_DEBUG") == "1"
sanitize = os.environ.get("FASTLAZY_SANITIZE") == "1"

directives = {
    "language_level": 3,
    "boundscheck": debug,
    "wraparound": debug,
    "initializedcheck": debug,
    "cdivision": True,
    "embedsignature": True,
}


def gnu_flags():
    """(compile, link) flags for GCC and Clang."""
    compile_args = ["-O0", "-g"] if debug else ["-O3", "-g0"]
    compile_args += ["-std=gnu11", "-fno-math-errno"]
    link_args = []
    if sanitize:
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args += flags
        link_args += flags
    return compile_args, link_args


class BuildExt(build_ext):
    """Flags by compiler: GCC/Clang get ``gnu_flags()``; MSVC cannot
    compile the kernels, so it gets a clear error instead of hundreds."""

    def build_extensions(self):
        if self.compiler.compiler_type == "msvc":
            raise RuntimeError(
                "fastlazy's C kernels use GCC/Clang vector extensions, which "
                "MSVC does not compile. Build with MinGW-w64 GCC "
                "(python setup.py build_ext --compiler=mingw32) or install "
                "a wheel.")
        compile_args, link_args = gnu_flags()
        cc = " ".join(getattr(self.compiler, "compiler_so", None) or [])
        if "clang" not in cc:
            compile_args.append("-Wno-psabi")     # GCC only
        for ext in self.extensions:
            ext.extra_compile_args = compile_args + ext.extra_compile_args
            ext.extra_link_args = link_args + ext.extra_link_args
        super().build_extensions()


# Two modules: the Parameter state machine, and the forward plan (which
# includes every C header: one kernel table, one thread pool).  The plan
# cimports Parameter through _parameter.pxd, at C-call cost.
_common = dict(
    include_dirs=[np.get_include(), scipy_openblas32.get_include_dir(),
                  "src/fastlazy"],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
)
extensions = [
    Extension("fastlazy._parameter", ["src/fastlazy/_parameter.pyx"],
              **_common),
    Extension(
        "fastlazy._plan",
        # the C kernels are one translation unit of their own, linked in;
        # the bodies it includes are its dependencies (setuptools rebuilds
        # a source only when it or a listed dependency changed)
        ["src/fastlazy/_plan.pyx", "src/fastlazy/kernels/fl_kernels.c"],
        depends=sorted(glob.glob("src/fastlazy/kernels/*.h")), **_common),
]

# A debug build's C file (bounds checks on) goes to its own folder: next to
# the .pyx it would be reused by the next release build, which compares only
# timestamps.
setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            include_path=["src"],
                            build_dir="build/cython-debug" if debug
                            else None),
      cmdclass={"build_ext": BuildExt})
