"""int8 accuracy against ONNX Runtime's ``quantize_dynamic`` on the same
weights: fastlazy's error (max |delta| / output range against the float32
network, on 512 inputs) is at most 1.2 times ORT's, for the benchmark
configurations -- ORT's better one of its defaults and ``reduce_range``
(7-bit weights: on a CPU without VNNI its defaults saturate int16 sums and
err ~10x more).  Skips when onnx or onnxruntime is absent."""

import numpy as np
import pytest

import fastlazy as fl
from fastlazy._bench import CONFIGS, dense_layers, make_net, ort_int8_session

pytestmark = pytest.mark.onnx

pytest.importorskip("onnx", reason="the ONNX comparison needs onnx")
pytest.importorskip("onnxruntime",
                    reason="the ONNX comparison needs onnxruntime")


def relative_error(y, ref):
    return float(np.abs(y - ref).max() / np.ptp(ref))


@pytest.mark.parametrize("cfg", ["C1", "C3", "C4", "C5"])
def test_int8_error_within_ort(cfg):
    config = CONFIGS[cfg]
    fl.random.seed(3)
    net = make_net(config)
    net.initialize()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((512, config.in_units)).astype(np.float32)
    ref = net(x)
    for layer in net:                      # biases that matter
        layer.bias.set_data(rng.uniform(-0.1, 0.1, layer.bias.shape))
    ref = net(x)
    ours = relative_error(fl.quantize(net)(x), ref)
    theirs = min(relative_error(
        ort_int8_session(dense_layers(net), reduce_range=r).run(
            None, {"x": x})[0], ref) for r in (False, True))
    assert ours <= 1.2 * theirs, (ours, theirs)
