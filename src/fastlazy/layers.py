"""Built-in layers: Dense, Activation, Dropout, Flatten."""

from ._plan import activation_code
from ._util import is_bfloat16, is_int, prod
from .block import Block
from .errors import ShapeError

__all__ = ["Dense", "Activation", "Dropout", "Flatten", "LeakyReLU", "PReLU",
           "ELU", "SELU", "GELU", "Swish"]


class Dense(Block):
    """Densely connected layer: ``activation(x @ weight.T + bias)``.

    Parameters
    ----------
    units : int
        Output size.
    activation : str or None
        'relu', 'sigmoid', 'tanh', 'softrelu', 'softsign', 'gelu', 'silu'.
    use_bias : bool, default True
    flatten : bool, default True
        True: an input ``(N, d1, d2, ...)`` is used as ``(N, d1*d2*...)``;
        False: the layer applies to the last axis and keeps the others.
    dtype : 'float32', 'float64' or 'bfloat16'
        'bfloat16': the weight is stored as bfloat16, the bias float32,
        and the layer computes in float32 (see :meth:`Block.cast`).
    weight_initializer, bias_initializer : Initializer or str
        The parameters' own initializers (bias: zeros by default).
    in_units : int, default 0
        Input size; 0 defers it to the first forward pass.
    prefix, params : see :class:`~fastlazy.block.Block`.

    Shapes: weight ``(units, in_units)``, bias ``(units,)``.  With
    ``in_units=0`` the weight is ``(units, -1)`` until the first input (or
    :meth:`build`, or a loaded file) fixes it.
    """

    _plannable = True
    # fl.quantize: how this layer runs in int8 (an Int8Spec), or None
    _quant = None

    def __init__(self, units, activation=None, use_bias=True, flatten=True,
                 dtype="float32", weight_initializer=None,
                 bias_initializer="zeros", in_units=0, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        where = f"Dense '{self.name}'"
        if not is_int(units) or units <= 0:
            raise ValueError(f"{where}: units must be a positive int, got "
                             f"{units!r}")
        if not is_int(in_units) or in_units < 0:
            raise ValueError(f"{where}: in_units must be a non-negative int "
                             f"(0 = infer at the first forward), got "
                             f"{in_units!r}")
        self._act_code = activation_code(activation, where)
        self._units = int(units)
        self._activation = activation
        self._use_bias = bool(use_bias)
        self._flatten = bool(flatten)
        self.weight = self.params.get(
            "weight", shape=(units, in_units), init=weight_initializer,
            dtype=dtype, allow_deferred_init=True, _storage_transposed=True)
        if use_bias:
            # bfloat16 is for the weight alone (see Block.cast)
            self.bias = self.params.get(
                "bias", shape=(units,), init=bias_initializer,
                dtype="float32" if is_bfloat16(dtype) else dtype,
                allow_deferred_init=True)
        else:
            self.bias = None

    def _bf16_weights(self):
        return (self.weight,)

    @property
    def units(self):
        return self._units

    @property
    def act(self):
        return self._activation

    def _features(self, shape):
        where = f"Dense layer '{self.name}'"
        if len(shape) < 2:
            raise ShapeError(
                f"{where}: expected an input with a batch axis and at least "
                f"one feature axis, got shape {shape}; for a single sample "
                f"use x[None]")
        k = prod(shape[1:]) if self._flatten else int(shape[-1])
        if k == 0:
            raise ShapeError(f"{where}: the input of shape {shape} has no "
                             f"features (an empty feature axis)")
        return k

    def _infer(self, shape, pending):
        k = self._features(shape)
        w = self.weight
        cur = pending.get(w, w.shape)
        if cur[1] == -1:
            pending[w] = (cur[0], k)
        elif cur[1] != k:
            how = "flattened " if self._flatten and len(shape) > 2 else ""
            raise ShapeError(
                f"Dense layer '{self.name}' expects {cur[1]} input features "
                f"(weight shape {cur}), but received an input of shape "
                f"{tuple(shape)} with {k} {how}features. Feed inputs with "
                f"{cur[1]} features, or use a new layer for this size.")
        if self._flatten:
            return (shape[0], self._units)
        return tuple(shape[:-1]) + (self._units,)

    def _emit(self, builder, x, in_shape, out_shape):
        from ._steps import DenseStep
        k = self._features(in_shape)
        rows = 1 if self._flatten else prod(in_shape[1:-1])
        y = builder.buffer(rows * self._units)
        return builder.add(DenseStep(x, y, self.weight, self.bias,
                                     self._act_code, rows, k, self._units,
                                     quant=self._quant))

    def __repr__(self):
        shape = self.weight.shape
        act = f"Activation({self._activation})" if self._activation \
            else "linear"
        tag = f", {self._quant.describe()}" if self._quant else ""
        dt = ", bfloat16" if is_bfloat16(self.weight.dtype) else ""
        return f"Dense({shape[1]} -> {shape[0]}, {act}{dt}{tag})"


class Activation(Block):
    """An activation function by name ('relu', 'sigmoid', 'tanh',
    'softrelu', 'softsign', 'gelu', 'silu'), element-wise."""

    _plannable = True

    def __init__(self, activation, prefix=None, params=None):
        self._act_type = activation
        super().__init__(prefix=prefix, params=params)
        if activation is None:
            raise ValueError("Activation: give an activation name, e.g. "
                             "'relu'")
        self._act_code = activation_code(activation,
                                               f"Activation '{self.name}'")

    def _alias(self):
        return self._act_type if isinstance(self._act_type, str) \
            else "activation"

    def _infer(self, shape, pending):
        return tuple(shape)

    def _emit(self, builder, x, in_shape, out_shape):
        from ._steps import ActStep
        size = prod(in_shape[1:])
        return builder.add(ActStep(x, builder.buffer(size), self._act_code,
                                   size))

    def __repr__(self):
        return f"Activation({self._act_type})"


class Dropout(Block):
    """Dropout: the identity at inference, which is all fastlazy runs."""

    _plannable = True

    def __init__(self, rate, axes=(), prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        if not 0 <= float(rate) < 1:
            raise ValueError(f"Dropout '{self.name}': rate must be in "
                             f"[0, 1), got {rate!r}")
        self._rate = float(rate)
        self._axes = tuple(axes)

    def _infer(self, shape, pending):
        return tuple(shape)

    def __repr__(self):
        return f"Dropout(p = {self._rate}, axes={self._axes})"


class Flatten(Block):
    """Reshape ``(N, d1, d2, ...)`` to ``(N, d1*d2*...)``."""

    _plannable = True

    def _infer(self, shape, pending):
        if len(shape) < 1:
            raise ShapeError(f"Flatten '{self.name}': needs a batch axis")
        return (shape[0], prod(shape[1:]))

    def __repr__(self):
        return "Flatten"


# ---------------------------------------------------------------------------
# Activation layers with arguments (Gluon's nn.LeakyReLU, PReLU, ELU, SELU,
# GELU, Swish): HybridBlocks over F's operators, as in Gluon, so they
# compile through the same trace as any user block.

from .block import HybridBlock  # noqa: E402  (after Block's layers)


class LeakyReLU(HybridBlock):
    """``x if x > 0 else alpha * x``."""

    def __init__(self, alpha, prefix=None, params=None):
        if float(alpha) < 0:
            raise ValueError(f"LeakyReLU: alpha must be >= 0, got {alpha!r}")
        super().__init__(prefix=prefix, params=params)
        self._alpha = float(alpha)

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="leaky", slope=self._alpha)

    def __repr__(self):
        return f"LeakyReLU({self._alpha})"


class PReLU(HybridBlock):
    """``x if x > 0 else alpha * x`` with a learned ``alpha``: one slope
    (``in_channels=1``, Gluon's default) or one per channel of axis 1."""

    def __init__(self, alpha_initializer=None, in_channels=1, prefix=None,
                 params=None):
        super().__init__(prefix=prefix, params=params)
        from .initializers import Constant
        if not is_int(in_channels) or in_channels < 0:
            raise ValueError(f"PReLU: in_channels must be a non-negative "
                             f"int, got {in_channels!r}")
        self.alpha = self.params.get(
            "alpha", shape=(in_channels,),
            init=alpha_initializer if alpha_initializer is not None
            else Constant(0.25), allow_deferred_init=True)

    def hybrid_forward(self, F, x, alpha):
        return F.LeakyReLU(x, gamma=alpha, act_type="prelu")

    def __repr__(self):
        return f"PReLU(in_channels={self.alpha.shape[0]})"


class ELU(HybridBlock):
    """``x if x > 0 else alpha * (exp(x) - 1)``."""

    def __init__(self, alpha=1.0, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._alpha = float(alpha)

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="elu", slope=self._alpha)

    def __repr__(self):
        return f"ELU({self._alpha})"


class SELU(HybridBlock):
    """Scaled ELU with the self-normalizing constants."""

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="selu")

    def __repr__(self):
        return "SELU()"


class GELU(HybridBlock):
    """``0.5 * x * (1 + erf(x / sqrt(2)))``."""

    def hybrid_forward(self, F, x):
        return F.LeakyReLU(x, act_type="gelu")

    def __repr__(self):
        return "GELU()"


class Swish(HybridBlock):
    """``x * sigmoid(beta * x)``, one compiled step."""

    def __init__(self, beta=1.0, prefix=None, params=None):
        super().__init__(prefix=prefix, params=params)
        self._beta = float(beta)

    def hybrid_forward(self, F, x):
        return F.swish(x, beta=self._beta)

    def __repr__(self):
        return f"Swish({self._beta})"
