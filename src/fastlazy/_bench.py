"""Timing helpers: a fastlazy network against the tightest NumPy twin of it.

Used by ``python -m fastlazy`` (its comparison table) and by ``benches/``.
Plain ``time.perf_counter_ns`` loops with a warm-up; no pytest needed.

>>> import numpy as np
>>> from fastlazy import nn
>>> from fastlazy._bench import compare_numpy
>>> net = nn.Sequential()
>>> _ = net.add(nn.Dense(256, activation='relu'), nn.Dense(10))
>>> net.initialize()
>>> r = compare_numpy(net, np.ones((2, 20), np.float32))
>>> r.ratio > 0                      # NumPy median / fastlazy median
True
"""

import time
from collections import namedtuple

import numpy as np

from .block import Sequential
from .layers import Dense

__all__ = ["CONFIGS", "Config", "Comparison", "make_net", "dense_layers",
           "numpy_forward", "reference_forward", "warm_up", "median_ns",
           "compare_numpy"]

#: One benchmark configuration: batch rows, input features, and the layers
#: as (units, activation) pairs; Dense computes ``act(x @ W.T + b)``.
Config = namedtuple("Config", "batch in_units layers")

#: The dense configurations of the benchmark suite (float32); the bars each
#: must meet are listed at the top of docs/benchmarks.md.
CONFIGS = {
    "C1": Config(1, 20, ((256, "relu"), (10, None))),
    "C2": Config(2, 20, ((256, "relu"), (10, None))),
    "C3": Config(64, 784, ((512, "relu"), (512, "relu"), (10, None))),
    "C4": Config(256, 1024, ((1024, "relu"), (1024, "relu"), (1024, None))),
    "C5": Config(1, 1024, ((4096, "relu"), (1024, None))),
}

#: Result of :func:`compare_numpy`; times are medians in nanoseconds per call
#: and ``ratio`` is ``numpy_ns / fastlazy_ns`` (above 1: fastlazy is faster).
Comparison = namedtuple("Comparison", "fastlazy_ns numpy_ns ratio")


def make_net(config):
    """A deferred (no ``in_units``) Sequential of Dense layers for a
    :data:`Config`; call :meth:`initialize` and a forward pass on it."""
    net = Sequential()
    for units, act in config.layers:
        net.add(Dense(units, activation=act))
    return net


def dense_layers(net):
    """The network's Dense layers as ``[(W, b, activation)]``: copies of the
    weights, ``W`` of shape (units, in_units), ``b`` of shape (units,) or
    None.  ``net`` must be a (possibly nested) Sequential of Dense layers
    whose parameters are initialized."""
    layers = []
    for block in net:
        if isinstance(block, Sequential):
            layers.extend(dense_layers(block))
        elif isinstance(block, Dense):
            bias = None if block.bias is None else block.bias.data().copy()
            layers.append((block.weight.data().copy(), bias, block.act))
        else:
            raise TypeError(f"dense_layers: only Dense layers and nested "
                            f"Sequentials are supported, got "
                            f"{type(block).__name__}")
    return layers


def _check_activation(act):
    if act not in ("relu", None):
        raise ValueError(f"the NumPy twin supports 'relu' and linear layers, "
                         f"not {act!r}")


def numpy_forward(layers, batch):
    """The tightest hand-written NumPy forward pass for ``layers`` (as
    returned by :func:`dense_layers`) on inputs of ``batch`` rows: weights
    pre-transposed once, every intermediate preallocated, and only
    ``np.matmul`` / ``np.add`` / ``np.maximum`` with ``out=`` per call.

    Returns ``forward(x)``, which returns its preallocated output array
    (overwritten by the next call)."""
    steps = []
    for w, b, act in layers:
        _check_activation(act)
        wt = np.ascontiguousarray(w.T)
        out = np.empty((batch, wt.shape[1]), dtype=wt.dtype)
        steps.append((wt, b, act == "relu", out))
    zero = steps[0][0].dtype.type(0)

    def forward(x):
        for wt, b, relu, out in steps:
            np.matmul(x, wt, out=out)
            if b is not None:
                np.add(out, b, out=out)
            if relu:
                np.maximum(out, zero, out=out)
            x = out
        return x

    return forward


def reference_forward(layers, x):
    """The float64 result of ``layers`` on ``x``: the accuracy reference."""
    y = np.asarray(x, dtype=np.float64)
    for w, b, act in layers:
        _check_activation(act)
        y = y @ w.astype(np.float64).T
        if b is not None:
            y = y + b
        if act == "relu":
            y = np.maximum(y, 0.0)
    return y


def _round_ns(fn, args, loops):
    t0 = time.perf_counter_ns()
    for _ in range(loops):
        fn(*args)
    return (time.perf_counter_ns() - t0) / loops


def warm_up(fn, *args, seconds=0.3):
    """Call ``fn(*args)`` for about ``seconds`` (at least 3 times).

    Besides caches and first-touch page faults, this lets the worker
    threads of a *different* library that ran just before go back to sleep:
    two BLAS (or OpenMP) thread pools spinning on 2 cores slow each other
    by 10x and more for a while after a switch."""
    end = time.perf_counter_ns() + seconds * 1e9
    calls = 0
    while calls < 3 or time.perf_counter_ns() < end:
        fn(*args)
        calls += 1


def median_ns(fn, *args, rounds=15, round_ms=2.0, warmup_s=0.3):
    """Median time per call of ``fn(*args)``, in nanoseconds: after
    :func:`warm_up`, ``rounds`` timed rounds of as many calls as fill about
    ``round_ms`` milliseconds."""
    warm_up(fn, *args, seconds=warmup_s)
    loops = 1
    while True:
        spent = _round_ns(fn, args, loops) * loops
        if spent >= round_ms * 1e6:
            break
        loops = max(loops + 1,
                    int(loops * 1.2 * round_ms * 1e6 / max(spent, 1)))
    return float(np.median([_round_ns(fn, args, loops)
                            for _ in range(rounds)]))


def compare_numpy(net, x, rounds=15, round_ms=2.0, rtol=1e-4):
    """Time ``net(x)`` against :func:`numpy_forward` of the same weights on
    the same input, in this process and with its current thread settings.

    ``net`` must be a Sequential of Dense layers (relu or linear); it is
    run once first, so a deferred network gets initialized.  Both results
    are checked against the float64 reference before timing.  Returns a
    :data:`Comparison`."""
    y = net(x)
    x = np.ascontiguousarray(x, dtype=y.dtype)
    layers = dense_layers(net)
    twin = numpy_forward(layers, x.shape[0])
    ref = reference_forward(layers, x)
    atol = rtol * float(np.abs(ref).max())
    np.testing.assert_allclose(y, ref, rtol=rtol, atol=atol,
                               err_msg="fastlazy output")
    np.testing.assert_allclose(twin(x), ref, rtol=rtol, atol=atol,
                               err_msg="NumPy output")
    t_fl = median_ns(net, x, rounds=rounds, round_ms=round_ms)
    t_np = median_ns(twin, x, rounds=rounds, round_ms=round_ms)
    return Comparison(t_fl, t_np, t_np / t_fl)


def _dense_graph(nodes, inits, cur, layers, batch):
    """The model of ``nodes`` (ending in tensor ``cur``) with input x
    (batch, K) and output y (batch, M), opset 17, checked and serialized;
    ``batch``: a number or a symbolic name."""
    import onnx
    from onnx import TensorProto, helper

    nodes = nodes + [helper.make_node("Identity", [cur], ["y"])]
    k = layers[0][0].shape[1]
    m = layers[-1][0].shape[0]
    graph = helper.make_graph(
        nodes, "dense",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [batch, m])],
        initializer=inits)
    model = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid("", 17)],
                              ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


def onnx_matmul_model(layers):
    """``layers`` (``[(W, b, act)]``, see :func:`dense_layers`) as an ONNX
    model of MatMul + Add (+ Relu) nodes, opset 17, any batch size: the form
    ONNX Runtime's ``quantize_dynamic`` turns into int8 (MatMulInteger);
    it leaves Gemm nodes in float32.  Returns the serialized model.  Needs
    the ``onnx`` package (the ``bench`` extra)."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    cur = "x"
    for i, (w, b, act) in enumerate(layers):
        inits.append(numpy_helper.from_array(
            np.ascontiguousarray(np.asarray(w, np.float32).T), f"w{i}"))
        nodes.append(helper.make_node("MatMul", [cur, f"w{i}"], [f"m{i}"]))
        out = f"m{i}"
        if b is not None:
            inits.append(numpy_helper.from_array(np.asarray(b, np.float32),
                                                 f"b{i}"))
            nodes.append(helper.make_node("Add", [out, f"b{i}"], [f"a{i}"]))
            out = f"a{i}"
        if act == "relu":
            nodes.append(helper.make_node("Relu", [out], [f"r{i}"]))
            out = f"r{i}"
        elif act is not None:
            raise ValueError(f"onnx_matmul_model: 'relu' or linear layers, "
                             f"not {act!r}")
        cur = out
    return _dense_graph(nodes, inits, cur, layers, "n")


def onnx_gemm_model(layers, batch):
    """The network as ONNX (opset 17): Gemm(transB=1) per Dense, then Relu
    where the layer has one; fixed batch size, so ORT can plan memory.
    Returns the serialized model.  Needs ``onnx``."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []
    cur = "x"
    for i, (w, b, act) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(b, f"b{i}")]
        out = f"h{i}" if act == "relu" else f"a{i}"
        gemm_out = f"g{i}" if act == "relu" else out
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"],
                                      [gemm_out], transB=1))
        if act == "relu":
            nodes.append(helper.make_node("Relu", [gemm_out], [out]))
        cur = out
    return _dense_graph(nodes, inits, cur, layers, batch)


def ort_session(model, threads, spinning=True):
    """An ONNX Runtime session of ``model`` (bytes) on the CPU with
    ``threads`` intra-op threads, sequential, every graph optimization on;
    ``spinning=False``: its threads sleep between parallel sections
    (for runs where other pools take turns with it on few cores).  Needs
    ``onnxruntime``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning",
                                      "0")
    return ort.InferenceSession(model, opts,
                                providers=["CPUExecutionProvider"])


def ort_int8_session(layers, threads=1, reduce_range=False):
    """An ONNX Runtime session of ``layers`` quantized by ORT's own
    ``quantize_dynamic`` (int8 weights, uint8 activations, per-tensor
    weight scales: its defaults).  ``reduce_range``: 7-bit weights, which
    ORT recommends on CPUs without VNNI -- there its u8 x s8 kernel
    (vpmaddubsw) adds pairs of products into saturating int16, and full
    8-bit weights make errors ~10x larger (measured on AVX2).  Needs
    ``onnx`` and ``onnxruntime``."""
    import os
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "fp32.onnx")
        dst = os.path.join(tmp, "int8.onnx")
        with open(src, "wb") as f:
            f.write(onnx_matmul_model(layers))
        quantize_dynamic(src, dst, weight_type=QuantType.QInt8,
                         reduce_range=reduce_range)
        with open(dst, "rb") as f:
            data = f.read()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(data, opts,
                                providers=["CPUExecutionProvider"])


def torch_sequential(layers, int8=False):
    """``layers`` (as returned by :func:`dense_layers`) as a PyTorch
    ``nn.Sequential`` of Linear (+ ReLU) modules in eval mode, the weights
    copied; ``int8``: that model through
    ``torch.ao.quantization.quantize_dynamic`` (int8 Linear layers).  Needs
    ``torch``; the caller sets its threads."""
    import torch

    mods = []
    for w, b, act in layers:
        _check_activation(act)
        lin = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(b))
        mods.append(lin)
        if act == "relu":
            mods.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*mods).eval()
    if int8:
        model = torch.ao.quantization.quantize_dynamic(
            model, {torch.nn.Linear}, dtype=torch.qint8)
    return model
