"""Reading Apache MXNet's files without MXNet.

- :mod:`fastlazy.mxnet.format` decodes ``.params`` files and exported
  ``-symbol.json`` graphs;
- :mod:`fastlazy.mxnet.names` matches Gluon 1.x parameter names
  (``dense0_weight``, ``arg:``/``aux:`` keys) to a network's parameters;
- :mod:`fastlazy.mxnet.export` checks an exported graph and rebuilds it as
  a :class:`~fastlazy.SymbolBlock` (``fl.load_mxnet_export``,
  ``fl.SymbolBlock.imports``).

Nothing is imported here: ``import fastlazy`` stays fast, and each module
is loaded when a file first needs it.
"""
