#!/usr/bin/env python
"""Interleaved A/B for bulk scoring of the textbook network (20 -> 256 relu
-> 10) on 1,000,000 rows, in one process:

  net(x)            one call on the whole float32 array (the reference)
  predict           net.predict(x), default chunks
  predict memmap    net.predict on the same rows as a float64 .npy memmap
  NumPy chunks      NumPy in the same chunks, every buffer preallocated

    python benches/ab_predict.py [threads] [rounds]

Each round times every variant once, in turn; the table gives medians and
the median of per-round ratios against net(x) (on a shared machine only
ratios from one run mean anything).  Then the peak extra memory of predict
(tracemalloc: every NumPy allocation, so the converted chunk and the
result chunk; the plan's own workspace is C malloc, bounded by its tile)
for the float64 memmap written into a float32 memmap ``out``.  Re-executes
itself without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, with src/ on the path
when it holds a build.
"""
import os
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from scale_out import _reexec_clean, cpu_info  # noqa: E402

_reexec_clean()

import numpy as np  # noqa: E402

import fastlazy as fl  # noqa: E402
from bench_bulk import chunked_numpy_forward  # noqa: E402
from common import get_case, numpy_threads  # noqa: E402
from fastlazy.predict import default_batch_size  # noqa: E402

threads = int(sys.argv[1]) if len(sys.argv) > 1 else 2
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 15
ROWS = 1_000_000
cpu = cpu_info()
print(f"CPU: {cpu['model']} ({cpu['cpus']} CPUs); flags: {cpu['flags']}")
fl.set_num_threads(threads)
case = get_case("C2")
net = case.net
x = np.random.default_rng(3).standard_normal((ROWS, 20), dtype=np.float32)
tmp = Path(tempfile.mkdtemp())
mm = np.lib.format.open_memmap(tmp / "x64.npy", mode="w+", dtype=np.float64,
                               shape=x.shape)
mm[:] = x
mm.flush()
src = np.load(tmp / "x64.npy", mmap_mode="r")
chunk = default_batch_size(20, 4)
numpy_chunks = chunked_numpy_forward(case.layers, ROWS, chunk)
ref = net(x)
for got in (net.predict(x), net.predict(src), numpy_chunks(x)):
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)

variants = {"net(x) one call": lambda: net(x),
            "predict": lambda: net.predict(x),
            "predict float64 memmap": lambda: net.predict(src),
            f"NumPy, {chunk}-row chunks": lambda: numpy_chunks(x)}
times = {k: [] for k in variants}
with numpy_threads(threads):
    for f in variants.values():
        f()
    for _ in range(rounds):
        for k, f in variants.items():
            t = time.perf_counter()
            f()
            times[k].append(time.perf_counter() - t)
base = np.array(times["net(x) one call"])
print(f"\ntextbook network, {ROWS:,} rows, {threads} thread(s), {rounds} "
      f"interleaved rounds, default chunk {chunk:,} rows\n")
print("| variant | median ms | rows/s | time / net(x) (median of rounds) |")
print("|---|---:|---:|---:|")
for k, t in times.items():
    t = np.array(t)
    print(f"| {k} | {np.median(t) * 1e3:.1f} | {ROWS / np.median(t):,.0f} | "
          f"{np.median(t / base):.3f} |")

out = np.lib.format.open_memmap(tmp / "y.npy", mode="w+", dtype=np.float32,
                                shape=(ROWS, 10))
tracemalloc.start()
net.predict(src, out=out)
peak = tracemalloc.get_traced_memory()[1]
tracemalloc.stop()
print(f"\npeak extra memory, float64 memmap ({src.nbytes / 1e6:.0f} MB) -> "
      f"float32 memmap out: {peak / 1e6:.1f} MB (one chunk: "
      f"{chunk * 20 * 4 / 1e6:.1f} MB converted input + "
      f"{chunk * 10 * 4 / 1e6:.1f} MB result)")
np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4)
for f in tmp.iterdir():
    f.unlink()
tmp.rmdir()
