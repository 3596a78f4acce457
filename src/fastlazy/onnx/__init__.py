"""ONNX files: :func:`export` writes a network fastlazy compiles as a
standard ONNX model.

Needs the ``onnx`` package (``pip install 'fastlazy[onnx]'``), which is
imported only when a function here runs: ``import fastlazy.onnx`` is free.
"""

__all__ = ["export"]


def __getattr__(name):
    # the function lives in the submodule of the same name: importing it
    # binds the submodule to this name, so the function is put back
    if name == "export":
        from .export import export as function
        globals()[name] = function
        return function
    raise AttributeError(f"module 'fastlazy.onnx' has no attribute {name!r}")
