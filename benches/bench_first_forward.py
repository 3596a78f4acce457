"""First forward pass of C4 from a deferred network: shape inference,
initialization (drawing every weight) and compute, against drawing the same
weights with NumPy's generator plus one NumPy forward pass.  Bar: fastlazy
at most 1.5x NumPy."""

import numpy as np

from common import (CONFIGS, SEED, check, fastlazy_threads, numpy_threads,
                    other_load, tag)
from fastlazy._bench import dense_layers, make_net, reference_forward

CFG = "C4"
ROUNDS = 15


def _x():
    config = CONFIGS[CFG]
    return np.random.default_rng(SEED).standard_normal(
        (config.batch, config.in_units), dtype=np.float32)


def _tag(benchmark, peer, threads):
    tag(benchmark, "first-forward", f"first-forward-{CFG}-{threads}t", peer,
        config=CFG, threads=threads)


def bench_first_forward_fastlazy(benchmark, threads):
    _tag(benchmark, "fastlazy", threads)
    x = _x()

    def fresh_net():
        net = make_net(CONFIGS[CFG])
        net.initialize()
        return (net, x), {}

    def first_forward(net, x):
        return net(x)

    with fastlazy_threads(threads):
        (net, _), _ = fresh_net()
        check(first_forward(net, x), reference_forward(dense_layers(net), x))
        with other_load(benchmark):
            benchmark.pedantic(first_forward, setup=fresh_net, rounds=ROUNDS,
                               warmup_rounds=2)


def numpy_first_forward(x, layers, seed):
    """Draw U(-0.07, 0.07) float32 weights (as init.Uniform) and zero
    biases with NumPy's generator, then run one plain NumPy forward pass.
    Returns the output and the weights as ``[(W, b, act)]``."""
    rng = np.random.default_rng(seed)
    drawn = []
    y = x
    for units, act in layers:
        wt = rng.random((y.shape[1], units), dtype=np.float32)
        wt *= 0.14
        wt -= 0.07
        b = np.zeros(units, np.float32)
        y = y @ wt
        y += b
        if act == "relu":
            np.maximum(y, 0, out=y)
        drawn.append((wt.T, b, act))
    return y, drawn


def bench_first_forward_numpy(benchmark, threads):
    _tag(benchmark, "numpy", threads)
    x = _x()
    layers = CONFIGS[CFG].layers
    with numpy_threads(threads):
        y, drawn = numpy_first_forward(x, layers, SEED)
        check(y, reference_forward(drawn, x))
        with other_load(benchmark):
            benchmark.pedantic(numpy_first_forward, args=(x, layers, SEED),
                               rounds=ROUNDS, warmup_rounds=2)
