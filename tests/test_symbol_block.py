"""Exported MXNet graphs with branches as one compiled block:
``fl.load_mxnet_export`` and ``fl.SymbolBlock.imports``.

Real exports written by MXNet 1.9.1 (``tests/data/mxnet_graphs``, see its
README: a concat CNN and MobileNetV2 0.25, whose residual additions and
relu6 clips are branches) must reproduce MXNet's output and compile into
one plan.  Small graphs written here in MXNet's JSON format (nodes with
string attributes, ``arg_nodes``, ``heads``) cover each operator, checked
against NumPy computed from the same weights, compiled and eager.
"""

import copy
import json
import math
import pathlib
import pickle

import numpy as np
import pytest

import fastlazy as fl
from fastlazy.block import _NameScope
from test_mxnet_load import mx_params

GRAPHS = pathlib.Path(__file__).parent / "data" / "mxnet_graphs"
F32 = np.dtype("float32")
TOL = dict(rtol=1e-5, atol=2e-6)


# ---------------------------------------------------------------------------
# Writing graphs in MXNet's format


class Graph:
    """An exported ``-symbol.json`` graph, node by node.  ``var`` and
    ``op`` return the node's index; an input is an index or (index,
    output)."""

    def __init__(self):
        self.nodes = []
        self.arg_nodes = []

    def var(self, name, shape=None):
        node = {"op": "null", "name": name, "inputs": []}
        if shape is not None:
            node["attrs"] = {"__shape__": str(tuple(shape))}
        self.arg_nodes.append(len(self.nodes))
        self.nodes.append(node)
        return len(self.nodes) - 1

    def op(self, op, name, *inputs, **attrs):
        entries = [[i, 0, 0] if isinstance(i, int) else [i[0], i[1], 0]
                   for i in inputs]
        node = {"op": op, "name": name, "inputs": entries}
        if attrs:
            node["attrs"] = {k: str(v) for k, v in attrs.items()}
        self.nodes.append(node)
        return len(self.nodes) - 1

    def json(self, *heads):
        heads = heads or (len(self.nodes) - 1,)
        return {"nodes": self.nodes, "arg_nodes": self.arg_nodes,
                "heads": [[h, 0, 0] if isinstance(h, int) else
                          [h[0], h[1], 0] for h in heads],
                "attrs": {"mxnet_version": ["int", 10901]}}


def export(folder, graph, arrays, name="model"):
    """Write ``name-symbol.json`` and ``name-0000.params``; the prefix."""
    (folder / f"{name}-symbol.json").write_text(json.dumps(graph))
    (folder / f"{name}-0000.params").write_bytes(mx_params(arrays))
    return folder / name


def rand(rng, *shape, low=-1.0, high=1.0):
    return rng.uniform(low, high, size=shape).astype(F32)


def compiled(net, *xs):
    """The net's output, after checking it runs as one compiled plan."""
    report = fl.explain(net, *xs, file=open("/dev/null", "w"))
    assert "compiled: one plan" in report, report
    out = net(*xs)
    assert net._eager_reason is None and net._plan is not None
    return out


def check(net, xs, expected, tol=TOL):
    """Compiled and eager outputs against NumPy's ``expected``."""
    xs = xs if isinstance(xs, tuple) else (xs,)
    for out in (compiled(net, *xs), net.forward(*xs)):
        outs = out if isinstance(out, tuple) else (out,)
        exp = expected if isinstance(expected, tuple) else (expected,)
        assert len(outs) == len(exp)
        for o, e in zip(outs, exp):
            assert o.shape == e.shape
            np.testing.assert_allclose(o, e, **tol)


def snapshot(folder):
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


# ---------------------------------------------------------------------------
# MXNet's own exports


def mxnet_io(name):
    with np.load(GRAPHS / f"{name}-export.io.npz") as data:
        return data["x"], data["y"]


EXPORTS = ["concat_cnn", "mobilenetv2_0.25"]


@pytest.mark.parametrize("name", EXPORTS)
def test_real_export_reproduces_mxnet_in_one_plan(name):
    net = fl.load_mxnet_export(GRAPHS / name)
    assert isinstance(net, fl.SymbolBlock)
    x, y = mxnet_io(name)
    out = compiled(net, x)
    assert out.dtype == F32 and out.shape == y.shape
    np.testing.assert_allclose(out, y, **TOL)
    np.testing.assert_allclose(net.forward(x), y, **TOL)      # eager
    # Gluon's way, same result
    again = fl.SymbolBlock.imports(GRAPHS / f"{name}-symbol.json", "data",
                                   GRAPHS / f"{name}-0000.params")
    np.testing.assert_array_equal(again(x), out)


def test_real_export_in_float64_and_from_threads():
    import threading
    x, y = mxnet_io("concat_cnn")
    net64 = fl.load_mxnet_export(GRAPHS / "concat_cnn", dtype="float64")
    assert {p.dtype for p in net64.collect_params().values()} == \
        {np.dtype("float64")}
    out = compiled(net64, x.astype(np.float64))
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, y, **TOL)
    # the first call from several threads at once: one plan, same results
    net = fl.load_mxnet_export(GRAPHS / "concat_cnn")
    outs = [None] * 4
    start = threading.Barrier(4)

    def run(i):
        start.wait()
        outs[i] = net(x)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in outs:
        np.testing.assert_array_equal(o, outs[0])
    np.testing.assert_allclose(outs[0], y, **TOL)


def test_mobilenet_parameters_keep_mxnet_names():
    net = fl.load_mxnet_export(GRAPHS / "mobilenetv2_0.25")
    params = net.collect_params()
    assert len(params) == 266
    conv0 = params["mobilenetv20_features_conv0_weight"]
    assert conv0.shape == (8, 3, 3, 3)
    assert "mobilenetv20_features_batchnorm0_running_var" in params
    # structural keys are the names
    assert list(net._collect_params_with_prefix()) == list(params)
    text = repr(net)
    assert "Convolution x54" in text and "elemwise_add x10" in text


def test_concat_cnn_lifecycle(tmp_path):
    """save/load, pickle, deepcopy, a fresh unset block loading the file."""
    name = "concat_cnn"
    net = fl.load_mxnet_export(GRAPHS / name)
    x, y = mxnet_io(name)
    ref = net(x)
    net.save_parameters(tmp_path / "cnn.npz")
    with np.load(tmp_path / "cnn.npz") as saved:
        assert sorted(saved.files) == sorted(net.collect_params())
    fresh = fl.SymbolBlock.imports(GRAPHS / f"{name}-symbol.json", ["data"])
    assert {p.state for p in fresh.collect_params().values()} == {"unset"}
    assert fresh.collect_params()["concatcnn0_conv0_weight"].shape == \
        (8, -1, 3, 3)
    with pytest.raises(fl.DeferredInitializationError):
        fresh(x)
    fresh.load_parameters(tmp_path / "cnn.npz")
    np.testing.assert_array_equal(fresh(x), ref)
    other = fl.SymbolBlock.imports(GRAPHS / f"{name}-symbol.json", "data")
    other.load_parameters(GRAPHS / f"{name}-0000.params")   # arg:/aux: keys
    np.testing.assert_array_equal(other(x), ref)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net)),
                  pickle.loads(pickle.dumps(fresh))):
        np.testing.assert_array_equal(compiled(clone, x), ref)
    # share_parameters: the very same objects, matched by name
    shared = fl.SymbolBlock.imports(GRAPHS / f"{name}-symbol.json", "data")
    shared.share_parameters(net.collect_params())
    assert shared.collect_params()["concatcnn0_dense0_weight"] is \
        net.collect_params()["concatcnn0_dense0_weight"]
    np.testing.assert_array_equal(shared(x), ref)
    # a clone is independent
    clone = copy.deepcopy(net)
    clone.collect_params()["concatcnn0_dense0_bias"].set_data(
        np.zeros(10, F32))
    np.testing.assert_array_equal(net(x), ref)
    assert not np.array_equal(clone(x), ref)


def test_constructor_defers_shapes_and_shares_parameters():
    rng = np.random.default_rng(0)
    g = Graph()
    data = g.var("data")
    w = g.var("fc_weight", (3, 0))
    h = g.op("FullyConnected", "fc", data, w, num_hidden=3, no_bias=True)
    g.op("Activation", "act", h, act_type="tanh")
    net = fl.SymbolBlock(g.json(), "data")
    param = net.collect_params()["fc_weight"]
    assert param.shape == (3, -1) and param.state == "unset"
    net.initialize(fl.init.Normal(0.5))
    x = rand(rng, 4, 5)
    out = net(x)                       # infers (3, 5), then initializes
    assert param.shape == (3, 5)
    check(net, x, np.tanh(x @ param.data().T))
    twin = fl.SymbolBlock(json.dumps(g.json()), ["data"],
                          params=net.collect_params())
    assert twin.collect_params()["fc_weight"] is param
    np.testing.assert_array_equal(twin(x), out)


# ---------------------------------------------------------------------------
# Hand-written graphs, against NumPy


def fc_np(x, w, b=None):
    y = x.reshape(len(x), -1) @ w.T
    return y if b is None else y + b


def softmax_np(v, axis):
    e = np.exp(v - v.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_residual_add(tmp_path):
    rng = np.random.default_rng(1)
    g = Graph()
    data = g.var("data")
    h = g.op("FullyConnected", "dense0_fwd", data, g.var("dense0_weight"),
             g.var("dense0_bias"), num_hidden=8, no_bias=False, flatten=True)
    h = g.op("Activation", "dense0_relu_fwd", h, act_type="relu")
    h = g.op("FullyConnected", "dense1_fwd", h, g.var("dense1_weight"),
             g.var("dense1_bias"), num_hidden=6, no_bias=False, flatten=True)
    g.op("elemwise_add", "block0__plus0", h, data)
    arrays = {"arg:dense0_weight": rand(rng, 8, 6),
              "arg:dense0_bias": rand(rng, 8),
              "arg:dense1_weight": rand(rng, 6, 8),
              "arg:dense1_bias": rand(rng, 6)}
    net = fl.load_mxnet_export(export(tmp_path, g.json(), arrays))
    x = rand(rng, 5, 6)
    a = {k[4:]: v for k, v in arrays.items()}
    hid = np.maximum(fc_np(x, a["dense0_weight"], a["dense0_bias"]), 0)
    check(net, x, fc_np(hid, a["dense1_weight"], a["dense1_bias"]) + x)


def test_concat_of_branches_and_add_n(tmp_path):
    rng = np.random.default_rng(2)
    g = Graph()
    data = g.var("data")
    a = g.op("FullyConnected", "a_fwd", data, g.var("a_weight"),
             num_hidden=3, no_bias=True)
    b = g.op("FullyConnected", "b_fwd", data, g.var("b_weight"),
             g.var("b_bias"), num_hidden=2)
    c = g.op("tanh", "c", data)
    cat = g.op("Concat", "concat0", a, b, c, dim=1, num_args=3)
    s = g.op("add_n", "sum0", cat, cat, cat, num_args=3)
    g.op("_mul", "mul0", s, g.op("sigmoid", "sig0", s))
    arrays = {"arg:a_weight": rand(rng, 3, 4), "arg:b_weight": rand(rng, 2, 4),
              "arg:b_bias": rand(rng, 2)}
    net = fl.load_mxnet_export(export(tmp_path, g.json(), arrays))
    x = rand(rng, 3, 4)
    cat = np.concatenate([x @ arrays["arg:a_weight"].T,
                          fc_np(x, arrays["arg:b_weight"],
                                arrays["arg:b_bias"]), np.tanh(x)], axis=1)
    s = 3 * cat
    check(net, x, s / (1 + np.exp(-s)))


def test_two_inputs_in_gluon_order(tmp_path):
    """Gluon names several inputs data0, data1, ...; the graph may meet
    data1 first, the call order is still (data0, data1)."""
    rng = np.random.default_rng(3)
    g = Graph()
    d1 = g.var("data1")
    r1 = g.op("relu", "relu1", d1)
    d0 = g.var("data0")
    h = g.op("FullyConnected", "fc_fwd", d0, g.var("fc_weight"),
             g.var("fc_bias"), num_hidden=4)
    g.op("broadcast_sub", "sub0", h, r1)
    arrays = {"arg:fc_weight": rand(rng, 4, 3), "arg:fc_bias": rand(rng, 4)}
    prefix = export(tmp_path, g.json(), arrays)
    net = fl.load_mxnet_export(prefix)
    x0, x1 = rand(rng, 2, 3), rand(rng, 2, 4)
    expected = fc_np(x0, arrays["arg:fc_weight"], arrays["arg:fc_bias"]) - \
        np.maximum(x1, 0)
    check(net, (x0, x1), expected)
    # imports takes the order it is given
    swapped = fl.SymbolBlock.imports(f"{prefix}-symbol.json",
                                     ["data1", "data0"],
                                     f"{prefix}-0000.params")
    np.testing.assert_allclose(swapped(x1, x0), expected, **TOL)
    with pytest.raises(TypeError, match=r"takes 2 input\(s\).*got 1"):
        net.forward(x0)


def test_two_outputs_and_slice_channel(tmp_path):
    rng = np.random.default_rng(4)
    g = Graph()
    data = g.var("data")
    parts = g.op("SliceChannel", "split0", data, num_outputs=3, axis=1)
    first = g.op("relu", "relu0", (parts, 0))
    third = g.op("_mul_scalar", "twice0", (parts, 2), scalar=2.0)
    rows = g.op("SliceChannel", "split1", data, num_outputs=6, axis=1,
                squeeze_axis=True)
    net = fl.load_mxnet_export(export(tmp_path, g.json(first, third,
                                                       (rows, 4)), {}))
    x = rand(rng, 2, 6, 5)
    check(net, x, (np.maximum(x[:, :2], 0), 2 * x[:, 4:], x[:, 4]))


SCALARS = [("_plus_scalar", lambda x, s: x + s),
           ("_minus_scalar", lambda x, s: x - s),
           ("_rminus_scalar", lambda x, s: s - x),
           ("_mul_scalar", lambda x, s: x * s),
           ("_div_scalar", lambda x, s: x / s),
           ("_rdiv_scalar", lambda x, s: s / x),
           ("_power_scalar", lambda x, s: x ** s),
           ("_maximum_scalar", np.maximum),
           ("_minimum_scalar", np.minimum)]


def test_every_scalar_op(tmp_path):
    rng = np.random.default_rng(5)
    g = Graph()
    data = g.var("data")
    heads = [g.op(op, f"{op}0", data, scalar="1.25") for op, _ in SCALARS]
    net = fl.load_mxnet_export(export(tmp_path, g.json(*heads), {}))
    x = rand(rng, 3, 7, low=0.25, high=2.0)
    check(net, x, tuple(fn(x, np.float32(1.25)) for _, fn in SCALARS))


def test_reshape_codes_slice_axis_mean(tmp_path):
    rng = np.random.default_rng(6)
    g = Graph()
    data = g.var("data")                                     # (N, 2, 3, 4)
    flat = g.op("Reshape", "reshape0", data, shape="(0, -1)")
    split = g.op("reshape", "reshape1", flat, shape="(0, 4, -1)")
    cut = g.op("slice_axis", "slice0", split, axis=2, begin=1, end=5)
    tail = g.op("slice_axis", "slice1", flat, axis=-1, begin=-5, end="None")
    mean = g.op("mean", "mean0", data, axis="(2, 3)")
    kept = g.op("mean", "mean1", data, axis="1", keepdims="True")
    net = fl.load_mxnet_export(export(tmp_path, g.json(cut, tail, mean,
                                                       kept), {}))
    x = rand(rng, 2, 2, 3, 4)
    check(net, x, (x.reshape(2, 4, 6)[:, :, 1:5], x.reshape(2, -1)[:, -5:],
                   x.mean(axis=(2, 3)), x.mean(axis=1, keepdims=True)))


def test_softmax_family(tmp_path):
    rng = np.random.default_rng(7)
    g = Graph()
    data = g.var("data")                                        # (N, 3, 4)
    heads = [g.op("softmax", "softmax0", data, axis=-1),
             g.op("softmax", "softmax1", data, axis=1, temperature="2.0"),
             g.op("log_softmax", "logsoftmax0", data, axis=2),
             g.op("SoftmaxActivation", "sa0", data),
             g.op("SoftmaxActivation", "sa1", data, mode="channel"),
             g.op("SoftmaxOutput", "so0", data, g.var("softmax_label")),
             g.op("SoftmaxOutput", "so1", data, g.var("label2"),
                  multi_output="True")]
    net = fl.load_mxnet_export(export(tmp_path, g.json(*heads), {}))
    assert net._program.inputs == ("data",)        # labels are not inputs
    x = rand(rng, 2, 3, 4, low=-3, high=3)
    inst = softmax_np(x.reshape(2, -1), 1).reshape(x.shape)
    check(net, x, (softmax_np(x, -1), softmax_np(x / 2, 1),
                   np.log(softmax_np(x, 2)), inst, softmax_np(x, 1), inst,
                   softmax_np(x, 1)))


def test_activations_leaky_modes_clip_and_identities(tmp_path):
    rng = np.random.default_rng(8)
    g = Graph()
    data = g.var("data")                                       # (N, 3, 2)
    alpha = g.var("prelu0_alpha", (3,))
    heads = [g.op("Activation", "act0", data, act_type="softrelu"),
             g.op("Activation", "act1", data, act_type="softsign"),
             g.op("LeakyReLU", "leaky0", data, act_type="leaky", slope=0.1),
             g.op("LeakyReLU", "elu0", data, act_type="elu", slope=0.7),
             g.op("LeakyReLU", "selu0", data, act_type="selu"),
             g.op("LeakyReLU", "gelu0", data, act_type="gelu"),
             g.op("LeakyReLU", "prelu0", data, alpha, act_type="prelu"),
             g.op("clip", "relu6", data, a_min=-0.5, a_max="0.25"),
             g.op("Flatten", "flat0", g.op("Dropout", "drop0",
                                           g.op("_copy", "copy0", data),
                                           p=0.5)),
             g.op("BlockGrad", "bg0", g.op("identity", "id0", data))]
    gamma = rand(rng, 3)
    net = fl.load_mxnet_export(export(tmp_path, g.json(*heads),
                                      {"arg:prelu0_alpha": gamma}))
    x = rand(rng, 4, 3, 2, low=-2, high=2)
    v = x.astype(np.float64)
    erf = np.vectorize(math.erf)
    selu = 1.0507009873554805 * np.where(v > 0, v, 1.6732632423543772 *
                                         np.expm1(v))
    check(net, x, (np.log1p(np.exp(v)), v / (1 + abs(v)),
                   np.where(v > 0, v, 0.1 * v),
                   np.where(v > 0, v, 0.7 * np.expm1(v)), selu,
                   0.5 * v * (1 + erf(v / np.sqrt(2))),
                   np.where(v > 0, v, gamma[None, :, None] * v),
                   np.clip(v, -0.5, 0.25), x.reshape(4, -1), x))


def test_norms_conv_pool_and_parameter_operand(tmp_path):
    rng = np.random.default_rng(9)
    g = Graph()
    data = g.var("data")                                    # (N, 2, 5, 5)
    conv = g.op("Convolution", "conv0_fwd", data, g.var("conv0_weight"),
                g.var("conv0_bias"), kernel="(3, 3)", num_filter=4,
                pad="(1, 1)", stride="(1, 1)", no_bias="False")
    bn = g.op("BatchNorm", "bn0_fwd", conv, g.var("bn0_gamma"),
              g.var("bn0_beta"), g.var("bn0_running_mean"),
              g.var("bn0_running_var"), eps=1e-5, fix_gamma="False")
    pool = g.op("Pooling", "pool0_fwd", bn, kernel="(2, 2)",
                stride="(2, 2)", pool_type="avg",
                pooling_convention="full")
    scaled = g.op("broadcast_mul", "scale0", pool, g.var("scale0_s"))
    ln = g.op("LayerNorm", "ln0_fwd", g.op("flatten", "fl0", scaled),
              g.var("ln0_gamma"), g.var("ln0_beta"), eps=1e-5)
    arrays = {"arg:conv0_weight": rand(rng, 4, 2, 3, 3),
              "arg:conv0_bias": rand(rng, 4), "arg:bn0_gamma": rand(rng, 4),
              "arg:bn0_beta": rand(rng, 4),
              "aux:bn0_running_mean": rand(rng, 4),
              "aux:bn0_running_var": rand(rng, 4, low=0.5, high=1.5),
              "arg:scale0_s": rand(rng, 4, 1, 1),
              "arg:ln0_gamma": rand(rng, 36), "arg:ln0_beta": rand(rng, 36)}
    net = fl.load_mxnet_export(export(tmp_path, g.json(ln), arrays))
    a = {k[4:]: v.astype(np.float64) for k, v in arrays.items()}
    x = rand(rng, 2, 2, 5, 5)
    pad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1))).astype(np.float64)
    conv = np.zeros((2, 4, 5, 5))
    for i in range(5):
        for j in range(5):
            conv[:, :, i, j] = np.einsum("nchw,ochw->no",
                                         pad[:, :, i:i + 3, j:j + 3],
                                         a["conv0_weight"])
    conv += a["conv0_bias"][:, None, None]
    c = (slice(None), None, None)
    bn = (conv - a["bn0_running_mean"][c]) / np.sqrt(
        a["bn0_running_var"][c] + 1e-5) * a["bn0_gamma"][c] + \
        a["bn0_beta"][c]
    # 'full' convention: 5x5 -> 3x3, the last window cut by the border
    # (average over what is inside, MXNet counts padding only)
    pool = np.zeros((2, 4, 3, 3))
    for i in range(3):
        for j in range(3):
            pool[:, :, i, j] = bn[:, :, 2 * i:2 * i + 2,
                                  2 * j:2 * j + 2].mean(axis=(2, 3))
    h = (pool * a["scale0_s"]).reshape(2, -1)
    mu, var = h.mean(1, keepdims=True), h.var(1, keepdims=True)
    expected = (h - mu) / np.sqrt(var + 1e-5) * a["ln0_gamma"] + \
        a["ln0_beta"]
    check(net, x, expected, dict(rtol=1e-4, atol=1e-5))


def test_graph_mixing_samples_runs_eagerly_with_the_reason():
    g = Graph()
    data = g.var("data")
    g.op("Concat", "cat0", data, g.op("relu", "relu0", data), dim=0,
         num_args=2)
    net = fl.SymbolBlock(g.json(), "data")
    x = np.linspace(-1, 1, 6, dtype=F32).reshape(2, 3)
    report = fl.explain(net, x, file=open("/dev/null", "w"))
    assert "eager" in report and "concat along the batch axis" in report
    np.testing.assert_array_equal(net(x), np.concatenate([x, np.maximum(
        x, 0)]))
    assert net._eager_reason is not None


def scale_graph(tmp_path, shape):
    g = Graph()
    g.op("broadcast_mul", "scale0", g.var("data"), g.var("scale0_s"))
    rng = np.random.default_rng(11)
    s = rand(rng, *shape)
    net = fl.load_mxnet_export(export(tmp_path, g.json(), {"arg:scale0_s": s}))
    x = rand(rng, 2, 4, 3, 3)
    return net, x, x * s


def test_full_rank_parameter_operand_is_right_on_the_eager_path(tmp_path):
    """Gluon's ``x * self.scale.data()`` with scale (1, C, 1, 1) is exact
    on the eager path too."""
    net, x, expected = scale_graph(tmp_path, (1, 4, 1, 1))
    np.testing.assert_allclose(net(x), expected, **TOL)
    np.testing.assert_allclose(net.forward(x), expected, **TOL)


def test_full_rank_parameter_operand_compiles(tmp_path):
    net, x, expected = scale_graph(tmp_path, (1, 4, 1, 1))
    np.testing.assert_allclose(compiled(net, x), expected, **TOL)


# ---------------------------------------------------------------------------
# Errors: named, and nothing built or changed


def small_graph():
    g = Graph()
    data = g.var("data")
    h = g.op("FullyConnected", "dense0_fwd", data, g.var("dense0_weight"),
             g.var("dense0_bias"), num_hidden=3)
    g.op("relu", "relu0", h)
    return g


def small_arrays():
    rng = np.random.default_rng(10)
    return {"arg:dense0_weight": rand(rng, 3, 4),
            "arg:dense0_bias": rand(rng, 3)}


def test_small_graph_loads():
    """The graph the error tests damage is fine as it is."""
    g = small_graph()
    net = fl.SymbolBlock(g.json(), "data")
    net.initialize()
    x = np.linspace(-1, 1, 8, dtype=F32).reshape(2, 4)
    net(x)                                  # completes (3, -1) to (3, 4)
    w = net.collect_params()["dense0_weight"].data()
    b = net.collect_params()["dense0_bias"].data()
    check(net, x, np.maximum(x @ w.T + b, 0))


def test_unknown_operator_names_node_and_op_and_changes_nothing(tmp_path):
    g = small_graph()
    g.op("Embedding", "embedding0_fwd", 4, g.var("embedding0_weight"))
    prefix = export(tmp_path, g.json(), small_arrays())
    (tmp_path / "model-0000.params").write_bytes(b"not even a file")
    before = snapshot(tmp_path)
    counters = dict(_NameScope._global_counter)
    for load in (lambda: fl.load_mxnet_export(prefix),
                 lambda: fl.SymbolBlock.imports(f"{prefix}-symbol.json",
                                                "data"),
                 lambda: fl.SymbolBlock(g.json(), "data")):
        with pytest.raises(fl.UnsupportedOperatorError) as info:
            load()
        message = str(info.value)
        assert "node 'embedding0_fwd'" in message
        assert "'Embedding'" in message
        assert "model-symbol.json" in message or "<json>" in message
        assert isinstance(info.value, NotImplementedError)
    assert snapshot(tmp_path) == before
    assert _NameScope._global_counter == counters


@pytest.mark.parametrize("op, attrs, words", [
    ("Activation", {"act_type": "mish"}, ["'mish'"]),
    ("Pooling", {"kernel": "(2, 2)", "pool_type": "lp"}, ["'lp'"]),
    ("Convolution", {"kernel": "(3,)", "num_filter": "2"}, ["kernel=(3,)"]),
    ("Dropout", {"mode": "always"}, ["'always'"]),
    ("SoftmaxActivation", {"mode": "batch"}, ["'batch'"]),
    ("Reshape", {"target_shape": "(2, 3)"}, ["target_shape"]),
    ("LayerNorm", {"output_mean_var": "True"}, ["output_mean_var"]),
])
def test_unsupported_attributes(op, attrs, words):
    g = small_graph()
    g.op(op, "bad0", 4, **attrs)
    with pytest.raises(fl.UnsupportedOperatorError) as info:
        fl.SymbolBlock(g.json(), "data")
    message = str(info.value)
    assert "node 'bad0'" in message and op in message
    for word in words:
        assert word in message


def test_cycles_dangling_inputs_and_duplicate_names(tmp_path):
    cases = {}
    g = small_graph()
    g.nodes[3]["inputs"][0] = [4, 0, 0]             # dense0 takes relu0
    cases["cycle"] = (g.json(), r"node 3 \('dense0_fwd'\): input 0 is the "
                                r"output of node 4 \('relu0'\).*cycle")
    g = small_graph()
    g.nodes[4]["inputs"] = [[4, 0, 0]]
    cases["self"] = (g.json(), r"'relu0'.*own output.*cycle")
    g = small_graph()
    g.nodes[4]["inputs"] = [[9, 0, 0]]
    cases["missing node"] = (g.json(), r"'relu0'.*refers to node 9")
    g = small_graph()
    g.nodes[4]["inputs"] = [[3, 1, 0]]
    cases["missing output"] = (g.json(), r"node 'relu0'.*output 1 of node "
                                         r"'dense0_fwd'.*1 output")
    g = small_graph()
    g.nodes[4]["name"] = "dense0_fwd"
    cases["duplicate"] = (g.json(), "duplicate node name")
    g = small_graph()
    json_ = g.json()
    json_["heads"] = [[4, 2, 0]]
    cases["head"] = (json_, "graph's output.*output 2 of node 'relu0'")
    for name, (graph, pattern) in cases.items():
        with pytest.raises(fl.ParameterFileError, match=pattern):
            fl.SymbolBlock(graph, "data")
        prefix = export(tmp_path, graph, small_arrays(), name="m")
        with pytest.raises(ValueError, match=pattern):
            fl.load_mxnet_export(prefix)


def test_missing_and_extra_arrays(tmp_path):
    g = small_graph()
    arrays = small_arrays()
    del arrays["arg:dense0_bias"]
    prefix = export(tmp_path, g.json(), arrays)
    with pytest.raises(fl.ParameterFileError,
                       match=r"no array for 'dense0_bias', the bias of node "
                             r"'dense0_fwd' \(FullyConnected\)"):
        fl.load_mxnet_export(prefix)
    sym, par = f"{prefix}-symbol.json", f"{prefix}-0000.params"
    with pytest.raises(fl.ParameterFileError, match="allow_missing=True"):
        fl.SymbolBlock.imports(sym, "data", par)
    net = fl.SymbolBlock.imports(sym, "data", par, allow_missing=True)
    params = net.collect_params()
    assert params["dense0_bias"].state == "unset"
    assert params["dense0_weight"].state == "initialized"

    arrays = small_arrays()
    arrays["arg:dense1_weight"] = np.ones((2, 2), F32)
    prefix = export(tmp_path, g.json(), arrays)
    with pytest.raises(fl.ParameterFileError,
                       match="'arg:dense1_weight' is the input of no node"):
        fl.load_mxnet_export(prefix)
    net = fl.SymbolBlock.imports(f"{prefix}-symbol.json", "data",
                                 f"{prefix}-0000.params", ignore_extra=True)
    assert "dense1_weight" not in net.collect_params()


def test_wrong_shapes_in_the_file(tmp_path):
    g = small_graph()
    arrays = small_arrays()
    arrays["arg:dense0_weight"] = np.ones((5, 4), F32)     # num_hidden=3
    with pytest.raises(fl.ParameterShapeError,
                       match=r"'arg:dense0_weight' \(weight of node "
                             r"'dense0_fwd'\).*\(5, 4\).*\(3, -1\)"):
        fl.load_mxnet_export(export(tmp_path, g.json(), arrays))
    # the variable's own __shape__ is checked too
    g = small_graph()
    g.nodes[2]["attrs"] = {"__shape__": "(4,)"}           # dense0_bias
    with pytest.raises(fl.ParameterShapeError,
                       match=r"node 'dense0_fwd'.*bias 'dense0_bias'.*\(4,\)"
                             r".*\(3,\)"):
        fl.load_mxnet_export(export(tmp_path, g.json(), small_arrays()))
    # NumPy-mode exports write -1 for an unknown size, as 0 in classic mode
    g = small_graph()
    g.nodes[1]["attrs"] = {"__shape__": "(3, -1)"}
    net = fl.load_mxnet_export(export(tmp_path, g.json(), small_arrays()))
    assert net.collect_params()["dense0_weight"].shape == (3, 4)
    g.nodes[1]["attrs"] = {"__shape__": "(3, -2)"}
    with pytest.raises(fl.ParameterFileError, match=r"dense0_weight.*"
                                                    r"'\(3, -2\)'"):
        fl.load_mxnet_export(export(tmp_path, g.json(), small_arrays()))
    # the same array for two nodes that need other shapes
    g = small_graph()
    g.op("FullyConnected", "dense1_fwd", 4, 1, num_hidden=2, no_bias=True)
    with pytest.raises(fl.ParameterShapeError, match="dense1_fwd"):
        fl.SymbolBlock(g.json(), "data")
    # a shape only the forward pass can see: a ShapeError naming the node
    g = small_graph()
    arrays = small_arrays()
    net = fl.load_mxnet_export(export(tmp_path, g.json(), arrays))
    with pytest.raises(fl.ShapeError, match="node 'dense0_fwd'"):
        net(np.ones((2, 5), F32))
    np.testing.assert_allclose(
        net(np.ones((2, 4), F32)),
        np.maximum(arrays["arg:dense0_weight"].sum(1) +
                   arrays["arg:dense0_bias"], 0)[None].repeat(2, 0),
        **TOL)


def test_input_names_are_checked(tmp_path):
    g = small_graph()
    with pytest.raises(ValueError, match="input 'x' is not a variable.*"
                                         "'data'"):
        fl.SymbolBlock(g.json(), "x")
    with pytest.raises(ValueError, match="'dense0_weight' is the weight of "
                                         "node 'dense0_fwd'"):
        fl.SymbolBlock(g.json(), ["data", "dense0_weight"])
    with pytest.raises(TypeError, match="input_names"):
        fl.SymbolBlock.imports(export(tmp_path, g.json(), {}), [])


def test_mutated_graphs_load_or_fail_cleanly(tmp_path):
    """Damaged attributes, inputs, operators and heads of a real export:
    loading raises ParameterFileError (or ParameterShapeError) or
    UnsupportedOperatorError, never anything else; what loads runs or
    raises a fastlazy, ValueError or TypeError naming the problem."""
    import random
    base = json.loads((GRAPHS / "concat_cnn-symbol.json").read_text())
    params = GRAPHS / "concat_cnn-0000.params"
    x, _ = mxnet_io("concat_cnn")
    values = ["0", "-1", "(0, 0)", "()", "None", "True", "abc", "1e400",
              "(3,)", "(1, 1, 1)", "2", "nan", "-5", "(2, 2)"]
    ops = ["Concat", "relu", "FullyConnected", "null", "elemwise_add",
           "SliceChannel", "Pooling"]
    rng = random.Random(3)
    path = tmp_path / "fuzz-symbol.json"
    loaded = rejected = 0
    for _ in range(250):
        g = copy.deepcopy(base)
        for _ in range(rng.randint(1, 3)):
            node = rng.choice(g["nodes"])
            r = rng.random()
            if r < 0.5 and node.get("attrs"):
                node["attrs"][rng.choice(list(node["attrs"]))] = \
                    rng.choice(values)
            elif r < 0.7 and node["inputs"]:
                rng.choice(node["inputs"])[rng.randint(0, 1)] = \
                    rng.randint(0, 25)
            elif r < 0.8:
                node["op"] = rng.choice(ops)
            elif r < 0.9:
                g["heads"] = [[rng.randint(0, 20), rng.randint(0, 2), 0]]
            elif node["inputs"]:
                node["inputs"].pop()
        path.write_text(json.dumps(g))
        try:
            net = fl.load_mxnet_export(None, symbol_file=path,
                                       param_file=params)
        except (fl.ParameterFileError, fl.UnsupportedOperatorError) as exc:
            assert str(path) in str(exc)
            rejected += 1
            continue
        loaded += 1
        try:
            net(x)
        except (fl.FastLazyError, ValueError, TypeError):
            pass
    assert loaded > 20 and rejected > 100, (loaded, rejected)
