"""Gluon's model zoo for fastlazy: ``fastlazy.model_zoo.vision``.

The networks of ``mxnet.gluon.model_zoo`` (MXNet 1.9) with Gluon's
definitions -- class, attribute and parameter names, layer order -- so
that a file written by MXNet's ``net.save_parameters`` for a model-zoo
network loads with ``net.load_parameters(path)`` and gives MXNet's
outputs; each runs as one compiled plan.  fastlazy never downloads:
``pretrained=True`` reads MXNet's file from a folder (``root=``, default
``$MXNET_HOME/models``).  Not imported by ``import fastlazy``.

>>> from fastlazy.model_zoo import vision
>>> net = vision.get_model('resnet18_v1')
"""

from . import model_store, vision
from .vision import get_model

__all__ = ["vision", "model_store", "get_model"]
