"""Build the compiled extension; all metadata is in pyproject.toml.

Compiler flags are portable (no -march=native): the kernels for AVX2/FMA and
AVX-512 are compiled with per-function target attributes and chosen at run
time.  FASTLAZY_DEBUG=1 builds with Cython bounds checks and -O0 -g;
FASTLAZY_SANITIZE=1 adds AddressSanitizer and UndefinedBehaviorSanitizer.
"""

import os
import sys

import numpy as np
import scipy_openblas32
from Cython.Build import cythonize
from setuptools import Extension, setup

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

compile_args = []
link_args = []
if sys.platform != "win32":
    compile_args = ["-O0", "-g"] if debug else ["-O3"]
    compile_args += ["-std=gnu11", "-Wno-psabi", "-fno-math-errno"]
    if sanitize:
        flags = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer"]
        compile_args += flags
        link_args += flags

extensions = [
    Extension(
        "fastlazy._core",
        ["src/fastlazy/_core.pyx"],
        include_dirs=[np.get_include(), scipy_openblas32.get_include_dir(),
                      "src/fastlazy"],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_9_API_VERSION")],
        extra_compile_args=compile_args,
        extra_link_args=link_args,
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives=directives,
                            include_path=["src"]))
