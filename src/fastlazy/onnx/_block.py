"""OnnxBlock: an ONNX graph as one compiled block, and the ONNX operators
that are several of ``F``'s.

The block is a :class:`~fastlazy.SymbolBlock` -- the graph kept as data,
one ``F`` call per operator, walked by ``hybrid_forward`` -- built by
:func:`fastlazy.onnx.load` from an ONNX model.  Every decision that needs
a shape (reshape targets, padding, which initializer is a weight) was made
when the file was read, for the input shapes it was read for; the block
refuses other input shapes instead of computing something else.

Nothing here imports ``onnx``: a loaded model pickles, copies and runs
without it.
"""

from collections import Counter

from .._util import prod
from ..errors import ShapeError
from ..symbol_block import SymbolBlock

__all__ = ["OnnxBlock"]


class OnnxBlock(SymbolBlock):
    """A network read from an ONNX model by :func:`fastlazy.onnx.load`.

    A :class:`~fastlazy.SymbolBlock` whose operators are ONNX's; its
    parameters are named after the model's initializers (``fc1.weight``).

    Attributes
    ----------
    input_names, output_names : tuple of str
        The graph's inputs (``net(x, y)`` takes them in this order) and
        the outputs it returns (a tuple when there are several).
    input_shapes : tuple of tuple
        The shapes the model was read for, ``None`` for the batch axis.
    opset : int
        The model's opset (default domain).
    """

    def __init__(self, *args, **kwargs):
        raise TypeError("OnnxBlock is made by fastlazy.onnx.load(path)")

    @classmethod
    def _from_onnx(cls, program, dtype, name, info):
        block = cls._from_program(program, dtype, name=name)
        object.__setattr__(block, "_onnx", dict(info))
        return block

    @property
    def input_names(self):
        return tuple(self._program.inputs)

    @property
    def output_names(self):
        return tuple(self._onnx["outputs"])

    @property
    def input_shapes(self):
        return tuple((None,) + tuple(s) for s in self._onnx["shapes"])

    @property
    def opset(self):
        return self._onnx["opset"]

    def fusion_report(self):
        """One line: what the compiled plan fused, and what was folded
        when the file was read, e.g. ``'fused: 2 Gemm+Relu, 1
        Conv+BatchNormalization+Relu; folded at load: 4 nodes (Shape,
        Gather, Unsqueeze, Concat); 14 ONNX nodes -> 5 plan steps'``."""
        return self._onnx["report"]

    def hybrid_forward(self, F, *inputs, **params):
        shapes = self._onnx["shapes"]
        for name, x, want in zip(self._program.inputs, inputs, shapes):
            got = tuple(x.shape)
            if len(got) != len(want) + 1 or tuple(got[1:]) != tuple(want):
                raise ShapeError(
                    f"{self.name}: input '{name}' has shape {got}, but the "
                    f"model was read for {(None,) + tuple(want)} (its "
                    f"reshapes and padding were resolved for that size); "
                    f"load it again with fastlazy.onnx.load(..., "
                    f"input_shape={(None,) + tuple(got[1:])})")
        return super().hybrid_forward(F, *inputs, **params)

    def __repr__(self):
        program = self._program
        ops = Counter(c.op for c in program.ops)
        kinds = ", ".join(f"{op} x{n}" if n > 1 else op
                          for op, n in ops.most_common())
        inputs = ", ".join(f"{name} {shape}" for name, shape in
                           zip(self.input_names, self.input_shapes))
        return (f"OnnxBlock(\n"
                f"  inputs: {inputs}\n"
                f"  outputs: {', '.join(self.output_names)}\n"
                f"  opset {self.opset}, {len(program.ops)} calls: {kinds}\n"
                f"  {len(program.params)} parameters\n)")


# ---------------------------------------------------------------------------
# ONNX operators that are several of F's.  Each works on NumPy arrays (the
# eager path) and on traced values alike; module level, so a block pickles.


def scalar_op(F, x, op, value):
    """``x op value`` for a number ``value`` (``rsub``/``rdiv``: value op
    x); ``max``/``min`` against the number."""
    if op == "add":
        return x + value
    if op == "mul":
        return x * value
    if op == "rsub":
        return value - x
    if op == "rdiv":
        return value / x
    if op == "pow":
        return x ** value
    if op == "max":
        return F.broadcast_maximum(x, value)
    if op == "min":
        return F.broadcast_minimum(x, value)
    raise ValueError(f"unknown scalar operator {op!r}")


def abs_value(F, x):
    """``|x|`` as ``max(x, -x)``."""
    return F.broadcast_maximum(x, x * -1.0)


def n_ary(F, *xs, op):
    """ONNX's Sum (``op='add'``), Mean, Max and Min over several
    inputs."""
    join = {"add": F.broadcast_add, "mean": F.broadcast_add,
            "max": F.broadcast_maximum, "min": F.broadcast_minimum}[op]
    out = xs[0]
    for x in xs[1:]:
        out = join(out, x)
    if op == "mean" and len(xs) > 1:
        out = out * (1.0 / len(xs))
    return out


def hard_sigmoid(F, x, alpha, beta):
    """``clip(alpha * x + beta, 0, 1)``."""
    return F.clip(x * alpha + beta, 0.0, 1.0)


def hard_swish(F, x):
    """``x * hard_sigmoid(x, 1/6, 1/2)``."""
    return F.broadcast_mul(x, hard_sigmoid(F, x, 1.0 / 6.0, 0.5))


def gelu_tanh(F, x):
    """GELU's tanh approximation:
    ``0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3)))``."""
    inner = (x + (x ** 3.0) * 0.044715) * 0.7978845608028654
    return F.broadcast_mul(x, F.tanh(inner) * 0.5 + 0.5)


def selu(F, x, alpha, gamma):
    """SELU with its own constants: ``gamma * elu_alpha(x)``."""
    return F.LeakyReLU(x, act_type="elu", slope=alpha) * gamma


def prelu_broadcast(F, x, slope):
    """PRelu with a slope that is not one per channel:
    ``max(x, 0) + slope * min(x, 0)``, broadcast as ONNX does."""
    return F.broadcast_add(F.relu(x), F.broadcast_mul(
        F.broadcast_minimum(x, 0.0), slope))


def layer_norm(F, x, gamma=None, beta=None, eps=1e-5, axes=1):
    """ONNX LayerNormalization over the last ``axes`` axes (``axes`` > 1:
    flattened into one, normalized, shaped back)."""
    if axes == 1:
        return F.LayerNorm(x, gamma, beta, axis=-1, eps=eps)
    shape = tuple(x.shape)
    keep = shape[1:len(shape) - axes]
    flat = F.reshape(x, (0,) + keep + (prod(shape[len(shape) - axes:]),))
    y = F.LayerNorm(flat, gamma, beta, axis=-1, eps=eps)
    return F.reshape(y, (0,) + shape[1:])


def conv1d(F, x, weight, bias=None, **kwargs):
    """A 1-D convolution as a 2-D one of height 1 (the weight is stored
    (O, C/groups, 1, k))."""
    shape = tuple(x.shape)
    y = F.Convolution(F.reshape(x, (0, shape[1], 1, shape[2])), weight,
                      bias, **kwargs)
    return F.reshape(y, (0, y.shape[1], y.shape[3]))


def pool1d(F, x, **kwargs):
    """A 1-D pooling as a 2-D one of height 1."""
    shape = tuple(x.shape)
    y = F.Pooling(F.reshape(x, (0, shape[1], 1, shape[2])), **kwargs)
    return F.reshape(y, (0, y.shape[1], y.shape[3]))
