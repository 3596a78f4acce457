"""The compiled kernels on their own (``_plan.dense_kernel``, the test twin
of the dense step) against NumPy, for dtype x route (small kernel, BLAS,
packed weights, the dot kernel on (M, K) rows) x shape x activation; and
whole networks under every instruction set."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from fastlazy import _plan, init, nn
from conftest import require_isa

ACTS = sorted(_plan.ACTIVATIONS, key=lambda a: _plan.ACTIVATIONS[a])
DTYPES = [np.float32, np.float64]
ROUTES = ["own", "blas", "packed", "dot"]


def check_dense(x, wt, b, act, use_blas, ref):
    y = _plan.dense_kernel(x, wt, b, _plan.ACTIVATIONS[act], use_blas)
    assert y.shape == (x.shape[0], wt.shape[1])
    assert y.dtype == x.dtype
    r, mag, k = ref.dense(x, wt.T, b, act)
    tol = 1.2 * 4 * ref.eps(x.dtype) * ((k + 2) * mag + 1)
    ref.close(y, r, tol, f"act={act} blas={use_blas} {x.dtype} "
                         f"n,K,M={x.shape[0]},{x.shape[1]},{wt.shape[1]}")
    return y


@given(n=st.integers(1, 40), k=st.integers(1, 300), m=st.integers(1, 150),
       act=st.sampled_from(ACTS), dtype=st.sampled_from(DTYPES),
       use_blas=st.sampled_from(ROUTES), bias=st.booleans(),
       scale=st.sampled_from([1e-3, 0.1, 1.0, 10.0]),
       seed=st.integers(0, 2 ** 32 - 1))
def test_dense_kernel_vs_numpy(n, k, m, act, dtype, use_blas, bias, scale,
                               seed, ref):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, k)) * scale).astype(dtype)
    wt = rng.standard_normal((k, m)).astype(dtype) / np.sqrt(k)
    b = rng.standard_normal(m).astype(dtype) if bias else None
    check_dense(x, wt, b, act, use_blas, ref)


@pytest.mark.parametrize("use_blas", ROUTES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("act", ACTS)
def test_dense_kernel_edge_shapes(act, dtype, use_blas, ref):
    """Every tail of the register tiles: M around multiples of 4/8/16
    lanes, K below and above the unroll, n = 1..9 rows (the packed kernel:
    also every remainder of its 6/12-row groups)."""
    rng = np.random.default_rng(0)
    rows = (1, 2, 3, 4, 5, 8, 9)
    if use_blas == "packed":
        rows += (6, 7, 11, 12, 13, 14, 17, 18, 19, 23, 24, 25, 30, 37)
    if use_blas == "dot":
        rows += (6, 7)
    for n in rows:
        for k in (1, 2, 3, 7, 8, 9, 16, 33):
            for m in (1, 2, 3, 4, 7, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65,
                      129):
                x = rng.standard_normal((n, k)).astype(dtype)
                wt = rng.standard_normal((k, m)).astype(dtype)
                b = rng.standard_normal(m).astype(dtype)
                check_dense(x, wt, b, act, use_blas, ref)


@pytest.mark.parametrize("route", ["blas", "packed", "dot"])
def test_routes_agree_with_the_small_kernel(route, ref):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((7, 50)).astype(np.float32)
    wt = rng.standard_normal((50, 70)).astype(np.float32)
    b = rng.standard_normal(70).astype(np.float32)
    a = _plan.dense_kernel(x, wt, b, 1, "own")
    c = _plan.dense_kernel(x, wt, b, 1, route)
    np.testing.assert_allclose(a, c, rtol=1e-5, atol=1e-4)


def test_dense_kernel_does_not_read_out_of_bounds(ref):
    """Views at the end of larger buffers: NaN just past the weight must
    never reach the result."""
    rng = np.random.default_rng(3)
    for k, m in [(3, 5), (9, 17), (16, 33), (5, 1)]:
        buf = np.full(k * m + 64, np.nan, dtype=np.float32)
        wt = buf[:k * m].reshape(k, m)
        wt[...] = rng.standard_normal((k, m))
        x = rng.standard_normal((4, k)).astype(np.float32)
        for route in ROUTES:
            y = _plan.dense_kernel(x, wt, None, 0, route)
            assert np.isfinite(y).all(), route
            check_dense(x, wt, None, None, route, ref)


def test_dense_kernel_argument_checks():
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError):
        _plan.dense_kernel(np.ones((2, 3), np.int32), np.ones((3, 2)), None,
                           0, False)
    with pytest.raises(ValueError):
        _plan.dense_kernel(x, np.ones((4, 2)), None, 0, False)
    with pytest.raises(ValueError):
        _plan.dense_kernel(x, np.ones((3, 2)), np.ones(3), 0, False)
    with pytest.raises(ValueError):
        _plan.dense_kernel(np.ones(3, np.float32), np.ones((3, 2)), None, 0,
                           False)
    with pytest.raises(ValueError, match="route"):
        _plan.dense_kernel(x, np.ones((3, 2)), None, 0, "fast")


# ---------------------------------------------------------------------------
# Whole networks under each instruction set


ISA_LEVELS = [0, 3, 4]


def test_set_isa_clamps_and_restores(isa_restore):
    core = isa_restore
    best = core.set_isa(None)
    best_name = core.kernel_isa()
    assert core.set_isa(0) == 0 and core.kernel_isa() == "baseline"
    for lvl in (3, 4, 9):
        got = core.set_isa(lvl)
        assert got <= min(lvl, best)
    assert core.set_isa(None) == best and core.kernel_isa() == best_name


@pytest.mark.parametrize("level", ISA_LEVELS)
@given(widths=st.lists(st.integers(1, 80), min_size=1, max_size=4),
       acts=st.lists(st.sampled_from(ACTS), min_size=4, max_size=4),
       n=st.integers(1, 40), k=st.integers(1, 60),
       dtype=st.sampled_from(["float32", "float64"]),
       flatten=st.booleans(), seed=st.integers(0, 2 ** 32 - 1))
def test_random_stacks_under_isa(level, widths, acts, n, k, dtype, flatten,
                                 seed, ref):
    require_isa(level)
    try:
        _run_stack(widths, acts, n, k, dtype, flatten, seed, ref, level)
    finally:
        _plan.set_isa(None)


def _run_stack(widths, acts, n, k, dtype, flatten, seed, ref, level):
    net = nn.Sequential()
    for w, a in zip(widths, acts):
        net.add(nn.Dense(w, activation=a, dtype=dtype, flatten=flatten))
    net.initialize(init=init.Xavier())
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 2, k) if not flatten else (n, k))
    ref.forward_matches(net, x, f"isa={level}")
    ref.forward_matches(net, x[: max(1, n // 2)], f"isa={level} half")


@pytest.mark.parametrize("level", ISA_LEVELS)
def test_big_layers_under_isa_use_batched_routes(level, ref, isa_restore):
    """Products above the small-kernel threshold go to the packed kernel
    (or BLAS GEMM), one row to GEMV; bias and activation run in the kernels
    of the chosen instruction set."""
    require_isa(level)
    net = nn.Sequential()
    net.add(nn.Dense(512, activation="gelu"), nn.Dense(700,
                                                       activation="silu"),
            nn.Dense(9, activation="softsign"))
    net.initialize(init=init.Xavier())
    x = np.random.default_rng(0).standard_normal((64, 600))
    ref.forward_matches(net, x)
    ref.forward_matches(net, x[:1])          # GEMV


def test_isa_switch_rebuilds_existing_plans(ref, isa_restore):
    net = nn.Sequential()
    net.add(nn.Dense(33, activation="tanh"), nn.Dense(5))
    net.initialize()
    x = np.random.default_rng(0).standard_normal((6, 17))
    outs = []
    for level in ISA_LEVELS + [None]:
        if isa_restore.set_isa(level) != level and level is not None:
            continue                     # this CPU lacks that level
        outs.append(ref.forward_matches(net, x))
    for o in outs[1:]:
        np.testing.assert_allclose(o, outs[0], rtol=1e-5, atol=1e-6)
