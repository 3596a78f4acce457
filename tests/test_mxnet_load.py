"""Loading MXNet Gluon models into fastlazy networks: ``.params`` files into
a network built to match (``load_parameters``, keys matched by structure or
by Gluon 1.x name), and exported graphs rebuilt by ``fl.load_mxnet_export``.

The fixtures in ``tests/data/mxnet`` were written by MXNet 1.9.1 and
``NAME.io.npz`` holds an input ``x`` and MXNet's output ``y``: a network
built to match ``README.json`` that loads ``NAME.params`` must reproduce
``y``.  Exported graphs for other layer mixes are written here by
:func:`mx_graph` / :func:`mx_params`, which mimic MXNet's files (checked
against the real export in ``test_writers_match_mxnet``).
"""

import copy
import json
import math
import pathlib
import pickle
import random
import re
import struct
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import nn
from fastlazy.mxnet.export import OPS
from fastlazy.mxnet.format import read_params, read_symbol_graph

DATA = pathlib.Path(__file__).parent / "data" / "mxnet"
F32, F64 = np.dtype("float32"), np.dtype("float64")

def io(name):
    with np.load(DATA / f"{name}.io.npz") as data:
        return data["x"], data["y"]


def check_output(net, name):
    x, y = io(name)
    out = net(x)
    assert out.dtype == y.dtype
    tol = 1e-12 if y.dtype == F64 else 1e-5
    np.testing.assert_allclose(out, y, rtol=tol, atol=tol)


def snapshot(net):
    """Everything loading may change, values byte for byte."""
    return [(name, p.shape, p.state, p.dtype,
             p.data().tobytes() if p.is_initialized else None)
            for name, p in net.collect_params().items()]


# ---------------------------------------------------------------------------
# Writers of MXNet files (layouts as in fastlazy.mxnet.format's docstring)
# ---------------------------------------------------------------------------

V2, V3 = 0xF993FAC9, 0xF993FACA
FLAGS = {F32: 0, F64: 1, np.dtype("float16"): 2, np.dtype("uint8"): 3,
         np.dtype("int32"): 4, np.dtype("int8"): 5, np.dtype("int64"): 6,
         np.dtype("bool"): 7}
ITEMSIZE = {flag: dtype.itemsize for dtype, flag in FLAGS.items()}


def mx_params(arrays, magic=V3):
    """An MXNet ``.params`` file holding ``arrays`` (key -> ndarray)."""
    out = [struct.pack("<QQQ", 0x112, 0, len(arrays))]
    for arr in arrays.values():
        arr = np.ascontiguousarray(arr)
        out.append(struct.pack(f"<Iii{arr.ndim}q", magic, 0, arr.ndim,
                               *arr.shape))
        out.append(struct.pack("<iii", 1, 0, FLAGS[arr.dtype]))
        out.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    out.append(struct.pack("<Q", len(arrays)))
    for key in arrays:
        raw = key.encode()
        out += [struct.pack("<Q", len(raw)), raw]
    return b"".join(out)


def fc(name, units, no_bias=False, flatten=True):
    """A Gluon Dense as exported: FullyConnected ``NAME_fwd``."""
    return ("FullyConnected", f"{name}_fwd",
            {"flatten": str(flatten), "no_bias": str(no_bias),
             "num_hidden": str(units)},
            [f"{name}_weight"] + ([] if no_bias else [f"{name}_bias"]))


def act(name, act_type):
    return ("Activation", f"{name}_fwd", {"act_type": act_type}, [])


def mx_graph(layers, heads=None):
    """An exported ``-symbol.json`` graph: ``layers`` (op, name, attrs,
    parameter variables) chained after the input ``data``."""
    nodes = [{"op": "null", "name": "data", "inputs": []}]
    arg_nodes = [0]
    prev = 0
    for op, name, attrs, variables in layers:
        inputs = [[prev, 0, 0]]
        for var in variables:
            arg_nodes.append(len(nodes))
            inputs.append([len(nodes), 0, 0])
            nodes.append({"op": "null", "name": var, "inputs": []})
        nodes.append({"op": op, "name": name, "attrs": attrs,
                      "inputs": inputs})
        prev = len(nodes) - 1
    return {"nodes": nodes, "arg_nodes": arg_nodes,
            "heads": heads or [[prev, 0, 0]],
            "attrs": {"mxnet_version": ["int", 10901]}}


def write_export(folder, graph, arrays, name="model", epoch=0):
    """Write ``name-symbol.json`` and ``name-EPOCH.params``; the prefix."""
    prefix = folder / name
    (folder / f"{name}-symbol.json").write_text(json.dumps(graph))
    (folder / f"{name}-{epoch:04d}.params").write_bytes(mx_params(arrays))
    return prefix


def renamed(file, names):
    """The arrays of fixture ``file`` under new keys ``names[old key]``."""
    return {names[k]: v for k, v in read_params(DATA / file).items()}


def test_writers_match_mxnet():
    """The writers produce what MXNet 1.9.1 wrote for the same network."""
    params = read_params(DATA / "mlp.params")
    assert mx_params(params) == (DATA / "mlp.params").read_bytes()
    legacy = read_params(DATA / "legacy_mlp.params")
    assert mx_params(legacy, V2) == (DATA / "legacy_mlp.params").read_bytes()
    graph = mx_graph([fc("dense8", 64), act("dense8_relu", "relu"),
                      fc("dense9", 64), act("dense9_tanh", "tanh"),
                      fc("dense10", 4)])
    ours = read_symbol_graph(json.dumps(graph))
    assert ours == read_symbol_graph(DATA / "hybrid_mlp-symbol.json")


# ---------------------------------------------------------------------------
# Every fixture model, in every state of the network it is loaded into
# ---------------------------------------------------------------------------

#: model -> (Dense layers as (units, activation, in_units), dtype)
MLPS = {
    "mlp": ([(256, "relu", 20), (10, None, 256)], "float32"),
    "mlp_f64": ([(8, "softrelu", 5), (2, None, 8)], "float64"),
    "legacy_mlp": ([(128, "relu", 40), (32, "sigmoid", 128), (5, None, 32)],
                   "float32"),
    "hybrid_mlp": ([(64, "relu", 30), (64, "tanh", 64), (4, None, 64)],
                   "float32"),
}
PARAM_FILE = {"hybrid_mlp": "hybrid_mlp-0000.params"}


def mlp(name, in_units=False):
    layers, dtype = MLPS[name]
    net = nn.HybridSequential() if name == "hybrid_mlp" else nn.Sequential()
    for units, activation, k in layers:
        net.add(nn.Dense(units, activation=activation, dtype=dtype,
                         in_units=k if in_units else 0))
    return net


def in_state(name, state):
    """A matching network that is unset, deferred, initialized at once
    (in_units given) or initialized by a forward pass."""
    net = mlp(name, in_units=state == "in_units")
    if state != "unset":
        net.initialize()
    if state == "forward":
        x, _ = io(name)
        net(np.random.default_rng(0).uniform(size=x.shape))
    return net


STATES = ["unset", "deferred", "in_units", "forward"]


@pytest.mark.parametrize("state", STATES)
@pytest.mark.parametrize("name", sorted(MLPS))
def test_fixture_reproduces_mxnet(name, state):
    net = in_state(name, state)
    net.load_parameters(DATA / PARAM_FILE.get(name, f"{name}.params"))
    assert all(p.is_initialized for p in net.collect_params().values())
    check_output(net, name)


def test_deferred_net_is_completed_without_forward():
    net = mlp("mlp")
    net.initialize()
    net.load_parameters(DATA / "mlp.params")
    params = read_params(DATA / "mlp.params")
    assert [p.shape for p in net.collect_params().values()] == \
        [(256, 20), (256,), (10, 256), (10,)]
    np.testing.assert_array_equal(net[0].weight.data(), params["0.weight"])
    assert repr(net).splitlines()[1:3] == \
        ["  (0): Dense(20 -> 256, Activation(relu))",
         "  (1): Dense(256 -> 10, linear)"]
    assert net.build((None, 20)) == (None, 10)
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        check_output(clone, "mlp")


def test_loaded_net_round_trips_through_npz(tmp_path):
    net = mlp("legacy_mlp")
    net.load_parameters(DATA / "legacy_mlp.params")
    net.save_parameters(tmp_path / "legacy.npz")
    again = mlp("legacy_mlp")
    again.load_parameters(tmp_path / "legacy.npz")
    check_output(again, "legacy_mlp")


def test_lone_block_loads_its_structural_keys(tmp_path):
    params = read_params(DATA / "mlp_f64.params")
    path = tmp_path / "dense.params"
    path.write_bytes(mx_params({"weight": params["1.weight"],
                                "bias": params["1.bias"]}))
    dense = nn.Dense(2, dtype="float64")
    dense.load_parameters(path)
    np.testing.assert_array_equal(dense.weight.data(), params["1.weight"])


# ---------------------------------------------------------------------------
# dtypes: Gluon's rules (cast_dtype, dtype_source)
# ---------------------------------------------------------------------------


def test_float64_file_into_float32_net_needs_cast_dtype():
    net = nn.Sequential()
    net.add(nn.Dense(8, activation="softrelu"), nn.Dense(2))
    net.initialize()
    before = snapshot(net)
    with pytest.raises(fl.ParameterFileError,
                       match=r"'0\.weight'.*float64 in the file but float32"
                             r".*cast_dtype=True.*dtype='float64'"):
        net.load_parameters(DATA / "mlp_f64.params")
    assert snapshot(net) == before
    # dtype_source alone does not convert, as in Gluon
    with pytest.raises(fl.ParameterFileError, match="cast_dtype=True"):
        net.load_parameters(DATA / "mlp_f64.params", dtype_source="saved")
    assert snapshot(net) == before

    net.load_parameters(DATA / "mlp_f64.params", cast_dtype=True)
    assert {p.dtype for p in net.collect_params().values()} == {F32}
    x, y = io("mlp_f64")
    np.testing.assert_allclose(net(x), y, rtol=1e-5, atol=1e-6)

    net.load_parameters(DATA / "mlp_f64.params", cast_dtype=True,
                        dtype_source="saved")
    assert {p.dtype for p in net.collect_params().values()} == {F64}
    check_output(net, "mlp_f64")


def test_float32_file_into_float64_net():
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu", dtype="float64"),
            nn.Dense(10, dtype="float64"))
    with pytest.raises(fl.ParameterFileError, match="float32 in the file"):
        net.load_parameters(DATA / "mlp.params")
    net.load_parameters(DATA / "mlp.params", cast_dtype=True)
    x, y = io("mlp")
    np.testing.assert_allclose(net(x.astype(F64)), y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("magic", [V3, V2])
def test_float16_and_integer_arrays(tmp_path, magic):
    weight = np.arange(12, dtype=np.float16).reshape(3, 4) / 8
    bias = np.array([-2, 0, 7], dtype=np.int32)
    path = tmp_path / "half.params"
    path.write_bytes(mx_params({"weight": weight, "bias": bias}, magic))
    dense = nn.Dense(3)
    with pytest.raises(fl.ParameterFileError) as info:
        dense.load_parameters(path)
    message = str(info.value)
    assert "'weight'" in message and "float16" in message
    assert "cast_dtype=True" in message and "dtype='float16'" not in message
    assert dense.weight.state == "unset"
    with pytest.raises(fl.ParameterFileError, match="float32 or float64"):
        dense.load_parameters(path, cast_dtype=True, dtype_source="saved")
    dense.load_parameters(path, cast_dtype=True)
    np.testing.assert_array_equal(dense.weight.data(), weight.astype(F32))
    np.testing.assert_array_equal(dense.bias.data(), bias.astype(F32))
    out = dense(np.ones((1, 4), dtype=F32))
    np.testing.assert_allclose(out[0], weight.astype(F32).sum(1) + bias)


def test_non_numeric_arrays_and_bad_dtype_source(tmp_path):
    path = tmp_path / "bool.params"
    path.write_bytes(mx_params({"weight": np.ones((2, 2), bool),
                                "bias": np.ones(2, bool)}))
    dense = nn.Dense(2)
    with pytest.raises(fl.ParameterFileError, match="'weight'.*bool"):
        dense.load_parameters(path, cast_dtype=True)
    with pytest.raises(ValueError, match="dtype_source"):
        dense.load_parameters(path, dtype_source="file")


# ---------------------------------------------------------------------------
# Structural keys: errors name the key; nothing changes on error
# ---------------------------------------------------------------------------


def test_key_matching_no_parameter(tmp_path):
    params = dict(read_params(DATA / "mlp.params"))
    params["2.weight"] = np.ones((3, 10), F32)
    path = tmp_path / "extra.params"
    path.write_bytes(mx_params(params))
    net = in_state("mlp", "forward")
    before = snapshot(net)
    with pytest.raises(fl.ParameterFileError,
                       match=r"'2\.weight'.*does not have.*ignore_extra=True"):
        net.load_parameters(path)
    assert snapshot(net) == before
    net.load_parameters(path, ignore_extra=True)
    check_output(net, "mlp")


def test_missing_parameter(tmp_path):
    params = dict(read_params(DATA / "mlp.params"))
    del params["1.bias"]
    path = tmp_path / "missing.params"
    path.write_bytes(mx_params(params))
    net = in_state("mlp", "unset")
    before = snapshot(net)
    with pytest.raises(fl.ParameterFileError,
                       match=r"'1\.bias'.*not in the file.*allow_missing"):
        net.load_parameters(path)
    assert snapshot(net) == before
    net.load_parameters(path, allow_missing=True)
    assert net[1].bias.state == "unset"
    assert net[1].weight.shape == (10, 256)
    assert net[1].weight.state == "initialized"


def test_nested_file_into_flat_net_names_the_key():
    net = nn.Sequential()
    net.add(nn.Dense(32), nn.Dense(16), nn.Dense(3))
    with pytest.raises(fl.ParameterFileError, match=r"'0\.0\.weight'"):
        net.load_parameters(DATA / "nested_bn.params")


@pytest.mark.parametrize("state", STATES)
def test_shape_contradicting_a_known_shape(state):
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu", in_units=21), nn.Dense(10))
    if state != "unset":
        net.initialize()
    before = snapshot(net)
    with pytest.raises(fl.ParameterShapeError) as info:
        net.load_parameters(DATA / "mlp.params")
    assert isinstance(info.value, fl.ShapeError)
    assert isinstance(info.value, fl.ParameterFileError)
    message = str(info.value)
    assert "'0.weight'" in message and "(256, 20)" in message
    assert "(256, 21)" in message
    assert snapshot(net) == before

    wrong_units = nn.Sequential()
    wrong_units.add(nn.Dense(256), nn.Dense(12))
    with pytest.raises(fl.ShapeError, match=r"'1\.weight'.*\(10, 256\)"):
        wrong_units.load_parameters(DATA / "mlp.params")
    assert all(p.state == "unset"
               for p in wrong_units.collect_params().values())


def test_shared_parameters_and_deduplicated_files(tmp_path):
    def shared_net():
        first = nn.Dense(4, in_units=4)
        net = nn.Sequential()
        net.add(first, nn.Dense(4, params=first.collect_params()))
        return net

    net = shared_net()
    net.initialize()
    net.save_parameters(tmp_path / "dedup.npz", deduplicate=True)
    again = shared_net()
    again.load_parameters(tmp_path / "dedup.npz")
    x = np.ones((2, 4), F32)
    np.testing.assert_array_equal(again(x), net(x))

    params = {"0.weight": np.ones((4, 4), F32), "0.bias": np.ones(4, F32),
              "1.weight": np.ones((4, 5), F32), "1.bias": np.ones(4, F32)}
    (tmp_path / "conflict.params").write_bytes(mx_params(params))
    fresh = shared_net()
    with pytest.raises(fl.ParameterShapeError, match=r"'1\.weight'.*shared"):
        fresh.load_parameters(tmp_path / "conflict.params")
    assert fresh[0].weight.state == "unset"


# ---------------------------------------------------------------------------
# Gluon 1.x parameter names ('dense0_weight', 'arg:dense0_weight')
# ---------------------------------------------------------------------------

HYBRID_NAMES = ["dense8_weight", "dense8_bias", "dense9_weight",
                "dense9_bias", "dense10_weight", "dense10_bias"]


def test_names_matched_by_name_in_any_order(tmp_path):
    arrays = {k.partition(":")[2]: v for k, v in
              read_params(DATA / "hybrid_mlp-0000.params").items()}
    order = random.Random(1).sample(HYBRID_NAMES, len(HYBRID_NAMES))
    path = tmp_path / "names.params"
    path.write_bytes(mx_params({k: arrays[k] for k in order}))
    net = nn.Sequential()
    for (units, activation, _), n in zip(MLPS["hybrid_mlp"][0], (8, 9, 10)):
        net.add(nn.Dense(units, activation=activation, prefix=f"dense{n}_"))
    net.load_parameters(path)
    check_output(net, "hybrid_mlp")


def test_names_without_the_net_prefix(tmp_path):
    """Gluon's save_params strips the network's prefix; names inside the
    network's name scope are matched with it restored."""
    arrays = read_params(DATA / "mlp.params")
    keys = {"0.weight": "dense0_weight", "0.bias": "dense0_bias",
            "1.weight": "dense1_weight", "1.bias": "dense1_bias"}
    order = ["1.bias", "0.weight", "1.weight", "0.bias"]
    path = tmp_path / "stripped.params"
    path.write_bytes(mx_params({keys[k]: arrays[k] for k in order}))
    net = nn.Sequential(prefix="model_")
    with net.name_scope():
        net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    net.load_parameters(path)
    check_output(net, "mlp")


def test_names_by_name_extra_key(tmp_path):
    arrays = {k.partition(":")[2]: v for k, v in
              read_params(DATA / "hybrid_mlp-0000.params").items()}
    arrays["dense11_weight"] = np.ones((2, 4), F32)
    path = tmp_path / "extra.params"
    path.write_bytes(mx_params(arrays))
    net = nn.Sequential()
    for (units, activation, _), n in zip(MLPS["hybrid_mlp"][0], (8, 9, 10)):
        net.add(nn.Dense(units, activation=activation, prefix=f"dense{n}_"))
    with pytest.raises(fl.ParameterFileError,
                       match="'dense11_weight'.*ignore_extra=True"):
        net.load_parameters(path)
    assert all(p.state == "unset" for p in net.collect_params().values())
    net.load_parameters(path, ignore_extra=True)
    check_output(net, "hybrid_mlp")


class Scale(nn.Block):
    """A custom block with an aux-like parameter, as BatchNorm has."""

    def __init__(self, units):
        super().__init__()
        self.gamma = self.params.get("gamma", shape=(units,))
        self.running_mean = self.params.get("running_mean", shape=(units,))

    def forward(self, x):
        return (x - self.running_mean.data()) * self.gamma.data()


def test_names_matched_by_layer_order_args_before_aux(tmp_path):
    """mx.model.save_checkpoint writes all arg: keys, then all aux: keys;
    layers are grouped by name, so the aux key finds its layer."""
    rng = np.random.default_rng(3)
    arrays = {"arg:dense3_weight": rng.normal(size=(4, 3)),
              "arg:dense3_bias": rng.normal(size=4),
              "arg:scale7_gamma": rng.normal(size=4),
              "arg:dense4_weight": rng.normal(size=(2, 4)),
              "arg:dense4_bias": rng.normal(size=2),
              "aux:scale7_running_mean": rng.normal(size=4)}
    arrays = {k: v.astype(F32) for k, v in arrays.items()}
    path = tmp_path / "checkpoint-0000.params"
    path.write_bytes(mx_params(arrays))
    net = nn.Sequential()
    net.add(nn.Dense(4), Scale(4), nn.Dense(2))
    net.load_parameters(path)
    np.testing.assert_array_equal(net[1].running_mean.data(),
                                  arrays["aux:scale7_running_mean"])
    x = rng.normal(size=(5, 3)).astype(F32)
    h = x @ arrays["arg:dense3_weight"].T + arrays["arg:dense3_bias"]
    h = (h - arrays["aux:scale7_running_mean"]) * arrays["arg:scale7_gamma"]
    expected = h @ arrays["arg:dense4_weight"].T + arrays["arg:dense4_bias"]
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("layers, reason", [
    ([(64, None), (4, None)], "3 layers"),
    ([(64, None), (64, None), (4, "no bias")], r"layer 2 .*'dense10_'"),
])
def test_names_by_layer_order_mismatch(layers, reason):
    net = nn.Sequential()
    for units, kind in layers:
        net.add(nn.Dense(units, use_bias=kind is None))
    net.initialize()
    before = snapshot(net)
    with pytest.raises(fl.ParameterFileError) as info:
        net.load_parameters(DATA / "hybrid_mlp-0000.params")
    message = str(info.value)
    assert "'arg:dense8_weight'" in message
    assert "in the same order" in message and "load_mxnet_export" in message
    assert re.search(reason, message)
    assert snapshot(net) == before


def test_names_by_layer_order_shape_contradiction():
    net = nn.Sequential()
    net.add(nn.Dense(64, activation="relu"), nn.Dense(32), nn.Dense(4))
    with pytest.raises(fl.ParameterShapeError,
                       match=r"'arg:dense9_weight' \(matched to '1\.weight'\)"
                             r".*\(64, 64\)"):
        net.load_parameters(DATA / "hybrid_mlp-0000.params")
    assert all(p.state == "unset" for p in net.collect_params().values())


def test_name_that_fits_no_parameter(tmp_path):
    path = tmp_path / "odd.params"
    path.write_bytes(mx_params({"dense0_kernel": np.ones((2, 2), F32)}))
    with pytest.raises(fl.ParameterFileError,
                       match="'dense0_kernel' does not end with"):
        nn.Dense(2).load_parameters(path)


def test_arg_and_aux_key_for_the_same_name(tmp_path):
    path = tmp_path / "twice.params"
    path.write_bytes(mx_params({"arg:dense0_weight": np.ones((2, 2), F32),
                                "aux:dense0_weight": np.ones((2, 2), F32)}))
    with pytest.raises(fl.ParameterFileError,
                       match="'arg:dense0_weight' and 'aux:dense0_weight'"):
        nn.Dense(2).load_parameters(path)
    # load_mxnet_export applies the same rule, with the same message
    with pytest.raises(fl.ParameterFileError,
                       match="'arg:dense0_weight' and 'aux:dense0_weight' "
                             "both name parameter 'dense0_weight'"):
        fl.load_mxnet_export(None, symbol_file=DATA / "hybrid_mlp-symbol.json",
                             param_file=path)


# ---------------------------------------------------------------------------
# load_mxnet_export
# ---------------------------------------------------------------------------


def test_mxnet_code_is_imported_only_when_a_file_needs_it(tmp_path):
    # a fresh interpreter: this one has imported everything already
    script = textwrap.dedent(f"""
        import sys
        import fastlazy as fl
        from fastlazy import nn

        def loaded():
            return sorted(m for m in sys.modules if m == "fastlazy.io"
                          or m.startswith("fastlazy.mxnet"))

        assert loaded() == [], loaded()
        net = nn.Dense(3, in_units=2)
        net.initialize()
        net.save_parameters({str(tmp_path / "own.npz")!r})
        net.load_parameters({str(tmp_path / "own.npz")!r})
        assert loaded() == ["fastlazy.io"], loaded()
        fl.load_mxnet_export({str(DATA / "hybrid_mlp")!r})
        assert "fastlazy.mxnet.export" in loaded(), loaded()
    """)
    run = subprocess.run([sys.executable, "-c", script], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr


def test_export_hybrid_mlp(tmp_path):
    net = fl.load_mxnet_export(DATA / "hybrid_mlp")
    check_output(net, "hybrid_mlp")
    assert isinstance(net, fl.SymbolBlock)
    assert repr(net) == ("SymbolBlock(\n"
                         "  inputs: data\n"
                         "  outputs: dense10_fwd\n"
                         "  5 operators: FullyConnected x3, Activation x2\n"
                         "  6 parameters\n)")
    assert [p.name for p in net.collect_params().values()] == HYBRID_NAMES
    assert list(net._collect_params_with_prefix()) == HYBRID_NAMES
    # the saved names fit the original network, matched layer by layer
    path = tmp_path / "rebuilt.npz"
    net.save_parameters(path)
    original = mlp("hybrid_mlp")
    original.load_parameters(path)
    check_output(original, "hybrid_mlp")


def test_export_explicit_files_and_epoch(tmp_path):
    arrays = read_params(DATA / "hybrid_mlp-0000.params")
    graph = json.loads((DATA / "hybrid_mlp-symbol.json").read_text())
    prefix = write_export(tmp_path, graph, arrays, "mlp", epoch=12)
    check_output(fl.load_mxnet_export(prefix, 12), "hybrid_mlp")
    check_output(fl.load_mxnet_export(
        None, symbol_file=DATA / "hybrid_mlp-symbol.json",
        param_file=DATA / "hybrid_mlp-0000.params"), "hybrid_mlp")
    with pytest.raises(FileNotFoundError):
        fl.load_mxnet_export(prefix)
    with pytest.raises(TypeError, match="epoch"):
        fl.load_mxnet_export(prefix, -1)


def test_export_every_supported_layer(tmp_path):
    """FullyConnected without flatten and bias, a standalone Activation,
    Flatten, Dropout, element-wise and GELU operators, a fused Dense."""
    rng = np.random.default_rng(0)
    w0 = rng.normal(size=(6, 5)).astype(F32)
    w1 = rng.normal(size=(2, 18)).astype(F32)
    b1 = rng.normal(size=2).astype(F32)
    graph = mx_graph([
        fc("dense0", 6, no_bias=True, flatten=False),
        act("softsign0", "softsign"),
        ("LeakyReLU", "gelu0_fwd", {"act_type": "gelu"}, []),
        ("Flatten", "flatten0_fwd", {}, []),
        ("Dropout", "dropout0_fwd", {"p": "0.3", "axes": "()"}, []),
        ("relu", "relu0", {}, []),
        fc("dense1", 2), act("dense1_sigmoid", "sigmoid"),
    ])
    prefix = write_export(tmp_path, graph, {"arg:dense0_weight": w0,
                                            "arg:dense1_weight": w1,
                                            "arg:dense1_bias": b1})
    net = fl.load_mxnet_export(prefix)
    assert list(net.collect_params()) == ["dense0_weight", "dense1_weight",
                                          "dense1_bias"]
    assert net.collect_params()["dense0_weight"].shape == (6, 5)
    x = rng.normal(size=(4, 3, 5)).astype(F32)
    h = x @ w0.T
    h = h / (1 + np.abs(h))
    h = 0.5 * h * (1 + np.vectorize(math.erf)(h / np.sqrt(2)))
    h = np.maximum(h.reshape(4, -1), 0)
    expected = 1 / (1 + np.exp(-(h @ w1.T + b1)))
    np.testing.assert_allclose(net(x), expected, rtol=1e-5, atol=1e-6)


def test_export_dtypes(tmp_path):
    params = read_params(DATA / "mlp_f64.params")
    names = {"0.weight": "arg:dense0_weight", "0.bias": "arg:dense0_bias",
             "1.weight": "arg:dense1_weight", "1.bias": "arg:dense1_bias"}
    graph = mx_graph([fc("dense0", 8), act("dense0_softrelu", "softrelu"),
                      fc("dense1", 2)])
    prefix = write_export(tmp_path, graph, renamed("mlp_f64.params", names))
    net = fl.load_mxnet_export(prefix)
    assert {p.dtype for p in net.collect_params().values()} == {F64}
    check_output(net, "mlp_f64")
    net32 = fl.load_mxnet_export(prefix, dtype="float32")
    x, y = io("mlp_f64")
    np.testing.assert_allclose(net32(x), y, rtol=1e-5, atol=1e-6)
    with pytest.raises(TypeError, match="float32' or 'float64"):
        fl.load_mxnet_export(prefix, dtype="float16")

    half = {names[k]: v.astype(np.float16) for k, v in params.items()}
    prefix = write_export(tmp_path, graph, half, "half")
    with pytest.raises(fl.ParameterFileError, match="dtype='float32'"):
        fl.load_mxnet_export(prefix)
    net16 = fl.load_mxnet_export(prefix, dtype="float32")
    np.testing.assert_allclose(net16(x), y, rtol=1e-2, atol=1e-2)


def hybrid_export(tmp_path, layers=None, arrays=None, heads=None):
    """The hybrid_mlp export with its graph or arrays changed."""
    if layers is None:
        layers = [fc("dense8", 64), act("dense8_relu", "relu"),
                  fc("dense9", 64), act("dense9_tanh", "tanh"),
                  fc("dense10", 4)]
    if arrays is None:
        arrays = dict(read_params(DATA / "hybrid_mlp-0000.params"))
    return write_export(tmp_path, mx_graph(layers, heads), arrays)


@pytest.mark.parametrize("op, name, attrs, words", [
    ("Embedding", "embedding0_fwd", {}, ["'Embedding'"]),
    ("Deconvolution", "conv0_fwd", {"kernel": "(3, 3)", "num_filter": "2"},
     ["'Deconvolution'"]),
    ("Pooling", "pool0_fwd", {"kernel": "(2, 2)", "pool_type": "lp"},
     ["'lp'"]),
    ("Convolution", "conv0_fwd", {"kernel": "(3,)", "num_filter": "2"},
     ["kernel=(3,)"]),
    ("Activation", "mish0_fwd", {"act_type": "mish"}, ["'mish'"]),
    ("LeakyReLU", "leakyrelu0_fwd", {"act_type": "swish"}, ["'swish'"]),
    ("Activation", "logsig0_fwd", {"act_type": "log_sigmoid"},
     ["'log_sigmoid'"]),
    ("Pooling", "pool0_fwd", {"kernel": "(2, 2)", "pooling_convention":
                              "same"}, ["'same'"]),
    ("Dropout", "dropout0_fwd", {"p": "0.5", "mode": "always"},
     ["'always'"]),
])
def test_export_unsupported_operator(tmp_path, op, name, attrs, words):
    layers = [fc("dense8", 64), act("dense8_relu", "relu"), fc("dense9", 64),
              act("dense9_tanh", "tanh"), fc("dense10", 4),
              (op, name, attrs, [])]
    prefix = hybrid_export(tmp_path, layers)
    with pytest.raises(fl.UnsupportedOperatorError) as info:
        fl.load_mxnet_export(prefix)
    message = str(info.value)
    assert f"node '{name}'" in message and op in message
    for word in words:
        assert word in message
    assert isinstance(info.value, NotImplementedError)


def test_unsupported_operator_is_reported_before_file_problems(tmp_path):
    layers = [fc("dense8", 64), ("Embedding", "embedding0", {}, [])]
    prefix = hybrid_export(tmp_path, layers, arrays={})
    with pytest.raises(fl.UnsupportedOperatorError, match="Embedding"):
        fl.load_mxnet_export(prefix)
    (tmp_path / "model-0000.params").write_bytes(b"damaged")
    with pytest.raises(fl.UnsupportedOperatorError, match="Embedding"):
        fl.load_mxnet_export(prefix)


def test_export_graph_that_is_not_a_chain(tmp_path):
    """Branches and several outputs load now (more in test_symbol_block):
    an Activation of the input beside the Dense, both outputs."""
    rng = np.random.default_rng(5)
    w = rng.normal(size=(3, 4)).astype(F32)
    b = rng.normal(size=3).astype(F32)
    graph = mx_graph([fc("dense8", 3)])
    graph["nodes"].append({"op": "Activation", "name": "relu0_fwd",
                           "attrs": {"act_type": "relu"},
                           "inputs": [[0, 0, 0]]})
    graph["heads"] = [[3, 0, 0], [len(graph["nodes"]) - 1, 0, 0]]
    prefix = write_export(tmp_path, graph, {"arg:dense8_weight": w,
                                            "arg:dense8_bias": b})
    net = fl.load_mxnet_export(prefix)
    x = rng.normal(size=(2, 4)).astype(F32)
    dense, relu = net(x)
    np.testing.assert_allclose(dense, x @ w.T + b, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(relu, np.maximum(x, 0))


def test_export_parameter_file_errors(tmp_path):
    arrays = dict(read_params(DATA / "hybrid_mlp-0000.params"))
    del arrays["arg:dense9_bias"]
    with pytest.raises(fl.ParameterFileError,
                       match="no array for 'dense9_bias'.*node 'dense9_fwd'"):
        fl.load_mxnet_export(hybrid_export(tmp_path, arrays=arrays))

    arrays = dict(read_params(DATA / "hybrid_mlp-0000.params"))
    arrays["arg:dense11_weight"] = np.ones((2, 2), F32)
    with pytest.raises(fl.ParameterFileError,
                       match="'arg:dense11_weight' is the input of no node"):
        fl.load_mxnet_export(hybrid_export(tmp_path, arrays=arrays))

    layers = [fc("dense8", 64), act("dense8_relu", "relu"), fc("dense9", 32),
              act("dense9_tanh", "tanh"), fc("dense10", 4)]
    with pytest.raises(fl.ParameterShapeError,
                       match=r"'arg:dense9_weight' \(weight of node "
                             r"'dense9_fwd'\).*\(64, 64\).*\(32, -1\)"):
        fl.load_mxnet_export(hybrid_export(tmp_path, layers))

    broken = fc("dense8", 64)
    del broken[2]["num_hidden"]
    layers[:1] = [broken]
    with pytest.raises(fl.ParameterFileError,
                       match="node 'dense8_fwd'.*'num_hidden' is missing"):
        fl.load_mxnet_export(hybrid_export(tmp_path, layers))

    layers[:1] = [fc("dense8", 64)]
    layers[0][2]["no_bias"] = "maybe"
    with pytest.raises(fl.ParameterFileError,
                       match="node 'dense8_fwd'.*'no_bias'.*boolean"):
        fl.load_mxnet_export(hybrid_export(tmp_path, layers))

    layers[:1] = [("Dropout", "dropout0_fwd", {"p": "1.5"}, []),
                  fc("dense8", 64)]
    with pytest.raises(fl.ParameterFileError,
                       match="node 'dropout0_fwd'.*rate"):
        fl.load_mxnet_export(hybrid_export(tmp_path, layers))


def test_ops_table_is_the_extension_point():
    assert {"FullyConnected", "Activation", "Flatten", "Dropout"} <= set(OPS)
    assert OPS["FullyConnected"].roles == ("data", "weight", "bias")
    assert OPS["elemwise_add"].roles is None


# ---------------------------------------------------------------------------
# Models that need Conv2D, AvgPool2D and BatchNorm
# ---------------------------------------------------------------------------


def lenet():
    net = nn.Sequential()
    net.add(getattr(nn, "Conv2D")(6, 5, padding=2, activation="sigmoid"),
            getattr(nn, "AvgPool2D")(2, 2),
            getattr(nn, "Conv2D")(16, 5, activation="sigmoid"),
            getattr(nn, "AvgPool2D")(2, 2),
            nn.Dense(120, activation="sigmoid"),
            nn.Dense(84, activation="sigmoid"), nn.Dense(10))
    return net


def nested_bn():
    inner = nn.Sequential()
    inner.add(nn.Dense(32), getattr(nn, "BatchNorm")(), nn.Activation("tanh"))
    net = nn.Sequential()
    net.add(inner, nn.Dense(16, activation="sigmoid"), nn.Dropout(0.5),
            nn.Dense(3))
    return net


@pytest.mark.parametrize("name, build", [("lenet", lenet),
                                         ("nested_bn", nested_bn)])
def test_fixture_with_conv_and_batchnorm(name, build):
    net = build()
    net.initialize()
    before = snapshot(net)
    with pytest.raises(fl.ParameterFileError):
        net.load_parameters(DATA / "mlp.params")
    assert snapshot(net) == before
    net.load_parameters(DATA / f"{name}.params")
    check_output(net, name)


def conv(name, channels, pad):
    return ("Convolution", f"{name}_fwd",
            {"dilate": "(1, 1)", "kernel": "(5, 5)", "layout": "NCHW",
             "no_bias": "False", "num_filter": str(channels),
             "num_group": "1", "pad": f"({pad}, {pad})", "stride": "(1, 1)"},
            [f"{name}_weight", f"{name}_bias"])


def avg_pool(name):
    return ("Pooling", f"{name}_fwd",
            {"count_include_pad": "True", "global_pool": "False",
             "kernel": "(2, 2)", "layout": "NCHW", "pad": "(0, 0)",
             "pool_type": "avg", "pooling_convention": "valid",
             "stride": "(2, 2)"}, [])


EXPORTS = {
    "lenet": ([conv("conv0", 6, 2), act("conv0_sigmoid", "sigmoid"),
               avg_pool("pool0"), conv("conv1", 16, 0),
               act("conv1_sigmoid", "sigmoid"), avg_pool("pool1"),
               fc("dense0", 120), act("dense0_sigmoid", "sigmoid"),
               fc("dense1", 84), act("dense1_sigmoid", "sigmoid"),
               fc("dense2", 10)],
              {"0.": "arg:conv0_", "2.": "arg:conv1_", "4.": "arg:dense0_",
               "5.": "arg:dense1_", "6.": "arg:dense2_"}),
    "nested_bn": ([fc("dense0", 32),
                   ("BatchNorm", "batchnorm0_fwd",
                    {"axis": "1", "center": "True", "eps": "1e-05",
                     "fix_gamma": "False", "momentum": "0.9", "scale": "True",
                     "use_global_stats": "False"},
                    ["batchnorm0_gamma", "batchnorm0_beta",
                     "batchnorm0_running_mean", "batchnorm0_running_var"]),
                   act("tanh0", "tanh"), fc("dense1", 16),
                   act("dense1_sigmoid", "sigmoid"),
                   ("Dropout", "dropout0_fwd", {"p": "0.5", "axes": "()"},
                    []),
                   fc("dense2", 3)],
                  {"0.0.": "arg:dense0_", "0.1.": "arg:batchnorm0_",
                   "1.": "arg:dense1_", "3.": "arg:dense2_"}),
}


@pytest.mark.parametrize("name", sorted(EXPORTS))
def test_export_with_conv_and_batchnorm(tmp_path, name):
    layers, prefixes = EXPORTS[name]
    arrays = {}
    for key, value in read_params(DATA / f"{name}.params").items():
        path, _, attr = key.rpartition(".")
        new = prefixes[path + "."] + attr
        if attr.startswith("running_"):
            new = "aux:" + new[4:]
        arrays[new] = value
    net = fl.load_mxnet_export(write_export(tmp_path, mx_graph(layers),
                                            arrays))
    check_output(net, name)


# ---------------------------------------------------------------------------
# Damaged files: a clear ParameterFileError, the network unchanged
# ---------------------------------------------------------------------------


def layout(data):
    """``(header fields as (offset, width), payload byte ranges, unchecked
    fields)`` of a V2/V3 file, walked independently of the reader.  The
    unchecked fields (reserved, device id) are ignored by MXNet too."""
    fields = [(0, 8), (8, 8), (16, 8)]
    unchecked = [(8, 8)]
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
        unchecked.append((pos + 4, 4))
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
    return fields, payloads, unchecked


FUZZ = {"mlp_f64": "mlp_f64.params", "legacy_mlp": "legacy_mlp.params",
        "hybrid_mlp": "hybrid_mlp-0000.params"}


class Target:
    """A deferred and a forward-initialized network; loads a damaged file
    into both and checks each is rejected cleanly or loaded whole."""

    def __init__(self, name, path):
        self.name = name
        self.path = path
        self.x = io(name)[0]
        self.nets = [in_state(name, "deferred"), in_state(name, "forward")]
        self.reference = self.nets[1](self.x)

    def load(self, data):
        """Load ``data`` into both networks; True if both loaded it."""
        self.path.write_bytes(data)
        outcomes = []
        for i, net in enumerate(self.nets):
            before = snapshot(net)
            try:
                net.load_parameters(self.path)
            except fl.ParameterFileError as exc:
                assert str(self.path) in str(exc)
                assert snapshot(net) == before
                outcomes.append(False)
            else:
                assert all(p.is_initialized
                           for p in net.collect_params().values())
                outcomes.append(True)
                self.nets[i] = in_state(self.name,
                                        ("deferred", "forward")[i])
                if i:
                    self.reference = self.nets[1](self.x)
        assert outcomes[0] == outcomes[1]
        return outcomes[0]

    def still_runs(self):
        np.testing.assert_array_equal(self.nets[1](self.x), self.reference)


def truncation_points(size):
    if size <= 2000:
        return range(size)
    spread = np.linspace(0, size - 1, 60).astype(int).tolist()
    return sorted(set(spread) | set(range(100)) | set(range(size - 100, size)))


@pytest.mark.parametrize("name", sorted(FUZZ))
def test_truncated_files(tmp_path, name):
    data = (DATA / FUZZ[name]).read_bytes()
    target = Target(name, tmp_path / "cut.params")
    for size in truncation_points(len(data)):
        assert not target.load(data[:size])
    target.still_runs()


HUGE = {4: [0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFF, 33],
        8: [2**64 - 1, 2**63 - 1, 2**63, 2**40, 2**32 + 1]}


@pytest.mark.parametrize("name", sorted(FUZZ))
def test_huge_header_values_allocate_nothing(tmp_path, name):
    data = (DATA / FUZZ[name]).read_bytes()
    fields, _, _ = layout(data)
    target = Target(name, tmp_path / "huge.params")
    budget = 8 * len(data) + (2 << 20)
    tracemalloc.start()
    try:
        for offset, width in fields:
            for value in HUGE[width]:
                patched = bytearray(data)
                patched[offset:offset + width] = value.to_bytes(width,
                                                                "little")
                tracemalloc.reset_peak()
                target.load(bytes(patched))
                peak = tracemalloc.get_traced_memory()[1]
                assert peak < budget, (offset, value, peak)
    finally:
        tracemalloc.stop()
    target.still_runs()


@pytest.mark.parametrize("name", sorted(FUZZ))
def test_flipped_header_bytes(tmp_path, name):
    data = (DATA / FUZZ[name]).read_bytes()
    _, payloads, unchecked = layout(data)
    in_payload = np.zeros(len(data), bool)
    for start, stop in payloads:
        in_payload[start:stop] = True
    header = np.flatnonzero(~in_payload).tolist()
    target = Target(name, tmp_path / "flip.params")
    loaded = set()
    for offset in header:
        patched = bytearray(data)
        patched[offset] ^= 0xFF
        if target.load(bytes(patched)):
            loaded.add(offset)
    # every other header byte (and every key byte: 0xFF^ASCII is never
    # UTF-8) is checked
    assert loaded == {start + i for start, width in unchecked
                      for i in range(width)}
    rng = random.Random(f"fuzz-{name}")
    for _ in range(150):
        patched = bytearray(data)
        for offset in rng.sample(header, rng.randint(2, 4)):
            patched[offset] = rng.randrange(256)
        target.load(bytes(patched))
    target.still_runs()


def test_wrong_magic_and_empty_file(tmp_path):
    net = in_state("mlp", "forward")
    before = snapshot(net)
    for name, data in [("empty", b""), ("text", b"hello world, not params"),
                       ("npz-like", b"PK\x03\x04garbage")]:
        path = tmp_path / name
        path.write_bytes(data)
        with pytest.raises(fl.ParameterFileError, match=name):
            net.load_parameters(path)
        assert snapshot(net) == before
