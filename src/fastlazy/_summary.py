"""``Block.summary``: Gluon's table of output shapes and parameter counts,
for any network the compiler can trace (custom HybridBlocks and branching
networks included), before and after the first forward pass.

The network is *traced* (:func:`fastlazy._compile._trace`) on the input
shapes, with a recorder that notes each block's output shapes as the block
returns -- children before the containers that finish after them, which is
the order in which Gluon's summary hooks fire.  Tracing only states shapes
and describes steps: nothing is computed, initialized or changed, and
forward hooks are not called.
"""

import numpy as np

from ._util import is_int
from .errors import ShapeError

__all__ = ["summary"]


def _parse(block, x):
    """(shape traced, shape shown) of an input or an input shape."""
    if isinstance(x, tuple) and all(d is None or (is_int(d) and d >= 0)
                                    for d in x):
        shown = tuple(None if d is None else int(d) for d in x)
        shape = tuple(1 if d is None else int(d) for d in x)
    else:
        shape = shown = tuple(int(d) for d in np.shape(x))
    if not shape:
        raise ShapeError(f"{block.name}.summary: the input needs a batch "
                         f"axis, got shape {shape}")
    return shape, shown


def _shape_str(shapes, multi):
    return ", ".join(str(s) for s in shapes) if multi else str(shapes[0])


def _quant_tag(block):
    """What fl.quantize made of a layer: 'int8 dynamic', 'float32:
    depthwise' (left out), or None."""
    spec = getattr(block, "_quant", None)
    if spec is not None:
        return spec.describe()
    kept = getattr(block, "_quant_kept", None)
    return f"float32: {kept}" if kept else None


def summary(block, *inputs):
    """See :meth:`fastlazy.block.Block.summary`."""
    from . import _compile
    from .block import Sequential
    from .parameter_dict import Constant
    if not inputs:
        raise TypeError(f"{block.name}.summary: give an example input or "
                        f"its shape, e.g. summary((None, 20))")
    parsed = [_parse(block, x) for x in inputs]
    shapes = [p[0] for p in parsed]
    batch = parsed[0][1][0]
    calls = []
    try:
        _, _, _, pending, _ = _compile._trace(block, shapes, recorder=calls)
    except _compile.TraceFailed as failed:
        culprit = failed.block
        why = failed.reason
        reason = getattr(culprit, "_eager_reason", None)
        if reason is not None and reason[0] != culprit.name:
            why = f"'{reason[0]}': {reason[1]}"
        raise TypeError(
            f"{block.name}.summary: {_compile._where(culprit)} prevents "
            f"the summary: its code cannot be traced ({why}). summary() "
            f"infers shapes by tracing, without running anything; write "
            f"that block as a HybridBlock with hybrid_forward(F, x), or "
            f"summarise the parts of the network around it.") from None

    def show(shape):
        return None if shape is None else (batch,) + tuple(shape[1:])

    rows = []
    seen = set()
    for called, outs, multi in calls:
        if isinstance(called, Sequential):
            continue                # Gluon gives Sequentials no row
        aux = getattr(called, "_aux_names", ())
        count = train = dup = 0
        for attr, p in called._reg_params.items():
            if p is None:
                continue
            s = pending.get(p, p.shape)
            size = int(np.prod(s)) if s and -1 not in s else 0
            count += size
            if attr not in aux and not isinstance(p, Constant):
                train += size
            if id(p) in seen:
                dup += size
            seen.add(id(p))
        outs = [show(o) for o in outs]
        rows.append((type(called).__name__, outs if multi else outs[0],
                     _shape_str(outs, multi), count, train, dup,
                     _quant_tag(called)))

    line = "{:>20}  {:>42} {:>15}"
    out = ["-" * 80, line.format("Layer (type)", "Output Shape", "Param #"),
           "=" * 80,
           line.format("Input", _shape_str([p[1] for p in parsed],
                                           len(parsed) > 1), 0)]
    total = trainable = shared = 0
    result = []
    quant = {}
    for i, (cls, oshape, text, count, train, dup, tag) in enumerate(rows, 1):
        name = f"{cls}-{i}"
        short = "" if not tag else (" [int8]" if tag.startswith("int8")
                                    else " [fp32]")
        out.append(line.format(name + short, text, count))
        if tag:
            quant.setdefault(tag, []).append(name)
        result.append((name, oshape, count))
        total += count
        trainable += train
        shared += dup
    out += ["=" * 80,
            "Parameters in forward computation graph, duplicate included",
            f"   Total params: {total}",
            f"   Trainable params: {trainable}",
            f"   Non-trainable params: {total - trainable}",
            f"Shared params in forward computation graph: {shared}",
            f"Unique parameters in model: {total - shared}"]
    for tag, names in quant.items():
        out.append(f"{tag}: {', '.join(names)}")
    # the storage of each dtype, when not all float32 (after a cast)
    kinds = {}
    for p in block.collect_params().values():
        s = pending.get(p, p.shape)
        size = int(np.prod(s)) if s and -1 not in s else 0
        entry = kinds.setdefault(p.dtype.name, [0, 0, p.dtype.itemsize])
        entry[0] += 1
        entry[1] += size
    if kinds and set(kinds) != {"float32"}:
        out.append("Parameter storage by dtype: " + ", ".join(
            f"{name} {n} ({size} values, {size * isz} bytes)"
            for name, (n, size, isz) in kinds.items()))
    out.append("-" * 80)
    print("\n".join(out))
    return result
