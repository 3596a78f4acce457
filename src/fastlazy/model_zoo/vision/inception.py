"""Inception v3 as in Gluon's model zoo (MXNet 1.9; Szegedy et al.,
"Rethinking the Inception Architecture for Computer Vision"), with Gluon's
attribute names, prefixes (``A1_`` ... ``E2_``) and layer order.

Every convolution is Conv2D (no bias), BatchNorm (epsilon 0.001), relu;
the A-E modules run their branches side by side and concatenate them on
the channel axis (:class:`HybridConcurrent`), E's branches split again
into 1x3 and 3x1 convolutions.  The classifier ends in an 8x8 average
pool: the input must be 299x299.  Input ``(N, 3, 299, 299)``, output
``(N, classes)``.
"""

from ... import nn
from ...block import HybridBlock
from ...containers import HybridConcurrent
from ..model_store import load_pretrained

__all__ = ["Inception3", "inception_v3"]


def _make_basic_conv(**kwargs):
    out = nn.HybridSequential(prefix="")
    out.add(nn.Conv2D(use_bias=False, **kwargs),
            nn.BatchNorm(epsilon=0.001), nn.Activation("relu"))
    return out


_SETTING_NAMES = ("channels", "kernel_size", "strides", "padding")


def _make_branch(use_pool, *conv_settings):
    """A branch: an optional pool ('avg': 3x3/1 padded, 'max': 3x3/2), then
    one basic convolution per (channels, kernel, strides, padding) tuple
    (None: Conv2D's default)."""
    out = nn.HybridSequential(prefix="")
    if use_pool == "avg":
        out.add(nn.AvgPool2D(pool_size=3, strides=1, padding=1))
    elif use_pool == "max":
        out.add(nn.MaxPool2D(pool_size=3, strides=2))
    for setting in conv_settings:
        kwargs = {name: value for name, value in zip(_SETTING_NAMES, setting)
                  if value is not None}
        out.add(_make_basic_conv(**kwargs))
    return out


def _concurrent(prefix):
    return HybridConcurrent(axis=1, prefix=prefix)


def _make_A(pool_features, prefix):
    out = _concurrent(prefix)
    with out.name_scope():
        out.add(_make_branch(None, (64, 1, None, None)))
        out.add(_make_branch(None, (48, 1, None, None), (64, 5, None, 2)))
        out.add(_make_branch(None, (64, 1, None, None), (96, 3, None, 1),
                             (96, 3, None, 1)))
        out.add(_make_branch("avg", (pool_features, 1, None, None)))
    return out


def _make_B(prefix):
    out = _concurrent(prefix)
    with out.name_scope():
        out.add(_make_branch(None, (384, 3, 2, None)))
        out.add(_make_branch(None, (64, 1, None, None), (96, 3, None, 1),
                             (96, 3, 2, None)))
        out.add(_make_branch("max"))
    return out


def _make_C(channels_7x7, prefix):
    c = channels_7x7
    out = _concurrent(prefix)
    with out.name_scope():
        out.add(_make_branch(None, (192, 1, None, None)))
        out.add(_make_branch(None, (c, 1, None, None),
                             (c, (1, 7), None, (0, 3)),
                             (192, (7, 1), None, (3, 0))))
        out.add(_make_branch(None, (c, 1, None, None),
                             (c, (7, 1), None, (3, 0)),
                             (c, (1, 7), None, (0, 3)),
                             (c, (7, 1), None, (3, 0)),
                             (192, (1, 7), None, (0, 3))))
        out.add(_make_branch("avg", (192, 1, None, None)))
    return out


def _make_D(prefix):
    out = _concurrent(prefix)
    with out.name_scope():
        out.add(_make_branch(None, (192, 1, None, None), (320, 3, 2, None)))
        out.add(_make_branch(None, (192, 1, None, None),
                             (192, (1, 7), None, (0, 3)),
                             (192, (7, 1), None, (3, 0)),
                             (192, 3, 2, None)))
        out.add(_make_branch("max"))
    return out


def _make_E(prefix):
    out = _concurrent(prefix)
    with out.name_scope():
        out.add(_make_branch(None, (320, 1, None, None)))

        branch_3x3 = nn.HybridSequential(prefix="")
        out.add(branch_3x3)
        branch_3x3.add(_make_branch(None, (384, 1, None, None)))
        split = _concurrent("")
        split.add(_make_branch(None, (384, (1, 3), None, (0, 1))))
        split.add(_make_branch(None, (384, (3, 1), None, (1, 0))))
        branch_3x3.add(split)

        branch_3x3dbl = nn.HybridSequential(prefix="")
        out.add(branch_3x3dbl)
        branch_3x3dbl.add(_make_branch(None, (448, 1, None, None),
                                       (384, 3, None, 1)))
        split = _concurrent("")
        branch_3x3dbl.add(split)
        split.add(_make_branch(None, (384, (1, 3), None, (0, 1))))
        split.add(_make_branch(None, (384, (3, 1), None, (1, 0))))

        out.add(_make_branch("avg", (192, 1, None, None)))
    return out


class Inception3(HybridBlock):
    """Inception v3 (without the auxiliary classifier, as Gluon's).

    Parameters
    ----------
    classes : int, default 1000
    """

    def __init__(self, classes=1000, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            f = self.features
            f.add(_make_basic_conv(channels=32, kernel_size=3, strides=2))
            f.add(_make_basic_conv(channels=32, kernel_size=3))
            f.add(_make_basic_conv(channels=64, kernel_size=3, padding=1))
            f.add(nn.MaxPool2D(pool_size=3, strides=2))
            f.add(_make_basic_conv(channels=80, kernel_size=1))
            f.add(_make_basic_conv(channels=192, kernel_size=3))
            f.add(nn.MaxPool2D(pool_size=3, strides=2))
            f.add(_make_A(32, "A1_"))
            f.add(_make_A(64, "A2_"))
            f.add(_make_A(64, "A3_"))
            f.add(_make_B("B_"))
            f.add(_make_C(128, "C1_"))
            f.add(_make_C(160, "C2_"))
            f.add(_make_C(160, "C3_"))
            f.add(_make_C(192, "C4_"))
            f.add(_make_D("D_"))
            f.add(_make_E("E1_"))
            f.add(_make_E("E2_"))
            f.add(nn.AvgPool2D(pool_size=8))
            f.add(nn.Dropout(0.5))
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def inception_v3(pretrained=False, ctx=None, root=None, **kwargs):
    """Inception v3.

    Parameters
    ----------
    pretrained : bool, default False
        Load ``inceptionv3``'s file from ``root`` (never downloaded; see
        :func:`..model_store.get_model_file`).
    ctx : ignored
    root : str, optional
        Default ``$MXNET_HOME/models``.
    **kwargs
        ``classes``, ``prefix``, ``params``.
    """
    net = Inception3(**kwargs)
    if pretrained:
        load_pretrained(net, "inceptionv3", root)
    return net
