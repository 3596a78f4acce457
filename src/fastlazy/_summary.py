"""``Block.summary``: Gluon's table of output shapes and parameter counts,
from shapes alone (nothing is computed, initialized or changed)."""

import numpy as np

from ._util import is_int
from .errors import ShapeError

__all__ = ["summary"]


def summary(block, x):
    """See :meth:`fastlazy.block.Block.summary`."""
    if isinstance(x, tuple) and all(d is None or (is_int(d) and d >= 0)
                                    for d in x):
        shown = tuple(None if d is None else int(d) for d in x)
        shape = tuple(1 if d is None else int(d) for d in x)
    else:
        shape = shown = tuple(np.shape(x))
    if not shape:
        raise ShapeError(f"{block.name}.summary: the input needs a batch "
                         f"axis, got shape {shape}")
    if not block._is_plannable():
        raise TypeError(f"{block.name}.summary: only blocks made of "
                        f"built-in layers can be summarised from "
                        f"shapes ({type(block).__name__} has its own "
                        f"forward)")
    rows = []
    _rows(block, shape, {}, rows, set())
    batch = shown[0]
    line = "{:>20}  {:>42} {:>15}"
    out = ["-" * 80, line.format("Layer (type)", "Output Shape", "Param #"),
           "=" * 80, line.format("Input", str(shown), 0)]
    total = trainable = shared = 0
    result = []
    for i, (cls, oshape, count, train, dup) in enumerate(rows, 1):
        oshape = (batch,) + tuple(oshape[1:])
        name = f"{cls}-{i}"
        out.append(line.format(name, str(oshape), count))
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
            f"Unique parameters in model: {total - shared}", "-" * 80]
    print("\n".join(out))
    return result


def _rows(block, shape, pending, rows, seen):
    """Append (class, output shape, params, trainable, shared) for ``block``
    after its children's (containers other than Sequential get a row too,
    as in Gluon); return the output shape."""
    from .block import Sequential
    if block._children:
        for child in block._children.values():
            shape = _rows(child, shape, pending, rows, seen)
        if isinstance(block, Sequential):
            return shape
        out = shape
    else:
        out = block._infer(shape, pending)
    aux = getattr(block, "_aux_names", ())
    count = train = dup = 0
    for attr, p in block._reg_params.items():
        s = pending.get(p, p.shape)
        size = int(np.prod(s)) if s and -1 not in s else 0
        count += size
        if attr not in aux:
            train += size
        if id(p) in seen:
            dup += size
        seen.add(id(p))
    rows.append((type(block).__name__, tuple(out), count, train, dup))
    return out
