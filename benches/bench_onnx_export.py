"""How long ``fl.onnx.export`` takes, against the floors of writing the same
weights: ``net.save_parameters`` (an ``.npz`` of the same arrays) and
``onnx.save_model`` of the already-built model (ONNX's own serialization).
One group per network: the C3 dense network and the model zoo's
resnet18_v1 (10 classes, 3x32x32 input).

Export = trace + build the graph + serialize + onnx.checker (full check)
+ write through a temporary file.  Every round first checks the file it
wrote against ONNX Runtime (when installed) on one batch."""

import os

import numpy as np
import pytest

import fastlazy as fl
from common import get_case, other_load, tag

onnx = pytest.importorskip("onnx", reason="needs fastlazy[onnx]")


def _resnet18():
    from fastlazy.model_zoo import vision
    fl.random.seed(3)
    net = vision.resnet18_v1(classes=10)
    net.initialize(fl.init.Xavier())
    x = np.random.default_rng(3).standard_normal((2, 3, 32, 32)) \
        .astype(np.float32)
    net(x)
    return net, x


def _net(name):
    if name == "C3":
        case = get_case("C3")
        return case.net, case.x
    return _resnet18()


def _check(path, net, x):
    try:
        import onnxruntime as ort
    except ImportError:
        return
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    got = ort.InferenceSession(path, so).run(None, {"data": x})[0]
    np.testing.assert_allclose(got, net(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("peer", ["fl.onnx.export", "save_parameters",
                                  "onnx.save_model"])
@pytest.mark.parametrize("name", ["C3", "resnet18_v1"])
def bench_onnx_export(benchmark, tmp_path, name, peer):
    net, x = _net(name)
    tag(benchmark, "onnx-export", f"onnx-export-{name}", peer)
    path = str(tmp_path / "m.onnx")
    fl.onnx.export(net, path)
    _check(path, net, x)
    benchmark.extra_info["file_mb"] = round(os.path.getsize(path) / 1e6, 1)
    if peer == "fl.onnx.export":
        fn, args = fl.onnx.export, (net, path)
    elif peer == "save_parameters":
        fn, args = net.save_parameters, (str(tmp_path / "m.npz"),)
    else:
        model = onnx.load(path)
        fn, args = onnx.save_model, (model, str(tmp_path / "copy.onnx"))
    with other_load(benchmark):
        benchmark.pedantic(fn, args=args, rounds=7, warmup_rounds=1)
