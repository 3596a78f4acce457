"""From a block to a compiled plan: tracing, shape inference, deferred
initialization as one transaction.

The slow path of ``block(x)`` and ``block.build(shape)`` live here; the fast
path is :func:`fastlazy._plan.block_call`.  A network is *traced*: its
inputs become :class:`fastlazy.ops.Sym` values, every layer states its
output shape and adds typed steps, a ``HybridBlock`` runs its
``hybrid_forward`` on the traced values, and nothing changes until the
whole trace succeeded.  Then the shapes it inferred are filled in and the
deferred initializers run, as one transaction, and the plan is built.

A block whose code cannot be traced (Python control flow on values, NumPy
calls, a child with a plain Python ``forward``) runs on the eager path
instead: ``hybrid_forward`` on NumPy arrays, its children still compiled
on their own.  The reason is kept; :func:`explain` shows it.

Every network has its own lock: one network's first forward (shape
inference, millions of weights to draw, packing) never waits for another's,
and a parameter shared by two networks is initialized once (its own lock,
see ``Parameter._finish_deferred_init``).  Long work runs in NumPy's and
fastlazy's compiled code, which release the GIL, so a network already
compiled keeps serving meanwhile.
"""

from collections import OrderedDict

import numpy as np

from ._parameter import as_numeric_array
from ._plan import Plan, check_apart, check_out_shapes, deliver
from ._steps import StepBuilder, fuse
from ._util import bfloat16
from .errors import FastLazyError, ShapeError
from .ops import Sym, TraceContext

__all__ = ["call_slow", "prepare", "compile_plan", "net_dtype", "explain",
           "fused_steps", "TraceFailed"]


class TraceFailed(TypeError):
    """A block's code could not be traced: ``block`` is the innermost block
    whose code failed, ``reason`` what happened.  ``block(x)`` then runs the
    eager path; ``build(shape)`` and ``summary(shape)``, which have no data
    to run eagerly, raise it."""

    def __init__(self, block, reason):
        super().__init__(f"{_where(block)}: {reason}")
        self.block = block
        self.reason = reason


def _where(block):
    return f"{type(block).__name__} '{block.name}'"


def net_dtype(block, inputs=()):
    """The dtype every parameter of ``block`` shares, which the network
    computes in; float32 for bfloat16 weights (with float32 other
    parameters); for a network without parameters the first input's float
    dtype (else float32)."""
    dtypes = OrderedDict()
    for p in block.collect_params().values():
        dtypes.setdefault(p.dtype, p.name)
    bf16 = dtypes.pop(bfloat16, None)
    if bf16 is not None and not dtypes:
        dtypes[np.dtype(np.float32)] = bf16
    if len(dtypes) > 1 or (bf16 is not None and
                           np.dtype(np.float32) not in dtypes):
        if bf16 is not None:
            dtypes[bfloat16] = bf16
        desc = ", ".join(f"{n} is {d.name}" for d, n in dtypes.items())
        raise TypeError(f"{block.name}: parameters mix dtypes ({desc}); "
                        f"call net.cast('float32'), net.cast('float64') or "
                        f"net.cast('bfloat16') (bfloat16 weights of Dense "
                        f"and Conv2D layers, float32 for the rest)")
    if dtypes:
        return next(iter(dtypes))
    for x in inputs:
        if x.dtype.kind == "f" and x.dtype.itemsize in (4, 8):
            return np.dtype(f"f{x.dtype.itemsize}")     # native order
    return np.dtype(np.float32)


def trace_block(block, *syms):
    """``block`` applied to traced values: its steps are added to their
    trace.  Errors in a block's own code become TraceFailed naming it;
    fastlazy's own errors (a wrong shape, a parameter not initialized)
    propagate as they are.

    The trace's context may carry ``hooks_root`` (a plan is being built:
    a block with forward hooks other than that root cannot be in it) and
    ``recorder`` (a list: ``(block, output shapes)`` is appended for each
    block once it returns, for ``summary``)."""
    ctx = next((s.ctx for s in syms if isinstance(s, Sym)), None)
    root = getattr(ctx, "hooks_root", None)
    if root is not None and block is not root and block._has_hooks():
        raise TraceFailed(block, "it has forward hooks, which run Python "
                          "code between the layers of a plan; detach them "
                          "to compile the network as one plan")
    try:
        out = block._trace_sym(*syms)
    except (TraceFailed, FastLazyError):
        raise
    except Exception as exc:
        raise TraceFailed(block, f"{type(exc).__name__}: {exc}") from exc
    recorder = getattr(ctx, "recorder", None)
    if recorder is not None:
        outs = out if isinstance(out, (tuple, list)) else (out,)
        recorder.append((block, [tuple(o.shape) if isinstance(o, Sym)
                                 else None for o in outs],
                         isinstance(out, (tuple, list))))
    return out


def _trace(block, in_shapes, compiling=False, recorder=None):
    """Trace ``block`` for inputs of ``in_shapes`` (with the batch axis),
    changing nothing.  Returns (builder, outputs, output shapes, pending
    parameter shapes).  ``compiling``: for a plan, which blocks with hooks
    under ``block`` cannot be part of; ``recorder``: see trace_block."""
    builder = StepBuilder()
    pending = {}
    ctx = TraceContext(builder, pending)
    ctx.hooks_root = block if compiling else None
    ctx.recorder = recorder
    syms = [Sym(ctx, builder.input(tuple(s[1:])), tuple(s))
            for s in in_shapes]
    out = trace_block(block, *syms)
    outs = out if isinstance(out, (tuple, list)) else (out,)
    for o in outs:
        if not isinstance(o, Sym) or o.param is not None:
            raise TraceFailed(block, f"returned {type(o).__name__}, not a "
                              f"value computed from its inputs")
        if o.ctx is not ctx:
            raise TraceFailed(block, "returned a value of another trace")
        if o.shape[0] != in_shapes[0][0]:
            raise TraceFailed(block, f"an output of shape {o.shape} lost "
                              f"the batch axis")
    return builder, [o.buf for o in outs], [tuple(o.shape) for o in outs], \
        pending, isinstance(out, (tuple, list))


def _used_params(builder):
    """The parameters the traced steps read (a child the network never
    calls keeps its deferred parameters deferred, as in Gluon)."""
    used = {id(p): p for st in builder.steps for p in st.params()}
    used.update((id(p), p) for p in builder.params.values())
    return used


def _finish(block, pending, used):
    """Complete the shapes in ``pending`` and run the deferred initializer
    of every parameter the network reads (``used``: id -> Parameter), as
    one transaction: on any error every parameter is restored as it was."""
    from .errors import DeferredInitializationError
    params = list(block.collect_params().values())
    params += [p for p in used.values()
               if not any(p is q for q in params)]
    for p in params:
        if p.state == "unset" and id(p) in used:
            raise DeferredInitializationError(p._not_ready_message())
    if not pending and all(p.is_initialized for p in params
                           if id(p) in used):
        return
    snaps = [(p, p._snapshot()) for p in params]
    try:
        for p, shape in pending.items():
            p.shape = shape
        for p in params:
            if p.state == "deferred" and (id(p) in used
                                          or p.shape_is_known()):
                p._finish_deferred_init()
    except BaseException:
        for p, snap in snaps:
            p._restore(snap)
        raise


def prepare(block, in_shapes):
    """Trace ``block`` for ``in_shapes``, then complete shapes and finish
    deferred initialization as one transaction; returns the output shapes."""
    builder, _, out_shapes, pending, _ = _trace(block, in_shapes)
    _finish(block, pending, _used_params(builder))
    return out_shapes


def compile_plan(block, in_shapes, dtype, check=None):
    """Prepare ``block`` for ``in_shapes`` and build its plan.
    ``check(out_shapes, multi)``, if given, runs after the trace and
    before anything changes (deferred initialization): it may raise."""
    builder, outs, out_shapes, pending, multi = _trace(block, in_shapes,
                                                       compiling=True)
    if check is not None:
        check(out_shapes, multi)
    _finish(block, pending, _used_params(builder))
    steps, outs = fuse(builder.steps, outs)
    plan = Plan(steps, builder.sizes, builder.inputs, outs,
                builder.in_shapes, [s[1:] for s in out_shapes], dtype,
                builder.params, _where(block), multi)
    if not block.collect_params():
        # no parameters: the network computes in its input's float dtype
        plan.follow_input_dtype()
    block.apply(lambda b: b._watch_plan(plan))
    return plan


def _arrays(block, xs):
    arrs = []
    for x in xs:
        arr = as_numeric_array(x, _where(block))
        # checked before the conversion: np.ascontiguousarray turns a 0-d
        # value into shape (1,), which would hide the mistake
        if arr.ndim == 0:
            raise ShapeError(f"{_where(block)}: expected an array with a "
                             f"batch axis, got a 0-d value; for one sample "
                             f"of one feature use np.reshape(x, (1, 1))")
        arrs.append(arr)
    return arrs


def call_slow(block, x, *more, out=None, _slot="_plan"):
    """``block(x, ...)`` when no current plan fits; the plan is kept in
    the block's attribute ``_slot`` (``_plan`` is the fast path's).
    ``out``: see :class:`fastlazy._plan.CompiledCall`; a wrong one is
    refused before anything is initialized when the network compiles."""
    if isinstance(x, Sym) or any(isinstance(m, Sym) for m in more):
        # a child called inside a network being traced
        return trace_block(block, x, *more)
    given = (x,) + more
    if not block._is_plannable():
        return _eager(block, given, given, out)
    arrs = _arrays(block, given)
    with block._lock:
        plan = getattr(block, _slot)
        if plan is not None and plan.is_current():
            # another thread compiled it while this one waited
            res = _run(plan, arrs, given, out)
            if res is not None:
                return res
        dtype = net_dtype(block, arrs)
        arrs = [np.ascontiguousarray(a, dtype=dtype) for a in arrs]
        check = None if out is None else \
            (lambda shapes, multi: _check_out_early(block, out, shapes,
                                                    multi, dtype))
        try:
            plan = compile_plan(block, [tuple(a.shape) for a in arrs], dtype,
                                check)
        except TraceFailed as failed:
            block._fell_back(failed)
            plan = None
        if plan is not None:
            object.__setattr__(block, _slot, plan)
    if plan is None:
        return _eager(block, arrs, given, out)
    res = _run(plan, arrs, given, out)
    if res is None:  # pragma: no cover - plan built for these shapes
        raise RuntimeError("forward plan rejected its own input shape")
    return res


def _run(plan, arrs, given, out):
    """Run ``plan`` on ``arrs`` (the caller's inputs ``given``, converted),
    into ``out`` if given; None when they do not fit the plan."""
    if out is None:
        return plan.run(arrs[0]) if len(arrs) == 1 else plan.run_many(*arrs)
    # the plan checks out against the arrays it reads; the caller's own
    # inputs, which those may be copies of, are checked here
    check_apart(out, given, plan.where)
    return plan.run(arrs[0], out) if len(arrs) == 1 else \
        plan.run_many(*arrs, out=out)


def _eager(block, arrs, given, out):
    """The block's Python forward on ``arrs``, written into ``out`` if
    given."""
    res = block.forward(*arrs)
    if out is None:
        return res
    return deliver(res, out, tuple(given), _where(block))


def _check_out_early(block, out, out_shapes, multi, dtype):
    """Refuse an ``out`` that cannot take the result, from the traced
    output shapes, before the first forward initializes anything (the
    plan checks it again, with the memory overlaps, when it runs)."""
    check_out_shapes(out, [tuple(s) for s in out_shapes], multi, dtype,
                     _where(block))


def fused_steps(block, in_shape):
    """The typed steps ``block`` compiles to for inputs of ``in_shape``,
    after fusion; nothing is initialized or changed."""
    builder, outs, _, _, _ = _trace(block, [tuple(in_shape)],
                                    compiling=True)
    return fuse(builder.steps, outs)[0]


def explain(block, *inputs, file=None):
    """Say how ``block`` runs on ``inputs`` (arrays, or shapes with None
    for the batch): compiled as one plan (its steps, after fusion), or on
    the eager path, and then which block's code could not be traced and
    why.  Nothing is changed.  Prints the report and returns it."""
    import sys
    shapes = []
    for x in inputs:
        if isinstance(x, tuple) and all(d is None or isinstance(d, int)
                                        for d in x):
            shapes.append(tuple(1 if d is None else d for d in x))
        else:
            shapes.append(tuple(np.shape(x)))
    lines = [f"{_where(block)}:"]
    if not block._is_plannable() and block._eager_reason is None:
        lines.append(f"  eager: {type(block).__name__} has a Python "
                     f"forward(); only HybridBlocks and built-in layers are "
                     f"compiled")
    else:
        try:
            steps = fused_steps(block, shapes[0]) if len(shapes) == 1 \
                else fuse(*(lambda t: (t[0].steps, t[1]))(
                    _trace(block, shapes, compiling=True)))[0]
        except TraceFailed as failed:
            lines.append(f"  eager: the code of {_where(failed.block)} "
                         f"cannot be compiled: {failed.reason}")
        else:
            lines.append(f"  compiled: one plan of {len(steps)} steps")
            for st in steps:
                lines.append(f"    {type(st).__name__}")
    report = "\n".join(lines)
    print(report, file=file if file is not None else sys.stdout)
    return report
