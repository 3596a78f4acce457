"""The peers of fastlazy on Dask, shared by bench_dask.py and scale_out.py:
the same network as NumPy and as an ONNX Runtime model, each mapped over a
dask array with its weights (or model) as one graph key, so every peer
ships its network to a worker once, as fastlazy.dask does.

The task functions live here, in an importable module, so worker processes
(which get the parent's sys.path) can unpickle them by reference."""

import numpy as np

import dask
import dask.array as da
from dask.base import tokenize

import fastlazy as fl
from fastlazy._bench import CONFIGS, dense_layers, make_net

#: The networks measured: the textbook network and C3's.
NETS = {"textbook": "C2", "C3": "C3"}


def build(name, seed=3):
    """(initialized fastlazy net, [(W, b, act)] copies of its weights)."""
    cfg = CONFIGS[NETS[name]]
    fl.random.seed(seed)
    net = make_net(cfg)
    net.initialize()
    net(np.zeros((1, cfg.in_units), np.float32))
    rng = np.random.default_rng(seed)
    for layer in net:       # biases start at zero: make them count
        layer.bias.set_data(rng.uniform(-0.1, 0.1, layer.bias.shape))
    return net, dense_layers(net)


def in_units(name):
    return CONFIGS[NETS[name]].in_units


def _random_block(seed, index, rows, features):
    return np.random.default_rng([seed, index]).standard_normal(
        (rows, features), dtype=np.float32)


def placed_input(client, seed, rows, chunk, features, workers):
    """A (rows, features) float32 dask array whose blocks are generated
    and kept on ``workers``, block i on ``workers[i % len(workers)]``.

    Explicit placement, because persisting one array twice (restricted,
    then not) reuses the same keys, and the scheduler may put all root
    tasks of an unrestricted array on one worker: either way a "2 worker"
    run would read all its input from one of them."""
    from distributed import wait
    sizes = [min(chunk, rows - i) for i in range(0, rows, chunk)]
    futures = [client.submit(_random_block, seed, i, n, features,
                             workers=[workers[i % len(workers)]],
                             allow_other_workers=False, pure=False)
               for i, n in enumerate(sizes)]
    wait(futures)
    X = da.concatenate([da.from_delayed(f, (n, features), np.float32)
                        for f, n in zip(futures, sizes)])
    return X, futures


# -- NumPy on Dask ------------------------------------------------------------


def _numpy_block(x, layers):
    h = np.asarray(x, np.float32)
    for w, b, act in layers:
        h = h @ w.T
        h += b
        if act == "relu":
            np.maximum(h, 0, out=h)
    return h


def numpy_on_dask(layers, X):
    """The network as NumPy matmuls in every block (weights: one key)."""
    w = dask.delayed(layers, pure=True,
                     name="numpy-net-" + tokenize(*[a for w_b_a in layers
                                                    for a in w_b_a[:2]]))
    m = layers[-1][0].shape[0]
    return da.map_blocks(_numpy_block, X, w, dtype=np.float32,
                         chunks=(X.chunks[0], (m,)),
                         meta=np.empty((0, 0), np.float32))


# -- ONNX Runtime on Dask -----------------------------------------------------


def onnx_model(layers):
    """The network as ONNX bytes (Gemm + Relu), built from the same weights
    with the onnx helper API."""
    from onnx import TensorProto, helper, numpy_helper
    nodes, inits, cur = [], [], "x"
    for i, (w, b, act) in enumerate(layers):
        inits += [numpy_helper.from_array(w, f"w{i}"),
                  numpy_helper.from_array(b.astype(np.float32), f"b{i}")]
        nodes.append(helper.make_node("Gemm", [cur, f"w{i}", f"b{i}"],
                                      [f"h{i}"], transB=1))
        cur = f"h{i}"
        if act == "relu":
            nodes.append(helper.make_node("Relu", [cur], [f"r{i}"]))
            cur = f"r{i}"
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    k, m = layers[0][0].shape[1], layers[-1][0].shape[0]
    graph = helper.make_graph(
        nodes, "net",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, k])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, m])],
        inits)
    model = helper.make_model(graph,
                              opset_imports=[helper.make_opsetid("", 17)])
    return model.SerializeToString()


_SESSIONS = {}


def _ort_block(x, model, token):
    """One task: a session per worker process (made on its first task,
    one intra-op thread: the workers here have one thread each)."""
    import onnxruntime as ort
    sess = _SESSIONS.get(token)
    if sess is None:
        so = ort.SessionOptions()
        so.intra_op_num_threads = 1
        so.inter_op_num_threads = 1
        sess = _SESSIONS[token] = ort.InferenceSession(
            model, so, providers=["CPUExecutionProvider"])
    return sess.run(None, {"x": np.ascontiguousarray(x, np.float32)})[0]


def ort_on_dask(layers, X):
    model = onnx_model(layers)
    token = tokenize(model)
    key = dask.delayed(model, pure=True, name="onnx-model-" + token)
    m = layers[-1][0].shape[0]
    return da.map_blocks(_ort_block, X, key, token, dtype=np.float32,
                         chunks=(X.chunks[0], (m,)),
                         meta=np.empty((0, 0), np.float32))


# -- fastlazy with a fixed thread count (what fastlazy.dask avoids) -----------


def _forced_block(x, net, threads):
    if fl.get_num_threads() != threads:
        fl.set_num_threads(threads)
    return net(np.ascontiguousarray(x, np.float32))


def forced_threads_on_dask(net, X, threads):
    """The network on every block with ``threads`` fastlazy threads,
    whatever the worker's thread count: the oversubscribed case (e.g. the
    default, one thread per core, in each of several worker processes)."""
    import copy
    snap = copy.deepcopy(net)
    key = dask.delayed(snap, pure=True, name="forced-net-" + tokenize(
        *[p.data() for p in snap.collect_params().values()]))
    probe = net(np.zeros((1,) + X.shape[1:], np.float32))
    return da.map_blocks(_forced_block, X, key, threads, dtype=probe.dtype,
                         chunks=(X.chunks[0], probe.shape[1:]),
                         meta=np.empty((0, 0), probe.dtype))


def reference(layers, x):
    """float64 result of the network (fastlazy._bench.reference_forward)."""
    from fastlazy._bench import reference_forward
    return reference_forward(layers, x)
