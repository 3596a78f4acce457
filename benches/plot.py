#!/usr/bin/env python
"""Latency against batch size, and GFLOP/s against the machine's peak:
the pictures of docs/benchmarks.md and the README.

    python benches/run.py --plot              # measure, then draw into docs/
    python benches/plot.py --draw FILE.json   # draw an earlier measurement

Two networks -- the textbook one (20 -> 256 relu -> 10) and C3's
(784 -> 512 relu -> 512 relu -> 10) -- at batch sizes 1 to 4096, on the same
weights and input for every library: fastlazy float32 against tight NumPy,
ONNX Runtime (io_binding) and PyTorch eager; and, where they exist,
fastlazy bfloat16 (``net.cast('bfloat16')``), fastlazy int8
(``fastlazy.quantize(net)``) and ONNX Runtime and PyTorch int8 (``quantize_dynamic`` of
the same model).  A library that is not installed, or a fastlazy mode this
build lacks, is left out of the picture (and said so).

Every point is the median of several timed rounds of repeated calls, after
a warm-up; the libraries of one batch size run back to back, every output
is first checked against a float64 NumPy reference (int8 and bfloat16 with
their own, looser, tolerance).  Times go to a JSON file (``--json``) that
``--draw`` can redraw without measuring.

The peak: fp32 FMA units x lanes x 2 x clock, per core.  Virtual machines
often report their base clock, not the one the cores run at, so the clock
is measured (benches/clock.py: a chain of dependent adds, one per cycle)
unless given (``--clock-ghz``, or the peak itself with ``--peak-gflops``);
without a C compiler the reported clock is used, and the picture says
which.
"""

import argparse
import copy
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
# its neighbours (clock.py, bench_quant.py), however it is loaded
if str(HERE) not in sys.path:
    sys.path.insert(0, str(HERE))

NETWORKS = {
    "textbook": (20, ((256, "relu"), (10, None))),
    "C3": (784, ((512, "relu"), (512, "relu"), (10, None))),
}
BATCHES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096]
# (key, label, matplotlib style)
SERIES = [
    ("fastlazy", "fastlazy fp32", dict(color="C0", marker="o", lw=2.2)),
    ("fastlazy-bf16", "fastlazy bf16", dict(color="C0", marker="s", ls="--")),
    ("fastlazy-int8", "fastlazy int8", dict(color="C0", marker="^", ls=":")),
    ("numpy", "NumPy (tight)", dict(color="C1", marker="o")),
    ("ort", "ONNX Runtime fp32 (io_binding)", dict(color="C2", marker="o")),
    ("ort-int8", "ONNX Runtime int8 (quantize_dynamic, reduce_range)",
     dict(color="C2", marker="^", ls=":")),
    ("torch", "PyTorch eager fp32", dict(color="C3", marker="o")),
    ("torch-int8", "PyTorch int8 (quantize_dynamic)",
     dict(color="C3", marker="^", ls=":")),
]


# ---------------------------------------------------------------------------
# The machine


def reported_clock_ghz():
    """The highest clock the OS reports (lscpu's max, else cpuinfo's)."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/cpuinfo_max_freq") as f:
            return int(f.read()) / 1e6
    except (OSError, ValueError):
        pass
    try:
        with open("/proc/cpuinfo") as f:
            mhz = [float(line.split(":")[1]) for line in f
                   if line.startswith("cpu MHz")]
        return max(mhz) / 1e3 if mhz else None
    except (OSError, ValueError):
        return None


def fp32_lanes():
    """fp32 lanes of the vector unit fastlazy's kernels use."""
    from fastlazy import _plan
    return _plan.packed_tile()[1] // 2     # a panel is two vectors


# ---------------------------------------------------------------------------
# The peers


def reference(layers, x):
    y = x.astype(np.float64)
    for w, b, act in layers:
        y = y @ w.astype(np.float64).T + b
        if act == "relu":
            y = np.maximum(y, 0)
    return y


def ort_runner(layers, x, threads, int8, tmp):
    from fastlazy._bench import onnx_gemm_model, ort_session
    model = onnx_gemm_model(layers, x.shape[0])
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic
        src = Path(tmp) / f"fp32-{x.shape[0]}.onnx"
        dst = Path(tmp) / f"int8-{x.shape[0]}.onnx"
        src.write_bytes(model)
        # reduce_range: 7-bit weights.  With its defaults ONNX Runtime's
        # int16 sums saturate on AVX2 without VNNI (off by 10-20% of the
        # output range on these networks, so those points would be left
        # out); the int8 benchmarks measure both
        quantize_dynamic(str(src), str(dst), weight_type=QuantType.QInt8,
                         reduce_range=True)
        model = dst.read_bytes()
    sess = ort_session(model, threads)
    y = np.empty((x.shape[0], layers[-1][0].shape[0]), np.float32)
    binding = sess.io_binding()
    binding.bind_input("x", "cpu", 0, np.float32, x.shape, x.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)

    def run(_x):
        sess.run_with_iobinding(binding)
        return y
    # keep the session and arrays alive with the closure
    run.keep = (sess, binding, x, y)
    return run


def torch_runner(torch, layers, int8=False):
    from fastlazy._bench import torch_sequential
    model = torch_sequential(layers, int8=int8)

    def run(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return run


def fastlazy_variants(net, say):
    """{key: network} for the fastlazy modes this build has."""
    import fastlazy as fl
    nets = {"fastlazy": net}
    try:
        bf = copy.deepcopy(net)
        bf.cast("bfloat16")
        nets["fastlazy-bf16"] = bf
    except Exception as exc:              # not in this build
        say(f"fastlazy bf16 left out: net.cast('bfloat16') raised "
            f"{type(exc).__name__}: {exc}")
    if hasattr(fl, "quantize"):
        try:
            nets["fastlazy-int8"] = fl.quantize(net, mode="dynamic")
        except Exception as exc:
            say(f"fastlazy int8 left out: fastlazy.quantize raised "
                f"{type(exc).__name__}: {exc}")
    else:
        say("fastlazy int8 left out: this build has no fastlazy.quantize")
    return nets


# ---------------------------------------------------------------------------
# Timing


def median_s(fn, x, budget_s):
    """Median seconds per call of fn(x): a warm-up, then rounds of as many
    calls as fill ~budget_s / 9."""
    t0 = time.perf_counter()
    fn(x)
    one = max(time.perf_counter() - t0, 1e-7)
    end = time.perf_counter() + min(0.2, 5 * one)
    while time.perf_counter() < end:
        fn(x)
    calls = max(1, int(budget_s / 9 / one))
    rounds = []
    for _ in range(7):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn(x)
        rounds.append((time.perf_counter() - t0) / calls)
    return statistics.median(rounds)


def measure(threads, batches, budget_s, say):
    """{network: {"macs_per_row", "series": {key: {batch: seconds}}}},
    each library at ``threads`` threads; the thread counts it changes are
    put back afterwards."""
    import fastlazy as fl
    before = fl.get_num_threads()
    try:
        import torch
        torch_before = torch.get_num_threads()
    except ImportError:
        torch, torch_before = None, None
    try:
        return _measure(threads, batches, budget_s, say)
    finally:
        fl.set_num_threads(before)
        if torch is not None:
            torch.set_num_threads(torch_before)


def _measure(threads, batches, budget_s, say):
    import fastlazy as fl
    from fastlazy import nn
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        threadpool_limits = None
    try:
        import torch
        torch.set_num_threads(threads)
    except ImportError:
        torch = None
        say("PyTorch left out: not installed")
    try:
        import onnxruntime  # noqa: F401
        import onnx  # noqa: F401
        have_ort = True
    except ImportError:
        have_ort = False
        say("ONNX Runtime left out: onnx/onnxruntime not installed")
    fl.set_num_threads(threads)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (k, spec) in NETWORKS.items():
            fl.random.seed(1)
            net = nn.Sequential()
            for units, act in spec:
                net.add(nn.Dense(units, activation=act))
            net.initialize()
            rng = np.random.default_rng(2)
            net(np.zeros((1, k), np.float32))
            for layer in net:
                layer.bias.set_data(rng.uniform(-0.1, 0.1, layer.bias.shape))
            layers = [(l.weight.data().copy(), l.bias.data().copy(), l.act)
                      for l in net]
            macs = sum(w.size for w, _, _ in layers)
            variants = fastlazy_variants(net, say)
            results[name] = {"macs_per_row": macs, "series": {}}
            for batch in batches:
                x = rng.standard_normal((batch, k), dtype=np.float32)
                ref = reference(layers, x)
                scale = float(np.abs(ref).max()) or 1.0
                from fastlazy._bench import numpy_forward
                runners = {key: v for key, v in variants.items()}
                runners["numpy"] = numpy_forward(layers, batch)
                if have_ort:
                    runners["ort"] = ort_runner(layers, x, threads, False,
                                                tmp)
                    runners["ort-int8"] = ort_runner(layers, x, threads,
                                                     True, tmp)
                if torch is not None:
                    runners["torch"] = torch_runner(torch, layers)
                    runners["torch-int8"] = torch_runner(torch, layers,
                                                         int8=True)
                budget = budget_s * (1 + np.log2(batch) / 4)
                for key, fn in runners.items():
                    y = np.asarray(fn(x), dtype=np.float64)
                    err = float(np.abs(y - ref).max()) / scale
                    tol = 1e-4 if key in ("fastlazy", "numpy", "ort",
                                          "torch") else 0.1
                    if not err <= tol:
                        say(f"{name} batch {batch}: {key} is off by {err:.2e}"
                            f" of the output range; left out")
                        continue
                    if key == "numpy" and threadpool_limits is not None:
                        with threadpool_limits(threads, user_api="blas"):
                            t = median_s(fn, x, budget)
                    else:
                        t = median_s(fn, x, budget)
                    results[name]["series"].setdefault(key, {})[batch] = t
                say(f"{name} batch {batch}: " + ", ".join(
                    f"{key} {results[name]['series'][key][batch] * 1e6:.1f} us"
                    for key in runners if batch in
                    results[name]["series"].get(key, {})))
    return results


# ---------------------------------------------------------------------------
# Drawing


def draw(data, outdir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    outdir = Path(outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    machine = data["machine"]
    subtitle = (f"{machine['cpu']}, {machine['threads']} thread"
                f"{'s' if machine['threads'] > 1 else ''}; "
                f"median of rounds, same weights for every library")
    labels = {k: (label, style) for k, label, style in SERIES}
    written = []
    for name, res in data["networks"].items():
        fig, ax = plt.subplots(figsize=(7.5, 5))
        for key, (label, style) in labels.items():
            pts = res["series"].get(key)
            if not pts:
                continue
            b = sorted(int(v) for v in pts)
            ax.plot(b, [pts[str(v)] * 1e6 if str(v) in pts else pts[v] * 1e6
                        for v in b], label=label, **style)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("batch size (rows)")
        ax.set_ylabel("latency per call (µs, log)")
        ax.set_title(f"{data['titles'][name]}\n{subtitle}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
        path = outdir / f"latency-{name.lower()}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    # GFLOP/s against the peak
    peak = machine["peak_gflops_core"] * machine["threads"]
    fig, axes = plt.subplots(1, len(data["networks"]), figsize=(12, 4.8),
                             sharey=True)
    for ax, (name, res) in zip(np.atleast_1d(axes),
                               data["networks"].items()):
        macs = res["macs_per_row"]
        for key, (label, style) in labels.items():
            pts = res["series"].get(key)
            if not pts:
                continue
            b = sorted(int(v) for v in pts)
            t = [pts[str(v)] if str(v) in pts else pts[v] for v in b]
            ax.plot(b, [2 * macs * bb / tt / 1e9 for bb, tt in zip(b, t)],
                    label=label, **style)
        ax.axhline(peak, color="k", ls="--", lw=1)
        ax.text(1, peak * 1.02, f"fp32 peak {peak:.0f} GFLOP/s "
                f"({machine['peak_note']})", fontsize=7, va="bottom")
        ax.set_xscale("log", base=2)
        ax.set_xlabel("batch size (rows)")
        ax.set_title(data["titles"][name], fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("GFLOP/s (2 x multiply-adds / time)")
    np.atleast_1d(axes)[0].legend(fontsize=7, loc="upper left")
    fig.suptitle(subtitle, fontsize=9)
    fig.tight_layout()
    path = outdir / "gflops.png"
    fig.savefig(path, dpi=110)
    plt.close(fig)
    written.append(path)
    return written


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--draw", metavar="JSON",
                        help="only draw an earlier measurement")
    parser.add_argument("--json", metavar="PATH",
                        help="where to write the measurement (default "
                             ".benchmarks/plot-<time>.json)")
    parser.add_argument("--out", default=str(REPO / "docs"),
                        help="directory of the PNGs (default docs/)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batches", default=",".join(map(str, BATCHES)))
    parser.add_argument("--budget", type=float, default=0.15,
                        help="seconds of timed calls per point at batch 1 "
                             "(more for bigger batches)")
    parser.add_argument("--clock-ghz", type=float,
                        help="the cores' clock for the peak (default: "
                             "measured by benches/clock.py, else what the "
                             "OS reports)")
    parser.add_argument("--peak-gflops", type=float,
                        help="one core's fp32 peak (overrides --clock-ghz)")
    parser.add_argument("--fma-units", type=int, default=2)
    args = parser.parse_args(argv)

    def say(msg):
        print(msg, file=sys.stderr, flush=True)

    if args.draw:
        data = json.loads(Path(args.draw).read_text())
    else:
        lanes = fp32_lanes()
        if args.peak_gflops:
            peak, note = args.peak_gflops, "given"
        else:
            how = "given"
            ghz = args.clock_ghz
            if ghz is None:
                from clock import measure_ghz
                ghz, how = measure_ghz(), "measured"
            if ghz is None:
                ghz, how = reported_clock_ghz(), "as reported"
            if ghz is None:
                sys.exit("no clock known: give --clock-ghz or --peak-gflops")
            peak = args.fma_units * lanes * 2 * ghz
            note = (f"{args.fma_units} FMA x {lanes} lanes x 2 x {ghz:.2f} "
                    f"GHz {how}")
        import bench_quant
        data = {
            "machine": {"cpu": bench_quant.cpu_name(), "threads": args.threads,
                        "peak_gflops_core": peak, "peak_note": note,
                        "when": time.strftime("%Y-%m-%d %H:%M")},
            "titles": {"textbook": "textbook network 20 → 256 relu → 10",
                       "C3": "C3's network 784 → 512 relu → 512 relu → 10"},
            "networks": measure(args.threads,
                                [int(b) for b in args.batches.split(",")],
                                args.budget, say),
        }
        stamp = time.strftime("%Y%m%d-%H%M%S")
        path = Path(args.json or REPO / ".benchmarks" / f"plot-{stamp}.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data, indent=1))
        say(f"measurement: {path}")
    for p in draw(data, args.out):
        say(f"wrote {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
