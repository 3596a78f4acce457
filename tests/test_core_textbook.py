"""The textbook exercises on deferred initialization (d2l, "Lazy
Initialization"): in_units on the first layer only, mismatching sizes,
parameter tying."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import init, nn


class Recorder(init.Initializer):
    """Counts initializer calls and fills with a recognisable value."""

    def __init__(self, value=0.25):
        self.value = value
        self.calls = []

    def _init_weight(self, name, data):
        self.calls.append((str(name), data.shape))
        data[...] = self.value


# ---------------------------------------------------------------------------
# in_units on the first layer only


def test_in_units_on_first_layer_only(ref):
    rec = Recorder()
    net = nn.Sequential()
    net.add(nn.Dense(16, in_units=5, activation='relu'),
            nn.Dense(8, activation='tanh'), nn.Dense(3))
    net.initialize(init=rec)
    # the first layer initializes at initialize(), the rest wait
    assert rec.calls == [(net[0].weight.name, (16, 5))]
    assert ref.states(net) == ["initialized", "initialized", "deferred",
                               "initialized", "deferred", "initialized"]
    assert net[0].weight.data().shape == (16, 5)
    with pytest.raises(fl.DeferredInitializationError):
        net[1].weight.data()
    x = np.random.default_rng(0).standard_normal((4, 5))
    ref.forward_matches(net, x)
    assert rec.calls[1:] == [(net[1].weight.name, (8, 16)),
                             (net[2].weight.name, (3, 8))]
    assert ref.shapes(net) == [(16, 5), (16,), (8, 16), (8,), (3, 8), (3,)]
    net(x)
    assert len(rec.calls) == 3


# ---------------------------------------------------------------------------
# Mismatching sizes


def _seeded_values(net):
    rng = np.random.default_rng(7)
    for p in net.collect_params().values():
        if p.state == "initialized":
            p.set_data(rng.standard_normal(p.shape))


def test_input_vs_in_units_mismatch(ref):
    net = nn.Sequential()
    net.add(nn.Dense(6, in_units=4, activation='relu'), nn.Dense(2))
    net.initialize()
    _seeded_values(net)
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones((3, 7)))
    msg = str(exc.value)
    assert net[0].name in msg and "4" in msg and "7" in msg
    assert isinstance(exc.value, ValueError)
    assert ref.snapshot(net) == before
    # still usable with a correct input
    ref.forward_matches(net, np.random.default_rng(1).random((3, 4)))


def test_between_layers_mismatch_leaves_net_unchanged(ref):
    """A later layer declares in_units=5 but the layer before produces 8:
    the first (deferred) layer must not be left half-initialized."""
    rec = Recorder()
    net = nn.Sequential()
    net.add(nn.Dense(8, activation='relu'), nn.Dense(4, in_units=5),
            nn.Dense(2))
    net.initialize(init=rec)
    assert rec.calls == [(net[1].weight.name, (4, 5))]
    _seeded_values(net)
    before = ref.snapshot(net)
    repr_before = repr(net), repr(net.collect_params())
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones((2, 3)))
    msg = str(exc.value)
    assert net[1].name in msg and "5" in msg and "8" in msg
    assert net[0].name not in msg.replace(net[1].name, "")
    assert ref.snapshot(net) == before
    assert (repr(net), repr(net.collect_params())) == repr_before
    assert net[0].weight.state == "deferred"
    assert net[0].weight.shape == (8, -1)
    assert len(rec.calls) == 1
    # the same error again: nothing was left behind by the first failure
    with pytest.raises(fl.ShapeError):
        net(np.ones((2, 3)))
    assert ref.snapshot(net) == before


def test_first_forward_failure_in_initializer_rolls_back(ref):
    """An initializer that raises on the second layer: the first layer,
    already initialized in the transaction, is rolled back."""

    class Boom(init.Initializer):
        def __init__(self):
            self.calls = 0

        def _init_weight(self, name, data):
            self.calls += 1
            if self.calls == 2:
                raise RuntimeError("boom")
            data[...] = 1

    net = nn.Sequential()
    net.add(nn.Dense(4), nn.Dense(2))
    net.initialize(init=Boom())
    before = ref.snapshot(net)
    with pytest.raises(RuntimeError, match="boom"):
        net(np.ones((1, 3)))
    assert ref.snapshot(net) == before
    y = net(np.ones((1, 3)))          # calls 3 and 4 succeed
    np.testing.assert_array_equal(y, np.full((1, 2), 12, np.float32))


def test_mismatch_later_feature_size(ref):
    net = nn.Sequential()
    net.add(nn.Dense(6, activation='sigmoid'), nn.Dense(2))
    net.initialize()
    x = np.random.default_rng(0).random((3, 4))
    y = net(x)
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones((3, 5)))
    msg = str(exc.value)
    assert net[0].name in msg and "4" in msg and "5" in msg
    assert ref.snapshot(net) == before
    np.testing.assert_array_equal(net(x), y)


# ---------------------------------------------------------------------------
# Parameter tying


def _tied_net(rec):
    shared = nn.Dense(8, activation='relu')
    net = nn.Sequential()
    net.add(nn.Dense(8, activation='relu'), shared,
            nn.Dense(8, activation='relu', params=shared.collect_params()),
            nn.Dense(3))
    net.initialize(init=rec)
    return net, shared


def test_tying_with_params(ref):
    rec = Recorder()
    net, shared = _tied_net(rec)
    assert net[1].weight is net[2].weight is shared.weight
    assert net[1].bias is net[2].bias
    assert rec.calls == []
    x = np.random.default_rng(0).standard_normal((4, 5))
    ref.forward_matches(net, x)
    # three weights initialized, the shared one once
    names = [c[0] for c in rec.calls]
    assert sorted(names) == sorted({net[0].weight.name, shared.weight.name,
                                    net[3].weight.name})
    assert len(names) == 3
    # one storage: writing through one layer changes the other
    net[1].weight.data()[:] = np.eye(8, dtype=np.float32)
    np.testing.assert_array_equal(net[2].weight.data(), np.eye(8))
    assert np.shares_memory(net[1].weight.data(), net[2].weight.data())
    ref.forward_matches(net, x)
    # the ParameterDict lists the shared parameter once
    params = net.collect_params()
    assert len(params) == 6
    assert list(params.values()).count(shared.weight) == 1


def test_tying_with_share_parameters(ref):
    rec = Recorder(0.5)
    a = nn.Dense(5, activation='tanh')
    b = nn.Dense(5, activation='tanh')
    assert b.share_parameters(a.collect_params()) is b
    assert b.weight is a.weight and b.bias is a.bias
    net = nn.Sequential()
    net.add(nn.Dense(5), a, b)
    net.initialize(init=rec)
    x = np.random.default_rng(2).standard_normal((3, 7))
    ref.forward_matches(net, x)
    assert len(rec.calls) == 2
    assert a.weight.shape == (5, 5)


def test_share_parameters_whole_network(ref):
    n1 = nn.Sequential()
    n1.add(nn.Dense(4, activation='relu'), nn.Dense(2))
    n2 = nn.Sequential()
    n2.add(nn.Dense(4, activation='relu'), nn.Dense(2))
    n2.share_parameters(n1.collect_params())
    assert all(p is q for p, q in zip(n1.collect_params().values(),
                                      n2.collect_params().values()))
    n1.initialize()
    x = np.random.default_rng(0).random((3, 7))
    y1 = n1(x)
    np.testing.assert_array_equal(n2(x), y1)
    ref.forward_matches(n2, x)


def test_share_parameters_conflicting_shape_changes_nothing(ref):
    a = nn.Dense(5, in_units=3)
    b = nn.Dense(5, in_units=4)
    before = ref.snapshot(b)
    with pytest.raises(fl.ShapeError):
        b.share_parameters(a.collect_params())
    assert ref.snapshot(b) == before
    assert b.weight is not a.weight


def test_tied_net_inference_of_shared_layer_conflict(ref):
    """The shared layer used twice with different input widths."""
    shared = nn.Dense(4)
    net = nn.Sequential()
    net.add(shared, nn.Dense(4, params=shared.collect_params()))
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError):
        net(np.ones((2, 3)))   # first use infers 3, second gets 4
    assert ref.snapshot(net) == before
    ref.forward_matches(net, np.random.default_rng(0).random((2, 4)))



@given(widths=st.lists(st.integers(1, 9), min_size=2, max_size=5),
       k=st.integers(1, 9), data=st.data())
def test_failed_first_forward_changes_nothing_property(widths, k, data, ref):
    """A wrong in_units on any later layer: the first forward fails with a
    ShapeError naming that layer, and every parameter is as it was."""
    bad = data.draw(st.integers(1, len(widths) - 1))
    wrong = widths[bad - 1] + data.draw(st.integers(1, 5))
    net = nn.Sequential()
    for i, w in enumerate(widths):
        net.add(nn.Dense(w, activation="tanh",
                         in_units=wrong if i == bad else 0))
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError) as exc:
        net(np.ones((2, k)))
    msg = str(exc.value)
    assert net[bad].name in msg
    assert str(wrong) in msg and str(widths[bad - 1]) in msg
    assert ref.snapshot(net) == before
