#!/usr/bin/env python
"""Ratio table of a pytest-benchmark JSON for groups that are not C1-C5
(graphs, model zoo): per group, fastlazy's median time and every peer's
median / fastlazy's (above 1: fastlazy is faster).

    python benches/graph_table.py results.json [more.json ...]
"""

import json
import sys
from collections import defaultdict


def fmt(sec):
    if sec < 1e-3:
        return f"{sec * 1e6:.2f} us"
    if sec < 1:
        return f"{sec * 1e3:.2f} ms"
    return f"{sec:.2f} s"


def main(paths):
    groups = defaultdict(dict)
    machine = None
    for path in paths:
        data = json.load(open(path))
        machine = machine or data.get("machine_info", {})
        for b in data["benchmarks"]:
            groups[b["group"]][b["extra_info"].get("peer", b["name"])] = \
                b["stats"]["median"]
    peers = sorted({p for g in groups.values() for p in g} - {"fastlazy"})
    print("| group | fastlazy | " + " | ".join(peers) + " |")
    print("|---|---|" + "---|" * len(peers))
    for name in sorted(groups):
        g = groups[name]
        if "fastlazy" not in g:
            continue
        f = g["fastlazy"]
        cells = [f"{g[p] / f:.2f}x" if p in g else "-" for p in peers]
        print(f"| {name} | {fmt(f)} | " + " | ".join(cells) + " |")
    cpu = machine.get("cpu", {})
    if cpu:
        print(f"\nCPU: {cpu.get('brand_raw', cpu)}")


if __name__ == "__main__":
    main(sys.argv[1:])
