"""Forward latency of Gluon model-zoo networks at 224x224.

One pytest-benchmark group per (network, batch, threads), one question
each: how does fastlazy's compiled ``get_model(...)`` compare with ONNX
Runtime running the very same weights?

* ``zoo-resnet18_v1-b1`` / ``-b8``: ResNet-18 V1, batch 1 and 8
* ``zoo-mobilenetv2_1.0-b1`` / ``-b8``: MobileNetV2 1.0, batch 1 and 8

each at 1 and 2 threads (``--threads``).  The ONNX graph is built here with
``onnx.helper`` from the fastlazy network's own parameters (Conv,
BatchNormalization, Relu, Clip, Add, pools, Gemm), and both outputs are
checked against each other (and fastlazy's against the network run with
every block eager) before timing.  ORT gets ``intra_op_num_threads`` =
threads and its default graph optimizations (it folds BatchNorm into the
convolutions, as fastlazy does).

Run: ``pytest benches/bench_model_zoo.py`` (in benches/, see pytest.ini);
``python benches/bench_model_zoo.py --ab`` times the two interleaved, round
by round (steadier on a shared machine), and prints the table of
docs/model_zoo.md; ``--profile`` says where fastlazy's time goes per layer
kind (depthwise convolutions apart).
"""

import functools
import sys

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import nn
from fastlazy.model_zoo import vision

SEED = 5
RTOL = 1e-3          # float32, two different summation orders, ~50 layers

CONFIGS = {f"zoo-{name}-b{batch}": (name, batch)
           for name in ("resnet18_v1", "mobilenetv2_1.0")
           for batch in (1, 8)}


# ---------------------------------------------------------------------------
# The networks


class Case:
    """An initialized network with non-trivial BatchNorm statistics and
    biases, and its input."""

    def __init__(self, cfg):
        name, batch = CONFIGS[cfg]
        rng = np.random.default_rng(SEED)
        fl.random.seed(SEED)
        self.name = name
        self.net = vision.get_model(name)
        self.net.initialize(fl.init.Xavier())
        self.net.build((None, 3, 224, 224))
        for key, p in self.net._collect_params_with_prefix().items():
            if key.endswith(("running_var", "gamma")):
                p.set_data(rng.uniform(0.5, 1.5, p.shape))
            elif key.endswith(("running_mean", "beta", "bias")):
                p.set_data(rng.uniform(-0.2, 0.2, p.shape))
        self.x = rng.uniform(-1, 1, (batch, 3, 224, 224)).astype(np.float32)
        self.y = self.net(self.x)


@functools.cache
def get_case(cfg):
    return Case(cfg)


def check(y, ref):
    np.testing.assert_allclose(y, ref, rtol=RTOL,
                               atol=RTOL * float(np.abs(ref).max()))


# ---------------------------------------------------------------------------
# The same network as an ONNX graph


class _Graph:
    def __init__(self):
        from onnx import numpy_helper
        self._np = numpy_helper
        self.nodes, self.inits, self._n = [], [], 0

    def name(self, hint):
        self._n += 1
        return f"{hint}{self._n}"

    def const(self, array, hint):
        name = self.name(hint)
        self.inits.append(self._np.from_array(
            np.ascontiguousarray(array, dtype=np.float32), name))
        return name

    def node(self, op, inputs, **attrs):
        from onnx import helper
        out = self.name(op.lower())
        self.nodes.append(helper.make_node(op, inputs, [out], **attrs))
        return out


def _emit(g, block, x):
    """Add ``block`` applied to value ``x`` to graph ``g``; return the
    output value.  Covers the layers of ResNet V1 and MobileNetV2."""
    if isinstance(block, vision.BasicBlockV1):
        y = _emit(g, block.body, x)
        r = _emit(g, block.downsample, x) if block.downsample is not None \
            else x
        return g.node("Relu", [g.node("Add", [r, y])])
    if isinstance(block, vision.LinearBottleneck):
        y = _emit(g, block.out, x)
        return g.node("Add", [y, x]) if block.use_shortcut else y
    if isinstance(block, (vision.ResNetV1, vision.MobileNetV2)):
        return _emit(g, block.output, _emit(g, block.features, x))
    if isinstance(block, nn.Sequential):
        for child in block:
            x = _emit(g, child, x)
        return x
    if isinstance(block, nn.Conv2D):
        ins = [x, g.const(block.weight.data(), "w")]
        if block.bias is not None:
            ins.append(g.const(block.bias.data(), "b"))
        y = g.node("Conv", ins, kernel_shape=list(block._kernel),
                   strides=list(block._strides),
                   pads=list(block._padding) * 2,
                   dilations=list(block._dilation), group=block._groups)
        if block._activation == "relu":
            y = g.node("Relu", [y])
        elif block._activation is not None:
            raise NotImplementedError(block._activation)
        return y
    if isinstance(block, nn.BatchNorm):
        return g.node("BatchNormalization", [
            x, g.const(block.gamma.data(), "gamma"),
            g.const(block.beta.data(), "beta"),
            g.const(block.running_mean.data(), "mean"),
            g.const(block.running_var.data(), "var")],
            epsilon=block._eps)
    if isinstance(block, nn.Activation):
        if block._act_type != "relu":
            raise NotImplementedError(block._act_type)
        return g.node("Relu", [x])
    if isinstance(block, vision.RELU6):
        return g.node("Clip", [x, g.const(np.array(0.0), "lo"),
                               g.const(np.array(6.0), "hi")])
    if isinstance(block, nn.GlobalAvgPool2D):
        return g.node("GlobalAveragePool", [x])
    if isinstance(block, nn.MaxPool2D):
        return g.node("MaxPool", [x], kernel_shape=list(block._pool),
                      strides=list(block._strides),
                      pads=list(block._padding) * 2)
    if isinstance(block, nn.Flatten):
        return g.node("Flatten", [x])
    if isinstance(block, nn.Dense):
        return g.node("Gemm", [g.node("Flatten", [x]),
                               g.const(block.weight.data(), "w"),
                               g.const(block.bias.data(), "b")], transB=1)
    raise NotImplementedError(f"no ONNX for {type(block).__name__}")


def to_onnx(net, batch):
    """The ONNX model (opset 17) of ``net`` for ``(batch, 3, 224, 224)``."""
    from onnx import TensorProto, helper
    g = _Graph()
    y = _emit(g, net, "x")
    g.nodes.append(helper.make_node("Identity", [y], ["y"]))
    graph = helper.make_graph(
        g.nodes, "zoo",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                       [batch, 3, 224, 224])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                       [batch, 1000])], g.inits)
    return helper.make_model(graph,
                             opset_imports=[helper.make_opsetid("", 17)])


@functools.cache
def ort_session(cfg, threads):
    ort = pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    c = get_case(cfg)
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(to_onnx(c.net, len(c.x)).SerializeToString(),
                                so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------
# Benchmarks

pytestmark = pytest.mark.parametrize("zoo_cfg", list(CONFIGS))


def tag(benchmark, cfg, peer, threads):
    benchmark.group = f"{cfg}-{threads}t"
    benchmark.extra_info.update(kind="model_zoo", peer=peer, config=cfg,
                                threads=threads)


def timed(benchmark, fn, *args):
    for _ in range(3):
        fn(*args)
    return benchmark(fn, *args)


def bench_fastlazy(benchmark, zoo_cfg, threads):
    c = get_case(zoo_cfg)
    tag(benchmark, zoo_cfg, "fastlazy", threads)
    old = fl.get_num_threads()
    fl.set_num_threads(threads)
    try:
        check(c.net(c.x), c.y)
        assert c.net._eager_reason is None
        timed(benchmark, c.net, c.x)
    finally:
        fl.set_num_threads(old)


def bench_onnxruntime(benchmark, zoo_cfg, threads):
    c = get_case(zoo_cfg)
    sess = ort_session(zoo_cfg, threads)
    tag(benchmark, zoo_cfg, "onnxruntime", threads)
    feed = {"x": c.x}
    check(sess.run(None, feed)[0], c.y)
    timed(benchmark, sess.run, None, feed)


# ---------------------------------------------------------------------------
# Where the time goes


def profile(cfg, threads=1, repeat=20):
    """Print where fastlazy's time goes for ``cfg``: every layer group the
    plan fuses (a convolution with its BatchNorm and activation) timed as a
    plan of its own on the input it sees in the network, summed per kind
    (depthwise convolutions apart), next to the whole network's time.  The
    sum exceeds the whole by the separate plans' per-call overhead and
    their output allocations."""
    import time
    from collections import defaultdict
    c = get_case(cfg)
    fl.set_num_threads(threads)
    net, x = c.net, c.x
    seen = []

    def conv_kind(conv):
        k = "x".join(map(str, conv._kernel))
        s = "/2" if conv._strides[0] > 1 else ""
        return (f"conv {k}{s} depthwise" if conv._groups > 1
                else f"conv {k}{s}")

    def walk(block, x):
        """Run ``block`` group by group, recording (kind, callable, x)."""
        if isinstance(block, vision.BasicBlockV1):
            y = walk(block.body, x)
            r = walk(block.downsample, x) if block.downsample is not None \
                else x
            add = nn.HybridLambda(lambda F, a, b: F.relu(a + b))
            seen.append(("add+relu", add, (r, y)))
            return add(r, y)
        if isinstance(block, vision.LinearBottleneck):
            y = walk(block.out, x)
            if block.use_shortcut:
                add = nn.HybridLambda(lambda F, a, b: a + b)
                seen.append(("add", add, (y, x)))
                return add(y, x)
            return y
        if isinstance(block, (vision.ResNetV1, vision.MobileNetV2)):
            return walk(block.output, walk(block.features, x))
        if not isinstance(block, nn.Sequential):
            seen.append((type(block).__name__, block, (x,)))
            return block(x)
        if isinstance(block, nn.Sequential):
            children = list(block)
            i = 0
            while i < len(children):
                child = children[i]
                if isinstance(child, (nn.Sequential, vision.BasicBlockV1,
                                      vision.LinearBottleneck)):
                    x = walk(child, x)
                    i += 1
                    continue
                group = [child]
                if isinstance(child, nn.Conv2D):
                    while i + len(group) < len(children) and isinstance(
                            children[i + len(group)],
                            (nn.BatchNorm, nn.Activation, vision.RELU6)):
                        group.append(children[i + len(group)])
                    kind = conv_kind(child)
                else:
                    kind = type(child).__name__
                seq = nn.HybridSequential(prefix="profile_")
                seq.add(*group)
                seen.append((kind, seq, (x,)))
                x = seq(x)
                i += len(group)
            return x

    walk(net, x)
    per_kind = defaultdict(float)
    for kind, fn, args in seen:
        for _ in range(2):
            fn(*args)
        t = time.perf_counter()
        for _ in range(repeat):
            fn(*args)
        per_kind[kind] += (time.perf_counter() - t) / repeat
    for _ in range(3):
        net(x)
    t = time.perf_counter()
    for _ in range(repeat):
        net(x)
    whole = (time.perf_counter() - t) / repeat
    total = sum(per_kind.values())
    print(f"{cfg} at {threads} thread(s): whole network {whole * 1e3:.2f} "
          f"ms; groups one by one {total * 1e3:.2f} ms")
    for kind, sec in sorted(per_kind.items(), key=lambda kv: -kv[1]):
        print(f"  {kind:<24} {sec * 1e3:8.2f} ms  {sec / total:6.1%}")


def interleaved(cfg, threads, rounds=15):
    """Median over ``rounds`` of (ORT time / fastlazy time), each round
    timing a few fastlazy calls then a few ORT calls on the same input:
    steadier than separate runs on a shared machine.  Returns (fastlazy
    median seconds, ORT median seconds, median ratio)."""
    import time
    c = get_case(cfg)
    sess = ort_session(cfg, threads)
    fl.set_num_threads(threads)
    feed = {"x": c.x}
    check(c.net(c.x), c.y)
    check(sess.run(None, feed)[0], c.y)
    reps = 2 if len(c.x) > 1 else 6

    def per_call(fn):
        t = time.perf_counter()
        for _ in range(reps):
            fn()
        return (time.perf_counter() - t) / reps

    f_fl = functools.partial(c.net, c.x)
    f_ort = functools.partial(sess.run, None, feed)
    per_call(f_fl), per_call(f_ort)
    t_fl, t_ort, ratios = [], [], []
    for _ in range(rounds):
        a, b = per_call(f_fl), per_call(f_ort)
        t_fl.append(a), t_ort.append(b), ratios.append(b / a)
    return np.median(t_fl), np.median(t_ort), np.median(ratios)


if __name__ == "__main__":
    if "--profile" in sys.argv:
        for threads in (1, 2):
            for cfg in CONFIGS:
                profile(cfg, threads)
    if "--ab" in sys.argv:
        print("| network | batch | threads | fastlazy | ONNX Runtime | ORT / "
              "fastlazy |")
        print("|---|---|---|---|---|---|")
        for cfg, (name, batch) in CONFIGS.items():
            for threads in (1, 2):
                a, b, r = interleaved(cfg, threads)
                print(f"| {name} | {batch} | {threads} | {a * 1e3:.1f} ms | "
                      f"{b * 1e3:.1f} ms | {r:.2f}x |", flush=True)
