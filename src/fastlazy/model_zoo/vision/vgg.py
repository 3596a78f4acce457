"""VGG 11/13/16/19, with or without BatchNorm, as in Gluon's model zoo
(MXNet 1.9; Simonyan and Zisserman, 2014), with Gluon's attribute names,
prefixes, layer order and initializers: blocks of 3x3 convolutions (relu)
each ended by a 2x2/2 max pool, then two Dense(4096, relu) with Dropout in
``features`` and ``output`` = Dense(classes).  The first Dense takes
512 x (H // 32) x (W // 32) inputs: 25,088 at 224x224.  Input
``(N, 3, H, W)`` with H, W >= 32; output ``(N, classes)``.
"""

from ... import nn
from ...block import HybridBlock
from ...initializers import Xavier
from ..model_store import load_pretrained

__all__ = ["VGG", "get_vgg", "vgg11", "vgg13", "vgg16", "vgg19",
           "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn"]


class VGG(HybridBlock):
    """VGG.

    Parameters
    ----------
    layers : list of int
        Convolutions per block.
    filters : list of int
        Channels of each block (as many as ``layers``).
    classes : int, default 1000
    batch_norm : bool, default False
        A BatchNorm after every convolution.
    """

    def __init__(self, layers, filters, classes=1000, batch_norm=False,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        if len(layers) != len(filters):
            raise ValueError(f"VGG: layers and filters must have the same "
                             f"length, got {layers} and {filters}")
        with self.name_scope():
            self.features = self._make_features(layers, filters, batch_norm)
            self.features.add(nn.Dense(4096, activation="relu",
                                       weight_initializer="normal",
                                       bias_initializer="zeros"),
                              nn.Dropout(rate=0.5),
                              nn.Dense(4096, activation="relu",
                                       weight_initializer="normal",
                                       bias_initializer="zeros"),
                              nn.Dropout(rate=0.5))
            self.output = nn.Dense(classes, weight_initializer="normal",
                                   bias_initializer="zeros")

    def _make_features(self, layers, filters, batch_norm):
        featurizer = nn.HybridSequential(prefix="")
        for num, channels in zip(layers, filters):
            for _ in range(num):
                featurizer.add(nn.Conv2D(
                    channels, kernel_size=3, padding=1,
                    weight_initializer=Xavier(rnd_type="gaussian",
                                              factor_type="out",
                                              magnitude=2),
                    bias_initializer="zeros"))
                if batch_norm:
                    featurizer.add(nn.BatchNorm())
                featurizer.add(nn.Activation("relu"))
            featurizer.add(nn.MaxPool2D(strides=2))
        return featurizer

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


#: depth -> (convolutions per block, channels per block)
vgg_spec = {11: ([1, 1, 2, 2, 2], [64, 128, 256, 512, 512]),
            13: ([2, 2, 2, 2, 2], [64, 128, 256, 512, 512]),
            16: ([2, 2, 3, 3, 3], [64, 128, 256, 512, 512]),
            19: ([2, 2, 4, 4, 4], [64, 128, 256, 512, 512])}


def get_vgg(num_layers, pretrained=False, ctx=None, root=None, **kwargs):
    """VGG of ``num_layers`` (11, 13, 16, 19).

    Parameters
    ----------
    pretrained : bool, default False
        Load ``vgg{num_layers}`` (``_bn`` with ``batch_norm=True``) from
        ``root`` (never downloaded; see
        :func:`..model_store.get_model_file`).
    ctx : ignored
    root : str, optional
        Default ``$MXNET_HOME/models``.
    **kwargs
        ``classes``, ``batch_norm``, ``prefix``, ``params``.
    """
    if num_layers not in vgg_spec:
        raise ValueError(f"VGG: invalid number of layers {num_layers}; "
                         f"options are {sorted(vgg_spec)}")
    layers, filters = vgg_spec[num_layers]
    net = VGG(layers, filters, **kwargs)
    if pretrained:
        suffix = "_bn" if kwargs.get("batch_norm") else ""
        load_pretrained(net, f"vgg{num_layers}{suffix}", root)
    return net


def vgg11(**kwargs):
    """VGG-11; arguments of :func:`get_vgg`."""
    return get_vgg(11, **kwargs)


def vgg13(**kwargs):
    """VGG-13; arguments of :func:`get_vgg`."""
    return get_vgg(13, **kwargs)


def vgg16(**kwargs):
    """VGG-16; arguments of :func:`get_vgg`."""
    return get_vgg(16, **kwargs)


def vgg19(**kwargs):
    """VGG-19; arguments of :func:`get_vgg`."""
    return get_vgg(19, **kwargs)


def vgg11_bn(**kwargs):
    """VGG-11 with BatchNorm; arguments of :func:`get_vgg`."""
    kwargs["batch_norm"] = True
    return get_vgg(11, **kwargs)


def vgg13_bn(**kwargs):
    """VGG-13 with BatchNorm; arguments of :func:`get_vgg`."""
    kwargs["batch_norm"] = True
    return get_vgg(13, **kwargs)


def vgg16_bn(**kwargs):
    """VGG-16 with BatchNorm; arguments of :func:`get_vgg`."""
    kwargs["batch_norm"] = True
    return get_vgg(16, **kwargs)


def vgg19_bn(**kwargs):
    """VGG-19 with BatchNorm; arguments of :func:`get_vgg`."""
    kwargs["batch_norm"] = True
    return get_vgg(19, **kwargs)
