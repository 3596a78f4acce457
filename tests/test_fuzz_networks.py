"""Property tests: random networks, inputs and run-time settings against a
NumPy float64 reference.

Each example draws a whole configuration -- a stack of layers (Dense with
every activation and both ``flatten`` modes, Activation, Dropout, Flatten,
Conv2D, pooling, BatchNorm, LayerNorm), its sizes (1 and odd sizes
included), the network's dtype, the input's dtype and memory layout (C,
Fortran, strided, negative strides, byte-swapped, nested lists), batch sizes
(0 and 1 included), and the plan's run-time knobs (instruction set, BLAS
crossover, row tiles, threads from the smallest sizes on, convolution
schedules, BatchNorm fusion) -- then checks:

* the first forward (deferred initialization) and a second one after every
  parameter got new random values through ``set_data`` match the reference
  within a rounding bound derived layer by layer;
* junk input (wrong rank, wrong size, non-numeric, ragged) raises a clear
  error and changes nothing, and the network still gives the same answer.

The normal suite runs ``FUZZ_EXAMPLES`` (300) examples, derandomized; the
slow run (``python -m pytest -m slow``) runs ``FASTLAZY_FUZZ_EXAMPLES``
(default 10,000) random ones.
"""

import os
import re

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlazy as fl
from fastlazy import _plan, _steps, nn
from fastlazy.conv_layers import _Pool2D
from conftest import (act_ref, assert_close, conv2d_ref, dense_ref, eps,
                      pool_ref, snapshot)

FUZZ_EXAMPLES = 300
LONG_EXAMPLES = int(os.environ.get("FASTLAZY_FUZZ_EXAMPLES", "10000"))
ACTS = [None, "relu", "sigmoid", "tanh", "softrelu", "softsign", "gelu",
        "silu"]
ACT_NAMES = ACTS[1:]


# ---------------------------------------------------------------------------
# NumPy float64 reference with a rounding bound, layer by layer


def _f64(p):
    return np.asarray(p.data(), dtype=np.float64)


def _finite_or_zero(tol, mag):
    # an infinite or NaN magnitude comes from an infinite or NaN input:
    # the result is then a limit or NaN, with no rounding to allow
    with np.errstate(invalid="ignore"):
        return np.where(np.isfinite(mag), tol, 0.0)


def reference(block, x, tol, e):
    """(out, tol): the float64 forward of ``block`` and an elementwise
    bound on the rounding of a ``e``-precision implementation."""
    with np.errstate(all="ignore"):
        return _ref(block, x, tol, e)


def _act(name, z, tol, e):
    out = act_ref(name, z)
    if name is None:
        return out, tol
    # slopes are at most ~1.13 (GELU); the kernels round to a few ulp
    return out, _finite_or_zero(1.2 * tol + 4 * e * (np.abs(z) + 1), z)


def _flat(a):
    return a.reshape(a.shape[0], int(np.prod(a.shape[1:])))


def _ref(block, x, tol, e):
    if isinstance(block, nn.Sequential):
        for child in block:
            x, tol = _ref(child, x, tol, e)
        return x, tol
    if isinstance(block, nn.Dense):
        w = _f64(block.weight)
        b = None if block.bias is None else _f64(block.bias)
        if block._flatten:
            x, tol = _flat(x), _flat(tol)
        z, mag, k = dense_ref(x, w, b, None, flatten=False)
        new_tol = 1.2 * (4 * e * ((k + 2) * mag + 1) + tol @ np.abs(w).T)
        return _act(block.act, z, _finite_or_zero(new_tol, mag), e)
    if isinstance(block, nn.Activation):
        return _act(block._act_type, x, tol, e)
    if isinstance(block, nn.Dropout):
        return x, tol
    if isinstance(block, nn.Flatten):
        return _flat(x), _flat(tol)
    if isinstance(block, nn.Conv2D):
        w = _f64(block.weight)
        b = None if block.bias is None else _f64(block.bias)
        geo = (block._strides, block._padding, block._dilation,
               block._groups)
        z = conv2d_ref(x, w, b, *geo)
        mag = conv2d_ref(np.abs(x), np.abs(w),
                       None if b is None else np.abs(b), *geo)
        k = w.shape[1] * w.shape[2] * w.shape[3]
        new_tol = 1.2 * (4 * e * ((k + 2) * mag + 1)
                         + conv2d_ref(tol, np.abs(w), None, *geo))
        return _act(block.act, z, _finite_or_zero(new_tol, mag), e)
    if isinstance(block, nn.BatchNorm):
        shape = [1] * x.ndim
        shape[block._axis] = -1
        g = _f64(block.gamma) if block._scale else \
            np.ones(block.gamma.shape)
        s = (g / np.sqrt(_f64(block.running_var) + block._eps)).reshape(shape)
        mean = _f64(block.running_mean).reshape(shape)
        beta = _f64(block.beta).reshape(shape)
        out = (x - mean) * s + beta
        mag = np.abs(x * s) + np.abs(mean * s) + np.abs(beta) + 1
        return out, _finite_or_zero(np.abs(s) * tol + 8 * e * mag, x)
    if isinstance(block, nn.LayerNorm):
        ax = block._axis % x.ndim
        shape = [1] * x.ndim
        shape[ax] = -1
        g = _f64(block.gamma).reshape(shape)
        beta = _f64(block.beta).reshape(shape)
        mean = x.mean(axis=ax, keepdims=True)
        sigma = np.sqrt(((x - mean) ** 2).mean(axis=ax, keepdims=True)
                        + block._eps)
        z = (x - mean) / sigma
        out = z * g + beta
        # first-order bound: a perturbation d of the inputs moves z by at
        # most max|d| (2 + |z|) / sigma
        dmax = np.max(tol, axis=ax, keepdims=True)
        new_tol = 2 * np.abs(g) * dmax * (2 + np.abs(z)) / sigma \
            + 8 * e * (np.abs(z * g) + np.abs(beta) + 1)
        return out, _finite_or_zero(new_tol, out)
    if isinstance(block, _Pool2D):
        if block._global:
            k, s, p, ceil = x.shape[2:], (1, 1), (0, 0), False
        else:
            k, s, p, ceil = block._pool, block._strides, block._padding, \
                block._ceil
        inc = block._count_include_pad
        out = pool_ref(x, k, s, p, ceil, block._type, inc)
        if block._type == "max":
            new_tol = pool_ref(tol, k, s, p, ceil, "max", inc)
        else:
            mag = pool_ref(np.abs(x), k, s, p, ceil, "avg", inc)
            new_tol = pool_ref(tol, k, s, p, ceil, "avg", inc) \
                + 4 * e * (k[0] * k[1] + 2) * mag
        return out, _finite_or_zero(new_tol, out)
    raise TypeError(f"no reference for {type(block).__name__}")


# ---------------------------------------------------------------------------
# Strategies: a stack of layers that fits its input, built from a plan


@st.composite
def dense_stack(draw, dtype):
    """(layer specs, sample shape) for 2- to 4-D inputs."""
    sample = tuple(draw(st.lists(st.integers(1, 7), min_size=1,
                                 max_size=3)))
    shape = sample
    specs = []
    for _ in range(draw(st.integers(1, 5))):
        kind = draw(st.sampled_from(["dense", "dense", "dense", "act",
                                     "dropout", "flatten", "layernorm",
                                     "batchnorm"]))
        if kind == "dense":
            flatten = draw(st.booleans())
            units = draw(st.one_of(st.integers(1, 40), st.integers(1, 300)))
            k = int(np.prod(shape)) if flatten else shape[-1]
            known = draw(st.booleans())
            specs.append(("dense", dict(
                units=units, activation=draw(st.sampled_from(ACTS)),
                use_bias=draw(st.booleans()), flatten=flatten,
                in_units=k if known else 0, dtype=dtype)))
            shape = (units,) if flatten else shape[:-1] + (units,)
        elif kind == "act":
            specs.append(("act", draw(st.sampled_from(ACT_NAMES))))
        elif kind == "dropout":
            specs.append(("dropout", draw(st.sampled_from([0.0, 0.5]))))
        elif kind == "flatten":
            specs.append(("flatten", None))
            shape = (int(np.prod(shape)),)
        elif kind == "layernorm":
            axis = draw(st.sampled_from([-1] + list(range(1, len(shape)
                                                          + 1))))
            specs.append(("layernorm", dict(axis=axis, dtype=dtype)))
        else:
            specs.append(("batchnorm", dict(
                axis=1, dtype=dtype, scale=draw(st.booleans()),
                center=draw(st.booleans()))))
    return specs, sample


def _divisors(n):
    return [d for d in range(1, n + 1) if n % d == 0]


@st.composite
def conv_stack(draw, dtype):
    """(layer specs, sample shape) for NCHW inputs."""
    c, h, w = draw(st.integers(1, 4)), draw(st.integers(1, 9)), \
        draw(st.integers(1, 9))
    sample = (c, h, w)
    specs = []
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["conv", "conv", "conv", "pool",
                                     "gpool", "batchnorm", "layernorm",
                                     "act", "dropout"]))
        if kind == "conv":
            out_c = draw(st.integers(1, 6))
            groups = draw(st.sampled_from(_divisors(np.gcd(c, out_c))))
            pad = (draw(st.integers(0, 2)), draw(st.integers(0, 2)))
            dil = (draw(st.integers(1, 2)), draw(st.integers(1, 2)))
            kern = []
            for size, p, d in ((h, pad[0], dil[0]), (w, pad[1], dil[1])):
                most = (size + 2 * p - 1) // d + 1      # span fits
                kern.append(draw(st.integers(1, max(1, min(3, most)))))
            stride = (draw(st.integers(1, 3)), draw(st.integers(1, 3)))
            if any(s_ + 2 * p_ < d_ * (k_ - 1) + 1 for s_, p_, d_, k_ in
                   zip((h, w), pad, dil, kern)):
                kern, dil = [1, 1], (1, 1)
            specs.append(("conv", dict(
                channels=out_c, kernel_size=tuple(kern), strides=stride,
                padding=pad, dilation=dil, groups=groups,
                activation=draw(st.sampled_from(ACTS)),
                use_bias=draw(st.booleans()),
                in_channels=c if draw(st.booleans()) else 0, dtype=dtype)))
            h = (h + 2 * pad[0] - dil[0] * (kern[0] - 1) - 1) // stride[0] + 1
            w = (w + 2 * pad[1] - dil[1] * (kern[1] - 1) - 1) // stride[1] + 1
            c = out_c
        elif kind == "pool":
            k = (draw(st.integers(1, min(3, h))),
                 draw(st.integers(1, min(3, w))))
            strides = draw(st.one_of(st.none(), st.tuples(
                st.integers(1, 3), st.integers(1, 3))))
            pad = (draw(st.integers(0, k[0])), draw(st.integers(0, k[1])))
            ceil = draw(st.booleans())
            is_max = draw(st.booleans())
            kw = dict(pool_size=k, strides=strides, padding=pad,
                      ceil_mode=ceil)
            if not is_max:
                kw["count_include_pad"] = draw(st.booleans())
            specs.append(("maxpool" if is_max else "avgpool", kw))
            s = k if strides is None else strides
            sizes = []
            for size, k_, s_, p_ in zip((h, w), k, s, pad):
                span = size + 2 * p_ - k_
                sizes.append((-(-span // s_) if ceil else span // s_) + 1)
            h, w = sizes
        elif kind == "gpool":
            specs.append((draw(st.sampled_from(["gmaxpool", "gavgpool"])),
                          None))
            h = w = 1
        elif kind == "batchnorm":
            specs.append(("batchnorm", dict(
                axis=1, dtype=dtype, scale=draw(st.booleans()),
                center=draw(st.booleans()))))
        elif kind == "layernorm":
            specs.append(("layernorm", dict(
                axis=draw(st.sampled_from([-1, 1, 2, 3])), dtype=dtype)))
        elif kind == "act":
            specs.append(("act", draw(st.sampled_from(ACT_NAMES))))
        else:
            specs.append(("dropout", 0.25))
    if draw(st.booleans()):
        flat = draw(st.booleans())
        if flat:
            specs.append(("flatten", None))
        specs.append(("dense", dict(
            units=draw(st.integers(1, 20)),
            activation=draw(st.sampled_from(ACTS)),
            use_bias=True, flatten=draw(st.booleans()), dtype=dtype)))
    return specs, sample


def build(specs):
    net = nn.Sequential()
    for kind, arg in specs:
        if kind == "dense":
            net.add(nn.Dense(**arg))
        elif kind == "act":
            net.add(nn.Activation(arg))
        elif kind == "dropout":
            net.add(nn.Dropout(arg))
        elif kind == "flatten":
            net.add(nn.Flatten())
        elif kind == "layernorm":
            net.add(nn.LayerNorm(**arg))
        elif kind == "batchnorm":
            net.add(nn.BatchNorm(**arg))
        elif kind == "conv":
            net.add(nn.Conv2D(**arg))
        elif kind == "maxpool":
            net.add(nn.MaxPool2D(**arg))
        elif kind == "avgpool":
            net.add(nn.AvgPool2D(**arg))
        elif kind == "gmaxpool":
            net.add(nn.GlobalMaxPool2D())
        elif kind == "gavgpool":
            net.add(nn.GlobalAvgPool2D())
        else:  # pragma: no cover
            raise ValueError(kind)
    return net


INPUT_DTYPES = ["float64", "float32", "float16", "int32", "int8", "uint8",
                "bool"]
LAYOUTS = ["C", "F", "strided", "negative", "swapped", "list"]


def values(rng, shape, dtype, special):
    """Values of ``dtype`` (float64 array holding them exactly)."""
    dt = np.dtype(dtype)
    if dt.kind == "b":
        v = rng.random(shape) < 0.5
    elif dt.kind in "iu":
        lo = 0 if dt.kind == "u" else -6
        v = rng.integers(lo, 7, size=shape)
    else:
        v = rng.standard_normal(shape) * rng.choice([0.01, 1.0, 30.0])
        if special and v.size:
            flat = v.reshape(-1)
            idx = rng.choice(flat.size, size=max(1, flat.size // 50))
            flat[idx] = rng.choice([np.nan, np.inf, -np.inf, 0.0, -0.0],
                                   size=idx.size)
    return np.asarray(v).astype(dt)


def in_layout(a, layout):
    """``a`` (values) in memory ``layout``."""
    if layout == "C":
        return np.ascontiguousarray(a)
    if layout == "F":
        return np.asfortranarray(a)
    if layout == "strided":
        big = np.zeros(tuple(2 * d for d in a.shape), dtype=a.dtype)
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if layout == "negative":
        rev = tuple(slice(None, None, -1) for _ in a.shape)
        return np.ascontiguousarray(a[rev])[rev]
    if layout == "swapped":
        return a.astype(a.dtype.newbyteorder())
    if layout == "list":
        return a.tolist()
    raise ValueError(layout)  # pragma: no cover


def randomize(net, rng):
    """New random values for every parameter, through set_data; variances
    positive."""
    for name, p in net.collect_params().items():
        v = rng.uniform(-1, 1, size=p.shape)
        if name.endswith("running_var"):
            v = rng.uniform(0.2, 3, size=p.shape)
        p.set_data(v.astype(p.dtype))


def check(net, x, net_dtype, what):
    if net_dtype is None:
        # no parameters: the network computes in the input's float dtype
        dt = np.asarray(x).dtype
        net_dtype = np.dtype(f"f{dt.itemsize}") if dt.kind == "f" and \
            dt.itemsize in (4, 8) else np.dtype(np.float32)
    y = net(x)
    STATS["compared"] += 1
    assert isinstance(y, np.ndarray) and y.dtype == net_dtype, what
    xr = np.asarray(x).astype(net_dtype).astype(np.float64)
    out, tol = reference(net, xr, np.zeros(xr.shape), eps(net_dtype))
    assert_close(y, out, tol, what)
    return y


# inputs that must be refused
JUNK = [
    lambda s: np.full((1,) + s, "x"),                     # strings
    lambda s: np.zeros((1,) + s, dtype=object),           # objects
    lambda s: [[1.0, 2.0], [3.0]],                        # ragged
    lambda s: 3.5,                                        # a scalar
    lambda s: np.zeros((1,) + s, np.complex64),           # complex
    lambda s: None,
]
# inputs of another shape: refused, or (a network that fixes no size there,
# such as a convolution's height) computed correctly
OTHER_SHAPES = [
    lambda s: np.zeros(s[1:], np.float32),               # no batch axis
    lambda s: np.ones((2,) + s + (1,), np.float32),       # one axis more
    lambda s: np.ones((2,) + tuple(d + 1 for d in s), np.float32),
    lambda s: np.ones((3,) + s[:-1], np.float32),         # one axis less
]


@st.composite
def configs(draw):
    dtype = draw(st.sampled_from(["float32", "float64"]))
    family = draw(st.sampled_from(["dense", "conv"]))
    specs, sample = draw(dense_stack(dtype) if family == "dense"
                         else conv_stack(dtype))
    return dict(
        specs=specs, sample=sample, dtype=dtype,
        in_dtype=draw(st.sampled_from(INPUT_DTYPES)),
        layouts=(draw(st.sampled_from(LAYOUTS)),
                 draw(st.sampled_from(LAYOUTS))),
        batches=(draw(st.sampled_from([0, 1, 2, 3, 5, 8, 17, 70])),
                 draw(st.sampled_from([1, 2, 4, 7, 33, 130]))),
        special=draw(st.sampled_from([False, False, False, True])),
        isa=draw(st.sampled_from([None, 0, 3])),
        kernel_route=draw(st.sampled_from([None, "own", "blas", "packed",
                                           "dot"])),
        tile_bytes=draw(st.sampled_from([None, 1, 4096])),
        threads=draw(st.sampled_from([1, 2, 3])),
        parallel_macs=draw(st.sampled_from([None, 0])),
        col_bytes=draw(st.sampled_from([None, 1])),
        batch_cols=draw(st.sampled_from([None, 0, 1 << 20])),
        fuse_bn=draw(st.booleans()),
        junk=draw(st.sampled_from(range(len(JUNK)))),
        other=draw(st.sampled_from(range(len(OTHER_SHAPES)))),
        seed=draw(st.integers(0, 2 ** 32 - 1)),
    )


# examples run and outputs compared with the reference, for the report
STATS = {"examples": 0, "conv": 0, "pool_on": 0, "compared": 0, "junk": 0}


def run_config(cfg):
    """Build, run and check one configuration under its run-time knobs;
    every knob is put back afterwards."""
    STATS["examples"] += 1
    STATS["conv"] += any(k == "conv" for k, _ in cfg["specs"])
    STATS["pool_on"] += cfg["threads"] > 1 and cfg["parallel_macs"] == 0
    old_tuning = _plan.set_tuning(cfg["kernel_route"], cfg["tile_bytes"],
                                  cfg["parallel_macs"])
    old_conv = _plan.set_conv_tuning(cfg["col_bytes"], cfg["batch_cols"])
    old_fuse = _steps.set_batchnorm_fusion(cfg["fuse_bn"])
    old_threads = fl.get_num_threads()
    fl.set_num_threads(cfg["threads"])
    _plan.set_isa(cfg["isa"])
    try:
        _run(cfg)
    finally:
        _plan.set_tuning(*old_tuning)
        _plan.set_conv_tuning(*old_conv)
        _steps.set_batchnorm_fusion(old_fuse)
        fl.set_num_threads(old_threads)
        _plan.set_isa(None)


def _run(cfg):
    rng = np.random.default_rng(cfg["seed"])
    net = build(cfg["specs"])
    net.initialize(init=fl.init.Uniform(0.5))
    has_params = len(net.collect_params()) > 0
    net_dtype = np.dtype(cfg["dtype"]) if has_params else None
    what = f"{net!r}\nconfig {cfg}"
    first = None
    for i, (n, layout) in enumerate(zip(cfg["batches"], cfg["layouts"])):
        a = values(rng, (n,) + cfg["sample"], cfg["in_dtype"],
                   cfg["special"])
        if layout == "list" and (a.size > 3000 or n == 0):
            layout = "C"
        x = in_layout(a, layout)
        y = check(net, x, net_dtype, f"call {i} ({layout}): {what}")
        if i == 0:
            first = (x, y)
            randomize(net, rng)
    # the second call ran on new values: the first input gives a new answer
    # that matches the reference too, and junk changes nothing
    x0, _ = first
    y0 = check(net, x0, net_dtype, f"call 2: {what}")
    before = snapshot(net)
    junk = JUNK[cfg["junk"]](cfg["sample"])
    STATS["junk"] += 1
    with pytest.raises((TypeError, ValueError, fl.FastLazyError)) as info:
        net(junk)
    assert re.search(r"[A-Za-z]", str(info.value)), "an empty message"
    assert snapshot(net) == before, what
    other = OTHER_SHAPES[cfg["other"]](cfg["sample"])
    try:
        check(net, other, net_dtype, f"other shape {np.shape(other)}: {what}")
    except (TypeError, ValueError, fl.FastLazyError) as exc:
        assert re.search(r"[A-Za-z]", str(exc)), "an empty message"
    assert snapshot(net) == before, what
    np.testing.assert_array_equal(net(x0), y0, err_msg=what)


@settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(cfg=configs())
def test_random_networks_match_numpy(cfg):
    run_config(cfg)


@settings(max_examples=LONG_EXAMPLES, deadline=None, derandomize=False,
          database=None, suppress_health_check=list(HealthCheck))
@given(cfg=configs())
def _long_property(cfg):
    run_config(cfg)


@pytest.mark.slow
def test_random_networks_match_numpy_long(reliability_report):
    before = dict(STATS)
    _long_property()
    got = {k: STATS[k] - before[k] for k in STATS}
    reliability_report(
        f"fuzz: {got['examples']:,} random networks ({got['conv']:,} with "
        f"convolutions; {got['pool_on']:,} with the thread pool on from the "
        f"smallest sizes), {got['compared']:,} outputs compared with the "
        f"float64 NumPy reference, {got['junk']:,} junk inputs refused with "
        f"nothing changed")
