"""Forward-pass latency of convolutional networks.

One pytest-benchmark group per configuration, one question each: is
fastlazy's compiled forward (im2col + BLAS GEMM with fused epilogues) faster
than a tight NumPy im2col implementation -- and than PyTorch eager, when
``import torch`` works -- on the same weights and input?

* ``conv-lenet-b1``:   LeNet on 1 x 1 x 28 x 28 (latency of one image)
* ``conv-lenet-b64``:  LeNet on 64 x 1 x 28 x 28
* ``conv-3x3-64c-56``: three 3x3 convolutions 64 -> 64, padding 1, relu,
  on 1 x 64 x 56 x 56 (a ResNet stage)

Every peer's output is checked against the NumPy reference before timing.
Run: ``pytest benches/bench_conv.py`` (functions are ``bench_*``; see
benches/pytest.ini).
"""

import functools

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import fastlazy as fl
from fastlazy import nn

SEED = 4
RTOL = 1e-4


# ---------------------------------------------------------------------------
# Networks as (kind, params) lists shared by every peer


def lenet():
    net = nn.Sequential()
    net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Conv2D(16, kernel_size=5, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation="sigmoid"),
            nn.Dense(84, activation="sigmoid"),
            nn.Dense(10))
    return net


def conv_stack():
    net = nn.Sequential()
    for _ in range(3):
        net.add(nn.Conv2D(64, kernel_size=3, padding=1, activation="relu"))
    return net


CONFIGS = {
    "conv-lenet-b1": (lenet, (1, 1, 28, 28)),
    "conv-lenet-b64": (lenet, (64, 1, 28, 28)),
    "conv-3x3-64c-56": (conv_stack, (1, 64, 56, 56)),
}


def layers_of(net):
    """The network as [(kind, arrays, options)] for the other peers."""
    out = []
    for layer in net:
        if isinstance(layer, nn.Conv2D):
            out.append(("conv", (layer.weight.data().copy(),
                                 layer.bias.data().copy()),
                        dict(pad=layer._padding[0], act=layer.act)))
        elif isinstance(layer, nn.AvgPool2D):
            out.append(("avgpool2", (), {}))
        else:
            out.append(("dense", (layer.weight.data().copy(),
                                  layer.bias.data().copy()),
                        dict(act=layer.act)))
    return out


class Config:
    def __init__(self, name):
        build, shape = CONFIGS[name]
        rng = np.random.default_rng(SEED)
        fl.random.seed(SEED)
        self.name = name
        self.net = build()
        self.net.initialize(init=fl.init.Xavier())
        self.net.build((None,) + shape[1:])
        for p in self.net.collect_params().values():
            if p.name.endswith("bias"):
                p.set_data(rng.uniform(-0.1, 0.1, p.shape))
        self.x = rng.uniform(size=shape).astype(np.float32)
        self.layers = layers_of(self.net)
        self.ref = numpy_forward(self.layers, self.x)


@functools.cache
def config(name):
    return Config(name)


def check(y, ref):
    np.testing.assert_allclose(y, ref, rtol=RTOL,
                               atol=RTOL * float(np.abs(ref).max()))


def tag(benchmark, name, peer):
    benchmark.group = name
    benchmark.extra_info.update(kind="conv", peer=peer, config=name)


def timed(benchmark, fn, x):
    for _ in range(3):
        fn(x)
    return benchmark(fn, x)


# ---------------------------------------------------------------------------
# The NumPy im2col reference


def _act(v, act):
    if act == "sigmoid":
        return 1 / (1 + np.exp(-v))
    if act == "relu":
        return np.maximum(v, 0, out=v)
    return v


def np_conv(x, w, b, pad, act):
    """im2col with a sliding-window view, one GEMM for the whole batch."""
    n = x.shape[0]
    o, c, kh, kw = w.shape
    if pad:
        x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = sliding_window_view(x, (kh, kw), axis=(2, 3))  # n c oh ow kh kw
    oh, ow = win.shape[2:4]
    cols = win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)
    y = cols @ w.reshape(o, -1).T + b
    y = y.reshape(n, oh, ow, o).transpose(0, 3, 1, 2)
    return _act(np.ascontiguousarray(y), act)


def numpy_forward(layers, x):
    for kind, arrays, opt in layers:
        if kind == "conv":
            x = np_conv(x, *arrays, **opt)
        elif kind == "avgpool2":
            n, c, h, w = x.shape
            x = x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))
        else:
            wt, b = arrays
            x = _act(x.reshape(len(x), -1) @ wt.T + b, opt["act"])
    return x


# ---------------------------------------------------------------------------
# Peers

pytestmark = pytest.mark.parametrize("conv_cfg", list(CONFIGS))


def bench_fastlazy(benchmark, conv_cfg):
    c = config(conv_cfg)
    tag(benchmark, conv_cfg, "fastlazy")
    check(c.net(c.x), c.ref)
    timed(benchmark, c.net, c.x)


def bench_numpy(benchmark, conv_cfg):
    c = config(conv_cfg)
    tag(benchmark, conv_cfg, "numpy")
    forward = functools.partial(numpy_forward, c.layers)
    check(forward(c.x), c.ref)
    timed(benchmark, forward, c.x)


def bench_torch(benchmark, conv_cfg):
    torch = pytest.importorskip("torch")
    c = config(conv_cfg)
    tag(benchmark, conv_cfg, "torch")
    acts = {"sigmoid": torch.nn.Sigmoid, "relu": torch.nn.ReLU}
    mods = []
    for kind, arrays, opt in c.layers:
        if kind == "conv":
            w, b = arrays
            m = torch.nn.Conv2d(w.shape[1], w.shape[0], w.shape[2:],
                                padding=opt["pad"])
        elif kind == "avgpool2":
            mods.append(torch.nn.AvgPool2d(2, 2))
            continue
        else:
            w, b = arrays
            if not any(isinstance(m, torch.nn.Flatten) for m in mods):
                mods.append(torch.nn.Flatten())
            m = torch.nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(b))
        mods.append(m)
        if opt.get("act"):
            mods.append(acts[opt["act"]]())
    model = torch.nn.Sequential(*mods).eval()

    def forward(x):
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    check(forward(c.x), c.ref)
    timed(benchmark, forward, c.x)
