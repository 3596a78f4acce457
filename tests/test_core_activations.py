"""Every activation against a numerically careful NumPy reference: accuracy
over the real line, stability at the extremes, IEEE NaN/inf."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from fastlazy import _plan, nn

ACT_NAMES = ["relu", "sigmoid", "tanh", "softrelu", "softsign", "gelu",
             "silu"]
DTYPES = [np.float32, np.float64]


def run_act(name, x):
    """Apply activation ``name`` with the compiled element-wise kernel."""
    a = np.array(x, copy=True, order="C")
    _plan.apply_activation(a, _plan.ACTIVATIONS[name])
    return a


def tolerance(name, x, dtype):
    """A few ulps of the result, plus a few ulps of |x| for functions whose
    value is a product with x (GELU, SiLU) or cancels (GELU far left)."""
    e = float(np.finfo(dtype).eps)
    with np.errstate(invalid="ignore", over="ignore"):
        return 8 * e * (np.abs(x.astype(np.float64)) + 1)


def test_activation_table_is_complete():
    assert set(_plan.ACTIVATIONS) == {None, *ACT_NAMES}
    assert len(set(_plan.ACTIVATIONS.values())) == len(_plan.ACTIVATIONS)


finite32 = st.floats(-1e4, 1e4, allow_nan=False, width=32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
@given(x=hnp.arrays(np.float64, st.integers(1, 300),
                    elements=st.floats(-120, 120, allow_nan=False)))
def test_activation_accuracy(name, dtype, x, ref):
    x = x.astype(dtype)
    y = run_act(name, x)
    assert y.dtype == dtype
    ref.close(y, ref.act(name, x), tolerance(name, x, dtype), name)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_dense_grid(name, dtype, ref):
    """Every region: tiny, around 0, the transition, saturation."""
    x = np.concatenate([np.linspace(-50, 50, 20001),
                        np.geomspace(1e-30, 1e3, 400),
                        -np.geomspace(1e-30, 1e3, 400),
                        [0.0, -0.0, 1e-45, -1e-45, 88.7, 89.0, -88.7,
                         -104.0, 709.0, -709.0, 710.0, -745.0]])
    x = x.astype(dtype)
    y = run_act(name, x)
    assert np.isfinite(y).all()
    ref.close(y, ref.act(name, x), tolerance(name, x, dtype), name)


@pytest.mark.parametrize("dtype", DTYPES)
def test_stable_extremes(dtype):
    big = np.array([1000.0, -1000.0, 1e30, -1e30,
                    float(np.finfo(dtype).max), -float(np.finfo(dtype).max)],
                   dtype=dtype)
    sig = run_act("sigmoid", big)
    np.testing.assert_array_equal(sig, [1, 0, 1, 0, 1, 0])
    assert run_act("sigmoid", np.array([-1000.0], dtype))[0] == 0.0
    sr = run_act("softrelu", big)
    np.testing.assert_array_equal(sr[[0, 2, 4]], big[[0, 2, 4]])
    np.testing.assert_array_equal(sr[[1, 3, 5]], 0)
    assert run_act("softrelu", np.array([1000.0], dtype))[0] == 1000.0
    np.testing.assert_array_equal(run_act("tanh", big), [1, -1, 1, -1, 1, -1])
    silu = run_act("silu", big)
    np.testing.assert_array_equal(silu[[0, 2, 4]], big[[0, 2, 4]])
    np.testing.assert_array_equal(silu[[1, 3, 5]], 0)
    gelu = run_act("gelu", big)
    np.testing.assert_array_equal(gelu[[0, 2, 4]], big[[0, 2, 4]])
    np.testing.assert_array_equal(gelu[[1, 3, 5]], 0)
    ss = run_act("softsign", big[2:])
    np.testing.assert_allclose(ss, [1, -1, 1, -1])
    relu = run_act("relu", big)
    np.testing.assert_array_equal(relu, np.maximum(big, 0))
    assert np.isfinite(run_act("softrelu", big)).all()


@pytest.mark.parametrize("dtype", DTYPES)
def test_gelu_is_the_exact_erf_form(dtype, ref):
    """Not the tanh approximation: they differ by ~1e-4 near x = +-2."""
    x = np.array([-3.0, -2.0, -1.0, 0.5, 2.0, 3.0], dtype=dtype)
    y = run_act("gelu", x)
    exact = ref.act("gelu", x)
    approx = 0.5 * x * (1 + np.tanh(np.sqrt(2 / np.pi) *
                                    (x + 0.044715 * x.astype(float) ** 3)))
    ref.close(y, exact, tolerance("gelu", x, dtype))
    assert np.abs(exact - approx).max() > 1e-4


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ACT_NAMES)
def test_nan_propagates(name, dtype):
    x = np.array([np.nan, 1.0, -np.nan, -1.0], dtype=dtype)
    y = run_act(name, x)
    np.testing.assert_array_equal(np.isnan(y), [True, False, True, False])


WELL_DEFINED_AT_INF = ["relu", "sigmoid", "tanh", "softrelu"]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", WELL_DEFINED_AT_INF)
def test_infinities(name, dtype, ref):
    x = np.array([np.inf, -np.inf], dtype=dtype)
    np.testing.assert_array_equal(run_act(name, x), ref.act(name, x))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", ["softsign", "gelu", "silu"])
def test_infinities_limits(name, dtype, ref):
    x = np.array([np.inf, -np.inf], dtype=dtype)
    np.testing.assert_array_equal(run_act(name, x), ref.act(name, x))


@pytest.mark.parametrize("name", ACT_NAMES)
def test_activation_block_uses_the_same_kernel(name):
    x = np.linspace(-6, 6, 97, dtype=np.float32).reshape(1, 97)
    np.testing.assert_array_equal(nn.Activation(name)(x), run_act(name, x))


def test_apply_activation_rejects_bad_arrays():
    with pytest.raises(TypeError):
        _plan.apply_activation(np.ones(4, dtype=np.int32), 1)
    with pytest.raises(TypeError):
        _plan.apply_activation(np.ones((4, 4), dtype=np.float32)[:, ::2], 1)
