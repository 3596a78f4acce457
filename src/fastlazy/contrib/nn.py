"""``mxnet.gluon.contrib.nn``'s containers, for code that imports them from
there: the same classes as in ``fl.nn``."""

from ..containers import Concurrent, HybridConcurrent, Identity

__all__ = ["HybridConcurrent", "Concurrent", "Identity"]
