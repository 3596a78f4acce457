#!/usr/bin/env python
"""bfloat16 weights against float32 and the peers, in one interleaved run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benches/bench_bf16.py [--rounds 21] [--threads 1,2]
                                     [--configs C1,C2,C3,C4,C5] [--json F]

For each configuration of benches/common.py (C1-C5) and thread count, the
same weights (fastlazy's, initialized with Xavier) run in

* fastlazy float32 and fastlazy bfloat16 (``copy.deepcopy(net).cast(
  'bfloat16')``: bf16 weights, float32 in, out and between the layers);
* PyTorch bfloat16 (``model.to(torch.bfloat16)``, the input converted to
  bfloat16 before timing, so torch is timed on its own dtype) and PyTorch
  float32 -- skipped when torch is not installed;
* ONNX Runtime float32 (io_binding), skipped without onnxruntime.

Every round times a few calls of each peer in turn, in a shuffled order;
a peer's time is the median over the rounds.  The error column is max
|y - y_ref| / (max y_ref - min y_ref) over 512 inputs, fed in the
configuration's batch size, against float64 NumPy on the float32 weights
(the issue's definition).

It also measures the memory bandwidth the batch-1 product C5 competes
for: BLAS sdot (two float32 vectors, read only) over a working set of the
size of C5's bfloat16 weights (16 MiB: in L3 here) and of 512 MiB (DRAM),
at 1 and 2 threads, and reports C5's weight bytes per second against them.

The peers take turns on the same cores, so none may keep spinning after
its call: PyTorch runs with OMP_WAIT_POLICY=PASSIVE (unless set) and ORT
with session.intra_op.allow_spinning=0; fastlazy's own pool spins at most
0.1 ms.  This file is a script: pytest (benches/pytest.ini) collects no
benchmark from it.
"""

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
# The peers take turns on the same cores: a pool that keeps spinning after
# its call (libgomp's, under PyTorch; ORT's) steals the next peer's CPU --
# at 2 threads on 2 cores, 10-1000x slower calls here.  PyTorch's OpenMP
# threads sleep at once (before torch is imported), ORT's do not spin.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

MiB = 1 << 20


def cpu_report():
    """The CPU's model and its SIMD flags (lscpu), for the table's head."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True,
                             check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or platform.machine(), ""
    fields = dict(line.split(":", 1) for line in out.splitlines()
                  if ":" in line)
    model = fields.get("Model name", "?").strip()
    flags = fields.get("Flags", "").split()
    simd = [f for f in flags if f.startswith(("avx", "fma", "f16c", "amx"))]
    return (f"{model} (family {fields.get('CPU family', '?').strip()} model "
            f"{fields.get('Model', '?').strip()}), "
            f"{fields.get('CPU(s)', '?').strip()} CPUs, L3 "
            f"{fields.get('L3 cache', '?').strip()}"), " ".join(simd)


def bandwidth(nbytes, threads, seconds=1.0):
    """Read bandwidth (GB/s) of BLAS sdot over two float32 vectors of
    ``nbytes`` together, best of repeats for about ``seconds``."""
    from threadpoolctl import threadpool_limits
    n = nbytes // 8
    a = np.ones(n, np.float32)
    b = np.ones(n, np.float32)
    best = float("inf")
    with threadpool_limits(threads, user_api="blas"):
        np.dot(a, b)
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            t = time.perf_counter()
            np.dot(a, b)
            best = min(best, time.perf_counter() - t)
    return 2 * n * 4 / best / 1e9


def copy_bandwidth(nbytes):
    """np.copyto over ``nbytes`` (read + written, GB/s), best of 5."""
    a = np.ones(nbytes // 4, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(5):
        t = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t)
    return 2 * a.nbytes / best / 1e9


def reference(layers, x):
    from fastlazy._bench import reference_forward
    return reference_forward(layers, x)


def rel_error(y, ref):
    span = float(ref.max() - ref.min()) or 1.0
    return float(np.abs(np.asarray(y, np.float64) - ref).max()) / span


def peers_for(case, threads, fl):
    """name -> (call, batch -> float32 outputs on an input of that batch),
    every peer on the same weights."""
    out = {}
    net = case.net
    bf = copy.deepcopy(net)
    bf.cast("bfloat16")
    x = case.x
    out["fastlazy fp32"] = (lambda: net(x), net)
    out["fastlazy bf16"] = (lambda: bf(x), bf)
    try:
        import torch
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        from fastlazy._bench import torch_sequential
        m32 = torch_sequential(case.layers)
        m16 = copy.deepcopy(m32).to(torch.bfloat16)
        xt = torch.from_numpy(x)
        xb = xt.to(torch.bfloat16)

        def t32(v=xt):
            with torch.inference_mode():
                return m32(v)

        def t16(v=xb):
            with torch.inference_mode():
                return m16(v)

        out["torch bf16"] = (t16, lambda a: t16(torch.from_numpy(a).to(
            torch.bfloat16)).float().numpy())
        out["torch fp32"] = (t32, lambda a: t32(torch.from_numpy(a)).numpy())
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        from fastlazy._bench import onnx_gemm_model, ort_session
        # interleaved with other pools on few cores: no spinning threads
        # (see the module docstring)
        sess = ort_session(onnx_gemm_model(case.layers, case.config.batch),
                           threads, spinning=False)
        y = np.empty(case.ref.shape, np.float32)
        bind = sess.io_binding()
        bind.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
        bind.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
        # (the closure keeps y alive: ORT writes into it)
        out["ORT fp32"] = (lambda y=y: sess.run_with_iobinding(bind),
                           lambda a: sess.run(None, {"x": a})[0])
    return out


def errors(case, peers):
    """Each peer's error on 512 inputs fed in the config's batch size."""
    batch = case.config.batch
    rng = np.random.default_rng(1)
    n = max(512, batch) // batch * batch
    xs = rng.standard_normal((n, case.config.in_units)).astype(np.float32)
    ref = reference(case.layers, xs)
    out = {}
    for name, (_, fwd) in peers.items():
        ys = np.concatenate([np.asarray(fwd(xs[i:i + batch]))
                             for i in range(0, n, batch)])
        out[name] = rel_error(ys, ref)
    return out


def run(configs, threads_list, rounds, target, only=None, quiet=0.0):
    import fastlazy as fl
    from common import get_case, interleaved
    from threadpoolctl import threadpool_info
    cpu, simd = cpu_report()
    print(f"CPU: {cpu}\nSIMD flags: {simd}")
    print(f"fastlazy kernels: {fl._plan.kernel_isa()}; bfloat16: "
          f"{fl._plan.bf16_kernel()}")
    for pool in threadpool_info():
        print(f"threadpool: {pool.get('internal_api')} "
              f"{pool.get('version')} {pool.get('filepath', '')[-60:]} "
              f"threads={pool.get('num_threads')}")
    try:
        import torch
        print(f"torch {torch.__version__}")
    except ImportError:
        print("torch: not installed (its rows are skipped)")
    results = []
    for cfg in configs:
        case = get_case(cfg)
        for threads in threads_list:
            fl.set_num_threads(threads)
            peers = peers_for(case, threads, fl)
            if only:
                peers = {k: v for k, v in peers.items() if k in only}
            errs = errors(case, peers)
            calls = {name: call for name, (call, _) in peers.items()}
            times = interleaved(calls, rounds, target, quiet)
            row = {"config": cfg, "threads": threads,
                   "time_us": {k: statistics.median(v) * 1e6
                               for k, v in times.items()},
                   "error": errs}
            if "fastlazy fp32" in times and "fastlazy bf16" in times:
                # the speed-up within each round (same load for both)
                per = sorted(a / b for a, b in zip(times["fastlazy fp32"],
                                                    times["fastlazy bf16"]))
                row["speedup_rounds"] = [per[len(per) // 4],
                                         statistics.median(per),
                                         per[(3 * len(per)) // 4]]
            results.append(row)
            t = row["time_us"]
            print(f"{cfg} {threads}t: " + ", ".join(
                f"{k} {v:.2f} us (err {errs[k]:.1e})" for k, v in t.items()),
                flush=True)
    return results


def measure_bandwidth(threads_list):
    bw = {}
    for threads in threads_list:
        bw[threads] = {"16MiB": bandwidth(16 * MiB, threads),
                       "512MiB": bandwidth(512 * MiB, threads)}
    bw["copy_512MiB"] = copy_bandwidth(512 * MiB)
    return bw


def table(results, bw):
    lines = ["| config | threads | fastlazy fp32 | fastlazy bf16 | bf16 "
             "speed-up (median of rounds, q25-q75) | torch bf16 (x its "
             "fp32) | ORT fp32 | error fp32 / bf16 / torch bf16 |",
             "|---|---|---|---|---|---|---|---|"]
    for row in results:
        t, e = row["time_us"], row["error"]
        torch16 = (f"{t['torch bf16']:.1f} ({t['torch fp32'] / t['torch bf16']:.2f}x)"
                   if "torch bf16" in t else "-")
        ort_ = f"{t['ORT fp32']:.1f}" if "ORT fp32" in t else "-"
        err = " / ".join(f"{e[k]:.1e}" for k in ("fastlazy fp32",
                                                  "fastlazy bf16",
                                                  "torch bf16") if k in e)
        q = row.get("speedup_rounds")
        spread = f" ({q[0]:.2f}-{q[2]:.2f})" if q else ""
        lines.append(
            f"| {row['config']} | {row['threads']} | "
            f"{t['fastlazy fp32']:.2f} | {t['fastlazy bf16']:.2f} | "
            f"{q[1] if q else t['fastlazy fp32'] / t['fastlazy bf16']:.2f}x"
            f"{spread} | {torch16} | {ort_} | {err} |")
    out = "\n".join(lines)
    c5 = [r for r in results if r["config"] == "C5"]
    if c5 and bw:
        from fastlazy._bench import CONFIGS
        k = CONFIGS["C5"].in_units
        weights = sum(units * prev for units, prev in zip(
            [u for u, _ in CONFIGS["C5"].layers],
            [k] + [u for u, _ in CONFIGS["C5"].layers][:-1]))
        extra = ["", "C5 weights: float32 "
                 f"{weights * 4 / MiB:.0f} MiB, bfloat16 "
                 f"{weights * 2 / MiB:.0f} MiB; sdot read bandwidth "
                 "(16 MiB working set / 512 MiB), np.copyto "
                 f"{bw['copy_512MiB']:.1f} GB/s (read + write):"]
        for row in c5:
            n = row["threads"]
            t = row["time_us"]
            b32 = weights * 4 / (t["fastlazy fp32"] * 1e-6) / 1e9
            b16 = weights * 2 / (t["fastlazy bf16"] * 1e-6) / 1e9
            m = bw.get(n, {})
            q = row.get("speedup_rounds")
            speed = q[1] if q else t["fastlazy fp32"] / t["fastlazy bf16"]
            extra.append(
                f"- {n} thread(s): bf16 {speed:.2f}x "
                f"fp32; weight bytes/time fp32 {b32:.1f} GB/s, bf16 "
                f"{b16:.1f} GB/s; machine {m.get('16MiB', 0):.1f} / "
                f"{m.get('512MiB', 0):.1f} GB/s")
        out += "\n".join(extra)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=21)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--configs", default="C1,C2,C3,C4,C5")
    ap.add_argument("--target", type=float, default=0.02,
                    help="seconds of calls per peer per round")
    ap.add_argument("--json", help="write the results here")
    ap.add_argument("--no-bandwidth", action="store_true")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each round wait up to this many seconds "
                    "for the other processes to calm down")
    ap.add_argument("--peers", help="comma-separated subset of: fastlazy "
                    "fp32, fastlazy bf16, torch bf16, torch fp32, ORT fp32")
    args = ap.parse_args(argv)
    threads = [int(t) for t in args.threads.split(",")]
    only = args.peers.split(",") if args.peers else None
    results = run(args.configs.split(","), threads, args.rounds, args.target,
                  only, args.wait_quiet)
    bw = {} if args.no_bandwidth else measure_bandwidth(threads)
    if bw:
        print("bandwidth (GB/s):", json.dumps(
            {str(k): v for k, v in bw.items()}))
    print()
    print(table(results, bw))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"results": results,
                       "bandwidth": {str(k): v for k, v in bw.items()}},
                      f, indent=1)


if __name__ == "__main__":
    main()
