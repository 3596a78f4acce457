#!/usr/bin/env python
"""Interleaved A/B: fastlazy against ONNX Runtime on C3/C4 in one process.

    python benches/ab_ort.py [threads] [C3,C4]

25 rounds; each times a few fastlazy calls, then a few ORT calls on the same
weights and input, and the result is the median of the per-round ratios
(ORT time / fastlazy time, above 1 = fastlazy faster).  On a shared machine
this resolves differences of a few percent that separate runs cannot, which
is what kernel changes were judged by.  At 2 threads the two pools take
turns and each can find the other's threads still spinning: use
benches/run.py for 2-thread numbers.  Unset OPENBLAS_CORETYPE and
OPENBLAS_L2_SIZE first (benches/run.py does it for its child).
"""
import sys, time, numpy as np, fastlazy as fl
try:
    import onnx, onnxruntime as ort
except ImportError:
    sys.exit("benches/ab_ort.py needs onnx and onnxruntime (pip install '.[bench]')")
from onnx import helper, TensorProto, numpy_helper
nt = int(sys.argv[1]) if len(sys.argv) > 1 else 1
fl.set_num_threads(nt)
cfgs = {"C3": (64, 784, [512,512,10]), "C4": (256, 1024, [1024,1024,1024])}
only = sys.argv[2].split(",") if len(sys.argv) > 2 else list(cfgs)
for name in only:
    n, K, sizes = cfgs[name]
    net = fl.nn.Sequential()
    for i, m in enumerate(sizes):
        net.add(fl.nn.Dense(m, activation='relu' if i < len(sizes)-1 else None))
    net.initialize(fl.init.Xavier())
    x = np.random.default_rng(0).standard_normal((n, K)).astype(np.float32)
    y = net(x)
    nodes, inits, cur = [], [], "x"
    for i, blk in enumerate(net):
        w = blk.weight.data().copy(); b = blk.bias.data().copy()
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        out = f"h{i}"
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"], [out], transB=1)); cur = out
        if blk.act is not None:
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"])); cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [n, K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n, sizes[-1]])], inits)
    so = ort.SessionOptions(); so.intra_op_num_threads = nt; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString(), so, providers=["CPUExecutionProvider"])
    yo = sess.run(None, {"x": x})[0]
    assert np.allclose(y, yo, rtol=1e-3, atol=1e-3), np.abs(y - yo).max()
    reps = 3 if name == "C4" else 30
    f1 = lambda: net(x); f2 = lambda: sess.run(None, {"x": x})
    for _ in range(3): f1(); f2()
    ratios, t_fl, t_ort = [], [], []
    for r in range(25):
        t = time.perf_counter()
        for _ in range(reps): f1()
        a = (time.perf_counter() - t) / reps
        t = time.perf_counter()
        for _ in range(reps): f2()
        b = (time.perf_counter() - t) / reps
        ratios.append(b / a); t_fl.append(a); t_ort.append(b)
    print(f"{name} {nt}t: fastlazy {np.median(t_fl)*1e6:.0f} us, ORT {np.median(t_ort)*1e6:.0f} us, "
          f"ORT/fastlazy median {np.median(ratios):.3f} (q25 {np.percentile(ratios,25):.3f}, q75 {np.percentile(ratios,75):.3f})", flush=True)
