"""Initializers and fl.random.seed: distributions, scaling by fan, strings,
custom subclasses, reproducibility, lazy == eager under one seed."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import init, nn


def filled(initializer, shape=(300, 400), name="fc_weight", dtype="float32",
           transposed=True):
    """A Dense-like weight (transposed storage) filled by ``initializer``."""
    p = fl.Parameter(name, shape=shape, dtype=dtype, init=initializer,
                     _storage_transposed=transposed and len(shape) == 2)
    p.initialize()
    return p.data()


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("scale", [0.07, 1.0, 3.5])
def test_uniform(scale, dtype):
    w = filled(init.Uniform(scale), dtype=dtype)
    assert w.dtype == np.dtype(dtype)
    assert np.all(w >= -scale) and np.all(w <= scale)
    assert abs(w.mean()) < 0.02 * scale
    assert w.std() == pytest.approx(scale / math.sqrt(3), rel=0.02)
    assert w.min() < -0.99 * scale and w.max() > 0.99 * scale
    assert len(np.unique(w)) > 0.9 * w.size


def test_uniform_default_scale():
    assert init.Uniform().scale == 0.07
    assert init.Normal().sigma == 0.01


@pytest.mark.parametrize("sigma", [0.01, 1.0, 2.5])
def test_normal(sigma):
    w = filled(init.Normal(sigma))
    assert abs(w.mean()) < 0.02 * sigma
    assert w.std() == pytest.approx(sigma, rel=0.02)
    # Gaussian tails: about 4.55% beyond 2 sigma
    assert np.mean(np.abs(w) > 2 * sigma) == pytest.approx(0.0455, abs=0.005)


@pytest.mark.parametrize("value", [0.0, 1.0, -2.5, 7])
def test_constant(value):
    np.testing.assert_array_equal(filled(init.Constant(value), (3, 4)),
                                  np.full((3, 4), value))


def test_constant_broadcasts_array():
    w = filled(init.Constant(np.arange(4.0)), (3, 4))
    np.testing.assert_array_equal(w, np.tile(np.arange(4.0), (3, 1)))


def test_equality_and_hash_by_value():
    assert init.Uniform(0.5) == init.Uniform(0.5)
    assert hash(init.Uniform(0.5)) == hash(init.Uniform(0.5))
    assert init.Uniform(0.5) != init.Uniform(0.6)
    assert init.Uniform(0.5) != init.Normal(0.5)
    assert init.Zero() == init.Zero() and init.Zero() != init.Constant(0.0)
    assert len({init.Xavier(), init.Xavier(), init.Xavier("gaussian")}) == 2


def test_constant_of_an_array_compares_and_hashes():
    a = init.Constant(np.array([1.0, 2.0]))
    same = init.Constant(np.array([1.0, 2.0]))
    assert a == same and not a != same
    assert hash(a) == hash(same)
    assert len({a, same}) == 1
    others = [init.Constant(np.array([1.0, 3.0])),              # values
              init.Constant(np.array([[1.0, 2.0]])),            # shape
              init.Constant(np.array([1.0, 2.0], np.float32)),  # dtype
              init.Constant(1.0)]                               # a scalar
    for other in others:
        assert a != other and other != a
    assert len({a, *others}) == 5
    nan = init.Constant(np.array([np.nan]))
    assert nan == init.Constant(np.array([np.nan]))   # a set can find it
    assert nan in {init.Constant(np.array([np.nan]))}


def test_initializer_with_unhashable_attribute_hashes():
    class Table(init.Initializer):
        def __init__(self, values):
            self.values = list(values)

        def _init_weight(self, name, data):
            data[...] = np.resize(self.values, data.shape)

    assert hash(Table([1, 2])) == hash(Table([3]))    # by type only
    assert Table([1, 2]) == Table([1, 2]) and Table([1, 2]) != Table([3])
    assert len({Table([1, 2]), Table([1, 2]), Table([3])}) == 2


def test_zero_one_and_strings():
    np.testing.assert_array_equal(filled(init.Zero(), (2, 3)), 0)
    np.testing.assert_array_equal(filled(init.One(), (2, 3)), 1)
    np.testing.assert_array_equal(filled("zeros", (2, 3)), 0)
    np.testing.assert_array_equal(filled("ones", (2, 3)), 1)
    d = nn.Dense(3, in_units=2, weight_initializer="ones",
                 bias_initializer="zeros")
    d.initialize()
    np.testing.assert_array_equal(d.weight.data(), 1)
    net = nn.Sequential()
    net.add(nn.Dense(3, in_units=2))
    net.initialize(init="ones")
    np.testing.assert_array_equal(net[0].weight.data(), 1)
    with pytest.raises(ValueError, match="unknown initializer"):
        init.create("fancy")
    with pytest.raises(TypeError):
        init.create(3.0)


@pytest.mark.parametrize("rnd_type", ["uniform", "gaussian"])
@pytest.mark.parametrize("factor_type", ["avg", "in", "out"])
@pytest.mark.parametrize("magnitude", [3, 2.34])
def test_xavier_scale_by_fan(rnd_type, factor_type, magnitude):
    units, fan_in = 200, 500
    w = filled(init.Xavier(rnd_type, factor_type, magnitude), (units, fan_in))
    factor = {"avg": (fan_in + units) / 2, "in": fan_in,
              "out": units}[factor_type]
    scale = math.sqrt(magnitude / factor)
    if rnd_type == "uniform":
        assert np.all(np.abs(w) <= scale * (1 + 1e-6))
        assert w.std() == pytest.approx(scale / math.sqrt(3), rel=0.02)
    else:
        assert w.std() == pytest.approx(scale, rel=0.02)
    assert abs(w.mean()) < 0.02 * scale


def test_xavier_uses_logical_shape_of_transposed_weight():
    """Dense stores (in, out); fans must come from (units, in_units)."""
    d = nn.Dense(10, in_units=1000, weight_initializer=init.Xavier(
        factor_type="in", magnitude=3))
    d.initialize()
    assert np.abs(d.weight.data()).max() <= math.sqrt(3 / 1000) * (1 + 1e-6)
    assert np.abs(d.weight.data()).max() > 0.9 * math.sqrt(3 / 1000)


@pytest.mark.parametrize("factor_type", ["avg", "in", "out"])
@pytest.mark.parametrize("slope", [0.0, 0.25])
def test_msraprelu(factor_type, slope):
    units, fan_in = 250, 400
    w = filled(init.MSRAPrelu(factor_type, slope), (units, fan_in))
    factor = {"avg": (fan_in + units) / 2, "in": fan_in,
              "out": units}[factor_type]
    sigma = math.sqrt(2.0 / (1 + slope ** 2) / factor)
    assert w.std() == pytest.approx(sigma, rel=0.02)


def test_xavier_bad_arguments_and_1d():
    with pytest.raises(ValueError):
        init.Xavier(rnd_type="bogus")
    with pytest.raises(ValueError):
        init.Xavier(factor_type="bogus")
    p = fl.Parameter("v_weight", shape=(5,), init=init.Xavier())
    with pytest.raises(ValueError, match="v_weight"):
        p.initialize()
    assert p.state == "unset"


@pytest.mark.parametrize("name", ["uniform", "normal"])
def test_random_bias_initializer_is_used(name):
    """bias_initializer='normal' gives a random bias (Gluon fills every
    parameter with the chosen initializer), not zeros."""
    d = nn.Dense(200, in_units=3, bias_initializer=name)
    d.initialize()
    b = d.bias.data()
    assert np.count_nonzero(b) == 200
    assert len(np.unique(b)) == 200


def test_bias_initializer_explicit_objects():
    d = nn.Dense(500, in_units=2, bias_initializer=init.Uniform(2.0))
    d.initialize()
    b = d.bias.data()
    assert np.all(np.abs(b) <= 2.0) and b.std() > 0.9
    d = nn.Dense(4, in_units=2, bias_initializer=init.Constant(0.5))
    d.initialize()
    np.testing.assert_array_equal(d.bias.data(), 0.5)


def test_default_biases_stay_zero_under_random_init():
    net = nn.Sequential()
    net.add(nn.Dense(5), nn.Dense(3))
    net.initialize(init=init.Normal(1.0))
    net(np.ones((1, 4)))
    assert not net[0].bias.data().any() and not net[1].bias.data().any()
    assert net[0].weight.data().std() > 0.3


def test_custom_initializer_hooks():
    seen = []

    class Mine(init.Initializer):
        def _init_weight(self, name, data):
            seen.append(("w", str(name), data.shape, data.flags.writeable))
            data[...] = 3

        def _init_default(self, name, data):
            seen.append(("d", str(name), data.shape, data.flags.writeable))
            data[...] = 4

    p = fl.Parameter("scale", shape=(2,), init=Mine())
    p.initialize()
    np.testing.assert_array_equal(p.data(), [4, 4])
    d = nn.Dense(2, in_units=3, weight_initializer=Mine())
    d.initialize()
    np.testing.assert_array_equal(d.weight.data(), 3)
    assert seen == [("d", "scale", (2,), True),
                    ("w", d.weight.name, (2, 3), True)]


def test_initializer_without_weight_hook_raises():
    class Nothing(init.Initializer):
        pass

    d = nn.Dense(2, in_units=3)
    with pytest.raises(NotImplementedError, match="_init_weight"):
        d.initialize(init=Nothing())
    assert d.weight.state == "unset"


# ---------------------------------------------------------------------------
# fl.random.seed


def _mlp(in_units=(0, 0, 0)):
    net = nn.Sequential()
    net.add(nn.Dense(16, activation="relu", in_units=in_units[0]),
            nn.Dense(8, activation="tanh", in_units=in_units[1]),
            nn.Dense(3, in_units=in_units[2]))
    return net


def _weights(net):
    return [p.data().copy() for p in net.collect_params().values()]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y)
                                    for x, y in zip(a, b))


@pytest.mark.parametrize("initializer", [None, init.Normal(0.5),
                                         init.Xavier(), init.MSRAPrelu(),
                                         init.Xavier("gaussian", "in")])
def test_seed_reproducible(initializer):
    x = np.ones((2, 5))
    fl.random.seed(42)
    a = _mlp()
    a.initialize(init=initializer)
    a(x)
    fl.random.seed(42)
    b = _mlp()
    b.initialize(init=initializer)
    b(x)
    assert _same(_weights(a), _weights(b))
    fl.random.seed(43)
    c = _mlp()
    c.initialize(init=initializer)
    c(x)
    assert not np.array_equal(_weights(a)[0], _weights(c)[0])


def test_lazy_and_eager_identical_under_one_seed():
    fl.random.seed(7)
    lazy = _mlp()
    lazy.initialize(init=init.Xavier())
    fl.random.seed(7)
    eager = _mlp((5, 16, 8))
    eager.initialize(init=init.Xavier())
    lazy(np.ones((1, 5)))
    assert _same(_weights(lazy), _weights(eager))
    # and a net initialized by build() or by a later, different-batch
    # forward is the same again
    fl.random.seed(7)
    built = _mlp()
    built.initialize(init=init.Xavier())
    built.build((None, 5))
    assert _same(_weights(built), _weights(eager))


def test_seed_does_not_depend_on_creation_order():
    """Blocks created before change the counters (names), not the
    values."""
    fl.random.seed(1)
    a = _mlp()
    a.initialize()
    a(np.ones((1, 4)))
    for _ in range(5):
        nn.Dense(3)
    fl.random.seed(1)
    b = _mlp()
    b.initialize()
    b(np.ones((1, 4)))
    assert a[0].weight.name != b[0].weight.name
    assert _same(_weights(a), _weights(b))


def test_seed_layers_get_different_streams():
    fl.random.seed(0)
    net = nn.Sequential()
    net.add(nn.Dense(4, in_units=4), nn.Dense(4, in_units=4))
    net.initialize()
    assert not np.array_equal(net[0].weight.data(), net[1].weight.data())


def test_unseeded_networks_differ():
    a, b = _mlp((5, 16, 8)), _mlp((5, 16, 8))
    a.initialize()
    b.initialize()
    assert not np.array_equal(a[0].weight.data(), b[0].weight.data())


def test_seed_argument_checks():
    for bad in (1.5, "3", None, True):
        with pytest.raises(TypeError):
            fl.random.seed(bad)
    with pytest.raises(ValueError):
        fl.random.seed(-1)
    fl.random.seed(np.int64(5))
    fl.random.seed(2 ** 70)



@given(widths=st.lists(st.integers(1, 12), min_size=1, max_size=4),
       k=st.integers(1, 12), seed=st.integers(0, 2 ** 63),
       which=st.sampled_from(["uniform", "normal", "xavier", "msraprelu"]))
def test_lazy_equals_eager_property(widths, k, seed, which):
    def build(eager):
        net = nn.Sequential()
        prev = k
        for w in widths:
            net.add(nn.Dense(w, activation="relu",
                             in_units=prev if eager else 0))
            prev = w
        return net

    fl.random.seed(seed)
    lazy = build(False)
    lazy.initialize(init=which)
    fl.random.seed(seed)
    eager = build(True)
    eager.initialize(init=which)
    lazy(np.ones((1, k)))
    assert _same(_weights(lazy), _weights(eager))
