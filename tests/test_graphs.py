"""Custom HybridBlocks and branching graphs, compiled: residual adds,
concatenation, several inputs and outputs, the F operators, the eager
fallback, containers and the activation layers -- against NumPy."""

import copy
import pickle
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import init, nn

DATA = Path(__file__).parent / "data" / "mxnet_graphs"
sys.path.insert(0, str(DATA))
from mxnet_graph_models import define  # noqa: E402

M = define(nn)


def compiled(net):
    """The network runs as one plan (no eager fallback anywhere)."""
    return net._plan is not None and net._eager_reason is None


def weights(layer):
    return layer.weight.data().astype(np.float64), \
        layer.bias.data().astype(np.float64)


def dense_ref(layer, x):
    w, b = weights(layer)
    return x.reshape(x.shape[0], -1) @ w.T + b


def relu(z):
    return np.maximum(z, 0)


# ---------------------------------------------------------------------------
# MXNet's own custom blocks, and their files


@pytest.mark.parametrize("name,cls", [("residual_mlp", "ResidualMLP"),
                                      ("concat_cnn", "ConcatCNN")])
def test_mxnet_custom_blocks_reproduce_mxnet(name, cls):
    net = getattr(M, cls)()
    net.load_parameters(str(DATA / f"{name}.params"))
    io = np.load(DATA / f"{name}.io.npz")
    y = net(io["x"])
    assert compiled(net)
    np.testing.assert_allclose(y, io["y"], rtol=1e-5, atol=1e-5)
    # the second call is the compiled one, with the same answer
    np.testing.assert_array_equal(net(io["x"]), y)


class ResidualBlock(nn.HybridBlock):
    """Module-level (picklable) twin of the fixtures' block."""

    def __init__(self, units=64, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.dense1 = nn.Dense(units)
            self.dense2 = nn.Dense(units)

    def hybrid_forward(self, F, x):
        return x + F.relu(self.dense2(F.relu(self.dense1(x))))


class ResidualMLP(nn.HybridBlock):
    def __init__(self, units=64, num_blocks=3, classes=10, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.inp = nn.Dense(units)
            self.blocks = nn.HybridSequential()
            with self.blocks.name_scope():
                for _ in range(num_blocks):
                    self.blocks.add(ResidualBlock(units))
            self.out = nn.Dense(classes)

    def hybrid_forward(self, F, x):
        return self.out(self.blocks(self.inp(x)))


def residual_mlp_ref(net, x):
    h = dense_ref(net.inp, x)
    for block in net.blocks:
        t = relu(dense_ref(block.dense1, h))
        h = h + relu(dense_ref(block.dense2, t))
    return dense_ref(net.out, h)


def test_residual_mlp_every_state(tmp_path):
    net = ResidualMLP(units=32, num_blocks=2)
    net.initialize(init=init.Xavier())
    assert net.inp.weight.shape == (32, -1)            # deferred
    x = np.random.default_rng(0).standard_normal((5, 7)).astype(np.float32)
    y = net(x)
    assert compiled(net)
    assert net.inp.weight.shape == (32, 7)             # inferred
    np.testing.assert_allclose(y, residual_mlp_ref(net, x), rtol=1e-4,
                               atol=1e-5)
    # saved and loaded into a deferred twin
    path = tmp_path / "res.npz"
    net.save_parameters(str(path))
    twin = ResidualMLP(units=32, num_blocks=2)
    twin.load_parameters(str(path))
    np.testing.assert_array_equal(twin(x), y)
    # pickled and deep-copied, before and after the first forward
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone(x), y)
        assert compiled(clone)
    fresh = ResidualMLP(units=32, num_blocks=2)
    fresh.initialize()
    clone = pickle.loads(pickle.dumps(fresh))
    assert clone.inp.weight.shape == (32, -1)
    assert clone(x).shape == (5, 10)
    # under threads: every call equals the single-threaded answer
    outs = []

    def work():
        for _ in range(50):
            outs.append(net(x))

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(outs) == 200
    for o in outs:
        np.testing.assert_array_equal(o, y)


def test_concat_infers_channels_from_both_branches():
    net = M.ConcatCNN()
    net.initialize()
    x = np.random.default_rng(1).random((2, 3, 16, 16), dtype=np.float32)
    net(x)
    assert net.bn.gamma.shape == (12,)                  # 8 + 4 channels
    assert net.fc.weight.shape == (10, 12 * 8 * 8)
    assert compiled(net)


def test_inception_like_matches_numpy():
    net = M.InceptionLike()
    net.initialize(init=init.Xavier())
    x = np.random.default_rng(2).random((2, 3, 8, 8), dtype=np.float32)
    y = net(x)
    assert compiled(net)
    # the same block on the eager path (hybrid_forward on NumPy arrays,
    # every child compiled on its own) is an independent second route
    eager = nn.HybridBlock.forward(net, x)
    np.testing.assert_allclose(y, eager, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Hand-written HybridBlocks


class TwoIn(nn.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.a = nn.Dense(6)
            self.b = nn.Dense(6)

    def hybrid_forward(self, F, x, y):
        return F.relu(self.a(x) + self.b(y))


class TwoOut(nn.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.body = nn.Dense(8, activation="tanh")
            self.head1 = nn.Dense(3)
            self.head2 = nn.Dense(2)

    def hybrid_forward(self, F, x):
        h = self.body(x)
        return self.head1(h), F.softmax(self.head2(h))


class Scaled(nn.HybridBlock):
    """Own parameters as keyword arguments, broadcast against the data."""

    def __init__(self, channels, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.scale = self.params.get("scale", shape=(channels, 1, 1),
                                         init=init.Normal(1.0))
            self.shift = self.params.get("shift", shape=(channels, 1, 1),
                                         init=init.Normal(1.0))

    def hybrid_forward(self, F, x, scale, shift):
        return F.broadcast_add(F.broadcast_mul(x, scale), shift) * 0.5 - 1


class Eager(nn.HybridBlock):
    """Python control flow on values: cannot be traced."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(4)

    def hybrid_forward(self, F, x):
        y = self.dense(x)
        if float(y.sum()) > 0:
            return y
        return -y


def test_two_inputs():
    net = TwoIn()
    net.initialize()
    rng = np.random.default_rng(3)
    x = rng.random((4, 5), dtype=np.float32)
    y = rng.random((4, 7), dtype=np.float32)
    out = net(x, y)
    assert compiled(net)
    ref = relu(dense_ref(net.a, x) + dense_ref(net.b, y))
    np.testing.assert_allclose(out, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(net(x, y), out)
    with pytest.raises(fl.ShapeError, match="batch"):
        net(x, y[:3])


def test_two_outputs_are_a_tuple():
    net = TwoOut()
    net.initialize()
    x = np.random.default_rng(4).random((3, 5), dtype=np.float32)
    o1, o2 = net(x)
    assert compiled(net)
    h = np.tanh(dense_ref(net.body, x))
    np.testing.assert_allclose(o1, dense_ref(net.head1, h), rtol=1e-5,
                               atol=1e-6)
    z = dense_ref(net.head2, h)
    e = np.exp(z - z.max(axis=1, keepdims=True))
    np.testing.assert_allclose(o2, e / e.sum(axis=1, keepdims=True),
                               rtol=1e-5, atol=1e-6)
    again = net(x)
    assert isinstance(again, tuple) and len(again) == 2


def test_own_parameters_broadcast():
    net = Scaled(3)
    net.initialize()
    x = np.random.default_rng(5).random((2, 3, 4, 5))
    out = net(x)
    assert compiled(net)
    s = net.scale.data().astype(np.float64)
    b = net.shift.data().astype(np.float64)
    np.testing.assert_allclose(out, (x * s + b) * 0.5 - 1, rtol=1e-5,
                               atol=1e-6)


def test_parameter_with_a_batch_axis_of_one_broadcasts_compiled():
    class Scale(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            self.s = self.params.get("s", shape=(1, 4, 1, 1),
                                     init=init.Normal(1.0))

        def hybrid_forward(self, F, x, s):
            return F.broadcast_mul(x, s)

    net = Scale()
    net.initialize()
    x = np.random.default_rng(16).random((2, 4, 3, 3))
    y = net(x)
    assert compiled(net), net._eager_reason
    np.testing.assert_allclose(y, x * net.s.data(), rtol=1e-6)


def test_untraceable_block_runs_eagerly_and_says_why(capsys):
    net = Eager()
    net.initialize()
    x = np.random.default_rng(6).random((2, 3), dtype=np.float32)
    y = net(x)
    assert net._plan is None and net._eager_reason is not None
    z = dense_ref(net.dense, x)
    np.testing.assert_allclose(y, z if z.sum() > 0 else -z, rtol=1e-5)
    report = fl.explain(net, x)
    assert f"Eager '{net.name}'" in report
    assert "cannot be compiled" in report and "batch axis" in report
    # the child still runs compiled on its own
    assert net.dense._plan is not None
    # and a parent of an untraceable block runs eagerly too, correctly
    outer = nn.HybridSequential()
    outer.add(Eager(), nn.Dense(2))
    outer.initialize()
    assert outer(x).shape == (2, 2)
    assert outer._eager_reason is not None


def test_python_forward_child_makes_parent_eager():
    class Py(nn.Block):
        def forward(self, x):
            return np.tanh(x)

    class Parent(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.py = Py()
                self.out = nn.Dense(3)

        def hybrid_forward(self, F, x):
            return self.out(self.py(x))

    net = Parent()
    net.initialize()
    x = np.random.default_rng(7).random((2, 4), dtype=np.float32)
    y = net(x)
    np.testing.assert_allclose(y, dense_ref(net.out, np.tanh(x)), rtol=1e-5,
                               atol=1e-6)
    assert "Python" in fl.explain(net, x, file=None)


def test_hybridize_is_accepted():
    net = M.ResidualMLP(units=8, num_blocks=1)
    net.hybridize()
    net.initialize()
    assert net(np.ones((1, 3))).shape == (1, 10)


# ---------------------------------------------------------------------------
# Containers and layers


def test_hybrid_concurrent_and_identity():
    net = nn.HybridSequential()
    branches = nn.HybridConcurrent(axis=1)
    branches.add(nn.Dense(3), nn.Identity(), nn.Dense(2, activation="relu"))
    net.add(branches, nn.Dense(4))
    net.initialize()
    x = np.random.default_rng(8).random((5, 6), dtype=np.float32)
    y = net(x)
    assert compiled(net)
    cat = np.concatenate([dense_ref(branches[0], x), x,
                          relu(dense_ref(branches[2], x))], axis=1)
    np.testing.assert_allclose(y, dense_ref(net[1], cat), rtol=1e-5,
                               atol=1e-6)
    assert net[1].weight.shape == (4, 3 + 6 + 2)
    from fastlazy.contrib import nn as contrib_nn
    assert contrib_nn.HybridConcurrent is nn.HybridConcurrent


def test_lambdas():
    x = np.random.default_rng(9).standard_normal((3, 4)).astype(np.float32)
    by_name = nn.HybridLambda("tanh")
    np.testing.assert_allclose(by_name(x), np.tanh(x), rtol=1e-6)
    fn = nn.HybridLambda(lambda F, v: F.clip(v, 0, 6))
    np.testing.assert_array_equal(fn(x * 10), np.clip(x * 10, 0, 6))
    eager = nn.Lambda(lambda v: v[:, ::-1])
    np.testing.assert_array_equal(eager(x), x[:, ::-1])
    with pytest.raises(ValueError, match="no operator"):
        nn.HybridLambda("no_such_op")


def test_a_lambda_is_the_first_use_of_the_operators():
    # a fresh interpreter, where fastlazy.ops is not imported yet: the
    # lambda's "from . import ops" once recursed through fl.__getattr__
    import subprocess
    code = ("import sys\n"
            "from fastlazy import nn\n"
            "assert 'fastlazy.ops' not in sys.modules\n"
            "block = nn.HybridLambda(lambda F, x: F.relu(x))\n"
            "import fastlazy as fl\n"
            "assert fl.ops is fl.F is sys.modules['fastlazy.ops']\n")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]


ACT_LAYERS = [
    (lambda: nn.LeakyReLU(0.1), lambda v: np.where(v > 0, v, 0.1 * v)),
    (lambda: nn.ELU(0.5), lambda v: np.where(v > 0, v, 0.5 * np.expm1(v))),
    (lambda: nn.SELU(), lambda v: 1.0507009873554805 * np.where(
        v > 0, v, 1.6732632423543772 * np.expm1(v))),
    (lambda: nn.Swish(2.0), lambda v: v / (1 + np.exp(-2.0 * v))),
    (lambda: nn.GELU(), None),
]


@pytest.mark.parametrize("make,ref", ACT_LAYERS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_activation_layers(make, ref, dtype):
    x = np.random.default_rng(10).standard_normal((4, 6)).astype(dtype) * 3
    layer = make()
    y = layer(x)
    assert y.dtype == dtype
    if ref is None:
        import math
        erf = np.vectorize(math.erf, otypes=[np.float64])
        ref = lambda v: 0.5 * v * (1 + erf(v / np.sqrt(2)))  # noqa: E731
    np.testing.assert_allclose(y, ref(x.astype(np.float64)),
                               rtol=1e-5 if dtype == np.float32 else 1e-12,
                               atol=1e-6 if dtype == np.float32 else 1e-12)


def test_prelu_alpha_is_a_parameter():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(3, 1), nn.PReLU(in_channels=3))
    net.initialize()
    x = np.random.default_rng(11).standard_normal((2, 2, 4, 4))
    net[1].alpha.set_data(np.array([0.1, 0.2, 0.3]))
    y = net(x)
    assert compiled(net)
    conv = net[0](x).astype(np.float64)
    a = np.array([0.1, 0.2, 0.3]).reshape(1, 3, 1, 1)
    np.testing.assert_allclose(y, np.where(conv > 0, conv, a * conv),
                               rtol=1e-5, atol=1e-6)
    assert "alpha" in net.collect_params().keys().__iter__().__next__() or \
        any(k.endswith("alpha") for k in net.collect_params().keys())
    one = nn.PReLU()
    one.initialize()
    np.testing.assert_allclose(one(np.array([[-4.0, 2.0]])), [[-1.0, 2.0]])


# ---------------------------------------------------------------------------
# Each F operator: compiled equals eager


OPS = [
    ("relu", lambda F, x: F.relu(x)),
    ("softmax axis 1", lambda F, x: F.softmax(x, axis=1)),
    ("log_softmax", lambda F, x: F.log_softmax(x)),
    ("clip", lambda F, x: F.clip(x, -0.5, 0.5)),
    ("reshape 0 -1", lambda F, x: F.reshape(x, (0, -1))),
    ("flatten", lambda F, x: F.flatten(x)),
    ("concat", lambda F, x: F.concat(x, F.tanh(x), dim=1)),
    ("concat last", lambda F, x: F.concat(x, x * 2, dim=-1)),
    ("slice_axis", lambda F, x: F.slice_axis(x, axis=1, begin=1, end=3)),
    ("slice neg", lambda F, x: F.slice_axis(x, axis=-1, begin=-2,
                                            end=None)),
    ("mean", lambda F, x: F.mean(x, axis=(2, 3))),
    ("mean keepdims", lambda F, x: F.mean(x, axis=-1, keepdims=True)),
    ("sum", lambda F, x: F.sum(x, axis=1)),
    ("max", lambda F, x: F.max(x, axis=2)),
    ("add_n", lambda F, x: F.add_n(x, F.sigmoid(x), x * x)),
    ("scalars", lambda F, x: (2 - x) / 4 + 1 - (x * 3) / (1 + F.relu(x))),
    ("pow", lambda F, x: F.relu(x) ** 2),
    ("neg", lambda F, x: -x),
    ("broadcast", lambda F, x: F.broadcast_mul(
        x, F.mean(x, axis=1, keepdims=True))),
    ("maximum", lambda F, x: F.broadcast_maximum(x, F.tanh(x))),
    ("leaky", lambda F, x: F.LeakyReLU(x, act_type="leaky", slope=0.2)),
    ("elu", lambda F, x: F.LeakyReLU(x, act_type="elu", slope=1.0)),
    ("identity", lambda F, x: F.identity(x) + 0),
    ("activation", lambda F, x: F.Activation(x, act_type="softrelu")),
    ("pooling", lambda F, x: F.Pooling(x, kernel=(2, 2), stride=(2, 2),
                                       pool_type="avg")),
    ("global pool", lambda F, x: F.Pooling(x, global_pool=True,
                                           pool_type="max")),
    ("layernorm", lambda F, x: F.LayerNorm(x, axis=1)),
]


@pytest.mark.parametrize("name,fn", OPS, ids=[o[0] for o in OPS])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_operator_compiled_equals_eager(name, fn, dtype):
    x = np.random.default_rng(12).standard_normal((3, 4, 5, 6)).astype(dtype)
    block = nn.HybridLambda(fn)
    y = block(x)
    assert block._eager_reason is None and block._plan is not None, \
        block._eager_reason
    eager = fn(fl.F, x)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(y, eager, rtol=tol, atol=tol)
    assert y.dtype == dtype


def test_batch_axis_operators_fall_back_to_eager():
    block = nn.HybridLambda(lambda F, x: F.concat(x, x, dim=0))
    x = np.ones((2, 3), np.float32)
    assert block(x).shape == (4, 3)
    assert block._eager_reason is not None
    assert "batch" in block._eager_reason[1]


def test_shape_conflict_in_a_graph_changes_nothing(ref):
    class Bad(nn.HybridBlock):
        def __init__(self):
            super().__init__()
            with self.name_scope():
                self.a = nn.Dense(4)
                self.b = nn.Dense(5)

        def hybrid_forward(self, F, x):
            return self.a(x) + self.b(x)        # 4 vs 5 features

    net = Bad()
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises(fl.ShapeError, match="broadcast"):
        net(np.ones((2, 3)))
    assert ref.snapshot(net) == before
    assert net.a.weight.shape == (4, -1)


# ---------------------------------------------------------------------------
# Buffers are reused once dead


def test_a_long_residual_chain_reuses_few_buffers():
    net = M.ResidualMLP(units=16, num_blocks=8)
    net.initialize()
    net(np.ones((1, 4), np.float32))
    slots, sizes = net._plan.buffer_slots
    used = {s for s in slots if s >= 0}
    assert len(used) <= 4, sizes          # 8 blocks x 3 buffers each


# ---------------------------------------------------------------------------
# Random DAGs against NumPy


@st.composite
def dags(draw):
    """A random program over a list of values: Dense layers, residual adds
    and concatenations of earlier values."""
    n = draw(st.integers(1, 7))
    prog = []
    for i in range(n):
        kind = draw(st.sampled_from(["dense", "add", "concat", "act"]))
        a = draw(st.integers(0, i))
        b = draw(st.integers(0, i))
        units = draw(st.integers(1, 9))
        act = draw(st.sampled_from([None, "relu", "tanh"]))
        prog.append((kind, a, b, units, act))
    return prog


class Program(nn.HybridBlock):
    def __init__(self, prog):
        super().__init__()
        self.prog = prog
        with self.name_scope():
            self.layers = nn.HybridSequential()
            for kind, a, b, units, act in prog:
                self.layers.add(nn.Dense(units, activation=act)
                                if kind == "dense" else nn.Identity())

    def hybrid_forward(self, F, x):
        vals = [x]
        for (kind, a, b, units, act), layer in zip(self.prog, self.layers):
            va, vb = vals[a], vals[b]
            if kind == "dense":
                vals.append(layer(va))
            elif kind == "act":
                vals.append(F.tanh(va))
            elif kind == "concat":
                vals.append(F.concat(va, vb, dim=1))
            else:
                # add where the widths agree, else concat
                if _width(va) == _width(vb):
                    vals.append(va + vb)
                else:
                    vals.append(F.concat(va, vb, dim=1))
        return vals[-1]


def _width(v):
    return v.shape[1]


@given(prog=dags(), k=st.integers(1, 6), n=st.integers(1, 5),
       seed=st.integers(0, 2 ** 31))
def test_random_dags_match_numpy(prog, k, n, seed):
    net = Program(prog)
    net.initialize(init=init.Uniform(0.5))
    x = np.random.default_rng(seed).standard_normal((n, k))
    y = net(x)
    assert compiled(net), net._eager_reason
    eager = nn.HybridBlock.forward(net, x.astype(np.float32))
    np.testing.assert_allclose(y, eager, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------
# BatchNorm folded into the Dense or Conv2D before it, wherever it alone
# reads that layer's output


def bn_ref(bn, z, axis=1):
    shape = [1] * z.ndim
    shape[axis] = -1
    g = bn.gamma.data().astype(np.float64).reshape(shape)
    b = bn.beta.data().astype(np.float64).reshape(shape)
    m = bn.running_mean.data().astype(np.float64).reshape(shape)
    v = bn.running_var.data().astype(np.float64).reshape(shape)
    return (z - m) / np.sqrt(v + bn._eps) * g + b


def randomize_bn(bn, rng):
    c = bn.gamma.shape[0]
    bn.gamma.set_data(rng.uniform(0.5, 1.5, c))
    bn.beta.set_data(rng.uniform(-0.2, 0.2, c))
    bn.running_mean.set_data(rng.uniform(-0.2, 0.2, c))
    bn.running_var.set_data(rng.uniform(0.5, 1.5, c))


@pytest.mark.parametrize("route", ["auto", "own", "blas", "packed", "dot"])
@pytest.mark.parametrize("batch", [1, 3, 64])
@pytest.mark.parametrize("act", [None, "relu", "sigmoid"])
def test_dense_batchnorm_folds(route, batch, act):
    from fastlazy import _compile, _plan, _steps
    net = nn.HybridSequential()
    net.add(nn.Dense(96), nn.BatchNorm())
    if act:
        net.add(nn.Activation(act))
    net.initialize(init=init.Xavier())
    rng = np.random.default_rng(13)
    x = rng.standard_normal((batch, 40)).astype(np.float32)
    net(x)
    randomize_bn(net[1], rng)
    old = _plan.set_tuning(kernel_route=route)
    try:
        y = net(x)
        kinds = [type(s).__name__ for s in
                 _compile.fused_steps(net, x.shape)]
        assert kinds == ["DenseStep"]
        z = bn_ref(net[1], dense_ref(net[0], x))
        if act == "relu":
            z = relu(z)
        elif act == "sigmoid":
            z = 1 / (1 + np.exp(-z))
        np.testing.assert_allclose(y, z, rtol=1e-4, atol=1e-5)
        # writes to the BatchNorm are seen at the next call
        net[1].running_mean.set_data(np.zeros(96))
        z2 = bn_ref(net[1], dense_ref(net[0], x))
        if act == "relu":
            z2 = relu(z2)
        elif act == "sigmoid":
            z2 = 1 / (1 + np.exp(-z2))
        np.testing.assert_allclose(net(x), z2, rtol=1e-4, atol=1e-5)
        off = _steps.set_batchnorm_fusion(False)
        try:
            np.testing.assert_allclose(net(x), z2, rtol=1e-4, atol=1e-5)
        finally:
            _steps.set_batchnorm_fusion(off)
    finally:
        _plan.set_tuning(kernel_route=old[0])


def test_batchnorm_folds_inside_a_graph_not_when_shared():
    from fastlazy import _compile

    class Branchy(nn.HybridBlock):
        def __init__(self, share):
            super().__init__()
            self.share = share
            with self.name_scope():
                self.conv = nn.Conv2D(4, 3, padding=1)
                self.bn = nn.BatchNorm()
                self.other = nn.Conv2D(4, 1)

        def hybrid_forward(self, F, x):
            c = self.conv(x)
            y = F.relu(self.bn(c))
            if self.share:          # the conv's output read twice
                return y + c
            return y + self.other(x)

    x = np.random.default_rng(14).standard_normal((2, 3, 6, 6))
    for share, expect in ((False, ["ConvStep", "ConvStep", "BinaryStep"]),
                          (True, ["ConvStep", "BatchNormStep",
                                  "BinaryStep"])):
        net = Branchy(share)
        net.initialize()
        y = net(x)
        assert compiled(net)
        randomize_bn(net.bn, np.random.default_rng(15))
        y = net(x)
        kinds = [type(s).__name__ for s in _compile.fused_steps(net, x.shape)]
        assert kinds == expect
        c = net.conv(x).astype(np.float64)
        ref = relu(bn_ref(net.bn, c))
        ref = ref + (c if share else net.other(x))
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("level", [0, 3, 4])
def test_relu6_fuses_into_the_layer_before(level):
    """F.clip(x, 0, 6) (MobileNet's relu6) is a kernel activation: folded
    into the Conv2D (depthwise too), BatchNorm or Dense before it, at every
    instruction-set level, with NaN kept."""
    from conftest import require_isa
    from fastlazy import _compile, _plan
    require_isa(level)
    try:
        relu6 = nn.HybridLambda(lambda F, x: F.clip(x, 0, 6))
        net = nn.HybridSequential()
        net.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), relu6,
                nn.Conv2D(8, 3, padding=1, groups=8),
                nn.HybridLambda(lambda F, x: F.clip(x, 0, 6)),
                nn.Flatten(), nn.Dense(16),
                nn.HybridLambda(lambda F, x: F.clip(x, 0, 6)))
        net.initialize(init=init.Normal(2.0))
        x = np.random.default_rng(17).standard_normal((2, 3, 6, 6)) * 4
        x[0, 0, 2, 2] = np.nan
        y = net(x)
        steps = _compile.fused_steps(net, x.shape)
        assert [type(s).__name__ for s in steps] == ["ConvStep", "ConvStep",
                                                     "DenseStep"]
        assert all(s.act == _plan.RELU6 for s in steps)
        # the reference: each layer on its own, then NumPy's clip
        def clip(v):
            return np.where(np.isnan(v), v, np.clip(v, 0, 6))
        c = clip(bn_ref(net[1], net[0](x).astype(np.float64)))
        d = clip(net[3](c.astype(np.float32)).astype(np.float64))
        ref = clip(dense_ref(net[6], d))
        np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-4)
        assert np.isnan(y[0]).any() and not np.isnan(y[1]).any()
        assert y[~np.isnan(y)].max() <= 6 and y[~np.isnan(y)].min() >= 0
    finally:
        _plan.set_isa(None)
