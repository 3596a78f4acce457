"""Blocks: naming, Sequential containers, Dense (flatten, dtype, output
ownership), Activation, Dropout, Flatten, build(), custom blocks."""

import gc
import re
import weakref

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import init, nn

ACTS = [None, "relu", "sigmoid", "tanh", "softrelu", "softsign", "gelu",
        "silu"]


def _counter(block, alias):
    m = re.fullmatch(alias + r"(\d+)_", block.prefix)
    assert m, block.prefix
    return int(m.group(1))


# ---------------------------------------------------------------------------
# Naming


def test_prefix_counters_per_class():
    d1, d2 = nn.Dense(2), nn.Dense(2)
    s1 = nn.Sequential()
    d3 = nn.Dense(2)
    s2 = nn.Sequential()
    assert _counter(d2, "dense") == _counter(d1, "dense") + 1
    assert _counter(d3, "dense") == _counter(d2, "dense") + 1
    assert _counter(s2, "sequential") == _counter(s1, "sequential") + 1
    assert d1.name == d1.prefix[:-1]
    assert d1.weight.name == d1.prefix + "weight"
    assert d1.bias.name == d1.prefix + "bias"
    a = nn.Activation("relu")
    assert re.fullmatch(r"relu\d+_", a.prefix)
    assert re.fullmatch(r"dropout\d+_", nn.Dropout(0.1).prefix)
    assert re.fullmatch(r"flatten\d+_", nn.Flatten().prefix)


def test_prefix_override():
    d = nn.Dense(3, prefix="fc_")
    assert d.prefix == "fc_" and d.name == "fc"
    assert d.weight.name == "fc_weight" and d.bias.name == "fc_bias"
    assert list(d.collect_params()) == ["fc_weight", "fc_bias"]


def test_name_scope_counts_from_zero():
    net = nn.Sequential(prefix="model_")
    with net.name_scope():
        net.add(nn.Dense(3), nn.Dense(2))
    assert [b.prefix for b in net] == ["model_dense0_", "model_dense1_"]
    other = nn.Sequential(prefix="other_")
    with other.name_scope():
        other.add(nn.Dense(3))
    assert other[0].prefix == "other_dense0_"


# ---------------------------------------------------------------------------
# Sequential


def _stack(n=3):
    net = nn.Sequential()
    layers = [nn.Dense(4 + i, activation="relu") for i in range(n)]
    net.add(*layers)
    return net, layers


def test_sequential_indexing_len_iteration():
    net, layers = _stack()
    assert len(net) == 3
    assert list(net) == layers
    assert net[0] is layers[0] and net[-1] is layers[-1]
    with pytest.raises(IndexError):
        net[3]
    assert net.add(nn.Dense(1)) is net or len(net) == 4


def test_sequential_slicing_shares_blocks(ref):
    net, layers = _stack()
    part = net[1:]
    assert isinstance(part, nn.Sequential)
    assert list(part) == layers[1:]
    assert part[0] is layers[1]
    assert len(net[0:0]) == 0
    assert list(net[::2]) == [layers[0], layers[2]]
    assert all(p is q for p, q in zip(
        part.collect_params().values(),
        list(net.collect_params().values())[2:]))
    # running the slice infers the shared parameters of the parent
    net.initialize()
    x = np.random.default_rng(0).random((2, 6))
    ref.forward_matches(part, x)
    assert layers[1].weight.shape == (5, 6)
    assert layers[0].weight.state == "deferred"


def test_sequential_nesting(ref):
    inner = nn.Sequential()
    inner.add(nn.Dense(5, activation="tanh"), nn.Dense(4))
    outer = nn.Sequential()
    outer.add(inner, nn.Activation("relu"), nn.Dense(2))
    assert repr(outer) == (
        "Sequential(\n"
        "  (0): Sequential(\n"
        "    (0): Dense(-1 -> 5, Activation(tanh))\n"
        "    (1): Dense(-1 -> 4, linear)\n"
        "  )\n"
        "  (1): Activation(relu)\n"
        "  (2): Dense(-1 -> 2, linear)\n"
        ")")
    params = outer.collect_params()
    assert len(params) == 6
    assert list(params.values())[:2] == [inner[0].weight, inner[0].bias]
    outer.initialize()
    x = np.random.default_rng(1).standard_normal((3, 7))
    ref.forward_matches(outer, x)
    assert inner[0].weight.shape == (5, 7)
    # the inner net runs on its own too, with the same parameters
    ref.forward_matches(inner, x)


def test_sequential_add_rejects_non_blocks():
    net = nn.Sequential()
    with pytest.raises(TypeError):
        net.add(lambda x: x)
    assert len(net) == 0


def test_empty_sequential_is_identity():
    net = nn.Sequential()
    x = np.arange(6, dtype=np.float32).reshape(2, 3)
    y = net(x)
    np.testing.assert_array_equal(y, x)
    assert not np.shares_memory(x, y)


# ---------------------------------------------------------------------------
# Dense


def test_dense_shapes_and_properties():
    d = nn.Dense(7, in_units=3)
    assert d.units == 7 and d.act is None
    assert d.weight.shape == (7, 3) and d.bias.shape == (7,)
    d = nn.Dense(7, use_bias=False)
    assert d.bias is None
    assert list(d.collect_params()) == [d.weight.name]


@pytest.mark.parametrize("units,kw", [
    (0, {}), (-3, {}), (2.5, {}), (True, {}), ("3", {}),
    (3, {"in_units": -1}), (3, {"in_units": 1.5})])
def test_dense_bad_arguments(units, kw):
    with pytest.raises((ValueError, TypeError)):
        nn.Dense(units, **kw)


@pytest.mark.parametrize("use_bias", [True, False])
@pytest.mark.parametrize("act", ACTS)
def test_dense_activations_vs_numpy(act, use_bias, ref):
    net = nn.Sequential()
    net.add(nn.Dense(9, activation=act, use_bias=use_bias),
            nn.Dense(4, activation=act, use_bias=use_bias,
                     bias_initializer=init.Uniform(0.5)))
    net.initialize(init=init.Normal(0.7))
    x = np.random.default_rng(5).standard_normal((6, 11)) * 2
    ref.forward_matches(net, x, f"act={act}")


@given(n=st.integers(0, 7), dims=st.lists(st.integers(1, 5), min_size=1,
                                          max_size=3),
       units=st.integers(1, 9), flatten=st.booleans(), seed=st.integers(0, 99))
def test_dense_flatten_shapes(n, dims, units, flatten, seed, ref):
    d = nn.Dense(units, activation="tanh", flatten=flatten)
    d.initialize(init=init.Normal(0.5))
    x = np.random.default_rng(seed).standard_normal((n, *dims))
    y = d(x)
    k = int(np.prod(dims)) if flatten else dims[-1]
    assert d.weight.shape == (units, k)
    if flatten:
        assert y.shape == (n, units)
        ref.close(y, *_flat_ref(d, x.reshape(n, k), ref))
    else:
        assert y.shape == (n, *dims[:-1], units)
        r, tol = _flat_ref(d, x.reshape(-1, dims[-1]), ref)
        ref.close(y.reshape(-1, units), r, tol)


def _flat_ref(d, x2, ref):
    out, mag, k = ref.dense(x2, d.weight.data(), d.bias.data(), d.act,
                           flatten=False)
    e = ref.eps(np.float32)
    return out, 1.2 * 4 * e * ((k + 2) * mag + 1)


def test_dense_flatten_4d(ref):
    x = np.random.default_rng(0).standard_normal((2, 3, 4, 5))
    d = nn.Dense(6, flatten=True)
    d.initialize()
    assert ref.forward_matches(d, x).shape == (2, 6)
    assert d.weight.shape == (6, 60)
    # the same layer also takes the flattened input
    ref.forward_matches(d, x.reshape(2, 60))
    d = nn.Dense(6, flatten=False, activation="relu")
    d.initialize()
    y = d(x)
    assert y.shape == (2, 3, 4, 6) and d.weight.shape == (6, 5)
    r, tol = _flat_ref(d, x.reshape(-1, 5), ref)
    ref.close(y.reshape(-1, 6), r, tol)


def test_dense_flatten_false_then_other_leading_shape(ref):
    d = nn.Dense(3, flatten=False)
    d.initialize()
    d(np.ones((2, 4, 5)))
    y = d(np.ones((7, 5)))
    assert y.shape == (7, 3)
    y = d(np.ones((1, 2, 3, 5)))
    assert y.shape == (1, 2, 3, 3)
    with pytest.raises(fl.ShapeError):
        d(np.ones((2, 4, 6)))


def test_output_is_owned_by_caller():
    net = nn.Sequential()
    net.add(nn.Dense(5, activation="relu"), nn.Dense(3))
    net.initialize()
    rng = np.random.default_rng(0)
    x1, x2 = rng.random((4, 6)), rng.random((4, 6))
    y1 = net(x1)
    y1_copy = y1.copy()
    y2 = net(x2)
    np.testing.assert_array_equal(y1, y1_copy)     # not overwritten
    assert not np.shares_memory(y1, y2)
    # the caller holds the only reference to the output's memory: the
    # network keeps no workspace that y1 is a view of
    root = y1
    while isinstance(root.base, np.ndarray):
        root = root.base
    alive = weakref.ref(root)
    del y1, root
    gc.collect()
    assert alive() is None
    y1 = net(x1)
    y1[...] = 0                                   # writable, harmless
    np.testing.assert_array_equal(net(x2), y2)


def test_input_not_modified():
    for net in (nn.Activation("relu"), nn.Dense(3, activation="relu",
                                                in_units=3)):
        if isinstance(net, nn.Dense):
            net.initialize()
        x = np.array([[-1.0, 2.0, -3.0]], dtype=np.float32)
        keep = x.copy()
        y = net(x)
        np.testing.assert_array_equal(x, keep)
        assert not np.shares_memory(x, y)


# ---------------------------------------------------------------------------
# dtype


def test_float64_network(ref):
    net = nn.Sequential()
    net.add(nn.Dense(8, activation="gelu", dtype="float64"),
            nn.Dense(3, dtype="float64"))
    net.initialize()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    y = ref.forward_matches(net, x)
    assert y.dtype == np.float64
    assert all(p.dtype == np.float64 for p in net.collect_params().values())


def test_cast_both_ways(ref):
    net = nn.Sequential()
    net.add(nn.Dense(8, activation="silu"), nn.Dense(3))
    net.initialize()
    x = np.random.default_rng(0).standard_normal((5, 4))
    y32 = net(x)
    assert y32.dtype == np.float32
    net.cast("float64")
    assert [p.dtype for p in net.collect_params().values()] == \
        [np.float64] * 4
    y64 = ref.forward_matches(net, x)
    assert y64.dtype == np.float64
    np.testing.assert_allclose(y64, y32, rtol=1e-5, atol=1e-6)
    net.cast(np.float32)
    y = ref.forward_matches(net, x)
    assert y.dtype == np.float32
    with pytest.raises(TypeError):
        net.cast("int32")
    assert net[0].weight.dtype == np.float32


def test_cast_deferred_network(ref):
    net = nn.Sequential()
    net.add(nn.Dense(4), nn.Dense(2))
    net.initialize()
    net.cast("float64")
    y = ref.forward_matches(net, np.ones((1, 3)))
    assert y.dtype == np.float64
    assert net[0].weight.data().dtype == np.float64


def test_mixed_dtypes_raise_with_remedy():
    net = nn.Sequential()
    net.add(nn.Dense(4, dtype="float64"), nn.Dense(2))
    net.initialize()
    with pytest.raises(TypeError, match="cast"):
        net(np.ones((1, 3)))


# ---------------------------------------------------------------------------
# Activation, Dropout, Flatten


@pytest.mark.parametrize("act", ACTS[1:])
def test_activation_block(act, ref):
    a = nn.Activation(act)
    assert repr(a) == f"Activation({act})"
    x = np.random.default_rng(0).standard_normal((3, 4, 5)) * 5
    for dt in (np.float32, np.float64):
        xd = x.astype(dt)
        y = a(xd)
        # a layer without parameters keeps the input's float dtype
        assert y.shape == x.shape and y.dtype == dt
        r = ref.act(act, xd)
        e = ref.eps(dt)
        ref.close(y, r, 4 * e * (np.abs(x) + 1), act)


@pytest.mark.parametrize("bad", ["foo", "Relu", "", "leaky"])
def test_unknown_activation_names(bad):
    with pytest.raises(ValueError) as exc:
        nn.Dense(3, activation=bad)
    assert repr(bad) in str(exc.value) and "relu" in str(exc.value)
    with pytest.raises(ValueError):
        nn.Activation(bad)


def test_activation_wrong_types():
    with pytest.raises(TypeError):
        nn.Dense(3, activation=5)
    with pytest.raises((TypeError, ValueError)):
        nn.Activation(None)


def test_dropout_is_identity_and_flatten(ref):
    x = np.random.default_rng(0).standard_normal((2, 3, 4))
    for rate in (0.0, 0.5, 0.99):
        y = nn.Dropout(rate)(x)
        # a layer without parameters keeps the input's float dtype
        assert y.dtype == np.float64
        np.testing.assert_array_equal(y, x)
        assert nn.Dropout(rate)(x.astype(np.float32)).dtype == np.float32
    with pytest.raises(ValueError):
        nn.Dropout(1.5)
    f = nn.Flatten()
    assert repr(f) == "Flatten"
    np.testing.assert_array_equal(f(x), x.reshape(2, 12))
    net = nn.Sequential()
    net.add(nn.Flatten(), nn.Dropout(0.3), nn.Dense(5, flatten=False,
                                                    activation="relu"),
            nn.Dropout(0.1), nn.Dense(2))
    net.initialize()
    ref.forward_matches(net, x)
    assert net[2].weight.shape == (5, 12)


def test_activation_after_dense_matches(ref):
    net = nn.Sequential()
    net.add(nn.Dense(6), nn.Activation("sigmoid"), nn.Dense(3),
            nn.Activation("relu"), nn.Activation("tanh"))
    net.initialize(init=init.Normal(1.0))
    ref.forward_matches(net, np.random.default_rng(0).standard_normal((4, 5)))


# ---------------------------------------------------------------------------
# build()


def test_build_finishes_deferred_init_without_data(ref):
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    net.initialize()
    assert net.build((None, 20)) == (None, 10)
    assert ref.shapes(net) == [(256, 20), (256,), (10, 256), (10,)]
    assert ref.states(net) == ["initialized"] * 4
    net[0].weight.set_data(np.zeros((256, 20)))
    y = net(np.ones((3, 20)))
    np.testing.assert_allclose(
        y, np.broadcast_to(net[1].bias.data(), (3, 10)))
    assert net.build((4, 20)) == (4, 10)


def test_build_errors(ref):
    net = nn.Sequential()
    net.add(nn.Dense(4), nn.Dense(2))
    with pytest.raises(fl.DeferredInitializationError):
        net.build((None, 3))          # initialize() not called
    net.initialize()
    for bad in (20, None, (), "ab", (None, -1), (None, 2.5)):
        with pytest.raises(TypeError):
            net.build(bad)
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError):
        net.build((None, 0))
    with pytest.raises(fl.ShapeError):
        net.build((None,))
    assert ref.snapshot(net) == before
    net.build((None, 3))
    with pytest.raises(fl.ShapeError):
        net.build((None, 5))


# ---------------------------------------------------------------------------
# Custom blocks


class TwoBranch(nn.Block):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.a = nn.Dense(4, activation="relu")
            self.b = nn.Dense(4)

    def forward(self, x):
        return self.a(x) + self.b(x)


def test_custom_block(ref):
    blk = TwoBranch()
    assert blk.a.prefix == blk.prefix + "dense0_"
    assert list(blk.collect_params()) == [
        blk.a.weight.name, blk.a.bias.name, blk.b.weight.name,
        blk.b.bias.name]
    blk.initialize()
    x = np.random.default_rng(0).random((3, 5))
    y = blk(x)
    ra, ta = ref.forward(blk.a, x)
    rb, tb = ref.forward(blk.b, x)
    ref.close(y, ra + rb, ta + tb)
    net = nn.Sequential()
    net.add(nn.Dense(5), TwoBranch(), nn.Dense(1))
    net.initialize()
    assert net(x).shape == (3, 1)


def test_hybridize_is_accepted():
    net = nn.HybridSequential()
    net.add(nn.Dense(2))
    net.initialize()
    net.hybridize()
    assert net(np.ones((1, 3))).shape == (1, 2)


# ---------------------------------------------------------------------------
# Compiled plans see every change


def test_plan_follows_parameter_changes(ref):
    net = nn.Sequential()
    net.add(nn.Dense(4, activation="relu"), nn.Dense(2))
    net.initialize()
    x = np.random.default_rng(0).random((3, 5))
    ref.forward_matches(net, x)
    net[1].weight.set_data(np.ones((2, 4)))          # in place
    ref.forward_matches(net, x)
    other = nn.Sequential()
    other.add(nn.Dense(4, activation="relu"), nn.Dense(2))
    other.initialize(init=init.Normal(1.0))
    other(x)
    net.share_parameters(other.collect_params())     # new Parameter objects
    np.testing.assert_array_equal(net(x), other(x))
    net.cast("float64")
    assert net(x).dtype == np.float64
    net.add(nn.Activation("sigmoid"))                # structure changed
    y = net(x)
    assert (y > 0).all() and (y < 1).all()
    ref.forward_matches(net, x)


def test_first_forward_from_threads_initializes_once():
    import threading

    calls = []

    class Slow(init.Initializer):
        def _init_weight(self, name, data):
            calls.append(str(name))
            data[...] = 0.5

    net = nn.Sequential()
    net.add(nn.Dense(8, activation="relu"), nn.Dense(3))
    net.initialize(init=Slow())
    x = np.ones((2, 4))
    outs, errors = [], []

    def run():
        try:
            outs.append(net(x))
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert sorted(calls) == sorted([net[0].weight.name, net[1].weight.name])
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])


@pytest.mark.parametrize("layers", [
    ("relu",), ("relu", "tanh"), ("sigmoid", "dropout", "softsign"),
    ("dropout",), ("flatten",), ("flatten", "gelu", "dropout", "silu")])
def test_parameter_free_networks(layers, ref):
    net = nn.Sequential()
    for name in layers:
        net.add(nn.Dropout(0.5) if name == "dropout" else
                nn.Flatten() if name == "flatten" else nn.Activation(name))
    x = np.random.default_rng(0).standard_normal((3, 2, 4)).astype(
        np.float32) * 3
    keep = x.copy()
    for _ in range(2):
        y = ref.forward_matches(net, x)
        np.testing.assert_array_equal(x, keep)
        assert not np.shares_memory(x, y)
    shape = (3, 8) if "flatten" in layers else (3, 2, 4)
    assert y.shape == shape


def test_mixed_flatten_stack(ref):
    net = nn.Sequential()
    net.add(nn.Dense(5, flatten=False, activation="relu"),
            nn.Dense(4, flatten=False), nn.Activation("tanh"),
            nn.Dense(3, flatten=True, activation="sigmoid"),
            nn.Dense(2, flatten=False))
    net.initialize(init=init.Normal(0.6))
    x = np.random.default_rng(1).standard_normal((6, 3, 7))
    y = ref.forward_matches(net, x)
    assert y.shape == (6, 2)
    assert [p.shape for p in net.collect_params().values()][::2] == [
        (5, 7), (4, 5), (3, 12), (2, 3)]


class MyDense(nn.Block):
    """The d2l custom layer: own parameters, forward in NumPy."""

    def __init__(self, units, in_units, **kwargs):
        super().__init__(**kwargs)
        self.weight = self.params.get("weight", shape=(in_units, units))
        self.bias = self.params.get("bias", shape=(units,))

    def forward(self, x):
        return np.maximum(np.dot(x, self.weight.data()) + self.bias.data(),
                          0)


def test_custom_layer_with_own_parameters(tmp_path):
    layer = MyDense(units=3, in_units=5)
    assert list(layer.params) == [layer.prefix + "weight",
                                  layer.prefix + "bias"]
    assert repr(layer.params).startswith(layer.prefix + " (\n")
    net = nn.Sequential()
    net.add(MyDense(8, in_units=64), MyDense(1, in_units=8))
    net.initialize(init=init.Normal(0.3))
    x = np.random.default_rng(0).random((2, 64))
    y = net(x)
    h = np.maximum(x @ net[0].weight.data() + net[0].bias.data(), 0)
    # float32 values through two float32 dot products of 64 and 8 terms
    np.testing.assert_allclose(
        y, np.maximum(h @ net[1].weight.data() + net[1].bias.data(), 0),
        rtol=1e-5, atol=1e-7)
    with pytest.raises(TypeError):
        net.build((None, 64))      # only built-in layers infer from shapes
    path = str(tmp_path / "custom.params")
    net.save_parameters(path)
    with np.load(path) as f:
        assert f.files == ["0.weight", "0.bias", "1.weight", "1.bias"]
    other = nn.Sequential()
    other.add(MyDense(8, in_units=64), MyDense(1, in_units=8))
    other.load_parameters(path)
    np.testing.assert_array_equal(other(x), y)


def test_concurrent_forward_on_one_network():
    """Threads share the compiled plan; each gets its own correct result
    (the plan's scratch memory is never shared by two running calls)."""
    import threading

    net = nn.Sequential()
    net.add(nn.Dense(64, activation="relu"), nn.Dense(32,
                                                      activation="tanh"),
            nn.Dense(4))
    net.initialize(init=init.Xavier())
    rng = np.random.default_rng(0)
    inputs = [rng.standard_normal((n, 16)) for n in (1, 7, 100, 300, 33,
                                                     250)]
    expected = [net(x) for x in inputs]
    failures = []

    def run(i):
        for _ in range(30):
            j = (i + _) % len(inputs)
            if not np.allclose(net(inputs[j]), expected[j], rtol=1e-6,
                               atol=1e-7):
                failures.append(j)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
