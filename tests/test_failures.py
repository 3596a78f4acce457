"""Failures change nothing, on every path that can fail: forward, build,
set_data, load, initialize, cast, share_parameters (and constructing a
block on shared parameters), summary.

Each test takes a byte-for-byte snapshot of the network (``conftest.snapshot``:
identity, name, shape, state, dtype and bytes of every parameter), makes a
call fail, and compares; then it checks the network still works.  What the
other test files already cover (wrong input sizes, raising initializers in
the first forward, damaged files) is not repeated here.
"""

import warnings

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn
from conftest import snapshot

X = np.random.default_rng(0).standard_normal((3, 5))
XC = np.random.default_rng(1).standard_normal((2, 3, 6, 6))


class Boom(init.Initializer):
    """Fills with 1, and raises on its ``fail_on``-th call."""

    def __init__(self, fail_on):
        self.fail_on = fail_on
        self.calls = 0

    def __call__(self, desc, data):
        self.calls += 1
        if self.calls == self.fail_on:
            raise RuntimeError(f"boom at {desc}")
        data[...] = 1


def dense_net(state, **kw):
    net = nn.Sequential()
    net.add(nn.Dense(4, activation="relu", **kw), nn.Dense(2, **kw))
    if state != "unset":
        net.initialize(init.Uniform(1.0))
    if state == "initialized":
        net(X)
    return net


def conv_net(state):
    net = nn.Sequential()
    net.add(nn.Conv2D(4, 3), nn.BatchNorm(), nn.LayerNorm(), nn.Flatten(),
            nn.Dense(3))
    if state != "unset":
        net.initialize()
    if state == "initialized":
        net(XC)
    return net


STATES = ["unset", "deferred", "initialized"]


def unchanged(net, before):
    assert snapshot(net) == before


# ---------------------------------------------------------------------------
# initialize


@pytest.mark.parametrize("fail_on", [1, 2, 3, 4])
@pytest.mark.parametrize("force", [False, True])
def test_initialize_failing_midway_rolls_back(fail_on, force):
    """Known shapes initialize at once: an initializer failing on the
    n-th parameter leaves the ones before it as they were."""
    net = nn.Sequential()
    net.add(nn.Dense(4, in_units=3), nn.Dense(2, in_units=4))
    if force:
        net.initialize(init.Constant(0.5))
    before = snapshot(net)
    boom = Boom(fail_on)
    for p in net.collect_params().values():
        p.init = boom
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError, match="boom"):
            net.initialize(force_reinit=force)
    unchanged(net, before)
    boom.fail_on = 0
    net.initialize(force_reinit=force)
    assert all(p.is_initialized for p in net.collect_params().values())


def test_initialize_with_bad_initializer_changes_nothing():
    net = nn.Sequential()
    net.add(nn.Dense(4, in_units=3, weight_initializer="ones"),
            nn.Dense(2, in_units=4))
    before = snapshot(net)
    # the first weight has its own initializer and would initialize; the
    # second needs the one given, which is not an initializer
    with pytest.raises((TypeError, ValueError)):
        net.initialize(init="no-such-initializer")
    unchanged(net, before)
    with pytest.raises(TypeError):
        net.initialize(init=42)
    unchanged(net, before)


@pytest.mark.parametrize("state", ["deferred", "initialized"])
def test_deferred_then_failing_initialize_keeps_pending(state):
    """A second initialize() that fails keeps the initializer and random
    key the deferred parameters were waiting with."""
    fl.random.seed(3)
    net = dense_net(state)
    before = snapshot(net)
    for p in net.collect_params().values():
        p.init = Boom(1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(RuntimeError):
            net.initialize(force_reinit=True)
    unchanged(net, before)
    for p in net.collect_params().values():
        p.init = None
    assert net(X).shape == (3, 2)


# ---------------------------------------------------------------------------
# forward and build


@pytest.mark.parametrize("state", STATES)
def test_build_failures_change_nothing(state):
    net = conv_net(state)
    before = snapshot(net)
    for bad in [(None, 3, 6), (None, 3, 2, 2), (None, 0, 6, 6), "x", (),
                (None, 3, 6, 6, 1)]:
        with pytest.raises((TypeError, ValueError, fl.FastLazyError)):
            net.build(bad)
        unchanged(net, before)


def test_build_with_failing_initializer_rolls_back():
    net = conv_net("unset")
    net.initialize(init=Boom(2))      # the conv weight, then the dense one
    before = snapshot(net)
    with pytest.raises(RuntimeError, match="boom"):
        net.build((None, 3, 6, 6))
    unchanged(net, before)


@pytest.mark.parametrize("state", STATES)
def test_forward_failures_change_nothing_conv(state):
    net = conv_net(state)
    before = snapshot(net)
    wrong_channels = [np.ones((2, 4, 6, 6))] if state == "initialized" \
        else []
    for bad in wrong_channels + [np.ones((2, 3, 2, 2)),
                np.ones((2, 3, 6)), np.ones((2, 3, 0, 6)), "x",
                np.ones((2, 3, 6, 6), complex), [[1, 2], [3]]]:
        with pytest.raises((TypeError, ValueError, fl.FastLazyError)):
            net(bad)
        unchanged(net, before)
    if state != "unset":
        net(XC)


def test_forward_with_mixed_dtypes_changes_nothing():
    net = dense_net("deferred")
    net[1].cast("float64")
    before = snapshot(net)
    with pytest.raises(TypeError, match="mix dtypes"):
        net(X)
    unchanged(net, before)


def test_forward_with_unset_layer_changes_nothing():
    net = dense_net("deferred")
    net.add(nn.Dense(3))                      # added after initialize()
    before = snapshot(net)
    with pytest.raises(fl.DeferredInitializationError):
        net(X)
    unchanged(net, before)


# ---------------------------------------------------------------------------
# set_data and Parameter operations


@pytest.mark.parametrize("state", STATES)
def test_set_data_failures_change_nothing(state):
    net = dense_net(state)
    before = snapshot(net)
    w = net[0].weight
    for bad in [np.ones((5, 5)), np.ones((4,)), np.ones((4, 5, 1)),
                np.ones((4, 0)), "abc", [[1, 2], [3]], np.array([None]),
                np.ones((4, 5), complex)]:
        with pytest.raises((TypeError, ValueError, fl.FastLazyError)):
            w.set_data(bad)
        unchanged(net, before)
        with pytest.raises((TypeError, ValueError, fl.FastLazyError)):
            net[1].bias.set_data(bad)
        unchanged(net, before)


@pytest.mark.parametrize("state", STATES)
def test_parameter_shape_and_cast_failures_change_nothing(state):
    net = dense_net(state)
    before = snapshot(net)
    p = net[0].weight
    for bad in [(5, 5), (4,), (4, 5, 6), None, "x", (4, -3)]:
        with pytest.raises((TypeError, ValueError)):
            p.shape = bad
        unchanged(net, before)
    for bad in ["int32", "float16", "complex64", "bogus", object]:
        with pytest.raises(TypeError):
            p.cast(bad)
        unchanged(net, before)


# ---------------------------------------------------------------------------
# cast


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("bad", ["int32", "float16", "bool", "bogus",
                                 "complex128", object])
def test_block_cast_failure_changes_nothing(state, bad):
    net = conv_net(state)
    before = snapshot(net)
    with pytest.raises(TypeError):
        net.cast(bad)
    unchanged(net, before)
    if state != "unset":
        assert net(XC).dtype == np.float32


# ---------------------------------------------------------------------------
# share_parameters and params=


@pytest.mark.parametrize("state", STATES)
def test_share_parameters_failures_change_nothing(state):
    net = dense_net(state)
    before = snapshot(net)
    small = nn.Sequential()
    small.add(nn.Dense(4))                          # no second layer
    other = nn.Sequential()
    other.add(nn.Dense(4, in_units=6), nn.Dense(3))  # other sizes
    other.initialize()
    other_before = snapshot(other)
    for params, exc in [(small.collect_params(), ValueError),
                        (other.collect_params(), fl.ShapeError),
                        ([1, 2], TypeError), ("x", TypeError)]:
        with pytest.raises(exc):
            net.share_parameters(params)
        unchanged(net, before)
        unchanged(other, other_before)


def test_params_of_another_shape_change_nothing():
    """A block built on shared parameters that do not fit fails, and the
    shared parameters -- shapes included -- stay as they were."""
    src = nn.Dense(4)                           # weight (4, -1), bias (4,)
    src.initialize()
    before = snapshot(src)
    with pytest.raises(fl.ShapeError):
        nn.Dense(3, in_units=5, params=src.collect_params())
    unchanged(src, before)
    # the weight would fit (4, 5) but the bias (3,) does not
    with pytest.raises(fl.ShapeError):
        nn.Dense(3, params=src.collect_params())
    unchanged(src, before)
    assert src.weight.shape == (4, -1)


# ---------------------------------------------------------------------------
# summary and load


@pytest.mark.parametrize("state", STATES)
def test_summary_changes_nothing(state, capsys):
    net = conv_net(state)
    before = snapshot(net)
    net.summary((None, 3, 6, 6))
    unchanged(net, before)
    wrong_channels = [(None, 4, 6, 6)] if state == "initialized" else []
    for bad in wrong_channels + [(None, 3, 2, 2), ()]:
        with pytest.raises((TypeError, ValueError, fl.FastLazyError)):
            net.summary(bad)
        unchanged(net, before)


@pytest.mark.parametrize("state", STATES)
def test_load_failures_change_nothing(state, tmp_path):
    net = conv_net(state)
    before = snapshot(net)
    good = conv_net("initialized")
    path = tmp_path / "good.npz"
    good.save_parameters(path)
    arrays = dict(np.load(path))
    cases = {}
    key = next(k for k in arrays if k.endswith("weight"))
    for name, change in [
            ("shape", lambda a: a[key][:1]),
            ("dtype", lambda a: a[key].astype(np.float64)),
            ("nan-int", lambda a: a[key].astype(np.int64)),
            ("empty", lambda a: a[key][:0]),
            ("bool", lambda a: a[key] > 0)]:
        bad = dict(arrays)
        bad[key] = change(arrays)
        cases[name] = bad
    missing = dict(arrays)
    missing.pop(key)
    cases["missing"] = missing
    extra = dict(arrays)
    extra["9.weight"] = arrays[key]
    cases["extra"] = extra
    last = sorted(arrays)[-1]
    late = dict(arrays)
    late[last] = np.ones((99,), np.float32)      # fails on the last key
    cases["late"] = late
    for name, content in cases.items():
        p = tmp_path / f"{name}.npz"
        np.savez(p, **content)
        with pytest.raises((fl.ParameterFileError, fl.ShapeError)):
            net.load_parameters(p)
        unchanged(net, before)
    net.load_parameters(path)
    np.testing.assert_array_equal(net(XC), good(XC))
