#!/usr/bin/env python
"""fastlazy against ONNX Runtime on the same .onnx file, interleaved.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benches/bench_onnx.py
    python benches/bench_onnx.py --threads 1 --rounds 9 --only C1,ResMLP64

For each network -- C1-C5 of the suite (benches/common.py: C1 and C2 are
the same 20 -> 256 relu -> 10 network, C3 784 -> 512 -> 512 -> 10, C4
three 1024-wide layers, C5 1024 -> 4096 -> 1024) and the residual MLP of
benches/bench_graphs.py at widths 64 and 256 -- one .onnx file is written
as torch.onnx.export writes a Linear stack (Gemm with transB=1, Relu,
Add), with a dynamic batch axis.  From that one file:

* **load**: ``fl.onnx.load(path)`` (reading, checking, tracing; the plan
  itself is built at the first call, so that call is timed too) against
  ``onnxruntime.InferenceSession(path)`` (which optimizes the graph and
  packs weights) plus its first ``run``; interleaved, medians;
* **forward** at batch 1 and 64 (and the configuration's own batch: C2 2,
  C4 256), 1 and 2 threads: ``net(x)`` against ``session.run`` and against
  ``run_with_iobinding`` on preallocated buffers.  Each round times a
  block of calls of each in turn; the table gives each one's median time
  and the median over rounds of the per-round ratio (peer time /
  fastlazy time: above 1, fastlazy is faster).  Outputs are compared
  before timing.

The machine may be shared: the ratios of one interleaved run carry over,
the absolute times less; ``other load`` is how many cores other processes
kept busy while a row ran (``--wait-quiet S`` waits up to S seconds for a
quiet moment before each row).  The CPU, its flags, the BLAS and the
thread settings are printed with the table.
"""

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time

import numpy as np

import fastlazy as fl

try:
    import onnx
    import onnxruntime as ort
    from onnx import TensorProto, helper, numpy_helper
except ImportError:
    sys.exit("benches/bench_onnx.py needs onnx and onnxruntime "
             "(pip install '.[bench]')")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import _other_cores, _usage, wait_quiet  # noqa: E402

from fastlazy._bench import CONFIGS  # noqa: E402

IN_RES, OUT_RES = 20, 10


def _dense_stack(name, in_units, layers, rng):
    """Gemm (+ Relu) per layer, as torch exports nn.Linear stacks."""
    nodes, inits, cur, k = [], [], "x", in_units
    for i, (units, act) in enumerate(layers):
        w = (rng.uniform(-1, 1, (units, k)) / np.sqrt(k)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, units).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"fc{i}.weight"),
                  numpy_helper.from_array(b, f"fc{i}.bias")]
        out = f"/fc{i}/Gemm_output_0" if act or i < len(layers) - 1 \
            else "y"
        nodes.append(helper.make_node("Gemm", [cur, f"fc{i}.weight",
                                               f"fc{i}.bias"], [out],
                                      name=f"/fc{i}/Gemm", transB=1))
        cur = out
        if act:
            nxt = f"/relu{i}/Relu_output_0" if i < len(layers) - 1 else "y"
            nodes.append(helper.make_node("Relu", [cur], [nxt],
                                          name=f"/relu{i}/Relu"))
            cur = nxt
        k = units
    return _model(name, nodes, inits, in_units, k)


def _resmlp(name, width, rng, blocks=3):
    nodes, inits = [], []

    def gemm(src, lname, k, m, relu, out=None):
        w = (rng.uniform(-1, 1, (m, k)) / np.sqrt(k)).astype(np.float32)
        b = rng.uniform(-0.1, 0.1, m).astype(np.float32)
        inits.extend([numpy_helper.from_array(w, f"{lname}.weight"),
                      numpy_helper.from_array(b, f"{lname}.bias")])
        g = out or f"/{lname}/Gemm_output_0"
        nodes.append(helper.make_node("Gemm", [src, f"{lname}.weight",
                                               f"{lname}.bias"], [g],
                                      name=f"/{lname}/Gemm", transB=1))
        if not relu:
            return g
        r = f"/{lname}/Relu_output_0"
        nodes.append(helper.make_node("Relu", [g], [r],
                                      name=f"/{lname}/Relu"))
        return r

    h = gemm("x", "inp", IN_RES, width, False)
    for i in range(blocks):
        t = gemm(h, f"blocks.{i}.d1", width, width, True)
        u = gemm(t, f"blocks.{i}.d2", width, width, True)
        nodes.append(helper.make_node("Add", [h, u], [f"/blocks.{i}/Add"],
                                      name=f"/blocks.{i}/Add"))
        h = f"/blocks.{i}/Add"
    gemm(h, "out", width, OUT_RES, False, out="y")
    return _model(name, nodes, inits, IN_RES, OUT_RES)


def _model(name, nodes, inits, k, m):
    graph = helper.make_graph(
        nodes, name,
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", m])],
        initializer=inits)
    model = helper.make_model(graph, opset_imports=[
        helper.make_opsetid("", 17)], ir_version=8)
    onnx.checker.check_model(model)
    return model


def networks(rng):
    """name -> (model, input width, batches)."""
    out = {}
    for cfg in ("C1", "C3", "C4", "C5"):
        c = CONFIGS[cfg]
        batches = sorted({1, 64, c.batch})
        label = "C1/C2" if cfg == "C1" else cfg
        if cfg == "C1":
            batches = sorted({1, 2, 64})
        out[label] = (_dense_stack(cfg, c.in_units, c.layers, rng),
                      c.in_units, batches)
    for width in (64, 256):
        out[f"ResMLP{width}"] = (_resmlp(f"resmlp{width}", width, rng),
                                 IN_RES, [1, 64])
    return out


def session(path, threads):
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(path, opts,
                                providers=["CPUExecutionProvider"])


def _block_time(fn, reps):
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def _reps(fn, target=4e-3):
    """Calls per timed block: about ``target`` seconds."""
    fn()
    t = _block_time(fn, 3)
    return max(1, min(20000, int(target / max(t, 1e-9))))


def interleave(fns, rounds, gap=0.0):
    """Median time of each function and median per-round ratios against
    the first; the functions take turns within every round, ``gap``
    seconds apart (so that one library's spinning worker threads have
    gone to sleep before the next one runs)."""
    reps = [_reps(f) for f in fns]
    times = [[] for _ in fns]
    for _ in range(rounds):
        for i, f in enumerate(fns):
            if gap:
                time.sleep(gap)
            times[i].append(_block_time(f, reps[i]))
    base = np.array(times[0])
    medians = [float(np.median(t)) for t in times]
    ratios = [float(np.median(np.array(t) / base)) for t in times]
    return medians, ratios


def load_times(path, rounds):
    """(fastlazy load, fastlazy load + first call, ORT session, ORT
    session + first run), medians of interleaved rounds, in seconds."""
    x = np.zeros((1,) + tuple(d.dim_value for d in onnx.load(
        path).graph.input[0].type.tensor_type.shape.dim[1:]), np.float32)
    out = [[], [], [], []]
    for _ in range(rounds):
        t = time.perf_counter()
        net = fl.onnx.load(path)
        t1 = time.perf_counter()
        net(x)
        t2 = time.perf_counter()
        s = session(path, 1)
        t3 = time.perf_counter()
        s.run(None, {"x": x})
        t4 = time.perf_counter()
        for lst, v in zip(out, (t1 - t, t2 - t, t3 - t2, t4 - t2)):
            lst.append(v)
    return [float(np.median(v)) for v in out]


def fmt(sec):
    if sec < 1e-3:
        return f"{sec * 1e6:.2f} us"
    if sec < 1:
        return f"{sec * 1e3:.2f} ms"
    return f"{sec:.2f} s"


def machine():
    lines = []
    try:
        info = subprocess.run(["lscpu"], capture_output=True, text=True,
                              check=True).stdout
        for line in info.splitlines():
            key = line.split(":")[0]
            if key in ("Model name", "CPU(s)", "Thread(s) per core",
                       "CPU max MHz", "L2 cache", "L3 cache"):
                lines.append(" ".join(line.split()))
            if key == "Flags":
                flags = line.split(":", 1)[1].split()
                keep = [f for f in flags if f.startswith(("avx", "fma",
                                                          "f16c"))]
                lines.append("SIMD flags: " + " ".join(keep))
    except (OSError, subprocess.CalledProcessError):
        lines.append(platform.processor())
    try:
        from threadpoolctl import threadpool_info
        for p in threadpool_info():
            lines.append(f"{p['internal_api']} {p.get('version')} "
                         f"({os.path.basename(p['filepath'])}): "
                         f"{p['num_threads']} threads")
    except ImportError:
        pass
    cfg = fl.show_config(file=open(os.devnull, "w"))
    lines.append(f"fastlazy {cfg['fastlazy']}: kernels {cfg['kernels']}, "
                 f"BLAS {cfg['blas_core']} at {cfg['blas_threads']} "
                 f"thread(s); onnx {onnx.__version__}, onnxruntime "
                 f"{ort.__version__}, numpy {np.__version__}")
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        if var in os.environ:
            lines.append(f"warning: {var}={os.environ[var]} is set")
    return lines


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each row, wait up to this many seconds "
                         "for a quiet machine (a shared machine)")
    ap.add_argument("--load-rounds", type=int, default=9)
    ap.add_argument("--only", default=None,
                    help="comma-separated networks (C1/C2 as C1)")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    rng = np.random.default_rng(3)
    nets = networks(rng)
    if args.only:
        want = {w.replace("C1", "C1/C2") if w == "C1" else w
                for w in args.only.split(",")}
        nets = {k: v for k, v in nets.items() if k in want}
    for line in machine():
        print(line)
    tmp = tempfile.mkdtemp(prefix="bench_onnx_")
    paths = {}
    for name, (model, _, _) in nets.items():
        paths[name] = os.path.join(tmp, name.replace("/", "_") + ".onnx")
        onnx.save(model, paths[name])

    print("\n## Load: fl.onnx.load against onnxruntime.InferenceSession "
          "(1 thread), medians\n")
    print("| network | file | fastlazy load | + first call | ORT session | "
          "+ first run | ORT / fastlazy (ready to serve) |")
    print("|---|---|---|---|---|---|---|")
    for name, path in paths.items():
        if args.wait_quiet:
            wait_quiet(args.wait_quiet)
        a, b, c, d = load_times(path, args.load_rounds)
        size = os.path.getsize(path)
        print(f"| {name} | {size / 1024:.0f} KiB | {fmt(a)} | {fmt(b)} | "
              f"{fmt(c)} | {fmt(d)} | {d / b:.2f}x |", flush=True)

    print("\n## Forward: peer time / fastlazy time (above 1: fastlazy "
          "faster), median of per-round ratios\n")
    print("| network | batch | threads | fastlazy | GFLOP/s | ORT run | "
          "ORT io_binding | other load |")
    print("|---|---|---|---|---|---|---|---|")
    for name, (model, k, batches) in nets.items():
        flops = 2 * sum(int(np.prod(numpy_helper.to_array(t).shape))
                        for t in model.graph.initializer
                        if t.name.endswith("weight"))
        for nt in threads:
            fl.set_num_threads(nt)
            net = fl.onnx.load(paths[name])
            sess = session(paths[name], nt)
            for batch in batches:
                x = np.random.default_rng(batch).standard_normal(
                    (batch, k)).astype(np.float32)
                ref = sess.run(None, {"x": x})[0]
                y = net(x)
                scale = float(np.abs(ref).max())
                np.testing.assert_allclose(y, ref, rtol=1e-4,
                                           atol=1e-4 * scale)
                out = np.empty_like(ref)
                bind = sess.io_binding()
                bind.bind_input("x", "cpu", 0, np.float32, x.shape,
                                x.ctypes.data)
                bind.bind_output("y", "cpu", 0, np.float32, out.shape,
                                 out.ctypes.data)
                sess.run_with_iobinding(bind)
                np.testing.assert_allclose(out, ref, rtol=0, atol=0)
                feed = {"x": x}
                if args.wait_quiet:
                    wait_quiet(args.wait_quiet)
                since = _usage()
                # at 2 threads ONNX Runtime's workers spin after a call
                # and would take the second core from the next block
                med, ratio = interleave(
                    [lambda: net(x), lambda: sess.run(None, feed),
                     lambda: sess.run_with_iobinding(bind)], args.rounds,
                    gap=0.02 if nt > 1 else 0.0)
                other = _other_cores(since)
                gflops = flops * batch / med[0] / 1e9
                print(f"| {name} | {batch} | {nt} | {fmt(med[0])} | "
                      f"{gflops:.1f} | {ratio[1]:.2f}x ({fmt(med[1])}) | "
                      f"{ratio[2]:.2f}x ({fmt(med[2])}) | {other:.2f} |",
                      flush=True)
    fl.set_num_threads(threads[0])


if __name__ == "__main__":
    main()
