"""Shared configuration and NumPy oracles for the fastlazy core tests.

Hypothesis profiles: ``ci`` (default, ~150 examples per property) and
``long`` (many more); choose with the environment variable
``HYPOTHESIS_PROFILE``.

The ``ref`` fixture gives the NumPy references (float64, numerically careful)
that every numeric test compares against, and helpers to snapshot a network
so a test can prove that a failed call changed nothing.
"""

import math
import os
import types

import numpy as np
import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci", max_examples=150, deadline=None, derandomize=True,
    suppress_health_check=[HealthCheck.too_slow])
settings.register_profile(
    "long", max_examples=2000, deadline=None,
    suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

try:  # exact erf, vectorised; math.erf otherwise
    from scipy.special import erf as _erf
except ImportError:  # pragma: no cover - scipy is normally present
    _erf = np.vectorize(math.erf, otypes=[np.float64])


# ---------------------------------------------------------------------------
# NumPy oracles (float64)


def _sigmoid(z):
    # exp of a non-positive argument only: no overflow, exact limits
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def _softsign(z):
    with np.errstate(invalid="ignore"):
        return np.where(np.isinf(z), np.sign(z), z / (1.0 + np.abs(z)))


def _gelu(z):
    with np.errstate(invalid="ignore"):
        return np.where(z == -np.inf, 0.0,
                        0.5 * z * (1.0 + _erf(z / math.sqrt(2.0))))


def _silu(z):
    with np.errstate(invalid="ignore"):
        return np.where(z == -np.inf, 0.0, z * _sigmoid(z))


ACT_REF = {
    None: lambda z: z,
    "relu": lambda z: np.where(np.isnan(z), z, np.maximum(z, 0.0)),
    "sigmoid": _sigmoid,
    "tanh": np.tanh,
    "softrelu": lambda z: np.logaddexp(0.0, z),   # log(1 + e^z), stable
    "softsign": _softsign,
    "gelu": _gelu,
    "silu": _silu,
}

ACT_NAMES = ["relu", "sigmoid", "tanh", "softrelu", "softsign", "gelu",
             "silu"]


def act_ref(name, z):
    """The activation ``name`` of float64 ``z``, with the mathematical
    limits at +-inf and NaN in, NaN out."""
    with np.errstate(over="ignore", invalid="ignore"):
        return ACT_REF[name](np.asarray(z, dtype=np.float64))


def eps(dtype):
    return float(np.finfo(np.dtype(dtype)).eps)


def dense_ref(x, w, b, act, flatten=True):
    """(out, magnitude, K): float64 reference of one Dense layer and the
    bound ``|x| @ |W|.T + |b|`` used for the rounding tolerance."""
    x = np.asarray(x, dtype=np.float64)
    w = np.asarray(w, dtype=np.float64)
    if flatten:
        x = _flat(x)
    with np.errstate(invalid="ignore", over="ignore"):
        z = x @ w.T
        mag = np.abs(x) @ np.abs(w).T
    if b is not None:
        z = z + np.asarray(b, dtype=np.float64)
        mag = mag + np.abs(np.asarray(b, dtype=np.float64))
    return act_ref(act, z), mag, x.shape[-1]


def _flat(a):
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))


def forward_ref(block, x):
    """(out, tol): NumPy forward of a network of built-in layers, using the
    network's own (initialized) parameters, and an elementwise tolerance
    that grows with the rounding of each layer's sums."""
    x = np.asarray(x, dtype=np.float64)
    dt = _net_dtype(block)
    tol = np.zeros(x.shape)
    return _walk(block, x, tol, eps(dt))


def _net_dtype(block):
    from fastlazy._util import compute_dtype
    for p in block.collect_params().values():
        return compute_dtype(p.dtype)      # bfloat16 weights: float32 sums
    return np.dtype(np.float32)


def _walk(block, x, tol, e):
    from fastlazy import nn
    if isinstance(block, nn.Sequential):
        for child in block:
            x, tol = _walk(child, x, tol, e)
        return x, tol
    if isinstance(block, nn.Dense):
        w = block.weight.data().astype(np.float64)
        b = None if block.bias is None else block.bias.data()
        flat = block._flatten
        if flat:
            x, tol = _flat(x), _flat(tol)
        out, mag, k = dense_ref(x, w, b, block.act, flatten=False)
        # rounding of this layer, plus the propagated error (|W| @ tol),
        # through activations whose slope is at most ~1.13 (GELU)
        with np.errstate(invalid="ignore", over="ignore"):
            prop = tol @ np.abs(w).T
            new_tol = 1.2 * (4 * e * ((k + 2) * mag + 1) + prop)
        # an infinite or NaN input makes the sum +-inf or NaN, whose
        # activation is an exact limit (or NaN): no rounding to allow
        return out, np.where(np.isfinite(mag), new_tol, 0.0)
    if isinstance(block, nn.Activation):
        with np.errstate(invalid="ignore", over="ignore"):
            new_tol = 1.2 * tol + 4 * e * (np.abs(x) + 1)
        return act_ref(block._act_type, x), np.where(np.isfinite(x),
                                                     new_tol, 0.0)
    if isinstance(block, nn.Dropout):
        return x, tol
    if isinstance(block, nn.Flatten):
        return _flat(x), _flat(tol)
    raise TypeError(f"no NumPy reference for {type(block).__name__}")


def assert_close(out, ref, tol, what=""):
    """``|out - ref| <= tol`` elementwise; NaN where ref is NaN; equal
    infinities."""
    out = np.asarray(out, dtype=np.float64)
    ref = np.asarray(ref, dtype=np.float64)
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    nan_ref = np.isnan(ref)
    np.testing.assert_array_equal(np.isnan(out), nan_ref,
                                  err_msg=f"{what}: NaN positions differ")
    inf_ref = np.isinf(ref)
    np.testing.assert_array_equal(out[inf_ref], ref[inf_ref],
                                  err_msg=f"{what}: infinities differ")
    fin = ~nan_ref & ~inf_ref
    tol = np.broadcast_to(np.asarray(tol, dtype=np.float64), ref.shape)
    # an infinite bound comes from an infinite input: the result is then a
    # limit (0, 1, +-1, ...) and must be exact
    tol = np.where(np.isfinite(tol), tol, 0.0)
    err = np.abs(out[fin] - ref[fin])
    bad = ~(err <= tol[fin])
    if bad.any():
        i = int(np.argmax(bad))
        raise AssertionError(
            f"{what}: {int(bad.sum())} of {err.size} values off; first: got "
            f"{out[fin][i]!r}, want {ref[fin][i]!r} (tol {tol[fin][i]:.3g})")


def assert_forward_matches(net, x, what=""):
    """Run ``net(x)`` and compare with the NumPy reference."""
    y = net(x)
    ref, tol = forward_ref(net, np.asarray(x))
    assert_close(y, ref, tol, what)
    return y


# ---------------------------------------------------------------------------
# Snapshots: proof that a failed call changed nothing


def snapshot(net):
    """Every parameter's identity, name, shape, state, dtype and bytes."""
    out = []
    for key, p in net._collect_params_with_prefix().items():
        data = p.data().tobytes() if p.state == "initialized" else None
        out.append((key, id(p), p.name, p.shape, p.state, p.dtype.str, data))
    return out


def states(net):
    return [p.state for p in net.collect_params().values()]


def shapes(net):
    return [p.shape for p in net.collect_params().values()]


@pytest.fixture(scope="session")
def ref():
    """The NumPy oracles and helpers of this conftest, as one namespace."""
    return types.SimpleNamespace(
        act=act_ref, dense=dense_ref, forward=forward_ref, eps=eps,
        close=assert_close, forward_matches=assert_forward_matches,
        snapshot=snapshot, states=states, shapes=shapes,
        ACT_NAMES=ACT_NAMES)


@pytest.fixture(autouse=True)
def _fresh_seed():
    """Each test starts and ends without a global seed."""
    import fastlazy.random as flr
    saved = flr._seed
    flr._seed = None
    yield
    flr._seed = saved


# Figures of the long runs (leaks, threads, fuzzing), printed at the end of
# the session, so `python -m pytest -m slow` reports them without -s.
_REPORT = []


@pytest.fixture
def reliability_report():
    """Call with a line of figures to have it printed in the summary."""
    return _REPORT.append


def pytest_terminal_summary(terminalreporter):
    if _REPORT:
        terminalreporter.section("reliability figures")
        for line in _REPORT:
            terminalreporter.write_line(line)


@pytest.fixture
def two_threads():
    """The pool on (two threads), put back after."""
    import fastlazy as fl
    old = fl.get_num_threads()
    fl.set_num_threads(2)
    yield
    fl.set_num_threads(old)


@pytest.fixture
def isa_restore():
    """Put the kernel instruction set back to the best available after."""
    from fastlazy import _plan
    yield _plan
    _plan.set_isa(None)


def require_isa(level):
    """Switch the kernels to instruction-set ``level``; skip the test when
    this CPU lacks it (set_isa then falls back to a lower level, which
    would test that one under the wrong name)."""
    from fastlazy import _plan
    got = _plan.set_isa(level)
    if level is not None and got != level:
        _plan.set_isa(None)
        pytest.skip(f"this CPU has no instruction-set level {level} "
                    f"(best: {got})")
    return got


def conv2d_ref(x, w, b=None, stride=(1, 1), pad=(0, 0), dil=(1, 1),
               groups=1):
    """NCHW convolution as a sum over kernel taps of strided slices."""
    x = np.asarray(x, np.float64)
    w = np.asarray(w, np.float64)
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    og = o // groups
    xp = np.pad(x, ((0, 0), (0, 0), (pad[0], pad[0]), (pad[1], pad[1])))
    oh = (h + 2 * pad[0] - dil[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wd + 2 * pad[1] - dil[1] * (kw - 1) - 1) // stride[1] + 1
    out = np.zeros((n, o, oh, ow))
    for i in range(kh):
        for j in range(kw):
            r0, c0 = i * dil[0], j * dil[1]
            patch = xp[:, :, r0:r0 + stride[0] * (oh - 1) + 1:stride[0],
                       c0:c0 + stride[1] * (ow - 1) + 1:stride[1]]
            for g in range(groups):
                out[:, g * og:(g + 1) * og] += np.einsum(
                    "nchw,oc->nohw", patch[:, g * cg:(g + 1) * cg],
                    w[g * og:(g + 1) * og, :, i, j])
    if b is not None:
        out += np.asarray(b, np.float64)[None, :, None, None]
    return out


def pool_ref(x, k, s, p, ceil_mode, kind, include_pad=True):
    """Pooling from the definition, in float64: window (a, b) covers padded
    rows [a*s - p, a*s - p + k) clipped to the input; a window with no
    input value gives 0; the average divides by the window clipped to the
    padded input (include_pad) or by the input values in it."""
    x = np.asarray(x, np.float64)
    n, c, h, w = x.shape

    def size(d, i):
        span = d + 2 * p[i] - k[i]
        return (-(-span // s[i]) if ceil_mode else span // s[i]) + 1

    oh, ow = size(h, 0), size(w, 1)
    out = np.zeros((n, c, oh, ow))
    for a in range(oh):
        hs = a * s[0] - p[0]
        rows = [r for r in range(hs, hs + k[0]) if 0 <= r < h]
        prow = len([r for r in range(hs, hs + k[0]) if -p[0] <= r < h + p[0]])
        for b in range(ow):
            ws = b * s[1] - p[1]
            cols = [q for q in range(ws, ws + k[1]) if 0 <= q < w]
            pcol = len([q for q in range(ws, ws + k[1])
                        if -p[1] <= q < w + p[1]])
            if not rows or not cols:
                continue
            win = x[:, :, rows][:, :, :, cols]
            if kind == "max":
                out[:, :, a, b] = win.max(axis=(2, 3))
            else:
                div = prow * pcol if include_pad else len(rows) * len(cols)
                out[:, :, a, b] = win.sum(axis=(2, 3)) / div
    return out
