"""Forward-pass latency, configurations C1..C5, against every alternative.

One group per configuration and thread count (``C2-1t``): is fastlazy
faster than the tightest NumPy, ONNX Runtime (``run`` and io_binding) and
PyTorch eager, on the same weights and input?
"""

import numpy as np
import pytest

from common import (CONFIGS, check, fastlazy_threads, numpy_threads, tag,
                    timed, torch_threads)
from fastlazy._bench import numpy_forward, torch_sequential

pytestmark = pytest.mark.parametrize("cfg", list(CONFIGS))


def _tag(benchmark, peer, cfg, threads):
    tag(benchmark, "dense", f"{cfg}-{threads}t", peer, config=cfg,
        threads=threads)


def bench_fastlazy(benchmark, case, cfg, threads):
    _tag(benchmark, "fastlazy", cfg, threads)
    with fastlazy_threads(threads):
        check(case.net(case.x), case.ref)
        timed(benchmark, case.net, case.x)


def bench_numpy(benchmark, case, cfg, threads):
    _tag(benchmark, "numpy", cfg, threads)
    forward = numpy_forward(case.layers, case.config.batch)
    with numpy_threads(threads):
        check(forward(case.x), case.ref)
        timed(benchmark, forward, case.x)


# ---------------------------------------------------------------------------
# ONNX Runtime


def onnx_model(layers, batch):
    """The network as ONNX (opset 17): Gemm(transB=1) per Dense, then Relu
    where the layer has one; fixed batch size, so ORT can plan memory."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

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
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
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


@pytest.fixture
def ort_session(case, threads):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = \
        ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_model(case.layers, case.config.batch),
                                opts, providers=["CPUExecutionProvider"])


def bench_ort_run(benchmark, case, cfg, threads, ort_session):
    _tag(benchmark, "ort-run", cfg, threads)
    feed = {"x": case.x}
    check(ort_session.run(None, feed)[0], case.ref)
    timed(benchmark, ort_session.run, None, feed)


def bench_ort_iobinding(benchmark, case, cfg, threads, ort_session):
    _tag(benchmark, "ort-iobinding", cfg, threads)
    y = np.empty(case.ref.shape, np.float32)
    binding = ort_session.io_binding()
    binding.bind_input("x", "cpu", 0, np.float32, case.x.shape,
                       case.x.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
    ort_session.run_with_iobinding(binding)
    check(y, case.ref)
    timed(benchmark, ort_session.run_with_iobinding, binding)


# ---------------------------------------------------------------------------
# PyTorch


def bench_torch(benchmark, case, cfg, threads):
    torch = pytest.importorskip("torch")
    _tag(benchmark, "torch", cfg, threads)
    model = torch_sequential(case.layers)
    x = torch.from_numpy(case.x)
    with torch_threads(torch, threads), torch.inference_mode():
        check(model(x).numpy(), case.ref)
        timed(benchmark, model, x)
