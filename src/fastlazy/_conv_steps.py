"""Fusion of convolution-network plan steps (used by ``block._fuse``).

Step descriptions are the tuples listed at the top of ``_conv.pxi``.  This
module only rewrites such tuples; it imports nothing from the block layer, so
``block.py`` can import it.

Rules, applied left to right:

* ``conv2d`` (no activation) then ``batchnorm`` over its output channels
  -> one ``conv2d`` whose epilogue applies the BatchNorm (and the
  BatchNorm's fused activation, if any);
* ``conv2d`` or ``batchnorm`` without an activation, then ``act``
  -> the activation moves into the step's epilogue.

The fused BatchNorm still reads gamma, beta, running_mean and running_var at
every call, so values written through ``Parameter.data()`` are seen at once.
"""

from . import _core

__all__ = ["fuse_conv_steps", "set_batchnorm_fusion", "batchnorm_fusion"]

_NO_ACT = _core.ACTIVATIONS[None]
_fuse_batchnorm = True


def set_batchnorm_fusion(enabled):
    """Turn fusing a BatchNorm into the convolution before it on or off
    (default on; off exists to compare the two).  Returns the previous
    setting; every plan is rebuilt on its next call."""
    global _fuse_batchnorm
    old = _fuse_batchnorm
    _fuse_batchnorm = bool(enabled)
    _core.bump_epoch()
    return old


def batchnorm_fusion():
    """Whether a BatchNorm is fused into the convolution before it."""
    return _fuse_batchnorm


def _conv_takes_bn(conv, bn):
    _, _, _, act, geom, fused = conv
    if act != _NO_ACT or fused is not None:
        return False
    _, _, _, _, _, _, outer, channels, inner, _ = bn
    out_channels, oh, ow = geom[3], geom[13], geom[14]
    return outer == 1 and channels == out_channels and inner == oh * ow


def fuse_conv_steps(steps):
    """Return ``steps`` with BatchNorm and activations folded into the
    convolution or BatchNorm step before them (see the module docstring)."""
    out = []
    for step in steps:
        prev = out[-1] if out else None
        kind = step[0]
        if prev is not None and prev[0] == "conv2d":
            if kind == "batchnorm" and _fuse_batchnorm \
                    and _conv_takes_bn(prev, step):
                _, gamma, beta, mean, var, eps, _, _, _, act = step
                out[-1] = prev[:3] + (act, prev[4],
                                      (gamma, beta, mean, var, eps))
                continue
            if kind == "act" and prev[3] == _NO_ACT:
                out[-1] = prev[:3] + (step[1],) + prev[4:]
                continue
        if prev is not None and prev[0] == "batchnorm" and kind == "act" \
                and prev[9] == _NO_ACT:
            out[-1] = prev[:9] + (step[1],)
            continue
        out.append(step)
    return out
