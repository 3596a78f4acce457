"""Two builds of fastlazy side by side, in one run: the forward figures of
benches/ (C1-C5, convolutions, bulk scoring, first forward, import time)
measured alternately in fresh processes, as the ratio B / A.

    python benches/ab_builds.py A_SRC B_SRC [--rounds 5] [--only C1,C3]

A_SRC and B_SRC are ``src`` folders holding a built fastlazy (e.g. a
``git worktree`` of another commit, built with ``python setup.py build_ext
--inplace``).  Each round runs every case once per build, in alternating
order, so drift on a shared machine hits both; the table shows the median
per case and B/A (below 1: B is faster).  Only the public API is used, so
any two versions compare.  Run it with OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE unset (see docs/benchmarks.md).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys

# Each case: code run in a fresh interpreter that prints one number
# (seconds; smaller is better).  T = best-of timing helper defined below.
PRELUDE = r'''
import time, numpy as np, fastlazy as fl
from fastlazy import nn, init

def T(f, inner=1, repeat=7, budget=0.3):
    f()
    n = inner
    while True:
        t = time.perf_counter()
        for _ in range(n):
            f()
        dt = time.perf_counter() - t
        if dt > budget / repeat or n > 1 << 22:
            break
        n *= 4
    best = []
    for _ in range(repeat):
        t = time.perf_counter()
        for _ in range(n):
            f()
        best.append((time.perf_counter() - t) / n)
    best.sort()
    return best[len(best) // 2]

def mlp(widths, act="relu"):
    net = nn.Sequential()
    for i, w in enumerate(widths[1:]):
        last = i == len(widths) - 2
        net.add(nn.Dense(w, activation=None if last else act))
    net.initialize(init=init.Xavier())
    return net

def lenet():
    net = nn.Sequential()
    net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation='sigmoid'),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Conv2D(16, kernel_size=5, activation='sigmoid'),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation='sigmoid'),
            nn.Dense(84, activation='sigmoid'), nn.Dense(10))
    net.initialize(init=init.Xavier())
    return net

rng = np.random.default_rng(0)
'''

MLP = r'''
fl.set_num_threads({threads})
net = mlp({widths})
x = rng.random(({batch}, {widths}[0]), dtype=np.float32)
net(x)
print(T(lambda: net(x)))
'''

CASES = {
    "C1 1t": MLP.format(threads=1, widths=[20, 256, 10], batch=1),
    "C2 1t": MLP.format(threads=1, widths=[20, 256, 10], batch=2),
    "C3 1t": MLP.format(threads=1, widths=[784, 512, 512, 10], batch=64),
    "C3 2t": MLP.format(threads=2, widths=[784, 512, 512, 10], batch=64),
    "C4 1t": MLP.format(threads=1, widths=[1024] * 4, batch=256),
    "C4 2t": MLP.format(threads=2, widths=[1024] * 4, batch=256),
    "C5 1t": MLP.format(threads=1, widths=[1024, 4096, 1024], batch=1),
    "C5 2t": MLP.format(threads=2, widths=[1024, 4096, 1024], batch=1),
    "sigmoid 64x256 1t": r'''
fl.set_num_threads(1)
net = mlp([256, 256, 256], act="sigmoid")
x = rng.random((64, 256), dtype=np.float32)
net(x)
print(T(lambda: net(x)))
''',
    "LeNet b1 2t": r'''
fl.set_num_threads(2)
net = lenet()
x = rng.random((1, 1, 28, 28), dtype=np.float32)
net(x)
print(T(lambda: net(x)))
''',
    "LeNet b64 2t": r'''
fl.set_num_threads(2)
net = lenet()
x = rng.random((64, 1, 28, 28), dtype=np.float32)
net(x)
print(T(lambda: net(x)))
''',
    "conv3x3 stack 2t": r'''
fl.set_num_threads(2)
net = nn.Sequential()
net.add(nn.Conv2D(64, 3, padding=1, activation='relu'),
        nn.Conv2D(64, 3, padding=1, activation='relu'))
net.initialize(init=init.Xavier())
x = rng.random((1, 64, 56, 56), dtype=np.float32)
net(x)
print(T(lambda: net(x), repeat=5))
''',
    "bulk 1M 2t": r'''
fl.set_num_threads(2)
net = mlp([20, 256, 10])
x = rng.random((1_000_000, 20), dtype=np.float32)
net(x)
print(T(lambda: net(x), repeat=5, budget=1.0))
''',
    "first forward C4 1t": r'''
fl.set_num_threads(1)
x = rng.random((256, 1024), dtype=np.float32)
times = []
for _ in range(3):
    net = mlp([1024] * 4)
    t = time.perf_counter()
    net(x)
    times.append(time.perf_counter() - t)
print(sorted(times)[1])
''',
    "import": None,      # measured by _import_time
}


def _import_time(src, env):
    """Median over 5 of (import fastlazy) - (import numpy), seconds."""
    out = []
    for _ in range(5):
        code = ("import time; t=time.perf_counter(); import numpy; "
                "t1=time.perf_counter(); import fastlazy; "
                "print(time.perf_counter()-t1)")
        r = subprocess.run([sys.executable, "-c", code], env=env,
                           capture_output=True, text=True, check=True)
        out.append(float(r.stdout.split()[-1]))
    return statistics.median(out)


def run_case(name, src):
    env = dict(os.environ, PYTHONPATH=src)
    for var in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(var, None)
    if CASES[name] is None:
        return _import_time(src, env)
    r = subprocess.run([sys.executable, "-c", PRELUDE + CASES[name]],
                       env=env, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(f"{name} failed with {src}:\n{r.stderr[-2000:]}")
    return float(r.stdout.split()[-1])


def fmt(sec):
    if sec < 1e-3:
        return f"{sec * 1e6:.2f} us"
    if sec < 1:
        return f"{sec * 1e3:.2f} ms"
    return f"{sec:.2f} s"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--only", default="")
    ap.add_argument("--json", default="")
    args = ap.parse_args()
    names = [n for n in CASES
             if not args.only or n in args.only.split(",")]
    res = {n: {"a": [], "b": []} for n in names}
    for rnd in range(args.rounds):
        for n in names:
            order = ("a", "b") if rnd % 2 == 0 else ("b", "a")
            for which in order:
                src = args.a if which == "a" else args.b
                res[n][which].append(run_case(n, os.path.abspath(src)))
        print(f"round {rnd + 1}/{args.rounds} done", file=sys.stderr)
    print(f"| case | A ({args.a}) | B ({args.b}) | B / A |")
    print("|---|---|---|---|")
    for n in names:
        a = statistics.median(res[n]["a"])
        b = statistics.median(res[n]["b"])
        print(f"| {n} | {fmt(a)} | {fmt(b)} | {b / a:.2f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
