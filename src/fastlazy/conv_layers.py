"""Layers of convolutional networks: Conv2D, pooling, BatchNorm, LayerNorm.

Gluon-compatible (MXNet 1.9): the same names, argument names, defaults,
parameter names and shapes, NCHW layout.  Input channels are deferred like
Dense's ``in_units``: with ``in_channels=0`` a weight is
``(channels, -1, kh, kw)`` until the first forward pass (or ``build``, or a
loaded file) fixes it.

Each layer states its shape rule once, in ``_infer``, and describes its
compiled work in ``_emit`` as typed steps (:mod:`fastlazy._steps`); the plan
runs convolutions as im2col + GEMM with bias, a following BatchNorm and the
activation fused into one pass over the output, and pooling and
normalization as ``nogil`` loops.
"""

from ._plan import activation_code
from ._util import is_int as _is_int
from ._util import is_bfloat16
from ._util import prod as _prod
from .block import Block
from .errors import ShapeError

__all__ = ["Conv2D", "MaxPool2D", "AvgPool2D", "GlobalMaxPool2D",
           "GlobalAvgPool2D", "BatchNorm", "LayerNorm"]


def _pair(value, what, where, minimum):
    """``value`` (an int or a pair of ints) as a 2-tuple of ints >= minimum."""
    if _is_int(value):
        pair = (int(value), int(value))
    else:
        try:
            pair = tuple(value)
        except TypeError:
            pair = None
        if pair is None or len(pair) != 2 or not all(_is_int(v)
                                                     for v in pair):
            raise TypeError(f"{where}: {what} must be an int or a pair of "
                            f"ints, got {value!r}")
        pair = (int(pair[0]), int(pair[1]))
    if min(pair) < minimum:
        raise ValueError(f"{where}: {what} must be at least {minimum}, got "
                         f"{value!r}")
    return pair


def _count(value, what, where, minimum):
    if not _is_int(value) or value < minimum:
        raise ValueError(f"{where}: {what} must be an int of at least "
                         f"{minimum}, got {value!r}")
    return int(value)


def _check_layout(layout, where):
    if layout != "NCHW":
        raise ValueError(f"{where}: only layout='NCHW' is supported, got "
                         f"{layout!r}; transpose the input to (batch, "
                         f"channels, height, width), e.g. "
                         f"x.transpose(0, 3, 1, 2) for NHWC")


def _need_4d(shape, where):
    if len(shape) != 4:
        raise ShapeError(
            f"{where} expects a 4-D input (batch, channels, height, width) "
            f"in NCHW layout, but received an input of shape {tuple(shape)}"
            f". Add the missing axes, e.g. x.reshape(n, 1, h, w) for "
            f"single-channel images.")
    if 0 in shape[1:]:
        raise ShapeError(f"{where}: received an input of shape "
                         f"{tuple(shape)} with an empty axis; it needs at "
                         f"least one channel, row and column")


def _norm_axis(axis, shape, where):
    nd = len(shape)
    if nd < 2:
        raise ShapeError(f"{where} expects an input with a batch axis and at "
                         f"least one more, got shape {tuple(shape)}; for a "
                         f"single sample use x[None]")
    ax = axis + nd if axis < 0 else axis
    if not 0 <= ax < nd:
        raise ShapeError(f"{where}: axis={axis} is out of range for an "
                         f"input of shape {tuple(shape)}")
    if ax == 0:
        raise ShapeError(f"{where}: axis={axis} is the batch axis of the "
                         f"input of shape {tuple(shape)}; fastlazy "
                         f"normalizes each sample on its own, so choose a "
                         f"feature axis")
    if shape[ax] == 0:
        raise ShapeError(f"{where}: the input of shape {tuple(shape)} has "
                         f"an empty axis {axis}")
    return ax


def _infer_channels(layer, pending, params, channels, shape, what):
    """Record ``(channels,)`` in ``pending`` for every 1-D parameter in
    ``params`` still unknown; ShapeError naming the layer when a known one
    differs."""
    for p in params:
        cur = pending.get(p, p.shape)
        if cur[0] == -1:
            pending[p] = (channels,)
        elif cur[0] != channels:
            raise ShapeError(
                f"{layer._where()} expects {cur[0]} {what} (parameter "
                f"{p.name} has shape {cur}), but received an input of shape "
                f"{tuple(shape)} with {channels}. Feed inputs with {cur[0]} "
                f"{what}, or use a new layer for this size.")


class _ShapeLayer(Block):
    """Shared plumbing: the layer's name in messages and pending shapes."""

    _plannable = True
    _kind = "Layer"
    # parameters that are statistics, not learned (for summary())
    _aux_names = ()

    def _where(self):
        return f"{self._kind} layer '{self.name}'"

    def _infer(self, shape, pending):
        return self._infer_shapes(tuple(shape), pending)


# ---------------------------------------------------------------------------
# Convolution


class Conv2D(_ShapeLayer):
    """2-D convolution of NCHW images: ``activation(conv(x, weight) + b)``.

    Parameters
    ----------
    channels : int
        Output channels.
    kernel_size : int or (int, int)
    strides : int or (int, int), default (1, 1)
    padding : int or (int, int), default (0, 0)
        Zeros added on both sides of height and width.
    dilation : int or (int, int), default (1, 1)
    groups : int, default 1
        Input and output channels are split into ``groups`` independent
        convolutions; both counts must divide by it.
    layout : 'NCHW'
        The only layout supported.
    activation : str or None
        'relu', 'sigmoid', 'tanh', 'softrelu', 'softsign', 'gelu', 'silu'.
    use_bias : bool, default True
    weight_initializer, bias_initializer : Initializer or str
        The parameters' own initializers (bias: zeros by default).
    in_channels : int, default 0
        Input channels; 0 defers them to the first forward pass.
    dtype : 'float32', 'float64' or 'bfloat16'
        'bfloat16': the weight is stored as bfloat16, the bias float32
        (see :meth:`Block.cast`).
    prefix, params : see :class:`~fastlazy.block.Block`.

    Shapes: input ``(N, in_channels, H, W)``, output ``(N, channels, OH, OW)``
    with ``OH = (H + 2*padding - dilation*(kernel-1) - 1) // stride + 1``
    (likewise OW); weight ``(channels, in_channels // groups, kh, kw)``, bias
    ``(channels,)``.
    """

    _kind = "Conv2D"
    # fl.quantize: how this layer runs in int8 (an Int8Spec) or None, and
    # why it stayed float32 when quantize passed it by
    _quant = None
    _quant_kept = None

    def __init__(self, channels, kernel_size, strides=(1, 1), padding=(0, 0),
                 dilation=(1, 1), groups=1, layout="NCHW", activation=None,
                 use_bias=True, weight_initializer=None,
                 bias_initializer="zeros", in_channels=0, dtype="float32",
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        where = f"Conv2D '{self.name}'"
        _check_layout(layout, where)
        self._channels = _count(channels, "channels", where, 1)
        self._kernel = _pair(kernel_size, "kernel_size", where, 1)
        self._strides = _pair(strides, "strides", where, 1)
        self._padding = _pair(padding, "padding", where, 0)
        self._dilation = _pair(dilation, "dilation", where, 1)
        self._groups = _count(groups, "groups", where, 1)
        in_channels = _count(in_channels, "in_channels (0 = infer at the "
                             "first forward)", where, 0)
        if self._channels % self._groups:
            raise ValueError(f"{where}: channels={channels} does not divide "
                             f"into groups={groups}")
        if in_channels % self._groups:
            raise ValueError(f"{where}: in_channels={in_channels} does not "
                             f"divide into groups={groups}")
        self._act_code = activation_code(activation, where)
        self._activation = activation
        self.weight = self.params.get(
            "weight", init=weight_initializer, dtype=dtype,
            shape=(self._channels, in_channels // self._groups)
            + self._kernel, allow_deferred_init=True)
        if use_bias:
            # bfloat16 is for the weight alone (see Block.cast)
            self.bias = self.params.get(
                "bias", shape=(self._channels,), init=bias_initializer,
                dtype="float32" if is_bfloat16(dtype) else dtype,
                allow_deferred_init=True)
        else:
            self.bias = None

    def _bf16_weights(self):
        return (self.weight,)

    def _alias(self):
        return "conv"

    @property
    def channels(self):
        return self._channels

    @property
    def act(self):
        return self._activation

    def _out_hw(self, shape):
        """Output height and width for a 4-D input ``shape``."""
        out = []
        for axis, size in (("height", shape[2]), ("width", shape[3])):
            i = 0 if axis == "height" else 1
            k, s = self._kernel[i], self._strides[i]
            p, d = self._padding[i], self._dilation[i]
            span = d * (k - 1) + 1
            if size + 2 * p < span:
                kdesc = f"kernel {k}" + (f", dilation {d}" if d > 1 else "")
                raise ShapeError(
                    f"{self._where()}: input too small for this kernel: the "
                    f"input of shape {tuple(shape)} has {axis} {size} "
                    f"({size + 2 * p} with padding {p} on both sides), "
                    f"smaller than the {'dilated ' if d > 1 else ''}kernel "
                    f"{axis} {span} ({kdesc}). Use a larger input, more "
                    f"padding or a smaller kernel.")
            out.append((size + 2 * p - span) // s + 1)
        return tuple(out)

    def _infer_shapes(self, shape, pending):
        _need_4d(shape, self._where())
        c = int(shape[1])
        g = self._groups
        if c % g:
            raise ShapeError(
                f"{self._where()} has groups={g}, but received an input of "
                f"shape {shape} with {c} channels, which do not split into "
                f"{g} groups. Feed a multiple of {g} channels.")
        w = self.weight
        cur = pending.get(w, w.shape)
        if cur[1] == -1:
            pending[w] = (cur[0], c // g) + tuple(cur[2:])
        elif cur[1] * g != c:
            raise ShapeError(
                f"{self._where()} expects {cur[1] * g} input channels "
                f"(weight shape {cur}{f', groups={g}' if g > 1 else ''}), "
                f"but received an input of shape {shape} with {c} channels. "
                f"Feed inputs with {cur[1] * g} channels, or use a new layer "
                f"for this size.")
        oh, ow = self._out_hw(shape)
        return (shape[0], self._channels, oh, ow)

    def _emit(self, builder, x, in_shape, out_shape):
        from ._steps import ConvGeometry, ConvStep
        _, o, oh, ow = out_shape
        geom = ConvGeometry(int(in_shape[1]), int(in_shape[2]),
                            int(in_shape[3]), o, *self._kernel,
                            *self._strides, *self._padding, *self._dilation,
                            self._groups, oh, ow)
        y = builder.buffer(o * oh * ow)
        return builder.add(ConvStep(x, y, self.weight, self.bias,
                                    self._act_code, geom, quant=self._quant))

    def __repr__(self):
        shape = self.weight.shape
        cin = shape[1] * self._groups if shape[1] != -1 else -1
        s = (f"Conv2D({cin} -> {shape[0]}, kernel_size={self._kernel}, "
             f"stride={self._strides}")
        if self._padding != (0, 0):
            s += f", padding={self._padding}"
        if self._dilation != (1, 1):
            s += f", dilation={self._dilation}"
        if self._groups != 1:
            s += f", groups={self._groups}"
        if self.bias is None:
            s += ", bias=False"
        if self._activation:
            s += f", Activation({self._activation})"
        if is_bfloat16(self.weight.dtype):
            s += ", bfloat16"
        if self._quant is not None:
            s += f", {self._quant.describe()}"
        elif self._quant_kept is not None:
            s += f", float32: {self._quant_kept}"
        return s + ")"


# ---------------------------------------------------------------------------
# Pooling


class _Pool2D(_ShapeLayer):
    """Max or average pooling over the height and width of NCHW input."""

    _kind = "Pool2D"

    def __init__(self, pool_size, strides, padding, *, ceil_mode,
                 global_pool, pool_type, layout, count_include_pad=True,
                 prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._kind = type(self).__name__
        where = f"{self._kind} '{self.name}'"
        _check_layout(layout, where)
        self._global = bool(global_pool)
        self._pool = _pair(pool_size, "pool_size", where, 1)
        self._strides = self._pool if strides is None else \
            _pair(strides, "strides", where, 1)
        self._padding = _pair(padding, "padding", where, 0)
        self._ceil = bool(ceil_mode)
        self._type = pool_type
        self._count_include_pad = bool(count_include_pad)

    def _alias(self):
        return "pool"

    def _window(self, shape):
        """(kernel, stride, padding) per spatial axis for input ``shape``."""
        if self._global:
            return (int(shape[2]), int(shape[3])), (1, 1), (0, 0)
        return self._pool, self._strides, self._padding

    def _infer_shapes(self, shape, pending):
        _need_4d(shape, self._where())
        if self._global:
            return (shape[0], shape[1], 1, 1)
        out = []
        for i, axis in enumerate(("height", "width")):
            size, k = int(shape[2 + i]), self._pool[i]
            s, p = self._strides[i], self._padding[i]
            if size + 2 * p < k:
                raise ShapeError(
                    f"{self._where()}: input too small for this pool size: "
                    f"the input of shape {shape} has {axis} {size} "
                    f"({size + 2 * p} with padding {p} on both sides), "
                    f"smaller than the pool {axis} {k}. Use a larger input, "
                    f"more padding or a smaller pool_size.")
            span = size + 2 * p - k
            out.append((-(-span // s) if self._ceil else span // s) + 1)
        return (shape[0], shape[1]) + tuple(out)

    def _emit(self, builder, x, in_shape, out_shape):
        from ._steps import PoolGeometry, PoolStep
        k, s, p = self._window(in_shape)
        _, c, oh, ow = out_shape
        geom = PoolGeometry(int(c), int(in_shape[2]), int(in_shape[3]), *k,
                            *s, *p, oh, ow)
        y = builder.buffer(c * oh * ow)
        return builder.add(PoolStep(x, y, self._type == "max",
                                    self._count_include_pad, geom))

    def __repr__(self):
        size = (1, 1) if self._global else self._pool
        stride = (1, 1) if self._global else self._strides
        pad = (0, 0) if self._global else self._padding
        return (f"{type(self).__name__}(size={size}, stride={stride}, "
                f"padding={pad}, ceil_mode={self._ceil}, "
                f"global_pool={self._global}, pool_type={self._type}, "
                f"layout=NCHW)")


class MaxPool2D(_Pool2D):
    """Max pooling over NCHW images.

    Parameters
    ----------
    pool_size : int or (int, int), default (2, 2)
    strides : int, (int, int) or None
        None (default): the same as ``pool_size``.
    padding : int or (int, int), default 0
        Padding never wins the maximum.
    layout : 'NCHW'
    ceil_mode : bool, default False
        Round the output size up instead of down (MXNet's 'full'
        convention).

    Shapes: input ``(N, C, H, W)``, output ``(N, C, OH, OW)`` with
    ``OH = floor_or_ceil((H + 2*padding - pool) / stride) + 1``.  A window
    with no input value in it (only with ``ceil_mode`` and strides wider
    than the pool) gives 0.
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding=0,
                 layout="NCHW", ceil_mode=False, prefix=None, params=None):
        super().__init__(pool_size, strides, padding, ceil_mode=ceil_mode,
                         global_pool=False, pool_type="max", layout=layout,
                         prefix=prefix, params=params)


class AvgPool2D(_Pool2D):
    """Average pooling over NCHW images.

    Parameters
    ----------
    pool_size : int or (int, int), default (2, 2)
    strides : int, (int, int) or None
        None (default): the same as ``pool_size``.
    padding : int or (int, int), default 0
    ceil_mode : bool, default False
        Round the output size up instead of down.
    layout : 'NCHW'
    count_include_pad : bool, default True
        Divide by the window size including padding (clipped to the padded
        input, as MXNet and PyTorch do), or only by the input values in it.

    Shapes: as :class:`MaxPool2D`.
    """

    def __init__(self, pool_size=(2, 2), strides=None, padding=0,
                 ceil_mode=False, layout="NCHW", count_include_pad=True,
                 prefix=None, params=None):
        super().__init__(pool_size, strides, padding, ceil_mode=ceil_mode,
                         global_pool=False, pool_type="avg", layout=layout,
                         count_include_pad=count_include_pad, prefix=prefix,
                         params=params)


class GlobalMaxPool2D(_Pool2D):
    """The maximum of each channel: ``(N, C, H, W) -> (N, C, 1, 1)``."""

    def __init__(self, layout="NCHW", prefix=None, params=None):
        super().__init__((1, 1), None, 0, ceil_mode=True, global_pool=True,
                         pool_type="max", layout=layout, prefix=prefix,
                         params=params)


class GlobalAvgPool2D(_Pool2D):
    """The mean of each channel: ``(N, C, H, W) -> (N, C, 1, 1)``."""

    def __init__(self, layout="NCHW", prefix=None, params=None):
        super().__init__((1, 1), None, 0, ceil_mode=True, global_pool=True,
                         pool_type="avg", layout=layout, prefix=prefix,
                         params=params)


# ---------------------------------------------------------------------------
# Normalization


def _eps(value, where):
    try:
        eps = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{where}: epsilon must be a number, got "
                        f"{value!r}") from None
    if not eps >= 0:
        raise ValueError(f"{where}: epsilon must be >= 0, got {value!r}")
    return eps


class BatchNorm(_ShapeLayer):
    """Batch normalization at inference, with the running statistics:
    ``y = (x - running_mean) / sqrt(running_var + epsilon) * gamma + beta``
    per channel along ``axis``.

    Parameters
    ----------
    axis : int, default 1
        The channel axis (1 for NCHW images and for ``(N, C)`` features).
    momentum : float, default 0.9
        Kept for Gluon compatibility; fastlazy does not train.
    epsilon : float, default 1e-5
    center : bool, default True
        False: beta is not learned (it stays at its initial zeros).
    scale : bool, default True
        False: gamma is fixed at 1 (as Gluon's ``fix_gamma``).
    use_global_stats : bool, default False
        Kept for Gluon compatibility; inference always uses the running
        statistics.
    beta_initializer, gamma_initializer, running_mean_initializer,
    running_variance_initializer : Initializer or str
        Defaults zeros, ones, zeros, ones.
    in_channels : int, default 0
        Channels; 0 defers them to the first forward pass.
    dtype : 'float32' or 'float64'
    prefix, params : see :class:`~fastlazy.block.Block`.

    Shapes: input ``(N, ..., C, ...)`` with C at ``axis``, output the same;
    gamma, beta, running_mean, running_var ``(C,)``.  Right after a Conv2D
    it runs inside the convolution's output pass.
    """

    _kind = "BatchNorm"
    _aux_names = ("running_mean", "running_var")

    def __init__(self, axis=1, momentum=0.9, epsilon=1e-5, center=True,
                 scale=True, use_global_stats=False,
                 beta_initializer="zeros", gamma_initializer="ones",
                 running_mean_initializer="zeros",
                 running_variance_initializer="ones", in_channels=0,
                 dtype="float32", prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        where = f"BatchNorm '{self.name}'"
        if not _is_int(axis):
            raise TypeError(f"{where}: axis must be an int, got {axis!r}")
        self._axis = int(axis)
        self._momentum = float(momentum)
        self._eps = _eps(epsilon, where)
        self._center = bool(center)
        self._scale = bool(scale)
        self._use_global_stats = bool(use_global_stats)
        c = _count(in_channels, "in_channels (0 = infer at the first "
                   "forward)", where, 0)
        self._aux_names = ("running_mean", "running_var") \
            + (() if self._scale else ("gamma",)) \
            + (() if self._center else ("beta",))
        self.gamma = self.params.get("gamma", shape=(c,), dtype=dtype,
                                     init=gamma_initializer,
                                     allow_deferred_init=True)
        self.beta = self.params.get("beta", shape=(c,), dtype=dtype,
                                    init=beta_initializer,
                                    allow_deferred_init=True)
        self.running_mean = self.params.get(
            "running_mean", shape=(c,), dtype=dtype,
            init=running_mean_initializer, allow_deferred_init=True)
        self.running_var = self.params.get(
            "running_var", shape=(c,), dtype=dtype,
            init=running_variance_initializer, allow_deferred_init=True)

    def _infer_shapes(self, shape, pending):
        ax = _norm_axis(self._axis, shape, self._where())
        params = (self.gamma, self.beta, self.running_mean,
                  self.running_var)
        _infer_channels(self, pending, params, int(shape[ax]), shape,
                        f"channels on axis {self._axis}")
        return shape

    def _emit(self, builder, x, in_shape, out_shape):
        from ._steps import BatchNormStep
        ax = _norm_axis(self._axis, in_shape, self._where())
        y = builder.buffer(_prod(in_shape[1:]))
        return builder.add(BatchNormStep(
            x, y, self.gamma if self._scale else None, self.beta,
            self.running_mean, self.running_var, self._eps,
            _prod(in_shape[1:ax]), int(in_shape[ax]),
            _prod(in_shape[ax + 1:])))

    def __repr__(self):
        c = self.gamma.shape[0]
        return (f"BatchNorm(axis={self._axis}, eps={self._eps}, "
                f"momentum={self._momentum}, fix_gamma={not self._scale}, "
                f"use_global_stats={self._use_global_stats}, "
                f"in_channels={c if c != -1 else None})")


class LayerNorm(_ShapeLayer):
    """Layer normalization: each sample is normalized over ``axis`` with
    its own mean and (biased) variance,
    ``y = (x - mean) / sqrt(var + epsilon) * gamma + beta``.

    Parameters
    ----------
    axis : int, default -1
        The axis normalized over (not the batch axis).
    epsilon : float, default 1e-5
    center, scale : bool, default True
        Whether beta / gamma are learned (as in Gluon, their values are used
        either way; they stay at zeros / ones unless set).
    beta_initializer, gamma_initializer : Initializer or str
        Defaults zeros and ones.
    in_channels : int, default 0
        Size of ``axis``; 0 defers it to the first forward pass.
    dtype : 'float32' or 'float64'
    prefix, params : see :class:`~fastlazy.block.Block`.

    Shapes: input ``(N, ..., C, ...)`` with C at ``axis``, output the same;
    gamma and beta ``(C,)``.
    """

    _kind = "LayerNorm"

    def __init__(self, axis=-1, epsilon=1e-5, center=True, scale=True,
                 beta_initializer="zeros", gamma_initializer="ones",
                 in_channels=0, dtype="float32", prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        where = f"LayerNorm '{self.name}'"
        if not _is_int(axis):
            raise TypeError(f"{where}: axis must be an int, got {axis!r}")
        self._axis = int(axis)
        self._eps = _eps(epsilon, where)
        self._center = bool(center)
        self._scale = bool(scale)
        c = _count(in_channels, "in_channels (0 = infer at the first "
                   "forward)", where, 0)
        self._aux_names = (() if self._scale else ("gamma",)) \
            + (() if self._center else ("beta",))
        self.gamma = self.params.get("gamma", shape=(c,), dtype=dtype,
                                     init=gamma_initializer,
                                     allow_deferred_init=True)
        self.beta = self.params.get("beta", shape=(c,), dtype=dtype,
                                    init=beta_initializer,
                                    allow_deferred_init=True)

    def _infer_shapes(self, shape, pending):
        ax = _norm_axis(self._axis, shape, self._where())
        _infer_channels(self, pending, (self.gamma, self.beta),
                        int(shape[ax]), shape, f"values on axis {self._axis}")
        return shape

    def _emit(self, builder, x, in_shape, out_shape):
        from ._steps import LayerNormStep
        ax = _norm_axis(self._axis, in_shape, self._where())
        y = builder.buffer(_prod(in_shape[1:]))
        return builder.add(LayerNormStep(
            x, y, self.gamma, self.beta, self._eps, _prod(in_shape[1:ax]),
            int(in_shape[ax]), _prod(in_shape[ax + 1:])))

    def __repr__(self):
        c = self.gamma.shape[0]
        return (f"LayerNorm(eps={self._eps}, axis={self._axis}, "
                f"center={self._center}, scale={self._scale}, "
                f"in_channels={c if c != -1 else None})")
