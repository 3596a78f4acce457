#!/usr/bin/env python
"""Run the whole benchmark suite and print the ratio tables (Markdown).

    python benches/run.py                    # everything, ~3-4 minutes
    python benches/run.py -k "C1 or C2"      # extra arguments go to pytest
    python benches/run.py --threads 2        # one thread count
    python benches/run.py --wait-quiet 20    # shared machine: before each
                                             # benchmark wait <= 20 s for
                                             # other processes to calm down
    python benches/run.py --repeat 3         # three runs; each benchmark's
                                             # median over them (one run on
                                             # a shared machine can be off
                                             # by 10% either way)
    python benches/run.py --table A.json B.json  # only format earlier runs
    python benches/run.py --plot             # latency against batch size and
                                             # GFLOP/s against the peak, as
                                             # PNGs in docs/ (benches/plot.py;
                                             # matplotlib, in the bench extra)

The suite runs in a child process without OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE (set on some machines here for old OpenBLAS builds, they
slow a current one), with ``src/`` of this checkout first on PYTHONPATH when
it holds a built fastlazy.  Results (pytest-benchmark JSON) and the pytest
log go to ``.benchmarks/``.
"""

import argparse
import copy
import json
import statistics
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent

PYTEST_ARGS = [
    "--benchmark-min-rounds=15",
    "--benchmark-max-time=0.5",
    "--benchmark-min-time=0.0002",   # rounds of >= 200 us: timer overhead
    "--benchmark-disable-gc",
    "--benchmark-columns=min,median,iqr,rounds",
    "-v",                            # the log names a benchmark that hangs
]
DENSE_PEERS = [("numpy", "NumPy"), ("ort-run", "ORT run"),
               ("ort-iobinding", "ORT io_binding"), ("torch", "torch")]
UNDER_1US = {"C1", "C2"}   # configurations with an absolute bar of 1.0 us
NOISY = 0.25               # other processes' cores that make a row suspect


def child_env():
    env = dict(os.environ)
    for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        env.pop(name, None)
    if (REPO / "src" / "fastlazy").is_dir():
        paths = [str(REPO / "src")]
        if env.get("PYTHONPATH"):
            paths.append(env["PYTHONPATH"])
        env["PYTHONPATH"] = os.pathsep.join(paths)
    return env


def run_suite(json_path, log_path, pytest_args):
    cmd = [sys.executable, "-m", "pytest", str(HERE), *PYTEST_ARGS,
           f"--benchmark-json={json_path}", *pytest_args]
    print(f"running: {' '.join(cmd)}\n(log: {log_path})", file=sys.stderr)
    start = time.perf_counter()
    with open(log_path, "w") as log:
        proc = subprocess.run(cmd, env=child_env(), cwd=REPO, stdout=log,
                              stderr=subprocess.STDOUT)
    lines = Path(log_path).read_text().splitlines()
    print(lines[-1] if lines else "(no output)", file=sys.stderr)
    if proc.returncode != 0:
        # a hang (conftest's watchdog): the benchmark and its innermost frames
        hang = [i for i, ln in enumerate(lines) if "Timeout (" in ln]
        shown = lines[hang[0]:hang[0] + 8] if hang else lines[-40:]
        print("\n".join(shown), file=sys.stderr)
    print(f"suite took {time.perf_counter() - start:.0f} s", file=sys.stderr)
    return proc.returncode


# ---------------------------------------------------------------------------
# Formatting


def us(seconds):
    v = seconds * 1e6
    return f"{v:.2f}" if v < 10 else f"{v:.1f}" if v < 1000 else f"{v:,.0f}"


def ms(seconds):
    return f"{seconds * 1e3:.1f}"


def table(header, rows):
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" for _ in header) + "|"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(out)


def by_group(benchmarks, kind):
    """{group: {peer: benchmark}} for one kind, in run order."""
    groups = {}
    for b in benchmarks:
        if b["extra_info"].get("kind") == kind:
            groups.setdefault(b["group"], {})[b["extra_info"]["peer"]] = b
    return groups


def median(b):
    return b["stats"]["median"]


def ratio_cell(b, base):
    """'median us (ratio to base)' of one alternative, or 'skipped'."""
    if b is None:
        return "skipped"
    return f"{us(median(b))} ({median(b) / base:.2f}x)"


def load_note(peers):
    load = max(b["extra_info"].get("other_load", 0.0) for b in peers)
    return f"{load:.2f}" + (" !" if load >= NOISY else "")


def dense_section(benchmarks):
    rows = []
    for peers in by_group(benchmarks, "dense").values():
        if "fastlazy" not in peers:
            continue
        base = median(peers["fastlazy"])
        info = peers["fastlazy"]["extra_info"]
        cells = [ratio_cell(peers.get(peer), base) for peer, _ in DENSE_PEERS]
        ratios = [(median(peers[peer]) / base, peer)
                  for peer, _ in DENSE_PEERS if peer in peers]
        closest = min(ratios) if ratios else None
        missed = []
        if closest and closest[0] <= 1.0:
            missed.append(f"slower than {closest[1]}")
        if info["config"] in UNDER_1US and base > 1e-6:
            missed.append("above 1.0 us")
        bar = "**missed**: " + ", ".join(missed) if missed else "met"
        rows.append([info["config"], info["threads"], us(base), *cells,
                     f"{closest[0]:.2f}x {closest[1]}" if closest else "-",
                     bar, load_note(peers.values())])
    header = ["config", "threads", "fastlazy us",
              *[f"{name} us (ratio)" for _, name in DENSE_PEERS],
              "closest", "bar", "other load"]
    return ("### Forward pass: median us per call; ratio = alternative / "
            "fastlazy (above 1 = fastlazy faster)\n\n" + table(header, rows))


def first_forward_section(benchmarks):
    rows = []
    for peers in by_group(benchmarks, "first-forward").values():
        if {"fastlazy", "numpy"} <= peers.keys():
            r = median(peers["fastlazy"]) / median(peers["numpy"])
            info = peers["fastlazy"]["extra_info"]
            rows.append([info["config"], info["threads"],
                         ms(median(peers["fastlazy"])),
                         ms(median(peers["numpy"])), f"{r:.2f}",
                         "met" if r <= 1.5 else "**missed**",
                         load_note(peers.values())])
    return ("### First forward (shape inference + initialization + compute) "
            "vs NumPy drawing the weights + one forward; bar: fastlazy / "
            "NumPy <= 1.5\n\n" +
            table(["config", "threads", "fastlazy ms", "NumPy ms",
                   "fastlazy / NumPy", "bar", "other load"], rows))


def import_section(benchmarks):
    peers = by_group(benchmarks, "import").get("import", {})
    if not {"fastlazy", "numpy"} <= peers.keys():
        return ""
    extra = median(peers["fastlazy"]) - median(peers["numpy"])
    row = [ms(median(peers["numpy"])), ms(median(peers["fastlazy"])),
           ms(extra), "met" if extra <= 0.050 else "**missed**",
           load_note(peers.values())]
    return ("### Import: `python -c 'import X'` in fresh processes, median "
            f"of {peers['numpy']['stats']['rounds']}; bar: fastlazy adds "
            "<= 50 ms\n\n" +
            table(["numpy ms", "fastlazy ms", "fastlazy adds ms", "bar",
                   "other load"], [row]))


def oversubscription_section(benchmarks):
    rows = []
    for peers in by_group(benchmarks, "oversubscription").values():
        if {"alone", "after-numpy-matmul"} <= peers.keys():
            r = median(peers["after-numpy-matmul"]) / median(peers["alone"])
            info = peers["alone"]["extra_info"]
            rows.append([info["config"], info["threads"],
                         us(median(peers["alone"])),
                         us(median(peers["after-numpy-matmul"])),
                         f"{r:.2f}", "met" if r <= 1.10 else "**missed**",
                         load_note(peers.values())])
    return ("### Oversubscription: fastlazy right after a NumPy 512x512 "
            "matmul (NumPy at its default threads) vs fastlazy alone; bar: "
            "slowdown <= 1.10\n\n" +
            table(["config", "fastlazy threads", "alone us",
                   "after NumPy matmul us", "slowdown", "bar", "other load"],
                  rows))


def bulk_section(benchmarks):
    rows = []
    for peers in by_group(benchmarks, "bulk").values():
        if "fastlazy" not in peers:
            continue
        base = median(peers["fastlazy"])
        cells = [f"{ms(median(b))} ({median(b) / base:.2f}x)"
                 for peer, b in peers.items() if peer != "fastlazy"]
        rows.append([peers["fastlazy"]["extra_info"]["threads"], ms(base),
                     *cells, load_note(peers.values())])
    others = next((list(p) for p in by_group(benchmarks, "bulk").values()),
                  [])
    header = ["threads", "fastlazy ms",
              *[f"{p} ms (ratio)" for p in others if p != "fastlazy"],
              "other load"]
    return ("### Bulk scoring: 20 -> 256 relu -> 10 on 1,000,000 rows; "
            "ratio = alternative / fastlazy\n\n" + table(header, rows))


def conv_section(benchmarks):
    """benches/bench_conv.py, at each library's default threads."""
    peers_shown = [("numpy", "NumPy im2col"), ("torch", "torch")]
    rows = []
    for peers in by_group(benchmarks, "conv").values():
        if "fastlazy" in peers:
            base = median(peers["fastlazy"])
            rows.append([peers["fastlazy"]["extra_info"]["config"], us(base),
                         *[ratio_cell(peers.get(p), base)
                           for p, _ in peers_shown],
                         load_note(peers.values())])
    if not rows:
        return ""
    return ("### Convolutional networks (bench_conv.py, default threads): "
            "median us; ratio = alternative / fastlazy\n\n" +
            table(["config", "fastlazy us",
                   *[f"{name} us (ratio)" for _, name in peers_shown],
                   "other load"], rows))


def machine_section(data):
    info = data["machine_info"]
    lines = ["### Machine, BLAS and thread pools", ""]
    cpu = info.get("cpu", {}).get("brand_raw") or info.get("processor", "")
    lines.append(f"- CPU: {cpu}, {os.cpu_count()} cores; Python "
                 f"{info.get('python_version')}; run {data.get('datetime')}")
    lines.append("- versions: " + ", ".join(
        f"{k} {v}" for k, v in info.get("versions", {}).items()))
    fl = info.get("fastlazy", {})
    lines.append(f"- fastlazy {fl.get('fastlazy')}: kernels "
                 f"{fl.get('kernels')}; BLAS {fl.get('blas_config')} "
                 f"(core {fl.get('blas_core')}), from `{fl.get('path')}`")
    env = info.get("env", {})
    lines.append("- environment: " + ", ".join(
        f"{k}={v if v is not None else '(unset)'}" for k, v in env.items()))
    lines.append("- thread pools loaded (threadpoolctl; default thread "
                 "counts, each benchmark sets its own):")
    for pool in info.get("threadpools", []):
        lines.append(f"  - {pool.get('internal_api')} {pool.get('version')}"
                     f" ({pool.get('architecture', '-')}, "
                     f"{pool.get('threading_layer', '-')}), "
                     f"{pool.get('num_threads')} threads: "
                     f"`{pool.get('filepath')}`")
    torch_info = info.get("torch_parallel", "")
    backend = [ln.strip() for ln in torch_info.splitlines()
               if "parallel backend" in ln or "Math Kernel" in ln]
    if backend:
        lines.append("- torch: " + "; ".join(backend))
    return "\n".join(lines)


def report(data):
    benchmarks = data["benchmarks"]
    sections = [dense_section(benchmarks), first_forward_section(benchmarks),
                import_section(benchmarks),
                oversubscription_section(benchmarks),
                bulk_section(benchmarks), conv_section(benchmarks),
                machine_section(data)]
    note = ("'other load': cores that other processes kept busy during the "
            f"group's timing (from /proc/stat); '!' marks >= {NOISY}, where "
            "2-thread numbers are unreliable on a 2-core machine.")
    return "\n\n".join([s for s in sections if s] + [note])


def merge(runs):
    """One result set from several runs of the suite: each benchmark's
    median is the median of its medians, its other load the largest."""
    if len(runs) == 1:
        return runs[0]
    by_name = {}
    for run in runs:
        for b in run["benchmarks"]:
            by_name.setdefault(b["fullname"], []).append(b)
    merged = copy.deepcopy(runs[-1])
    merged["benchmarks"] = []
    for bs in by_name.values():
        b = copy.deepcopy(bs[0])
        b["stats"]["median"] = statistics.median(
            x["stats"]["median"] for x in bs)
        b["extra_info"]["other_load"] = max(
            x["extra_info"].get("other_load", 0.0) for x in bs)
        b["extra_info"]["runs"] = len(bs)
        merged["benchmarks"].append(b)
    return merged


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--table", metavar="JSON", nargs="+",
                        help="only format the results of earlier runs "
                             "(several: each benchmark's median over them)")
    parser.add_argument("--json", metavar="PATH",
                        help="where to write the results (default "
                             ".benchmarks/run-<time>.json; with --repeat, "
                             "-1, -2, ... before the suffix)")
    parser.add_argument("--repeat", type=int, default=1, metavar="N",
                        help="run the suite N times and report each "
                             "benchmark's median over the runs")
    parser.add_argument("--plot", action="store_true",
                        help="instead of the suite: measure latency against "
                             "batch size and draw docs/latency-*.png and "
                             "docs/gflops.png (benches/plot.py; its options, "
                             "e.g. --clock-ghz or --threads, follow)")
    args, pytest_args = parser.parse_known_args(argv)
    if args.plot:
        # the same environment as the suite's child
        extra = ["--json", args.json] if args.json else []
        return subprocess.run([sys.executable, str(HERE / "plot.py"),
                               *extra, *pytest_args], env=child_env(),
                              cwd=REPO).returncode
    code = 0
    if args.table:
        paths = [Path(p) for p in args.table]
    else:
        stamp = time.strftime("%Y%m%d-%H%M%S")
        base = Path(args.json or REPO / ".benchmarks" / f"run-{stamp}.json")
        base.parent.mkdir(parents=True, exist_ok=True)
        paths = [base] if args.repeat <= 1 else [
            base.with_name(f"{base.stem}-{i + 1}{base.suffix}")
            for i in range(args.repeat)]
        for json_path in paths:
            code = run_suite(json_path, json_path.with_suffix(".log"),
                             pytest_args) or code
            if not json_path.exists() or json_path.stat().st_size == 0:
                print("no results were written (see the log above)",
                      file=sys.stderr)
                return code or 1
            print(f"results: {json_path}", file=sys.stderr)
    runs = [json.loads(p.read_text()) for p in paths]
    if len(runs) > 1:
        print(f"each benchmark's median over {len(runs)} runs\n")
    print(report(merge(runs)))
    return code


if __name__ == "__main__":
    sys.exit(main())
