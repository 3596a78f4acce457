"""The lifecycle x operation matrix: every operation in every state
(unset / deferred / initialized), each cell with its expected outcome."""

import copy
import pickle
import warnings

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn

STATES = ["unset", "deferred", "initialized"]
X = np.random.default_rng(0).standard_normal((3, 5))


def make(state):
    net = nn.Sequential()
    net.add(nn.Dense(4, activation="relu"), nn.Dense(2))
    if state != "unset":
        net.initialize(init=init.Normal(0.5))
    if state == "initialized":
        net(X)
    return net


def weight_states(net):
    return [net[0].weight.state, net[1].weight.state]


EXPECTED_WEIGHT_STATE = {"unset": ["unset"] * 2,
                         "deferred": ["deferred"] * 2,
                         "initialized": ["initialized"] * 2}


def op_repr(net, state, tmp_path, ref):
    text = repr(net)
    listing = repr(net.collect_params())
    if state == "initialized":
        assert "Dense(5 -> 4, Activation(relu))" in text
        assert "Dense(4 -> 2, linear)" in text
        w0, w1 = (4, 5), (2, 4)
    else:
        assert "Dense(-1 -> 4, Activation(relu))" in text
        assert "Dense(-1 -> 2, linear)" in text
        w0, w1 = (4, -1), (2, -1)
    # the listing has one line per parameter, with its name and the shape
    # known in this state (-1: not yet)
    expected = [(net[0].weight, w0), (net[0].bias, (4,)),
                (net[1].weight, w1), (net[1].bias, (2,))]
    lines = [line.strip() for line in listing.splitlines()[1:-1]]
    assert lines == [f"Parameter {p.name} (shape={shape}, dtype=float32)"
                     for p, shape in expected]
    return "ok"


def op_data(net, state, tmp_path, ref):
    if state == "initialized":
        assert net[0].weight.data().shape == (4, 5)
        assert net[0].bias.data().shape == (4,)
        return "ok"
    with pytest.raises(fl.DeferredInitializationError) as exc:
        net[0].weight.data()
    assert net[0].weight.name in str(exc.value)
    # biases have a known shape: initialized at initialize()
    if state == "deferred":
        np.testing.assert_array_equal(net[0].bias.data(), 0)
    else:
        with pytest.raises(fl.DeferredInitializationError):
            net[0].bias.data()
    return "raises"


def op_forward(net, state, tmp_path, ref):
    if state == "unset":
        before = ref.snapshot(net)
        with pytest.raises(fl.DeferredInitializationError) as exc:
            net(X)
        assert "initialize" in str(exc.value)
        assert ref.snapshot(net) == before
        return "raises"
    y = ref.forward_matches(net, X)
    assert y.shape == (3, 2)
    assert weight_states(net) == ["initialized"] * 2
    return "ok"


def _copy_op(copier):
    def op(net, state, tmp_path, ref):
        dup = copier(net)
        assert weight_states(dup) == EXPECTED_WEIGHT_STATE[state]
        assert ref.shapes(dup) == ref.shapes(net)
        if state == "unset":
            dup.initialize()
        dup(X)
        assert weight_states(dup) == ["initialized"] * 2
        assert weight_states(net) == EXPECTED_WEIGHT_STATE[state]
        return "ok"
    return op


def op_save_load(net, state, tmp_path, ref):
    path = tmp_path / f"{state}.params"
    if state != "initialized":
        with pytest.raises(fl.DeferredInitializationError):
            net.save_parameters(str(path))
        assert not path.exists()
        # loading a complete file works from this state and fills shapes
        src = make("initialized")
        src.save_parameters(str(path))
        net.load_parameters(str(path))
        assert weight_states(net) == ["initialized"] * 2
        np.testing.assert_array_equal(net(X), src(X))
        return "save raises, load ok"
    net.save_parameters(str(path))
    other = make("unset")
    other.load_parameters(str(path))
    np.testing.assert_array_equal(other(X), net(X))
    y = net(X)
    net.load_parameters(str(path))            # into itself: no change
    np.testing.assert_array_equal(net(X), y)
    return "ok"


def op_initialize_twice(net, state, tmp_path, ref):
    before = ref.snapshot(net)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        net.initialize()
        net.initialize()
    warned = sorted({str(w.message).split("'")[1] for w in caught
                     if issubclass(w.category, UserWarning)})
    params = net.collect_params()
    if state == "initialized":
        # every parameter warns, nothing changes
        assert warned == sorted(params.keys())
        assert ref.snapshot(net) == before
        return "warns, unchanged"
    # weights wait silently; biases, initialized by the first call (or
    # already), warn on the second
    assert warned == sorted([net[0].bias.name, net[1].bias.name])
    assert weight_states(net) == ["deferred"] * 2
    net(X)
    assert weight_states(net) == ["initialized"] * 2
    return "biases warn, weights deferred"


OPERATIONS = {
    "repr": op_repr,
    "data": op_data,
    "forward": op_forward,
    "deepcopy": _copy_op(copy.deepcopy),
    "pickle": _copy_op(lambda n: pickle.loads(pickle.dumps(n))),
    "save_load": op_save_load,
    "initialize_twice": op_initialize_twice,
}

EXPECTED = {
    ("unset", "repr"): "ok",
    ("deferred", "repr"): "ok",
    ("initialized", "repr"): "ok",
    ("unset", "data"): "raises",
    ("deferred", "data"): "raises",
    ("initialized", "data"): "ok",
    ("unset", "forward"): "raises",
    ("deferred", "forward"): "ok",
    ("initialized", "forward"): "ok",
    ("unset", "deepcopy"): "ok",
    ("deferred", "deepcopy"): "ok",
    ("initialized", "deepcopy"): "ok",
    ("unset", "pickle"): "ok",
    ("deferred", "pickle"): "ok",
    ("initialized", "pickle"): "ok",
    ("unset", "save_load"): "save raises, load ok",
    ("deferred", "save_load"): "save raises, load ok",
    ("initialized", "save_load"): "ok",
    ("unset", "initialize_twice"): "biases warn, weights deferred",
    ("deferred", "initialize_twice"): "biases warn, weights deferred",
    ("initialized", "initialize_twice"): "warns, unchanged",
}


@pytest.mark.parametrize("op", list(OPERATIONS))
@pytest.mark.parametrize("state", STATES)
def test_lifecycle_matrix(state, op, tmp_path, ref):
    net = make(state)
    assert weight_states(net) == EXPECTED_WEIGHT_STATE[state]
    assert OPERATIONS[op](net, state, tmp_path, ref) == EXPECTED[state, op]


@pytest.mark.parametrize("state", STATES)
def test_parameter_state_after_each_transition(state):
    net = make(state)
    w = net[0].weight
    assert w.state == state
    assert w.is_initialized == (state == "initialized")
    assert w.shape_is_known() == (state == "initialized")


def test_build_from_each_state(ref):
    for state in STATES:
        net = make(state)
        if state == "unset":
            with pytest.raises(fl.DeferredInitializationError):
                net.build((None, 5))
            continue
        assert net.build((None, 5)) == (None, 2)
        assert weight_states(net) == ["initialized"] * 2
