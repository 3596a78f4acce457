#!/usr/bin/env python
"""float32 against every peer, C1-C5, in one interleaved run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benches/bench_fp32.py [--rounds 15] [--threads 1,2]
                                     [--configs C1,C2,C3,C4,C5] [--json F]

benches/run.py times each library in a block of its own; on a machine
shared with other jobs (and with the slow first seconds of a process
seen on the VMs here) a block can land in a slow stretch and the next in
a fast one, which moves a row by 10-50%.  Here every round times each
peer in turn, in a shuffled order, so a stretch of load falls on all of
them alike: a peer's ratio is the median over the rounds of (peer's time
/ fastlazy's time in that round), with its quartiles.

Peers, on the same weights (benches/common.py's cases): fastlazy, tight
NumPy (weights pre-transposed, every buffer preallocated,
``fastlazy._bench.numpy_forward``) with *its* OpenBLAS at the row's
thread count (fastlazy's own OpenBLAS is left alone), ONNX Runtime
(``sess.run`` and io_binding; Gemm + Relu, opset 17, fixed batch) and
PyTorch eager.  Each output is checked against float64 NumPy before any
timing.

At 2 threads every library runs as it does by default, spinning pools
included (without spinning, ONNX Runtime and NumPy gained nothing from
the second core on C3 here): after each peer's block of calls the round
pauses (--settle, 0.2 s), so threads still spinning from one peer (NumPy's
OpenBLAS keeps one spinning for ~0.1 s after a call) have stopped before
the next peer's warm-up call and block.  This file is a script: pytest collects nothing from it.
"""

import argparse
import json
import os
import statistics
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402

PEERS = ["fastlazy", "numpy", "ort-run", "ort-iobinding", "torch"]


def numpy_only(threads):
    """A threadpoolctl limit on NumPy's own BLAS alone (not fastlazy's,
    which fastlazy keeps at one thread under its own pool)."""
    from threadpoolctl import ThreadpoolController
    numpy_dir = os.path.dirname(np.__file__)      # .../numpy
    ctl = ThreadpoolController()
    # a wheel's NumPy carries its BLAS in numpy.libs/ (or inside numpy/)
    mine = [lib.filepath for lib in ctl.lib_controllers
            if lib.user_api == "blas" and
            lib.filepath.startswith((numpy_dir + ".libs" + os.sep,
                                     numpy_dir + os.sep))]
    if not mine:
        return None
    return ctl.select(filepath=mine).limit(limits=threads)


def peers_for(case, threads, only):
    """name -> zero-argument call, every peer on case's weights and input;
    a peer that is not installed is left out (and said so)."""
    from fastlazy._bench import numpy_forward, torch_sequential
    x = case.x
    out = {"fastlazy": (lambda: case.net(x))}
    fwd = numpy_forward(case.layers, case.config.batch)
    out["numpy"] = lambda: fwd(x)
    try:
        import onnx  # noqa: F401
        import onnxruntime as ort
    except ImportError:
        print("ONNX Runtime left out: not installed")
        ort = None
    if ort is not None:
        from fastlazy._bench import onnx_gemm_model, ort_session
        sess = ort_session(onnx_gemm_model(case.layers, case.config.batch),
                           threads)
        y = np.empty(case.ref.shape, np.float32)
        bind = sess.io_binding()
        bind.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
        bind.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
        feed = {"x": x}
        out["ort-run"] = lambda: sess.run(None, feed)[0]
        # (the closure keeps y alive: ORT writes into it)
        out["ort-iobinding"] = (lambda y=y: (sess.run_with_iobinding(bind),
                                             y)[1])
    try:
        import torch
    except ImportError:
        print("PyTorch left out: not installed")
        torch = None
    if torch is not None:
        torch.set_num_threads(threads)
        model = torch_sequential(case.layers)
        xt = torch.from_numpy(x)

        def run_torch():
            with torch.inference_mode():
                return model(xt).numpy()
        out["torch"] = run_torch
    if only:
        out = {k: v for k, v in out.items() if k in only or k == "fastlazy"}
    return out


def quartiles(values):
    v = sorted(values)
    return v[len(v) // 4], statistics.median(v), v[(3 * len(v)) // 4]


def run(configs, threads_list, rounds, target, only=None, quiet=0.0,
        settle=0.2):
    import fastlazy as fl
    from common import check, get_case, interleaved
    results = []
    for cfg in configs:
        case = get_case(cfg)
        for threads in threads_list:
            fl.set_num_threads(threads)
            limit = numpy_only(threads)
            try:
                calls = peers_for(case, threads, only)
                for name, call in calls.items():
                    check(np.asarray(call()), case.ref)   # before timing
                times = interleaved(calls, rounds, target, quiet,
                                    settle if threads > 1 else 0.0)
            finally:
                if limit is not None:
                    limit.restore_original_limits()
            row = {"config": cfg, "threads": threads, "rounds": rounds,
                   "time_us": {k: statistics.median(v) * 1e6
                               for k, v in times.items()},
                   "min_us": {k: min(v) * 1e6 for k, v in times.items()},
                   "ratio": {k: quartiles([a / b for a, b in
                                           zip(v, times["fastlazy"])])
                             for k, v in times.items() if k != "fastlazy"}}
            results.append(row)
            print(f"{cfg} {threads}t: " + ", ".join(
                f"{k} {v:.2f} us" for k, v in row["time_us"].items()),
                flush=True)
    return results


def table(results):
    peers = [p for p in PEERS[1:] if any(p in r["ratio"] for r in results)]
    lines = ["| config | threads | fastlazy µs (min) | " + " | ".join(
        f"{p} µs: ratio (q25-q75)" for p in peers) + " | closest |",
        "|---|---|---|" + "---|" * len(peers) + "---|"]
    for r in results:
        cells = []
        for p in peers:
            if p not in r["ratio"]:
                cells.append("-")
                continue
            q = r["ratio"][p]
            cells.append(f"{r['time_us'][p]:,.2f}: **{q[1]:.2f}×** "
                         f"({q[0]:.2f}-{q[2]:.2f})" if q[1] < 1 else
                         f"{r['time_us'][p]:,.2f}: {q[1]:.2f}× "
                         f"({q[0]:.2f}-{q[2]:.2f})")
        closest = min(r["ratio"], key=lambda p: r["ratio"][p][1])
        lines.append(f"| {r['config']} | {r['threads']} | "
                     f"{r['time_us']['fastlazy']:,.2f} "
                     f"({r['min_us']['fastlazy']:,.2f}) | "
                     + " | ".join(cells) +
                     f" | {closest} {r['ratio'][closest][1]:.2f}× |")
    return "\n".join(lines)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--configs", default="C1,C2,C3,C4,C5")
    ap.add_argument("--target", type=float, default=0.02,
                    help="seconds of calls per peer per round")
    ap.add_argument("--peers", help="comma-separated subset of: "
                    + ", ".join(PEERS[1:]) + " (fastlazy always runs)")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    help="before each round wait up to this many seconds "
                    "for the other processes to calm down")
    ap.add_argument("--settle", type=float, default=0.2,
                    help="seconds of pause before each peer's block at 2+ "
                    "threads (spinning pools stop)")
    ap.add_argument("--json", help="write the results here")
    args = ap.parse_args(argv)
    from bench_bf16 import cpu_report
    from threadpoolctl import threadpool_info
    import fastlazy as fl
    cpu, simd = cpu_report()
    print(f"CPU: {cpu}\nSIMD flags: {simd}\nfastlazy kernels: "
          f"{fl._plan.kernel_isa()}")
    for pool in threadpool_info():
        print(f"threadpool: {pool.get('internal_api')} "
              f"{pool.get('version')} {pool.get('filepath', '')[-60:]} "
              f"threads={pool.get('num_threads')}")
    only = args.peers.split(",") if args.peers else None
    results = run(args.configs.split(","),
                  [int(t) for t in args.threads.split(",")], args.rounds,
                  args.target, only, args.wait_quiet, args.settle)
    print()
    print(f"ratio = peer's time / fastlazy's time in the same round, median "
          f"over {args.rounds} rounds (quartiles); above 1: fastlazy is "
          f"faster")
    print(table(results))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"cpu": cpu, "simd": simd, "results": results}, f,
                      indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
