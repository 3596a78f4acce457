"""Convolutional networks: Conv2D, pooling, BatchNorm, LayerNorm.

Every layer is checked against a NumPy reference written here (float64
arithmetic), over many shapes drawn by hypothesis; then whole networks
(LeNet, a ResNet-style block, the MXNet fixtures), the deferred-channel
lifecycle, errors, persistence and the summary table.
"""

import copy
import pathlib
import pickle
import re

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import _compile, _plan, _steps, init, nn
from fastlazy._steps import ConvStep
from conftest import conv2d_ref, pool_ref, require_isa

DATA = pathlib.Path(__file__).parent / "data" / "mxnet"
TOL = {np.float32: dict(rtol=2e-4, atol=2e-5),
       np.float64: dict(rtol=1e-10, atol=1e-12)}
SETTINGS = settings(max_examples=200, deadline=None, derandomize=True)


# ---------------------------------------------------------------------------
# NumPy references


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


ACT = {None: lambda v: v, "relu": lambda v: np.maximum(v, 0),
       "sigmoid": sigmoid, "tanh": np.tanh}


def bn_ref(x, gamma, beta, mean, var, axis=1, eps=1e-5):
    shape = [1] * x.ndim
    shape[axis] = -1
    r = lambda v: np.asarray(v, np.float64).reshape(shape)  # noqa: E731
    return (np.asarray(x, np.float64) - r(mean)) / np.sqrt(r(var) + eps) \
        * r(gamma) + r(beta)


def ln_ref(x, gamma, beta, axis=-1, eps=1e-5):
    x = np.asarray(x, np.float64)
    shape = [1] * x.ndim
    shape[axis] = -1
    mean = x.mean(axis=axis, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=axis, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * np.reshape(gamma, shape) \
        + np.reshape(beta, shape)


def dense_ref(x, w, b):
    return np.asarray(x, np.float64).reshape(len(x), -1) @ w.T + b


def rand(rng, *shape, dtype=np.float32):
    return rng.standard_normal(shape).astype(dtype)


def fill(net, seed=0, dtype=np.float32):
    """Give every parameter random values (variances positive)."""
    rng = np.random.default_rng(seed)
    for name, p in net.collect_params().items():
        v = rng.uniform(-1, 1, size=p.shape)
        if name.endswith("running_var"):
            v = rng.uniform(0.5, 2, size=p.shape)
        p.set_data(v.astype(dtype))


def in_dtype(layer, dtype):
    """``layer`` made to run in ``dtype``: a parameter-free block runs in
    float32, so float64 puts an identity BatchNorm (epsilon 0, default
    statistics) before it."""
    if dtype == np.float32:
        return layer
    net = nn.Sequential()
    net.add(nn.BatchNorm(epsilon=0, dtype="float64"), layer)
    net.initialize()
    return net


@pytest.fixture
def small_blocks():
    """Make the convolutions pack a few bytes at a time (many row blocks)."""
    old = _plan.set_conv_tuning(col_bytes=1, batch_cols=0)
    yield
    _plan.set_conv_tuning(*old)


# ---------------------------------------------------------------------------
# Layers against NumPy, over many shapes


# (col_bytes, batch_cols) of _plan.set_conv_tuning: pack one output row at
# a time; whole samples one by one; a few / many samples per GEMM
SCHEDULES = {"rows": (1, 0), "sample": (1 << 19, 0),
             "batched": (1 << 19, 300), "batched-wide": (1 << 19, 1 << 20)}


@st.composite
def conv_cases(draw):
    groups = draw(st.integers(1, 3))
    cin = groups * draw(st.integers(1, 3))
    cout = groups * draw(st.integers(1, 3))
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
    p = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
    d = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
    h = draw(st.integers(1, 11))
    w = draw(st.integers(1, 11))
    assume(h + 2 * p[0] >= d[0] * (k[0] - 1) + 1)
    assume(w + 2 * p[1] >= d[1] * (k[1] - 1) + 1)
    return dict(n=draw(st.integers(1, 5)), cin=cin, cout=cout, k=k, s=s, p=p,
                d=d, groups=groups, h=h, w=w,
                act=draw(st.sampled_from([None, "relu", "tanh"])),
                bias=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])),
                schedule=draw(st.sampled_from(list(SCHEDULES))))


@SETTINGS
@given(conv_cases())
def test_conv2d_matches_numpy(c):
    rng = np.random.default_rng(0)
    layer = nn.Conv2D(c["cout"], c["k"], strides=c["s"], padding=c["p"],
                      dilation=c["d"], groups=c["groups"],
                      activation=c["act"], use_bias=c["bias"],
                      dtype=c["dtype"])
    layer.initialize()
    x = rand(rng, c["n"], c["cin"], c["h"], c["w"], dtype=c["dtype"])
    old = _plan.set_conv_tuning(*SCHEDULES[c["schedule"]])
    try:
        y = layer(x)
    finally:
        _plan.set_conv_tuning(*old)
    w = layer.weight.data()
    assert w.shape == (c["cout"], c["cin"] // c["groups"]) + c["k"]
    b = layer.bias.data() if c["bias"] else None
    ref = ACT[c["act"]](conv2d_ref(x, w, b, c["s"], c["p"], c["d"],
                                   c["groups"]))
    assert y.dtype == c["dtype"] and y.shape == ref.shape
    np.testing.assert_allclose(y, ref, **TOL[c["dtype"]])


@pytest.mark.parametrize("route", ["auto", "blas"])
@pytest.mark.parametrize("level", [0, 3, 4])
@pytest.mark.parametrize("schedule", list(SCHEDULES))
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_large_conv_on_the_batched_kernel(route, level, schedule, dtype,
                                          isa_restore):
    """Convolutions big enough for fastlazy's own GEMM (>= 8 output
    channels per group, ~1M multiply-adds per product): every schedule,
    groups, ragged output widths, row groups of 12 + 8, against NumPy and
    against OpenBLAS."""
    require_isa(level)
    rng = np.random.default_rng(7)
    for groups, x_shape, act in ((1, (3, 16, 20, 23), "relu"),
                                 (2, (2, 32, 30, 29), "tanh")):
        layer = nn.Conv2D(40, 3, padding=1, groups=groups, activation=act,
                          in_channels=x_shape[1], dtype=dtype)
        layer.initialize()
        fill(layer, seed=groups, dtype=dtype)
        x = rand(rng, *x_shape, dtype=dtype)
        old = _plan.set_conv_tuning(*SCHEDULES[schedule])
        old_route = _plan.set_tuning(kernel_route=route)
        try:
            y = layer(x)
        finally:
            _plan.set_conv_tuning(*old)
            _plan.set_tuning(*old_route)
        ref = ACT[act](conv2d_ref(x, layer.weight.data(), layer.bias.data(),
                                  pad=(1, 1), groups=groups))
        np.testing.assert_allclose(y, ref, **TOL[dtype])


@st.composite
def pool_cases(draw):
    k = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    s = (draw(st.integers(1, 4)), draw(st.integers(1, 4)))
    p = (draw(st.integers(0, k[0])), draw(st.integers(0, k[1])))
    h = draw(st.integers(1, 10))
    w = draw(st.integers(1, 10))
    assume(h + 2 * p[0] >= k[0] and w + 2 * p[1] >= k[1])
    return dict(k=k, s=s, p=p, h=h, w=w, n=draw(st.integers(1, 3)),
                c=draw(st.integers(1, 3)),
                kind=draw(st.sampled_from(["max", "avg"])),
                ceil=draw(st.booleans()), include=draw(st.booleans()),
                dtype=draw(st.sampled_from([np.float32, np.float64])))


@SETTINGS
@given(pool_cases())
def test_pooling_matches_numpy(c):
    if c["kind"] == "max":
        layer = nn.MaxPool2D(c["k"], c["s"], c["p"], ceil_mode=c["ceil"])
    else:
        layer = nn.AvgPool2D(c["k"], c["s"], c["p"], ceil_mode=c["ceil"],
                             count_include_pad=c["include"])
    x = rand(np.random.default_rng(1), c["n"], c["c"], c["h"], c["w"],
             dtype=c["dtype"])
    y = in_dtype(layer, c["dtype"])(x)
    assert y.dtype == c["dtype"]
    ref = pool_ref(x, c["k"], c["s"], c["p"], c["ceil"], c["kind"],
                   c["include"])
    assert y.shape == ref.shape
    np.testing.assert_allclose(y, ref, **TOL[c["dtype"]])


def test_pooling_defaults_follow_gluon():
    mp = nn.MaxPool2D()
    assert mp._pool == (2, 2) and mp._strides == (2, 2)
    assert nn.MaxPool2D(3)._strides == (3, 3)
    assert nn.AvgPool2D(3, strides=1)._strides == (1, 1)
    assert nn.AvgPool2D()._count_include_pad is True
    assert repr(nn.MaxPool2D(3, 2, 1)) == (
        "MaxPool2D(size=(3, 3), stride=(2, 2), padding=(1, 1), "
        "ceil_mode=False, global_pool=False, pool_type=max, layout=NCHW)")
    assert repr(nn.GlobalAvgPool2D()) == (
        "GlobalAvgPool2D(size=(1, 1), stride=(1, 1), padding=(0, 0), "
        "ceil_mode=True, global_pool=True, pool_type=avg, layout=NCHW)")
    assert nn.MaxPool2D().prefix.startswith("pool")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_global_pooling(dtype):
    x = rand(np.random.default_rng(2), 3, 4, 5, 7, dtype=dtype)
    np.testing.assert_allclose(in_dtype(nn.GlobalAvgPool2D(), dtype)(x),
                               x.mean(axis=(2, 3), keepdims=True),
                               **TOL[dtype])
    np.testing.assert_array_equal(in_dtype(nn.GlobalMaxPool2D(), dtype)(x),
                                  x.max(axis=(2, 3), keepdims=True))


def test_max_pool_propagates_nan():
    x = np.zeros((1, 1, 4, 4), np.float32)
    x[0, 0, 1, 1] = np.nan
    y = nn.MaxPool2D()(x)
    assert np.isnan(y[0, 0, 0, 0]) and not np.isnan(y[0, 0, 1, 1])


@SETTINGS
@given(st.lists(st.integers(1, 5), min_size=1, max_size=3),
       st.integers(0, 3), st.sampled_from([np.float32, np.float64]),
       st.booleans(), st.booleans())
def test_batchnorm_matches_numpy(feat, axis_pick, dtype, scale, center):
    shape = (2,) + tuple(feat)
    axis = 1 + axis_pick % len(feat)
    if axis_pick == 3:
        axis = -1
    layer = nn.BatchNorm(axis=axis, scale=scale, center=center, dtype=dtype)
    layer.initialize()
    x = rand(np.random.default_rng(3), *shape, dtype=dtype)
    layer(x)                       # infers the channels
    fill(layer, 4, dtype)
    y = layer(x)
    gamma = layer.gamma.data() if scale else np.ones(layer.gamma.shape)
    ref = bn_ref(x, gamma, layer.beta.data(), layer.running_mean.data(),
                 layer.running_var.data(), axis)
    np.testing.assert_allclose(y, ref, **TOL[dtype])


@SETTINGS
@given(st.lists(st.integers(1, 6), min_size=1, max_size=3),
       st.integers(0, 3), st.sampled_from([np.float32, np.float64]))
def test_layernorm_matches_numpy(feat, axis_pick, dtype):
    shape = (2,) + tuple(feat)
    axis = -1 if axis_pick == 3 else 1 + axis_pick % len(feat)
    layer = nn.LayerNorm(axis=axis, dtype=dtype)
    layer.initialize()
    x = rand(np.random.default_rng(5), *shape, dtype=dtype) * 3 + 1
    layer(x)
    fill(layer, 6, dtype)
    ref = ln_ref(x, layer.gamma.data(), layer.beta.data(), axis)
    np.testing.assert_allclose(layer(x), ref, **TOL[dtype])


def test_normalization_defaults_and_repr():
    bn = nn.BatchNorm()
    assert [p.name[len(bn.prefix):] for p in bn.collect_params().values()] \
        == ["gamma", "beta", "running_mean", "running_var"]
    assert bn.gamma.shape == (-1,)
    bn.initialize()
    bn.build((None, 3, 4, 4))
    np.testing.assert_array_equal(bn.gamma.data(), [1, 1, 1])
    np.testing.assert_array_equal(bn.beta.data(), [0, 0, 0])
    np.testing.assert_array_equal(bn.running_mean.data(), [0, 0, 0])
    np.testing.assert_array_equal(bn.running_var.data(), [1, 1, 1])
    assert repr(bn) == ("BatchNorm(axis=1, eps=1e-05, momentum=0.9, "
                        "fix_gamma=False, use_global_stats=False, "
                        "in_channels=3)")
    assert "in_channels=None" in repr(nn.BatchNorm())
    ln = nn.LayerNorm(in_channels=5)
    assert ln.gamma.shape == (5,)
    assert repr(ln) == ("LayerNorm(eps=1e-05, axis=-1, center=True, "
                        "scale=True, in_channels=5)")


# ---------------------------------------------------------------------------
# Networks


def lenet():
    net = nn.Sequential()
    net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Conv2D(16, kernel_size=5, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation="sigmoid"),
            nn.Dense(84, activation="sigmoid"),
            nn.Dense(10))
    return net


def lenet_ref(net, x):
    p = [q.data() for q in net.collect_params().values()]
    h = pool_ref(sigmoid(conv2d_ref(x, p[0], p[1], pad=(2, 2))), (2, 2),
                 (2, 2), (0, 0), False, "avg")
    h = pool_ref(sigmoid(conv2d_ref(h, p[2], p[3])), (2, 2), (2, 2), (0, 0),
                 False, "avg")
    h = sigmoid(dense_ref(h, p[4], p[5]))
    h = sigmoid(dense_ref(h, p[6], p[7]))
    return dense_ref(h, p[8], p[9])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_lenet_end_to_end(dtype):
    net = lenet()
    if dtype == np.float64:
        net.cast("float64")
    net.initialize(init=init.Xavier())
    x = np.random.default_rng(7).uniform(size=(1, 1, 28, 28))
    y = net(x)                          # every shape inferred here
    assert y.shape == (1, 10) and y.dtype == dtype
    assert net[0].weight.shape == (6, 1, 5, 5)
    assert net[2].weight.shape == (16, 6, 5, 5)
    assert net[4].weight.shape == (120, 400)
    np.testing.assert_allclose(y, lenet_ref(net, x), **TOL[dtype])
    xb = np.random.default_rng(8).uniform(size=(37, 1, 28, 28)).astype(dtype)
    np.testing.assert_allclose(net(xb), lenet_ref(net, xb), **TOL[dtype])


def test_lenet_reproduces_mxnet():
    net = lenet()
    net.load_parameters(DATA / "lenet.params")   # deferred: shapes from file
    assert net[2].weight.shape == (16, 6, 5, 5)
    with np.load(DATA / "lenet.io.npz") as io:
        x, y = io["x"], io["y"]
    np.testing.assert_allclose(net(x), y, rtol=1e-4, atol=1e-5)


def test_nested_batchnorm_reproduces_mxnet():
    inner = nn.Sequential()
    inner.add(nn.Dense(32), nn.BatchNorm(), nn.Activation("tanh"))
    net = nn.Sequential()
    net.add(inner, nn.Dense(16, activation="sigmoid"), nn.Dropout(0.5),
            nn.Dense(3))
    net.load_parameters(DATA / "nested_bn.params")
    with np.load(DATA / "nested_bn.io.npz") as io:
        x, y = io["x"], io["y"]
    np.testing.assert_allclose(net(x), y, rtol=1e-5, atol=1e-6)


def resnet_body(c=8):
    body = nn.Sequential()
    body.add(nn.Conv2D(c, 3, padding=1, use_bias=False), nn.BatchNorm(),
             nn.Activation("relu"),
             nn.Conv2D(c, 3, padding=1, use_bias=False), nn.BatchNorm())
    return body


def resnet_ref(body, x):
    p = body.collect_params()
    v = [q.data() for q in p.values()]
    h = conv2d_ref(x, v[0], pad=(1, 1))
    h = np.maximum(bn_ref(h, *v[1:5]), 0)
    h = conv2d_ref(h, v[5], pad=(1, 1))
    return bn_ref(h, *v[6:10])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resnet_block_fused_and_unfused(dtype, small_blocks):
    body = resnet_body()
    body.initialize()
    body.cast(dtype)
    x = rand(np.random.default_rng(9), 3, 8, 9, 7, dtype=dtype)
    body.build((None, 8, 9, 7))
    fill(body, 10, dtype)
    fused = body(x)
    steps = _step_kinds(body, x.shape)
    assert steps == ["ConvStep", "ConvStep"]
    old = _steps.set_batchnorm_fusion(False)
    try:
        plain = body(x)
        kinds = _step_kinds(body, x.shape)
        assert kinds == ["ConvStep", "BatchNormStep", "ConvStep",
                         "BatchNormStep"]
    finally:
        _steps.set_batchnorm_fusion(old)
    np.testing.assert_allclose(fused, plain, **TOL[dtype])
    ref = resnet_ref(body, x)
    np.testing.assert_allclose(fused, ref, **TOL[dtype])
    # the residual connection, with the block's output
    out = np.maximum(fused + x, 0)
    np.testing.assert_allclose(out, np.maximum(ref + x, 0), **TOL[dtype])


def _step_kinds(block, shape):
    return [type(s).__name__ for s in _compile.fused_steps(block, shape)]


@pytest.mark.parametrize("fuse", [True, False])
def test_batchnorm_values_are_live(fuse):
    """Writes through data() and set_data reach the next call, fused or
    not (the plan keeps no folded copy)."""
    net = nn.Sequential()
    net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Activation("relu"))
    net.initialize()
    x = rand(np.random.default_rng(11), 2, 3, 6, 6)
    old = _steps.set_batchnorm_fusion(fuse)
    try:
        net(x)
        fill(net, 12)
        a = net(x)
        net[1].running_var.data()[:] *= 4
        net[1].running_mean.data()[0] = 0.5
        b = net(x)
        net[1].gamma.set_data(net[1].gamma.data() * -1)
        c = net(x)
        v = [p.data() for p in net.collect_params().values()]
        assert not np.array_equal(a, c)
        ref = np.maximum(bn_ref(conv2d_ref(x, v[0], v[1]), *v[2:6]), 0)
        np.testing.assert_allclose(c, ref, **TOL[np.float32])
        assert not np.allclose(a, b)
    finally:
        _steps.set_batchnorm_fusion(old)


def test_batchnorm_after_dense_and_layernorm_in_a_net():
    net = nn.Sequential()
    net.add(nn.Dense(6), nn.BatchNorm(), nn.Activation("tanh"),
            nn.LayerNorm(), nn.Dense(2))
    net.initialize()
    x = rand(np.random.default_rng(13), 4, 5)
    net(x)
    fill(net, 14)
    v = [p.data() for p in net.collect_params().values()]
    h = np.tanh(bn_ref(dense_ref(x, v[0], v[1]), *v[2:6]))
    ref = dense_ref(ln_ref(h, v[6], v[7]), v[8], v[9])
    np.testing.assert_allclose(net(x), ref, **TOL[np.float32])


def test_conv_pool_bn_relu_gap_dense():
    net = nn.Sequential()
    net.add(nn.Conv2D(5, (3, 2), strides=(2, 1), padding=(1, 0),
                      in_channels=2),
            nn.BatchNorm(in_channels=5), nn.Activation("relu"),
            nn.MaxPool2D(3, 2, 1, ceil_mode=True),
            nn.Conv2D(6, 1, groups=1), nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize()                          # conv0, bn: known shapes
    assert net[0].weight.is_initialized and net[1].gamma.is_initialized
    assert not net[4].weight.is_initialized
    x = rand(np.random.default_rng(15), 2, 2, 11, 9)
    net(x)
    fill(net, 16)
    v = [p.data() for p in net.collect_params().values()]
    h = conv2d_ref(x, v[0], v[1], stride=(2, 1), pad=(1, 0))
    h = np.maximum(bn_ref(h, *v[2:6]), 0)
    h = pool_ref(h, (3, 3), (2, 2), (1, 1), True, "max")
    h = conv2d_ref(h, v[6], v[7]).mean(axis=(2, 3), keepdims=True)
    np.testing.assert_allclose(net(x), dense_ref(h, v[8], v[9]),
                               **TOL[np.float32])


# ---------------------------------------------------------------------------
# Deferred channels, initialization, errors


def test_deferred_channels_and_initializer_order(capsys):
    class MyInit(init.Initializer):
        def _init_weight(self, name, data):
            print("Init", name, data.shape)

    net = lenet()
    assert net[0].weight.shape == (6, -1, 5, 5)
    assert repr(net[0]) == ("Conv2D(-1 -> 6, kernel_size=(5, 5), "
                            "stride=(1, 1), padding=(2, 2), "
                            "Activation(sigmoid))")
    net.initialize(init=MyInit())
    assert capsys.readouterr().out == ""
    with pytest.raises(fl.DeferredInitializationError, match="forward"):
        net[0].weight.data()
    net(np.zeros((1, 1, 28, 28)))
    lines = capsys.readouterr().out.splitlines()
    names = [re.sub(r"^Init \S*?(conv|dense)\d+_", r"\1_", ln)
             for ln in lines]
    assert names == ["conv_weight (6, 1, 5, 5)", "conv_weight (16, 6, 5, 5)",
                     "dense_weight (120, 400)", "dense_weight (84, 120)",
                     "dense_weight (10, 84)"]
    assert re.match(r"Init \S*conv\d+_weight \(6, 1, 5, 5\)", lines[0])
    net(np.zeros((1, 1, 28, 28)))
    assert capsys.readouterr().out == ""
    assert repr(net[2]).startswith("Conv2D(6 -> 16, kernel_size=(5, 5)")


def test_conv_repr_options():
    c = nn.Conv2D(8, 3, strides=2, dilation=2, groups=2, use_bias=False,
                  in_channels=4, activation="relu")
    assert repr(c) == ("Conv2D(4 -> 8, kernel_size=(3, 3), stride=(2, 2), "
                       "dilation=(2, 2), groups=2, bias=False, "
                       "Activation(relu))")
    assert c.weight.shape == (8, 2, 3, 3)
    assert c.prefix.startswith("conv")


def _state(net):
    return [(p.shape, p.state) for p in net.collect_params().values()]


def test_failure_leaves_nothing_half_made():
    net = lenet()
    net.initialize()
    before = _state(net)
    # 8x8: the first convolution fits, the second does not (4x4 after pool)
    with pytest.raises(fl.ShapeError) as err:
        net(np.zeros((1, 1, 8, 8)))
    msg = str(err.value)
    assert "input too small for this kernel" in msg
    assert "(1, 6, 4, 4)" in msg and "height 4" in msg and "5" in msg
    assert net[2].name in msg
    assert _state(net) == before
    assert net(np.zeros((2, 1, 28, 28))).shape == (2, 10)


def test_wrong_channels_after_inference_and_with_in_channels():
    net = lenet()
    net.initialize()
    net(np.zeros((1, 1, 28, 28)))
    with pytest.raises(fl.ShapeError) as err:
        net(np.zeros((1, 3, 28, 28)))
    msg = str(err.value)
    assert net[0].name in msg and "expects 1 input channels" in msg
    assert "(1, 3, 28, 28)" in msg and "3 channels" in msg
    assert net(np.zeros((1, 1, 28, 28))).shape == (1, 10)   # still usable
    c = nn.Conv2D(4, 3, in_channels=2)
    c.initialize()
    with pytest.raises(fl.ShapeError, match=r"expects 2 input channels"):
        c(np.zeros((1, 5, 6, 6)))
    g = nn.Conv2D(4, 3, groups=2)
    g.initialize()
    with pytest.raises(fl.ShapeError, match=r"groups=2.*3 channels"):
        g(np.zeros((1, 3, 6, 6)))


@pytest.mark.parametrize("layer, shape, needle", [
    (lambda: nn.Conv2D(2, 3), (2, 20), "4-D input"),
    (lambda: nn.MaxPool2D(), (2, 3, 5), "4-D input"),
    (lambda: nn.Conv2D(2, 3, dilation=2), (1, 1, 4, 9),
     "dilated kernel height 5"),
    (lambda: nn.AvgPool2D(4), (1, 1, 3, 9), "input too small for this pool"),
    (lambda: nn.BatchNorm(axis=0), (2, 3), "batch axis"),
    (lambda: nn.BatchNorm(axis=3), (2, 3), "out of range"),
    (lambda: nn.LayerNorm(), (4,), "batch axis and at least one more"),
])
def test_bad_inputs_name_the_layer(layer, shape, needle):
    block = layer()
    block.initialize()
    with pytest.raises(fl.ShapeError) as err:
        block(np.zeros(shape))
    assert needle in str(err.value) and block.name in str(err.value)


def test_bad_arguments():
    with pytest.raises(ValueError, match="layout='NCHW'"):
        nn.Conv2D(4, 3, layout="NHWC")
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2D(3, 3, groups=2)
    with pytest.raises(TypeError, match="kernel_size"):
        nn.Conv2D(3, (1, 2, 3))
    with pytest.raises(ValueError, match="strides"):
        nn.MaxPool2D(2, 0)
    with pytest.raises(ValueError, match="unknown activation"):
        nn.Conv2D(3, 3, activation="swish!")


def test_batchnorm_channel_mismatch():
    bn = nn.BatchNorm(in_channels=4)
    bn.initialize()
    with pytest.raises(fl.ShapeError) as err:
        bn(np.zeros((2, 3, 5, 5)))
    assert "expects 4 channels on axis 1" in str(err.value)
    assert "(2, 3, 5, 5)" in str(err.value)


# ---------------------------------------------------------------------------
# build, persistence, copies, dtype


def test_build_then_save_load_structural_keys(tmp_path):
    fl.random.seed(3)
    net = lenet()
    net.add(nn.BatchNorm())
    net.initialize()
    assert net.build((None, 1, 28, 28)) == (None, 10)
    assert net[0].weight.shape == (6, 1, 5, 5)
    path = tmp_path / "lenet.npz"
    net.save_parameters(path)
    from fastlazy.io import load_arrays
    keys = list(load_arrays(path))
    assert keys[:2] == ["0.weight", "0.bias"]
    assert "7.running_mean" in keys and "7.gamma" in keys
    x = np.random.default_rng(17).uniform(size=(2, 1, 28, 28))
    y = net(x)
    other = lenet()
    other.add(nn.BatchNorm())
    other.load_parameters(path)               # deferred: shapes from file
    assert other[0].weight.shape == (6, 1, 5, 5)
    np.testing.assert_array_equal(other(x), y)


@pytest.mark.parametrize("stage", ["unset", "deferred", "initialized"])
def test_pickle_and_deepcopy(stage):
    net = nn.Sequential()
    net.add(nn.Conv2D(4, 3, activation="relu"), nn.BatchNorm(),
            nn.MaxPool2D(), nn.LayerNorm(axis=1), nn.Dense(3))
    x = rand(np.random.default_rng(19), 2, 2, 9, 9)
    if stage != "unset":
        net.initialize()
    if stage == "initialized":
        net(x)
        fill(net, 20)
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        assert _state(twin) == _state(net)
        assert repr(twin) == repr(net)
        if stage == "unset":
            twin.initialize()
        if stage == "initialized":
            np.testing.assert_array_equal(twin(x), net(x))
        else:
            assert twin(x).shape == (2, 3)
            assert net[0].weight.shape == (4, -1, 3, 3)   # original stays


def test_float64_layers_and_cast():
    net = nn.Sequential()
    net.add(nn.Conv2D(3, 2, dtype="float64"), nn.BatchNorm(dtype="float64"),
            nn.AvgPool2D(2, 1, count_include_pad=False, padding=1),
            nn.LayerNorm(dtype="float64"))
    net.initialize()
    x = np.random.default_rng(21).standard_normal((2, 2, 5, 5))
    y = net(x)
    assert y.dtype == np.float64
    net.cast("float32")
    assert net(x).dtype == np.float32
    np.testing.assert_allclose(net(x), y, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# summary


def test_summary_before_and_after_inference(capsys):
    net = lenet()
    rows = net.summary((None, 1, 28, 28))   # nothing initialized yet
    assert [p.shape for p in net.collect_params().values()][0] \
        == (6, -1, 5, 5)
    out = capsys.readouterr().out
    assert rows[0] == ("Conv2D-1", (None, 6, 28, 28), 156)
    assert rows[3] == ("AvgPool2D-4", (None, 16, 5, 5), 0)
    assert [r[2] for r in rows] == [156, 0, 2416, 0, 48120, 10164, 850]
    assert "Total params: 61706" in out and "(None, 1, 28, 28)" in out
    net.initialize()
    net(np.zeros((1, 1, 28, 28)))
    rows2 = net.summary(np.zeros((4, 1, 28, 28)))
    assert rows2[0] == ("Conv2D-1", (4, 6, 28, 28), 156)


def test_summary_nested_and_shared(capsys):
    inner = nn.Sequential()
    inner.add(nn.Conv2D(4, 3, padding=1), nn.BatchNorm())
    net2 = nn.Sequential()
    net2.add(inner, nn.Activation("relu"), nn.GlobalMaxPool2D(),
             nn.Dense(4, in_units=4))
    net2.add(nn.Dense(4, params=net2[3].collect_params()))
    capsys.readouterr()
    rows = net2.summary((2, 3, 6, 6))
    out = capsys.readouterr().out
    assert [r[0] for r in rows] == ["Conv2D-1", "BatchNorm-2",
                                    "Activation-3", "GlobalMaxPool2D-4",
                                    "Dense-5", "Dense-6"]
    assert rows[1][2] == 16
    assert "Non-trainable params: 8" in out        # running mean and var
    assert "Shared params in forward computation graph: 20" in out


def test_fusion_rules():
    def kinds(net, shape):
        net.initialize()
        net.build(shape)
        return [(type(s).__name__, s.act if isinstance(s, ConvStep) else None,
                 s.bn is not None if isinstance(s, ConvStep) else None)
                for s in _compile.fused_steps(net, shape)]

    relu = _plan.ACTIVATIONS["relu"]
    net = nn.Sequential()
    net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.Activation("relu"))
    assert kinds(net, (1, 2, 5, 5)) == [("ConvStep", relu, True)]
    net = nn.Sequential()              # BN after the activation: not fused
    net.add(nn.Conv2D(4, 3, activation="relu"), nn.BatchNorm())
    assert kinds(net, (1, 2, 5, 5)) == [("ConvStep", relu, False),
                                        ("BatchNormStep", None, None)]
    net = nn.Sequential()              # BN over another axis: not fused
    net.add(nn.Conv2D(4, 3), nn.BatchNorm(axis=2))
    assert [k[0] for k in kinds(net, (1, 2, 5, 5))] == ["ConvStep",
                                                        "BatchNormStep"]


def test_fully_convolutional_net_takes_new_sizes():
    net = nn.Sequential()
    net.add(nn.Conv2D(3, 3, padding=1, activation="relu"), nn.MaxPool2D(),
            nn.Conv2D(2, 1), nn.GlobalAvgPool2D())
    net.initialize()
    for h, w in [(8, 8), (5, 9), (8, 8), (2, 3)]:
        x = rand(np.random.default_rng(h * w), 2, 4, h, w)
        y = net(x)
        v = [p.data() for p in net.collect_params().values()]
        hh = np.maximum(conv2d_ref(x, v[0], v[1], pad=(1, 1)), 0)
        hh = pool_ref(hh, (2, 2), (2, 2), (0, 0), False, "max")
        ref = conv2d_ref(hh, v[2], v[3]).mean(axis=(2, 3), keepdims=True)
        np.testing.assert_allclose(y, ref, **TOL[np.float32])


def test_seeded_deferred_and_eager_weights_agree():
    def make(cin):
        net = nn.Sequential()
        net.add(nn.Conv2D(4, 3, in_channels=cin), nn.BatchNorm(in_channels=4),
                nn.LayerNorm(in_channels=4 if cin else 0))
        return net

    fl.random.seed(11)
    lazy = make(0)
    lazy.initialize(init=init.Xavier())
    lazy.build((None, 2, 8, 6))
    fl.random.seed(11)
    eager = make(2)
    eager.initialize(init=init.Xavier())
    for a, b in zip(lazy.collect_params().values(),
                    eager.collect_params().values()):
        np.testing.assert_array_equal(a.data(), b.data())


@pytest.mark.parametrize("n, col_bytes", [(1, 1 << 19), (1, 1), (3, 1),
                                          (5, 1 << 19), (130, 1 << 19)])
def test_threaded_convolution(two_threads, n, col_bytes):
    """Big convolutions: one sample split into blocks of rows across the
    pool's threads, or the samples shared out; same values as one thread
    and as NumPy."""
    net = nn.Sequential()
    net.add(nn.Conv2D(16, 3, padding=1, activation="relu"), nn.BatchNorm(),
            nn.Conv2D(8, 3, strides=2, groups=2), nn.AvgPool2D())
    net.initialize()
    side = 48 if n < 100 else 12     # conv0: 5.3M multiply-adds a sample
    x = rand(np.random.default_rng(23), n, 16, side, side)
    old = _plan.set_conv_tuning(col_bytes=col_bytes)
    try:
        net(x)
        fill(net, 24)
        y2 = net(x)
        fl.set_num_threads(1)
        y1 = net(x)
    finally:
        _plan.set_conv_tuning(*old)
    v = [p.data() for p in net.collect_params().values()]
    h = bn_ref(np.maximum(conv2d_ref(x, v[0], v[1], pad=(1, 1)), 0), *v[2:6])
    h = conv2d_ref(h, v[6], v[7], stride=(2, 2), groups=2)
    ref = pool_ref(h, (2, 2), (2, 2), (0, 0), False, "avg")
    np.testing.assert_allclose(y2, ref, **TOL[np.float32])
    np.testing.assert_allclose(y2, y1, rtol=1e-6, atol=1e-6)


def test_concurrent_calls_from_python_threads(two_threads):
    import threading
    net = resnet_body(16)
    net.initialize()
    x = rand(np.random.default_rng(25), 2, 16, 32, 32)
    net(x)
    fill(net, 26)
    want = net(x)
    out, errors = [None] * 6, []

    def work(i):
        try:
            for _ in range(5):
                out[i] = net(x)
        except BaseException as exc:        # pragma: no cover - reported
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for got in out:
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("level", [0, 3, 4])
def test_vectorised_sigmoid_of_the_epilogue(level):
    """The convolution epilogue's float32 sigmoid (Cephes exp over vector
    types) at every instruction-set level the CPU has: within 2 ulp of the
    float64 sigmoid, NaN and infinities handled, every tail length."""
    used = _plan.set_isa(level)
    try:
        if used != level:
            pytest.skip(f"the CPU has no level {level}")
        v = np.concatenate([np.linspace(-87, 87, 20011),
                            [np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-30,
                             -1e-30, 88.0, -88.0, -200.0]]).astype(np.float32)
        for n in (1, 3, 7, 15, 17, 31, len(v)):
            x = v[-n:].copy() if n < 20 else v.copy()
            got = _plan.conv_activation_f32(x.copy(), 2)
            ref = 1 / (1 + np.exp(-x.astype(np.float64)))
            fin = np.isfinite(x) & (x > -87.5)
            np.testing.assert_allclose(got[fin], ref[fin], rtol=3e-7, atol=0)
            assert np.array_equal(np.isnan(got), np.isnan(x))
            assert np.all(got[x == np.inf] == 1)
            assert np.all(np.abs(got[x <= -87.5]) < 1e-37)
        # and through a network, against NumPy
        net = nn.Sequential()
        net.add(nn.Conv2D(3, 2, activation="sigmoid"), nn.BatchNorm(),
                nn.Activation("sigmoid"))
        net.initialize()
        x = rand(np.random.default_rng(27), 2, 2, 9, 8) * 6
        net(x)
        fill(net, 28)
        v = [p.data() for p in net.collect_params().values()]
        ref = sigmoid(bn_ref(sigmoid(conv2d_ref(x, v[0], v[1])), *v[2:6]))
        np.testing.assert_allclose(net(x), ref, **TOL[np.float32])
    finally:
        _plan.set_isa(None)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("k,s,p,d", [(3, 1, 1, 1), (3, 2, 1, 1), (5, 1, 2, 1),
                                     (3, 1, 2, 2), (3, 2, 0, 1), (1, 1, 0, 1),
                                     (4, 3, 1, 1), (3, 1, 0, 3)])
@pytest.mark.parametrize("act", [None, "relu", "sigmoid"])
@pytest.mark.parametrize("level", [0, 3, 4])
def test_depthwise_direct_kernel(dtype, k, s, p, d, act, level, isa_restore):
    """Depthwise convolutions (groups == channels, MobileNet's) run a
    direct kernel: against NumPy and against the im2col + GEMM route, with
    a BatchNorm folded in, at every instruction-set level."""
    require_isa(level)
    c = 6
    net = nn.Sequential()
    net.add(nn.Conv2D(c, k, strides=s, padding=p, dilation=d, groups=c,
                      dtype=dtype),
            nn.BatchNorm(dtype=dtype))
    if act:
        net.add(nn.Activation(act))
    net.initialize()
    rng = np.random.default_rng(k * 100 + s * 10 + p + d)
    x = rng.standard_normal((3, c, 11, 9)).astype(dtype)
    net(x)
    fill(net[0], seed=3, dtype=dtype)
    bn = net[1]
    bn.running_mean.set_data(rng.uniform(-0.2, 0.2, c))
    bn.running_var.set_data(rng.uniform(0.5, 1.5, c))
    bn.gamma.set_data(rng.uniform(0.5, 1.5, c))
    direct = net(x)
    old = _plan.set_conv_tuning(depthwise=False)
    try:
        gemm = net(x)
    finally:
        _plan.set_conv_tuning(*old)
    w = net[0].weight.data()
    ref = conv2d_ref(x, w, net[0].bias.data(), (s, s), (p, p), (d, d), c)
    shape = (1, c, 1, 1)
    ref = (ref - bn.running_mean.data().reshape(shape)) / np.sqrt(
        bn.running_var.data().reshape(shape) + 1e-5) * \
        bn.gamma.data().reshape(shape) + bn.beta.data().reshape(shape)
    if act == "relu":
        ref = np.maximum(ref, 0)
    elif act == "sigmoid":
        ref = 1 / (1 + np.exp(-ref))
    tol = TOL[dtype]
    np.testing.assert_allclose(direct, ref, **tol)
    np.testing.assert_allclose(direct, gemm, **tol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("level", [0, 3, 4])
@pytest.mark.parametrize("threads", [1, 2])
def test_depthwise_odd_widths(dtype, level, threads, isa_restore):
    """Output widths 1, 7, 15, 17, 33 and 65 (every vector tail at every
    level), odd and even heights, stride 1 and 2, one and three samples,
    with bias and relu; at 2 threads one sample's channels are shared out
    to the pool (the threshold lowered to force it): against NumPy."""
    require_isa(level)
    rng = np.random.default_rng(31)
    c = 9
    old_threads = fl.get_num_threads()
    old_tuning = _plan.set_tuning(parallel_macs=0 if threads > 1 else None)
    fl.set_num_threads(threads)
    try:
        for s in (1, 2):
            for ow in (1, 7, 15, 17, 33, 65):
                h, w = (5, ow) if s == 1 else (10, 2 * ow)
                layer = nn.Conv2D(c, 3, strides=s, padding=1, groups=c,
                                  activation="relu", in_channels=c,
                                  dtype=dtype)
                layer.initialize()
                fill(layer, seed=ow, dtype=dtype)
                for n in (1, 3):
                    x = rand(rng, n, c, h, w, dtype=dtype)
                    y = layer(x)
                    ref = np.maximum(conv2d_ref(x, layer.weight.data(),
                                                layer.bias.data(), (s, s),
                                                (1, 1), (1, 1), c), 0)
                    assert y.shape == ref.shape == (n, c, 5, ow)
                    np.testing.assert_allclose(
                        y, ref, **TOL[dtype],
                        err_msg=f"stride {s} width {ow} samples {n}")
    finally:
        fl.set_num_threads(old_threads)
        _plan.set_tuning(parallel_macs=old_tuning[2])
