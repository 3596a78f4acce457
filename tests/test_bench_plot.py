"""benches/plot.py (``python benches/run.py --plot``): it measures every
series on real networks, checks each against a float64 reference before
timing it, keeps the measurement as JSON and draws the PNGs from it.
Timing values are never asserted; what is checked is that the pictures
and the data behind them are there and say what was measured."""

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest

BENCHES = Path(__file__).resolve().parent.parent / "benches"

# matplotlib's C++ extension throws C++ exceptions at import, which ASan's
# preloaded runtime cannot intercept: tools/sanitize.sh (which sets
# FASTLAZY_SANITIZER) skips these, and CI's sanitizer run deselects them
pytestmark = [
    pytest.mark.plots,
    pytest.mark.skipif(bool(os.environ.get("FASTLAZY_SANITIZER")),
                       reason="matplotlib cannot be imported under ASan's "
                              "preloaded runtime"),
]


def load_plot():
    if not (BENCHES / "plot.py").exists():
        pytest.skip("benches/ is not in this copy of the project")
    pytest.importorskip("matplotlib")
    spec = importlib.util.spec_from_file_location("fl_bench_plot",
                                                  BENCHES / "plot.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def is_png(path):
    with open(path, "rb") as f:
        return f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_measures_checks_and_draws(tmp_path, capsys):
    plot = load_plot()
    out = tmp_path / "docs"
    data_path = tmp_path / "m.json"
    code = plot.main(["--batches", "1,8", "--budget", "0.002",
                      "--peak-gflops", "100", "--json", str(data_path),
                      "--out", str(out)])
    assert code == 0
    data = json.loads(data_path.read_text())
    assert data["machine"]["peak_gflops_core"] == 100
    assert data["machine"]["peak_note"] == "given"
    assert set(data["networks"]) == {"textbook", "C3"}
    for name, k, macs in (("textbook", 20, 20 * 256 + 256 * 10),
                          ("C3", 784, 784 * 512 + 512 * 512 + 512 * 10)):
        res = data["networks"][name]
        assert res["macs_per_row"] == macs
        # fastlazy float32, bfloat16, int8 and tight NumPy always run
        for key in ("fastlazy", "fastlazy-bf16", "fastlazy-int8", "numpy"):
            times = res["series"][key]
            assert sorted(int(b) for b in times) == [1, 8], (name, key)
            assert all(t > 0 for t in times.values())
    names = sorted(p.name for p in out.iterdir())
    assert names == ["gflops.png", "latency-c3.png", "latency-textbook.png"]
    assert all(is_png(out / n) for n in names)
    err = capsys.readouterr().err
    assert "wrote" in err and "measurement:" in err


def test_redraws_an_earlier_measurement_without_measuring(tmp_path):
    plot = load_plot()
    series = {"fastlazy": {"1": 1e-6, "4": 2e-6},
              "numpy": {"1": 9e-6, "4": 1.5e-5}}
    data = {"machine": {"cpu": "test CPU", "threads": 2,
                        "peak_gflops_core": 50.0, "peak_note": "given",
                        "when": "now"},
            "titles": {"textbook": "textbook"},
            "networks": {"textbook": {"macs_per_row": 7680,
                                      "series": series}}}
    src = tmp_path / "earlier.json"
    src.write_text(json.dumps(data))
    out = tmp_path / "pics"
    assert plot.main(["--draw", str(src), "--out", str(out)]) == 0
    assert sorted(p.name for p in out.iterdir()) == \
        ["gflops.png", "latency-textbook.png"]
    assert all(is_png(p) for p in out.iterdir())


def test_a_series_that_is_off_is_left_out_and_said(monkeypatch, capsys):
    """A series whose output does not match the reference is not timed."""
    plot = load_plot()
    import fastlazy as fl
    real = plot.fastlazy_variants

    def broken(net, say):
        nets = real(net, say)
        bad = fl.nn.Sequential()
        for layer in net:
            bad.add(fl.nn.Dense(layer.weight.shape[0],
                                activation=layer.act))
        bad.initialize()
        bad(np.zeros((1, net[0].weight.shape[1]), np.float32))
        nets["fastlazy"] = bad          # other weights: wrong outputs
        return nets

    monkeypatch.setattr(plot, "fastlazy_variants", broken)
    monkeypatch.setattr(plot, "NETWORKS", {"textbook": plot.NETWORKS[
        "textbook"]})
    res = plot.measure(1, [1], 0.002, lambda m: print(m, flush=True))
    assert "fastlazy" not in res["textbook"]["series"]
    assert "numpy" in res["textbook"]["series"]
    assert "textbook batch 1: fastlazy is off by" in capsys.readouterr().out
