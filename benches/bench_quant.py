"""int8 inference: fastlazy's ``fl.quantize`` against fastlazy float32, ONNX
Runtime's ``quantize_dynamic`` model and PyTorch's dynamically quantized
Linear, on the dense configurations C1-C5, at 1 and 2 threads, in one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        python benches/bench_quant.py [--rounds 7] [--configs C1,C5] [--md]

For each (configuration, threads) every contestant is timed in turn, round
after round (interleaved), each round a loop of about 20 ms after a
warm-up; the table gives the median per call in microseconds and the
ratios.  The error columns are max |delta| / output range against the
float32 network on 512 inputs (ORT: its defaults, and ``reduce_range`` --
7-bit weights, which its docs recommend on CPUs without VNNI).  A missing
peer (onnxruntime, torch) is left out and said so.
"""

import argparse
import platform
import sys
import time

import numpy as np

import fastlazy as fl
from fastlazy._bench import (CONFIGS, dense_layers, make_net,
                             onnx_matmul_model, ort_int8_session,
                             torch_sequential, warm_up)


def cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    have = set(line.split(":", 1)[1].split())
                    want = ["avx2", "fma", "avx512f", "avx512_vnni",
                            "avx_vnni", "avx512_bf16"]
                    return " ".join(w for w in want if w in have) or "-"
    except OSError:
        pass
    return "?"


# The clock of a round: wall time, or at 1 thread the calling thread's CPU
# time (--cpu-time): every contestant then computes on the calling thread,
# and time the shared machine gives to other processes is not counted.
CLOCK = time.perf_counter_ns


def loop_ns(fn, x, loops, clock=None):
    clock = clock or CLOCK
    t0 = clock()
    for _ in range(loops):
        fn(x)
    return (clock() - t0) / loops


def calibrate(fn, x, target_ns=20e6):
    loops = 1
    while True:
        t = loop_ns(fn, x, loops) * loops
        if t >= target_ns / 4:
            return max(1, int(loops * target_ns / t))
        loops *= 4


def error(y, ref):
    return float(np.abs(np.asarray(y) - ref).max() / np.ptp(ref))


class Peers:
    """The contestants of one configuration, built once per thread count."""

    def __init__(self, cfg):
        config = CONFIGS[cfg]
        fl.random.seed(3)
        net = make_net(config)
        net.initialize()
        rng = np.random.default_rng(3)
        self.x = rng.standard_normal((config.batch, config.in_units),
                                     dtype=np.float32)
        net(self.x)
        for layer in net:
            layer.bias.set_data(rng.uniform(-0.1, 0.1, layer.bias.shape))
        self.net = net
        self.qnet = fl.quantize(net)
        self.layers = dense_layers(net)
        self.xe = rng.standard_normal((512, config.in_units),
                                      dtype=np.float32)
        self.ref = net(self.xe)
        self.missing = []

    def contestants(self, threads):
        fl.set_num_threads(threads)
        out = {"fl fp32": self.net, "fl int8": self.qnet}
        err = {"fl int8": error(self.qnet(self.xe), self.ref)}
        try:
            import onnxruntime as ort
            opts = ort.SessionOptions()
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
            opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
            fp = ort.InferenceSession(onnx_matmul_model(self.layers), opts,
                                      providers=["CPUExecutionProvider"])
            q8 = ort_int8_session(self.layers, threads)
            q7 = ort_int8_session(self.layers, threads, reduce_range=True)
            out["ort fp32"] = _ort_call(fp)
            out["ort int8"] = _ort_call(q8)
            out["ort int8 rr"] = _ort_call(q7)
            err["ort int8"] = error(out["ort int8"](self.xe), self.ref)
            err["ort int8 rr"] = error(out["ort int8 rr"](self.xe),
                                       self.ref)
        except ImportError as exc:
            self.missing.append(f"ONNX Runtime ({exc})")
        try:
            import torch
            torch.set_num_threads(threads)
            model = torch_sequential(self.layers)
            qmodel = torch_sequential(self.layers, int8=True)
            out["torch fp32"] = _torch_call(torch, model)
            out["torch int8"] = _torch_call(torch, qmodel)
            err["torch int8"] = error(out["torch int8"](self.xe), self.ref)
        except ImportError as exc:
            self.missing.append(f"PyTorch ({exc})")
        return out, err


def _ort_call(sess):
    def call(x):
        return sess.run(None, {"x": x})[0]
    return call


def _torch_call(torch, model):
    def call(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()
    return call


def run(configs, rounds, cpu_time=False):
    rows = []
    missing = set()
    for cfg in configs:
        peers = Peers(cfg)
        for threads in (1, 2):
            fns, err = peers.contestants(threads)
            missing.update(peers.missing)
            x = peers.x
            loops = {}
            for name, fn in fns.items():
                warm_up(fn, x, seconds=0.2)
                loops[name] = calibrate(fn, x)
            times = {name: [] for name in fns}
            clock = time.thread_time_ns if cpu_time and threads == 1 \
                else time.perf_counter_ns
            for _ in range(rounds):
                for name, fn in fns.items():
                    warm_up(fn, x, seconds=0.05)
                    times[name].append(loop_ns(fn, x, loops[name], clock))
            med = {name: float(np.median(t)) / 1e3
                   for name, t in times.items()}
            rows.append((cfg, threads, med, err))
            print(f"{cfg} {threads}t " + "  ".join(
                f"{k} {v:.2f}" for k, v in med.items()), file=sys.stderr,
                flush=True)
    fl.set_num_threads(2)
    return rows, sorted(missing)


def table(rows):
    head = ("| config | threads | fl fp32 µs | fl int8 µs | int8 / fp32 "
            "| ORT int8 µs (× own fp32) | ORT int8 rr µs | torch int8 µs "
            "(× own fp32) | fl vs ORT int8 | fl vs torch int8 "
            "| error fl | error ORT / rr | error torch |")
    out = [head, "|" + "---|" * (head.count("|") - 1)]
    for cfg, th, m, e in rows:
        def g(k):
            return m.get(k)

        def fmt(v):
            return "–" if v is None else (f"{v:,.1f}" if v >= 10
                                          else f"{v:.2f}")

        def own(k, fp):
            if g(k) is None or g(fp) is None:
                return fmt(g(k))
            return f"{fmt(g(k))} ({g(fp) / g(k):.2f}×)"

        def vs(k):
            return "–" if g(k) is None else f"{g(k) / g('fl int8'):.2f}×"

        def ef(k):
            return "–" if k not in e else f"{e[k]:.1e}"
        out.append(
            f"| {cfg} | {th} | {fmt(g('fl fp32'))} | {fmt(g('fl int8'))} "
            f"| {g('fl fp32') / g('fl int8'):.2f}× "
            f"| {own('ort int8', 'ort fp32')} | {fmt(g('ort int8 rr'))} "
            f"| {own('torch int8', 'torch fp32')} | {vs('ort int8')} "
            f"| {vs('torch int8')} | {ef('fl int8')} "
            f"| {ef('ort int8')} / {ef('ort int8 rr')} "
            f"| {ef('torch int8')} |")
    return "\n".join(out)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--configs", default="C1,C2,C3,C4,C5")
    ap.add_argument("--cpu-time", action="store_true",
                    help="time the 1-thread rows in the calling thread's "
                    "CPU time (for a shared, loaded machine)")
    args = ap.parse_args()
    import os
    from fastlazy import _plan
    q = _plan.int8_kernels()
    print(f"CPU: {cpu_name()}; flags: {cpu_flags()}")
    print(f"fastlazy int8 kernels: {q['isa']}; float kernels: "
          f"{_plan.kernel_isa()}; OpenBLAS: {_plan.blas_info()['corename']}"
          f", 1 thread (fastlazy's own pool threads)")
    load0 = os.getloadavg()[0]
    rows, missing = run(args.configs.split(","), args.rounds, args.cpu_time)
    print(f"load average (all processes, {os.cpu_count()} cores): "
          f"{load0:.1f} before, {os.getloadavg()[0]:.1f} after; clock: "
          + ("thread CPU time at 1 thread, wall at 2" if args.cpu_time
             else "wall"))
    for m in missing:
        print(f"left out: {m}")
    print()
    print(table(rows))


if __name__ == "__main__":
    main()
