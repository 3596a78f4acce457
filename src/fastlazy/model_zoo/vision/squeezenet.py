"""SqueezeNet 1.0 and 1.1 as in Gluon's model zoo (MXNet 1.9), with Gluon's
attribute names, prefixes and layer order.

Fire modules: a 1x1 "squeeze" convolution, then 1x1 and 3x3 "expand"
convolutions side by side, concatenated on the channel axis (each
convolution followed by relu).  The classifier is a 1x1 convolution to
``classes`` channels, relu, and a 13x13 average pool: the feature map must
be at least 13x13 there, so the input must be 224x224 (or a size giving
exactly 13x13 for one output value per class).  Input ``(N, 3, 224, 224)``,
output ``(N, classes)``.
"""

from ... import nn
from ...block import HybridBlock
from ...containers import HybridConcurrent
from ..model_store import load_pretrained

__all__ = ["SqueezeNet", "get_squeezenet", "squeezenet1_0", "squeezenet1_1"]


def _make_fire_conv(channels, kernel_size, padding=0):
    out = nn.HybridSequential(prefix="")
    out.add(nn.Conv2D(channels, kernel_size, padding=padding),
            nn.Activation("relu"))
    return out


def _make_fire(squeeze_channels, expand1x1_channels, expand3x3_channels):
    out = nn.HybridSequential(prefix="")
    out.add(_make_fire_conv(squeeze_channels, 1))
    paths = HybridConcurrent(axis=1, prefix="")
    paths.add(_make_fire_conv(expand1x1_channels, 1))
    paths.add(_make_fire_conv(expand3x3_channels, 3, 1))
    out.add(paths)
    return out


class SqueezeNet(HybridBlock):
    """SqueezeNet ``version`` '1.0' (Iandola et al., 2016) or '1.1' (the
    official repository's, 2.4x less computation).

    Parameters
    ----------
    version : str
        '1.0' or '1.1'.
    classes : int, default 1000
    """

    def __init__(self, version, classes=1000, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        if version not in ("1.0", "1.1"):
            raise ValueError(f"SqueezeNet: unsupported version {version!r}; "
                             f"'1.0' or '1.1' expected")
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            f = self.features

            def pool():
                return nn.MaxPool2D(pool_size=3, strides=2, ceil_mode=True)

            if version == "1.0":
                f.add(nn.Conv2D(96, kernel_size=7, strides=2))
                f.add(nn.Activation("relu"))
                f.add(pool())
                f.add(_make_fire(16, 64, 64))
                f.add(_make_fire(16, 64, 64))
                f.add(_make_fire(32, 128, 128))
                f.add(pool())
                f.add(_make_fire(32, 128, 128))
                f.add(_make_fire(48, 192, 192))
                f.add(_make_fire(48, 192, 192))
                f.add(_make_fire(64, 256, 256))
                f.add(pool())
                f.add(_make_fire(64, 256, 256))
            else:
                f.add(nn.Conv2D(64, kernel_size=3, strides=2))
                f.add(nn.Activation("relu"))
                f.add(pool())
                f.add(_make_fire(16, 64, 64))
                f.add(_make_fire(16, 64, 64))
                f.add(pool())
                f.add(_make_fire(32, 128, 128))
                f.add(_make_fire(32, 128, 128))
                f.add(pool())
                f.add(_make_fire(48, 192, 192))
                f.add(_make_fire(48, 192, 192))
                f.add(_make_fire(64, 256, 256))
                f.add(_make_fire(64, 256, 256))
            f.add(nn.Dropout(0.5))

            self.output = nn.HybridSequential(prefix="")
            self.output.add(nn.Conv2D(classes, kernel_size=1),
                            nn.Activation("relu"), nn.AvgPool2D(13),
                            nn.Flatten())

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def get_squeezenet(version, pretrained=False, ctx=None, root=None, **kwargs):
    """SqueezeNet ``version`` ('1.0' or '1.1').

    Parameters
    ----------
    pretrained : bool, default False
        Load ``squeezenet{version}``'s file from ``root`` (never
        downloaded; see :func:`..model_store.get_model_file`).
    ctx : ignored
    root : str, optional
        Default ``$MXNET_HOME/models``.
    **kwargs
        ``classes``, ``prefix``, ``params``.
    """
    net = SqueezeNet(version, **kwargs)
    if pretrained:
        load_pretrained(net, f"squeezenet{version}", root)
    return net


def squeezenet1_0(**kwargs):
    """SqueezeNet 1.0; arguments of :func:`get_squeezenet`."""
    return get_squeezenet("1.0", **kwargs)


def squeezenet1_1(**kwargs):
    """SqueezeNet 1.1; arguments of :func:`get_squeezenet`."""
    return get_squeezenet("1.1", **kwargs)
