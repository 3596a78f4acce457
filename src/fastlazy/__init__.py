"""fastlazy: Gluon's deferred-initialization API over a compiled forward pass.

>>> import numpy as np
>>> import fastlazy as fl
>>> from fastlazy import nn
>>> net = nn.Sequential()
>>> net.add(nn.Dense(256, activation='relu'), nn.Dense(10))
>>> net.initialize()                      # weights wait for their input size
>>> net(np.ones((2, 20))).shape           # infers (256, 20), initializes
(2, 10)
"""

# NumPy first: its extension modules then link before OpenBLAS's thousands
# of symbols join the global scope, which made importing NumPy ~30 ms slower.
import numpy  # noqa: F401,E402  (import order matters, see above)

# OpenBLAS from the scipy-openblas32 wheel must be loaded (RTLD_GLOBAL)
# before the extension, whose BLAS symbols resolve against it.
from . import _load_blas

_BLAS_PATH = _load_blas.load()

from . import init, nn, random
from ._parameter import Parameter
from ._plan import get_num_threads, set_num_threads
from ._util import bfloat16
from .errors import (DeferredInitializationError, FastLazyError,
                     OutputError, ParameterFileError, ParameterShapeError,
                     ShapeError, UnsupportedOperatorError)
from .parameter_dict import Constant, ParameterDict

__version__ = "0.1.0"

__all__ = ["Parameter", "ParameterDict", "Constant", "SymbolBlock",
           "FastLazyError",
           "DeferredInitializationError", "ShapeError", "ParameterFileError",
           "ParameterShapeError", "UnsupportedOperatorError", "OutputError",
           "load_mxnet_export", "onnx", "nn", "init", "random", "ops", "F",
           "explain", "show_config", "quantize", "bfloat16",
           "set_num_threads", "get_num_threads", "__version__"]


def load_mxnet_export(prefix, epoch=0, *, dtype=None, symbol_file=None,
                      param_file=None):
    """Rebuild a Gluon model exported with ``net.export(prefix)`` as a
    compiled :class:`SymbolBlock` and load its weights; see
    :func:`fastlazy.mxnet.export.load_mxnet_export`.  (The MXNet reader is
    imported on first use, to keep ``import fastlazy`` fast.)"""
    from .mxnet.export import load_mxnet_export as load
    return load(prefix, epoch, dtype=dtype, symbol_file=symbol_file,
                param_file=param_file)


def __getattr__(name):
    # fl.F / fl.ops (the operator namespace), fl.SymbolBlock and fl.onnx,
    # imported on first use: only tracing, hybrid_forward code, exported
    # graphs and ONNX files need them
    import importlib
    if name in ("F", "ops"):
        # import_module, not "from . import ops": that asks this function
        # for the attribute again before importing, without end
        return importlib.import_module(".ops", __name__)
    if name == "SymbolBlock":
        from .symbol_block import SymbolBlock
        return SymbolBlock
    if name == "quantize":
        from .quantization import quantize
        return quantize
    if name == "onnx":
        # fl.onnx.load / fl.onnx.export; the onnx package itself is
        # imported only when one of them runs
        return importlib.import_module(".onnx", __name__)
    raise AttributeError(f"module 'fastlazy' has no attribute {name!r}")


def explain(net, *inputs, file=None):
    """Say how ``net`` runs on ``inputs`` (arrays, or shapes with None for
    the batch): as one compiled plan, with its steps, or on the eager path,
    naming the block whose code could not be compiled and why.  Changes
    nothing; prints the report and returns it."""
    from ._compile import explain as _explain
    return _explain(net, *inputs, file=file)


def _int8_line(q):
    names = {0: "baseline", 3: "AVX2", 4: "AVX2", 5: "AVX-VNNI",
             6: "AVX-512 VNNI"}
    line = (f"{q['isa']}, {q['rows']} x {q['panel']} tile, "
            f"{q['k_group']} k per dot product")
    if q["best_level"] < 5:
        line += (" -- this CPU has no VNNI (vpdpbusd): int8 runs the "
                 f"{names[q['best_level']]} fallback")
    elif q["level"] != q["best_level"]:
        line += f" (set_isa chose it; the CPU has {names[q['best_level']]})"
    return line


def show_config(file=None):
    """Print (and return as a dict) the version, BLAS, kernels and threads."""
    import sys

    import numpy as np

    from . import _plan
    info = _plan.blas_info()
    config = {
        "fastlazy": __version__,
        "numpy": np.__version__,
        "python": sys.version.split()[0],
        "blas": f"OpenBLAS from scipy-openblas32 ({_BLAS_PATH})",
        "blas_config": info["config"],
        "blas_core": info["corename"],
        # OpenBLAS's own pool; fastlazy keeps it at 1 and runs its own
        "blas_threads": info["blas_threads"],
        "threads": _plan.get_num_threads(),
        "kernels": _plan.kernel_isa(),
        "batched": "packed weights, {} x {} float32 tile".format(
            *_plan.packed_tile()[:2]),
        "int8": _int8_line(_plan.int8_kernels()),
        # Dense layers on bfloat16 weights (net.cast('bfloat16'))
        "bfloat16": _plan.bf16_kernel(),
    }
    out = file if file is not None else sys.stdout
    for key, value in config.items():
        print(f"{key + ':':<14}{value}", file=out)
    return config
