"""Tests of the MXNet parameter-file and symbol-graph reader.

The fixtures in ``tests/data/mxnet`` were written by MXNet 1.9.1; each
``NAME.io.npz`` holds an input ``x`` and the output ``y`` MXNet computed for it,
so recomputing ``y`` in NumPy from the loaded arrays proves the reader right.
"""

import importlib
import json
import math
import pathlib
import random
import struct
import sys
import tracemalloc
import types

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

DATA = pathlib.Path(__file__).parent / "data" / "mxnet"
SRC = pathlib.Path(__file__).parents[1] / "src" / "fastlazy"


def _load_modules():
    """``fastlazy.mxnet.format`` and ``fastlazy.mxnet.names``, or the same
    files imported by path if the package is not built (they need neither
    the compiled core nor MXNet)."""
    try:
        return (importlib.import_module("fastlazy.mxnet.format"),
                importlib.import_module("fastlazy.mxnet.names"))
    except ImportError:
        root = "_fastlazy_under_test"
        for name, path in ((root, SRC), (f"{root}.mxnet", SRC / "mxnet")):
            package = types.ModuleType(name)
            package.__path__ = [str(path)]
            sys.modules[name] = package
        return (importlib.import_module(f"{root}.mxnet.format"),
                importlib.import_module(f"{root}.mxnet.names"))


mx, mxnames = _load_modules()
ParameterFileError = mx.ParameterFileError


@pytest.fixture(scope="module")
def reader():
    """The module under test."""
    return mx


# ---------------------------------------------------------------------------
# Helpers: an independent walker of the fixture layout, and a tiny writer.
# ---------------------------------------------------------------------------

V1, V2, V3 = 0xF993FAC8, 0xF993FAC9, 0xF993FACA
FLAGS = {
    np.dtype("<f4"): 0,
    np.dtype("<f8"): 1,
    np.dtype("<f2"): 2,
    np.dtype("u1"): 3,
    np.dtype("<i4"): 4,
    np.dtype("i1"): 5,
    np.dtype("<i8"): 6,
    np.dtype("?"): 7,
}
ITEMSIZE = {flag: dtype.itemsize for dtype, flag in FLAGS.items()}


def layout(data):
    """Locate the header fields and payloads of a dense V2/V3 fixture file.

    Returns
    -------
    fields : list of (offset, width)
        Every integer field of the container and the record headers.
    payloads : list of (start, stop)
        Byte range of each record's data.
    """
    fields = [(0, 8), (8, 8), (16, 8)]
    (count,) = struct.unpack_from("<Q", data, 16)
    pos = 24
    payloads = []
    for _ in range(count):
        fields += [(pos, 4), (pos + 4, 4), (pos + 8, 4)]
        (ndim,) = struct.unpack_from("<i", data, pos + 8)
        pos += 12
        shape = struct.unpack_from(f"<{ndim}q", data, pos)
        fields += [(pos + 8 * i, 8) for i in range(ndim)]
        pos += 8 * ndim
        fields += [(pos, 4), (pos + 4, 4), (pos + 8, 4)]
        (flag,) = struct.unpack_from("<i", data, pos + 8)
        pos += 12
        size = math.prod(shape) * ITEMSIZE[flag]
        payloads.append((pos, pos + size))
        pos += size
    fields.append((pos, 8))
    (nkeys,) = struct.unpack_from("<Q", data, pos)
    pos += 8
    for _ in range(nkeys):
        fields.append((pos, 8))
        (length,) = struct.unpack_from("<Q", data, pos)
        pos += 8 + length
    assert pos == len(data)
    return fields, payloads


def record(array, fmt="v3", stype=0, flag=None):
    """Encode one NDArray record in the layout ``fmt`` (v3, v2, v1 or v0)."""
    shape = array.shape
    ndim = len(shape)
    if fmt == "v0":
        head = struct.pack(f"<I{ndim}I", ndim, *shape)
    else:
        dims = struct.pack(f"<i{ndim}q", ndim, *shape)
        head = {
            "v3": struct.pack("<Ii", V3, stype),
            "v2": struct.pack("<Ii", V2, stype),
            "v1": struct.pack("<I", V1),
        }[fmt] + dims
    if flag is None:
        flag = FLAGS[array.dtype.newbyteorder("<")]
    payload = np.ascontiguousarray(array, array.dtype.newbyteorder("<")).tobytes()
    return head + struct.pack("<iii", 1, 0, flag) + payload


def container(records, keys):
    """Wrap encoded records and string keys in MXNet's list container."""
    out = [struct.pack("<QQQ", 0x112, 0, len(records)), *records]
    out.append(struct.pack("<Q", len(keys)))
    for key in keys:
        raw = key if isinstance(key, bytes) else key.encode()
        out += [struct.pack("<Q", len(raw)), raw]
    return b"".join(out)


def outcome(data):
    """Read ``data``; return the arrays, or ``None`` if it was rejected.

    Any exception other than ParameterFileError propagates and fails the test.
    """
    try:
        return mx.read_params(data)
    except ParameterFileError:
        return None


def flat_bytes(params):
    return b"".join(a.tobytes() for a in params.values())


def fixture_bytes(name):
    return (DATA / name).read_bytes()


PARAM_FILES = sorted(p.name for p in DATA.glob("*.params"))


# ---------------------------------------------------------------------------
# Fixture contents
# ---------------------------------------------------------------------------

F32, F64 = np.dtype("float32"), np.dtype("float64")
EXPECTED = {
    "mlp.params": {
        "0.weight": (256, 20),
        "0.bias": (256,),
        "1.weight": (10, 256),
        "1.bias": (10,),
    },
    "mlp_f64.params": {
        "0.weight": (8, 5),
        "0.bias": (8,),
        "1.weight": (2, 8),
        "1.bias": (2,),
    },
    "legacy_mlp.params": {
        "0.weight": (128, 40),
        "0.bias": (128,),
        "1.weight": (32, 128),
        "1.bias": (32,),
        "2.weight": (5, 32),
        "2.bias": (5,),
    },
    "lenet.params": {
        "0.weight": (6, 1, 5, 5),
        "0.bias": (6,),
        "2.weight": (16, 6, 5, 5),
        "2.bias": (16,),
        "4.weight": (120, 400),
        "4.bias": (120,),
        "5.weight": (84, 120),
        "5.bias": (84,),
        "6.weight": (10, 84),
        "6.bias": (10,),
    },
    "nested_bn.params": {
        "0.0.weight": (32, 12),
        "0.0.bias": (32,),
        "0.1.gamma": (32,),
        "0.1.beta": (32,),
        "0.1.running_mean": (32,),
        "0.1.running_var": (32,),
        "1.weight": (16, 32),
        "1.bias": (16,),
        "3.weight": (3, 16),
        "3.bias": (3,),
    },
    "hybrid_mlp-0000.params": {
        "arg:dense8_weight": (64, 30),
        "arg:dense8_bias": (64,),
        "arg:dense9_weight": (64, 64),
        "arg:dense9_bias": (64,),
        "arg:dense10_weight": (4, 64),
        "arg:dense10_bias": (4,),
    },
}


def test_every_fixture_is_covered():
    assert sorted(EXPECTED) == PARAM_FILES


@pytest.mark.parametrize("name", PARAM_FILES)
def test_fixture_keys_shapes_dtypes(reader, name):
    params = reader.read_params(DATA / name)
    assert list(params) == list(EXPECTED[name])
    dtype = F64 if name == "mlp_f64.params" else F32
    for key, array in params.items():
        assert array.shape == EXPECTED[name][key], key
        assert array.dtype == dtype, key
        assert array.flags.owndata and array.flags.writeable
        assert array.flags.c_contiguous
        assert np.isfinite(array).all()


@pytest.mark.parametrize("name", PARAM_FILES)
def test_fixture_headers_are_v3_except_legacy(name):
    data = fixture_bytes(name)
    (magic,) = struct.unpack_from("<I", data, 24)
    assert magic == (V2 if name == "legacy_mlp.params" else V3)


def test_sources_path_str_bytes_bytearray_memoryview(reader):
    path = DATA / "mlp_f64.params"
    expected = reader.read_params(path)
    data = path.read_bytes()
    for source in (str(path), data, bytearray(data), memoryview(data)):
        got = reader.read_params(source)
        assert list(got) == list(expected)
        for key in got:
            np.testing.assert_array_equal(got[key], expected[key])


def test_bad_source_type_and_missing_file(reader, tmp_path):
    with pytest.raises(TypeError):
        reader.read_params(42)
    with pytest.raises(OSError):
        reader.read_params(tmp_path / "missing.params")


def test_arrays_do_not_alias_the_input(reader):
    data = bytearray(fixture_bytes("mlp_f64.params"))
    params = reader.read_params(data)
    before = params["0.weight"].copy()
    data[:] = bytes(len(data))
    np.testing.assert_array_equal(params["0.weight"], before)
    params["0.weight"][...] = 0  # writable


# ---------------------------------------------------------------------------
# Forward passes against MXNet's outputs
# ---------------------------------------------------------------------------


def dense(x, params, prefix):
    x = x.reshape(x.shape[0], -1)
    return x @ params[prefix + "weight"].T + params[prefix + "bias"]


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


def softrelu(x):
    return np.log1p(np.exp(x))


def relu(x):
    return np.maximum(x, 0)


ACTIVATIONS = {"relu": relu, "sigmoid": sigmoid, "tanh": np.tanh, "softrelu": softrelu}


def batch_norm(x, params, prefix, eps=1e-5):
    mean, var = params[prefix + "running_mean"], params[prefix + "running_var"]
    scale = params[prefix + "gamma"] / np.sqrt(var + eps)
    return (x - mean) * scale + params[prefix + "beta"]


def conv2d(x, weight, bias, pad=0):
    """NCHW convolution, stride 1, via a sliding window view."""
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    kh, kw = weight.shape[2:]
    windows = np.lib.stride_tricks.sliding_window_view(x, (kh, kw), axis=(2, 3))
    return np.einsum("nchwij,ocij->nohw", windows, weight) + bias[:, None, None]


def avg_pool2(x):
    n, c, h, w = x.shape
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def io(name):
    with np.load(DATA / f"{name}.io.npz") as data:
        return data["x"], data["y"]


def test_forward_mlp(reader):
    p = reader.read_params(DATA / "mlp.params")
    x, y = io("mlp")
    out = dense(relu(dense(x, p, "0.")), p, "1.")
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-6)


def test_forward_mlp_f64(reader):
    p = reader.read_params(DATA / "mlp_f64.params")
    x, y = io("mlp_f64")
    assert x.dtype == y.dtype == np.float64
    out = dense(softrelu(dense(x, p, "0.")), p, "1.")
    np.testing.assert_allclose(out, y, rtol=1e-12, atol=1e-12)


def test_forward_legacy_mlp(reader):
    p = reader.read_params(DATA / "legacy_mlp.params")
    x, y = io("legacy_mlp")
    h = relu(dense(x, p, "0."))
    h = sigmoid(dense(h, p, "1."))
    np.testing.assert_allclose(dense(h, p, "2."), y, rtol=1e-5, atol=1e-6)


def test_forward_nested_batchnorm(reader):
    p = reader.read_params(DATA / "nested_bn.params")
    x, y = io("nested_bn")
    # The running statistics are not the initial 0/1, so BatchNorm matters.
    assert not np.allclose(p["0.1.running_var"], 1)
    h = np.tanh(batch_norm(dense(x, p, "0.0."), p, "0.1."))
    h = sigmoid(dense(h, p, "1."))  # 2 is Dropout: identity at inference
    np.testing.assert_allclose(dense(h, p, "3."), y, rtol=1e-5, atol=1e-6)


def test_forward_lenet(reader):
    p = reader.read_params(DATA / "lenet.params")
    x, y = io("lenet")
    h = avg_pool2(sigmoid(conv2d(x, p["0.weight"], p["0.bias"], pad=2)))
    h = avg_pool2(sigmoid(conv2d(h, p["2.weight"], p["2.bias"])))
    assert h.shape == (3, 16, 5, 5)
    h = sigmoid(dense(h, p, "4."))
    h = sigmoid(dense(h, p, "5."))
    np.testing.assert_allclose(dense(h, p, "6."), y, rtol=1e-4, atol=1e-5)


def run_graph(reader, graph, params, x):
    """Evaluate a graph of FullyConnected/Activation nodes in NumPy."""
    values = {graph.inputs[0]: x}
    for node in graph.nodes:
        (arg,) = (values[name] for name in node["inputs"])
        attrs = node["attrs"]
        if node["op"] == "FullyConnected":
            assert reader.parse_attr_bool(attrs["flatten"])
            out = arg.reshape(arg.shape[0], -1) @ params[node["params"]["weight"]].T
            assert out.shape[1] == reader.parse_attr_int(attrs["num_hidden"])
            if not reader.parse_attr_bool(attrs.get("no_bias", "False")):
                out = out + params[node["params"]["bias"]]
        else:
            assert node["op"] == "Activation"
            out = ACTIVATIONS[attrs["act_type"]](arg)
        values[node["name"]] = out
    (output,) = graph.outputs
    return values[output]


def test_forward_hybrid_mlp_from_symbol_graph(reader):
    graph = reader.read_symbol_graph(DATA / "hybrid_mlp-symbol.json")
    raw = reader.read_params(DATA / "hybrid_mlp-0000.params")
    params = {}
    for key, array in raw.items():
        kind, name = mxnames.strip_export_prefix(key)
        assert kind == "arg"
        params[name] = array
    x, y = io("hybrid_mlp")
    out = run_graph(reader, graph, params, x)
    np.testing.assert_allclose(out, y, rtol=1e-5, atol=1e-6)


# ---------------------------------------------------------------------------
# Symbol graphs
# ---------------------------------------------------------------------------

SYMBOL = DATA / "hybrid_mlp-symbol.json"


def test_symbol_is_a_linear_chain(reader):
    graph = reader.read_symbol_graph(SYMBOL)
    assert graph.inputs == ["data"]
    assert graph.outputs == ["dense10_fwd"]
    assert [n["op"] for n in graph.nodes] == [
        "FullyConnected",
        "Activation",
        "FullyConnected",
        "Activation",
        "FullyConnected",
    ]
    previous = "data"
    for node in graph.nodes:
        assert node["inputs"] == [previous]
        previous = node["name"]
    assert previous == graph.outputs[0]
    first = graph.nodes[0]
    assert first == {
        "op": "FullyConnected",
        "name": "dense8_fwd",
        "attrs": {"flatten": "True", "no_bias": "False", "num_hidden": "64"},
        "inputs": ["data"],
        "params": {"weight": "dense8_weight", "bias": "dense8_bias"},
    }
    assert graph.nodes[1]["params"] == {}


def test_read_symbol_accepts_path_text_and_bytes(reader):
    text = SYMBOL.read_text()
    expected = reader.read_symbol(SYMBOL)
    assert reader.read_symbol(str(SYMBOL)) == expected
    assert reader.read_symbol(text) == expected
    assert reader.read_symbol(text.encode()) == expected
    assert expected == reader.read_symbol_graph(SYMBOL).nodes


def test_read_symbol_dag_keeps_variables_and_output_indexes(reader):
    path = DATA.parent / "mxnet_graphs" / "concat_cnn-symbol.json"
    dag = reader.read_symbol_dag(path)
    assert dag.source == str(path)
    assert dag.heads == [("concatcnn0_dense0_fwd", 0)]
    assert len(dag.nodes) == 19 and dag.nodes[0]["op"] == "null"
    by_name = {n["name"]: n for n in dag.nodes}
    assert by_name["concatcnn0_concat0"]["inputs"] == [
        ("concatcnn0_conv0_fwd", 0), ("concatcnn0_conv1_fwd", 0)]
    assert by_name["concatcnn0_conv0_weight"]["attrs"]["__shape__"] == \
        "(8, 0, 3, 3)"
    text = path.read_text()
    assert reader.read_symbol_dag(text).nodes == dag.nodes
    assert reader.read_symbol_dag(text.encode()).heads == dag.heads


def test_read_symbol_dag_names_cycles(reader):
    graph = {"nodes": [{"op": "null", "name": "data", "inputs": []},
                       {"op": "relu", "name": "a", "inputs": [[2, 0, 0]]},
                       {"op": "relu", "name": "b", "inputs": [[1, 0, 0]]}],
             "heads": [[2, 0, 0]]}
    with pytest.raises(ParameterFileError,
                       match=r"node 1 \('a'\): input 0 is the output of "
                             r"node 2 \('b'\), which comes after it: the "
                             r"graph has a cycle"):
        reader.read_symbol_dag(json.dumps(graph))
    graph["nodes"][1]["inputs"] = [[1, 0, 0]]
    with pytest.raises(ParameterFileError, match="own output"):
        reader.read_symbol_dag(json.dumps(graph))
    graph["nodes"][1]["inputs"] = [[0, 0, 0]]
    graph["nodes"][0]["inputs"] = [[0, 0, 0]]
    with pytest.raises(ParameterFileError, match="node 0.*cycle"):
        reader.read_symbol_dag(json.dumps(graph))


def bn_graph():
    """A Conv -> BatchNorm graph with aux variables, as MXNet exports it."""

    def var(name):
        return {"op": "null", "name": name, "inputs": []}

    nodes = [
        var("data"),
        var("c_weight"),
        {
            "op": "Convolution",
            "name": "c_fwd",
            "attrs": {"kernel": "(3, 3)", "no_bias": "True", "num_filter": "4"},
            "inputs": [[0, 0, 0], [1, 0, 0]],
        },
        var("bn_gamma"),
        var("bn_beta"),
        var("bn_running_mean"),
        var("bn_running_var"),
        {
            "op": "BatchNorm",
            "name": "bn_fwd",
            "attrs": {"eps": "0.001", "fix_gamma": "False"},
            "inputs": [[2, 0, 0], [3, 0, 0], [4, 0, 0], [5, 0, 1], [6, 0, 1]],
        },
    ]
    return {"nodes": nodes, "arg_nodes": [0, 1, 3, 4, 5, 6], "heads": [[7, 0, 0]]}


def test_symbol_roles_for_convolution_and_batchnorm(reader):
    graph = reader.read_symbol_graph(json.dumps(bn_graph()))
    conv, bn = graph.nodes
    assert conv["params"] == {"weight": "c_weight"}
    assert bn["inputs"] == ["c_fwd"]
    assert bn["params"] == {
        "gamma": "bn_gamma",
        "beta": "bn_beta",
        "moving_mean": "bn_running_mean",
        "moving_var": "bn_running_var",
    }
    assert reader.parse_attr_float(bn["attrs"]["eps"]) == pytest.approx(1e-3)
    assert reader.parse_attr_tuple(conv["attrs"]["kernel"]) == (3, 3)
    assert graph.inputs == ["data"]
    assert graph.outputs == ["bn_fwd"]


DELETE = object()
BROKEN_GRAPHS = [
    # (id, path to the changed item, new value or DELETE, text the error names)
    ("dangling-input", ("nodes", 2, "inputs"), [[0, 0, 0], [99, 0, 0]], "c_fwd"),
    ("forward-ref", ("nodes", 2, "inputs"), [[7, 0, 0]], "c_fwd"),
    ("negative-ref", ("nodes", 7, "inputs", 0), [-1, 0], "bn_fwd"),
    ("short-entry", ("nodes", 7, "inputs", 0), [2], "bn_fwd"),
    ("str-entry", ("nodes", 7, "inputs", 0), "x", "bn_fwd"),
    ("no-op", ("nodes", 2, "op"), DELETE, "c_fwd"),
    ("no-name", ("nodes", 2, "name"), DELETE, "node 2"),
    ("no-inputs", ("nodes", 7, "inputs"), DELETE, "bn_fwd"),
    ("dup-name", ("nodes", 4, "name"), "bn_gamma", "duplicate"),
    ("var-input", ("nodes", 3, "inputs"), [[0, 0, 0]], "bn_gamma"),
    ("too-many", ("nodes", 2, "inputs"), [[0, 0, 0]] * 4, "c_fwd"),
    ("attrs-type", ("nodes", 2, "attrs"), {"kernel": 3}, "c_fwd"),
    ("node-type", ("nodes", 3), [1, 2], "node 3"),
    ("no-nodes", ("nodes",), DELETE, "nodes"),
    ("no-heads", ("heads",), DELETE, "heads"),
    ("empty-heads", ("heads",), [], "heads"),
    ("bad-head", ("heads",), [[8, 0, 0]], "head 0"),
    ("arg-not-var", ("arg_nodes",), [2], "arg_nodes"),
]


@pytest.mark.parametrize(
    ("path", "value", "needle"),
    [case[1:] for case in BROKEN_GRAPHS],
    ids=[case[0] for case in BROKEN_GRAPHS],
)
def test_malformed_graph_names_the_problem(reader, path, value, needle):
    graph = bn_graph()
    parent = graph
    for step in path[:-1]:
        parent = parent[step]
    if value is DELETE:
        del parent[path[-1]]
    else:
        parent[path[-1]] = value
    with pytest.raises(ParameterFileError, match=needle):
        reader.read_symbol(json.dumps(graph))


@pytest.mark.parametrize(
    "text",
    [
        "{",
        "{]",
        '{"nodes": [], "heads": [[0, 0]]} x',
        '{"a": 1',
        b"[1, 2]",
        b"\xff{}",
        "{" + '"a": [' * 100_000,
    ],
)
def test_malformed_json(reader, text):
    with pytest.raises(ParameterFileError, match="<json>"):
        reader.read_symbol(text)


def test_malformed_json_file_names_the_file(reader, tmp_path):
    path = tmp_path / "broken-symbol.json"
    path.write_bytes(b"\xff\xfe{")
    with pytest.raises(ParameterFileError, match="broken-symbol.json"):
        reader.read_symbol(path)


# ---------------------------------------------------------------------------
# Attribute helpers and key prefixes
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("(5, 5)", (5, 5)),
        ("(64,)", (64,)),
        ("(64, -1)", (64, -1)),
        ("[1,2,3]", (1, 2, 3)),
        ("()", ()),
        ("7", (7,)),
    ],
)
def test_parse_attr_tuple(reader, text, expected):
    assert reader.parse_attr_tuple(text) == expected


@pytest.mark.parametrize("text", ["(a, b)", "(1,,2)", "None", "(1.5,)"])
def test_parse_attr_tuple_rejects(reader, text):
    with pytest.raises(ParameterFileError, match="tuple"):
        reader.parse_attr_tuple(text)


def test_parse_scalar_attrs(reader):
    assert reader.parse_attr_bool("True") is True
    assert reader.parse_attr_bool("false") is False
    assert reader.parse_attr_bool("1") is True
    assert reader.parse_attr_int("64") == 64
    assert reader.parse_attr_float("1e-05") == 1e-5
    for parse, text in [
        (reader.parse_attr_bool, "yes"),
        (reader.parse_attr_int, "6.4"),
        (reader.parse_attr_float, "eps"),
    ]:
        with pytest.raises(ParameterFileError):
            parse(text)


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("arg:dense0_weight", ("arg", "dense0_weight")),
        ("aux:bn_running_var", ("aux", "bn_running_var")),
        ("0.1.gamma", (None, "0.1.gamma")),
        ("other:x", (None, "other:x")),
        ("arg:", ("arg", "")),
    ],
)
def test_strip_export_prefix(key, expected):
    assert mxnames.strip_export_prefix(key) == expected


# ---------------------------------------------------------------------------
# Round trips through a minimal writer, in every record layout
# ---------------------------------------------------------------------------

DTYPES = [np.dtype(d) for d in ("<f2", "<f4", "<f8", "u1", "i1", "<i4", "<i8", "?")]


@st.composite
def named_arrays(draw, min_dims):
    keys = draw(st.lists(st.text(max_size=6), max_size=4, unique=True))
    arrays = []
    for _ in keys:
        dtype = draw(st.sampled_from(DTYPES))
        shape = draw(hnp.array_shapes(min_dims=min_dims, max_dims=4, min_side=0))
        arrays.append(draw(hnp.arrays(dtype, shape)))
    return keys, arrays


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["v3", "v2", "v1", "v0"]), st.data())
def test_round_trip(fmt, data):
    # NumPy mode is the only layout where ndim 0 is a scalar, not "unknown".
    keys, arrays = data.draw(named_arrays(min_dims=0 if fmt == "v3" else 1))
    params = mx.read_params(container([record(a, fmt) for a in arrays], keys))
    assert list(params) == keys
    for array, got in zip(arrays, params.values()):
        assert got.dtype == array.dtype and got.shape == array.shape
        assert got.tobytes() == array.tobytes()
        assert got.flags.owndata and got.flags.c_contiguous


def test_bool_payload_is_normalised(reader):
    raw = bytearray(record(np.array([True, False, True])))
    raw[-3] = 7  # MXNet writes 0/1, but any nonzero byte is true
    params = reader.read_params(container([bytes(raw)], ["b"]))
    np.testing.assert_array_equal(params["b"], [True, False, True])
    assert params["b"].dtype == np.bool_


def test_empty_list(reader):
    assert reader.read_params(container([], [])) == {}


# ---------------------------------------------------------------------------
# Rejection of malformed files, with located messages
# ---------------------------------------------------------------------------

ONE = np.arange(6, dtype=np.float32).reshape(2, 3)


def rejected(data, *needles):
    with pytest.raises(ParameterFileError) as info:
        mx.read_params(data)
    message = str(info.value)
    for needle in needles:
        assert needle in message, message
    return message


def test_message_names_file_record_and_offset(tmp_path):
    data = container([record(ONE), record(ONE)], ["a", "b"])
    path = tmp_path / "cut.params"
    path.write_bytes(data[:-30])
    second = 24 + len(record(ONE))
    rejected(path, "cut.params", "record 1", "at byte", "payload")
    message = rejected(data[:second + 2], "<bytes>", "record 1", "magic")
    assert f"at byte {second}" in message


def test_wrong_list_magic():
    data = bytearray(fixture_bytes("mlp.params"))
    data[0] = 0x13
    rejected(bytes(data), "list magic", "0x112", "at byte 0")


def test_wrong_record_magic():
    data = bytearray(fixture_bytes("mlp.params"))
    data[24:28] = struct.pack("<I", 0xDEADBEEF)
    rejected(bytes(data), "record 0", "0xDEADBEEF", "at byte 24")


def test_trailing_garbage():
    data = fixture_bytes("mlp_f64.params")
    rejected(data + b"\0", "end of the file", "1 more bytes", f"at byte {len(data)}")


def test_key_count_lies():
    both = [record(ONE), record(ONE)]
    rejected(container(both, ["a"]), "key count 1", "array count 2")
    rejected(container(both, []), "key count 0")
    rejected(container(both, ["a", "b", "c"]), "key count 3")


def test_array_count_lies():
    data = bytearray(container([record(ONE)], ["a"]))
    data[16:24] = struct.pack("<Q", 2**62)
    rejected(bytes(data), "array count", "at byte 16")
    data[16:24] = struct.pack("<Q", 2)
    rejected(bytes(data), "record 1")


def test_duplicate_key():
    rejected(container([record(ONE), record(ONE)], ["a", "a"]), "key 1", "duplicate")


def test_non_utf8_key():
    rejected(container([record(ONE)], [b"w\xff"]), "key 0", "UTF-8")


def test_huge_key_length():
    data = container([record(ONE)], ["a"])
    data = data[:-9] + struct.pack("<Q", 2**63) + b"a"
    rejected(data, "key 0", "key bytes")


@pytest.mark.parametrize(
    ("stype", "kind"), [(1, "row_sparse"), (2, "csr"), (-1, "undefined")]
)
def test_sparse_storage_is_rejected(stype, kind):
    rejected(container([record(ONE, "v2", stype=stype)], ["s"]), "record 0", kind)


@pytest.mark.parametrize(
    ("flag", "needle"), [(13, "unknown type flag"), (-1, "type flag")]
)
def test_unsupported_dtypes(flag, needle):
    rejected(container([record(ONE, flag=flag)], ["w"]), "record 0", needle)


def test_uninitialised_arrays_name_their_key():
    v3_unknown = struct.pack("<Iii", V3, 0, -1)
    v3_unknown_dim = struct.pack("<Iiiqq", V3, 0, 2, 3, -1)
    v2_none = struct.pack("<Iii", V2, 0, 0)
    v0_none = struct.pack("<I", 0)
    for raw in (v3_unknown, v3_unknown_dim, v2_none, v0_none):
        data = container([record(ONE), raw], ["a", "late"])
        rejected(data, "record 1 ('late')", "unknown shape")


@pytest.mark.parametrize(
    "header",
    [
        struct.pack("<Iii", V3, 0, -2),
        struct.pack("<Iii", V3, 0, 33),
        struct.pack("<Iii", V2, 0, -1),
        struct.pack("<Iiiq", V2, 0, 1, -5),
        struct.pack("<Iiiq", V3, 0, 1, -2),
        struct.pack("<I", 33),
    ],
    ids=["v3-ndim-2", "v3-ndim33", "v2-ndim-1", "v2-neg", "v3-neg", "v0-ndim33"],
)
def test_bad_shapes(header):
    rejected(container([header + struct.pack("<iii", 1, 0, 0)], ["a"]), "record 0")


def test_bad_device_type():
    raw = bytearray(record(ONE))
    raw[28:32] = struct.pack("<i", 9)  # after magic, stype, ndim and 2 dims
    rejected(container([bytes(raw)], ["a"]), "record 0", "device type 9")


@pytest.mark.parametrize("fmt", ["v3", "v2", "v1", "v0"])
def test_huge_dims_do_not_allocate(fmt):
    raw = record(np.zeros((1, 1), np.float32), fmt)
    big = struct.pack("<I", 0xFFFFFFFF) if fmt == "v0" else struct.pack("<q", 2**62)
    width = len(big)
    dims_at = {"v3": 12, "v2": 12, "v1": 8, "v0": 4}[fmt]
    raw = raw[:dims_at] + big + big + raw[dims_at + 2 * width :]
    tracemalloc.start()
    try:
        rejected(container([raw], ["a"]), "record 0", "payload")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


# ---------------------------------------------------------------------------
# Fuzzing the real fixtures
# ---------------------------------------------------------------------------


def truncation_points(size):
    if size <= 6000:
        return range(size)
    spread = np.linspace(0, size - 1, 300).astype(int).tolist()
    return sorted(set(spread) | set(range(128)) | set(range(size - 256, size)))


@pytest.mark.parametrize("name", PARAM_FILES)
def test_truncations_are_rejected(name):
    data = fixture_bytes(name)
    for cut in truncation_points(len(data)):
        with pytest.raises(ParameterFileError, match=r"at byte \d+"):
            mx.read_params(data[:cut])


def in_payload(position, payloads):
    return any(start <= position < stop for start, stop in payloads)


@pytest.mark.parametrize("name", PARAM_FILES)
def test_header_byte_flips(name):
    data = fixture_bytes(name)
    _, payloads = layout(data)
    headers = [i for i in range(len(data)) if not in_payload(i, payloads)]
    for position in headers:
        for mask in (0xFF, 0x01, 0x80):
            flipped = bytearray(data)
            flipped[position] ^= mask
            outcome(bytes(flipped))


@pytest.mark.parametrize("name", PARAM_FILES)
def test_random_byte_flips(name):
    data = fixture_bytes(name)
    _, payloads = layout(data)
    original = np.frombuffer(flat_bytes(mx.read_params(data)), np.uint8)
    rng = random.Random(f"flips-{name}")
    for _ in range(200):
        position = rng.randrange(len(data))
        flipped = bytearray(data)
        flipped[position] ^= rng.randrange(1, 256)
        result = outcome(bytes(flipped))
        if in_payload(position, payloads):
            assert result is not None, position
            got = np.frombuffer(flat_bytes(result), np.uint8)
            assert np.count_nonzero(got != original) == 1


HUGE = {
    4: [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFE, 33],
    8: [2**64 - 1, 2**63 - 1, 2**63, 2**62, 2**32],
}


@pytest.mark.parametrize("name", PARAM_FILES)
def test_huge_header_values(name):
    data = fixture_bytes(name)
    fields, _ = layout(data)
    budget = 4 * len(data) + (1 << 20)
    tracemalloc.start()
    try:
        for offset, width in fields:
            for value in HUGE[width]:
                patched = bytearray(data)
                patched[offset : offset + width] = value.to_bytes(width, "little")
                tracemalloc.reset_peak()
                outcome(bytes(patched))
                assert tracemalloc.get_traced_memory()[1] < budget, (offset, value)
    finally:
        tracemalloc.stop()


@pytest.mark.parametrize("name", PARAM_FILES)
def test_every_record_magic_replaced(name):
    data = fixture_bytes(name)
    fields, payloads = layout(data)
    record_starts = [f for f in fields if f[1] == 4][::6]
    assert len(record_starts) == len(payloads)
    for index, (offset, _) in enumerate(record_starts):
        patched = bytearray(data)
        patched[offset : offset + 4] = struct.pack("<I", 0x12345678)
        rejected(bytes(patched), f"record {index}, at byte {offset}", "0x12345678")
        # Reading the rest of the record as a V1 or pre-V1 header derails it.
        for magic in (0, 1, V1):
            patched[offset : offset + 4] = struct.pack("<I", magic)
            assert outcome(bytes(patched)) is None
        # Switching between the classic and NumPy-mode header is harmless
        # for arrays with ndim >= 1.
        other = V2 if data[offset] == 0xCA else V3
        patched[offset : offset + 4] = struct.pack("<I", other)
        assert flat_bytes(outcome(bytes(patched))) == flat_bytes(mx.read_params(data))
