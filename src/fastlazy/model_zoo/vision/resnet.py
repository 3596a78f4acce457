"""ResNet V1 and V2 as in Gluon's model zoo (MXNet 1.9): the same blocks,
attribute names, prefixes and layer order, so that parameter names
(``resnetv10_stage1_conv0_weight``) and structural keys
(``features.4.0.body.0.weight``) are Gluon's.

V1 (He et al., "Deep Residual Learning for Image Recognition"): conv -> BN
-> relu inside the block, relu after the residual sum.  V2 (He et al.,
"Identity Mappings in Deep Residual Networks"): BN -> relu before each
convolution, a plain sum.  Input ``(N, 3, H, W)``; the stem divides H and W
by 4 and the stages 2, 3, 4 by 2 each, then a global average pool: any
``H, W >= 32`` works (224 for the pretrained weights).  Output
``(N, classes)``.
"""

from ... import nn
from ...block import HybridBlock
from ..model_store import load_pretrained

__all__ = ["ResNetV1", "ResNetV2", "BasicBlockV1", "BasicBlockV2",
           "BottleneckV1", "BottleneckV2", "get_resnet",
           "resnet18_v1", "resnet34_v1", "resnet50_v1", "resnet101_v1",
           "resnet152_v1", "resnet18_v2", "resnet34_v2", "resnet50_v2",
           "resnet101_v2", "resnet152_v2"]


def _conv3x3(channels, stride, in_channels):
    return nn.Conv2D(channels, kernel_size=3, strides=stride, padding=1,
                     use_bias=False, in_channels=in_channels)


class BasicBlockV1(HybridBlock):
    """Two 3x3 convolutions with BatchNorm, a shortcut (1x1 convolution +
    BatchNorm when ``downsample``) and relu after the sum (ResNet-18/34 V1).

    Parameters
    ----------
    channels : int
        Output channels.
    stride : int
        Stride of the first convolution (and of the shortcut).
    downsample : bool, default False
        Project the shortcut (needed when stride or channels change).
    in_channels : int, default 0
        Input channels; 0 infers them at the first forward pass.
    """

    def __init__(self, channels, stride, downsample=False, in_channels=0,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.body = nn.HybridSequential(prefix="")
        self.body.add(_conv3x3(channels, stride, in_channels),
                      nn.BatchNorm(), nn.Activation("relu"),
                      _conv3x3(channels, 1, channels), nn.BatchNorm())
        if downsample:
            self.downsample = nn.HybridSequential(prefix="")
            self.downsample.add(
                nn.Conv2D(channels, kernel_size=1, strides=stride,
                          use_bias=False, in_channels=in_channels),
                nn.BatchNorm())
        else:
            self.downsample = None

    def hybrid_forward(self, F, x):
        residual = x
        x = self.body(x)
        if self.downsample is not None:
            residual = self.downsample(residual)
        return F.Activation(residual + x, act_type="relu")


class BottleneckV1(HybridBlock):
    """1x1 (channels/4), 3x3 (channels/4), 1x1 (channels) convolutions with
    BatchNorm, a shortcut and relu after the sum (ResNet-50/101/152 V1).
    Parameters as :class:`BasicBlockV1`."""

    def __init__(self, channels, stride, downsample=False, in_channels=0,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.body = nn.HybridSequential(prefix="")
        self.body.add(nn.Conv2D(channels // 4, kernel_size=1, strides=stride),
                      nn.BatchNorm(), nn.Activation("relu"),
                      _conv3x3(channels // 4, 1, channels // 4),
                      nn.BatchNorm(), nn.Activation("relu"),
                      nn.Conv2D(channels, kernel_size=1, strides=1),
                      nn.BatchNorm())
        if downsample:
            self.downsample = nn.HybridSequential(prefix="")
            self.downsample.add(
                nn.Conv2D(channels, kernel_size=1, strides=stride,
                          use_bias=False, in_channels=in_channels),
                nn.BatchNorm())
        else:
            self.downsample = None

    def hybrid_forward(self, F, x):
        residual = x
        x = self.body(x)
        if self.downsample is not None:
            residual = self.downsample(residual)
        return F.Activation(x + residual, act_type="relu")


class BasicBlockV2(HybridBlock):
    """Pre-activation block: BN, relu, 3x3 conv, BN, relu, 3x3 conv, plus
    the shortcut (a 1x1 convolution of the activated input when
    ``downsample``) (ResNet-18/34 V2).  Parameters as
    :class:`BasicBlockV1`."""

    def __init__(self, channels, stride, downsample=False, in_channels=0,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.bn1 = nn.BatchNorm()
        self.conv1 = _conv3x3(channels, stride, in_channels)
        self.bn2 = nn.BatchNorm()
        self.conv2 = _conv3x3(channels, 1, channels)
        if downsample:
            self.downsample = nn.Conv2D(channels, 1, stride, use_bias=False,
                                        in_channels=in_channels)
        else:
            self.downsample = None

    def hybrid_forward(self, F, x):
        residual = x
        x = F.Activation(self.bn1(x), act_type="relu")
        if self.downsample is not None:
            residual = self.downsample(x)
        x = self.conv1(x)
        x = F.Activation(self.bn2(x), act_type="relu")
        x = self.conv2(x)
        return x + residual


class BottleneckV2(HybridBlock):
    """Pre-activation bottleneck: (BN, relu, conv) x 3 with 1x1, 3x3, 1x1
    kernels, plus the shortcut (ResNet-50/101/152 V2).  Parameters as
    :class:`BasicBlockV1`."""

    def __init__(self, channels, stride, downsample=False, in_channels=0,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self.bn1 = nn.BatchNorm()
        self.conv1 = nn.Conv2D(channels // 4, kernel_size=1, strides=1,
                               use_bias=False)
        self.bn2 = nn.BatchNorm()
        self.conv2 = _conv3x3(channels // 4, stride, channels // 4)
        self.bn3 = nn.BatchNorm()
        self.conv3 = nn.Conv2D(channels, kernel_size=1, strides=1,
                               use_bias=False)
        if downsample:
            self.downsample = nn.Conv2D(channels, 1, stride, use_bias=False,
                                        in_channels=in_channels)
        else:
            self.downsample = None

    def hybrid_forward(self, F, x):
        residual = x
        x = F.Activation(self.bn1(x), act_type="relu")
        if self.downsample is not None:
            residual = self.downsample(x)
        x = self.conv1(x)
        x = F.Activation(self.bn2(x), act_type="relu")
        x = self.conv2(x)
        x = F.Activation(self.bn3(x), act_type="relu")
        x = self.conv3(x)
        return x + residual


def _make_stage(block, num_blocks, channels, stride, stage_index,
                in_channels):
    stage = nn.HybridSequential(prefix=f"stage{stage_index}_")
    with stage.name_scope():
        stage.add(block(channels, stride, channels != in_channels,
                        in_channels=in_channels, prefix=""))
        for _ in range(num_blocks - 1):
            stage.add(block(channels, 1, False, in_channels=channels,
                            prefix=""))
    return stage


def _check_spec(layers, channels):
    if len(layers) != len(channels) - 1:
        raise ValueError(f"ResNet: channels must have one entry more than "
                         f"layers (the stem's), got layers={layers} and "
                         f"channels={channels}")


class ResNetV1(HybridBlock):
    """ResNet V1: stem (7x7/2 conv, BN, relu, 3x3/2 max pool; or one 3x3
    conv with ``thumbnail``), four stages, global average pool, Dense.

    Parameters
    ----------
    block : type
        :class:`BasicBlockV1` or :class:`BottleneckV1`.
    layers : list of int
        Blocks per stage.
    channels : list of int
        The stem's channels, then each stage's (one more than ``layers``).
    classes : int, default 1000
    thumbnail : bool, default False
        A 3x3 stride-1 stem for small images (CIFAR).

    ``features`` holds the stem, the stages (``stage1_`` ...) and the pool;
    ``output`` the Dense layer.
    """

    def __init__(self, block, layers, channels, classes=1000, thumbnail=False,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        _check_spec(layers, channels)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            if thumbnail:
                self.features.add(_conv3x3(channels[0], 1, 0))
            else:
                self.features.add(nn.Conv2D(channels[0], 7, 2, 3,
                                            use_bias=False),
                                  nn.BatchNorm(), nn.Activation("relu"),
                                  nn.MaxPool2D(3, 2, 1))
            for i, num_blocks in enumerate(layers):
                self.features.add(_make_stage(
                    block, num_blocks, channels[i + 1], 1 if i == 0 else 2,
                    i + 1, channels[i]))
            self.features.add(nn.GlobalAvgPool2D())
            self.output = nn.Dense(classes, in_units=channels[-1])

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


class ResNetV2(HybridBlock):
    """ResNet V2: a BatchNorm of the input (no scale, no shift), the stem,
    four pre-activation stages, BN, relu, global average pool, Flatten,
    Dense.  Parameters as :class:`ResNetV1` (blocks
    :class:`BasicBlockV2` or :class:`BottleneckV2`)."""

    def __init__(self, block, layers, channels, classes=1000, thumbnail=False,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        _check_spec(layers, channels)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            self.features.add(nn.BatchNorm(scale=False, center=False))
            if thumbnail:
                self.features.add(_conv3x3(channels[0], 1, 0))
            else:
                self.features.add(nn.Conv2D(channels[0], 7, 2, 3,
                                            use_bias=False),
                                  nn.BatchNorm(), nn.Activation("relu"),
                                  nn.MaxPool2D(3, 2, 1))
            in_channels = channels[0]
            for i, num_blocks in enumerate(layers):
                self.features.add(_make_stage(
                    block, num_blocks, channels[i + 1], 1 if i == 0 else 2,
                    i + 1, in_channels))
                in_channels = channels[i + 1]
            self.features.add(nn.BatchNorm(), nn.Activation("relu"),
                              nn.GlobalAvgPool2D(), nn.Flatten())
            self.output = nn.Dense(classes, in_units=in_channels)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


#: depth -> (block kind, blocks per stage, channels of stem and stages)
resnet_spec = {18: ("basic_block", [2, 2, 2, 2], [64, 64, 128, 256, 512]),
               34: ("basic_block", [3, 4, 6, 3], [64, 64, 128, 256, 512]),
               50: ("bottle_neck", [3, 4, 6, 3], [64, 256, 512, 1024, 2048]),
               101: ("bottle_neck", [3, 4, 23, 3],
                     [64, 256, 512, 1024, 2048]),
               152: ("bottle_neck", [3, 8, 36, 3],
                     [64, 256, 512, 1024, 2048])}

resnet_net_versions = [ResNetV1, ResNetV2]
resnet_block_versions = [
    {"basic_block": BasicBlockV1, "bottle_neck": BottleneckV1},
    {"basic_block": BasicBlockV2, "bottle_neck": BottleneckV2}]


def get_resnet(version, num_layers, pretrained=False, ctx=None, root=None,
               **kwargs):
    """ResNet ``version`` (1 or 2) of ``num_layers`` (18, 34, 50, 101, 152).

    Parameters
    ----------
    pretrained : bool, default False
        Load ``resnet{num_layers}_v{version}``'s file from ``root``
        (never downloaded; see :func:`..model_store.get_model_file`).
    ctx : ignored
        fastlazy runs on the CPU.
    root : str, optional
        Folder of the pretrained file; default ``$MXNET_HOME/models``.
    **kwargs
        ``classes``, ``thumbnail``, ``prefix``, ``params``.
    """
    if num_layers not in resnet_spec:
        raise ValueError(f"ResNet: invalid number of layers {num_layers}; "
                         f"options are {sorted(resnet_spec)}")
    if version not in (1, 2):
        raise ValueError(f"ResNet: invalid version {version}; options are "
                         f"1 and 2")
    kind, layers, channels = resnet_spec[num_layers]
    net = resnet_net_versions[version - 1](
        resnet_block_versions[version - 1][kind], layers, channels, **kwargs)
    if pretrained:
        load_pretrained(net, f"resnet{num_layers}_v{version}", root)
    return net


def resnet18_v1(**kwargs):
    """ResNet-18 V1; arguments of :func:`get_resnet`."""
    return get_resnet(1, 18, **kwargs)


def resnet34_v1(**kwargs):
    """ResNet-34 V1; arguments of :func:`get_resnet`."""
    return get_resnet(1, 34, **kwargs)


def resnet50_v1(**kwargs):
    """ResNet-50 V1; arguments of :func:`get_resnet`."""
    return get_resnet(1, 50, **kwargs)


def resnet101_v1(**kwargs):
    """ResNet-101 V1; arguments of :func:`get_resnet`."""
    return get_resnet(1, 101, **kwargs)


def resnet152_v1(**kwargs):
    """ResNet-152 V1; arguments of :func:`get_resnet`."""
    return get_resnet(1, 152, **kwargs)


def resnet18_v2(**kwargs):
    """ResNet-18 V2; arguments of :func:`get_resnet`."""
    return get_resnet(2, 18, **kwargs)


def resnet34_v2(**kwargs):
    """ResNet-34 V2; arguments of :func:`get_resnet`."""
    return get_resnet(2, 34, **kwargs)


def resnet50_v2(**kwargs):
    """ResNet-50 V2; arguments of :func:`get_resnet`."""
    return get_resnet(2, 50, **kwargs)


def resnet101_v2(**kwargs):
    """ResNet-101 V2; arguments of :func:`get_resnet`."""
    return get_resnet(2, 101, **kwargs)


def resnet152_v2(**kwargs):
    """ResNet-152 V2; arguments of :func:`get_resnet`."""
    return get_resnet(2, 152, **kwargs)
