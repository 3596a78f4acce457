"""Parameter: states, data/set_data, refine-only shape, initialize twice;
ParameterDict: mapping protocol, select, initialize, repr."""

import warnings

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import init, nn


# ---------------------------------------------------------------------------
# States


def test_states_of_a_parameter():
    p = fl.Parameter("w", shape=(3, -1))
    assert p.state == "unset" and not p.is_initialized
    assert p.name == "w" and p.shape == (3, -1)
    assert p.dtype == np.float32 and isinstance(p.dtype, np.dtype)
    assert p.init is None
    p.initialize()
    assert p.state == "deferred"
    p.shape = (3, 4)
    assert p.state == "deferred"        # the shape alone does not allocate
    p._finish_deferred_init()
    assert p.state == "initialized"
    assert p.data().shape == (3, 4)


def test_complete_shape_initializes_at_once():
    p = fl.Parameter("w", shape=(2, 3), init=init.One())
    p.initialize()
    assert p.state == "initialized"
    np.testing.assert_array_equal(p.data(), np.ones((2, 3)))


def test_zero_means_unknown():
    assert fl.Parameter("w", shape=(3, 0)).shape == (3, -1)
    assert fl.Parameter("w", shape=4).shape == (4,)
    assert fl.Parameter("w").shape is None


@pytest.mark.parametrize("bad", [(3, -2), (2.5, 3), ("a",), (True, 2)])
def test_bad_shapes_rejected(bad):
    with pytest.raises((TypeError, ValueError)):
        fl.Parameter("w", shape=bad)


def test_bad_dtype_and_name():
    with pytest.raises(TypeError):
        fl.Parameter("w", shape=(2,), dtype="int32")
    with pytest.raises(TypeError):
        fl.Parameter("", shape=(2,))
    assert fl.Parameter("w", dtype="float64").dtype == np.float64


def test_repr():
    assert repr(fl.Parameter("dense0_weight", shape=(256, -1))) == \
        "Parameter dense0_weight (shape=(256, -1), dtype=float32)"
    assert repr(fl.Parameter("b", shape=(3,), dtype="float64")) == \
        "Parameter b (shape=(3,), dtype=float64)"
    assert repr(fl.Parameter("b")) == "Parameter b (shape=None, dtype=float32)"


# ---------------------------------------------------------------------------
# data()


@pytest.mark.parametrize("state", ["unset", "deferred"])
def test_data_before_init_raises_with_remedy(state):
    d = nn.Dense(4)
    if state == "deferred":
        d.initialize()
    with pytest.raises(fl.DeferredInitializationError) as exc:
        d.weight.data()
    assert isinstance(exc.value, RuntimeError)
    assert isinstance(exc.value, fl.FastLazyError)
    msg = str(exc.value)
    assert d.weight.name in msg
    assert "in_units" in msg
    if state == "deferred":
        assert "forward" in msg and "deferred" in msg
    else:
        assert "initialize()" in msg


def test_data_is_a_writable_view(ref):
    d = nn.Dense(3, in_units=4)
    d.initialize()
    w = d.weight.data()
    assert w.shape == (3, 4) and w.flags.writeable
    w[...] = np.arange(12).reshape(3, 4)
    np.testing.assert_array_equal(d.weight.data(),
                                  np.arange(12).reshape(3, 4))
    x = np.random.default_rng(0).random((2, 4))
    ref.forward_matches(d, x)
    d.bias.data()[...] = [1, 2, 3]     # written after the plan exists
    y = ref.forward_matches(d, x)
    np.testing.assert_allclose(y, x @ np.arange(12).reshape(3, 4).T +
                               [1, 2, 3], rtol=1e-6)


# ---------------------------------------------------------------------------
# set_data


def test_set_data_fills_unknown_dimension():
    p = fl.Parameter("w", shape=(3, -1))
    p.set_data(np.arange(12.0).reshape(3, 4))
    assert p.shape == (3, 4) and p.state == "initialized"
    assert p.data().dtype == np.float32
    np.testing.assert_array_equal(p.data(), np.arange(12.0).reshape(3, 4))


@pytest.mark.parametrize("state", ["unset", "deferred"])
def test_set_data_on_dense_weight_before_init(state, ref):
    net = nn.Sequential()
    net.add(nn.Dense(3), nn.Dense(2))
    if state == "deferred":
        net.initialize()
    w = np.arange(15.0).reshape(3, 5) / 10
    net[0].weight.set_data(w)
    assert net[0].weight.state == "initialized"
    assert net[0].weight.shape == (3, 5)
    np.testing.assert_array_equal(net[0].weight.data(), w.astype(np.float32))
    assert repr(net[0]).startswith("Dense(5 -> 3")
    if state == "unset":
        # the others are still to be initialized; the set one is kept
        with pytest.warns(UserWarning, match=net[0].weight.name):
            net.initialize()
    x = np.random.default_rng(0).random((2, 5))
    ref.forward_matches(net, x)
    np.testing.assert_array_equal(net[0].weight.data(), w.astype(np.float32))


@pytest.mark.parametrize("bad", [(3, 5), (4, 4), (3,), (3, 4, 1), (12,)])
def test_set_data_wrong_shape_changes_nothing(bad):
    p = fl.Parameter("w", shape=(3, 4), init=init.Constant(7))
    p.initialize()
    with pytest.raises(fl.ShapeError) as exc:
        p.set_data(np.zeros(bad))
    msg = str(exc.value)
    assert "'w'" in msg and "(3, 4)" in msg and str(bad) in msg
    assert p.shape == (3, 4) and p.state == "initialized"
    np.testing.assert_array_equal(p.data(), np.full((3, 4), 7))


@pytest.mark.parametrize("state", ["unset", "deferred"])
def test_set_data_wrong_shape_before_init_changes_nothing(state):
    p = fl.Parameter("w", shape=(3, -1))
    if state == "deferred":
        p.initialize()
    with pytest.raises(fl.ShapeError):
        p.set_data(np.zeros((4, 2)))
    with pytest.raises(fl.ShapeError):
        p.set_data(np.zeros((3, 0)))
    with pytest.raises(TypeError):
        p.set_data([["a", "b"]] * 3)
    assert p.shape == (3, -1) and p.state == state


def test_set_data_converts_and_copies():
    p = fl.Parameter("w", shape=(2, 2))
    src = np.array([[1, 2], [3, 4]], dtype=np.int64)
    p.set_data(src)
    src[0, 0] = 100                       # copied in, not aliased
    np.testing.assert_array_equal(p.data(), [[1, 2], [3, 4]])
    assert p.data().dtype == np.float32
    p.set_data([[0.5, 1.5], [2.5, 3.5]])  # lists accepted
    assert p.data()[1, 1] == 3.5


def test_set_data_keeps_storage():
    d = nn.Dense(3, in_units=2)
    d.initialize()
    st_before = d.weight._storage_array()
    d.weight.set_data(np.ones((3, 2)))
    assert d.weight._storage_array() is st_before


# ---------------------------------------------------------------------------
# Shape: refine only


def test_shape_refine_only():
    p = fl.Parameter("w", shape=(3, -1))
    p.shape = (3, -1)            # nothing new
    p.shape = (-1, 5)            # fills the -1; 3 stays
    assert p.shape == (3, 5)
    p.shape = (3, 5)
    with pytest.raises(fl.ShapeError) as exc:
        p.shape = (3, 6)
    assert "'w'" in str(exc.value)
    with pytest.raises(fl.ShapeError):
        p.shape = (3, 5, 1)
    with pytest.raises(fl.ShapeError):
        p.shape = None
    assert p.shape == (3, 5)


def test_shape_set_from_none():
    p = fl.Parameter("w")
    p.shape = (2, -1)
    assert p.shape == (2, -1)
    p.shape = (2, 3)
    assert p.shape == (2, 3)


@given(st.lists(st.integers(1, 6), min_size=1, max_size=4), st.data())
def test_shape_merge_property(dims, data):
    """Any mask of unknowns can be completed to the full shape, and any
    change of a known dimension is refused."""
    mask = data.draw(st.lists(st.booleans(), min_size=len(dims),
                              max_size=len(dims)))
    partial = tuple(-1 if m else d for d, m in zip(dims, mask))
    p = fl.Parameter("w", shape=partial)
    p.shape = tuple(dims)
    assert p.shape == tuple(dims)
    i = data.draw(st.integers(0, len(dims) - 1))
    changed = list(dims)
    changed[i] += 1
    with pytest.raises(fl.ShapeError):
        p.shape = tuple(changed)
    assert p.shape == tuple(dims)


def test_shape_of_initialized_dense_cannot_change():
    d = nn.Dense(3)
    d.initialize()
    d(np.ones((1, 4)))
    with pytest.raises(fl.ShapeError):
        d.weight.shape = (3, 5)
    assert d.weight.shape == (3, 4)


# ---------------------------------------------------------------------------
# initialize twice


def test_initialize_twice_warns_and_keeps_values():
    net = nn.Sequential()
    net.add(nn.Dense(4, in_units=3), nn.Dense(2, in_units=4))
    net.initialize()
    before = {k: p.data().copy() for k, p in net.collect_params().items()}
    with pytest.warns(UserWarning, match="already initialized"):
        net.initialize()
    with pytest.warns(UserWarning, match="force_reinit"):
        net.initialize(init=init.One())
    for k, p in net.collect_params().items():
        np.testing.assert_array_equal(p.data(), before[k])


def test_initialize_twice_on_parameter_warns():
    p = fl.Parameter("w", shape=(2,), init=init.Constant(3))
    p.initialize()
    with pytest.warns(UserWarning):
        p.initialize(init=init.One())
    np.testing.assert_array_equal(p.data(), [3, 3])


def test_force_reinit_reruns():
    p = fl.Parameter("w", shape=(2, 2))
    p.initialize(default_init=init.Constant(1))
    storage = p.data()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.initialize(default_init=init.Constant(2), force_reinit=True)
    np.testing.assert_array_equal(p.data(), np.full((2, 2), 2))
    assert np.shares_memory(storage, p.data())      # storage allocated once


def test_deferred_initialize_again_no_warning_for_weights():
    """A weight that waits for its shape records the latest initializer;
    no warning (it is not initialized yet)."""
    p = fl.Parameter("w", shape=(2, -1))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        p.initialize(default_init=init.Constant(1))
        p.initialize(default_init=init.Constant(5))
    p.shape = (2, 2)
    p._finish_deferred_init()
    np.testing.assert_array_equal(p.data(), np.full((2, 2), 5))


def test_initializer_precedence():
    # own init wins over the one given to initialize(), which wins over
    # Uniform; biases default to zeros
    d = nn.Dense(3, in_units=2, weight_initializer=init.Constant(4))
    d.initialize(init=init.Constant(9))
    np.testing.assert_array_equal(d.weight.data(), np.full((3, 2), 4))
    np.testing.assert_array_equal(d.bias.data(), np.zeros(3))
    d = nn.Dense(3, in_units=2, bias_initializer='ones')
    d.initialize(init=init.Constant(9))
    np.testing.assert_array_equal(d.weight.data(), np.full((3, 2), 9))
    np.testing.assert_array_equal(d.bias.data(), np.ones(3))
    d = nn.Dense(300, in_units=20)
    d.initialize()
    w = d.weight.data()
    assert np.all(np.abs(w) <= 0.07) and w.std() > 0.03   # Uniform(0.07)


def test_disallowed_deferred_init():
    p = fl.Parameter("w", shape=(2, -1), allow_deferred_init=False)
    with pytest.raises(fl.DeferredInitializationError):
        p.initialize()
    assert p.state == "unset"


# ---------------------------------------------------------------------------
# ParameterDict


def _net():
    net = nn.Sequential()
    net.add(nn.Dense(4, activation='relu'), nn.Dense(2))
    return net


def test_parameterdict_mapping_protocol():
    net = _net()
    pd = net.collect_params()
    assert isinstance(pd, fl.ParameterDict)
    names = [net[0].weight.name, net[0].bias.name, net[1].weight.name,
             net[1].bias.name]
    assert list(pd) == names
    assert list(pd.keys()) == names
    assert list(pd.values()) == [net[0].weight, net[0].bias, net[1].weight,
                                 net[1].bias]
    assert [(k, v) for k, v in pd.items()] == list(zip(names, pd.values()))
    assert len(pd) == 4
    assert pd[names[2]] is net[1].weight
    assert names[0] in pd and "nope" not in pd
    with pytest.raises(KeyError) as exc:
        pd["nope"]
    assert "nope" in str(exc.value)


def test_collect_params_select():
    net = _net()
    w = net.collect_params('.*weight')
    assert list(w.values()) == [net[0].weight, net[1].weight]
    b = net.collect_params(net[1].prefix + '.*')
    assert list(b.values()) == [net[1].weight, net[1].bias]
    assert len(net.collect_params('nothing_matches')) == 0
    # regex, matched from the start like re.match
    assert len(net.collect_params('weight')) == 0
    assert len(net.collect_params('.*(weight|bias)$')) == 4


def test_parameterdict_initialize():
    net = _net()
    pd = net.collect_params('.*weight')
    pd.initialize(init=init.Constant(2))
    assert [p.state for p in pd.values()] == ["deferred", "deferred"]
    assert net[0].bias.state == "unset"
    net.collect_params('.*bias').initialize()
    net(np.ones((1, 3)))
    np.testing.assert_array_equal(net[0].weight.data(), np.full((4, 3), 2))
    with pytest.warns(UserWarning):
        pd.initialize()
    pd.initialize(init=init.Constant(3), force_reinit=True)
    np.testing.assert_array_equal(net[1].weight.data(), np.full((2, 4), 3))


def test_parameterdict_repr_format():
    net = nn.Sequential(prefix="mynet_")
    with net.name_scope():
        net.add(nn.Dense(256, activation='relu'), nn.Dense(10))
    assert repr(net.collect_params()) == (
        "mynet_ (\n"
        "  Parameter mynet_dense0_weight (shape=(256, -1), dtype=float32)\n"
        "  Parameter mynet_dense0_bias (shape=(256,), dtype=float32)\n"
        "  Parameter mynet_dense1_weight (shape=(10, -1), dtype=float32)\n"
        "  Parameter mynet_dense1_bias (shape=(10,), dtype=float32)\n"
        ")")


def test_parameterdict_get_and_standalone():
    pd = fl.ParameterDict("blk_")
    p = pd.get("w", shape=(2, -1))
    assert p.name == "blk_w" and pd.get("w") is p
    pd.get("w", shape=(2, 3))       # completes the shape
    assert p.shape == (2, 3)
    with pytest.raises(fl.ShapeError):
        pd.get("w", shape=(4, 3))
    assert repr(pd) == ("blk_ (\n  Parameter blk_w (shape=(2, 3), "
                        "dtype=float32)\n)")


def test_distinct_parameters_with_one_name_are_refused():
    """Two layers with the same prefix have different Parameters with the
    same name: collect_params (and so initialize/forward) says so instead
    of silently leaving one out."""
    net = nn.Sequential()
    net.add(nn.Dense(3, prefix="fc_"), nn.Dense(3, prefix="fc_"))
    for call in (net.collect_params, net.initialize,
                 lambda: net(np.ones((1, 3)))):
        with pytest.raises(ValueError) as exc:
            call()
        msg = str(exc.value)
        assert "fc_weight" in msg and "'0.weight'" in msg \
            and "'1.weight'" in msg and "prefix" in msg
    # sharing the very same Parameter under one name is fine
    a = nn.Dense(3, prefix="fc_")
    net = nn.Sequential()
    net.add(a, nn.Dense(3, prefix="fc_", params=a.collect_params()))
    assert len(net.collect_params()) == 2
    net.initialize()
    assert net(np.ones((1, 3))).shape == (1, 3)


def test_force_reinit_seen_by_compiled_forward(ref):
    net = nn.Sequential()
    net.add(nn.Dense(4, activation="relu"), nn.Dense(2))
    net.initialize()
    x = np.ones((2, 3))
    net(x)
    net.initialize(init=init.Constant(0.5), force_reinit=True)
    y = ref.forward_matches(net, x)
    np.testing.assert_array_equal(y, np.full((2, 2), 3.0))


def test_initialize_positional_order_follows_the_contract():
    """Parameter.initialize takes (init, default_init, force_reinit) by
    position; ctx (Gluon's second argument) is accepted by keyword and
    ignored: fastlazy runs on the CPU."""
    p = fl.Parameter("w_weight", shape=(2, 3))
    p.initialize(None, init.One())
    np.testing.assert_array_equal(p.data(), np.ones((2, 3), np.float32))
    p.initialize(init.Zero(), None, True)
    np.testing.assert_array_equal(p.data(), np.zeros((2, 3), np.float32))
    p.initialize(init.One(), force_reinit=True, ctx="cpu")
    np.testing.assert_array_equal(p.data(), np.ones((2, 3), np.float32))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("shape", [(1, 1), (1, 9), (9, 1), (7, 300),
                                   (300, 7), (64, 64)])
def test_set_data_into_transposed_storage(dtype, shape):
    """A Dense weight is stored (in, units): set_data transposes into it
    (a blocked copy for C-contiguous arrays of its dtype, NumPy's for any
    other layout or dtype), before and after the storage exists, and from
    views of its own values."""
    rng = np.random.default_rng(0)
    a = rng.standard_normal(shape).astype(dtype)
    for before in (True, False):
        p = fl.Parameter("w", shape=shape, dtype=dtype,
                         _storage_transposed=True)
        if not before:
            p.initialize(init.Zero())
        for src in (a, np.asfortranarray(a), a.astype(np.float16),
                    a[::-1], a.astype(">f8")):
            p.set_data(src)
            np.testing.assert_array_equal(
                p.data(), np.asarray(src).astype(dtype))
        # from its own values: the logical view, and a reversed copy
        p.set_data(a)
        p.set_data(p.data())
        np.testing.assert_array_equal(p.data(), a)
        p.set_data(p.data()[::-1].copy())
        np.testing.assert_array_equal(p.data(), a[::-1])
        storage = p.data().T                 # (in, units), C-contiguous
        if shape[0] == shape[1]:
            p.set_data(storage)              # shares memory: NumPy's copy
            np.testing.assert_array_equal(p.data(), a[::-1].T)
