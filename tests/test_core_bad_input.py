"""Bad and unusual input: clear errors, never a crash or a silent wrong
answer; NaN/inf as IEEE; any memory layout and dtype converted correctly."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import init, nn


def mlp(act="relu", **kw):
    net = nn.Sequential()
    net.add(nn.Dense(6, activation=act, **kw), nn.Dense(3))
    return net


def ready(act="relu", k=4):
    net = mlp(act)
    net.initialize(init=init.Normal(0.5))
    net(np.zeros((1, k)))
    return net


STATES = ["deferred", "initialized"]


def net_in(state):
    net = mlp()
    net.initialize()
    if state == "initialized":
        net(np.zeros((1, 4)))
    return net


# ---------------------------------------------------------------------------
# Non-numeric and malformed input


NON_NUMERIC = [
    "abc",
    [["a", "b", "c", "d"]],
    np.array([["1", "2", "3", "4"]]),
    object(),
    [[object()] * 4],
    None,
    {"a": 1},
    np.ones((2, 4), dtype=complex),
    np.array([["2020-01-01"] * 4], dtype="datetime64[D]"),
]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("bad", NON_NUMERIC, ids=lambda b: type(b).__name__)
def test_non_numeric_input(state, bad, ref):
    net = net_in(state)
    before = ref.snapshot(net)
    with pytest.raises(TypeError) as exc:
        net(bad)
    assert "numbers" in str(exc.value)
    assert ref.snapshot(net) == before
    assert net(np.ones((2, 4))).shape == (2, 3)


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("bad", [[[1, 2, 3, 4], [1, 2]],
                                 [[1, 2, 3, 4], 5],
                                 [np.ones(4), np.ones(3)]],
                         ids=["ragged", "mixed", "arrays"])
def test_ragged_input(state, bad, ref):
    net = net_in(state)
    before = ref.snapshot(net)
    with pytest.raises(ValueError) as exc:
        net(bad)
    assert "rectangular" in str(exc.value)
    assert ref.snapshot(net) == before


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("bad", [3.0, np.float32(2), np.array(1.5), 7])
def test_zero_d_input(state, bad, ref):
    net = net_in(state)
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError) as exc:
        net(bad)
    assert "0-d" in str(exc.value)
    assert ref.snapshot(net) == before


@pytest.mark.parametrize("state", STATES)
def test_one_d_input(state, ref):
    net = net_in(state)
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones(4))
    msg = str(exc.value)
    assert net[0].name in msg and "(4,)" in msg and "x[None]" in msg
    assert ref.snapshot(net) == before


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("shape", [(2, 0), (0, 0), (2, 3, 0), (2, 0, 4)])
def test_empty_feature_axis(state, shape, ref):
    net = net_in(state)
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones(shape))
    assert net[0].name in str(exc.value)
    assert "empty" in str(exc.value)
    assert ref.snapshot(net) == before


def test_empty_feature_axis_flatten_false(ref):
    d = nn.Dense(3, flatten=False)
    d.initialize()
    with pytest.raises(fl.ShapeError):
        d(np.ones((2, 3, 0)))
    assert d.weight.shape == (3, -1)


@pytest.mark.parametrize("k", [1, 3, 5, 40])
def test_wrong_feature_size_after_inference(k, ref):
    net = ready(k=4)
    x = np.random.default_rng(0).random((2, 4))
    y = net(x)
    before = ref.snapshot(net)
    if k == 4:
        return
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones((2, k)))
    msg = str(exc.value)
    assert net[0].name in msg and "4" in msg and str(k) in msg
    assert isinstance(exc.value, ValueError)
    assert ref.snapshot(net) == before
    np.testing.assert_array_equal(net(x), y)
    # flattened inputs of the wrong total size are refused too
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones((2, 2, 3)))
    assert "6" in str(exc.value) and "4" in str(exc.value)
    np.testing.assert_array_equal(net(x.reshape(2, 2, 2)), y)


# ---------------------------------------------------------------------------
# NaN and infinity


NAN_SAFE_ACTS = [None, "relu", "sigmoid", "tanh", "softrelu"]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("act", NAN_SAFE_ACTS)
def test_nan_inf_propagate_like_numpy(act, dtype, ref):
    net = nn.Sequential()
    net.add(nn.Dense(7, activation=act, dtype=dtype),
            nn.Dense(5, activation=act, dtype=dtype))
    fl.random.seed(11)
    net.initialize(init=init.Normal(1.0))
    x = np.random.default_rng(1).standard_normal((6, 9))
    x[0, 2] = np.nan
    x[1, 3] = np.inf
    x[2, 4] = -np.inf
    x[3, 0] = np.inf
    x[3, 1] = -np.inf            # inf - inf: NaN where w0, w1 agree
    x[4, :] = np.inf
    y = ref.forward_matches(net, x, f"act={act}")
    assert np.isnan(y[0]).all()  # NaN reaches every output
    assert np.isfinite(y[5]).all()


@pytest.mark.parametrize("act", ["softsign", "silu", "gelu"])
def test_inf_through_saturating_activations(act, ref):
    d = nn.Dense(4, activation=act, in_units=3)
    d.initialize(init=init.One())
    x = np.array([[np.inf, 1.0, 1.0], [-np.inf, 1.0, 1.0]])
    ref.forward_matches(d, x)


def test_nan_in_weights_propagates(ref):
    d = nn.Dense(3, in_units=2)
    d.initialize()
    w = d.weight.data()
    w[1, 0] = np.nan
    y = d(np.ones((2, 2)))
    np.testing.assert_array_equal(np.isnan(y), [[False, True, False]] * 2)


# ---------------------------------------------------------------------------
# Memory layouts


def _layouts(x):
    f = np.asfortranarray(x)
    wide = np.zeros((x.shape[0] * 2, x.shape[1] * 3))
    wide[::2, ::3] = x
    return {
        "C": np.ascontiguousarray(x),
        "F": f,
        "transposed_view": np.ascontiguousarray(x.T).T,
        "strided": wide[::2, ::3],
        "reversed": np.ascontiguousarray(x[::-1])[::-1],
        "readonly": _readonly(x),
        "list": x.tolist(),
        "float32_F": np.asfortranarray(x.astype(np.float32)),
    }


def _readonly(x):
    a = np.array(x, dtype=np.float32)
    a.flags.writeable = False
    return a


@pytest.mark.parametrize("state", ["fresh", "planned"])
def test_layouts_give_correct_results(state, ref):
    x = np.random.default_rng(2).standard_normal((5, 4))
    net = ready(k=4)
    if state == "planned":
        net(x.astype(np.float32))
    expect = net(x.astype(np.float32))
    for name, xi in _layouts(x).items():
        y = net(xi)
        assert y.dtype == np.float32, name
        np.testing.assert_allclose(y, expect, rtol=1e-6, atol=1e-6,
                                   err_msg=name)
        ref.forward_matches(net, x)


def test_layouts_on_first_forward(ref):
    x = np.random.default_rng(3).standard_normal((5, 4))
    for name, xi in _layouts(x).items():
        net = mlp()
        net.initialize()
        ref.forward_matches(net, xi, name)
        assert net[0].weight.shape == (6, 4), name


def test_layouts_3d_flatten(ref):
    x = np.random.default_rng(4).standard_normal((3, 4, 5))
    net = mlp()
    net.initialize()
    ref.forward_matches(net, x)
    for xi in (np.asfortranarray(x), x.transpose(0, 2, 1).copy().transpose(
            0, 2, 1), x[:, :, ::-1].copy()[:, :, ::-1]):
        ref.forward_matches(net, xi)


def test_unaligned_input(ref):
    x = np.random.default_rng(5).standard_normal((7, 4)).astype(np.float32)
    buf = np.zeros(x.nbytes + 1, dtype=np.uint8)
    un = np.frombuffer(buf.data, dtype=np.float32, count=x.size,
                       offset=1).reshape(x.shape)
    assert not un.flags.aligned
    un_w = np.ndarray(x.shape, np.float32, buffer=buf, offset=1)
    un_w[...] = x
    net = ready(k=4)
    np.testing.assert_array_equal(net(un_w), net(x))


def test_big_endian_input(ref):
    net = ready(k=3)
    x = np.arange(6, dtype=">f4").reshape(2, 3)
    expect = net(x.astype("<f4"))
    for _ in range(2):          # the first call is the slow path
        np.testing.assert_array_equal(net(x), expect)


def test_big_endian_input_first_call(ref):
    net = mlp()
    net.initialize()
    x = np.arange(8, dtype=">f8").reshape(2, 4)
    ref.forward_matches(net, x)


# ---------------------------------------------------------------------------
# Input dtypes


@pytest.mark.parametrize("dtype", [np.int8, np.int32, np.int64, np.uint16,
                                   np.bool_, np.float16, np.float64,
                                   np.float32])
@pytest.mark.parametrize("net_dtype", ["float32", "float64"])
def test_input_dtypes_converted(dtype, net_dtype, ref):
    net = nn.Sequential()
    net.add(nn.Dense(5, activation="tanh", dtype=net_dtype),
            nn.Dense(2, dtype=net_dtype))
    net.initialize()
    x = (np.arange(12).reshape(3, 4) % 3).astype(dtype)
    for _ in range(2):
        y = ref.forward_matches(net, x)
        assert y.dtype == np.dtype(net_dtype)
    np.testing.assert_array_equal(y, net(x.astype(net_dtype)))


def test_python_scalars_nested_lists(ref):
    net = ready(k=2)
    y = net([[1, 2], [3.5, -1]])
    np.testing.assert_array_equal(y, net(np.array([[1, 2], [3.5, -1]],
                                                  np.float32)))


# ---------------------------------------------------------------------------
# Batch sizes


@pytest.mark.parametrize("state", STATES)
def test_batch_of_zero(state, ref):
    net = net_in(state)
    y = net(np.ones((0, 4)))
    assert y.shape == (0, 3) and y.dtype == np.float32
    assert net[0].weight.shape == (6, 4)
    ref.forward_matches(net, np.ones((3, 4)))
    assert net(np.ones((0, 2, 2))).shape == (0, 3)


@pytest.fixture(scope="module")
def batch_net():
    net = mlp("gelu")
    net.initialize(init=init.Normal(0.5))
    net(np.ones((1, 4)))
    return net


@given(n=st.integers(0, 300))
def test_any_batch_size(n, batch_net, ref):
    x = np.random.default_rng(n).standard_normal((n, 4))
    y = ref.forward_matches(batch_net, x)
    assert y.shape == (n, 3)


def test_large_batch_crosses_tiles(ref):
    net = nn.Sequential()
    net.add(nn.Dense(300, activation="relu"), nn.Dense(200, activation="tanh"),
            nn.Dense(10))
    net.initialize(init=init.Xavier())
    x = np.random.default_rng(0).standard_normal((1000, 50))
    ref.forward_matches(net, x)
    ref.forward_matches(net, x[:1])
    ref.forward_matches(net, x[:7])


# ---------------------------------------------------------------------------
# Absurd sizes


def test_absurd_size_eager():
    d = nn.Dense(10 ** 12, in_units=1000)
    with pytest.raises((MemoryError, ValueError)):
        d.initialize()
    assert d.weight.state == "unset"
    with pytest.raises(fl.DeferredInitializationError):
        d.weight.data()


def test_absurd_size_lazy(ref):
    net = nn.Sequential()
    net.add(nn.Dense(8), nn.Dense(10 ** 12, use_bias=False))
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises((MemoryError, ValueError)):
        net(np.ones((1, 1000)))
    assert ref.snapshot(net) == before


def test_absurd_input_width():
    d = nn.Dense(2)
    d.initialize()
    with pytest.raises((MemoryError, ValueError)):
        d(np.broadcast_to(np.float32(1), (1, 10 ** 13)))


def test_impossible_allocation_names_the_parameter_and_shape():
    layer = nn.Dense(2 ** 31, in_units=2 ** 31)
    with pytest.raises((MemoryError, ValueError)) as info:
        layer.initialize()
    msg = str(info.value)
    assert layer.weight.name in msg
    assert str((2 ** 31, 2 ** 31)) in msg
    assert "float32" in msg and "EiB" in msg
    assert layer.weight.state == "unset"
