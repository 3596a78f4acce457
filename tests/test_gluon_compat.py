"""Gluon 1.x behaviours that MXNet's own tests check: parameter sharing
through ``name_scope``, prefixes in a scope, ``ParameterDict.save/load``,
``get_constant``, forward hooks, ``summary`` on any traceable network, the
attribute-type check, the warning for Blocks hidden in containers, and the
input dtype kept by parameter-free layers.  Each behaviour is checked in
the states where it matters (deferred, initialized, loaded, pickled,
deep-copied), with NumPy as the oracle."""

import copy
import io
import os
import pickle
import tempfile
import warnings

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn
from conftest import pool_ref, snapshot

HERE = os.path.dirname(__file__)
MXNET = os.path.join(HERE, "data", "mxnet")
RNG = np.random.default_rng(7)
X = RNG.standard_normal((3, 5)).astype(np.float32)


def relu(z):
    return np.maximum(z, 0)


def mlp_ref(net, x):
    """NumPy forward of Sequential(Dense(relu), Dense) from its values."""
    w0, b0 = net[0].weight.data(), net[0].bias.data()
    w1, b1 = net[1].weight.data(), net[1].bias.data()
    return relu(x @ w0.T + b0) @ w1.T + b1


def scoped_mlp(prefix=None, params=None, units=(4, 2)):
    net = nn.Sequential(prefix=prefix, params=params)
    with net.name_scope():
        net.add(nn.Dense(units[0], activation="relu"), nn.Dense(units[1]))
    return net


def in_state(net, state, x=X):
    """Bring ``net`` to ``state``: deferred, initialized, pickled,
    deepcopied (the last two of an initialized network), loaded (from the
    file of an initialized copy, never initialized itself)."""
    if state == "deferred":
        net.initialize()
    elif state == "loaded":
        src = in_state(copy.deepcopy(net), "initialized", x)
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "src.npz")
            src.save_parameters(path)
            net.load_parameters(path)
        return net
    else:
        net.initialize(init.Uniform(1.0))
        net(x)
    if state == "pickled":
        net = pickle.loads(pickle.dumps(net))
    elif state == "deepcopied":
        net = copy.deepcopy(net)
    return net


ALL_STATES = ["deferred", "initialized", "pickled", "deepcopied", "loaded"]


# ---------------------------------------------------------------------------
# Sharing through name_scope, prefixes in a scope


@pytest.mark.parametrize("state", ALL_STATES)
def test_params_given_to_a_container_are_shared_by_its_scoped_children(
        state):
    net1 = scoped_mlp()
    net1 = in_state(net1, state)
    net2 = scoped_mlp(params=net1.collect_params())
    a = list(net1.collect_params().values())
    b = list(net2.collect_params().values())
    assert len(a) == len(b) == 4
    assert all(p is q for p, q in zip(a, b))
    # names come from the shared dict's prefix, the blocks from net2's
    assert net2.prefix != net1.prefix
    assert net2[0].prefix == net2.prefix + "dense0_"
    assert net2[0].weight.name == net1[0].weight.name
    y2 = net2(X)
    y1 = net1(X)
    np.testing.assert_array_equal(y1, y2)
    np.testing.assert_allclose(y1, mlp_ref(net1, X), rtol=1e-5, atol=1e-6)
    # one write is seen by both networks
    net1[1].bias.set_data(np.full(2, 3.0))
    np.testing.assert_array_equal(net2(X), net1(X))
    np.testing.assert_allclose(net2(X), mlp_ref(net1, X), rtol=1e-5,
                               atol=1e-6)


def test_sharing_reaches_grandchildren_and_custom_blocks():
    class Pair(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.body = nn.HybridSequential()
                with self.body.name_scope():
                    self.body.add(nn.Dense(3, activation="relu"))
                self.head = nn.Dense(2)

        def hybrid_forward(self, F, x):
            return self.head(self.body(x))

    a = Pair()
    a.initialize()
    b = Pair(params=a.collect_params())
    assert b.body[0].weight is a.body[0].weight
    assert b.head.bias is a.head.bias
    # deferred until either runs; the first forward completes both
    assert a.body[0].weight.shape == (3, -1)
    y = b(X)
    assert a.body[0].weight.shape == (3, 5)
    np.testing.assert_array_equal(a(X), y)
    # saved once per network, the same values
    assert len(b.collect_params()) == 4


def test_children_outside_the_scope_get_their_own_parameters():
    net1 = scoped_mlp()
    net2 = nn.Sequential(params=net1.collect_params())
    net2.add(nn.Dense(4, activation="relu"), nn.Dense(2))   # no name_scope
    assert net2[0].weight is not net1[0].weight
    net2.initialize()
    net1.initialize()
    net2(X)
    assert net1[0].weight.state == "deferred"        # untouched by net2


def test_sharing_keeps_through_pickle_and_deepcopy():
    net1 = in_state(scoped_mlp(), "initialized")
    net2 = scoped_mlp(params=net1.collect_params())
    for c1, c2 in (pickle.loads(pickle.dumps((net1, net2))),
                   copy.deepcopy((net1, net2))):
        assert c2[0].weight is c1[0].weight
        assert c2[0].weight is not net1[0].weight
        c1[0].bias.set_data(np.ones(4))
        np.testing.assert_array_equal(c2(X), c1(X))
        assert not np.array_equal(c1(X), net1(X))


def test_prefix_inside_a_scope_is_prefixed_like_gluon():
    outer = nn.Sequential(prefix="outer_")
    with outer.name_scope():
        foo = nn.Dense(2, prefix="foo_")
        auto = nn.Dense(2)
        auto2 = nn.Dense(2)
    top = nn.Dense(2, prefix="foo_")
    assert foo.prefix == "outer_foo_" and foo.name == "outer_foo"
    assert foo.weight.name == "outer_foo_weight"
    assert (auto.prefix, auto2.prefix) == ("outer_dense0_", "outer_dense1_")
    assert top.prefix == "foo_" and top.weight.name == "foo_weight"
    # each parent counts its own children
    other = nn.Sequential(prefix="other_")
    with other.name_scope():
        assert nn.Dense(1).prefix == "other_dense0_"
    # the empty prefix opens no scope
    bare = nn.Sequential(prefix="")
    with bare.name_scope():
        child = nn.Dense(1, prefix="x_")
    assert child.prefix == "x_"


class ZooNet(nn.HybridBlock):
    """The model zoo's pattern: features = HybridSequential(prefix='')."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.features = nn.HybridSequential(prefix="")
            with self.features.name_scope():
                self.features.add(nn.Dense(4), nn.Dense(4))
            self.output = nn.Dense(2)

    def hybrid_forward(self, F, x):
        return self.output(self.features(x))


def test_a_block_made_with_the_empty_prefix_names_in_the_enclosing_scope():
    net = ZooNet(prefix="net_")
    assert net.features.prefix == "net_"
    assert [b.prefix for b in net.features] == ["net_dense0_", "net_dense1_"]
    assert net.output.prefix == "net_dense2_"
    assert list(net.collect_params().keys()) == [
        f"net_dense{i}_{k}" for i in range(3) for k in ("weight", "bias")]
    again = pickle.loads(pickle.dumps(net))
    with again.features.name_scope():
        assert not nn.Dense(1).prefix.startswith("net_")   # no scope
    shared = ZooNet(prefix="other_", params=net.collect_params())
    assert shared.features[1].weight is net.features[1].weight
    assert shared.output.bias is net.output.bias


def test_params_must_be_a_parameter_dict():
    with pytest.raises(TypeError, match="ParameterDict"):
        nn.Sequential(params={"a": 1})


# ---------------------------------------------------------------------------
# Attribute type changes


class Holder(nn.Block):
    def __init__(self):
        super().__init__()
        with self.name_scope():
            self.layer = nn.Dense(3, in_units=5)
            self.scale = self.params.get("scale", shape=(3,),
                                         init=init.One())

    def forward(self, x):
        return self.layer(x) * self.scale.data()


@pytest.mark.parametrize("state", ALL_STATES)
@pytest.mark.parametrize("attr, value", [
    ("layer", None), ("layer", 3), ("layer", nn.Conv2D(2, 1)),
    ("scale", None), ("scale", np.ones(3))])
def test_changing_a_child_or_parameter_attribute_type_is_refused(
        state, attr, value):
    h = in_state(Holder(), state)
    before = snapshot(h)
    old = getattr(h, attr)
    with pytest.raises(TypeError) as err:
        setattr(h, attr, value)
    msg = str(err.value)
    assert msg.startswith(f"Changing attribute type for {attr} from "
                          f"{type(old)} to {type(value)} is not allowed.")
    assert getattr(h, attr) is old
    assert snapshot(h) == before
    if state != "deferred":
        y = h(X)
        np.testing.assert_allclose(
            y, (X @ h.layer.weight.data().T + h.layer.bias.data())
            * h.scale.data(), rtol=1e-5, atol=1e-6)


def test_replacing_a_child_with_one_of_its_type_leaves_no_stale_entry(
        tmp_path):
    h = in_state(Holder(), "initialized")
    new = nn.Dense(3, in_units=5, prefix="new_")
    h.layer = new
    assert h._children["layer"] is new
    h.scale = fl.Parameter("other_scale", shape=(3,), init=init.One())
    names = list(h.collect_params().keys())
    assert sorted(names) == ["new_bias", "new_weight", "other_scale"]
    assert list(h.params.keys()) == ["other_scale"]
    h.initialize()
    h.save_parameters(tmp_path / "h.npz")
    with np.load(tmp_path / "h.npz") as f:
        assert sorted(f.files) == ["layer.bias", "layer.weight", "scale"]
        np.testing.assert_array_equal(f["layer.weight"], new.weight.data())


# ---------------------------------------------------------------------------
# Blocks hidden in containers


GLUON_WARNING = ('"{}" is an unregistered container with Blocks. Note that '
                 'Blocks inside the list, tuple or dict will not be '
                 'registered automatically. Make sure to register them '
                 'using register_child() or switching to '
                 'nn.Sequential/nn.HybridSequential instead. ')


class Hidden(nn.Block):
    def __init__(self, make):
        super().__init__()
        self.parts = make()
        self.sizes = [1, 2]          # no Blocks: no warning

    def forward(self, x):
        return x


@pytest.mark.parametrize("make", [
    lambda: [nn.Dense(2)], lambda: (1, [nn.Dense(2)]),
    lambda: {"a": {"b": nn.Dense(2)}}])
def test_blocks_in_a_list_tuple_or_dict_warn_like_gluon(make):
    h = Hidden(make)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        params = h.collect_params()
    assert [str(w.message) for w in rec] == \
        [GLUON_WARNING.format("Hidden.parts")]
    assert rec[0].category is UserWarning
    assert len(params) == 0              # really not registered
    # inside a registered child too, and at initialize()
    outer = nn.Sequential()
    outer.add(Hidden(make))
    with pytest.warns(UserWarning, match="Hidden.parts"):
        outer.initialize()


def test_registered_blocks_in_a_list_do_not_warn():
    class Listed(nn.Block):
        def __init__(self):
            super().__init__()
            self.parts = [nn.Dense(2), nn.Dense(3)]
            for i, p in enumerate(self.parts):
                self.register_child(p, f"p{i}")

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(Listed().collect_params()) == 4


# ---------------------------------------------------------------------------
# Forward hooks


class Residual(nn.HybridBlock):
    """x + dense(x): a branching block around a child."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(5)

    def hybrid_forward(self, F, x):
        return F.relu(x + self.dense(x))


def residual_net():
    net = nn.HybridSequential()
    with net.name_scope():
        net.add(nn.Dense(5, activation="tanh"), Residual(), nn.Dense(2))
    return net


def residual_ref(net, x):
    d0, d1, d2 = net[0], net[1].dense, net[2]
    h = np.tanh(x @ d0.weight.data().T + d0.bias.data())
    h = relu(h + h @ d1.weight.data().T + d1.bias.data())
    return h @ d2.weight.data().T + d2.bias.data()


def plan_current(block):
    plan = block._plan
    return plan is not None and plan.is_current()


@pytest.mark.parametrize("state", ALL_STATES)
def test_forward_hooks_see_inputs_and_output_in_order(state):
    net = in_state(residual_net(), state)
    calls = []
    target = net[1].dense
    pre = target.register_forward_pre_hook(
        lambda b, inputs: calls.append(("pre", b, inputs[0].copy())))
    post = target.register_forward_hook(
        lambda b, inputs, out: calls.append(("post", b, inputs[0].copy(),
                                             out.copy())))
    y = net(X)
    np.testing.assert_allclose(y, residual_ref(net, X), rtol=1e-5,
                               atol=1e-5)
    assert [c[0] for c in calls] == ["pre", "post"]
    assert calls[0][1] is target and calls[1][1] is target
    d0 = net[0]
    h = np.tanh(X @ d0.weight.data().T + d0.bias.data())
    np.testing.assert_allclose(calls[0][2], h, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(calls[1][2], calls[0][2])
    np.testing.assert_allclose(
        calls[1][3], h @ target.weight.data().T + target.bias.data(),
        rtol=1e-5, atol=1e-5)
    calls.clear()
    net(X)
    net(X)
    assert [c[0] for c in calls] == ["pre", "post"] * 2
    # the network is not one plan while the hook is there
    assert not plan_current(net)
    report = fl.explain(net, X, file=io.StringIO())
    assert "has forward hooks" in report and target.name in report
    pre.detach()
    post.detach()
    pre.detach()                      # again: nothing happens
    calls.clear()
    y2 = net(X)
    assert calls == []
    np.testing.assert_array_equal(y2, y)
    assert plan_current(net)          # compiled as one plan again
    assert "compiled: one plan" in fl.explain(
        net, X, file=io.StringIO())


def test_hook_on_the_root_runs_once_per_call_around_its_plan():
    net = in_state(residual_net(), "initialized")
    outs = []
    with net.register_forward_hook(lambda b, i, o: outs.append(o)):
        y = net(X)
        y2 = net(X)
        assert len(outs) == 2 and outs[0] is y and outs[1] is y2
        assert net._hook_plan is not None and net._hook_plan.is_current()
        assert not plan_current(net)
    net(X)
    assert len(outs) == 2             # the with block detached it
    np.testing.assert_allclose(y, residual_ref(net, X), rtol=1e-5,
                               atol=1e-5)


def test_pre_hook_cannot_change_the_inputs():
    net = in_state(residual_net(), "initialized")
    ref = net(X)
    net[0].register_forward_pre_hook(lambda b, inputs: (inputs[0] * 0,))
    np.testing.assert_array_equal(net(X), ref)


def test_hooks_under_a_deferred_custom_parent_with_its_own_parameters():
    class Normed(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.gamma = self.params.get("gamma", shape=(-1,),
                                             init=init.One())
                self.beta = self.params.get("beta", shape=(-1,),
                                            init=init.Zero())
                self.dense = nn.Dense(4)

        def hybrid_forward(self, F, x, gamma, beta):
            return F.LayerNorm(self.dense(x), gamma, beta)

    net = Normed()
    net.initialize()
    seen = []
    net.dense.register_forward_hook(lambda b, i, o: seen.append(o.shape))
    y = net(X)                        # deferred: completed before eager
    assert seen == [(3, 4)] and net.gamma.shape == (4,)
    h = X @ net.dense.weight.data().T + net.dense.bias.data()
    ref = (h - h.mean(1, keepdims=True)) / np.sqrt(h.var(1, keepdims=True)
                                                   + 1e-5)
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("how", ["pickle", "deepcopy"])
def test_copies_have_no_hooks_and_compile(how):
    net = in_state(residual_net(), "initialized")
    calls = []
    net[2].register_forward_hook(lambda b, i, o: calls.append(1))
    net(X)
    dup = pickle.loads(pickle.dumps(net)) if how == "pickle" \
        else copy.deepcopy(net)
    np.testing.assert_array_equal(dup(X), net(X))
    assert calls == [1, 1]            # only the original's calls
    assert plan_current(dup) and not plan_current(net)


def test_summary_and_build_ignore_hooks(capsys):
    net = residual_net()
    net.initialize()
    calls = []
    net[1].dense.register_forward_hook(lambda *a: calls.append(1))
    net.build((None, 5))
    rows = net.summary((None, 5))
    assert calls == [] and len(rows) == 4
    assert net[0].weight.shape == (5, 5)
    net(X)
    assert calls == [1]
    assert net.summary(X) == [(r[0], (3,) + r[1][1:], r[2])
                              for r in rows]
    assert calls == [1]


def test_hook_must_be_callable():
    with pytest.raises(TypeError, match="callable"):
        nn.Dense(2).register_forward_hook(3)


# ---------------------------------------------------------------------------
# summary


def summary_of(net, *inputs, capsys):
    capsys.readouterr()
    rows = net.summary(*inputs)
    return rows, capsys.readouterr().out


class Branch(nn.HybridBlock):
    """[x, dense(x)] side by side: its output is not its child's."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(3)

    def hybrid_forward(self, F, x):
        return F.concat(x, self.dense(x), dim=1)


def branching_net():
    net = residual_net()
    net.add(Branch())
    return net


BRANCHING_ROWS = [("Dense", 5, 40), ("Dense", 5, 30), ("Residual", 5, 0),
                  ("Dense", 2, 12), ("Dense", 3, 9), ("Branch", 5, 0)]


@pytest.mark.parametrize("state", ["unset"] + ALL_STATES)
def test_summary_of_a_branching_custom_network(state, capsys):
    net = branching_net()
    x = RNG.standard_normal((4, 7))
    if state != "unset":
        net = in_state(net, state, x)
    before = snapshot(net)
    rows, out = summary_of(net, (None, 7), capsys=capsys)
    assert snapshot(net) == before          # deferred nets stay deferred
    # Gluon's hook order: a container's row after its children's;
    # HybridSequential has none
    assert rows == [(f"{cls}-{i}", (None, n), count)
                    for i, (cls, n, count) in enumerate(BRANCHING_ROWS, 1)]
    assert "Total params: 91" in out and "Trainable params: 91" in out
    assert "(None, 7)" in out
    rows2, _ = summary_of(net, x, capsys=capsys)
    assert [r[1] for r in rows2] == [(4, n) for _, n, _ in BRANCHING_ROWS]
    if state in ("unset", "deferred"):
        assert net[0].weight.shape == (5, -1)
    else:
        y = net(x)                          # and the table is the truth
        assert y.shape == (4, 5)


def test_summary_rows_for_concurrent_shared_and_multi_output(capsys):
    class TwoHeads(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.shared = nn.Dense(3, in_units=4)
                self.cat = nn.HybridConcurrent(axis=1)
                self.cat.add(nn.Dense(2), nn.Activation("relu"))

        def hybrid_forward(self, F, x):
            a = self.shared(x)
            b = self.shared(F.relu(x))      # the same block twice
            return self.cat(a), b

    net = TwoHeads()
    rows, out = summary_of(net, (2, 4), capsys=capsys)
    assert rows == [("Dense-1", (2, 3), 15), ("Dense-2", (2, 3), 15),
                    ("Dense-3", (2, 2), 8), ("Activation-4", (2, 3), 0),
                    ("TwoHeads-5", [(2, 5), (2, 3)], 0)]
    assert "(2, 5), (2, 3)" in out
    assert "Shared params in forward computation graph: 15" in out
    assert "Unique parameters in model: 23" in out


def test_summary_counts_constants_and_running_stats_as_non_trainable(
        capsys):
    class Scaled(nn.HybridBlock):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.c = self.params.get_constant("c", [2.0, 3.0, 4.0])
                self.bn = nn.BatchNorm(in_channels=3)

        def hybrid_forward(self, F, x, c):
            return F.broadcast_mul(self.bn(x), c)

    net = Scaled()
    rows, out = summary_of(net, (None, 3), capsys=capsys)
    assert rows == [("BatchNorm-1", (None, 3), 12), ("Scaled-2", (None, 3),
                                                     3)]
    assert "Trainable params: 6" in out and "Non-trainable params: 9" in out


def test_summary_names_the_block_that_cannot_be_traced(capsys):
    class Py(nn.Block):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.d = nn.Dense(2)

        def forward(self, x):
            return self.d(x) * 2

    class Untraceable(nn.HybridBlock):
        def hybrid_forward(self, F, x):
            return np.exp(x)

    for bad in (Py(prefix="pyblock_"), Untraceable(prefix="pyblock_")):
        net = nn.Sequential()
        net.add(nn.Dense(3), bad)
        net.initialize()
        before = snapshot(net)
        with pytest.raises(TypeError, match="'pyblock' prevents the summary"):
            net.summary((None, 4))
        assert snapshot(net) == before
        assert capsys.readouterr().out == ""


def test_summary_of_a_loaded_network(tmp_path, capsys):
    src = in_state(residual_net(), "initialized")
    src.save_parameters(tmp_path / "r.npz")
    net = residual_net()
    net.load_parameters(tmp_path / "r.npz")
    rows, _ = summary_of(net, (1, 5), capsys=capsys)
    assert [r[2] for r in rows] == [30, 30, 0, 12]


# ---------------------------------------------------------------------------
# ParameterDict.save / load


def mlp_of_names(names, units=(64, 64, 4), acts=("relu", "tanh", None)):
    net = nn.Sequential(prefix="")
    for name, u, a in zip(names, units, acts):
        net.add(nn.Dense(u, activation=a, prefix=name))
    return net


@pytest.mark.parametrize("state", ["unset", "deferred", "initialized"])
def test_parameter_dict_loads_an_mxnet_export(state):
    net = mlp_of_names(["dense8_", "dense9_", "dense10_"])
    mx_io = np.load(os.path.join(MXNET, "hybrid_mlp.io.npz"))
    if state != "unset":
        net.initialize()
    if state == "initialized":
        net(mx_io["x"])
    net.collect_params().load(os.path.join(MXNET, "hybrid_mlp-0000.params"))
    assert net[0].weight.shape == (64, 30)
    np.testing.assert_allclose(net(mx_io["x"]), mx_io["y"], rtol=1e-4,
                               atol=1e-5)


@pytest.mark.parametrize("state", ["initialized", "pickled", "deepcopied"])
def test_parameter_dict_save_load_round_trip_with_prefixes(state, tmp_path):
    src = in_state(scoped_mlp(prefix="src_"), state)
    path = tmp_path / "p.params"               # any name: written as .npz
    src.collect_params().save(path, strip_prefix="src_")
    with np.load(path) as f:
        assert sorted(f.files) == ["dense0_bias", "dense0_weight",
                                   "dense1_bias", "dense1_weight"]
    dst = scoped_mlp(prefix="dst_")
    dst.collect_params().load(path, restore_prefix="dst_")
    np.testing.assert_array_equal(dst(X), src(X))
    # and loaded networks pickle with the values
    again = pickle.loads(pickle.dumps(dst))
    np.testing.assert_array_equal(again(X), src(X))


def test_parameter_dict_save_refuses_and_writes_nothing(tmp_path):
    net = in_state(scoped_mlp(prefix="a_"), "initialized")
    path = tmp_path / "x.npz"
    with pytest.raises(ValueError, match="'b_' .* 'a_dense0_weight'"):
        net.collect_params().save(path, strip_prefix="b_")
    assert not path.exists()
    deferred = scoped_mlp()
    deferred.initialize()
    with pytest.raises(fl.DeferredInitializationError):
        deferred.collect_params().save(path)
    assert not path.exists() and os.listdir(tmp_path) == []


@pytest.mark.parametrize("state", ["deferred", "initialized"])
def test_parameter_dict_load_is_all_or_nothing(state, tmp_path):
    src = in_state(scoped_mlp(prefix="n_"), "initialized")
    full = tmp_path / "full.npz"
    src.collect_params().save(full)
    partial = tmp_path / "partial.npz"
    src.collect_params().select(".*dense0.*").save(partial)
    wrong = tmp_path / "wrong.npz"
    bad = in_state(scoped_mlp(prefix="n_", units=(4, 3)), "initialized")
    bad.collect_params().save(wrong)
    f64 = tmp_path / "f64.npz"
    np.savez(f64, **{k: v.data().astype(np.float64)
                     for k, v in src.collect_params().items()})

    net = in_state(scoped_mlp(prefix="n_"), state)
    params = net.collect_params()
    before = snapshot(net)
    cases = [(partial, {}, fl.ParameterFileError, "n_dense1_weight"),
             (full, {"restore_prefix": "m_"}, ValueError, "restore_prefix"),
             (wrong, {}, fl.ParameterShapeError, "n_dense1"),
             (f64, {}, fl.ParameterFileError, "cast_dtype=True")]
    for path, kw, exc, text in cases:
        with pytest.raises(exc, match=text):
            params.load(path, **kw)
        assert snapshot(net) == before
    small = scoped_mlp(prefix="n_").collect_params().select(".*dense0.*")
    with pytest.raises(fl.ParameterFileError, match="ignore_extra"):
        small.load(full)
    small.load(full, ignore_extra=True)
    params.load(partial, allow_missing=True)
    np.testing.assert_array_equal(net[0].weight.data(),
                                  src[0].weight.data())
    params.load(f64, cast_dtype=True)
    np.testing.assert_allclose(net(X), src(X), rtol=1e-6)


def test_parameter_dict_load_rejects_bad_dtype_source(tmp_path):
    with pytest.raises(ValueError, match="dtype_source"):
        fl.ParameterDict().load(tmp_path / "none", dtype_source="x")


# ---------------------------------------------------------------------------
# get_constant


class WithConstant(nn.HybridBlock):
    def __init__(self, value, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(3)
            self.c = self.params.get_constant("c", value)

    def hybrid_forward(self, F, x, c):
        return F.broadcast_add(self.dense(x), c)


VALUE = [1.0, -2.0, 0.5]


@pytest.mark.parametrize("state", ALL_STATES)
def test_constant_in_a_network(state, tmp_path):
    net = in_state(WithConstant(VALUE), state)
    c = net.c
    assert isinstance(c, fl.Constant) and isinstance(c, fl.Parameter)
    assert c.grad_req == "null" and c.shape == (3,)
    assert c.dtype == np.float32 and c.state == "initialized"
    np.testing.assert_array_equal(c.data(), np.array(VALUE, np.float32))
    assert "c" in net._reg_params and c.name == net.prefix + "c"
    y = net(X)
    d = net.dense
    np.testing.assert_allclose(
        y, X @ d.weight.data().T + d.bias.data() + np.array(VALUE),
        rtol=1e-5, atol=1e-6)
    # saved and loaded like any parameter
    net.save_parameters(tmp_path / "c.npz")
    other = WithConstant([0.0, 0.0, 0.0])
    other.load_parameters(tmp_path / "c.npz")
    np.testing.assert_array_equal(other.c.data(), c.data())


def test_constant_force_reinit_restores_the_value_and_get_finds_it():
    pd = fl.ParameterDict("m_")
    c = pd.get_constant("c", np.arange(6.0).reshape(2, 3))
    assert c.dtype == np.float32                    # as Gluon's nd.array
    assert pd.get("c") is c and pd.get_constant("c") is c
    assert pd.get_constant("c", np.arange(6.0).reshape(2, 3)) is c
    pd.initialize()
    c.set_data(np.zeros((2, 3)))
    pd.initialize(force_reinit=True)
    np.testing.assert_array_equal(c.data(), np.arange(6.0).reshape(2, 3))
    for dup in (pickle.loads(pickle.dumps(c)), copy.deepcopy(c)):
        assert type(dup) is fl.Constant and dup.grad_req == "null"
        np.testing.assert_array_equal(dup.value, c.value)
        np.testing.assert_array_equal(dup.data(), c.data())


def test_constant_errors():
    pd = fl.ParameterDict("m_")
    with pytest.raises(KeyError, match="No constant named 'm_c'"):
        pd.get_constant("c")
    pd.get_constant("c", [1, 2])
    assert pd["m_c"].dtype == np.float32
    pd.get_constant("tenth", [0.1])
    assert pd.get_constant("tenth", [0.1]) is pd["m_tenth"]  # float32 0.1
    with pytest.raises(ValueError, match="doesn't match"):
        pd.get_constant("c", [1, 3])
    pd.get("w", shape=(2,))
    with pytest.raises(TypeError, match="not a constant"):
        pd.get_constant("w", [1, 2])
    with pytest.raises(TypeError, match="numbers"):
        pd.get_constant("s", ["a"])


def test_constant_shared_through_the_scope():
    a = WithConstant(VALUE)
    b = WithConstant(VALUE, params=a.collect_params())
    assert b.c is a.c
    with pytest.raises(ValueError, match="doesn't match"):
        WithConstant([9.0, 9.0, 9.0], params=a.collect_params())


# ---------------------------------------------------------------------------
# Parameter-free layers keep the input's float dtype


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layer, kind, args", [
    (lambda: nn.MaxPool2D(3, 2, 1), "max", ((3, 3), (2, 2), (1, 1))),
    (lambda: nn.AvgPool2D(2), "avg", ((2, 2), (2, 2), (0, 0))),
    (lambda: nn.GlobalAvgPool2D(), "avg", ((5, 6), (1, 1), (0, 0))),
    (lambda: nn.GlobalMaxPool2D(), "max", ((5, 6), (1, 1), (0, 0)))])
def test_pooling_keeps_the_input_dtype(dtype, layer, kind, args):
    x = RNG.standard_normal((2, 3, 5, 6)).astype(dtype)
    net = nn.Sequential()
    net.add(layer(), nn.Activation("tanh"))
    y = net(x)
    assert y.dtype == dtype
    ref = np.tanh(pool_ref(x, *args, False, kind))
    tol = 1e-12 if dtype == np.float64 else 1e-6
    np.testing.assert_allclose(y, ref, rtol=tol, atol=tol)
    # and the other dtype, on the same network
    other = np.float32 if dtype == np.float64 else np.float64
    assert net(x.astype(other)).dtype == other


# ---------------------------------------------------------------------------
# Eager fallbacks retry when a block under them changes


class Wrapper(nn.HybridBlock):
    def __init__(self, inner, **kw):
        super().__init__(**kw)
        self.inner = inner

    def hybrid_forward(self, F, x):
        return F.relu(self.inner(x))


@pytest.mark.parametrize("copy_how", [None, "pickle", "deepcopy"])
def test_a_fallen_back_network_compiles_once_the_culprit_is_replaced(
        copy_how):
    inner = nn.Sequential()
    inner.add(nn.Dense(4, in_units=5), nn.Lambda(np.tanh))
    net = Wrapper(inner)
    net.initialize()
    y = net(X)
    assert net._eager_reason is not None and not plan_current(net)
    if copy_how == "pickle":
        net = pickle.loads(pickle.dumps(net))
        net(X)
    elif copy_how == "deepcopy":
        net = copy.deepcopy(net)
        net(X)
    assert net._eager_reason is not None
    d = net.inner[0]
    ref = relu(np.tanh(X @ d.weight.data().T + d.bias.data()))
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-6)
    net.inner.register_child(nn.Activation("tanh"), "1")   # now traceable
    y2 = net(X)
    assert plan_current(net) and net._eager_reason is None
    np.testing.assert_allclose(y2, ref, rtol=1e-5, atol=1e-6)


def test_summary_of_a_two_input_block(capsys):
    net = AddProj()
    rows, out = summary_of(net, (None, 4), (None, 3), capsys=capsys)
    assert rows == [("Dense-1", (None, 3), 15), ("AddProj-2", (None, 3), 0)]
    assert "(None, 4), (None, 3)" in out


def test_the_container_warning_points_at_the_caller():
    outer = nn.Sequential()
    outer.add(Hidden(lambda: [nn.Dense(2)]))
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        outer.collect_params()
    assert len(rec) == 1 and rec[0].filename == __file__


# ---------------------------------------------------------------------------
# MXNet 1.9's own unit tests of these behaviours, translated


class TwoDense(nn.Block):
    def __init__(self, in_units=0, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense0 = nn.Dense(5, in_units=in_units)
            self.dense1 = nn.Dense(5, in_units=in_units)

    def forward(self, x):
        return self.dense1(self.dense0(x))


def test_mxnet_parameter_sharing(tmp_path):
    net1 = TwoDense(prefix="net1_", in_units=5)
    net2 = TwoDense(prefix="net2_", params=net1.collect_params())
    assert net2.dense1.weight is net1.dense1.weight
    net1.collect_params().initialize()
    x = np.zeros((3, 5))
    net2(x)
    net1.save_parameters(tmp_path / "net1.npz")
    net3 = TwoDense(prefix="net3_")
    net3.load_parameters(tmp_path / "net1.npz")
    np.testing.assert_array_equal(net3.dense0.weight.data(),
                                  net1.dense0.weight.data())

    net4 = TwoDense(prefix="net4_")
    net5 = TwoDense(prefix="net5_", in_units=5,
                    params=net4.collect_params())
    assert net4.dense0.weight.shape == (5, 5)      # completed by net5
    net4.collect_params().initialize()
    y = net5(x + 1)
    np.testing.assert_array_equal(net4(x + 1), y)
    net4.save_parameters(tmp_path / "net4.npz")
    net6 = TwoDense(prefix="net6_")
    net6.load_parameters(tmp_path / "net4.npz")
    np.testing.assert_array_equal(net6(x + 1), y)


def test_mxnet_parameter_str_and_collect_parameters():
    class Net(nn.Block):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.dense0 = nn.Dense(10, in_units=5, use_bias=False)

    lines = str(Net(prefix="net1_").collect_params()).splitlines()
    assert lines[0] == "net1_ ("
    assert "net1_dense0_weight" in lines[1] and "(10, 5)" in lines[1]
    assert lines[2] == ")"
    net = nn.HybridSequential(prefix="test_")
    with net.name_scope():
        net.add(nn.Conv2D(10, 3))
        net.add(nn.Dense(10, activation="relu"))
    assert set(net.collect_params().keys()) == {
        "test_conv0_weight", "test_conv0_bias", "test_dense0_weight",
        "test_dense0_bias"}


def test_mxnet_block_attr():
    b = nn.Block()
    b.a = None                  # regular attributes can change types
    b.a = 1
    b.b = nn.Block()
    with pytest.raises(TypeError):
        b.b = (2,)
    b.p = fl.Parameter("p")
    with pytest.raises(TypeError):
        b.p = (2,)
    b.c = nn.Block()
    c2 = nn.Block()
    b.c = c2
    assert b.c is c2 and list(b._children.values())[1] is c2


def test_mxnet_block_attr_list_of_block():
    class Model1(nn.Block):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.layers = [nn.Dense(i * 10 + 1) for i in range(6)]

    class Model2(nn.Block):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.layers = dict()
                self.layers["a"] = [nn.Dense(10), nn.Dense(10)]

    class Model3(nn.Block):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.layers = nn.Sequential()
                self.layers.add(*[nn.Dense(i * 10 + 1) for i in range(6)])

    class Model4(nn.Block):
        def __init__(self, **kw):
            super().__init__(**kw)
            with self.name_scope():
                self.data = {"a": "4", "b": 123}

    for model, warns in ((Model1, True), (Model2, True), (Model3, False),
                         (Model4, False)):
        with warnings.catch_warnings(record=True) as rec:
            warnings.simplefilter("always")
            model().collect_params()
        assert (len(rec) > 0) == warns, model.__name__


def test_mxnet_hook_counts():
    counts = {"hook": 0, "pre": 0}

    def call_hook(block, x, y):
        counts["hook"] += 1

    def call_pre_hook(block, x):
        counts["pre"] += 1

    block = nn.Dense(10)
    block.initialize()
    handle = block.register_forward_hook(call_hook)
    pre_handle = block.register_forward_pre_hook(call_pre_hook)
    x = np.ones((3, 5))
    block(x)
    assert counts == {"hook": 1, "pre": 1}
    handle.detach()
    block(x)
    assert counts == {"hook": 1, "pre": 2}
    pre_handle.detach()
    y = block(x)
    assert counts == {"hook": 1, "pre": 2}
    np.testing.assert_allclose(
        y, x @ block.weight.data().T + block.bias.data(), rtol=1e-5,
        atol=1e-6)
    assert plan_current(block)


def test_mxnet_parameter_dict_save_load_and_cast(tmp_path):
    params0 = fl.ParameterDict("net_")
    params0.get("w0", shape=(10, 10))
    params0.get("w1", shape=(10, 10))
    assert list(params0.keys()) == ["net_w0", "net_w1"]
    params0.initialize()
    path = tmp_path / "test_parameter_dict.params"
    params0.save(path)
    params1 = fl.ParameterDict("net_")
    params1.get("w0", shape=(10, 10))
    params1.get("w1", shape=(10, 10))
    params1.load(path)
    for name in ("net_w0", "net_w1"):
        np.testing.assert_array_equal(params1[name].data(),
                                      params0[name].data())
    # dtype casting (fastlazy parameters are float32 or float64)
    params0 = fl.ParameterDict("")
    params0.get("w0", shape=(10, 10), dtype="float32")
    params0.get("w1", shape=(10, 10), dtype="float64")
    params0.initialize(init.One())
    params0.save(path)
    params1 = fl.ParameterDict("")
    params1.get("w0", shape=(10, 10), dtype="float64")
    params1.get("w1", shape=(10, 10), dtype="float32")
    params1.load(path, cast_dtype=True, dtype_source="current")
    assert params1["w0"].data().dtype == np.float64
    assert params1["w1"].data().dtype == np.float32
    params1.load(path, cast_dtype=True, dtype_source="saved")
    assert params1["w0"].data().dtype == np.float32
    assert params1["w1"].data().dtype == np.float64
    np.testing.assert_array_equal(params1["w1"].data(), np.ones((10, 10)))


class AddProj(nn.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.proj = nn.Dense(3)

    def hybrid_forward(self, F, a, b):
        return self.proj(a) + b


@pytest.mark.parametrize("state", ["deferred", "initialized", "pickled"])
def test_hooks_on_a_two_input_block(state):
    a = RNG.standard_normal((4, 5)).astype(np.float32)
    b = RNG.standard_normal((4, 3)).astype(np.float32)
    net = AddProj()
    if state == "deferred":
        net.initialize()
    else:
        net.initialize()
        net(a, b)
        if state == "pickled":
            net = pickle.loads(pickle.dumps(net))
    seen = []
    net.register_forward_pre_hook(lambda blk, inputs: seen.append(
        [i.shape for i in inputs]))
    net.register_forward_hook(lambda blk, inputs, out: seen.append(out))
    for _ in range(3):
        y = net(a, b)
        p = net.proj
        np.testing.assert_allclose(
            y, a @ p.weight.data().T + p.bias.data() + b, rtol=1e-5,
            atol=1e-6)
        assert seen[-2] == [(4, 5), (4, 3)] and seen[-1] is y
    assert len(seen) == 6 and net._hook_plan.is_current()


@pytest.mark.parametrize("make", ["scoped", "hooked", "fallen back"])
def test_networks_are_freed_by_reference_counting(make):
    # no reference cycles through name scopes, hook handles or the
    # fallback watchers: a dropped network goes at once, without the GC
    import gc
    import weakref
    gc.disable()
    try:
        if make == "fallen back":
            inner = nn.Sequential()
            inner.add(nn.Dense(4, in_units=5), nn.Lambda(np.tanh))
            net = Wrapper(inner)
            del inner
        else:
            net = residual_net()
        net.initialize()
        net(X)
        handle = None
        if make == "hooked":
            handle = net[1].dense.register_forward_hook(lambda *a: None)
            net(X)
        alive = weakref.ref(net)
        del net
        assert alive() is None
        if handle is not None:
            handle.detach()             # its block is gone: nothing happens
    finally:
        gc.enable()
