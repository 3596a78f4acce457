"""Which copy of fastlazy the suite tests, and that it is a portable build.

CI (``.ci/run``) installs the wheel into a fresh virtual environment and sets
``FASTLAZY_EXPECT_INSTALLED=1``; then the package and its extension must come
from that environment's site-packages, not from the source tree.
"""

import os
import pathlib
import sys
import sysconfig

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import _plan, nn

REPO = pathlib.Path(__file__).resolve().parent.parent


def _inside(path, folder):
    try:
        pathlib.Path(path).resolve().relative_to(pathlib.Path(folder).resolve())
        return True
    except ValueError:
        return False


def test_extension_belongs_to_the_imported_package():
    pkg = pathlib.Path(fl.__file__).resolve().parent
    assert pathlib.Path(_plan.__file__).resolve().parent == pkg


@pytest.mark.skipif(os.environ.get("FASTLAZY_EXPECT_INSTALLED") != "1",
                    reason="set FASTLAZY_EXPECT_INSTALLED=1 to check that "
                           "the installed package is tested")
def test_installed_package_is_tested():
    site = {sysconfig.get_paths()[k] for k in ("purelib", "platlib")}
    where = pathlib.Path(fl.__file__).resolve()
    assert any(_inside(where, s) for s in site), (where, site)
    assert _inside(where, sys.prefix), (where, sys.prefix)
    assert not _inside(where, REPO / "src"), where
    # the wheel carries no generated C file, only the sources to cimport
    assert not list(where.parent.glob("*.c"))
    assert (where.parent / "_plan.pyx").exists()


def test_show_config_names_the_kernels(capsys):
    cfg = fl.show_config()
    assert cfg["kernels"] == _plan.kernel_isa()


@pytest.mark.parametrize("level", [0, 3, 4])
def test_every_isa_level_gives_the_baseline_answer(level, isa_restore, ref):
    """set_isa(0) runs the baseline kernels (what a CPU without AVX gets);
    every level available here gives results within rounding of them and
    of NumPy, for the dense kernel, BLAS epilogues and the conv sigmoid."""
    rng = np.random.default_rng(level)
    net = nn.Sequential()
    net.add(nn.Dense(37, activation="sigmoid"), nn.Dense(19, activation="gelu"),
            nn.Dense(5))
    net.initialize()
    conv = nn.Sequential()
    conv.add(nn.Conv2D(3, 3, activation="sigmoid"), nn.Flatten(), nn.Dense(4))
    conv.initialize()
    x = rng.standard_normal((7, 13)).astype(np.float32)
    xc = rng.standard_normal((2, 2, 6, 5)).astype(np.float32)
    got = _plan.set_isa(0)
    assert got == 0 and _plan.kernel_isa() == "baseline"
    base = ref.forward_matches(net, x, "baseline")
    base_conv = conv(xc)
    used = _plan.set_isa(level)
    assert used <= level
    y = ref.forward_matches(net, x, f"level {used}")
    np.testing.assert_allclose(y, base, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(conv(xc), base_conv, rtol=1e-5, atol=1e-6)
