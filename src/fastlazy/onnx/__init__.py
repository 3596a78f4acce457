"""ONNX files: :func:`export` writes a network fastlazy compiles as a
standard ONNX model (see docs/onnx.md).

Needs the ``onnx`` package (``pip install 'fastlazy[onnx]'``), which is
imported only when a function here runs: ``import fastlazy.onnx`` does not
import it.
"""

# Bound here, once the submodule is imported: the name ``export`` is then
# the function, never the submodule of the same name.
from .export import export

__all__ = ["export"]
