"""ONNX files in and out: ``fl.onnx.load`` and ``fl.onnx.export``.

``fl.onnx.load(path)`` turns an ONNX model (written by ``torch.onnx.export``,
skl2onnx, ...) into a compiled fastlazy block; ``fl.onnx.export(net, path)``
writes a fastlazy network as an ONNX model.  Both need the ``onnx`` package
(``pip install fastlazy[onnx]``), which is imported only when one of them
runs: ``import fastlazy`` never imports this package, and importing this
package does not import ``onnx``.

The functions have the names of their modules (``fastlazy/onnx/load.py``
holds ``load``).  Python's import system binds a submodule to its package's
attribute of the same name once it is imported, which would replace the
function ``fl.onnx.load`` by the module; the package's module class below
keeps the function there.  So ``import fastlazy.onnx.load as m`` gives the
function too; reach a module itself with ``from fastlazy.onnx.load import
...`` or ``importlib.import_module("fastlazy.onnx.load")``.
"""

import sys
import types

from .export import export
from .load import OnnxBlock, load

__all__ = ["load", "export", "OnnxBlock"]

#: attribute -> the module that defines a function of that name
_FUNCTIONS = {"load": "load", "export": "export"}


class _Package(types.ModuleType):
    """``fastlazy.onnx``: ``load`` and ``export`` stay functions when their
    modules are imported (see the module docstring)."""

    def __setattr__(self, name, value):
        if name in _FUNCTIONS and isinstance(value, types.ModuleType) \
                and hasattr(value, name):
            value = getattr(value, name)
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package

