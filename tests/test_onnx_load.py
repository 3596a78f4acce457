"""fl.onnx.load: ONNX models as compiled fastlazy blocks.

Files no one here wrote -- tests/data/onnx/, made by PyTorch's two
exporters and skl2onnx (tools/make_onnx_fixtures.py) -- must compute what
ONNX Runtime computes from the same file (the live runtime when installed,
else the outputs saved with the files).  With torch installed, more models
are exported here and checked the same way.  Small graphs written with
onnx.helper cover each operator's attributes against ONNX Runtime, and
every refusal names the node, operator and opset.
"""

import copy
import os
import pathlib
import pickle
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import fastlazy as fl

onnx = pytest.importorskip("onnx", reason="needs the onnx package (pip "
                           "install 'fastlazy[onnx]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:         # pragma: no cover - CI installs it
    ort = None
if os.environ.get("FASTLAZY_SANITIZER"):
    # under tools/sanitize.sh's AddressSanitizer preload, a C++ exception
    # thrown inside ONNX Runtime aborts the process (ASan's __cxa_throw
    # interceptor finds no real one): compare with the saved outputs only
    ort = None

DATA = pathlib.Path(__file__).parent / "data" / "onnx"
REF = np.load(DATA / "reference.npz")
FIXTURES = sorted(p.stem for p in DATA.glob("*.onnx"))
needs_ort = pytest.mark.skipif(
    ort is None, reason="ONNX Runtime is not used under the sanitizer"
    if os.environ.get("FASTLAZY_SANITIZER") else "needs onnxruntime (pip "
    "install onnxruntime)")


def close(y, ref, rtol=1e-4):
    """Float32 agreement, the absolute tolerance scaled by the output's
    magnitude."""
    ref = np.asarray(ref)
    scale = max(float(np.abs(ref).max()), 1e-6)
    np.testing.assert_allclose(np.asarray(y), ref, rtol=rtol,
                               atol=rtol * scale)


def ort_run(model, *xs, outputs=None):
    """ONNX Runtime's outputs for a path, bytes or ModelProto."""
    if isinstance(model, onnx.ModelProto):
        model = model.SerializeToString()
    if isinstance(model, pathlib.Path):
        model = str(model)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(model, opts,
                                providers=["CPUExecutionProvider"])
    feed = {i.name: x for i, x in zip(sess.get_inputs(), xs)}
    return sess.run(outputs, feed)


def load_fixture(name, **kw):
    kw.setdefault("outputs", ["probabilities"] if name == "sklearn_mlp"
                  else None)
    return fl.onnx.load(DATA / f"{name}.onnx", **kw)


# ---------------------------------------------------------------------------
# Files written by torch and skl2onnx


@pytest.mark.parametrize("name", FIXTURES)
def test_fixture_computes_what_onnx_runtime_saved(name):
    net = load_fixture(name)
    x = REF[f"{name}/x"]
    out = net.output_names[0]
    close(net(x), REF[f"{name}/{out}"])


@needs_ort
@pytest.mark.parametrize("name", FIXTURES)
@pytest.mark.parametrize("batch", [1, 37])
def test_fixture_matches_onnx_runtime(name, batch):
    net = load_fixture(name)
    rng = np.random.default_rng(batch)
    x = rng.standard_normal((batch,) + net.input_shapes[0][1:],
                            dtype=np.float32)
    ref = ort_run(DATA / f"{name}.onnx", x, outputs=list(net.output_names))
    close(net(x), ref[0])


@pytest.mark.parametrize("name, expect", [
    ("mlp", "fused: 1 Gemm+Relu; 3 ONNX nodes -> 2 plan steps"),
    ("mlp_dynamo", "fused: 1 Gemm+Relu; 3 ONNX nodes -> 2 plan steps"),
    ("resnet_cnn_bn", "fused: 3 Conv+BatchNormalization+Relu, 3 "
                      "Conv+BatchNormalization; 23 ONNX nodes -> 13 plan "
                      "steps"),
    ("lenet", "fused: 1 Conv+Sigmoid, 1 Conv+Relu, 1 Gemm+Relu, 1 "
              "Gemm+Gelu; 1 GELU from its erf form; folded at load: 7 "
              "node(s) (Concat, Constant, Gather, Shape, Unsqueeze); 26 "
              "ONNX nodes -> 7 plan steps"),
    ("concat", "fused: 1 Gemm+Sigmoid+Mul, 1 Gemm+Tanh; 1 SiLU from "
               "Sigmoid+Mul; 9 ONNX nodes -> 6 plan steps"),
    ("sklearn_mlp", "fused: 2 MatMul+Add+Relu, 1 MatMul+Add; folded at "
                    "load: 2 node(s) (Cast, Identity); 11 ONNX nodes -> 4 "
                    "plan steps"),
])
def test_fusion_report(name, expect, capsys):
    net = load_fixture(name, verbose=True)
    assert net.fusion_report() == expect
    assert capsys.readouterr().out == f"{name}: {expect}\n"


def test_parameters_are_named_after_the_initializers():
    net = load_fixture("mlp")
    model = onnx.load(DATA / "mlp.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    params = net.collect_params()
    assert sorted(params.keys()) == sorted(inits)
    for name, value in inits.items():
        np.testing.assert_array_equal(params[name].data(), value)
    assert params["fc1.weight"].shape == (64, 20)


def test_matmul_weight_is_stored_as_dense_weights_are():
    # skl2onnx's coefficient is (in, out) for MatMul: the parameter is the
    # (units, in_units) view of it, as Dense's weight
    net = load_fixture("sklearn_mlp")
    model = onnx.load(DATA / "sklearn_mlp.onnx")
    inits = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = net.collect_params()["coefficient"]
    np.testing.assert_array_equal(w.data(), inits["coefficient"].T)
    np.testing.assert_array_equal(net.collect_params()["intercepts"].data(),
                                  inits["intercepts"].reshape(-1))


def test_float16_initializers_are_converted():
    net = load_fixture("mlp_fp16")
    model = onnx.load(DATA / "mlp_fp16.onnx")
    assert {t.data_type for t in model.graph.initializer} == \
        {TensorProto.FLOAT16}
    half = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    w = net.collect_params()["fc1.weight_fp16"]
    assert w.dtype == np.float32
    np.testing.assert_array_equal(w.data(), half["fc1.weight_fp16"]
                                  .astype(np.float32))
    assert "Cast" in net.fusion_report()


def test_external_data():
    net = load_fixture("mlp_external")
    close(net(REF["mlp_external/x"]), REF["mlp_external/y"])
    # bytes of the model: external files from base_dir
    data = (DATA / "mlp_external.onnx").read_bytes()
    net = fl.onnx.load(data, base_dir=str(DATA))
    close(net(REF["mlp_external/x"]), REF["mlp_external/y"])
    with pytest.raises(fl.ParameterFileError,
                       match="external data file 'mlp_external.onnx.data' "
                             "cannot be read"):
        fl.onnx.load(data, base_dir=str(DATA / "nowhere"))


def _external_model(tmp_path, location, length=None, offset=0):
    model = onnx.load(DATA / "mlp_external.onnx", load_external_data=False)
    t = model.graph.initializer[0]
    for e in t.external_data:
        if e.key == "location":
            e.value = location
        if e.key == "length" and length is not None:
            e.value = str(length)
        if e.key == "offset":
            e.value = str(offset)
    path = tmp_path / "m.onnx"
    path.write_bytes(model.SerializeToString())
    (tmp_path / "mlp_external.onnx.data").write_bytes(
        (DATA / "mlp_external.onnx.data").read_bytes())
    return path


@pytest.mark.parametrize("location, match", [
    ("../secret.data", "leads out of the model's directory"),
    ("/etc/passwd", "must be a path relative to the model's directory"),
    ("missing.data", "external data file 'missing.data' cannot be read"),
])
def test_external_data_outside_the_directory_is_refused(tmp_path, location,
                                                        match):
    (tmp_path.parent / "secret.data").write_bytes(b"\0" * 8000)
    path = _external_model(tmp_path, location)
    with pytest.raises(fl.ParameterFileError, match=match):
        fl.onnx.load(path)


def test_external_data_sizes_are_checked(tmp_path):
    path = _external_model(tmp_path, "mlp_external.onnx.data", length=12)
    with pytest.raises(fl.ParameterFileError, match="declares 5120 bytes "
                       "but its external data length is 12"):
        fl.onnx.load(path)
    path = _external_model(tmp_path, "mlp_external.onnx.data",
                           offset=7000)
    with pytest.raises(fl.ParameterFileError, match="has 7976 bytes, the "
                       "tensor needs bytes 7000 to 12120"):
        fl.onnx.load(path)


def test_sklearn_labels_need_operators_fastlazy_lacks():
    with pytest.raises(fl.UnsupportedOperatorError) as err:
        fl.onnx.load(DATA / "sklearn_mlp.onnx")
    text = str(err.value)
    assert "fastlazy cannot run 2 node(s)" in text
    assert "node 'ArgMax' (ArgMax, opset 17): fastlazy has no such " \
           "operator" in text
    assert "node 'ArrayFeatureExtractor' (ai.onnx.ml ArrayFeatureExtractor, " \
           "opset 1): operator domain 'ai.onnx.ml'" in text
    assert "pass outputs=[...] (this model's: label, probabilities)" in text
    assert isinstance(err.value, NotImplementedError)


def test_summary_pickle_copy_and_parameter_files(tmp_path):
    net = load_fixture("resnet_cnn_bn")
    x = REF["resnet_cnn_bn/x"]
    y = net(x)
    text = []
    net.summary((None, 3, 16, 16))
    for other in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(other(x), y)
        assert other.fusion_report() == net.fusion_report()
        text.append(repr(other))
    assert text[0] == repr(net)
    assert repr(net).startswith("OnnxBlock(\n  inputs: x (None, 3, 16, 16)\n"
                                "  outputs: y\n  opset 17, 23 calls: ")
    net.save_parameters(tmp_path / "p.npz")
    other = load_fixture("resnet_cnn_bn")
    for p in other.collect_params().values():
        p.set_data(np.zeros(p.shape))
    other.load_parameters(tmp_path / "p.npz")
    np.testing.assert_array_equal(other(x), y)


def test_summary_table(capsys):
    net = load_fixture("mlp")
    net.summary((None, 20))
    out = capsys.readouterr().out
    assert "OnnxBlock-1" in out and "(None, 10)" in out
    assert "Total params: 1994" in out


def test_writes_through_data_are_seen():
    net = load_fixture("mlp")
    x = REF["mlp/x"]
    net.collect_params()["fc2.bias"].data()[:] += 1.0
    close(net(x), REF["mlp/y"] + 1.0)


def test_other_input_shapes_are_refused_with_the_fix():
    net = load_fixture("lenet")
    with pytest.raises(fl.ShapeError, match=r"input 'x' has shape \(2, 1, "
                       r"32, 32\), but the model was read for \(None, 1, 28, "
                       r"28\).*input_shape=\(None, 1, 32, 32\)"):
        net(np.zeros((2, 1, 32, 32), np.float32))


def test_input_shape_overrides_the_files_sizes():
    # the ResNet ends in a global pool: any image size works
    net = load_fixture("resnet_cnn_bn", input_shape=(None, 3, 20, 24))
    assert net.input_shapes == ((None, 3, 20, 24),)
    x = np.random.default_rng(1).standard_normal((2, 3, 20, 24),
                                                 dtype=np.float32)
    assert net(x).shape == (2, 10)
    if ort is not None:
        # ONNX Runtime takes other sizes once the file leaves them open
        model = onnx.load(DATA / "resnet_cnn_bn.onnx")
        for d in model.graph.input[0].type.tensor_type.shape.dim[2:]:
            d.dim_param = "size"
        close(net(x), ort_run(model, x)[0])


def test_onnx_package_is_imported_only_when_a_model_is_read():
    script = textwrap.dedent(f"""
        import sys
        import fastlazy as fl
        assert "onnx" not in sys.modules and \\
            "fastlazy.onnx" not in sys.modules
        load = fl.onnx.load
        assert "onnx" not in sys.modules, "fastlazy.onnx imported onnx"
        import fastlazy.onnx.load
        assert fl.onnx.load is load, fl.onnx.load
        net = fl.onnx.load({str(DATA / 'mlp.onnx')!r})
        assert "onnx" in sys.modules
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr


def test_export_resolves_to_the_function_of_its_module():
    import importlib
    import importlib.util
    if importlib.util.find_spec("fastlazy.onnx.export") is None:
        pytest.skip("fastlazy.onnx.export is written on another branch")
    # "import fastlazy.onnx.export as module" would look the name up as an
    # attribute, which is the function: the module is in sys.modules
    module = importlib.import_module("fastlazy.onnx.export")
    assert fl.onnx.export is module.export
    assert callable(fl.onnx.export)


# ---------------------------------------------------------------------------
# Graphs written here with onnx.helper, against ONNX Runtime


def make_model(nodes, inputs, outputs, inits=(), opset=17):
    """A model from nodes; ``inputs``/``outputs`` are (name, shape) with
    None or a name for free sizes; ``inits`` maps names to arrays."""
    def info(name, shape, elem=TensorProto.FLOAT):
        return helper.make_tensor_value_info(
            name, elem, None if shape is None else list(shape))
    graph = helper.make_graph(
        nodes, "g", [info(n, s) for n, s in inputs],
        [info(n, s) for n, s in outputs],
        [numpy_helper.from_array(np.asarray(v), k) for k, v in
         dict(inits).items()])
    model = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def check(model, *shapes, rtol=1e-4, **load_kw):
    """Load ``model`` and compare with ONNX Runtime at batch 1 and 5."""
    net = fl.onnx.load(model, **load_kw)
    rng = np.random.default_rng(0)
    for batch in (1, 5):
        xs = [rng.standard_normal((batch,) + tuple(s), dtype=np.float32)
              for s in shapes]
        refs = ort_run(model, *xs)
        out = net(*xs)
        outs = out if isinstance(out, tuple) else (out,)
        assert len(outs) == len(refs)
        for y, ref in zip(outs, refs):
            close(y, ref, rtol)
    return net


def weights(*shape, seed=0):
    return np.random.default_rng(seed).uniform(-1, 1, shape).astype(
        np.float32)


node = helper.make_node


@needs_ort
@pytest.mark.parametrize("attrs, wshape, cshape", [
    ({"transB": 1}, (4, 6), (4,)),
    ({}, (6, 4), (4,)),
    ({"transB": 1, "alpha": 0.5, "beta": 2.0}, (4, 6), (1, 4)),
    ({"alpha": -1.5}, (6, 4), ()),
    ({"transB": 1, "beta": 0.0}, (4, 6), (4,)),
    ({"transB": 1}, (4, 6), None),
])
def test_gemm(attrs, wshape, cshape):
    inputs = ["x", "w"] + (["c"] if cshape is not None else [])
    inits = {"w": weights(*wshape)}
    if cshape is not None:
        inits["c"] = weights(*cshape, seed=1) if cshape else \
            np.float32(0.25)
    m = make_model([node("Gemm", inputs, ["y"], **attrs)], [("x", ["N", 6])],
                   [("y", ["N", 4])], inits)
    check(m, (6,))


@needs_ort
def test_gemm_bias_along_the_batch_and_transA_are_refused():
    m = make_model([node("Gemm", ["x", "w", "c"], ["y"], name="g")],
                   [("x", [3, 6])], [("y", [3, 4])],
                   {"w": weights(6, 4), "c": weights(3, 4)})
    with pytest.raises(fl.UnsupportedOperatorError,
                       match=r"node 'g' \(Gemm, opset 17\): a bias C of "
                             r"shape \(3, 4\) that varies along the batch"):
        fl.onnx.load(m)
    m = make_model([node("Gemm", ["x", "w"], ["y"], transA=1, name="g")],
                   [("x", [6, 3])], [("y", [3, 4])], {"w": weights(6, 4)})
    with pytest.raises(fl.UnsupportedOperatorError, match="transA=1"):
        fl.onnx.load(m)


@needs_ort
def test_matmul_bare_and_with_add_on_3d_input():
    m = make_model([node("MatMul", ["x", "w"], ["h"]),
                    node("Add", ["b", "h"], ["y"]),
                    node("MatMul", ["x", "w"], ["z"])],
                   [("x", ["N", 3, 6])], [("y", ["N", 3, 4]),
                                          ("z", ["N", 3, 4])],
                   {"w": weights(6, 4), "b": weights(4, seed=2)})
    net = check(m, (3, 6))
    # the same weight, one Dense with the bias and one without
    assert net.fusion_report().startswith("fused: 1 MatMul+Add;")
    assert sorted(net.collect_params().keys()) == ["b", "w"]


@needs_ort
def test_matmul_of_two_computed_tensors_is_refused():
    m = make_model([node("MatMul", ["x", "x2"], ["y"], name="attn")],
                   [("x", ["N", 4, 4]), ("x2", ["N", 4, 4])],
                   [("y", ["N", 4, 4])])
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="node 'attn' .*multiplies by a computed matrix"):
        fl.onnx.load(m)


@needs_ort
@pytest.mark.parametrize("op, attrs", [
    ("Relu", {}), ("Sigmoid", {}), ("Tanh", {}), ("Softplus", {}),
    ("Softsign", {}), ("LeakyRelu", {"alpha": 0.2}), ("LeakyRelu", {}),
    ("Elu", {"alpha": 0.7}), ("Selu", {}), ("Selu", {"alpha": 1.2,
                                                     "gamma": 0.9}),
    ("HardSigmoid", {"alpha": 0.3, "beta": 0.4}), ("HardSwish", {}),
    ("Sqrt", {}), ("Neg", {}), ("Reciprocal", {}), ("Identity", {}),
])
def test_elementwise(op, attrs):
    nodes = [node("Gemm", ["x", "w"], ["h"], transB=1)]
    if op in ("Sqrt", "Reciprocal"):      # on positive values
        nodes.append(node("Sigmoid", ["h"], ["h2"]))
    else:
        nodes.append(node("Identity", ["h"], ["h2"]))
    nodes.append(node(op, ["h2"], ["y"], **attrs))
    m = make_model(nodes, [("x", ["N", 6])], [("y", ["N", 5])],
                   {"w": weights(5, 6)})
    check(m, (6,))


@needs_ort
@pytest.mark.parametrize("approx", ["none", "tanh"])
def test_gelu(approx):
    m = make_model([node("Gelu", ["x"], ["y"], approximate=approx)],
                   [("x", ["N", 7])], [("y", ["N", 7])], opset=20)
    check(m, (7,))


@needs_ort
@pytest.mark.parametrize("lo, hi", [(0.0, 6.0), (-0.5, 0.5), (0.0, None),
                                    (None, 0.3), (-1.0, None),
                                    (None, None)])
def test_clip(lo, hi):
    inputs = ["h", "lo" if lo is not None else "", "hi" if hi is not None
              else ""]
    while inputs[-1] == "":
        inputs.pop()
    inits = {k: np.float32(v) for k, v in (("lo", lo), ("hi", hi))
             if v is not None}
    m = make_model([node("Gemm", ["x", "w"], ["h"], transB=1),
                    node("Clip", inputs, ["y"])],
                   [("x", ["N", 6])], [("y", ["N", 5])],
                   {"w": weights(5, 6) * 3, **inits})
    net = check(m, (6,))
    if (lo, hi) in ((0.0, 6.0), (0.0, None)):
        assert "Gemm+Clip" in net.fusion_report() or \
            "Gemm+Relu" in net.fusion_report()


@needs_ort
@pytest.mark.parametrize("shape", [(1,), (3,), (4, 1, 1), (1, 4, 1, 1),
                                   (3, 3), (4, 3, 3), (1, 1, 3)])
def test_prelu_slopes(shape):
    m = make_model([node("PRelu", ["x", "s"], ["y"])],
                   [("x", ["N", 4, 3, 3])], [("y", ["N", 4, 3, 3])],
                   {"s": weights(*shape)})
    check(m, (4, 3, 3))


@needs_ort
@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("axis", [1, 2, -1])
def test_softmax_axes(op, axis):
    m = make_model([node(op, ["x"], ["y"], axis=axis)],
                   [("x", ["N", 3, 5])], [("y", ["N", 3, 5])])
    check(m, (3, 5))


@needs_ort
@pytest.mark.parametrize("attrs, spatial", [
    ({"pads": [1, 1, 1, 1]}, (9, 9)),
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, (9, 10)),
    ({"dilations": [2, 2], "pads": [2, 2, 2, 2]}, (9, 9)),
    ({"auto_pad": "SAME_UPPER"}, (8, 8)),
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (9, 9)),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, (9, 9)),
    ({"auto_pad": "VALID", "strides": [2, 1]}, (9, 8)),
    ({"group": 2, "pads": [1, 1, 1, 1]}, (6, 6)),
    ({"group": 4, "pads": [1, 1, 1, 1]}, (6, 6)),
    # more padding at the end than any window reaches
    ({"strides": [2, 2], "pads": [1, 1, 2, 2]}, (9, 9)),
])
def test_conv(attrs, spatial):
    groups = attrs.get("group", 1)
    m = make_model([node("Conv", ["x", "w", "b"], ["y"], **attrs)],
                   [("x", ["N", 4] + list(spatial))],
                   [("y", None)],
                   {"w": weights(8, 4 // groups, 3, 3),
                    "b": weights(8, seed=3)})
    check(m, (4,) + spatial)


@needs_ort
@pytest.mark.parametrize("attrs, spatial, begin, end", [
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, (8, 8), [0, 0], [1, 1]),
    ({"pads": [1, 0, 0, 0]}, (8, 8), [1, 0], [0, 0]),
    ({"strides": [2, 2], "pads": [1, 1, 2, 2]}, (8, 8), [1, 1], [2, 2]),
])
def test_conv_asymmetric_padding_is_refused(attrs, spatial, begin, end):
    m = make_model([node("Conv", ["x", "w"], ["y"], name="pad_conv",
                         **attrs)],
                   [("x", ["N", 2] + list(spatial))], [("y", None)],
                   {"w": weights(3, 2, 3, 3)})
    ort_run(m, np.zeros((1, 2) + spatial, np.float32))     # a valid model
    with pytest.raises(fl.UnsupportedOperatorError,
                       match=rf"node 'pad_conv' \(Conv, opset 17\): padding "
                             rf"\(begin {begin}, end {end}\) that fastlazy "
                             rf"cannot reproduce".replace("[", r"\[")
                             .replace("]", r"\]")):
        fl.onnx.load(m)


@needs_ort
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs, spatial", [
    ({"kernel_shape": [2, 2], "strides": [2, 2]}, (8, 8)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
     (9, 9)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1],
      "count_include_pad": 1}, (9, 8)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1}, (8, 8)),
    ({"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1,
      "pads": [1, 1, 1, 1]}, (10, 10)),
    ({"kernel_shape": [2, 2], "strides": [2, 2], "ceil_mode": 1,
      "pads": [1, 1, 1, 1], "count_include_pad": 1}, (7, 7)),
    ({"kernel_shape": [2, 3], "strides": [1, 2]}, (5, 9)),
    ({"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER"}, (7, 7)),
])
def test_pooling(op, attrs, spatial):
    if op == "MaxPool":
        attrs = {k: v for k, v in attrs.items() if k != "count_include_pad"}
    m = make_model([node(op, ["x"], ["y"], **attrs)],
                   [("x", ["N", 3] + list(spatial))], [("y", None)])
    check(m, (3,) + spatial)


@needs_ort
@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
@pytest.mark.parametrize("spatial", [(5, 6), (7,)])
def test_global_pooling(op, spatial):
    m = make_model([node(op, ["x"], ["y"])],
                   [("x", ["N", 3] + list(spatial))],
                   [("y", ["N", 3] + [1] * len(spatial))])
    check(m, (3,) + spatial)


@needs_ort
def test_batchnorm_and_layernorm():
    c = 5
    inits = {"g": weights(c) + 1.5, "b": weights(c, seed=1),
             "m": weights(c, seed=2), "v": weights(c, seed=3) + 1.5,
             "ls": weights(3, 4, seed=4), "lb": weights(4, seed=5)}
    m = make_model([node("BatchNormalization", ["x", "g", "b", "m", "v"],
                         ["h"], epsilon=1e-3),
                    node("Relu", ["h"], ["y"]),
                    node("LayerNormalization", ["x", "ls", "lb"], ["z"],
                         axis=2, epsilon=1e-4),
                    node("LayerNormalization", ["x", "lb"], ["w"])],
                   [("x", ["N", c, 3, 4])],
                   [("y", ["N", c, 3, 4]), ("z", ["N", c, 3, 4]),
                    ("w", ["N", c, 3, 4])], inits)
    net = check(m, (c, 3, 4))
    assert "BatchNormalization+Relu" in net.fusion_report()


@needs_ort
def test_shape_arithmetic_and_reshapes():
    # a Reshape target built from Shape, Gather, Div, Mul, Concat, and
    # Reshape / Flatten / Squeeze / Unsqueeze / Transpose on data
    nodes = [
        node("Shape", ["x"], ["s"]),
        node("Gather", ["s", "zero"], ["n"], axis=0),
        node("Unsqueeze", ["n", "zeros1"], ["n1"]),
        node("Concat", ["n1", "minus1"], ["target"], axis=0),
        node("Reshape", ["x", "target"], ["flat"]),
        node("Reshape", ["x", "t2"], ["r2"]),
        node("Flatten", ["r2"], ["f2"]),
        node("Unsqueeze", ["f2", "two"], ["u"]),
        node("Squeeze", ["u", "two"], ["sq"]),
        node("Transpose", ["u"], ["tr"], perm=[0, 2, 1]),
        node("Add", ["flat", "sq"], ["a"]),
        node("Sub", ["a", "tr_flat"], ["y"]),
        node("Reshape", ["tr", "t3"], ["tr_flat"]),
    ]
    inits = {"zero": np.array(0, np.int64), "zeros1": np.array([0]),
             "minus1": np.array([-1]), "t2": np.array([0, 3, -1]),
             "two": np.array([2]), "t3": np.array([0, -1])}
    m = make_model(nodes, [("x", ["N", 3, 2, 2])], [("y", ["N", 12])],
                   inits)
    net = check(m, (3, 2, 2))
    assert "Shape" in net.fusion_report()


@needs_ort
def test_concat_slice_gather_and_n_ary():
    nodes = [
        node("Slice", ["x", "st", "en", "ax"], ["s1"]),
        node("Slice", ["x", "st2", "en2", "ax"], ["s2"]),
        node("Concat", ["s2", "s1", "x"], ["c"], axis=1),
        node("Gather", ["c", "idx"], ["g"], axis=1),
        node("Sum", ["g", "g", "g"], ["sm"]),
        node("Mean", ["g", "sm"], ["mn"]),
        node("Max", ["mn", "g"], ["mx"]),
        node("Min", ["mx", "half"], ["y"]),
        node("ReduceMean", ["c"], ["rm"], axes=[2], keepdims=1),
        node("ReduceSum", ["c", "axes2"], ["rs"], keepdims=0),
        node("ReduceMax", ["c"], ["rx"], axes=[2], keepdims=1),
        node("Div", ["rm", "two"], ["rm2"]),
        node("Div", ["two", "rx"], ["rx2"]),
        node("Mul", ["rs", "scale"], ["rs2"]),
    ]
    inits = {"st": np.array([1]), "en": np.array([3]), "ax": np.array([1]),
             "st2": np.array([-2]), "en2": np.array([2 ** 62]),
             "idx": np.array(2), "half": np.float32(0.5),
             "axes2": np.array([1]),
             "two": np.float32(2.0), "scale": weights(6)}
    m = make_model(nodes, [("x", ["N", 4, 6])],
                   [("y", ["N", 6]), ("rm2", None), ("rs2", None),
                    ("rx2", None)], inits, opset=17)
    check(m, (4, 6))


@needs_ort
def test_residual_and_concat_branches_with_two_inputs():
    nodes = [node("Gemm", ["a", "w1", "b1"], ["h1"], transB=1),
             node("Relu", ["h1"], ["r1"]),
             node("Add", ["r1", "a"], ["res"]),
             node("Gemm", ["b", "w2"], ["h2"]),
             node("Concat", ["res", "h2"], ["cat"], axis=-1),
             node("Gemm", ["cat", "w3", "b3"], ["y"], transB=1),
             node("Mul", ["res", "res"], ["sq"])]
    inits = {"w1": weights(6, 6), "b1": weights(6, seed=1),
             "w2": weights(3, 4, seed=2), "w3": weights(2, 10, seed=3),
             "b3": weights(2, seed=4)}
    m = make_model(nodes, [("a", ["N", 6]), ("b", ["N", 3])],
                   [("y", ["N", 2]), ("sq", ["N", 6])], inits)
    net = check(m, (6,), (3,))
    assert net.input_names == ("a", "b")
    assert net.output_names == ("y", "sq")


@needs_ort
def test_float64_and_bfloat16_initializers():
    w = weights(4, 6)
    bf = helper.make_tensor("wb", TensorProto.BFLOAT16, [4, 6],
                            (w.view(np.uint32) >> 16).astype(np.uint16)
                            .tobytes(), raw=True)
    m = make_model([node("Cast", ["w64"], ["w1"], to=TensorProto.FLOAT),
                    node("Cast", ["wb"], ["w2"], to=TensorProto.FLOAT),
                    node("Gemm", ["x", "w1"], ["h"], transB=1),
                    node("Gemm", ["h", "w2"], ["y"])],
                   [("x", ["N", 6])], [("y", ["N", 6])],
                   {"w64": weights(4, 6, seed=1).astype(np.float64)})
    m.graph.initializer.append(bf)
    net = check(m, (6,))
    bits = (w.view(np.uint32) >> 16 << 16).view(np.float32)
    np.testing.assert_array_equal(net.collect_params()["wb"].data(), bits.T)


@needs_ort
def test_float64_network():
    m = make_model([node("Gemm", ["x", "w"], ["y"], transB=1)],
                   [("x", ["N", 6])], [("y", ["N", 4])],
                   {"w": weights(4, 6)})
    net = fl.onnx.load(m, dtype="float64")
    x = np.random.default_rng(0).standard_normal((3, 6))
    y = net(x)
    assert y.dtype == np.float64
    np.testing.assert_allclose(y, x @ weights(4, 6).astype(np.float64).T,
                               rtol=1e-12)


@needs_ort
def test_graph_output_that_is_the_input_or_repeated():
    m = make_model([node("Identity", ["x"], ["y"]),
                    node("Relu", ["x"], ["r"]),
                    node("Identity", ["r"], ["r2"])],
                   [("x", ["N", 4])],
                   [("y", ["N", 4]), ("r", ["N", 4]), ("r2", ["N", 4])])
    check(m, (4,))


# ---------------------------------------------------------------------------
# Refusals: what, where, and what to do


def test_every_unsupported_node_is_named_in_one_message():
    m = make_model([node("Gemm", ["x", "w"], ["h"], transB=1, name="fc"),
                    node("Erf", ["h"], ["e"], name="erf1"),
                    node("Exp", ["h"], ["ex"], name="exp1"),
                    node("Add", ["e", "ex"], ["s"], name="add"),
                    node("TopK", ["s", "k"], ["y", "i"], name="topk")],
                   [("x", ["N", 6])], [("y", ["N", 2])],
                   {"w": weights(4, 6), "k": np.array([2])})
    with pytest.raises(fl.UnsupportedOperatorError) as err:
        fl.onnx.load(m)
    text = str(err.value)
    assert "cannot run 3 node(s)" in text
    assert "node 'erf1' (Erf, opset 17): fastlazy has no such operator" \
        in text
    assert "node 'exp1' (Exp, opset 17)" in text
    # after a refused node, a node is judged by its operator alone
    assert "node 'topk' (TopK, opset 17)" in text and "'add'" not in text
    assert "Conv, Div" in text      # the supported list


def test_old_opsets_are_refused_with_the_fix():
    m = make_model([node("Relu", ["x"], ["y"])], [("x", ["N", 4])],
                   [("y", ["N", 4])], opset=11)
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="opset 11 of the default ONNX domain; fastlazy "
                             "reads opset 13 and up .*opset_version=13"):
        fl.onnx.load(m)


def test_integer_inputs_are_refused():
    m = make_model([node("Cast", ["x"], ["y"], to=TensorProto.FLOAT)],
                   [("x", ["N", 4])], [("y", ["N", 4])])
    m.graph.input[0].type.tensor_type.elem_type = TensorProto.INT64
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="input 'x' is INT64; fastlazy takes "
                             "floating-point inputs"):
        fl.onnx.load(m)


def test_unknown_sizes_need_input_shape():
    m = make_model([node("Relu", ["x"], ["y"])], [("x", ["N", "width"])],
                   [("y", ["N", "width"])])
    with pytest.raises(fl.ShapeError, match="input 'x' has no size on axis "
                       r"1 \(named 'width'\); pass input_shape=\(None, "
                       r"\.\.\.\)"):
        fl.onnx.load(m)
    net = fl.onnx.load(m, input_shape=(None, 7))
    x = np.linspace(-1, 1, 14, dtype=np.float32).reshape(2, 7)
    np.testing.assert_array_equal(net(x), np.maximum(x, 0))
    net = fl.onnx.load(m, input_shape={"x": (None, 3)})
    assert net.input_shapes == ((None, 3),)
    with pytest.raises(ValueError, match=r"input_shape names \['y'\]"):
        fl.onnx.load(m, input_shape={"y": (None, 3)})
    with pytest.raises(fl.ShapeError, match="has 2 axes in the file, "
                       "input_shape gives 3"):
        fl.onnx.load(m, input_shape=(None, 3, 3))


def test_reshape_across_the_batch_is_refused():
    m = make_model([node("Reshape", ["x", "t"], ["y"], name="r")],
                   [("x", ["N", 4])], [("y", [2, -1])],
                   {"t": np.array([2, -1])})
    with pytest.raises(fl.UnsupportedOperatorError,
                       match=r"node 'r' \(Reshape, opset 17\): reshapes "
                             r"\('N', 4\) to \(2, -1\), which changes the "
                             r"batch axis"):
        fl.onnx.load(m)


def test_static_batch_in_a_reshape_target_is_the_batch():
    # the legacy exporter without dynamic axes writes the batch it saw
    m = make_model([node("Reshape", ["x", "t"], ["y"])],
                   [("x", [1, 2, 3])], [("y", [1, 6])],
                   {"t": np.array([1, 6])})
    net = fl.onnx.load(m)
    x = np.arange(24, dtype=np.float32).reshape(4, 2, 3)
    np.testing.assert_array_equal(net(x), x.reshape(4, 6))


def test_outputs_argument():
    m = make_model([node("Relu", ["x"], ["y"]), node("Neg", ["x"], ["z"])],
                   [("x", ["N", 3])], [("y", ["N", 3]), ("z", ["N", 3])])
    net = fl.onnx.load(m, outputs="z")
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(net(x), -x)
    with pytest.raises(ValueError, match=r"outputs \['w'\] must name "
                       r"outputs of the model"):
        fl.onnx.load(m, outputs=["w"])


def test_training_mode_and_used_extra_outputs_are_refused():
    c = 3
    stats = {k: np.ones(c, np.float32) for k in "gbmv"}
    m = make_model([node("BatchNormalization", ["x", "g", "b", "m", "v"],
                         ["y"], training_mode=1, name="bn")],
                   [("x", ["N", c])], [("y", ["N", c])], stats, opset=15)
    with pytest.raises(fl.UnsupportedOperatorError, match="training_mode=1"):
        fl.onnx.load(m)
    m = make_model([node("Dropout", ["x"], ["y", "mask"], name="d"),
                    node("Cast", ["mask"], ["z"], to=1)],
                   [("x", ["N", c])], [("y", ["N", c]), ("z", ["N", c])])
    with pytest.raises(fl.UnsupportedOperatorError,
                       match="its output 1 \\('mask'\\) is used"):
        fl.onnx.load(m)


def test_bad_arguments():
    with pytest.raises(TypeError, match="expected a path, bytes or an "
                       "onnx.ModelProto, got int"):
        fl.onnx.load(3)
    with pytest.raises(TypeError, match="dtype must be 'float32' or "
                       "'float64'"):
        fl.onnx.load(DATA / "mlp.onnx", dtype="int8")
    with pytest.raises(FileNotFoundError):
        fl.onnx.load(DATA / "missing.onnx")


# ---------------------------------------------------------------------------
# Models exported here by torch (skipped without it)


def _torch():
    if os.environ.get("FASTLAZY_SANITIZER"):
        pytest.skip("PyTorch aborts under the AddressSanitizer preload "
                    "(its C++ exceptions; tools/sanitize.sh)")
    return pytest.importorskip("torch", reason="needs PyTorch (pip install "
                               "torch) to export models here")


def _torch_cases():
    torch = _torch()
    nn, F = torch.nn, torch.nn.functional

    class Acts(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(12, 12)
            self.prelu = nn.PReLU(12)

        def forward(self, x):
            h = self.fc(x)
            parts = [F.leaky_relu(h, 0.1), F.elu(h, 0.5), F.selu(h),
                     self.prelu(h), F.hardsigmoid(h), F.hardswish(h),
                     F.softplus(h), F.softsign(h), F.gelu(h,
                                                          approximate="tanh"),
                     F.relu6(h * 4), torch.clamp(h, -0.2, 0.3), F.silu(h)]
            return torch.cat(parts, dim=1)

    class Pools(nn.Module):
        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3)
            self.c2 = nn.Conv2d(6, 6, 3, padding=2, dilation=2)
            self.bn = nn.BatchNorm2d(6)

        def forward(self, x):
            h = F.relu(self.bn(self.c2(self.c1(x))))
            a = F.max_pool2d(h, 3, 2, 1, ceil_mode=True)
            b = F.avg_pool2d(h, 3, 2, 1, ceil_mode=True,
                             count_include_pad=False)
            c = F.avg_pool2d(h, 2, 2, count_include_pad=True)
            return torch.cat([a.flatten(1), b.flatten(1), c.flatten(1)], 1)

    class Norms(nn.Module):
        def __init__(self):
            super().__init__()
            self.ln = nn.LayerNorm([4, 5])
            self.fc = nn.Linear(5, 3)
            self.drop = nn.Dropout(0.3)

        def forward(self, x):
            h = self.drop(self.ln(x))
            return F.softmax(self.fc(h), dim=1)

    torch.manual_seed(1)
    return {"acts": (Acts(), (12,)), "pools": (Pools(), (3, 15, 15)),
            "norms": (Norms(), (4, 5))}


@needs_ort
@pytest.mark.parametrize("case", ["acts", "pools", "norms"])
@pytest.mark.parametrize("exporter", [
    "legacy",
    # a minute per model on the project's machine: a long run
    pytest.param("dynamo", marks=pytest.mark.slow)])
def test_torch_exports(tmp_path, case, exporter):
    torch = _torch()
    net, shape = _torch_cases()[case]
    for m in net.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
    net.eval()
    path = tmp_path / f"{case}.onnx"
    x = torch.randn((2,) + shape)
    if exporter == "legacy":
        torch.onnx.export(net, (x,), str(path), dynamo=False,
                          opset_version=17, input_names=["x"],
                          dynamic_axes={"x": {0: "batch"}})
    else:
        pytest.importorskip("onnxscript", reason="the dynamo exporter needs "
                            "onnxscript")
        prog = torch.onnx.export(
            net, (x,), dynamo=True, input_names=["x"],
            dynamic_shapes={"x": {0: torch.export.Dim("batch", min=1,
                                                      max=1024)}})
        prog.save(str(path))
    loaded = fl.onnx.load(path)
    for batch in (1, 37):
        xb = torch.randn((batch,) + shape)
        with torch.no_grad():
            ref = net(xb).numpy()
        close(loaded(xb.numpy()), ref)
        close(loaded(xb.numpy()), ort_run(path, xb.numpy())[0])


@needs_ort
def test_sklearn_mlp_classifier_here(tmp_path):
    pytest.importorskip("sklearn", reason="needs scikit-learn")
    skl2onnx = pytest.importorskip("skl2onnx", reason="needs skl2onnx")
    from sklearn.neural_network import MLPClassifier
    rng = np.random.default_rng(0)
    x = rng.standard_normal((200, 5)).astype(np.float32)
    y = (x[:, 0] + x[:, 1] > 0).astype(int)
    clf = MLPClassifier((10,), activation="tanh", max_iter=200,
                        random_state=0).fit(x, y)
    model = skl2onnx.to_onnx(clf, x[:1], options={"zipmap": False})
    net = fl.onnx.load(model, outputs=["probabilities"])
    close(net(x), clf.predict_proba(x), rtol=1e-4)
    close(net(x[:1]), ort_run(model, x[:1], outputs=["probabilities"])[0])


def test_readme_lists_every_operator():
    readme = pathlib.Path(__file__).parent.parent / "README.md"
    if not readme.exists():
        pytest.skip("no README.md beside the tests")
    text = readme.read_text()
    section = text[text.index("## Coming from ONNX"):
                   text.index("## Scoring large data")]
    from fastlazy.onnx.load import supported_operators
    missing = [op for op in supported_operators() if f"`{op}`" not in section]
    assert not missing, f"README's ONNX section lacks {missing}"
