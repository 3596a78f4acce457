"""From a block to a compiled plan: shape inference, deferred
initialization as one transaction, tracing layers into typed steps.

The slow path of ``block(x)`` and ``block.build(shape)`` live here; the fast
path is :func:`fastlazy._plan.block_call`.  Every network has its own lock:
one network's first forward (shape inference, millions of weights to draw,
packing) never waits for another's, and a parameter shared by two networks
is initialized once (its own lock, see ``Parameter._finish_deferred_init``).
Long work runs in NumPy's and fastlazy's compiled code, which release the
GIL, so a network already compiled keeps serving meanwhile.
"""

from collections import OrderedDict

import numpy as np

from ._parameter import as_numeric_array
from ._plan import Plan
from ._steps import StepBuilder, fuse
from .errors import DeferredInitializationError, ShapeError

__all__ = ["call_slow", "prepare", "compile_plan", "net_dtype"]


def _where(block):
    return f"{type(block).__name__} '{block.name}'"


def net_dtype(block):
    """The dtype every parameter of ``block`` shares (float32 if none)."""
    dtypes = OrderedDict()
    for p in block.collect_params().values():
        dtypes.setdefault(p.dtype, p.name)
    if len(dtypes) > 1:
        desc = ", ".join(f"{n} is {d.name}" for d, n in dtypes.items())
        raise TypeError(f"{block.name}: parameters mix dtypes ({desc}); "
                        f"call net.cast('float32') or net.cast('float64')")
    return next(iter(dtypes), np.dtype(np.float32))


def _trace(block, in_shape):
    """Infer every shape for inputs of ``in_shape`` and collect the steps,
    changing nothing.  Returns (builder, output buffer, output shape,
    pending parameter shapes)."""
    builder = StepBuilder(in_shape[1:])
    pending = {}
    out_buf, out_shape = block._trace(builder, 0, tuple(in_shape), pending)
    return builder, out_buf, tuple(out_shape), pending


def _finish(block, pending):
    """Complete the shapes in ``pending`` and run every deferred
    initializer, as one transaction: on any error every parameter is
    restored as it was."""
    params = list(block.collect_params().values())
    for p in params:
        if p.state == "unset":
            raise DeferredInitializationError(p._not_ready_message())
    if not pending and all(p.is_initialized for p in params):
        return
    snaps = [(p, p._snapshot()) for p in params]
    try:
        for p, shape in pending.items():
            p.shape = shape
        for p in params:
            if p.state == "deferred":
                p._finish_deferred_init()
    except BaseException:
        for p, snap in snaps:
            p._restore(snap)
        raise


def prepare(block, in_shape):
    """Infer shapes for ``in_shape``, then complete shapes and finish
    deferred initialization as one transaction; returns the output shape."""
    _, _, out_shape, pending = _trace(block, in_shape)
    _finish(block, pending)
    return out_shape


def compile_plan(block, in_shape, dtype):
    """Prepare ``block`` for ``in_shape`` and build its plan."""
    builder, out_buf, out_shape, pending = _trace(block, in_shape)
    _finish(block, pending)
    steps, (out_buf,) = fuse(builder.steps, [out_buf])
    plan = Plan(steps, builder.sizes, out_buf, tuple(in_shape[1:]),
                out_shape[1:], dtype, _where(block))
    block.apply(lambda b: b._watch_plan(plan))
    return plan


def call_slow(block, x):
    """``block(x)`` when no current plan fits ``x``."""
    if not block._is_plannable():
        return block.forward(x)
    arr = as_numeric_array(x, _where(block))
    # checked before the conversion: np.ascontiguousarray turns a 0-d value
    # into shape (1,), which would hide the mistake
    if arr.ndim == 0:
        raise ShapeError(f"{_where(block)}: expected an array with a batch "
                         f"axis, got a 0-d value; for one sample of one "
                         f"feature use np.reshape(x, (1, 1))")
    with block._lock:
        plan = block._plan
        if plan is not None and plan.is_current():
            # another thread compiled it while this one waited
            out = plan.run(arr)
            if out is not None:
                return out
        dtype = net_dtype(block)
        arr = np.ascontiguousarray(arr, dtype=dtype)
        plan = compile_plan(block, tuple(arr.shape), dtype)
        object.__setattr__(block, "_plan", plan)
    out = plan.run(arr)
    if out is None:  # pragma: no cover - plan built for this shape
        raise RuntimeError("forward plan rejected its own input shape")
    return out


def fused_steps(block, in_shape):
    """The typed steps ``block`` compiles to for inputs of ``in_shape``,
    after fusion; nothing is initialized or changed."""
    builder, out_buf, _, _ = _trace(block, tuple(in_shape))
    return fuse(builder.steps, [out_buf])[0]
