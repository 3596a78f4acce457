"""NumPy convolution and pooling for the eager path of ``F.Convolution`` and
``F.Pooling`` (a block that cannot be compiled still computes; compiled
networks never come here).  Float64 internally, NCHW."""

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["conv2d", "pool2d"]


def conv2d(x, w, b, stride, pad, dilate, groups):
    """``x`` (N, C, H, W), ``w`` (O, C/groups, kh, kw) -> (N, O, OH, OW)."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, _, _ = x.shape
    o, cg, kh, kw = w.shape
    if c != cg * groups:
        raise ValueError(f"Convolution: input has {c} channels, the weight "
                         f"{w.shape} with {groups} groups needs {cg * groups}")
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    span = (dilate[0] * (kh - 1) + 1, dilate[1] * (kw - 1) + 1)
    win = sliding_window_view(xp, span, axis=(2, 3))
    win = win[:, :, ::stride[0], ::stride[1], ::dilate[0], ::dilate[1]]
    og = o // groups
    outs = []
    for g in range(groups):
        part = win[:, g * cg:(g + 1) * cg]          # N, cg, OH, OW, kh, kw
        wg = w[g * og:(g + 1) * og]                 # og, cg, kh, kw
        outs.append(np.einsum("nchwij,ocij->nohw", part, wg, optimize=True))
    y = np.concatenate(outs, axis=1)
    if b is not None:
        y = y + np.asarray(b, np.float64).reshape(1, -1, 1, 1)
    return y


def pool2d(x, k, s, p, is_max, ceil_mode, count_include_pad):
    """Max or average pooling with fastlazy's rules: a window covers the
    padded rows [a*s - p, a*s - p + k) clipped to the input; padding never
    wins a maximum; a window with no input value gives 0; the average
    divides by the window clipped to the padded input (count_include_pad)
    or by the input values in it."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape

    def size(d, i):
        span = d + 2 * p[i] - k[i]
        return (-(-span // s[i]) if ceil_mode else span // s[i]) + 1

    oh, ow = size(h, 0), size(w, 1)
    # room for the windows that ceil_mode adds past the padded input
    eh = max(0, (oh - 1) * s[0] + k[0] - (h + 2 * p[0]))
    ew = max(0, (ow - 1) * s[1] + k[1] - (w + 2 * p[1]))
    fill = -np.inf if is_max else 0.0
    xp = np.pad(x, ((0, 0), (0, 0), (p[0], p[0] + eh), (p[1], p[1] + ew)),
                constant_values=fill)
    inside = np.pad(np.ones((h, w)), ((p[0], p[0] + eh), (p[1], p[1] + ew)))
    padded = np.pad(np.ones((h + 2 * p[0], w + 2 * p[1])), ((0, eh), (0, ew)))
    win = sliding_window_view(xp, tuple(k), axis=(2, 3))[
        :, :, ::s[0], ::s[1]][:, :, :oh, :ow]
    cnt = sliding_window_view(inside, tuple(k))[::s[0], ::s[1]][:oh, :ow]
    cnt = cnt.sum(axis=(2, 3))
    if is_max:
        out = win.max(axis=(4, 5))
        return np.where(cnt > 0, out, 0.0)
    total = win.sum(axis=(4, 5))
    if count_include_pad:
        div = sliding_window_view(padded, tuple(k))[::s[0], ::s[1]][
            :oh, :ow].sum(axis=(2, 3))
    else:
        div = cnt
    return np.where(cnt > 0, total / np.maximum(div, 1), 0.0)
