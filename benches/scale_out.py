#!/usr/bin/env python
"""Scale-out on Dask: rows/s by workers and chunk size, peers, per-task
overhead and thread oversubscription; prints Markdown tables and draws
docs/scale-out.png.

    python benches/scale_out.py              # ~15 minutes on 2 cores
    python benches/scale_out.py --rounds 5   # more rounds per cell
    python benches/scale_out.py --quick      # fewer rows and chunk sizes

One LocalCluster of 2 worker processes with 1 thread each on 127.0.0.1 (the
scheduler and this client share the same cores).  The input is generated
on the workers first, block i on worker i mod 2 (or all on the one worker),
so only scoring is timed: each cell is
the wall time from submitting ``persist(predict(...))`` to all blocks being
in worker memory.  "1 worker" runs restricted to one of the two workers,
its input generated there; "2 workers" uses both, the input spread evenly.
Each cell also shows how many cores other processes used meanwhile
(machine busy time minus this process tree's CPU time): on a shared
machine a cell with other load near 1 core cannot show 2-worker scaling.  A and B alternate in every round and the table shows
medians, so a slow spell on the shared machine hits both alike: compare
ratios, not absolute rows/s.

Run without OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (the script re-executes
itself without them), with src/ first on PYTHONPATH when it holds a build.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
TASKS = 400             # most tasks in one job of the scaling table
REPO = HERE.parent


def _reexec_clean():
    env = dict(os.environ)
    dirty = [k for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE") if k in env]
    src = str(REPO / "src")
    want_src = (REPO / "src" / "fastlazy").is_dir() and \
        src not in env.get("PYTHONPATH", "").split(os.pathsep)
    if not dirty and not want_src:
        return
    for k in dirty:
        env.pop(k)
    if want_src:
        env["PYTHONPATH"] = os.pathsep.join(
            [src] + [p for p in [env.get("PYTHONPATH")] if p])
    os.execve(sys.executable, [sys.executable] + sys.argv, env)


def cpu_info():
    """lscpu's model name and flags (the flags decide the kernels)."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True,
                             timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return {"model": "unknown", "flags": ""}
    info = dict(line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {"model": info.get("Model name", "unknown").strip(),
            "flags": info.get("Flags", "").strip(),
            "cpus": info.get("CPU(s)", "?").strip()}


def main():
    _reexec_clean()
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--wait-quiet", type=float, default=0.0,
                    metavar="SECONDS",
                    help="before each round wait up to SECONDS for other "
                         "processes to leave the CPUs (default 0)")
    ap.add_argument("--nets", default="textbook,C3",
                    help="networks to run (default: textbook,C3)")
    ap.add_argument("--parts", default="scaling,peers,oversub",
                    help="parts to run (default: scaling,peers,oversub)")
    ap.add_argument("--png", default=str(REPO / "docs" / "scale-out.png"))
    ap.add_argument("--json", default=str(REPO / ".benchmarks" /
                                          "scale-out.json"))
    args = ap.parse_args()

    import numpy as np
    import distributed
    from distributed import LocalCluster, Client, wait

    sys.path.insert(0, str(HERE))
    import psutil
    import dask_peers as peers
    from common import wait_quiet
    import fastlazy as fl
    import fastlazy.dask as fd

    cpu = cpu_info()
    print(f"CPU: {cpu['model']} ({cpu['cpus']} CPUs)")
    print(f"flags: {cpu['flags']}")
    print(f"fastlazy {fl.__version__}, dask {distributed.__version__}, "
          f"kernels {fl.show_config(file=open(os.devnull, 'w'))['kernels']}",
          flush=True)

    # rows per job: up to several seconds of scoring for 1 worker, so that
    # what a job pays once (shipping the network, the first task's plan,
    # the graph's submission) does not hide what scales with the rows; at
    # most TASKS tasks per job, so the small chunks measure the per-task
    # cost without hours of it
    plans = {
        "textbook": (8_000_000, [1_000, 4_000, 16_000, 64_000, 250_000]),
        "C3": (160_000, [50, 200, 1_000, 5_000]),
    }
    if args.quick:
        plans = {"textbook": (500_000, [4_000, 64_000]),
                 "C3": (10_000, [200, 2_000])}
    # the peers by chunk size: the per-task cost is the same for every
    # peer, so it weighs most on the fastest, and larger chunks show what
    # each computes
    peer_chunks = {"textbook": [64_000, 250_000, 1_000_000],
                   "C3": [1_000, 5_000]}
    if args.quick:
        peer_chunks = {"textbook": [64_000], "C3": [2_000]}
    peer_chunk = {name: c[0] for name, c in peer_chunks.items()}
    nets = args.nets.split(",")
    unknown = [n for n in nets if n not in plans]
    if unknown:
        ap.error(f"--nets: unknown {unknown}; choose from {list(plans)}")
    plans = {n: plans[n] for n in nets}
    parts = set(args.parts.split(","))

    cluster = LocalCluster(n_workers=2, threads_per_worker=1,
                           processes=True, host="127.0.0.1",
                           dashboard_address=None)
    # a second cluster, idle until the oversubscription rows: 1 worker
    # process with 2 threads
    cluster2 = LocalCluster(n_workers=1, threads_per_worker=2,
                            processes=True, host="127.0.0.1",
                            dashboard_address=None)
    client = Client(cluster)
    client2 = Client(cluster2, set_as_default=False)
    results = {"cpu": cpu, "scaling": {}, "peers": {}, "oversub": {},
               "load_before": os.getloadavg()}
    try:
        workers = sorted(client.nthreads())
        one = [workers[0]]

        def scheduler_keys(cl):
            return set(cl.run_on_scheduler(
                lambda dask_scheduler: list(dask_scheduler.tasks)))

        def tree_cpu():
            """CPU seconds of this process and its children (the worker
            processes of both clusters)."""
            total = 0.0
            me = psutil.Process()
            for p in [me] + me.children(recursive=True):
                try:
                    t = p.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
            return total

        def machine_busy():
            with open("/proc/stat") as f:
                v = [int(x) for x in f.readline().split()[1:]]
            return (sum(v[:8]) - v[3] - v[4]) / os.sysconf("SC_CLK_TCK")

        other = []      # cores other processes used during each timed run

        def run(Y, where, cl=client):
            """Seconds from submitting Y to all its blocks in memory; then
            Y's keys are released and forgotten before the next run (a
            run must not find the last one's results, nor race its
            release)."""
            before = scheduler_keys(cl)
            if args.wait_quiet:
                wait_quiet(args.wait_quiet)
            busy0, own0 = machine_busy(), tree_cpu()
            t = time.perf_counter()
            P = cl.persist(Y, workers=where, allow_other_workers=False)
            wait(P)
            dt = time.perf_counter() - t
            other.append(max(0.0, (machine_busy() - busy0)
                             - (tree_cpu() - own0)) / dt)
            del P
            deadline = time.monotonic() + 30
            while not scheduler_keys(cl) <= before:
                if time.monotonic() > deadline:
                    raise RuntimeError("the scheduler kept a run's keys")
                time.sleep(0.02)
            return dt

        def check(Y, layers, X, where, cl=client):
            """The first block of Y against the float64 reference."""
            y = cl.compute(Y.blocks[0], workers=where).result()
            x = cl.compute(X.blocks[0], workers=where).result()
            ref = peers.reference(layers, x)
            np.testing.assert_allclose(y, ref, rtol=1e-4,
                                       atol=1e-4 * np.abs(ref).max())

        # -- 1 versus 2 workers, by chunk size ------------------------------
        for name, (max_rows, chunk_list) in (plans.items() if "scaling"
                                             in parts else ()):
            net, layers = peers.build(name)
            k = peers.in_units(name)
            results["scaling"][name] = {"rows": max_rows, "cells": []}
            for chunk in chunk_list:
                rows = min(max_rows, chunk * TASKS)
                X1, f1 = peers.placed_input(client, 0, rows, chunk, k, one)
                X2, f2 = peers.placed_input(client, 1, rows, chunk, k,
                                            workers)
                Y1, Y2 = fd.predict(net, X1), fd.predict(net, X2)
                check(Y1, layers, X1, one)
                t1, t2 = [], []
                run(Y1, one), run(Y2, None)                # warm-up
                other.clear()
                for _ in range(args.rounds):
                    t1.append(run(Y1, one))
                    t2.append(run(Y2, None))
                r1 = rows / statistics.median(t1)
                r2 = rows / statistics.median(t2)
                cell = {"chunk": chunk, "rows": rows,
                        "tasks": -(-rows // chunk),
                        "rows_s_1w": r1, "rows_s_2w": r2,
                        "speedup": r2 / r1,
                        "other_load": statistics.median(other)}
                results["scaling"][name]["cells"].append(cell)
                print(f"{name} chunk {chunk:>7}: 1 worker {r1:12,.0f} rows/s"
                      f"  2 workers {r2:12,.0f} rows/s  x{r2 / r1:.2f}"
                      f"  (other load {cell['other_load']:.2f} cores)",
                      flush=True)
                del X1, X2, Y1, Y2, f1, f2

        # -- peers on Dask, 2 workers, by chunk size -----------------------
        for name, (rows, _) in (plans.items() if "peers" in parts else ()):
            net, layers = peers.build(name)
            k = peers.in_units(name)
            results["peers"][name] = []
            for chunk in peer_chunks[name]:
                X, fx = peers.placed_input(client, 2, rows, chunk, k,
                                           workers)
                graphs = {"fastlazy": fd.predict(net, X),
                          "NumPy (map_blocks)": peers.numpy_on_dask(layers,
                                                                    X),
                          "ONNX Runtime (map_blocks)":
                              peers.ort_on_dask(layers, X)}
                times = {p: [] for p in graphs}
                for p, Y in graphs.items():
                    check(Y, layers, X, None)
                    run(Y, None)
                other.clear()
                for _ in range(args.rounds):
                    for p, Y in graphs.items():
                        times[p].append(run(Y, None))
                fl_rate = rows / statistics.median(times["fastlazy"])
                results["peers"][name].append({
                    "chunk": chunk, "rows": rows,
                    "other_load": statistics.median(other),
                    "rows_s": {p: rows / statistics.median(t)
                               for p, t in times.items()}})
                for p, t in times.items():
                    r = rows / statistics.median(t)
                    print(f"{name} peers, chunk {chunk}: {p:<26} {r:12,.0f} "
                          f"rows/s  fastlazy x{fl_rate / r:.2f}", flush=True)
                del X, graphs, fx

        # -- oversubscription: workers x fastlazy threads -------------------
        if "oversub" in parts and "textbook" in plans:
            name = "textbook"
            rows = plans[name][0]
            net, layers = peers.build(name)
            chunk = peer_chunk[name]
            Xa, fa = peers.placed_input(client, 3, rows, chunk, 20, workers)
            Pb, fb = peers.placed_input(client2, 3, rows, chunk, 20,
                                        sorted(client2.nthreads()))
            cases = {
                "2 workers x 1 thread, fastlazy 1 thread (fastlazy.dask)":
                    (client, fd.predict(net, Xa)),
                "2 workers x 1 thread, fastlazy forced to 2 threads":
                    (client, peers.forced_threads_on_dask(net, Xa, 2)),
                "1 worker x 2 threads, fastlazy 2 threads (fastlazy.dask)":
                    (client2, fd.predict(net, Pb)),
            }
            times = {c: [] for c in cases}
            for c, (cl, Y) in cases.items():
                run(Y, None, cl)
            other.clear()
            for _ in range(args.rounds):
                for c, (cl, Y) in cases.items():
                    times[c].append(run(Y, None, cl))
            base = None
            for c, t in times.items():
                r = rows / statistics.median(t)
                base = base or r
                results["oversub"][c] = r
                print(f"oversubscription, chunk {chunk}: {c:<58} {r:12,.0f} "
                      f"rows/s  ({r / base:.2f} of the first)", flush=True)
            results["oversub_other_load"] = statistics.median(other)
    finally:
        client2.close()
        client.close()
        cluster2.close()
        cluster.close()

    results["load_after"] = os.getloadavg()
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(results, indent=1))
    print_tables(results)
    if results["scaling"]:
        draw(results, args.png)
    print(f"\nwrote {args.json}" + (f" and {args.png}" if results["scaling"]
                                   else ""))


def print_tables(res):
    cpu = res["cpu"]
    print(f"\nCPU: {cpu['model']}, {cpu['cpus']} CPUs; flags: "
          f"{cpu['flags']}")
    print("machine load average (1, 5, 15 min) before: "
          f"{res['load_before']}, after: {res['load_after']} (other "
          f"processes share the 2 CPUs)\n")
    print("| network | rows | chunk rows | tasks | 1 worker rows/s | "
          "2 workers rows/s | 2 / 1 | other load (cores) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, s in res["scaling"].items():
        for c in s["cells"]:
            print(f"| {name} | {c['rows']:,} | {c['chunk']:,} | {c['tasks']:,}"
                  f" | {c['rows_s_1w']:,.0f} | {c['rows_s_2w']:,.0f} | "
                  f"{c['speedup']:.2f} | {c['other_load']:.2f} |")
    print("\nPer-task overhead: the smallest chunk within 10% of the best "
          "2-worker rows/s")
    for name, s in res["scaling"].items():
        best = max(c["rows_s_2w"] for c in s["cells"])
        ok = [c["chunk"] for c in s["cells"] if c["rows_s_2w"] >= 0.9 * best]
        print(f"- {name}: {min(ok):,} rows per chunk (best {best:,.0f} "
              f"rows/s)")
    print("\n| network | chunk rows | peer (2 workers x 1 thread) | rows/s |"
          " fastlazy / peer | other load (cores) |")
    print("|---|---:|---|---:|---:|---:|")
    for name, cells in res["peers"].items():
        for p in cells:
            f = p["rows_s"]["fastlazy"]
            for peer, r in p["rows_s"].items():
                print(f"| {name} | {p['chunk']:,} | {peer} | {r:,.0f} | "
                      f"{f / r:.2f} | {p['other_load']:.2f} |")
    print(f"\nOversubscription (other load "
          f"{res.get('oversub_other_load', float('nan')):.2f} cores):")
    print("\n| textbook network, same rows | rows/s | relative |")
    print("|---|---:|---:|")
    base = None
    for c, r in res["oversub"].items():
        base = base or r
        print(f"| {c} | {r:,.0f} | {r / base:.2f} |")


def draw(res, png):
    import matplotlib
    import numpy as np
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    names = list(res["scaling"])
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4))
    for ax, name in zip(np.atleast_1d(axes), names):
        cells = res["scaling"][name]["cells"]
        x = [c["chunk"] for c in cells]
        ax.plot(x, [c["rows_s_1w"] for c in cells], "o-",
                label="1 worker x 1 thread")
        ax.plot(x, [c["rows_s_2w"] for c in cells], "s-",
                label="2 workers x 1 thread")
        ax.set_xscale("log")
        ax.set_xlabel("rows per chunk (task)")
        ax.set_ylabel("rows/s")
        ax.set_title(f"{name}: fastlazy.dask.predict")
        ax.grid(True, which="both", alpha=0.3)
        ax.set_ylim(bottom=0)
        ax.legend()
    fig.suptitle(f"rows/s by workers and chunk size ({res['cpu']['model']})",
                 fontsize=9)
    fig.tight_layout()
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, dpi=110)


if __name__ == "__main__":
    main()
