"""int8 inference (fl.quantize): the kernels against a NumPy reference of
their exact arithmetic (int32 sums, the same float epilogue), at every
instruction-set level this CPU has, on every route (small, row chunks,
panels split over threads, convolutions); networks (Sequential, graphs,
LeNet, a model-zoo CNN), the accuracy against float32, persistence, and the
failure modes.  The arithmetic is the one kernels/qgemm.inc.h states."""

import copy
import io
import pickle

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import _plan, nn
from fastlazy.quantization import QuantizationError, quantized_layers

from conftest import conv2d_ref, require_isa

F32 = np.float32
# baseline, AVX2 (exact), AVX2 with 7-bit weights, AVX-VNNI, AVX-512 VNNI
LEVELS = [0, 3, 4, 5, 6]
FLOAT_LEVEL = {0: 0, 3: 3, 4: 3, 5: 3, 6: 4}


# ---------------------------------------------------------------------------
# The NumPy reference (kernels/qgemm.inc.h, term by term)


def ref_weights(wt):
    """wt (K, M) -> int8 values (K, M), scales (M,), column sums (M,), for
    the kernel in use (its largest weight: 127, or 63 for 7-bit weights)."""
    wmax = _plan.int8_kernels()["weight_max"]
    wt = np.asarray(wt, F32)
    ws = (np.abs(wt).max(axis=0) / F32(wmax)).astype(F32)
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(ws > 0, np.rint(wt / ws), 0)
    q = np.clip(q, -wmax, wmax).astype(np.int64)
    return q, ws, q.sum(axis=0)


def ref_rows(x, calib=None):
    """x (n, K) -> levels u (n, K) in [0, 255], scales (n,), zero points."""
    x = np.asarray(x, F32)
    if calib is None:
        lo = np.minimum(F32(0), x.min(axis=1))
        hi = np.maximum(F32(0), x.max(axis=1))
    else:
        lo = np.full(len(x), min(F32(0), F32(calib[0])), F32)
        hi = np.full(len(x), max(F32(0), F32(calib[1])), F32)
    with np.errstate(invalid="ignore", over="ignore"):
        scale = ((hi - lo) / F32(255)).astype(F32)
        scale = np.where(scale > 0, scale, F32(1)).astype(F32)
        zp = np.clip(np.nan_to_num(np.rint(-lo / scale)), 0,
                     255).astype(np.int64)
        inv = (F32(1) / scale).astype(F32)
        v = np.clip(x * inv[:, None], F32(-512), F32(512))
        u = np.clip(np.rint(np.nan_to_num(v)).astype(np.int64)
                    + zp[:, None], 0, 255)
    bad = ~np.isfinite(x).all(axis=1)
    return u, np.where(bad, F32(np.nan), scale).astype(F32), zp


def ref_epilogue(acc, xs, ws, shift, act):
    y = acc.astype(F32) * (xs[:, None] * ws[None, :]).astype(F32)
    if shift is not None:
        y = y + np.asarray(shift, F32)
    with np.errstate(invalid="ignore"):
        if act in ("relu", 1):
            y = np.where(y <= 0, F32(0), y)
        elif act == "sigmoid":
            with np.errstate(over="ignore"):
                y = F32(1) / (F32(1) + np.exp(-y))
    return y.astype(F32)


def ref_dense(x, w, b=None, act=None, calib=None):
    """An int8 Dense: x (n, K), w (M, K) as Gluon holds it."""
    q, ws, wsum = ref_weights(np.asarray(w, F32).T)
    u, xs, zp = ref_rows(x, calib)
    acc = u @ q - zp[:, None] * wsum[None, :]
    return ref_epilogue(acc, xs, ws, b, act)


def ref_conv(x, w, b=None, act=None, stride=(1, 1), pad=(0, 0),
             dil=(1, 1), calib=None):
    """An int8 Conv2D (one group): each sample quantized as one row."""
    n, O = x.shape[0], w.shape[0]
    q, ws, wsum = ref_weights(np.asarray(w, F32).reshape(O, -1).T)
    u, xs, zp = ref_rows(np.asarray(x, F32).reshape(n, -1), calib)
    lv = (u - zp[:, None]).reshape(x.shape).astype(np.float64)
    acc = conv2d_ref(lv, q.T.reshape(w.shape).astype(np.float64),
                     stride=stride, pad=pad, dil=dil)
    assert np.all(acc == np.rint(acc))          # exact in float64
    acc = acc.astype(np.int64)
    out = np.empty(acc.shape, F32)
    for i in range(n):
        a = acc[i].reshape(O, -1).T
        out[i] = ref_epilogue(a, np.full(a.shape[0], xs[i]), ws, b,
                              act).T.reshape(acc.shape[1:])
    return out


def close(y, r):
    """The kernel's float epilogue may contract a * b + c into one FMA."""
    scale = max(1.0, float(np.nanmax(np.abs(r)))) if r.size else 1.0
    np.testing.assert_allclose(y, r, rtol=2e-6, atol=2e-6 * scale)


@pytest.fixture(params=LEVELS)
def level(request, isa_restore):
    old = _plan.set_int8_avx2("7bit" if request.param == 4 else "exact")
    got = isa_restore.set_isa(FLOAT_LEVEL[request.param])
    info = _plan.int8_kernels()
    if info["level"] != request.param:
        _plan.set_int8_avx2(old)
        isa_restore.set_isa(None)
        pytest.skip(f"this CPU has no int8 level {request.param} (its "
                    f"int8 kernels at float level {got}: level "
                    f"{info['level']}, {info['isa']})")
    yield request.param
    _plan.set_int8_avx2(old)
    isa_restore.set_isa(None)


# ---------------------------------------------------------------------------
# The kernels on their own


def test_weights_packed_as_stated(level):
    rng = np.random.default_rng(1)
    wt = rng.standard_normal((37, 45)).astype(F32)
    wt[:, 3] = 0                                  # a column of zeros
    pk, ws, wsum = _plan.qpack_kernel(wt)
    info = _plan.int8_kernels()
    nr, ks = info["panel"], info["k_group"]
    q, rws, rsum = ref_weights(wt)
    K, M = wt.shape
    kg = -(-K // ks)
    npan = -(-M // nr)
    full = np.zeros((kg * ks, npan * nr), np.int64)
    full[:K, :M] = q
    want = full.reshape(kg, ks, npan, nr).transpose(2, 0, 3, 1).ravel()
    np.testing.assert_array_equal(pk[:want.size], want)
    np.testing.assert_array_equal(ws[:M], rws)
    np.testing.assert_array_equal(wsum[:M], rsum)
    assert not ws[M:].any() and not wsum[M:].any()
    assert ws[3] == 0 and not q[:, 3].any()


def test_rows_quantized_as_stated(level):
    rng = np.random.default_rng(2)
    x = (rng.standard_normal((9, 53)) * 3).astype(F32)
    x[1] = np.abs(x[1])                      # all positive: zero point 0
    x[2] = -np.abs(x[2])                     # all negative: zero point 255
    x[3] = 0                                 # all zero
    x[4, 7] = np.nan
    x[5, 0] = -np.inf
    for calib in (None, (-1.5, 2.0)):
        levels, xs, xz = _plan.qrows_kernel(x, calib)
        u, rs, rz = ref_rows(x, calib)
        ok = np.isfinite(x).all(axis=1)
        np.testing.assert_array_equal(xs[ok], rs[ok])
        assert np.isnan(xs[~ok]).all()
        if _plan.int8_kernels()["act_bytes"] == 1:
            np.testing.assert_array_equal(levels[ok], u[ok])
            np.testing.assert_array_equal(xz[ok], rz[ok])
        else:               # int16 levels minus the zero point
            np.testing.assert_array_equal(levels[ok], (u - rz[:, None])[ok])
            assert not xz.any()


@settings(max_examples=60)
@given(n=st.integers(1, 40), K=st.integers(1, 90), M=st.integers(1, 80),
       act=st.sampled_from([0, 1, 2]), static=st.booleans(),
       bias=st.booleans(), seed=st.integers(0, 2**16))
def test_qgemm_matches_reference(n, K, M, act, static, bias, seed):
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal((n, K)) * rng.uniform(0.1, 5)).astype(F32)
    wt = rng.standard_normal((K, M)).astype(F32)
    b = rng.standard_normal(M).astype(F32) if bias else None
    calib = (-1.0, 2.5) if static else None
    names = {0: None, 1: "relu", 2: "sigmoid"}
    for lvl in sorted({0, _plan.int8_kernels()["best_level"]}):
        _plan.set_isa(FLOAT_LEVEL[lvl])
        try:
            y = _plan.qdense_kernel(x, wt, b, act, calib)
            r = ref_dense(x, wt.T, b, names[act], calib)
        finally:
            _plan.set_isa(None)
        if act == 2:        # the float sigmoid itself is not bit-exact
            np.testing.assert_allclose(y, r, rtol=1e-5, atol=1e-6)
        else:
            close(y, r)


def test_qgemm_panel_range(level):
    rng = np.random.default_rng(3)
    nr = _plan.int8_kernels()["panel"]
    x = rng.standard_normal((5, 30)).astype(F32)
    wt = rng.standard_normal((30, 3 * nr + 5)).astype(F32)
    y = _plan.qdense_kernel(x, wt, None, 1, None, 1, 3)
    r = ref_dense(x, wt.T, None, "relu")
    assert np.isnan(y[:, :nr]).all()                 # left alone
    assert np.isnan(y[:, 3 * nr:]).all()
    close(y[:, nr:3 * nr], r[:, nr:3 * nr])


@pytest.mark.parametrize("n,K,M", [(1, 1, 1), (1, 3, 1), (1, 20, 4),
                                   (2, 7, 5), (1, 256, 10), (2, 256, 10),
                                   (2, 33, 15), (1, 130, 16), (3, 70, 13),
                                   (5, 64, 40), (2, 1000, 3)])
def test_dot_kernel_equals_panel_kernel(n, K, M, level):
    # the dot kernel (kernels/qdot.inc.h) on its own, forced for any M:
    # the same sums and epilogue as the panel kernel, bit for bit
    rng = np.random.default_rng(n * 1000 + K + M)
    x = (rng.standard_normal((n, K)) * 2).astype(F32)
    wt = rng.standard_normal((K, M)).astype(F32)
    b = rng.standard_normal(M).astype(F32)
    x[0, K // 2] = np.nan if n > 2 else x[0, K // 2]
    for act in (0, 1, 2):
        for bias in (None, b):
            for calib in (None, (-1.0, 2.5)):
                y = _plan.qdense_kernel(x, wt, bias, act, calib, dot=True)
                want = _plan.qdense_kernel(x, wt, bias, act, calib)
                np.testing.assert_array_equal(y, want)
    r = ref_dense(x, wt.T, b, "relu")
    ok = np.isfinite(x).all(axis=1)
    close(_plan.qdense_kernel(x, wt, b, 1, None, dot=True)[ok], r[ok])
    if not ok.all():
        assert np.isnan(_plan.qdense_kernel(x, wt, b, 1, None,
                                            dot=True)[~ok]).all()


@pytest.mark.parametrize("rows", [1, 2, 3])
@pytest.mark.parametrize("M", [1, 5, 10, 13])
def test_dot_route_in_networks(rows, M, level):
    # layers with fewer outputs than a panel: 1-2 rows on the dot kernel,
    # the same outputs as with it switched off (panel kernel) and NaN rows
    net = mlp([37, M, 6], ["relu", "relu", None], 22)
    x = np.random.default_rng(rows + M).standard_normal((rows, 22))
    x = x.astype(F32)
    if rows > 1:
        x[1, 3] = np.nan
    q = fl.quantize(net)
    old = _plan.set_int8_dot(False)
    try:
        panel = q(x)
    finally:
        _plan.set_int8_dot(old)
    y = q(x)
    np.testing.assert_array_equal(y, panel)
    ok = np.isfinite(x).all(axis=1)
    assert np.isnan(y[~ok]).all()
    close(y[ok], mlp_ref(net, x[ok]))
    # the row copy follows new weights, and a live data() view
    q[1].weight.set_data(np.random.default_rng(M).standard_normal((M, 37)))
    close(q(x)[ok], mlp_ref(q, x[ok]))
    view = q[1].weight.data()
    view *= -1
    close(q(x)[ok], mlp_ref(q, x[ok]))
    del view


def test_rows_quantized_every_length(level):
    # vectors of 4 x lanes, single vectors, and a padded partial last one
    rng = np.random.default_rng(21)
    for K in (1, 3, 4, 5, 8, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100):
        x = (rng.standard_normal((3, K)) * 4).astype(F32)
        x[2, K - 1] = np.nan
        levels, xs, xz = _plan.qrows_kernel(x)
        u, rs, rz = ref_rows(x)
        np.testing.assert_array_equal(xs[:2], rs[:2])
        assert np.isnan(xs[2])
        if _plan.int8_kernels()["act_bytes"] == 1:
            np.testing.assert_array_equal(levels[:2], u[:2])
            np.testing.assert_array_equal(xz, [rz[0], rz[1], 0])
        else:
            np.testing.assert_array_equal(levels[:2], (u - rz[:, None])[:2])


# ---------------------------------------------------------------------------
# Networks


def mlp(sizes, acts, in_units):
    net = nn.Sequential()
    for units, act in zip(sizes, acts):
        net.add(nn.Dense(units, activation=act))
    net.initialize()
    net(np.zeros((1, in_units), F32))
    rng = np.random.default_rng(sum(sizes))
    for layer in net:
        layer.bias.set_data(rng.uniform(-0.1, 0.1, layer.bias.shape))
    return net


def mlp_ref(net, x, calib=None):
    h = x
    for i, layer in enumerate(net):
        h = ref_dense(h, layer.weight.data(), layer.bias.data(), layer.act,
                      None if calib is None else calib[i])
    return h


@pytest.mark.parametrize("batch", [1, 2, 7, 64, 300])
@pytest.mark.parametrize("threads", [1, 2])
def test_network_matches_reference(batch, threads, level):
    fl.set_num_threads(threads)
    try:
        old = _plan.set_tuning(parallel_macs=0)     # split every product
        net = mlp([96, 300, 10], ["relu", "relu", None], 50)
        x = np.random.default_rng(batch).standard_normal((batch, 50))
        q = fl.quantize(net)
        close(q(x.astype(F32)), mlp_ref(net, x.astype(F32)))
    finally:
        _plan.set_tuning(parallel_macs=old[2])
        fl.set_num_threads(2)


def test_big_gemv_split_over_threads(two_threads):
    # C5's shape: one row through 1024 -> 4096 -> 1024, split by panels
    net = mlp([4096, 1024], ["relu", None], 1024)
    x = np.random.default_rng(5).standard_normal((1, 1024)).astype(F32)
    q = fl.quantize(net)
    fl.set_num_threads(1)
    one = q(x)
    fl.set_num_threads(2)
    np.testing.assert_array_equal(q(x), one)
    close(one, mlp_ref(net, x))


def test_small_batch_split_over_threads_is_bit_identical(two_threads):
    # C3's shape: 64 rows, each int8 layer's panels shared by the threads
    # (as float32 layers are), the same sums whichever thread took a panel
    net = mlp([512, 512, 10], ["relu", "relu", None], 784)
    x = np.random.default_rng(8).standard_normal((64, 784)).astype(F32)
    q = fl.quantize(net)
    fl.set_num_threads(1)
    one = q(x)
    fl.set_num_threads(2)
    for _ in range(3):
        np.testing.assert_array_equal(q(x), one)
    close(one, mlp_ref(net, x))


def test_original_untouched():
    net = mlp([64, 10], ["relu", None], 20)
    x = np.random.default_rng(6).standard_normal((4, 20)).astype(F32)
    before = net(x)
    plan = net._plan
    params = {k: p.data().copy() for k, p in net.collect_params().items()}
    q = fl.quantize(net, mode="static", calib_data=x, calib_mode="entropy")
    q(x)
    assert net._plan is plan and plan.is_current()
    after = {k: p.data() for k, p in net.collect_params().items()}
    assert params.keys() == after.keys()
    for k in params:
        np.testing.assert_array_equal(params[k], after[k])
    np.testing.assert_array_equal(net(x), before)
    assert "int8" not in repr(net) and "int8 static (entropy)" in repr(q)
    assert all(layer._quant is None for layer in net)
    assert q[0].weight is not net[0].weight


@pytest.mark.parametrize("calib_mode", ["naive", "entropy", "percentile"])
def test_static_modes(calib_mode):
    net = mlp([64, 32, 10], ["relu", "relu", None], 20)
    rng = np.random.default_rng(7)
    calib = rng.standard_normal((200, 20)).astype(F32)
    q = fl.quantize(net, mode="static", calib_data=calib,
                    calib_mode=calib_mode, percentile=99.0)
    ranges = [tuple(layer.calib_range.data()) for layer in q]
    # the first layer sees the input itself
    lo, hi = ranges[0]
    if calib_mode == "naive":
        assert (lo, hi) == (calib.min(), calib.max())
    else:
        assert calib.min() <= lo < 0 < hi <= calib.max()
    assert ranges[1][0] == 0 or calib_mode != "entropy"   # post-relu
    x = rng.standard_normal((30, 20)).astype(F32)
    close(q(x), mlp_ref(net, x, ranges))
    # outside the calibrated range values saturate: still finite
    assert np.isfinite(q(x * 100)).all()


def test_static_calibration_by_batches():
    net = mlp([32, 10], ["relu", None], 8)
    rng = np.random.default_rng(8)
    parts = [rng.standard_normal((n, 8)).astype(F32) for n in (3, 5, 9)]
    a = fl.quantize(net, mode="static", calib_data=parts)
    b = fl.quantize(net, mode="static", calib_data=np.concatenate(parts))
    for la, lb in zip(a, b):
        np.testing.assert_array_equal(la.calib_range.data(),
                                      lb.calib_range.data())


class Residual(fl.nn.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.a = nn.Dense(32, activation="relu")
            self.b = nn.Dense(32)
            self.out = nn.Dense(5)

    def hybrid_forward(self, F, x):
        h = self.a(x)
        return self.out(F.relu(self.b(h) + h))


def test_graph_network():
    net = Residual()
    net.initialize()
    x = np.random.default_rng(9).standard_normal((6, 12)).astype(F32)
    y = net(x)
    q = fl.quantize(net, exclude=["out"])
    assert [how for _, _, how in quantized_layers(q)] == \
        ["int8 dynamic", "int8 dynamic", "float32"]
    h = ref_dense(x, net.a.weight.data(), net.a.bias.data(), "relu")
    g = ref_dense(h, net.b.weight.data(), net.b.bias.data())
    g = np.maximum(g + h, 0)
    r = g @ net.out.weight.data().T + net.out.bias.data()
    np.testing.assert_allclose(q(x), r, rtol=1e-5, atol=1e-5)
    assert q._plan is not None                    # one compiled plan
    assert np.abs(q(x) - y).max() < 0.05 * np.ptp(y)


def test_exclude_forms():
    net = mlp([16, 16, 4], ["relu", "relu", None], 8)
    kinds = lambda q: [h for _, _, h in quantized_layers(q)]  # noqa: E731
    assert kinds(fl.quantize(net, exclude=[net[1]])) == \
        ["int8 dynamic", "float32", "int8 dynamic"]
    assert kinds(fl.quantize(net, exclude="2")) == \
        ["int8 dynamic", "int8 dynamic", "float32"]
    assert kinds(fl.quantize(net, exclude=lambda b: b.units == 16)) == \
        ["float32", "float32", "int8 dynamic"]
    with pytest.raises(QuantizationError, match="none of the network"):
        fl.quantize(net, exclude=["nope"])


# ---------------------------------------------------------------------------
# Convolutions


@settings(max_examples=25)
@given(C=st.integers(1, 5), O=st.integers(1, 20), H=st.integers(3, 11),
       k=st.integers(1, 3), s=st.integers(1, 2), p=st.integers(0, 2),
       d=st.integers(1, 2), n=st.integers(1, 3), relu=st.booleans(),
       seed=st.integers(0, 2**16))
def test_conv_matches_reference(C, O, H, k, s, p, d, n, relu, seed):
    if H + 2 * p < d * (k - 1) + 1:
        return
    rng = np.random.default_rng(seed)
    net = nn.Sequential()
    net.add(nn.Conv2D(O, k, strides=s, padding=p, dilation=d,
                      activation="relu" if relu else None))
    net.initialize()
    x = rng.standard_normal((n, C, H, H + 1)).astype(F32)
    net(x)
    net[0].bias.set_data(rng.uniform(-0.5, 0.5, O))
    q = fl.quantize(net)
    r = ref_conv(x, net[0].weight.data(), net[0].bias.data(),
                 "relu" if relu else None, (s, s), (p, p), (d, d))
    close(q(x), r)


def lenet():
    net = nn.Sequential()
    net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation="relu"),
            nn.MaxPool2D(pool_size=2, strides=2),
            nn.Conv2D(16, kernel_size=5, activation="relu"),
            nn.MaxPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation="relu"),
            nn.Dense(84, activation="relu"),
            nn.Dense(10))
    net.initialize(fl.init.Xavier())
    return net


def test_lenet_accuracy_and_top1(two_threads):
    """The stated accuracy: max |delta| / output range against float32, and
    the top-1 agreement on a fixed random set of 512 images."""
    fl.random.seed(11)
    net = lenet()
    x = np.random.default_rng(11).uniform(0, 1, (512, 1, 28, 28))
    x = x.astype(F32)
    y = net(x)
    q = fl.quantize(net)
    yq = q(x)
    err = np.abs(yq - y).max() / np.ptp(y)
    top1 = np.mean(yq.argmax(1) == y.argmax(1))
    assert err < 0.02, err
    assert top1 >= 0.97, top1
    s = fl.quantize(net, mode="static", calib_data=x[:128])
    ys = s(x)
    assert np.abs(ys - y).max() / np.ptp(y) < 0.03
    assert np.mean(ys.argmax(1) == y.argmax(1)) >= 0.97
    # entropy clips the tails (here at ~75% of the largest value): larger
    # worst-case errors, the ranking mostly kept
    s = fl.quantize(net, mode="static", calib_data=x[:128],
                    calib_mode="entropy")
    ys = s(x)
    assert np.abs(ys - y).max() / np.ptp(y) < 0.2
    assert np.mean(ys.argmax(1) == y.argmax(1)) >= 0.9


def test_entropy_threshold_ignores_outliers():
    from fastlazy.quantization import _kl_threshold, _range
    rng = np.random.default_rng(21)
    a = np.concatenate([rng.standard_normal(200_000), np.full(20, 60.0)])
    t = _kl_threshold(np.abs(a), 127)
    assert 3 < t < 20, t
    lo, hi = _range(a, "entropy", 0)
    assert -20 < lo < -3 and 3 < hi < 20
    lo, hi = _range(np.abs(a), "entropy", 0)      # non-negative: (0, t)
    assert lo == 0 and 3 < hi < 20


def test_conv_with_batchnorm_and_depthwise_kept():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, padding=1, use_bias=False), nn.BatchNorm(),
            nn.Activation("relu"),
            nn.Conv2D(8, 3, padding=1, groups=8),       # depthwise
            nn.Conv2D(4, 1))
    net.initialize()
    rng = np.random.default_rng(12)
    x = rng.standard_normal((3, 5, 9, 9)).astype(F32)
    net(x)
    bn = net[1]
    bn.gamma.set_data(rng.uniform(0.5, 2, 8))
    bn.beta.set_data(rng.uniform(-1, 1, 8))
    bn.running_mean.set_data(rng.uniform(-1, 1, 8))
    bn.running_var.set_data(rng.uniform(0.5, 2, 8))
    y = net(x)
    q = fl.quantize(net)
    assert "float32: depthwise" in repr(q[3])
    assert "int8 dynamic" in repr(q[0]) and "int8 dynamic" in repr(q[4])
    yq = q(x)
    assert np.abs(yq - y).max() < 0.03 * np.ptp(y)
    # the folded BatchNorm reads its parameters live, as in float32
    q[1].gamma.set_data(np.ones(8))
    net[1].gamma.set_data(np.ones(8))
    assert np.abs(q(x) - net(x)).max() < 0.03 * np.ptp(net(x))
    text = io.StringIO()
    import contextlib
    with contextlib.redirect_stdout(text):
        q.summary(x)
    assert "[int8]" in text.getvalue() and "float32: depthwise" in \
        text.getvalue()


def test_model_zoo_resnet():
    from fastlazy.model_zoo import vision
    fl.random.seed(13)
    net = vision.get_model("resnet18_v1", classes=10)
    net.initialize()
    x = np.random.default_rng(13).uniform(-1, 1, (2, 3, 32, 32))
    x = x.astype(F32)
    y = net(x)
    q = fl.quantize(net)
    kinds = [h for _, _, h in quantized_layers(q)]
    assert kinds.count("int8 dynamic") == len(kinds) > 15
    yq = q(x)
    assert np.abs(yq - y).max() < 0.05 * np.ptp(y)


# ---------------------------------------------------------------------------
# Persistence, copies, changed weights


def test_save_load_pickle_copy(tmp_path):
    net = mlp([32, 10], ["relu", None], 8)
    rng = np.random.default_rng(14)
    x = rng.standard_normal((5, 8)).astype(F32)
    for mode in ("dynamic", "static"):
        kw = {"calib_data": x} if mode == "static" else {}
        q = fl.quantize(net, mode=mode, **kw)
        y = q(x)
        for twin in (pickle.loads(pickle.dumps(q)), copy.deepcopy(q)):
            assert repr(twin) == repr(q)
            np.testing.assert_array_equal(twin(x), y)
        f = tmp_path / f"{mode}.npz"
        q.save_parameters(str(f))
        keys = set(np.load(f).files)
        assert ("0.calib_range" in keys) == (mode == "static")
        fresh = mlp([32, 10], ["relu", None], 8)
        fresh = fl.quantize(fresh, mode=mode, **kw)
        fresh.load_parameters(str(f))
        np.testing.assert_array_equal(fresh(x), y)


def test_new_weights_are_quantized_again():
    net = mlp([16, 4], ["relu", None], 6)
    x = np.random.default_rng(15).standard_normal((3, 6)).astype(F32)
    q = fl.quantize(net)
    q(x)
    w = np.random.default_rng(16).standard_normal((16, 6))
    q[0].weight.set_data(w)
    h = ref_dense(x, w.astype(F32), q[0].bias.data(), "relu")
    r = ref_dense(h, q[1].weight.data(), q[1].bias.data())
    close(q(x), r)
    # through a live data() view, written between calls
    view = q[0].weight.data()
    view *= 2
    h = ref_dense(x, (2 * w).astype(F32), q[0].bias.data(), "relu")
    close(q(x), ref_dense(h, q[1].weight.data(), q[1].bias.data()))
    view *= 0.5
    del view


# ---------------------------------------------------------------------------
# Bad input


def test_deferred_network_is_an_error():
    net = nn.Sequential()
    net.add(nn.Dense(8))
    net.initialize()
    with pytest.raises(fl.DeferredInitializationError,
                       match="build|forward pass"):
        fl.quantize(net)
    net.build((None, 3))               # then it quantizes
    assert "int8" in repr(fl.quantize(net))


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_refused(bad):
    net = mlp([8, 4], ["relu", None], 3)
    w = net[1].weight.data().copy()
    w[2, 1] = bad
    net[1].weight.set_data(w)
    snap = {k: p.data().copy() for k, p in net.collect_params().items()}
    with pytest.raises(QuantizationError, match="NaN or infinite"):
        fl.quantize(net)
    for k, p in net.collect_params().items():
        np.testing.assert_array_equal(p.data(), snap[k])
    q = fl.quantize(net, exclude=["1"])             # the way out it names
    assert [h for _, _, h in quantized_layers(q)] == \
        ["int8 dynamic", "float32"]


def test_non_finite_input_rows_give_nan_rows():
    net = mlp([8, 4], ["relu", None], 5)
    q = fl.quantize(net)
    x = np.random.default_rng(17).standard_normal((4, 5)).astype(F32)
    good = q(x)
    x[1, 2] = np.nan
    x[3, 0] = np.inf
    y = q(x)
    assert np.isnan(y[[1, 3]]).all()
    np.testing.assert_array_equal(y[[0, 2]], good[[0, 2]])


def test_edge_rows_and_broken_range():
    net = mlp([8, 4], ["relu", None], 5)
    q = fl.quantize(net)
    x = np.zeros((3, 5), F32)
    x[1] = [3e38, -3e38, 0, 1, 2]           # hi - lo overflows float32
    x[2, 0] = 1
    y = q(x)
    h = np.maximum(net[0].bias.data(), 0)    # a row of zeros: the biases
    np.testing.assert_allclose(y[0], ref_dense(h[None], net[1].weight.data(),
                                               net[1].bias.data())[0],
                               rtol=1e-5, atol=1e-6)
    assert np.isnan(y[1]).all() and np.isfinite(y[2]).all()
    s = fl.quantize(net, mode="static", calib_data=np.ones((2, 5), F32))
    assert np.isfinite(s(x[[0, 2]])).all()
    s[0].calib_range.set_data([np.nan, 1])   # a broken range: NaN, not junk
    assert np.isnan(s(x[[0, 2]])).all()


def test_bad_calibration_data():
    net = mlp([8, 4], ["relu", None], 5)
    with pytest.raises(fl.ShapeError, match="calib_data does not fit"):
        fl.quantize(net, mode="static", calib_data=np.zeros((4, 6), F32))
    with pytest.raises(QuantizationError, match="needs calib_data"):
        fl.quantize(net, mode="static")
    with pytest.raises(QuantizationError, match="for mode='static'"):
        fl.quantize(net, calib_data=np.zeros((4, 5), F32))
    bad = np.zeros((4, 5), F32)
    bad[0, 0] = np.nan
    with pytest.raises(QuantizationError, match="NaN"):
        fl.quantize(net, mode="static", calib_data=bad)
    with pytest.raises(QuantizationError, match="calib_mode"):
        fl.quantize(net, mode="static", calib_data=bad, calib_mode="kl")
    with pytest.raises(QuantizationError, match="dtype"):
        fl.quantize(net, dtype="int4")
    assert all(layer._quant is None for layer in net)
    assert not any("calib" in k for k in net.collect_params())


def test_float64_network_refused():
    net = mlp([8, 4], ["relu", None], 5)
    net.cast("float64")
    with pytest.raises(QuantizationError, match="float32"):
        fl.quantize(net)


def test_show_config_names_int8_kernel():
    out = io.StringIO()
    cfg = fl.show_config(file=out)
    info = _plan.int8_kernels()
    assert info["isa"] in cfg["int8"]
    if info["best_level"] < 5:
        assert "no VNNI" in cfg["int8"] and "fallback" in cfg["int8"]


def test_vnni_levels_selected_only_with_the_cpu(isa_restore):
    best = _plan.int8_kernels()["best_level"]
    isa_restore.set_isa(None)
    assert _plan.int8_kernels()["level"] == best
    isa_restore.set_isa(0)
    assert _plan.int8_kernels()["level"] == 0
    isa_restore.set_isa(None)


def test_quantize_to_bfloat16_is_a_cast_copy_and_int8_refuses_bf16():
    """dtype='bfloat16': a copy whose weights are bfloat16, the original
    untouched; int8 quantization of that copy says to cast back first."""
    fl.random.seed(5)
    net = nn.Sequential()
    net.add(nn.Dense(64, activation="relu"), nn.Dense(10))
    net.initialize()
    x = np.random.default_rng(0).standard_normal((5, 20)).astype(np.float32)
    y = net(x)
    b = fl.quantize(net, dtype="bfloat16")
    assert "bfloat16" in repr(b) and "bfloat16" not in repr(net)
    assert str(net[0].weight.dtype) == "float32"
    np.testing.assert_array_equal(net(x), y)
    # bf16 weights: relative rounding 2**-8 per weight, float32 sums
    bound = 2.0 ** -8 * (np.abs(x) @ np.abs(net[0].weight.data().T)).max() * 4
    assert np.abs(b(x) - y).max() <= bound
    with pytest.raises(fl.FastLazyError, match="bfloat16.*cast"):
        fl.quantize(b)
