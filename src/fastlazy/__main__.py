"""``python -m fastlazy``: the deferred-initialization walkthrough, narrated,
then the forward latency of its network against the same network in NumPy."""

import sys

import numpy as np

import fastlazy as fl
from fastlazy import init, nn


def _say(text):
    print(f"\n# {text}")


def getnet():
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"))
    net.add(nn.Dense(10))
    return net


class MyInit(init.Initializer):
    """Prints each weight it initializes, as in the textbook."""

    def _init_weight(self, name, data):
        print("Init", name, data.shape)
        data[...] = np.random.default_rng(0).uniform(-0.07, 0.07, data.shape)


def walkthrough():
    _say("A network written without input sizes:")
    net = getnet()
    print(net)
    _say("Its parameters: -1 marks the input size nobody has told it yet")
    print(net.collect_params())
    _say("Reading a weight now is an error that says what to do:")
    try:
        net[0].weight.data()
    except fl.DeferredInitializationError as exc:
        print(f"DeferredInitializationError: {exc}")
    _say("initialize() records the initializer; the weights wait for their "
         "size")
    net.initialize()
    print(net.collect_params())
    _say("The first forward pass infers (256, 20) and (10, 256), "
         "initializes, computes")
    x = np.random.default_rng(1).uniform(size=(2, 20))
    y = net(x)
    print(f"net(x) -> output of shape {y.shape}, dtype {y.dtype}")
    print(net.collect_params())

    _say("A custom initializer shows when initialization really happens")
    net = getnet()
    print(">>> net.initialize(init=MyInit())   # prints nothing: sizes "
          "unknown")
    net.initialize(init=MyInit())
    print(">>> net(x)                          # first forward: both weights")
    net(x)
    print(">>> net(x)                          # nothing: no "
          "re-initialization")
    net(x)
    print(">>> net.initialize(init=MyInit(), force_reinit=True)")
    net.initialize(init=MyInit(), force_reinit=True)

    _say("With in_units every size is known, so initialize() runs at once")
    net = nn.Sequential()
    net.add(nn.Dense(256, in_units=20, activation="relu"))
    net.add(nn.Dense(10, in_units=256))
    net.initialize(init=MyInit())

    _say("A wrong input size is an error naming the layer and both sizes; "
         "the network is unchanged")
    try:
        net(np.ones((2, 30)))
    except fl.ShapeError as exc:
        print(f"ShapeError: {exc}")
    return net


def lenet():
    _say("Convolutional networks: every channel count and the first Dense's "
         "input size are inferred too")
    net = nn.Sequential()
    net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Conv2D(16, kernel_size=5, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation="sigmoid"),
            nn.Dense(84, activation="sigmoid"),
            nn.Dense(10))
    net.initialize(init=init.Xavier())
    print(net)
    print(">>> net.summary((None, 1, 28, 28))   # shapes worked out before "
          "any data")
    net.summary((None, 1, 28, 28))
    x = np.random.default_rng(3).uniform(size=(1, 1, 28, 28))
    y = net(x)
    print(f">>> net(x) on {x.shape} -> {y.shape}; the weights now:")
    for name, param in net.collect_params(".*weight").items():
        print(f"  {name}: {param.shape}")


def latency_table(net, batches=(1, 2)):
    """Median forward latency of ``net`` against the tightest NumPy version
    of it (``fastlazy._bench``), measured now, in this process."""
    from ._bench import compare_numpy
    rng = np.random.default_rng(2)
    return [(batch, compare_numpy(
        net, rng.standard_normal((batch, 20), dtype=np.float32)))
        for batch in batches]


def main(argv=None):
    net = walkthrough()
    lenet()
    _say("Forward latency of this network, measured now (median per call)")
    rows = latency_table(net)
    print(f"{'batch':>5}  {'fastlazy':>10}  {'NumPy':>10}  {'speed-up':>8}")
    for batch, r in rows:
        print(f"{batch:>5}  {r.fastlazy_ns / 1e3:>8.2f}us  "
              f"{r.numpy_ns / 1e3:>8.2f}us  {r.ratio:>7.1f}x")
    print("(NumPy: matmul/add/maximum with preallocated out=, weights "
          "pre-transposed.)")
    _say("Configuration")
    fl.show_config()
    return 0


if __name__ == "__main__":
    sys.exit(main())
