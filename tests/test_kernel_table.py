"""The kernel table (kernels/fl_kernels.h) at every instruction-set level the
CPU has: each entry that takes an activation applies every activation code
itself -- float32 sigmoid and relu vectorised -- on inputs with NaN, +-inf
and huge values, against a float64 NumPy reference; the dense, packed and
convolution GEMM entries against NumPy; the tile sizes the table reports
come from the level's descriptor."""

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from fastlazy import _plan

LEVELS = [0, 3, 4]
DTYPES = [np.float32, np.float64]
ACT_NAMES = [None, "relu", "sigmoid", "tanh", "softrelu", "softsign", "gelu",
             "silu"]
# lanes at the widest level: lengths around them cover every vector tail
LENGTHS = [1, 3, 7, 8, 15, 16, 17, 31, 33, 64, 100]


@pytest.fixture(params=LEVELS)
def level(request):
    """Each level in turn; a level the CPU lacks is skipped, never silently
    replaced by another one."""
    used = _plan.set_isa(request.param)
    try:
        if used != request.param:
            pytest.skip(f"the CPU has no level {request.param} "
                        f"(set_isa gave {used})")
        yield used
    finally:
        _plan.set_isa(None)


def values(dtype, n, seed=0):
    """n values mixing the ordinary (the sigmoid's transition), the huge, the
    tiny and the non-finite, in a shuffled order so that each lands in
    vector bodies and in tails."""
    rng = np.random.default_rng(seed)
    big = float(np.finfo(dtype).max)
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, big, -big, 1e30,
                        -1e30, 1000.0, -1000.0, 88.0, -88.0, -87.5, -104.0,
                        1e-30, -1e-30, 20.0, -20.0])
    x = rng.uniform(-30, 30, n)
    k = min(n, len(special))
    x[rng.choice(n, k, replace=False)] = rng.choice(special, k, replace=False)
    return x.astype(dtype)


def tolerance(x, dtype):
    """A few ulps of the result, plus a few ulps of |x| where the value is a
    product with x (GELU, SiLU); exact at infinite inputs (limits)."""
    e = float(np.finfo(dtype).eps)
    with np.errstate(invalid="ignore", over="ignore"):
        return 8 * e * (np.abs(x.astype(np.float64)) + 1)


def check(got, x, name, ref, what):
    """got == act(x) within the tolerance, NaN and infinities exact."""
    want = ref.act(name, x)
    ref.close(got, want, tolerance(x, got.dtype), f"{what} {name}")


def test_tile_comes_from_the_level(level):
    mr, nr32, nr64 = _plan.packed_tile()
    vbytes = {0: 16, 3: 32, 4: 64}[level]
    assert (nr32, nr64) == (2 * vbytes // 4, 2 * vbytes // 8)
    assert mr == (12 if level == 4 else 6)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_act(level, dtype, name, ref):
    code = _plan.ACTIVATIONS[name]
    for n in LENGTHS:
        x = values(dtype, n, seed=n)
        got = _plan.kernel_table("act", x.copy(), code)
        check(got, x, name, ref, f"act n={n}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_act_matches_apply_activation(level, dtype, name):
    """The table's activation is the one every layer uses: bit for bit."""
    x = values(dtype, 257, seed=5)
    code = _plan.ACTIVATIONS[name]
    got = _plan.kernel_table("act", x.copy(), code)
    np.testing.assert_array_equal(got, _plan.apply_activation(x.copy(), code))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_bias_act(level, dtype, name, ref):
    code = _plan.ACTIVATIONS[name]
    rng = np.random.default_rng(1)
    for m in (1, 5, 17, 40):
        y = values(dtype, 3 * m, seed=m).reshape(3, m)
        b = rng.uniform(-2, 2, m).astype(dtype)
        got = _plan.kernel_table("bias_act", y.copy(), code, b)
        check(got, y.astype(np.float64) + b.astype(np.float64), name, ref,
              f"bias_act m={m}")
        got = _plan.kernel_table("bias_act", y.copy(), code)
        check(got, y, name, ref, f"bias_act no bias m={m}")


def affine_ref(y, scale, shift):
    """y * scale[c] + shift[c], c the channel axis (0 of a (C, N) block, 1
    of (outer, C, inner) samples), rounded to y's dtype as the kernel
    stores it before the activation (huge values overflow to inf)."""
    z = y.astype(np.float64)
    s = (-1, 1)
    with np.errstate(over="ignore", invalid="ignore"):
        if scale is not None:
            z = z * scale.astype(np.float64).reshape(s)
        z = z + shift.astype(np.float64).reshape(s)
        return z.astype(y.dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_chan_epilogue(level, dtype, name, ref):
    code = _plan.ACTIVATIONS[name]
    rng = np.random.default_rng(2)
    y = values(dtype, 4 * 33, seed=3).reshape(4, 33)
    scale = rng.uniform(0.5, 2, 4).astype(dtype)
    shift = rng.uniform(-1, 1, 4).astype(dtype)
    got = _plan.kernel_table("chan_epilogue", y.copy(), code, scale, shift)
    check(got, affine_ref(y, scale, shift), name, ref, "chan_epilogue")
    got = _plan.kernel_table("chan_epilogue", y.copy(), code, None, shift)
    check(got, affine_ref(y, None, shift), name, ref,
          "chan_epilogue shift only")
    got = _plan.kernel_table("chan_epilogue", y.copy(), code)
    check(got, y, name, ref, "chan_epilogue plain")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
@pytest.mark.parametrize("inner", [1, 9])
def test_chan_affine(level, dtype, name, inner, ref):
    code = _plan.ACTIVATIONS[name]
    rng = np.random.default_rng(4)
    y = values(dtype, 2 * 3 * inner * 7, seed=inner).reshape(2, 21, inner)
    scale = rng.uniform(0.5, 2, 21).astype(dtype)
    shift = rng.uniform(-1, 1, 21).astype(dtype)
    got = _plan.kernel_table("chan_affine", y.copy(), code, scale, shift)
    check(got, affine_ref(y, scale, shift), name, ref, "chan_affine")


DENSE_TOL = {np.float32: dict(rtol=2e-5, atol=2e-5),
             np.float64: dict(rtol=1e-12, atol=1e-12)}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op", ["dense", "packed", "dot"])
@pytest.mark.parametrize("name", ACT_NAMES)
def test_dense_entries_apply_every_activation(level, dtype, op, name, ref):
    """The three dense kernels, every activation, row counts across the
    register tiles (1..13 rows: every packed row-count function) and widths
    with column tails."""
    code = _plan.ACTIVATIONS[name]
    rng = np.random.default_rng(6)
    for n, k, m in [(1, 7, 5), (3, 20, 33), (8, 16, 64), (13, 9, 70),
                    (25, 33, 40)]:
        x = rng.standard_normal((n, k)).astype(dtype)
        w = rng.standard_normal((k, m)).astype(dtype)
        b = rng.standard_normal(m).astype(dtype)
        got = _plan.kernel_table(op, np.empty((n, m), dtype), code, x, w, b)
        z = x.astype(np.float64) @ w.astype(np.float64) + b
        want = ref.act(name, z)
        np.testing.assert_allclose(got, want, **DENSE_TOL[dtype],
                                   err_msg=f"{op} {name} {n}x{k}x{m}")


@pytest.mark.parametrize("dtype", DTYPES)
def test_gemm_ab(level, dtype):
    """The convolution's GEMM with the buffer size the table gives."""
    rng = np.random.default_rng(7)
    for mm, nn_, k in [(8, 16, 9), (13, 70, 27), (64, 200, 30)]:
        a = rng.standard_normal((mm, k)).astype(dtype)
        b = rng.standard_normal((k, nn_)).astype(dtype)
        got = _plan.kernel_table("gemm_ab", np.empty((mm, nn_), dtype), 0,
                                 a, b)
        np.testing.assert_allclose(got, a.astype(np.float64) @ b,
                                   **DENSE_TOL[dtype])


def test_twin_rejects_bad_arrays():
    y = np.zeros((2, 3), np.float32)
    with pytest.raises(ValueError):
        _plan.kernel_table("bias_act", y, 0, np.zeros(3, np.float64))
    with pytest.raises(ValueError):
        _plan.kernel_table("bias_act", y, 0, np.zeros(4, np.float32))
    with pytest.raises(ValueError):
        _plan.kernel_table("nope", y, 0)
    with pytest.raises(ValueError):
        _plan.kernel_table("act", np.zeros(3, np.int32), 0)


def dwconv_ref(x, w, stride, pad, dil):
    """Depthwise convolution of one sample (C, H, W) by (C, kh, kw) in
    float64: a sum over taps of strided slices of the zero-padded input."""
    (sh, sw), (ph, pw), (dh, dw) = stride, pad, dil
    c, h, wd = x.shape
    kh, kw = w.shape[1:]
    xp = np.pad(x.astype(np.float64), ((0, 0), (ph, ph), (pw, pw)))
    oh = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    y = np.zeros((c, oh, ow))
    for i in range(kh):
        for j in range(kw):
            y += w[:, i, j, None, None].astype(np.float64) * xp[
                :, i * dh:i * dh + (oh - 1) * sh + 1:sh,
                j * dw:j * dw + (ow - 1) * sw + 1:sw]
    return y


# (kernel, stride, padding, dilation): the 3x3 paths compiled with the
# geometry as constants (stride 1 and 2), and the general one
DW_GEOMS = [((3, 3), (1, 1), (1, 1), (1, 1)), ((3, 3), (2, 2), (1, 1), (1, 1)),
            ((3, 3), (2, 2), (0, 0), (1, 1)), ((5, 5), (1, 1), (2, 2), (1, 1)),
            ((5, 5), (2, 2), (2, 2), (1, 1)), ((3, 3), (1, 1), (2, 2), (2, 2)),
            ((1, 1), (1, 1), (0, 0), (1, 1)), ((4, 2), (3, 1), (1, 2), (1, 1)),
            ((3, 3), (1, 2), (3, 0), (1, 2)), ((2, 3), (2, 3), (0, 1), (2, 1))]
# output widths around the kernel's vector lanes (2 to 8) and its tile (2
# vectors): every tail, one and several tiles per row
DW_WIDTHS = [1, 7, 15, 17, 33, 65]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("geom", DW_GEOMS, ids=lambda g: "k{}s{}p{}d{}".format(
    *["x".join(map(str, v)) for v in g]))
def test_dwconv(level, dtype, geom):
    """Every geometry at output widths hitting every vector tail and both
    tile heights (odd and even output rows), with scale and shift, shift
    only and neither: against NumPy, nothing written past the output or
    past the scratch the table asks for."""
    k, s, p, d = geom
    rng = np.random.default_rng(11)
    tol = DENSE_TOL[dtype]
    for ow in DW_WIDTHS:
        for oh in (1, 4, 5):
            h = (oh - 1) * s[0] + d[0] * (k[0] - 1) + 1 - 2 * p[0]
            w_ = (ow - 1) * s[1] + d[1] * (k[1] - 1) + 1 - 2 * p[1]
            if h < 1 or w_ < 1:
                continue
            c = 3
            x = rng.standard_normal((c, h, w_)).astype(dtype)
            w = rng.standard_normal((c,) + k).astype(dtype)
            scale = rng.uniform(0.5, 2, c).astype(dtype)
            shift = rng.uniform(-1, 1, c).astype(dtype)
            z = dwconv_ref(x, w, s, p, d)
            assert z.shape == (c, oh, ow)
            for sc, sf in ((scale, shift), (None, shift), (None, None)):
                got = _plan.dwconv_kernel(x, w, s, p, d, sc, sf, 0, guard=20)
                assert np.all(np.isnan(got[-20:])), "wrote past the output"
                want = z * (1 if sc is None else sc[:, None, None]) + \
                    (0 if sf is None else sf[:, None, None])
                np.testing.assert_allclose(
                    got[:-20].reshape(c, oh, ow), want, **tol,
                    err_msg=f"{geom} out {oh}x{ow} scale {sc is not None} "
                            f"shift {sf is not None}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_dwconv_applies_every_activation(level, dtype, name, ref):
    """The epilogue's activation -- relu on the accumulators, the others
    on each finished plane -- on values spanning the activations' ranges,
    NaN from the input included."""
    code = _plan.ACTIVATIONS[name]
    rng = np.random.default_rng(12)
    for s in (1, 2):
        x = (rng.standard_normal((4, 9, 37)) * 10).astype(dtype)
        x[1, 4, 20] = np.nan
        w = rng.standard_normal((4, 3, 3)).astype(dtype)
        shift = rng.uniform(-1, 1, 4).astype(dtype)
        got = _plan.dwconv_kernel(x, w, (s, s), (1, 1), (1, 1), None, shift,
                                  code)
        z = dwconv_ref(x, w, (s, s), (1, 1), (1, 1)) + shift[:, None, None]
        want = ref.act(name, z).ravel()
        assert np.array_equal(np.isnan(got), np.isnan(want))
        ok = ~np.isnan(want)
        np.testing.assert_allclose(got[ok], want[ok], **DENSE_TOL[dtype],
                                   err_msg=f"{name} stride {s}")


def test_dwconv_twin_rejects_bad_arrays():
    x = np.zeros((2, 5, 5), np.float32)
    with pytest.raises(ValueError):
        _plan.dwconv_kernel(x, np.zeros((2, 3, 3), np.float64), (1, 1),
                            (1, 1), (1, 1))
    with pytest.raises(ValueError):
        _plan.dwconv_kernel(x, np.zeros((3, 3, 3), np.float32), (1, 1),
                            (1, 1), (1, 1))
    with pytest.raises(ValueError):
        _plan.dwconv_kernel(x, np.zeros((2, 9, 9), np.float32), (1, 1),
                            (0, 0), (1, 1))


# the level fixture holds for every example: switching the table once per
# test is what is wanted
@settings(max_examples=150, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(k=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       s=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       p=st.tuples(st.integers(0, 3), st.integers(0, 3)),
       d=st.tuples(st.integers(1, 2), st.integers(1, 2)),
       size=st.tuples(st.integers(1, 12), st.integers(1, 40)),
       c=st.integers(1, 4), double=st.booleans())
def test_dwconv_any_geometry(level, k, s, p, d, size, c, double):
    """Random geometries (padding up to and past the kernel, any stride and
    dilation, inputs down to one value wide) at every level: against NumPy,
    nothing written past the output or the scratch."""
    dtype = np.float64 if double else np.float32
    h, w_ = size
    oh = (h + 2 * p[0] - d[0] * (k[0] - 1) - 1) // s[0] + 1
    ow = (w_ + 2 * p[1] - d[1] * (k[1] - 1) - 1) // s[1] + 1
    assume(oh >= 1 and ow >= 1)
    rng = np.random.default_rng(h * 100 + w_)
    x = rng.standard_normal((c, h, w_)).astype(dtype)
    w = rng.standard_normal((c,) + k).astype(dtype)
    shift = rng.uniform(-1, 1, c).astype(dtype)
    got = _plan.dwconv_kernel(x, w, s, p, d, None, shift, 1, guard=9)
    assert np.all(np.isnan(got[-9:])), "wrote past the output"
    want = np.maximum(dwconv_ref(x, w, s, p, d) + shift[:, None, None], 0)
    np.testing.assert_allclose(got[:-9].reshape(c, oh, ow), want,
                               **DENSE_TOL[dtype])
