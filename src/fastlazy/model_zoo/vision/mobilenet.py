"""MobileNet and MobileNetV2 as in Gluon's model zoo (MXNet 1.9), with
Gluon's attribute names, prefixes and layer order.

MobileNet (Howard et al., 2017): a 3x3/2 convolution, then 13 depthwise
separable pairs (a 3x3 depthwise convolution, ``groups`` = channels, and a
1x1 convolution, each with BatchNorm and relu), global average pool,
Flatten, Dense.  MobileNetV2 (Sandler et al., 2018): 17 inverted-residual
:class:`LinearBottleneck` blocks with ReLU6 (``F.clip(x, 0, 6)``), a 1x1
convolution to 1280 channels, global average pool and a 1x1 convolution as
the classifier.  Input ``(N, 3, H, W)``, H and W >= 32 (224 for the
pretrained weights); output ``(N, classes)``.
"""

from ... import nn
from ...block import HybridBlock
from ..model_store import load_pretrained

__all__ = ["MobileNet", "MobileNetV2", "LinearBottleneck", "RELU6",
           "get_mobilenet", "get_mobilenet_v2",
           "mobilenet1_0", "mobilenet0_75", "mobilenet0_5", "mobilenet0_25",
           "mobilenet_v2_1_0", "mobilenet_v2_0_75", "mobilenet_v2_0_5",
           "mobilenet_v2_0_25"]


class RELU6(HybridBlock):
    """``min(max(x, 0), 6)``, MobileNetV2's activation."""

    def hybrid_forward(self, F, x):
        return F.clip(x, 0, 6)

    def __repr__(self):
        return "RELU6"


def _add_conv(out, channels=1, kernel=1, stride=1, pad=0, num_group=1,
              active=True, relu6=False):
    """Append Conv2D (no bias), BatchNorm and, if ``active``, relu or
    ReLU6 to ``out``."""
    out.add(nn.Conv2D(channels, kernel, stride, pad, groups=num_group,
                      use_bias=False))
    out.add(nn.BatchNorm(scale=True))
    if active:
        out.add(RELU6() if relu6 else nn.Activation("relu"))


def _add_conv_dw(out, dw_channels, channels, stride, relu6=False):
    """A depthwise separable pair: 3x3 depthwise, then 1x1 pointwise."""
    _add_conv(out, channels=dw_channels, kernel=3, stride=stride, pad=1,
              num_group=dw_channels, relu6=relu6)
    _add_conv(out, channels=channels, relu6=relu6)


class LinearBottleneck(HybridBlock):
    """MobileNetV2's inverted residual: 1x1 expansion to ``in_channels * t``
    (ReLU6), 3x3 depthwise with ``stride`` (ReLU6), 1x1 linear projection to
    ``channels``; the input is added when ``stride == 1`` and the channel
    counts agree.  The layers are in ``out``."""

    def __init__(self, in_channels, channels, t, stride, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        self.use_shortcut = stride == 1 and in_channels == channels
        with self.name_scope():
            self.out = nn.HybridSequential()
            _add_conv(self.out, in_channels * t, relu6=True)
            _add_conv(self.out, in_channels * t, kernel=3, stride=stride,
                      pad=1, num_group=in_channels * t, relu6=True)
            _add_conv(self.out, channels, active=False, relu6=True)

    def hybrid_forward(self, F, x):
        out = self.out(x)
        if self.use_shortcut:
            out = F.elemwise_add(out, x)
        return out


class MobileNet(HybridBlock):
    """MobileNet with width ``multiplier`` (channels scaled by it, >= 0.25).

    Parameters
    ----------
    multiplier : float, default 1.0
    classes : int, default 1000
    """

    def __init__(self, multiplier=1.0, classes=1000, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                _add_conv(self.features, channels=int(32 * multiplier),
                          kernel=3, pad=1, stride=2)
                dw_channels = [int(c * multiplier) for c in
                               [32, 64] + [128] * 2 + [256] * 2 + [512] * 6
                               + [1024]]
                channels = [int(c * multiplier) for c in
                            [64] + [128] * 2 + [256] * 2 + [512] * 6
                            + [1024] * 2]
                strides = [1, 2] * 3 + [1] * 5 + [2, 1]
                for dwc, c, s in zip(dw_channels, channels, strides):
                    _add_conv_dw(self.features, dw_channels=dwc, channels=c,
                                 stride=s)
                self.features.add(nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


class MobileNetV2(HybridBlock):
    """MobileNetV2 with width ``multiplier`` (the last 1x1 convolution keeps
    1280 channels unless ``multiplier > 1``).

    Parameters
    ----------
    multiplier : float, default 1.0
    classes : int, default 1000
    """

    def __init__(self, multiplier=1.0, classes=1000, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="features_")
            with self.features.name_scope():
                _add_conv(self.features, int(32 * multiplier), kernel=3,
                          stride=2, pad=1, relu6=True)
                in_channels_group = [int(c * multiplier) for c in
                                     [32] + [16] + [24] * 2 + [32] * 3
                                     + [64] * 4 + [96] * 3 + [160] * 3]
                channels_group = [int(c * multiplier) for c in
                                  [16] + [24] * 2 + [32] * 3 + [64] * 4
                                  + [96] * 3 + [160] * 3 + [320]]
                ts = [1] + [6] * 16
                strides = [1, 2] * 2 + [1, 1, 2] + [1] * 6 + [2] + [1] * 3
                for in_c, c, t, s in zip(in_channels_group, channels_group,
                                         ts, strides):
                    self.features.add(LinearBottleneck(
                        in_channels=in_c, channels=c, t=t, stride=s))
                last_channels = int(1280 * multiplier) if multiplier > 1.0 \
                    else 1280
                _add_conv(self.features, last_channels, relu6=True)
                self.features.add(nn.GlobalAvgPool2D())
            self.output = nn.HybridSequential(prefix="output_")
            with self.output.name_scope():
                self.output.add(
                    nn.Conv2D(classes, 1, use_bias=False,
                              prefix="pred_"),
                    nn.Flatten())

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def _version_suffix(multiplier):
    suffix = "{0:.2f}".format(multiplier)
    return suffix[:-1] if suffix in ("1.00", "0.50") else suffix


def get_mobilenet(multiplier, pretrained=False, ctx=None, root=None,
                  **kwargs):
    """MobileNet of width ``multiplier``.

    Parameters
    ----------
    pretrained : bool, default False
        Load ``mobilenet{multiplier}``'s file from ``root`` (never
        downloaded; see :func:`..model_store.get_model_file`).
    ctx : ignored
    root : str, optional
        Default ``$MXNET_HOME/models``.
    **kwargs
        ``classes``, ``prefix``, ``params``.
    """
    net = MobileNet(multiplier, **kwargs)
    if pretrained:
        load_pretrained(net, f"mobilenet{_version_suffix(multiplier)}", root)
    return net


def get_mobilenet_v2(multiplier, pretrained=False, ctx=None, root=None,
                     **kwargs):
    """MobileNetV2 of width ``multiplier``; arguments as
    :func:`get_mobilenet` (file ``mobilenetv2_{multiplier}``)."""
    net = MobileNetV2(multiplier, **kwargs)
    if pretrained:
        load_pretrained(net, f"mobilenetv2_{_version_suffix(multiplier)}",
                        root)
    return net


def mobilenet1_0(**kwargs):
    """MobileNet, width 1.0; arguments of :func:`get_mobilenet`."""
    return get_mobilenet(1.0, **kwargs)


def mobilenet0_75(**kwargs):
    """MobileNet, width 0.75; arguments of :func:`get_mobilenet`."""
    return get_mobilenet(0.75, **kwargs)


def mobilenet0_5(**kwargs):
    """MobileNet, width 0.5; arguments of :func:`get_mobilenet`."""
    return get_mobilenet(0.5, **kwargs)


def mobilenet0_25(**kwargs):
    """MobileNet, width 0.25; arguments of :func:`get_mobilenet`."""
    return get_mobilenet(0.25, **kwargs)


def mobilenet_v2_1_0(**kwargs):
    """MobileNetV2, width 1.0; arguments of :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(1.0, **kwargs)


def mobilenet_v2_0_75(**kwargs):
    """MobileNetV2, width 0.75; arguments of :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(0.75, **kwargs)


def mobilenet_v2_0_5(**kwargs):
    """MobileNetV2, width 0.5; arguments of :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(0.5, **kwargs)


def mobilenet_v2_0_25(**kwargs):
    """MobileNetV2, width 0.25; arguments of :func:`get_mobilenet_v2`."""
    return get_mobilenet_v2(0.25, **kwargs)
