#!/usr/bin/env python
"""Which dense route is fastest, by rows x layer shape (1 thread).

    python benches/sweep_routes.py [rows,rows,...] [f64]

For each layer K -> M and row count: the small kernel ('own'), OpenBLAS
('blas') and the packed kernel ('packed'), forced with set_tuning, and the
automatic choice.  Prints, per row count, the winner's initial, the packed
kernel's time over the better of the other two, and auto's time over the
winner (1.00 = auto picked the fastest).  _packed_wins and _use_own_kernel
in _plan.pyx were set from this.
"""
import time, sys, numpy as np, fastlazy as fl
from fastlazy import _plan
fl.set_num_threads(1)
def timeit(f, x, budget=0.15):
    f(x); t0 = time.perf_counter(); n = 0
    while time.perf_counter() - t0 < 0.02: f(x); n += 1
    reps = max(3, int(n * budget / 0.02 / 5))
    best = 1e9
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(reps): f(x)
        best = min(best, (time.perf_counter() - t) / reps)
    return best
shapes = [(20,256),(256,10),(64,64),(100,100),(256,256),(784,512),(512,512),(512,10),(1024,1024),(1024,4096),(4096,1024)]
rowss = [int(r) for r in sys.argv[1].split(',')] if len(sys.argv) > 1 else [2,3,4,6,8,12,16,24,32,64,128,256]
dt = np.float64 if len(sys.argv) > 2 and sys.argv[2] == 'f64' else np.float32
for K, M in shapes:
    net = fl.nn.Dense(M, in_units=K, activation='relu', dtype=dt); net.initialize()
    line = f"K={K:5d} M={M:5d}:"
    for rows in rowss:
        x = np.random.rand(rows, K).astype(dt)
        res = {}
        for route in ("own", "blas", "packed"):
            _plan.set_tuning(kernel_route=route)
            res[route] = timeit(net, x)
        _plan.set_tuning(kernel_route="auto")
        res["auto"] = timeit(net, x)
        best = min(("own","blas","packed"), key=res.get)
        line += f" {rows}:{best[0]}{res['packed']/min(res['own'],res['blas']):.2f}/a{res['auto']/res[best]:.2f}"
    print(line, flush=True)
