"""Branching networks: a residual MLP (Dense -> 3 residual blocks -> Dense,
each block ``x + relu(dense2(relu(dense1(x))))``, the model of the fixtures
in tests/data/mxnet_graphs) compiled as one plan, against hand-written
NumPy, ONNX Runtime (``run`` and io_binding) and PyTorch (eager and
``torch.jit`` frozen), on the same weights.

One group per width, batch and thread count (``ResMLP256-b1-1t``).
``python benches/graph_table.py`` prints the ratio table of a run:

    python -m pytest benches/bench_graphs.py --benchmark-json=g.json
    python benches/graph_table.py g.json
"""

import functools

import numpy as np
import pytest

from common import (check, fastlazy_threads, numpy_threads, tag, timed,
                    torch_threads)

import fastlazy as fl
from fastlazy import nn

WIDTHS = [64, 256]
BATCHES = [1, 64]
IN, OUT = 20, 10

# thread counts come from conftest's --threads (default 1,2)
pytestmark = [pytest.mark.parametrize("width", WIDTHS),
              pytest.mark.parametrize("batch", BATCHES)]


class Block(nn.HybridBlock):
    def __init__(self, units, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense1 = nn.Dense(units)
            self.dense2 = nn.Dense(units)

    def hybrid_forward(self, F, x):
        return x + F.relu(self.dense2(F.relu(self.dense1(x))))


class ResMLP(nn.HybridBlock):
    def __init__(self, units, blocks=3, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.inp = nn.Dense(units)
            self.blocks = nn.HybridSequential()
            for _ in range(blocks):
                self.blocks.add(Block(units))
            self.out = nn.Dense(OUT)

    def hybrid_forward(self, F, x):
        return self.out(self.blocks(self.inp(x)))


class Case:
    def __init__(self, width, batch):
        rng = np.random.default_rng(5)
        fl.random.seed(5)
        self.net = ResMLP(width)
        self.net.initialize(init=fl.init.Xavier())
        self.x = rng.standard_normal((batch, IN), dtype=np.float32)
        self.net(self.x)
        for p in self.net.collect_params(".*bias").values():
            p.set_data(rng.uniform(-0.1, 0.1, p.shape))
        assert self.net._plan is not None, "not compiled"

        def wb(layer):
            return (layer.weight.data().copy(), layer.bias.data().copy())

        self.inp = wb(self.net.inp)
        self.blocks = [(wb(b.dense1), wb(b.dense2)) for b in self.net.blocks]
        self.out = wb(self.net.out)
        self.ref = self.forward64(self.x)

    def forward64(self, x):
        def d(v, wb):
            return v @ wb[0].T.astype(np.float64) + wb[1]
        h = d(x.astype(np.float64), self.inp)
        for a, b in self.blocks:
            h = h + np.maximum(d(np.maximum(d(h, a), 0), b), 0)
        return d(h, self.out)


@functools.cache
def get_case(width, batch):
    return Case(width, batch)


@pytest.fixture
def case(width, batch):
    return get_case(width, batch)


def _tag(benchmark, peer, width, batch, threads):
    tag(benchmark, "graph", f"ResMLP{width}-b{batch}-{threads}t", peer,
        config=f"ResMLP{width}", batch=batch, threads=threads)


def bench_fastlazy(benchmark, case, width, batch, threads):
    _tag(benchmark, "fastlazy", width, batch, threads)
    with fastlazy_threads(threads):
        check(case.net(case.x), case.ref)
        timed(benchmark, case.net, case.x)


def bench_numpy(benchmark, case, width, batch, threads):
    """Tight NumPy: matmul into preallocated buffers, in-place adds."""
    _tag(benchmark, "numpy", width, batch, threads)
    wt = [np.ascontiguousarray(case.inp[0].T)]
    bs = [case.inp[1]]
    for a, b in case.blocks:
        wt += [np.ascontiguousarray(a[0].T), np.ascontiguousarray(b[0].T)]
        bs += [a[1], b[1]]
    out_w, out_b = np.ascontiguousarray(case.out[0].T), case.out[1]
    h = np.empty((batch, width), np.float32)
    t = np.empty_like(h)
    u = np.empty_like(h)

    def forward(x):
        np.matmul(x, wt[0], out=h)
        np.add(h, bs[0], out=h)
        for i in range(len(case.blocks)):
            np.matmul(h, wt[1 + 2 * i], out=t)
            np.add(t, bs[1 + 2 * i], out=t)
            np.maximum(t, 0, out=t)
            np.matmul(t, wt[2 + 2 * i], out=u)
            np.add(u, bs[2 + 2 * i], out=u)
            np.maximum(u, 0, out=u)
            np.add(h, u, out=h)
        return h @ out_w + out_b

    with numpy_threads(threads):
        check(forward(case.x), case.ref)
        timed(benchmark, forward, case.x)


def onnx_model(case, batch):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits = [], []

    def gemm(src, wb, name, relu):
        inits.extend([numpy_helper.from_array(wb[0], name + "_w"),
                      numpy_helper.from_array(wb[1], name + "_b")])
        out = name + ("_g" if relu else "")
        nodes.append(helper.make_node("Gemm", [src, name + "_w",
                                               name + "_b"], [out],
                                      transB=1))
        if relu:
            nodes.append(helper.make_node("Relu", [out], [name]))
        return name

    h = gemm("x", case.inp, "inp", False)
    for i, (a, b) in enumerate(case.blocks):
        t = gemm(h, a, f"b{i}a", True)
        u = gemm(t, b, f"b{i}b", True)
        nodes.append(helper.make_node("Add", [h, u], [f"h{i}"]))
        h = f"h{i}"
    y = gemm(h, case.out, "y", False)
    graph = helper.make_graph(
        nodes, "resmlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, IN])],
        [helper.make_tensor_value_info(y, TensorProto.FLOAT, [batch, OUT])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model.SerializeToString()


@pytest.fixture
def ort_session(case, batch, threads):
    ort = pytest.importorskip("onnxruntime")
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(onnx_model(case, batch), opts,
                                providers=["CPUExecutionProvider"])


def bench_ort_run(benchmark, case, width, batch, threads, ort_session):
    _tag(benchmark, "ort-run", width, batch, threads)
    feed = {"x": case.x}
    check(ort_session.run(None, feed)[0], case.ref)
    timed(benchmark, ort_session.run, None, feed)


def bench_ort_iobinding(benchmark, case, width, batch, threads,
                        ort_session):
    _tag(benchmark, "ort-iobinding", width, batch, threads)
    y = np.empty(case.ref.shape, np.float32)
    binding = ort_session.io_binding()
    binding.bind_input("x", "cpu", 0, np.float32, case.x.shape,
                       case.x.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
    ort_session.run_with_iobinding(binding)
    check(y, case.ref)
    timed(benchmark, ort_session.run_with_iobinding, binding)


def torch_model(case):
    torch = pytest.importorskip("torch")

    def linear(wb):
        lin = torch.nn.Linear(wb[0].shape[1], wb[0].shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(wb[0]))
            lin.bias.copy_(torch.from_numpy(wb[1]))
        return lin

    class TBlock(torch.nn.Module):
        def __init__(self, a, b):
            super().__init__()
            self.d1, self.d2 = linear(a), linear(b)

        def forward(self, x):
            return x + torch.relu(self.d2(torch.relu(self.d1(x))))

    class TNet(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inp = linear(case.inp)
            self.blocks = torch.nn.Sequential(
                *[TBlock(a, b) for a, b in case.blocks])
            self.out = linear(case.out)

        def forward(self, x):
            return self.out(self.blocks(self.inp(x)))

    return torch, TNet().eval()


def bench_torch(benchmark, case, width, batch, threads):
    torch, model = torch_model(case)
    _tag(benchmark, "torch", width, batch, threads)
    x = torch.from_numpy(case.x)
    with torch_threads(torch, threads), torch.inference_mode():
        check(model(x).numpy(), case.ref)
        timed(benchmark, model, x)


def bench_torch_jit(benchmark, case, width, batch, threads):
    torch, model = torch_model(case)
    _tag(benchmark, "torch-jit", width, batch, threads)
    x = torch.from_numpy(case.x)
    with torch_threads(torch, threads), torch.inference_mode():
        frozen = torch.jit.freeze(torch.jit.script(model))
        check(frozen(x).numpy(), case.ref)
        timed(benchmark, frozen, x)
