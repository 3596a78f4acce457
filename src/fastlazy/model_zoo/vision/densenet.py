"""DenseNet-BC 121/161/169/201 as in Gluon's model zoo (MXNet 1.9; Huang et
al., "Densely Connected Convolutional Networks"), with Gluon's attribute
names, prefixes and layer order.

Each dense layer is BN, relu, 1x1 conv (``bn_size * growth_rate``), BN,
relu, 3x3 conv (``growth_rate``), and its output is concatenated to its
input on the channel axis (a :class:`HybridConcurrent` of an
:class:`Identity` and the layer).  Transitions halve the channels (1x1
conv) and the size (2x2/2 average pool).  The classifier ends in a 7x7
average pool: the input must be 224x224 (a size giving a 7x7 map there).
Input ``(N, 3, 224, 224)``, output ``(N, classes)``.
"""

from ... import nn
from ...block import HybridBlock
from ...containers import HybridConcurrent, Identity
from ..model_store import load_pretrained

__all__ = ["DenseNet", "get_densenet", "densenet121", "densenet161",
           "densenet169", "densenet201"]


def _make_dense_layer(growth_rate, bn_size, dropout):
    new_features = nn.HybridSequential(prefix="")
    new_features.add(nn.BatchNorm(), nn.Activation("relu"),
                     nn.Conv2D(bn_size * growth_rate, kernel_size=1,
                               use_bias=False),
                     nn.BatchNorm(), nn.Activation("relu"),
                     nn.Conv2D(growth_rate, kernel_size=3, padding=1,
                               use_bias=False))
    if dropout:
        new_features.add(nn.Dropout(dropout))
    out = HybridConcurrent(axis=1, prefix="")
    out.add(Identity(), new_features)
    return out


def _make_dense_block(num_layers, bn_size, growth_rate, dropout,
                      stage_index):
    out = nn.HybridSequential(prefix=f"stage{stage_index}_")
    with out.name_scope():
        for _ in range(num_layers):
            out.add(_make_dense_layer(growth_rate, bn_size, dropout))
    return out


def _make_transition(num_output_features):
    out = nn.HybridSequential(prefix="")
    out.add(nn.BatchNorm(), nn.Activation("relu"),
            nn.Conv2D(num_output_features, kernel_size=1, use_bias=False),
            nn.AvgPool2D(pool_size=2, strides=2))
    return out


class DenseNet(HybridBlock):
    """DenseNet-BC.

    Parameters
    ----------
    num_init_features : int
        Channels of the first (7x7/2) convolution.
    growth_rate : int
        Channels each dense layer adds (``k`` in the paper).
    block_config : list of int
        Dense layers per block.
    bn_size : int, default 4
        The bottleneck has ``bn_size * growth_rate`` channels.
    dropout : float, default 0
        Dropout after each dense layer (the identity at inference).
    classes : int, default 1000
    """

    def __init__(self, num_init_features, growth_rate, block_config,
                 bn_size=4, dropout=0, classes=1000, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.Conv2D(num_init_features, kernel_size=7,
                                        strides=2, padding=3,
                                        use_bias=False),
                              nn.BatchNorm(), nn.Activation("relu"),
                              nn.MaxPool2D(pool_size=3, strides=2,
                                           padding=1))
            num_features = num_init_features
            for i, num_layers in enumerate(block_config):
                self.features.add(_make_dense_block(
                    num_layers, bn_size, growth_rate, dropout, i + 1))
                num_features += num_layers * growth_rate
                if i != len(block_config) - 1:
                    self.features.add(_make_transition(num_features // 2))
                    num_features //= 2
            self.features.add(nn.BatchNorm(), nn.Activation("relu"),
                              nn.AvgPool2D(pool_size=7), nn.Flatten())
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


#: depth -> (first convolution's channels, growth rate, layers per block)
densenet_spec = {121: (64, 32, [6, 12, 24, 16]),
                 161: (96, 48, [6, 12, 36, 24]),
                 169: (64, 32, [6, 12, 32, 32]),
                 201: (64, 32, [6, 12, 48, 32])}


def get_densenet(num_layers, pretrained=False, ctx=None, root=None,
                 **kwargs):
    """DenseNet-BC of ``num_layers`` (121, 161, 169, 201).

    Parameters
    ----------
    pretrained : bool, default False
        Load ``densenet{num_layers}``'s file from ``root`` (never
        downloaded; see :func:`..model_store.get_model_file`).
    ctx : ignored
    root : str, optional
        Default ``$MXNET_HOME/models``.
    **kwargs
        ``bn_size``, ``dropout``, ``classes``, ``prefix``, ``params``.
    """
    if num_layers not in densenet_spec:
        raise ValueError(f"DenseNet: invalid number of layers {num_layers}; "
                         f"options are {sorted(densenet_spec)}")
    num_init_features, growth_rate, block_config = densenet_spec[num_layers]
    net = DenseNet(num_init_features, growth_rate, block_config, **kwargs)
    if pretrained:
        load_pretrained(net, f"densenet{num_layers}", root)
    return net


def densenet121(**kwargs):
    """DenseNet-BC-121; arguments of :func:`get_densenet`."""
    return get_densenet(121, **kwargs)


def densenet161(**kwargs):
    """DenseNet-BC-161; arguments of :func:`get_densenet`."""
    return get_densenet(161, **kwargs)


def densenet169(**kwargs):
    """DenseNet-BC-169; arguments of :func:`get_densenet`."""
    return get_densenet(169, **kwargs)


def densenet201(**kwargs):
    """DenseNet-BC-201; arguments of :func:`get_densenet`."""
    return get_densenet(201, **kwargs)
