"""fl.onnx.export: every kind of network fastlazy compiles, written as ONNX,
passes onnx.checker and computes in ONNX Runtime what ``net(x)`` computes,
at batch 1 and 7 from one file (the batch axis is dynamic); the failures
are clear errors that leave no file and change nothing."""

import os
import re
import subprocess
import sys
import textwrap

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import init, nn
from fastlazy.model_zoo import vision

onnx = pytest.importorskip(
    "onnx", reason="fl.onnx.export needs the onnx package "
    "(pip install 'fastlazy[onnx]')")


def ort_session(model):
    ort = pytest.importorskip(
        "onnxruntime", reason="the exported files are run with ONNX Runtime "
        "(pip install onnxruntime)")
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    src = model.SerializeToString() if isinstance(model, onnx.ModelProto) \
        else str(model)
    return ort.InferenceSession(src, so, providers=["CPUExecutionProvider"])


def ort_run(model, *xs):
    sess = ort_session(model)
    feeds = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
    return sess.run(None, feeds)


def as_tuple(y):
    return tuple(y) if isinstance(y, (tuple, list)) else (y,)


def check_export(net, tmp_path, make, input_shape=None, opset=17,
                 rtol=1e-4, atol=1e-5, name="net.onnx"):
    """Export ``net``; check the file with onnx.checker, its dynamic batch
    axis and Gluon's parameter names; ONNX Runtime on it equals ``net``
    at batch 1 and 7 (``make(n)``: the inputs for batch n).  Returns the
    loaded model."""
    path = tmp_path / name
    got = fl.onnx.export(net, path, input_shape=input_shape, opset=opset)
    assert got == str(path)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path))
    assert model.opset_import[0].version == opset
    for v in list(model.graph.input) + list(model.graph.output):
        assert v.type.tensor_type.shape.dim[0].dim_param == "N", v
    inits = {t.name: onnx.numpy_helper.to_array(t)
             for t in model.graph.initializer}
    for pname, p in net.collect_params().items():
        if pname in inits:
            np.testing.assert_array_equal(inits[pname], p.data())
    sess = ort_session(path)
    for batch in (1, 7):
        xs = make(batch)
        want = as_tuple(net(*xs))
        feeds = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
        outs = sess.run(None, feeds)
        assert len(outs) == len(want)
        for o, w in zip(outs, want):
            assert o.shape == w.shape
            scale = max(1.0, float(np.abs(w).max()))
            np.testing.assert_allclose(o, w, rtol=rtol, atol=atol * scale)
    return model


def ops_of(model):
    return [n.op_type for n in model.graph.node]


def normal(*shape, seed=0, scale=1.0, dtype=np.float32):
    def make(n):
        rng = np.random.default_rng(seed + n)
        return (scale * rng.standard_normal((n,) + shape)).astype(dtype),
    return make


def randomize_bn(net, seed=1):
    """BatchNorm statistics away from 0 and 1, so the test sees them."""
    rng = np.random.default_rng(seed)
    for name, p in net.collect_params().items():
        c = p.shape
        if name.endswith("running_mean") or name.endswith("beta"):
            p.set_data(rng.uniform(-0.3, 0.3, c))
        elif name.endswith("running_var") or name.endswith("gamma"):
            p.set_data(rng.uniform(0.5, 1.5, c))


# ---------------------------------------------------------------------------
# Networks


class ResidualMLP(nn.HybridBlock):
    def __init__(self, units=16, blocks=2, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.inp = nn.Dense(units, activation="relu")
            self.body = nn.HybridSequential()
            for _ in range(blocks):
                self.body.add(nn.Dense(units, activation="relu"))
            self.out = nn.Dense(4)

    def hybrid_forward(self, F, x):
        h = self.inp(x)
        for layer in self.body:
            h = h + layer(h)
        return self.out(h)


class Branches(nn.HybridBlock):
    """Two branches concatenated, a slice, a mean and a softmax."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.a = nn.Dense(6, activation="tanh")
            self.b = nn.Dense(5, activation="sigmoid")
            self.both = nn.HybridConcurrent(axis=1)
            self.both.add(nn.Dense(3), nn.Dense(2, activation="relu"))
            self.head = nn.Dense(4)

    def hybrid_forward(self, F, x):
        h = F.concat(self.a(x), self.b(x), self.both(x), dim=1)
        part = F.slice_axis(h, axis=1, begin=2, end=9)
        centred = F.broadcast_sub(part, F.mean(part, axis=1, keepdims=True))
        return F.softmax(self.head(centred))


class TwoInTwoOut(nn.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.a = nn.Dense(6)
            self.b = nn.Dense(6)
            self.head1 = nn.Dense(3)
            self.head2 = nn.Dense(2)

    def hybrid_forward(self, F, x, y):
        h = F.relu(self.a(x) + self.b(y))
        return self.head1(h), F.log_softmax(self.head2(h))


class BasicBlock(nn.HybridBlock):
    def __init__(self, channels, stride, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.body = nn.HybridSequential()
            self.body.add(nn.Conv2D(channels, 3, stride, 1, use_bias=False),
                          nn.BatchNorm(), nn.Activation("relu"),
                          nn.Conv2D(channels, 3, 1, 1, use_bias=False),
                          nn.BatchNorm())
            self.down = nn.HybridSequential()
            self.down.add(nn.Conv2D(channels, 1, stride, use_bias=False),
                          nn.BatchNorm())

    def hybrid_forward(self, F, x):
        return F.relu(self.body(x) + self.down(x))


def small_resnet():
    net = nn.HybridSequential()
    net.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            BasicBlock(8, 1), BasicBlock(12, 2), nn.GlobalAvgPool2D(),
            nn.Dense(5))
    return net


def lenet():
    net = nn.Sequential()
    net.add(nn.Conv2D(6, 5, activation="relu"), nn.MaxPool2D(2, 2),
            nn.Conv2D(16, 5, activation="relu"), nn.MaxPool2D(2, 2),
            nn.Flatten(), nn.Dense(120, activation="relu"),
            nn.Dense(84, activation="relu"), nn.Dense(10))
    return net


class SqueezeExcite(nn.HybridBlock):
    """Channel weights reshaped to (N, C, 1, 1): the broadcast's operand
    shapes are not the ones the steps see, so the exporter takes the
    steps' own layout."""

    def __init__(self, c, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.conv = nn.Conv2D(c, 3, padding=1)
            self.fc1 = nn.Dense(c // 2, activation="relu")
            self.fc2 = nn.Dense(c, activation="sigmoid")

    def hybrid_forward(self, F, x):
        h = self.conv(x)
        w = self.fc2(self.fc1(F.mean(h, axis=(2, 3))))
        return F.broadcast_mul(h, F.reshape(w, (0, 0, 1, 1)))


class Scaled(nn.HybridBlock):
    """Own parameters broadcast against the data."""

    def __init__(self, channels, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.scale = self.params.get("scale", shape=(channels, 1, 1),
                                         init=init.Normal(1.0))
            self.shift = self.params.get("shift", shape=(1, channels, 1, 1),
                                         init=init.Normal(1.0))

    def hybrid_forward(self, F, x, scale, shift):
        return F.broadcast_add(F.broadcast_mul(x, scale), shift) * 0.5 - 1


class Untraceable(nn.HybridBlock):
    """Python control flow on values: runs eagerly, cannot be exported."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(4)

    def hybrid_forward(self, F, x):
        y = self.dense(x)
        if float(y.sum()) > 0:
            return y
        return -y


# ---------------------------------------------------------------------------
# The networks of the task, exported and run by ONNX Runtime


def test_textbook_net_is_gemm_relu_gemm_with_gluons_names(tmp_path):
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    net.initialize()
    net(np.ones((2, 20), np.float32))
    # the shape of its last call is the input shape
    model = check_export(net, tmp_path, normal(20))
    assert ops_of(model) == ["Gemm", "Relu", "Gemm"]
    names = [t.name for t in model.graph.initializer]
    assert names == [net[0].weight.name, net[0].bias.name,
                     net[1].weight.name, net[1].bias.name]
    assert re.fullmatch(r"dense\d+_weight", names[0]), names
    assert [t.dims for t in model.graph.initializer] == [
        [256, 20], [256], [10, 256], [10]]
    assert [i.name for i in model.graph.input] == ["data"]
    assert [o.name for o in model.graph.output] == ["output"]
    assert model.producer_name == "fastlazy"


ACTIVATIONS = [
    # (name, layer after a Dense without activation, ONNX op it becomes)
    ("relu", lambda: nn.Activation("relu"), "Relu"),
    ("sigmoid", lambda: nn.Activation("sigmoid"), "Sigmoid"),
    ("tanh", lambda: nn.Activation("tanh"), "Tanh"),
    ("softrelu", lambda: nn.Activation("softrelu"), "Softplus"),
    ("softsign", lambda: nn.Activation("softsign"), "Softsign"),
    ("gelu", lambda: nn.Activation("gelu"), "Erf"),
    ("gelu layer", lambda: nn.GELU(), "Erf"),
    ("silu", lambda: nn.Activation("silu"), "Sigmoid"),
    ("swish", lambda: nn.Swish(), "Sigmoid"),
    ("swish beta", lambda: nn.Swish(1.7), "Sigmoid"),
    ("leaky", lambda: nn.LeakyReLU(0.15), "LeakyRelu"),
    ("elu", lambda: nn.ELU(0.7), "Elu"),
    ("selu", lambda: nn.SELU(), "Selu"),
    ("prelu", lambda: nn.PReLU(init.Constant(0.3)), "PRelu"),
    ("clip", lambda: nn.HybridLambda(lambda F, x: F.clip(x, -0.4, 0.9)),
     "Clip"),
    ("relu6", lambda: nn.HybridLambda(lambda F, x: F.clip(x, 0, 6)), "Clip"),
]


@pytest.mark.parametrize("opset", [13, 17, 20])
@pytest.mark.parametrize("name,layer,op", ACTIVATIONS,
                         ids=[a[0] for a in ACTIVATIONS])
def test_mlp_every_activation(tmp_path, name, layer, op, opset):
    net = nn.Sequential()
    net.add(nn.Dense(16), layer(), nn.Dense(5))
    net.initialize(init.Uniform(0.5))
    model = check_export(net, tmp_path, normal(12, scale=4.0),
                         input_shape=(None, 12), opset=opset)
    ops = ops_of(model)
    if name.startswith("gelu") and opset >= 20:
        assert "Gelu" in ops
    else:
        assert op in ops, ops


@pytest.mark.parametrize("act", ["relu", "sigmoid", "tanh", "softrelu",
                                 "softsign", "gelu", "silu"])
def test_dense_with_its_own_activation(tmp_path, act):
    net = nn.Sequential()
    net.add(nn.Dense(9, activation=act), nn.Dense(3, activation=act))
    net.initialize(init.Uniform(0.5))
    check_export(net, tmp_path, normal(7, scale=3.0), input_shape=(None, 7))


def test_lenet(tmp_path):
    net = lenet()
    net.initialize(init.Xavier())
    model = check_export(net, tmp_path, normal(1, 28, 28),
                         input_shape=(None, 1, 28, 28))
    assert ops_of(model).count("Conv") == 2
    assert ops_of(model).count("MaxPool") == 2
    assert ops_of(model).count("Gemm") == 3


def test_residual_mlp(tmp_path):
    net = ResidualMLP()
    net.initialize(init.Uniform(0.3))
    model = check_export(net, tmp_path, normal(10), input_shape=(None, 10))
    assert ops_of(model).count("Add") == 2


def test_concat_and_branches(tmp_path):
    net = Branches()
    net.initialize(init.Uniform(0.5))
    model = check_export(net, tmp_path, normal(8, scale=2.0),
                         input_shape=(None, 8))
    ops = ops_of(model)
    for op in ("Concat", "Slice", "ReduceMean", "Sub", "Softmax"):
        assert op in ops, ops


def test_resnet_style_cnn_keeps_batchnorm(tmp_path):
    net = small_resnet()
    net.initialize(init.Xavier())
    net.build((None, 3, 12, 12))
    randomize_bn(net)
    model = check_export(net, tmp_path, normal(3, 12, 12),
                         input_shape=(None, 3, 12, 12))
    ops = ops_of(model)
    # BatchNorm is written as BatchNormalization with Gluon's parameters,
    # not folded into the convolution as fastlazy runs it
    assert ops.count("BatchNormalization") == 7
    assert "GlobalAveragePool" in ops
    names = {t.name for t in model.graph.initializer}
    for p in net.collect_params():
        assert p in names


def test_model_zoo_resnet18(tmp_path):
    net = vision.resnet18_v1(classes=10)
    net.initialize(init.Xavier())
    net.build((None, 3, 32, 32))
    randomize_bn(net)
    model = check_export(net, tmp_path, normal(3, 32, 32),
                         input_shape=(None, 3, 32, 32))
    assert {t.name for t in model.graph.initializer} == \
        set(net.collect_params())


def test_model_zoo_mobilenet_v2(tmp_path):
    # depthwise convolutions (groups) and relu6
    net = vision.get_model("mobilenetv2_0.25", classes=7)
    net.initialize(init.Xavier())
    net.build((None, 3, 32, 32))
    randomize_bn(net)
    model = check_export(net, tmp_path, normal(3, 32, 32),
                         input_shape=(None, 3, 32, 32))
    assert any(a.name == "group" and a.i > 1
               for n in model.graph.node if n.op_type == "Conv"
               for a in n.attribute)
    assert "Clip" in ops_of(model)


def test_several_inputs_and_outputs(tmp_path):
    net = TwoInTwoOut()
    net.initialize(init.Uniform(0.5))

    def make(n):
        rng = np.random.default_rng(n)
        return (rng.standard_normal((n, 4)).astype(np.float32),
                rng.standard_normal((n, 3)).astype(np.float32))
    model = check_export(net, tmp_path, make,
                         input_shape=[(None, 4), (None, 3)])
    assert [i.name for i in model.graph.input] == ["data0", "data1"]
    assert [o.name for o in model.graph.output] == ["output0", "output1"]


def test_names_of_inputs_and_outputs_can_be_given(tmp_path):
    net = TwoInTwoOut()
    net.initialize()
    model = fl.onnx.export(net, None, input_shape=[(None, 4), (None, 3)],
                           input_names=["x", "y"],
                           output_names=["scores", "logp"])
    assert [i.name for i in model.graph.input] == ["x", "y"]
    assert [o.name for o in model.graph.output] == ["scores", "logp"]
    weight = net.a.weight.name
    with pytest.raises(ValueError, match="collide"):
        fl.onnx.export(net, None, input_shape=[(None, 4), (None, 3)],
                       input_names=["x", weight])
    with pytest.raises(ValueError, match="collide"):
        fl.onnx.export(net, None, input_shape=[(None, 4), (None, 3)],
                       input_names=["x", "y"], output_names=["x", "z"])
    with pytest.raises(ValueError, match="2 non-empty"):
        fl.onnx.export(net, None, input_shape=[(None, 4), (None, 3)],
                       input_names=["x"])


def test_deferred_network_with_input_shape(tmp_path):
    net = nn.Sequential()
    net.add(nn.Dense(32, activation="relu"), nn.Dense(3))
    net.initialize()
    assert net[0].weight.shape == (32, -1)
    # a batch size given here does not fix the file's: it runs at 1 and 7
    check_export(net, tmp_path, normal(11), input_shape=(5, 11))
    # initialized as net.build((None, 11)) would
    assert net[0].weight.shape == (32, 11)
    assert net[0].weight.state == "initialized"


def test_several_outputs_from_one_value(tmp_path):
    # the same value returned twice, and an output that is an input
    net = nn.HybridLambda(lambda F, x: (F.relu(x), F.relu(x) + 0, x))
    model = check_export(net, tmp_path, normal(5), input_shape=(None, 5))
    assert len(model.graph.output) == 3


# Each F operator (the graph tests' list), exported at the opsets where
# the ONNX forms differ (13: LayerNorm as arithmetic, ReduceMean's axes an
# attribute; 17: LayerNormalization; 18: axes an input; 21: the newest)
OPS = [
    ("relu", lambda F, x: F.relu(x)),
    ("softmax axis 1", lambda F, x: F.softmax(x, axis=1)),
    ("log_softmax", lambda F, x: F.log_softmax(x)),
    ("clip", lambda F, x: F.clip(x, -0.5, 0.5)),
    ("reshape 0 -1", lambda F, x: F.reshape(x, (0, -1))),
    ("flatten", lambda F, x: F.flatten(x)),
    ("concat", lambda F, x: F.concat(x, F.tanh(x), dim=1)),
    ("concat last", lambda F, x: F.concat(x, x * 2, dim=-1)),
    ("concat flat", lambda F, x: F.concat(F.flatten(x), x.reshape((0, -1)),
                                          dim=1)),
    ("slice_axis", lambda F, x: F.slice_axis(x, axis=1, begin=1, end=3)),
    ("slice neg", lambda F, x: F.slice_axis(x, axis=-1, begin=-2,
                                            end=None)),
    ("mean", lambda F, x: F.mean(x, axis=(2, 3))),
    ("mean keepdims", lambda F, x: F.mean(x, axis=-1, keepdims=True)),
    ("mean all", lambda F, x: F.mean(x, axis=(1, 2, 3))),
    ("sum", lambda F, x: F.sum(x, axis=1)),
    ("max", lambda F, x: F.max(x, axis=2)),
    ("add_n", lambda F, x: F.add_n(x, F.sigmoid(x), x * x)),
    ("scalars", lambda F, x: (2 - x) / 4 + 1 - (x * 3) / (1 + F.relu(x))),
    ("pow", lambda F, x: F.relu(x) ** 2),
    ("neg", lambda F, x: -x),
    ("broadcast", lambda F, x: F.broadcast_mul(
        x, F.mean(x, axis=1, keepdims=True))),
    ("broadcast reshaped", lambda F, x: F.broadcast_add(
        x, F.reshape(F.mean(x, axis=(2, 3)), (0, 0, 1, 1)))),
    ("maximum", lambda F, x: F.broadcast_maximum(x, F.tanh(x))),
    ("minimum", lambda F, x: F.broadcast_minimum(x, F.tanh(x))),
    ("divide", lambda F, x: F.broadcast_div(x, 2 + F.sigmoid(x))),
    ("leaky", lambda F, x: F.LeakyReLU(x, act_type="leaky", slope=0.2)),
    ("elu", lambda F, x: F.LeakyReLU(x, act_type="elu", slope=1.0)),
    ("selu", lambda F, x: F.LeakyReLU(x, act_type="selu")),
    ("gelu", lambda F, x: F.LeakyReLU(x, act_type="gelu")),
    ("swish", lambda F, x: F.swish(x, beta=0.5)),
    ("identity", lambda F, x: F.identity(x) + 0),
    ("activation", lambda F, x: F.Activation(x, act_type="softrelu")),
    ("pooling", lambda F, x: F.Pooling(x, kernel=(2, 2), stride=(2, 2),
                                       pool_type="avg")),
    ("global pool", lambda F, x: F.Pooling(x, global_pool=True,
                                           pool_type="max")),
    ("layernorm", lambda F, x: F.LayerNorm(x, axis=1)),
    ("layernorm last", lambda F, x: F.LayerNorm(x, axis=-1)),
    ("dropout", lambda F, x: F.Dropout(x, p=0.5) * 1),
]


@pytest.mark.parametrize("opset", [13, 17, 18, 21])
@pytest.mark.parametrize("name,fn", OPS, ids=[o[0] for o in OPS])
def test_operators(tmp_path, name, fn, opset):
    net = nn.HybridLambda(fn)
    check_export(net, tmp_path, normal(4, 5, 6), input_shape=(None, 4, 5, 6),
                 opset=opset)


LAYERS = [
    ("dense flatten=False", lambda: nn.Dense(7, flatten=False,
                                             activation="tanh"), (4, 6)),
    ("dense flatten=False 4-d", lambda: nn.Dense(3, flatten=False),
     (2, 3, 5)),
    ("dense after conv", lambda: _seq(nn.Conv2D(3, 3), nn.Dense(4)),
     (2, 6, 6)),
    ("batchnorm last axis", lambda: nn.BatchNorm(axis=-1), (5, 6)),
    ("batchnorm middle axis", lambda: nn.BatchNorm(axis=2), (3, 4, 5)),
    ("batchnorm dense", lambda: _seq(nn.Dense(6), nn.BatchNorm(),
                                     nn.Activation("relu")), (5,)),
    ("batchnorm scale=False", lambda: _seq(nn.Conv2D(4, 3),
                                           nn.BatchNorm(scale=False,
                                                        center=False)),
     (3, 6, 6)),
    ("layernorm channels", lambda: nn.LayerNorm(axis=1), (3, 4, 5)),
    ("layernorm last", lambda: nn.LayerNorm(), (3, 4, 5)),
    ("conv groups", lambda: nn.Conv2D(6, 3, groups=3, padding=1,
                                      activation="relu"), (3, 7, 7)),
    ("conv stride dilation", lambda: nn.Conv2D(4, (3, 2), strides=(2, 1),
                                               padding=(2, 1),
                                               dilation=(2, 1)), (2, 11, 9)),
    ("maxpool ceil", lambda: nn.MaxPool2D(3, 2, ceil_mode=True), (2, 8, 7)),
    ("maxpool pad", lambda: nn.MaxPool2D(3, 2, padding=1), (2, 7, 8)),
    ("avgpool ceil pad counted", lambda: nn.AvgPool2D(3, 2, padding=1,
                                                      ceil_mode=True),
     (2, 8, 7)),
    ("avgpool ceil pad not counted", lambda: nn.AvgPool2D(
        3, 2, padding=1, ceil_mode=True, count_include_pad=False),
     (2, 8, 7)),
    ("avgpool", lambda: nn.AvgPool2D(2), (2, 6, 6)),
    ("global avg", lambda: nn.GlobalAvgPool2D(), (3, 5, 4)),
    ("global max", lambda: nn.GlobalMaxPool2D(), (3, 5, 4)),
    ("squeeze excite", lambda: SqueezeExcite(6), (3, 5, 5)),
    ("own parameters", lambda: Scaled(3), (3, 4, 4)),
    ("prelu per channel", lambda: _seq(nn.Conv2D(3, 1),
                                       nn.PReLU(init.Uniform(0.5),
                                                in_channels=3)), (2, 4, 4)),
    ("dropout flatten", lambda: _seq(nn.Dropout(0.5), nn.Flatten(),
                                     nn.Dense(3)), (2, 3, 3)),
]


def _seq(*layers):
    net = nn.HybridSequential()
    net.add(*layers)
    return net


@pytest.mark.parametrize("opset", [13, 17])
@pytest.mark.parametrize("name,make,shape", LAYERS,
                         ids=[a[0] for a in LAYERS])
def test_layers(tmp_path, name, make, shape, opset):
    net = make()
    net.initialize(init.Uniform(0.5))
    net.build((None,) + shape)
    randomize_bn(net)
    check_export(net, tmp_path, normal(*shape, scale=2.0),
                 input_shape=(None,) + shape, opset=opset)


def test_float64_network(tmp_path):
    net = nn.Sequential()
    net.add(nn.Dense(8, activation="tanh", dtype="float64"),
            nn.Dense(2, dtype="float64"))
    net.initialize()
    model = check_export(net, tmp_path, normal(6, dtype=np.float64),
                         input_shape=(None, 6), rtol=1e-12, atol=1e-12)
    assert model.graph.input[0].type.tensor_type.elem_type == \
        onnx.TensorProto.DOUBLE


@settings(max_examples=30, deadline=None)
@given(units=st.lists(st.integers(1, 24), min_size=1, max_size=4),
       acts=st.lists(st.sampled_from([None, "relu", "sigmoid", "tanh",
                                      "softrelu", "softsign", "gelu",
                                      "silu"]), min_size=4, max_size=4),
       k=st.integers(1, 16), batch=st.integers(1, 9),
       seed=st.integers(0, 2 ** 31 - 1))
def test_random_mlps_match_onnx_runtime(units, acts, k, batch, seed):
    net = nn.Sequential()
    for u, a in zip(units, acts):
        net.add(nn.Dense(u, activation=a))
    net.initialize(init.Uniform(0.7))
    model = fl.onnx.export(net, None, input_shape=(None, k))
    x = np.random.default_rng(seed).standard_normal((batch, k)) \
        .astype(np.float32)
    got = ort_run(model, x)[0]
    np.testing.assert_allclose(got, net(x), rtol=1e-4, atol=1e-5)


class Shared(nn.HybridBlock):
    """One Dense layer applied twice: one initializer, two Gemms."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(6, in_units=6, activation="tanh")

    def hybrid_forward(self, F, x):
        return self.dense(self.dense(x)) + x


def test_a_layer_applied_twice_is_one_initializer(tmp_path):
    net = Shared()
    net.initialize(init.Uniform(0.5))
    model = check_export(net, tmp_path, normal(6), input_shape=(None, 6))
    assert ops_of(model).count("Gemm") == 2
    assert len(model.graph.initializer) == 2


@st.composite
def programs(draw):
    """A random graph over 2-D values: Dense layers, residual adds,
    concatenations, slices, broadcasts against a reduction, softmax."""
    prog = []
    for i in range(draw(st.integers(1, 6))):
        prog.append((draw(st.sampled_from(["dense", "add", "concat", "slice",
                                           "scale", "softmax"])),
                     draw(st.integers(0, i)), draw(st.integers(0, i)),
                     draw(st.integers(1, 7)),
                     draw(st.sampled_from([None, "relu", "tanh"]))))
    return prog


class Program(nn.HybridBlock):
    def __init__(self, prog):
        super().__init__()
        self.prog = prog
        with self.name_scope():
            self.layers = nn.HybridSequential()
            for kind, _, _, units, act in prog:
                self.layers.add(nn.Dense(units, activation=act)
                                if kind == "dense" else nn.Identity())

    def hybrid_forward(self, F, x):
        vals = [x]
        for (kind, a, b, units, _), layer in zip(self.prog, self.layers):
            va, vb = vals[a], vals[b]
            if kind == "dense":
                v = layer(va)
            elif kind == "add" and va.shape[1] == vb.shape[1]:
                v = va + vb
            elif kind in ("add", "concat"):
                v = F.concat(va, vb, dim=1)
            elif kind == "slice":
                n = va.shape[1]
                v = F.slice_axis(va, axis=1, begin=n // 2, end=n)
            elif kind == "scale":
                v = F.broadcast_mul(va, F.sum(F.relu(vb), axis=1,
                                              keepdims=True))
            else:
                v = F.softmax(va, axis=-1)
            vals.append(v)
        return vals[-1]


@settings(max_examples=30, deadline=None)
@given(prog=programs(), k=st.integers(1, 6), batch=st.integers(1, 5),
       seed=st.integers(0, 2 ** 31 - 1))
def test_random_graphs_match_onnx_runtime(prog, k, batch, seed):
    net = Program(prog)
    net.initialize(init.Uniform(0.5))
    model = fl.onnx.export(net, None, input_shape=(None, k))
    x = np.random.default_rng(seed).standard_normal((batch, k)) \
        .astype(np.float32)
    want = net(x)
    assert net._eager_reason is None
    np.testing.assert_allclose(ort_run(model, x)[0], want, rtol=1e-4,
                               atol=1e-5)


# ---------------------------------------------------------------------------
# What the file holds and how it is written


def test_every_step_kind_has_an_onnx_form():
    from fastlazy import _steps
    from fastlazy.onnx.export import _EMITTERS
    kinds = {getattr(_steps, n) for n in _steps.__all__
             if n.endswith("Step") and n != "StepBuilder"}
    assert kinds == set(_EMITTERS)


def test_export_without_path_returns_the_checked_model():
    net = nn.Dense(3, in_units=4)
    net.initialize()
    model = fl.onnx.export(net, input_shape=(None, 4))
    assert isinstance(model, onnx.ModelProto)
    onnx.checker.check_model(model, full_check=True)


def test_export_reads_parameters_without_touching_the_plan(tmp_path):
    net = lenet()
    net.initialize()
    x = np.ones((2, 1, 28, 28), np.float32)
    y = net(x)
    plan = net._plan
    fl.onnx.export(net, tmp_path / "m.onnx")
    # no parameter counted as written: the plan (and its packed weights)
    # stays current
    assert net._plan is plan and plan.is_current()
    np.testing.assert_array_equal(net(x), y)


def test_external_data(tmp_path):
    net = nn.Sequential()
    net.add(nn.Dense(64, activation="relu"), nn.Dense(3))
    net.initialize()
    path = tmp_path / "big.onnx"
    fl.onnx.export(net, path, input_shape=(None, 40), external_data=True)
    assert sorted(os.listdir(tmp_path)) == ["big.onnx", "big.onnx.data"]
    onnx.checker.check_model(str(path), full_check=True)
    x = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32)
    np.testing.assert_allclose(ort_run(path, x)[0], net(x), rtol=1e-5,
                               atol=1e-6)


def test_a_failed_write_leaves_the_old_file_whole(tmp_path, monkeypatch):
    net = nn.Dense(3, in_units=4)
    net.initialize()
    path = tmp_path / "m.onnx"
    path.write_bytes(b"the old file")

    def fail(src, dst):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="fl.onnx.export: cannot write"):
        fl.onnx.export(net, path, input_shape=(None, 4))
    assert path.read_bytes() == b"the old file"
    assert os.listdir(tmp_path) == ["m.onnx"]


def test_onnx_is_imported_only_by_export(tmp_path):
    script = textwrap.dedent(f"""
        import sys
        import fastlazy as fl
        import fastlazy.onnx
        import fastlazy.onnx.export
        from fastlazy import nn
        assert "onnx" not in sys.modules
        assert callable(fl.onnx.export), fl.onnx.export
        net = nn.Dense(2, in_units=3)
        net.initialize()
        fl.onnx.export(net, {str(tmp_path / "m.onnx")!r}, (None, 3))
        assert "onnx" in sys.modules
        assert callable(fl.onnx.export)
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True, timeout=120)
    assert run.returncode == 0, run.stderr


# ---------------------------------------------------------------------------
# Failures: clear errors, no file, nothing changed


def _no_file(tmp_path):
    assert os.listdir(tmp_path) == []


def test_deferred_without_input_shape(tmp_path, ref):
    net = nn.Sequential()
    net.add(nn.Dense(8), nn.Dense(2))
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises(fl.DeferredInitializationError,
                       match=r"dense\d+_weight \(8, -1\).*input_shape=\(None"):
        fl.onnx.export(net, tmp_path / "m.onnx")
    _no_file(tmp_path)
    assert ref.snapshot(net) == before


def test_uninitialized(tmp_path, ref):
    net = nn.Sequential()
    net.add(nn.Dense(8), nn.Dense(2))
    before = ref.snapshot(net)
    with pytest.raises(fl.DeferredInitializationError,
                       match="fl.onnx.export.*initialize"):
        fl.onnx.export(net, tmp_path / "m.onnx", input_shape=(None, 3))
    _no_file(tmp_path)
    assert ref.snapshot(net) == before


def test_initialized_but_never_run_needs_the_shape(tmp_path):
    net = lenet()
    net.initialize()
    net.build((None, 1, 28, 28))
    with pytest.raises(fl.ShapeError, match="input_shape"):
        fl.onnx.export(net, tmp_path / "m.onnx")
    _no_file(tmp_path)


def test_untraceable_custom_block(tmp_path, ref):
    net = nn.HybridSequential()
    net.add(nn.Dense(5), Untraceable(prefix="mine_"))
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises(fl.UnsupportedOperatorError,
                       match=r"Untraceable 'mine' cannot be compiled \(TraceError: "):
        fl.onnx.export(net, tmp_path / "m.onnx", input_shape=(None, 3))
    _no_file(tmp_path)
    assert ref.snapshot(net) == before
    # it still runs (eagerly), and still cannot be exported
    net(np.ones((2, 3), np.float32))
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="runs eagerly because the code of 'mine'"):
        fl.onnx.export(net, tmp_path / "m.onnx")
    _no_file(tmp_path)


def test_python_forward_block(tmp_path):
    class Plain(nn.Block):
        def forward(self, x):
            return x * 2
    net = Plain()
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="Plain.*forward\\(\\) is Python code"):
        fl.onnx.export(net, tmp_path / "m.onnx", input_shape=(None, 3))
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="Plain.*forward\\(\\) is Python code"):
        fl.onnx.export(net, tmp_path / "m.onnx")
    _no_file(tmp_path)


def test_a_deferred_net_failing_later_is_left_deferred(tmp_path, ref):
    # the trace initializes the deferred parameters; the write then fails:
    # the initialization is undone with it
    net = nn.Sequential()
    net.add(nn.Dense(8), nn.Dense(2))
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises(OSError, match="fl.onnx.export: cannot write"):
        fl.onnx.export(net, tmp_path / "no" / "such" / "m.onnx",
                       input_shape=(None, 3))
    assert ref.snapshot(net) == before
    _no_file(tmp_path)


@pytest.mark.parametrize("opset,error", [
    (12, ValueError), (22, ValueError), (0, ValueError), ("17", TypeError),
    (True, TypeError), (17.0, TypeError)])
def test_bad_opset(tmp_path, opset, error):
    net = nn.Dense(3, in_units=4)
    net.initialize()
    with pytest.raises(error, match="opset"):
        fl.onnx.export(net, tmp_path / "m.onnx", input_shape=(None, 4),
                       opset=opset)
    _no_file(tmp_path)


def test_unwritable_paths(tmp_path):
    net = nn.Dense(3, in_units=4)
    net.initialize()
    with pytest.raises(FileNotFoundError, match="cannot write"):
        fl.onnx.export(net, tmp_path / "missing" / "m.onnx",
                       input_shape=(None, 4))
    (tmp_path / "folder").mkdir()
    with pytest.raises(IsADirectoryError, match="is a folder"):
        fl.onnx.export(net, tmp_path / "folder", input_shape=(None, 4))
    assert os.listdir(tmp_path) == ["folder"]
    assert os.listdir(tmp_path / "folder") == []


@pytest.mark.parametrize("shape", [(20,), (None,), 20, (None, 0),
                                   (None, None), [(None, 2), 3]])
def test_bad_input_shape(tmp_path, shape):
    net = nn.Dense(3)
    net.initialize()
    with pytest.raises(TypeError, match="input_shape"):
        fl.onnx.export(net, tmp_path / "m.onnx", input_shape=shape)
    _no_file(tmp_path)
    assert net.weight.shape == (3, -1)


def test_input_shape_that_does_not_fit(tmp_path):
    net = nn.Dense(3, in_units=4)
    net.initialize()
    with pytest.raises(fl.ShapeError, match="expects 4 input features"):
        fl.onnx.export(net, tmp_path / "m.onnx", input_shape=(None, 5))
    _no_file(tmp_path)


@pytest.mark.parametrize("pool", [
    lambda: nn.MaxPool2D(1, 3, ceil_mode=True),
    lambda: nn.AvgPool2D(1, 3, ceil_mode=True, count_include_pad=False)])
def test_pooling_windows_without_input_are_refused(tmp_path, pool):
    # fastlazy gives 0 where a window holds no input value; ONNX's pools
    # give the lowest value (max) or divide by zero (average)
    net = pool()
    x = np.ones((1, 1, 5, 5), np.float32)
    assert net(x).shape == (1, 1, 3, 3)
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="windows with no input value"):
        fl.onnx.export(net, tmp_path / "m.onnx")
    _no_file(tmp_path)


def test_not_a_block():
    with pytest.raises(TypeError, match="fastlazy Block"):
        fl.onnx.export(object(), None, input_shape=(None, 3))


# ---------------------------------------------------------------------------
# Round trip: fl.onnx.load(fl.onnx.export(net)) computes what net does

ROUND_TRIP = [
    ("textbook", lambda: _seq(nn.Dense(64, activation="relu"), nn.Dense(10)),
     (20,)),
    ("every activation", lambda: _seq(*[
        layer for _, make, _ in ACTIVATIONS
        for layer in (nn.Dense(6), make())]), (5,)),
    ("lenet", lenet, (1, 28, 28)),
    ("residual mlp", ResidualMLP, (10,)),
    ("branches", Branches, (8,)),
    ("resnet-style", small_resnet, (3, 12, 12)),
    ("resnet18_v1", lambda: vision.resnet18_v1(classes=10), (3, 32, 32)),
    ("mobilenetv2", lambda: vision.get_model("mobilenetv2_0.25", classes=7),
     (3, 32, 32)),
]


def _load():
    load = getattr(fl.onnx, "load", None)
    if load is None:
        pytest.skip("fl.onnx.load (ONNX import) is not part of this build")
    return load


@pytest.mark.parametrize("name,make,shape", ROUND_TRIP,
                         ids=[r[0] for r in ROUND_TRIP])
def test_round_trip(tmp_path, name, make, shape):
    load = _load()
    net = make()
    net.initialize(init.Xavier())
    net.build((None,) + shape)
    randomize_bn(net)
    path = fl.onnx.export(net, tmp_path / "m.onnx", input_shape=(None,)
                          + shape)
    back = load(path)
    for batch in (1, 7):
        x, = normal(*shape, scale=2.0)(batch)
        np.testing.assert_allclose(back(x), net(x), rtol=1e-4, atol=1e-5)


def test_round_trip_several_inputs_and_outputs(tmp_path):
    load = _load()
    net = TwoInTwoOut()
    net.initialize(init.Uniform(0.5))
    path = fl.onnx.export(net, tmp_path / "m.onnx",
                          input_shape=[(None, 4), (None, 3)])
    back = load(path)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = rng.standard_normal((5, 3)).astype(np.float32)
    for got, want in zip(back(x, y), net(x, y)):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,fn", OPS, ids=[o[0] for o in OPS])
def test_round_trip_operators(tmp_path, name, fn):
    load = _load()
    net = nn.HybridLambda(fn)
    path = fl.onnx.export(net, tmp_path / "m.onnx",
                          input_shape=(None, 4, 5, 6))
    back = load(path)
    for batch in (1, 7):
        x, = normal(4, 5, 6)(batch)
        np.testing.assert_allclose(back(x), net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name,make,shape", LAYERS,
                         ids=[a[0] for a in LAYERS])
def test_round_trip_layers(tmp_path, name, make, shape):
    load = _load()
    net = make()
    net.initialize(init.Uniform(0.5))
    net.build((None,) + shape)
    randomize_bn(net)
    path = fl.onnx.export(net, tmp_path / "m.onnx",
                          input_shape=(None,) + shape)
    back = load(path)
    for batch in (1, 7):
        x, = normal(*shape, scale=2.0)(batch)
        np.testing.assert_allclose(back(x), net(x), rtol=1e-4, atol=1e-5)
