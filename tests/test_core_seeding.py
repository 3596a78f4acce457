"""The seeding rule: after fl.random.seed(n), a parameter's values depend on
n, on which initialize() call since the seed decided them, and on its
structural place -- never on when the deferred initialization runs."""

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn


def mlp(in_units=0):
    net = nn.Sequential()
    net.add(nn.Dense(16, activation="relu", in_units=in_units),
            nn.Dense(4, in_units=16 if in_units else 0))
    return net


def values(net):
    return [p.data().copy() for p in net.collect_params().values()]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x, y)
                                    for x, y in zip(a, b))


def weights_differ(a, b):
    # biases are zeros in both: compare the weights
    return not np.array_equal(a[0], b[0]) and not np.array_equal(a[2], b[2])


X = np.ones((2, 5))


def test_ensemble_after_one_seed_differs_and_reproduces():
    fl.random.seed(0)
    nets = [mlp() for _ in range(3)]
    for net in nets:
        net.initialize(init=init.Xavier())
    for net in nets:
        net(X)
    first = [values(n) for n in nets]
    assert weights_differ(first[0], first[1])
    assert weights_differ(first[1], first[2])
    assert weights_differ(first[0], first[2])
    fl.random.seed(0)
    again = [mlp() for _ in range(3)]
    for net in again:
        net.initialize(init=init.Xavier())
    for net in reversed(again):       # deferred init in another order
        net(X)
    for a, b in zip(first, (values(n) for n in again)):
        assert same(a, b)


def test_standalone_layers_differ():
    fl.random.seed(0)
    a = nn.Dense(64, in_units=32)
    b = nn.Dense(64, in_units=32)
    a.initialize()
    b.initialize()
    assert not np.array_equal(a.weight.data(), b.weight.data())


def test_force_reinit_draws_new_values_reproducibly():
    fl.random.seed(3)
    net = mlp(5)
    net.initialize()
    before = values(net)
    net.initialize(force_reinit=True)
    after = values(net)
    assert weights_differ(before, after)
    fl.random.seed(3)
    twin = mlp(5)
    twin.initialize()
    assert same(values(twin), before)
    twin.initialize(force_reinit=True)
    assert same(values(twin), after)


def test_deferred_equals_in_units_with_one_seed_and_one_call():
    fl.random.seed(11)
    lazy = mlp()
    lazy.initialize(init=init.Xavier())
    fl.random.seed(11)
    eager = mlp(5)
    eager.initialize(init=init.Xavier())
    # other initializations between the call and the first forward do not
    # move the lazy net's values: they were decided by its call
    nn.Dense(3, in_units=2).initialize()
    lazy(X)
    assert same(values(lazy), values(eager))


@pytest.mark.parametrize("how", ["block", "collect_params", "parameter"])
def test_each_kind_of_initialize_is_one_call(how):
    def run():
        fl.random.seed(5)
        first = nn.Dense(8, in_units=3)
        second = nn.Dense(8, in_units=3)
        for layer in (first, second):
            if how == "block":
                layer.initialize()
            elif how == "collect_params":
                layer.collect_params().initialize()
            else:
                layer.weight.initialize()
                layer.bias.initialize()
        return first.weight.data().copy(), second.weight.data().copy()

    a1, b1 = run()
    a2, b2 = run()
    assert np.array_equal(a1, a2) and np.array_equal(b1, b2)
    assert not np.array_equal(a1, b1)


def test_parameter_initialize_counts_as_a_call():
    fl.random.seed(9)
    p = fl.Parameter("w", shape=(4, 4), init=init.Normal(1.0))
    p.initialize()
    v1 = p.data().copy()
    p.initialize(force_reinit=True)
    assert not np.array_equal(v1, p.data())
    fl.random.seed(9)
    q = fl.Parameter("w", shape=(4, 4), init=init.Normal(1.0))
    q.initialize()
    assert np.array_equal(q.data(), v1)


def test_seed_restarts_the_count():
    fl.random.seed(21)
    a = mlp(5)
    a.initialize()
    mlp(5).initialize()
    fl.random.seed(21)
    b = mlp(5)
    b.initialize()
    assert same(values(a), values(b))


def test_without_a_seed_every_draw_is_fresh():
    fl.random.seed(1)                 # a seed set earlier in the process...
    fl.random._seed = None            # ...and none now, as at start-up
    try:
        a, b = mlp(5), mlp(5)
        a.initialize()
        b.initialize()
        assert weights_differ(values(a), values(b))
        v = values(a)
        a.initialize(force_reinit=True)
        assert weights_differ(v, values(a))
    finally:
        fl.random.seed(0)


def test_structural_place_not_name_decides():
    fl.random.seed(4)
    a = mlp(5)
    a.initialize()
    fl.random.seed(4)
    for _ in range(7):                # other blocks shift the name counters
        nn.Dense(2)
    b = mlp(5)
    b.initialize()
    assert a[0].weight.name != b[0].weight.name
    assert same(values(a), values(b))
