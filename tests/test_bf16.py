"""bfloat16 weights: ``net.cast('bfloat16')``.

The contract: the weights of Dense and Conv2D layers are stored as
bfloat16 -- rounded from float32 (or float64) to nearest, ties to even;
NaN stays NaN, infinities stay infinite -- everything else stays float32,
the network takes and returns float32 and computes every sum in float32.

The oracle is NumPy in float64 on the weights rounded to bfloat16 by a
reference rounding written here.  The bound a result must meet:

* against the rounded weights, the float32 bound of every other test
  (``conftest.forward_ref``: about (K + 2) * 2**-23 * sum|w x| per layer,
  propagated) -- the weights enter the products exactly;
* against the float32 weights before rounding, plus the weights' own
  rounding: |w_b - w| <= 2**-8 |w|, so |dz| <= 2**-8 * sum|w x| per layer
  (the AVX512-BF16 dot product also rounds x: 2 * 2**-8 * sum|w x|).

Every route is covered at every instruction-set level this CPU has
(baseline, AVX2, AVX-512; the vdpbf16ps kernel only on a CPU with
AVX512-BF16, its emulation at AVX2 everywhere else), at 1 and 2 threads.
"""

import copy
import io
import math
import pathlib
import pickle
from fractions import Fraction

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import fastlazy as fl
from conftest import require_isa
from fastlazy import _plan, init, nn

U8 = 2.0 ** -8          # bfloat16 unit roundoff (8 significant bits)
U24 = 2.0 ** -24        # float32's
GRAPHS = pathlib.Path(__file__).parent / "data" / "mxnet_graphs"
# the level fixture holds for every example of a property: switching the
# kernel table once per test is what is wanted
PER_TEST = [HealthCheck.function_scoped_fixture]


@pytest.fixture(params=[0, 3, 4], ids=["base", "avx2", "avx512"])
def level(request):
    """Each instruction-set level this CPU has (skipped where it lacks
    one); the best is put back after."""
    try:
        yield require_isa(request.param)
    finally:
        _plan.set_isa(None)


@pytest.fixture
def avx2():
    try:
        yield require_isa(3)
    finally:
        _plan.set_isa(None)


# ---------------------------------------------------------------------------
# Reference rounding


def rne_f32(a):
    """float32 values rounded to bfloat16, to nearest even, as float32
    (integer arithmetic on the bit patterns; NaN kept, quiet)."""
    a = np.ascontiguousarray(a, dtype=np.float32)
    u = a.view(np.uint32).astype(np.uint64)
    r = ((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16
    out = r.astype(np.uint32).view(np.float32).copy()
    nan = np.isnan(a)
    out[nan] = a[nan]
    return out


def rne_exact(d):
    """One float64 rounded straight to bfloat16 (to nearest even), exactly,
    with fractions: the oracle of the float64 path."""
    if math.isnan(d) or math.isinf(d) or d == 0.0:
        return d
    q = Fraction(abs(d))
    e = q.numerator.bit_length() - q.denominator.bit_length()
    if Fraction(2) ** e > q:
        e -= 1
    ulp = Fraction(2) ** (max(e, -126) - 7)
    n = q / ulp
    whole = n.numerator // n.denominator
    rest = n - whole
    if rest > Fraction(1, 2) or (rest == Fraction(1, 2) and whole % 2):
        whole += 1
    value = whole * ulp
    if value >= Fraction(2) ** 128 - Fraction(2) ** 119:   # past the max
        return math.copysign(math.inf, d)
    return math.copysign(float(value), d)


def widen(bits):
    return (np.asarray(bits, np.uint16).astype(np.uint32) << 16).view(
        np.float32)


def bf16_net_weights_match(net):
    """Every bfloat16 weight of ``net`` holds rne_f32 of nothing else than
    a bfloat16 value (data() widens exactly)."""
    for p in net.collect_params().values():
        if p.dtype == "bfloat16":
            v = p.data()
            np.testing.assert_array_equal(rne_f32(v), v)


# ---------------------------------------------------------------------------
# Rounding


@settings(max_examples=300)
@given(st.lists(st.integers(0, 2 ** 32 - 1), min_size=1, max_size=64))
def test_rounding_from_float32_is_round_to_nearest_even(patterns):
    a = np.array(patterns, np.uint32).view(np.float32)
    got = widen(_plan.round_bf16(a))
    want = rne_f32(a)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(a))
    fin = ~np.isnan(a)
    np.testing.assert_array_equal(got[fin].view(np.uint32),
                                  want[fin].view(np.uint32))


@settings(max_examples=300)
@given(st.lists(st.floats(allow_nan=False, width=64), min_size=1,
                max_size=32))
def test_rounding_from_float64_has_no_double_rounding(values):
    got = widen(_plan.round_bf16(np.array(values, np.float64)))
    want = np.array([rne_exact(v) for v in values], np.float64)
    np.testing.assert_array_equal(got.astype(np.float64), want)


def test_rounding_special_values():
    big = np.float32(3.3895314e38)           # the largest bfloat16
    vals = np.array([np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, big,
                     np.finfo(np.float32).max, 1.0 + 2 ** -8,
                     1.0 + 3 * 2 ** -8, 2 ** -133, 2 ** -140], np.float32)
    bits = _plan.round_bf16(vals)
    got = widen(bits)
    assert np.isnan(got[0]) and np.isnan(got[1])
    assert np.signbit(got[1]) and not np.signbit(got[0])
    assert bits[0] & 0x0040                    # quiet NaN
    assert got[2] == np.inf and got[3] == -np.inf
    assert got[4] == 0 and not np.signbit(got[4])
    assert got[5] == 0 and np.signbit(got[5])
    assert got[6] == big                       # representable: kept
    assert got[7] == np.inf                    # past the largest: inf
    assert got[8] == 1.0                       # tie: to even (down)
    assert got[9] == 1.0 + 2 ** -6             # tie: to even (up)
    assert got[10] == 2 ** -133                # subnormal kept
    assert got[11] == 0.0                      # below half the smallest


def test_rounding_agrees_with_ml_dtypes():
    ml = pytest.importorskip("ml_dtypes", reason="ml_dtypes is optional")
    a = np.random.default_rng(0).standard_normal(10000).astype(np.float32)
    a[::97] *= 1e30
    np.testing.assert_array_equal(_plan.round_bf16(a),
                                  a.astype(ml.bfloat16).view(np.uint16))


# ---------------------------------------------------------------------------
# The kernels, through their test twin


def kernel_ref(x, w_rounded, b, act):
    z = x.astype(np.float64) @ w_rounded.astype(np.float64)
    mag = np.abs(x.astype(np.float64)) @ np.abs(w_rounded.astype(np.float64))
    if b is not None:
        z = z + b
        mag = mag + np.abs(b)
    return z, mag


@settings(max_examples=40, suppress_health_check=PER_TEST)
@given(n=st.integers(1, 30), K=st.integers(1, 70), M=st.integers(1, 90),
       bias=st.booleans(), relu=st.booleans(), seed=st.integers(0, 99))
def test_kernel_matches_numpy(level, n, K, M, bias, relu, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, K)).astype(np.float32)
    w = rng.standard_normal((K, M)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32) if bias else None
    bits = _plan.round_bf16(w)
    y = _plan.bf16_dense_kernel(x, bits, b, 1 if relu else 0, "convert")
    z, mag = kernel_ref(x, widen(bits), b, None)
    if relu:
        z = np.maximum(z, 0)
    # the weights enter exactly: float32 accumulation only
    assert np.all(np.abs(y - z) <= (K + 2) * 2 * U24 * mag + 1e-30)


def test_pack_layout():
    rng = np.random.default_rng(1)
    for K, M in [(1, 1), (5, 3), (8, 17), (33, 40)]:
        bits = rng.integers(0, 2 ** 16, (K, M), dtype=np.uint16)
        pk, nr = _plan.bf16_pack(bits)
        assert nr == _plan.packed_tile()[1]       # 2 float32 vectors
        KP = (K + 1) // 2
        npan = (M + nr - 1) // nr
        pad = np.zeros((2 * KP, npan * nr), np.uint32)
        pad[:K, :M] = bits
        want = (pad[0::2] | (pad[1::2] << 16))          # (KP, npan*nr)
        want = want.reshape(KP, npan, nr).transpose(1, 0, 2).ravel()
        np.testing.assert_array_equal(pk, want)


@settings(max_examples=30, suppress_health_check=PER_TEST)
@given(n=st.integers(1, 40), K=st.integers(1, 300), M=st.integers(1, 50),
       seed=st.integers(0, 99))
def test_dot_product_emulation_matches_numpy(avx2, n, K, M, seed):
    """The vdpbf16ps kernel's body, at AVX2 with the instruction emulated:
    x rounded to bfloat16 in blocks of 128 pairs, pairs multiplied."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, K)).astype(np.float32)
    w = rng.standard_normal((K, M)).astype(np.float32)
    b = rng.standard_normal(M).astype(np.float32)
    bits = _plan.round_bf16(w)
    y = _plan.bf16_dense_kernel(x, bits, b, 0, "emulated")
    z, mag = kernel_ref(rne_f32(x), widen(bits), b, None)
    assert np.all(np.abs(y - z) <= (K + 2) * 2 * U24 * mag + 1e-30)
    # and against the float32 x: within the rounding of x
    z32, mag32 = kernel_ref(x, widen(bits), b, None)
    assert np.all(np.abs(y - z32) <= (U8 + (K + 2) * 2 * U24) * mag32)


def test_dot_product_instruction(isa_restore):
    require_isa(4)
    rng = np.random.default_rng(2)
    x = rng.standard_normal((37, 301)).astype(np.float32)
    bits = _plan.round_bf16(rng.standard_normal((301, 75)))
    try:
        y = _plan.bf16_dense_kernel(x, bits, None, 0, "dot")
    except ValueError:
        pytest.skip("this CPU has AVX-512 but not AVX512-BF16 (vdpbf16ps)")
    z, mag = kernel_ref(rne_f32(x), widen(bits), None, None)
    assert np.all(np.abs(y - z) <= (301 + 2) * 2 * U24 * mag + 1e-30)


def test_kernel_twin_refuses_missing_routes(isa_restore):
    require_isa(0)
    bits = _plan.round_bf16(np.ones((3, 4)))
    with pytest.raises(ValueError, match="AVX2 level only"):
        _plan.bf16_dense_kernel(np.ones((1, 3)), bits, None, 0, "emulated")
    with pytest.raises(ValueError, match="vdpbf16ps"):
        _plan.bf16_dense_kernel(np.ones((1, 3)), bits, None, 0, "dot")
    with pytest.raises(ValueError, match="route"):
        _plan.bf16_dense_kernel(np.ones((1, 3)), bits, None, 0, "fast")


# ---------------------------------------------------------------------------
# Networks: every route, level and thread count against NumPy


def dense_net(widths, acts, in_units=None):
    net = nn.Sequential()
    for i, (units, act) in enumerate(zip(widths, acts)):
        net.add(nn.Dense(units, activation=act,
                         in_units=in_units if i == 0 and in_units else 0))
    return net


def randomize_biases(net, rng):
    for p in net.collect_params().values():
        if p.name.endswith("bias"):
            p.set_data(rng.uniform(-0.5, 0.5, p.shape))


def unrounded_bound(layers, x):
    """(reference, tolerance) of a Dense stack against its float32 weights
    *before* rounding: each layer's weights rounded (2**-8 relative), its
    sums in float32, earlier errors carried through |W| (relu, identity:
    slope <= 1)."""
    y = np.asarray(x, np.float64)
    tol = np.zeros(y.shape)
    for w, b, act in layers:
        w = w.astype(np.float64)
        z = y @ w.T + b
        mag = np.abs(y) @ np.abs(w).T + np.abs(b)
        k = w.shape[1]
        tol = (1 + U8) * tol @ np.abs(w).T + (U8 + 4 * U24 * (k + 2)) * mag \
            + 1e-30
        y = np.maximum(z, 0) if act == "relu" else z
    return y, tol


@pytest.mark.parametrize("threads", [1, 2])
@settings(max_examples=25, suppress_health_check=PER_TEST)
@given(batch=st.sampled_from([1, 2, 3, 7, 8, 64, 200]),
       in_units=st.integers(1, 300),
       widths=st.lists(st.sampled_from([1, 5, 16, 17, 64, 100, 300]),
                       min_size=1, max_size=3),
       seed=st.integers(0, 999))
def test_network_matches_numpy(level, ref, threads, batch, in_units,
                               widths, seed):
    old = fl.get_num_threads()
    fl.set_num_threads(threads)
    # split small batches across threads from the smallest sizes on
    tuning = _plan.set_tuning(parallel_macs=0)
    try:
        rng = np.random.default_rng(seed)
        acts = ["relu"] * (len(widths) - 1) + [None]
        net = dense_net(widths, acts)
        net.initialize(init=init.Xavier())
        x = rng.standard_normal((batch, in_units)).astype(np.float32)
        net(x)
        randomize_biases(net, rng)
        layers = [(b.weight.data().copy(), b.bias.data().copy(), b.act)
                  for b in net]
        net.cast("bfloat16")
        bf16_net_weights_match(net)
        y = net(x)
        assert y.dtype == np.float32
        # the rounded weights' float64 reference, float32 bound
        want, tol = ref.forward(net, x)
        ref.close(y, want, tol, "bfloat16 net vs its rounded weights")
        # the float32 weights' reference, plus their rounding
        want, tol = unrounded_bound(layers, x)
        ref.close(y, want, tol, "bfloat16 net vs float32 weights")
    finally:
        fl.set_num_threads(old)
        _plan.set_tuning(*tuning)


def test_threads_split_panels_and_agree_bit_for_bit(isa_restore):
    """A batch of one through big layers (C5's shape, smaller) splits the
    panels across two threads; each panel is the same kernel call, so the
    result is the one-thread result exactly."""
    rng = np.random.default_rng(3)
    net = dense_net([2048, 512], ["relu", None])
    net.initialize()
    x = rng.standard_normal((1, 512)).astype(np.float32)
    net(x)
    net.cast("bfloat16")
    old = fl.get_num_threads()
    try:
        fl.set_num_threads(1)
        y1 = net(x)
        fl.set_num_threads(2)
        y2 = net(x)
        for b in (2, 300):
            xb = rng.standard_normal((b, 512)).astype(np.float32)
            fl.set_num_threads(1)
            z1 = net(xb)
            fl.set_num_threads(2)
            np.testing.assert_array_equal(net(xb), z1)
    finally:
        fl.set_num_threads(old)
    np.testing.assert_array_equal(y1, y2)


def test_dot_rows_threshold_is_a_setting(isa_restore):
    old = _plan.set_bf16_tuning(dot_rows=-1)
    try:
        assert "vdpbf16ps" not in _plan.bf16_kernel()
    finally:
        _plan.set_bf16_tuning(dot_rows=old)
    assert _plan.set_bf16_tuning() == old


# ---------------------------------------------------------------------------
# Casting, the parameters' dtype, data() and set_data


def test_cast_rounds_weights_and_keeps_the_rest_float32():
    net = dense_net([8, 3], ["relu", None], in_units=5)
    net.initialize()
    w32 = net[0].weight.data().copy()
    net.cast("bfloat16")
    kinds = {p.name: p.dtype for p in net.collect_params().values()}
    assert kinds[net[0].weight.name] == "bfloat16"
    assert kinds[net[0].weight.name] is fl.bfloat16
    assert kinds[net[0].bias.name] == np.float32
    np.testing.assert_array_equal(net[0].weight.data(), rne_f32(w32))
    # back to float32: exact
    net.cast("float32")
    assert net[0].weight.dtype == np.float32
    np.testing.assert_array_equal(net[0].weight.data(), rne_f32(w32))
    net.cast("bfloat16")
    net.cast("float64")
    assert net[0].weight.dtype == np.float64
    np.testing.assert_array_equal(net[0].weight.data(), rne_f32(w32))
    assert net(np.ones((1, 5))).dtype == np.float64


def test_cast_of_a_deferred_network_applies_when_created():
    """Gluon casts deferred parameters too: they are created bfloat16, and
    hold the float32 initialization rounded (same seed, same values)."""
    x = np.random.default_rng(0).standard_normal((2, 20)).astype(
        np.float32)
    fl.random.seed(7)
    a = dense_net([30, 4], ["relu", None])
    a.initialize()
    a.cast("bfloat16")
    assert a[0].weight.shape == (30, -1)
    assert a[0].weight.state == "deferred"
    assert a[0].weight.dtype == "bfloat16"
    ya = a(x)
    fl.random.seed(7)
    b = dense_net([30, 4], ["relu", None])
    b.initialize()
    b(x)
    np.testing.assert_array_equal(a[0].weight.data(),
                                  rne_f32(b[0].weight.data()))
    b.cast("bfloat16")
    np.testing.assert_array_equal(b(x), ya)
    # unset (never initialized) parameters too
    c = dense_net([3], [None])
    c.cast("bfloat16")
    assert c[0].weight.dtype == "bfloat16" and c[0].weight.state == "unset"
    c.initialize()
    assert c(x).shape == (2, 3)


def test_dense_dtype_argument():
    d = nn.Dense(4, in_units=3, dtype="bfloat16")
    assert d.weight.dtype == "bfloat16" and d.bias.dtype == np.float32
    d.initialize(init=init.Constant(0.1))
    np.testing.assert_array_equal(d.weight.data(), rne_f32(np.full((4, 3),
                                                                   0.1)))
    assert "bfloat16" in repr(d)
    c = nn.Conv2D(2, 3, in_channels=1, dtype="bfloat16")
    assert c.weight.dtype == "bfloat16" and c.bias.dtype == np.float32
    assert repr(c).endswith(", bfloat16)")


def test_parameter_api():
    p = fl.Parameter("w", shape=(2, 3), dtype="bfloat16")
    assert repr(p) == "Parameter w (shape=(2, 3), dtype=bfloat16)"
    assert p.dtype.name == "bfloat16" and p.dtype.itemsize == 2
    assert str(p.dtype) == "bfloat16"
    p.initialize(init=init.Constant(1.0))
    v = p.data()
    assert v.dtype == np.float32 and not v.flags.writeable
    with pytest.raises(ValueError, match="read-only"):
        v[0, 0] = 2.0
    # set_data rounds (float32 and float64 sources)
    p.set_data(np.full((2, 3), 1.0 + 2 ** -8 + 2 ** -20, np.float32))
    np.testing.assert_array_equal(p.data(), np.full((2, 3), 1.0 + 2 ** -7))
    p.set_data(np.full((2, 3), 1.0 + 2 ** -8, np.float64))   # tie: even
    np.testing.assert_array_equal(p.data(), np.ones((2, 3)))
    p.set_data([[1, 2, 3], [4, 5, 257]])                      # integers
    np.testing.assert_array_equal(p.data(), [[1, 2, 3], [4, 5, 256]])
    assert p._storage_array().dtype == np.uint16
    with pytest.raises(fl.ShapeError):
        p.set_data(np.ones((3, 2)))
    np.testing.assert_array_equal(p.data(), [[1, 2, 3], [4, 5, 256]])
    with pytest.raises(TypeError, match="bfloat16"):
        fl.Parameter("q", dtype="int8")


def test_set_data_takes_ml_dtypes_bfloat16_exactly():
    ml = pytest.importorskip("ml_dtypes", reason="ml_dtypes is optional")
    src = np.array([[1.5, -2.25, 3e38]], np.float32).astype(ml.bfloat16)
    p = fl.Parameter("w", shape=(1, 3), dtype=ml.bfloat16)
    assert p.dtype == "bfloat16" and p.dtype == ml.bfloat16
    p.set_data(src)
    np.testing.assert_array_equal(p._storage_array(), src.view(np.uint16))
    q = fl.Parameter("v", shape=(1, 3))          # float32 takes it widened
    q.set_data(src)
    np.testing.assert_array_equal(q.data(), src.astype(np.float32))


def test_writes_reach_the_next_forward():
    """set_data, initialize and load_parameters rebuild the plans reading a
    bfloat16 weight (which run on a copy in the kernels' layout)."""
    rng = np.random.default_rng(4)
    net = dense_net([70, 3], ["relu", None], in_units=40)
    net.initialize()
    net.cast("bfloat16")
    x = rng.standard_normal((5, 40)).astype(np.float32)
    for rows in (1, 5):
        y0 = net(x[:rows])
        w = rng.standard_normal((70, 40))
        net[0].weight.set_data(w)
        want = np.maximum(x[:rows] @ rne_f32(w).T.astype(np.float64)
                          + net[0].bias.data(), 0) @ \
            net[1].weight.data().T.astype(np.float64) + net[1].bias.data()
        np.testing.assert_allclose(net(x[:rows]), want, rtol=1e-5,
                                   atol=1e-5)
        assert not np.allclose(net(x[:rows]), y0)
    net.initialize(init=init.Zero(), force_reinit=True)
    np.testing.assert_array_equal(net(x), np.zeros((5, 3)))


def test_nan_and_inf_weights_propagate_as_in_float32():
    net = dense_net([6, 2], ["relu", None], in_units=4)
    net.initialize()
    w = net[0].weight.data().astype(np.float64)
    w[1, 2] = np.nan
    w[3, 0] = np.inf
    w[4, 1] = 1e39          # float64: past the largest bfloat16 -> inf
    with np.errstate(over="ignore"):      # float32 storage: inf too
        net[0].weight.set_data(w)
    f32 = copy.deepcopy(net)
    net.cast("bfloat16")
    v = net[0].weight.data()
    assert np.isnan(v[1, 2]) and v[3, 0] == np.inf and v[4, 1] == np.inf
    x = np.abs(np.random.default_rng(5).standard_normal((3, 4))).astype(
        np.float32) + 0.1
    y, y32 = net(x), f32(x)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(y32))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(y32))


def test_mixing_bfloat16_with_float64_is_refused(ref):
    net = dense_net([4], [None], in_units=3)
    net.initialize()
    net.cast("float64")
    net[0].weight.cast("bfloat16")
    before = ref.snapshot(net)
    with pytest.raises(TypeError, match="mix dtypes.*bfloat16"):
        net(np.ones((1, 3)))
    assert ref.snapshot(net) == before
    net.cast("bfloat16")
    assert net(np.ones((1, 3))).dtype == np.float32


def test_a_bfloat16_bias_is_refused_naming_it(ref):
    net = dense_net([4], [None], in_units=3)
    net.initialize()
    net[0].bias.cast("bfloat16")
    before = ref.snapshot(net)
    with pytest.raises(TypeError, match=f"{net[0].bias.name} is bfloat16"):
        net(np.ones((1, 3)))
    assert ref.snapshot(net) == before
    net[0].bias.cast("float32")
    assert net(np.ones((1, 3))).shape == (1, 4)


class FailingParameter(fl.Parameter):
    """A parameter whose conversion runs out of memory."""

    def cast(self, dtype):
        raise MemoryError("no memory for the converted copy")


class WithFailing(nn.HybridBlock):
    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.scale = FailingParameter("scale", shape=(1,))

    def hybrid_forward(self, F, x, scale):
        return x


def test_cast_that_fails_changes_nothing(ref):
    net = dense_net([8, 3], ["relu", None], in_units=5)
    net.initialize()
    before = ref.snapshot(net)
    with pytest.raises(TypeError, match="float32, float64 or bfloat16"):
        net.cast("int8")
    assert ref.snapshot(net) == before
    net.add(WithFailing())          # cast last, after the Dense weights
    net[2].scale.initialize()
    before = ref.snapshot(net)
    with pytest.raises(MemoryError):
        net.cast("bfloat16")
    assert ref.snapshot(net) == before
    assert all(p.dtype == np.float32 for p in net.collect_params().values())


# ---------------------------------------------------------------------------
# Persistence


@pytest.fixture
def bf16_net():
    rng = np.random.default_rng(6)
    net = dense_net([33, 5], ["relu", None], in_units=12)
    net.initialize()
    net.build((None, 12))
    randomize_biases(net, rng)
    net.cast("bfloat16")
    return net


def test_save_load_both_ways(bf16_net, tmp_path):
    x = np.random.default_rng(7).standard_normal((4, 12)).astype(np.float32)
    y = bf16_net(x)
    path = tmp_path / "bf16.npz"
    bf16_net.save_parameters(path)
    with np.load(path) as f:
        assert f["0.weight"].dtype == np.float32      # the exact values
        np.testing.assert_array_equal(f["0.weight"],
                                      bf16_net[0].weight.data())
    # into a bfloat16 network: the same bits
    again = dense_net([33, 5], ["relu", None])
    again.cast("bfloat16")
    again.load_parameters(path)
    np.testing.assert_array_equal(again[0].weight._storage_array(),
                                  bf16_net[0].weight._storage_array())
    np.testing.assert_array_equal(again(x), y)
    # into a float32 network: the same values
    f32 = dense_net([33, 5], ["relu", None])
    f32.load_parameters(path)
    assert f32[0].weight.dtype == np.float32
    np.testing.assert_array_equal(f32[0].weight.data(),
                                  bf16_net[0].weight.data())
    np.testing.assert_allclose(f32(x), y, rtol=1e-5, atol=1e-6)
    # a float32 file into a bfloat16 network: rounded
    w = np.random.default_rng(8).standard_normal((33, 12)).astype(
        np.float32)
    f32[0].weight.set_data(w)
    f32.save_parameters(tmp_path / "f32.npz")
    bf16_net.load_parameters(tmp_path / "f32.npz")
    assert bf16_net[0].weight.dtype == "bfloat16"
    np.testing.assert_array_equal(bf16_net[0].weight.data(), rne_f32(w))
    # dtype_source='saved': the parameter takes the file's float32
    bf16_net.load_parameters(tmp_path / "f32.npz", cast_dtype=True,
                             dtype_source="saved")
    assert bf16_net[0].weight.dtype == np.float32
    np.testing.assert_array_equal(bf16_net[0].weight.data(), w)


def test_load_failure_leaves_a_bfloat16_net_unchanged(bf16_net, ref,
                                                      tmp_path):
    bad = dense_net([33, 6], ["relu", None], in_units=12)
    bad.initialize()
    bad(np.ones((1, 12)))
    bad.save_parameters(tmp_path / "bad.npz")
    before = ref.snapshot(bf16_net)
    x = np.ones((2, 12), np.float32)
    y = bf16_net(x)
    with pytest.raises(fl.ParameterShapeError):
        bf16_net.load_parameters(tmp_path / "bad.npz")
    assert ref.snapshot(bf16_net) == before
    np.testing.assert_array_equal(bf16_net(x), y)


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_pickle_and_deepcopy_in_every_state(bf16_net, protocol):
    x = np.random.default_rng(9).standard_normal((3, 12)).astype(np.float32)
    y = bf16_net(x)
    for clone in (pickle.loads(pickle.dumps(bf16_net, protocol=protocol)),
                  copy.deepcopy(bf16_net)):
        assert clone[0].weight.dtype == "bfloat16"
        assert clone[0].bias.dtype == np.float32
        np.testing.assert_array_equal(clone(x), y)
        clone[0].weight.set_data(np.zeros((33, 12)))
        np.testing.assert_array_equal(bf16_net(x), y)   # independent
    deferred = dense_net([4], [None])
    deferred.initialize()
    deferred.cast("bfloat16")
    for clone in (pickle.loads(pickle.dumps(deferred, protocol=protocol)),
                  copy.deepcopy(deferred)):
        assert clone[0].weight.state == "deferred"
        assert clone[0].weight.dtype == "bfloat16"
        assert clone(np.ones((1, 7))).shape == (1, 4)
        assert clone[0].weight._storage_array().dtype == np.uint16
    assert pickle.loads(pickle.dumps(fl.bfloat16)) is fl.bfloat16


def test_mxnet_bfloat16_records_load_exactly():
    from fastlazy.mxnet.format import read_params
    from test_mxnet_format import container, record
    bits = _plan.round_bf16(np.random.default_rng(10).standard_normal(6))
    data = container([record(bits.reshape(2, 3), flag=12)], ["w"])
    arrays = read_params(data)
    assert arrays["w"].dtype == np.float32
    np.testing.assert_array_equal(arrays["w"], widen(bits).reshape(2, 3))


# ---------------------------------------------------------------------------
# Reports


def test_repr_summary_and_show_config(bf16_net, capsys):
    assert "Dense(12 -> 33, Activation(relu), bfloat16)" in repr(bf16_net)
    assert "dtype=bfloat16" in repr(bf16_net.collect_params())
    bf16_net.summary((None, 12))
    out = capsys.readouterr().out
    assert "bfloat16 2 (561 values, 1122 bytes)" in out
    assert "float32 2 (38 values, 152 bytes)" in out
    config = fl.show_config()
    assert "bfloat16" in config and "float32 FMA" in config["bfloat16"]


# ---------------------------------------------------------------------------
# Convolutions, graphs, exported graphs, the model zoo


def rounded_twin(net):
    """A float32 copy of a bfloat16 network: the same (rounded) values,
    computed by the float32 kernels."""
    twin = copy.deepcopy(net)
    twin.cast("float32")
    return twin


def lenet():
    net = nn.Sequential()
    net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Conv2D(16, kernel_size=5, activation="sigmoid"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation="sigmoid"),
            nn.Dense(84, activation="sigmoid"), nn.Dense(10))
    return net


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_net(threads, two_threads):
    fl.set_num_threads(threads)
    rng = np.random.default_rng(11)
    net = lenet()
    net.initialize(init=init.Xavier())
    x = rng.standard_normal((5, 1, 28, 28)).astype(np.float32)
    y32 = net(x)
    net.cast("bfloat16")
    assert net[0].weight.dtype == "bfloat16"
    y = net(x)
    np.testing.assert_allclose(y, rounded_twin(net)(x), rtol=1e-5,
                               atol=1e-6)
    # the weights' rounding moves LeNet's outputs by well under 1%
    assert np.abs(y - y32).max() < 1e-2 * np.abs(y32).max()


def test_depthwise_and_batchnorm_conv(ref):
    rng = np.random.default_rng(12)
    net = nn.Sequential()
    net.add(nn.Conv2D(8, 3, padding=1), nn.BatchNorm(), nn.Activation("relu"),
            nn.Conv2D(8, 3, padding=1, groups=8), nn.BatchNorm(),
            nn.Conv2D(4, 1), nn.GlobalAvgPool2D(), nn.Dense(3))
    net.initialize(init=init.Xavier())
    x = rng.standard_normal((3, 2, 12, 12)).astype(np.float32)
    net(x)
    for p in net.collect_params().values():
        if "running" in p.name or "gamma" in p.name or "beta" in p.name:
            p.set_data(rng.uniform(0.5, 1.5, p.shape))
    net.cast("bfloat16")
    names = {p.name: str(p.dtype) for p in net.collect_params().values()}
    assert sum(v == "bfloat16" for v in names.values()) == 4
    assert all(v == "float32" for k, v in names.items()
               if "batchnorm" in k)
    np.testing.assert_allclose(net(x), rounded_twin(net)(x), rtol=1e-5,
                               atol=1e-6)


@pytest.mark.parametrize("batch", [1, 2, 40])
def test_dense_with_folded_batchnorm(batch, two_threads):
    """A BatchNorm over a Dense layer's outputs runs in the bfloat16
    kernel's output pass (on every panel the threads split)."""
    rng = np.random.default_rng(15)
    net = nn.Sequential()
    net.add(nn.Dense(300), nn.BatchNorm(), nn.Activation("relu"),
            nn.Dense(7))
    net.initialize(init=init.Xavier())
    x = rng.standard_normal((batch, 50)).astype(np.float32)
    net(x)
    for p in net[1].collect_params().values():
        p.set_data(rng.uniform(0.5, 1.5, p.shape))
    net.cast("bfloat16")
    assert [type(s).__name__ for s in
            fl._compile.fused_steps(net, x.shape)] == ["DenseStep"] * 2
    tuning = _plan.set_tuning(parallel_macs=0)     # split even this one
    try:
        np.testing.assert_allclose(net(x), rounded_twin(net)(x), rtol=1e-5,
                                   atol=1e-5)
    finally:
        _plan.set_tuning(*tuning)


class Residual(nn.HybridBlock):
    def __init__(self, units, **kwargs):
        super().__init__(**kwargs)
        with self.name_scope():
            self.dense1 = nn.Dense(units)
            self.dense2 = nn.Dense(units)

    def hybrid_forward(self, F, x):
        return x + F.relu(self.dense2(F.relu(self.dense1(x))))


@pytest.mark.parametrize("batch", [1, 9, 130])
def test_graph_net(batch):
    rng = np.random.default_rng(13)
    net = nn.HybridSequential()
    net.add(nn.Dense(64), Residual(64), Residual(64), nn.Dense(5))
    net.initialize()
    x = rng.standard_normal((batch, 30)).astype(np.float32)
    net(x)
    net.cast("bfloat16")
    assert "compiled: one plan" in fl.explain(net, x, file=io.StringIO())
    np.testing.assert_allclose(net(x), rounded_twin(net)(x), rtol=1e-5,
                               atol=1e-6)


def test_exported_graph():
    net = fl.load_mxnet_export(GRAPHS / "concat_cnn")
    data = np.load(GRAPHS / "concat_cnn-export.io.npz")
    x = data[data.files[0]]
    net.cast("bfloat16")
    kinds = [str(p.dtype) for p in net.collect_params().values()]
    assert "bfloat16" in kinds and "float32" in kinds
    for key, p in net._reg_params.items():
        if p.dtype == "bfloat16":
            assert key.endswith("weight")
    np.testing.assert_allclose(net(x), rounded_twin(net)(x), rtol=1e-5,
                               atol=1e-6)


def test_model_zoo_net():
    from fastlazy.model_zoo import vision
    rng = np.random.default_rng(14)
    net = vision.get_model("mobilenetv2_0.25", classes=10)
    net.initialize(init=init.Xavier())
    x = rng.standard_normal((2, 3, 32, 32)).astype(np.float32)
    y32 = net(x)
    net.cast("bfloat16")
    y = net(x)
    np.testing.assert_allclose(y, rounded_twin(net)(x), rtol=1e-4,
                               atol=1e-5 * np.abs(y32).max())
    assert np.argmax(y, 1).tolist() == np.argmax(y32, 1).tolist()


# ---------------------------------------------------------------------------
# The row copy: 1-2 rows through a layer with few outputs (gemm_bf16_rows)

ROW_SHAPES = [(1, 1), (1, 7), (3, 5), (7, 10), (16, 9), (17, 13),
              (31, 15), (64, 10), (65, 16), (256, 10), (257, 3), (300, 12)]


def rows_layout_ref(bits):
    """dense_bf16_dot.inc.h's layout from the (K, M) patterns, in NumPy."""
    K, M = bits.shape
    nr = _plan.packed_tile()[1]
    L = nr // 2
    nb = (K + nr - 1) // nr
    pad = np.zeros((nb * nr, M), np.uint32)
    pad[:K] = bits
    blocks = pad.reshape(nb, 2, L, M)             # (q, lo/hi, j, m)
    words = blocks[:, 0] | (blocks[:, 1] << 16)   # (q, j, m)
    return words.transpose(0, 2, 1)               # (q, m, j)


def row_copy_expected(K, M):
    """float32's dot-kernel rule (_dot_wins) at the pair panels' vector
    width: which layers keep a row copy."""
    lanes = _plan.packed_tile()[1] // 2
    return M < lanes or (M < 2 * lanes and M % lanes <= lanes // 2
                         and K >= 64)


def test_row_copy_layout(level):
    rng = np.random.default_rng(11)
    for K, M in ROW_SHAPES:
        bits = rng.integers(0, 2 ** 16, (K, M), dtype=np.uint16)
        np.testing.assert_array_equal(_plan.bf16_pack_rows(bits),
                                      rows_layout_ref(bits))


@pytest.mark.parametrize("act", [0, 1, 2, 3, 8],
                         ids=["none", "relu", "sigmoid", "tanh", "relu6"])
def test_row_kernel_matches_numpy_and_the_panels(level, act):
    """Every odd shape (M = 1, below a vector, 10, between one and two
    vectors; K = 1, odd, past a block), 1 and 2 rows, with and without a
    bias: within float32 summation of the exact weights of NumPy's float64
    product, and of the panel kernel."""
    rng = np.random.default_rng(12 + act)
    f = {0: lambda z: z, 1: lambda z: np.maximum(z, 0),
         2: lambda z: 1 / (1 + np.exp(-z)), 3: np.tanh,
         8: lambda z: np.clip(z, 0, 6)}[act]
    for K, M in ROW_SHAPES:
        for n in (1, 2):
            for bias in (False, True):
                x = rng.standard_normal((n, K)).astype(np.float32)
                w = rng.standard_normal((K, M)).astype(np.float32)
                b = rng.standard_normal(M).astype(np.float32) \
                    if bias else None
                bits = _plan.round_bf16(w)
                y = _plan.bf16_dense_kernel(x, bits, b, act, "rows")
                panels = _plan.bf16_dense_kernel(x, bits, b, act, "convert")
                z, mag = kernel_ref(x, widen(bits), b, None)
                bound = (K + 2) * 2 * U24 * mag + 1e-30
                if act in (0, 1, 8):
                    assert np.all(np.abs(y - f(z)) <= bound), (K, M, n)
                    assert np.all(np.abs(y - panels) <= 2 * bound)
                else:      # the activations' own float32 error on top
                    assert np.all(np.abs(y - f(z)) <= bound + 1e-6)
                    assert np.all(np.abs(y - panels) <= 2 * bound + 1e-6)


def test_row_kernel_nan_and_inf_propagate_as_in_float32(level):
    rng = np.random.default_rng(13)
    for K, M in [(1, 1), (17, 10), (256, 10), (40, 3)]:
        x = np.abs(rng.standard_normal((2, K))).astype(np.float32) + 0.1
        w = np.abs(rng.standard_normal((K, M))).astype(np.float32)
        w[K // 2, 0] = np.nan
        w[K - 1, M - 1] = np.inf
        if M > 2:
            x[1, 0] = np.inf
        bits = _plan.round_bf16(w)
        for n in (1, 2):
            y = _plan.bf16_dense_kernel(x[:n], bits, None, 0, "rows")
            with np.errstate(invalid="ignore"):
                y32 = x[:n].astype(np.float32) @ widen(bits)
            np.testing.assert_array_equal(np.isnan(y), np.isnan(y32))
            np.testing.assert_array_equal(np.isinf(y), np.isinf(y32))
            np.testing.assert_array_equal(np.sign(y[np.isinf(y)]),
                                          np.sign(y32[np.isinf(y32)]))


def textbook(rng, units=(256, 10), in_units=20):
    net = dense_net(list(units), ["relu"] + [None] * (len(units) - 1),
                    in_units=in_units)
    net.initialize()
    randomize_biases(net, rng)
    return net


def test_row_route_inside_networks_matches_the_panels(level):
    """The textbook network at 1, 2 and 3 rows (3: the panels), the route
    on and off, folded BatchNorm included: the same results within float32
    summation, and a layer with many outputs keeps no row copy."""
    rng = np.random.default_rng(14)
    net = textbook(rng)
    net.cast("bfloat16")
    x = rng.standard_normal((3, 20)).astype(np.float32)
    want = {n: net(x[:n]) for n in (1, 2, 3)}
    old = _plan.set_bf16_rows(False)
    try:
        panels = {n: net(x[:n]) for n in (1, 2, 3)}
    finally:
        _plan.set_bf16_rows(old)
    for n in (1, 2, 3):
        np.testing.assert_allclose(want[n], panels[n], rtol=1e-5,
                                   atol=1e-5)
    np.testing.assert_array_equal(net(x[:3])[:2], panels[3][:2])
    assert (_plan.bf16_copies(net[1].weight)[1] is not None) == \
        row_copy_expected(256, 10)
    assert _plan.bf16_copies(net[0].weight)[1] is None
    # the 256 -> 10 layer's rows through NumPy
    h = np.maximum(x @ net[0].weight.data().T.astype(np.float64)
                   + net[0].bias.data(), 0)
    ref = h @ net[1].weight.data().T.astype(np.float64) + net[1].bias.data()
    for n in (1, 2):
        np.testing.assert_allclose(want[n], ref[:n], rtol=1e-5, atol=1e-5)


def test_row_route_with_batchnorm():
    rng = np.random.default_rng(15)
    net = nn.Sequential()
    net.add(nn.Dense(10, in_units=64), nn.BatchNorm(in_channels=10))
    net.initialize()
    bn = net[1]
    for p in (bn.gamma, bn.beta, bn.running_mean):
        p.set_data(rng.standard_normal(10))
    bn.running_var.set_data(rng.uniform(0.5, 2, 10))
    randomize_biases(net, rng)
    f32 = copy.deepcopy(net)
    net.cast("bfloat16")
    x = rng.standard_normal((2, 64)).astype(np.float32)
    f32[0].weight.set_data(net[0].weight.data())
    for n in (1, 2):
        np.testing.assert_allclose(net(x[:n]), f32(x[:n]), rtol=1e-5,
                                   atol=1e-5)
    assert (_plan.bf16_copies(net[0].weight)[1] is not None) == \
        row_copy_expected(64, 10)


def test_row_copy_follows_every_write(tmp_path, level):
    """set_data, initialize, load_parameters and a cast back and forth
    each give the row copy (and the panels) of the new values."""
    rng = np.random.default_rng(16)
    net = textbook(rng)
    net.cast("bfloat16")
    x = rng.standard_normal((1, 20)).astype(np.float32)
    w1 = net[1].weight

    def check():
        y = net(x)
        pk, rows, current = _plan.bf16_copies(w1)
        assert current
        bits = _plan.round_bf16(w1.data().T)
        if row_copy_expected(256, 10):
            np.testing.assert_array_equal(rows, rows_layout_ref(bits))
        else:
            assert rows is None
        np.testing.assert_array_equal(pk, _plan.bf16_pack(bits)[0])
        h = np.maximum(x @ net[0].weight.data().T.astype(np.float64)
                       + net[0].bias.data(), 0)
        ref = h @ w1.data().T.astype(np.float64) + net[1].bias.data()
        np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)
        return y

    y0 = check()
    w1.set_data(rng.standard_normal((10, 256)))
    y1 = check()
    assert not np.allclose(y0, y1)
    net.save_parameters(tmp_path / "a.npz")
    net.initialize(force_reinit=True)
    check()
    net.load_parameters(tmp_path / "a.npz")
    np.testing.assert_array_equal(check(), y1)
    net.cast("float32")
    w1.set_data(rng.standard_normal((10, 256)))
    y32 = net(x)
    net.cast("bfloat16")
    y2 = check()
    np.testing.assert_allclose(y2, y32, rtol=0.05, atol=0.05)
    for clone in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        np.testing.assert_array_equal(clone(x), y2)
        clone[1].weight.set_data(np.zeros((10, 256)))
        np.testing.assert_allclose(clone(x), np.broadcast_to(
            net[1].bias.data(), (1, 10)), rtol=1e-6)
        np.testing.assert_array_equal(net(x), y2)


def test_row_route_is_not_split_across_threads(two_threads):
    rng = np.random.default_rng(17)
    net = textbook(rng, (64, 12), in_units=1024)
    net.cast("bfloat16")
    x = rng.standard_normal((2, 1024)).astype(np.float32)
    y = net(x)
    old = _plan.set_bf16_rows(False)
    try:
        np.testing.assert_allclose(net(x), y, rtol=1e-5, atol=1e-5)
    finally:
        _plan.set_bf16_rows(old)
