"""Load OpenBLAS from the scipy-openblas32 wheel before the extension.

The extension is compiled against ``scipy_openblas32``'s ``cblas.h`` but not
linked to it; its BLAS symbols resolve against a library loaded with
RTLD_GLOBAL.  ``import scipy_openblas32`` does that, but also reads its
package metadata through ``importlib.metadata`` (~15 ms).  Here we find the
library next to the package without executing its ``__init__`` and load it
ourselves, falling back to the import where that does not work.
"""

import importlib.util
import os
import sys


def load():
    """Load the library; returns its path (or the package's, on fallback)."""
    spec = importlib.util.find_spec("scipy_openblas32")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(
            "fastlazy needs the scipy-openblas32 package (the OpenBLAS build "
            "NumPy and SciPy use): pip install scipy-openblas32")
    libdir = os.path.join(spec.submodule_search_locations[0], "lib")
    if sys.platform.startswith("linux") or sys.platform == "darwin":
        names = sorted(n for n in os.listdir(libdir)
                       if n.startswith("libscipy_openblas")
                       and (".so" in n or n.endswith(".dylib")))
        if names:
            import ctypes
            path = os.path.join(libdir, names[0])
            ctypes.CDLL(path, mode=ctypes.RTLD_GLOBAL)
            return path
    import scipy_openblas32  # noqa: F401  (loads the library globally)
    return libdir
