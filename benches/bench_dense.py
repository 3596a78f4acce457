"""Forward-pass latency, configurations C1..C5, against every alternative.

One group per configuration and thread count (``C2-1t``): is fastlazy
faster than the tightest NumPy, ONNX Runtime (``run`` and io_binding) and
PyTorch eager, on the same weights and input?
"""

import numpy as np
import pytest

from common import (CONFIGS, check, fastlazy_threads, numpy_threads, tag,
                    timed, torch_threads)
from fastlazy._bench import (numpy_forward, onnx_gemm_model, torch_sequential)
from fastlazy._bench import ort_session as new_ort_session

pytestmark = pytest.mark.parametrize("cfg", list(CONFIGS))


def _tag(benchmark, peer, cfg, threads):
    tag(benchmark, "dense", f"{cfg}-{threads}t", peer, config=cfg,
        threads=threads)


def bench_fastlazy(benchmark, case, cfg, threads):
    _tag(benchmark, "fastlazy", cfg, threads)
    with fastlazy_threads(threads):
        check(case.net(case.x), case.ref)
        timed(benchmark, case.net, case.x)


def bench_numpy(benchmark, case, cfg, threads):
    _tag(benchmark, "numpy", cfg, threads)
    forward = numpy_forward(case.layers, case.config.batch)
    with numpy_threads(threads):
        check(forward(case.x), case.ref)
        timed(benchmark, forward, case.x)


# ---------------------------------------------------------------------------
# ONNX Runtime


@pytest.fixture
def ort_session(case, threads):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    return new_ort_session(onnx_gemm_model(case.layers, case.config.batch),
                           threads)


def bench_ort_run(benchmark, case, cfg, threads, ort_session):
    _tag(benchmark, "ort-run", cfg, threads)
    feed = {"x": case.x}
    check(ort_session.run(None, feed)[0], case.ref)
    timed(benchmark, ort_session.run, None, feed)


def bench_ort_iobinding(benchmark, case, cfg, threads, ort_session):
    _tag(benchmark, "ort-iobinding", cfg, threads)
    y = np.empty(case.ref.shape, np.float32)
    binding = ort_session.io_binding()
    binding.bind_input("x", "cpu", 0, np.float32, case.x.shape,
                       case.x.ctypes.data)
    binding.bind_output("y", "cpu", 0, np.float32, y.shape, y.ctypes.data)
    ort_session.run_with_iobinding(binding)
    check(y, case.ref)
    timed(benchmark, ort_session.run_with_iobinding, binding)


# ---------------------------------------------------------------------------
# PyTorch


def bench_torch(benchmark, case, cfg, threads):
    torch = pytest.importorskip("torch")
    _tag(benchmark, "torch", cfg, threads)
    model = torch_sequential(case.layers)
    x = torch.from_numpy(case.x)
    with torch_threads(torch, threads), torch.inference_mode():
        check(model(x).numpy(), case.ref)
        timed(benchmark, model, x)
