"""Package surface: public names, error hierarchy, show_config, version."""

import io
import re

import pytest

import fastlazy as fl


PUBLIC = ["Parameter", "ParameterDict", "FastLazyError",
          "DeferredInitializationError", "ShapeError", "nn", "init",
          "random", "show_config", "__version__"]
NN = ["Sequential", "Dense", "Activation", "Dropout", "Flatten", "Block"]
INIT = ["Initializer", "Uniform", "Normal", "Constant", "Zero", "One",
        "Xavier", "MSRAPrelu"]


@pytest.mark.parametrize("name", PUBLIC)
def test_public_names(name):
    assert hasattr(fl, name)
    assert name in fl.__all__


def test_submodule_names():
    for name in NN:
        assert hasattr(fl.nn, name), name
    for name in INIT:
        assert hasattr(fl.init, name), name
    assert callable(fl.random.seed)
    from fastlazy import init, nn  # noqa: F401  (the import form the README uses)


def test_error_hierarchy():
    assert issubclass(fl.DeferredInitializationError, fl.FastLazyError)
    assert issubclass(fl.DeferredInitializationError, RuntimeError)
    assert issubclass(fl.ShapeError, fl.FastLazyError)
    assert issubclass(fl.ShapeError, ValueError)
    assert issubclass(fl.FastLazyError, Exception)
    assert not issubclass(fl.ShapeError, RuntimeError)
    assert not issubclass(fl.DeferredInitializationError, ValueError)


def test_version():
    assert isinstance(fl.__version__, str)
    assert re.fullmatch(r"\d+\.\d+\.\d+([.+-].*)?", fl.__version__)


def test_show_config_prints_and_returns(capsys):
    cfg = fl.show_config()
    out = capsys.readouterr().out
    assert isinstance(cfg, dict)
    assert cfg["fastlazy"] == fl.__version__
    assert fl.__version__ in out
    assert "blas" in cfg and "OpenBLAS" in str(cfg["blas"])
    assert "OpenBLAS" in out
    threads = [k for k in cfg if "thread" in k]
    assert threads and all(int(cfg[k]) >= 1 for k in threads)
    assert "thread" in out
    assert "kernels" in cfg


def test_show_config_threads_are_each_pools_own():
    """blas_threads is OpenBLAS's own count (read from the library itself,
    kept at 1), threads is fastlazy's pool: setting one never shows up as
    the other."""
    import ctypes
    n = fl.get_num_threads()
    try:
        fl.set_num_threads(3)
        cfg = fl.show_config(file=io.StringIO())
        assert cfg["threads"] == 3
        lib = ctypes.CDLL(fl._BLAS_PATH)
        assert cfg["blas_threads"] == lib.scipy_openblas_get_num_threads() \
            == 1
    finally:
        fl.set_num_threads(n)


def test_no_source_file_overrides_the_debug_switch():
    """setup.py turns Cython's bounds, wraparound and initialization checks
    on with FASTLAZY_DEBUG=1; a ``# cython:`` header in a source file would
    override it for that file."""
    import pathlib
    pkg = pathlib.Path(fl.__file__).parent
    checks = ("boundscheck", "wraparound", "initializedcheck")
    sources = [p for ext in ("*.pyx", "*.pxi", "*.pxd")
               for p in pkg.glob(ext)]
    if not sources:
        pytest.skip("the installed package ships no Cython sources")
    for src in sources:
        for line in src.read_text().splitlines():
            if line.startswith("# cython:"):
                assert not any(c in line for c in checks), (src.name, line)
    setup = pkg.parent.parent / "setup.py"
    if setup.exists():
        text = setup.read_text()
        for c in checks:
            assert f'"{c}": debug' in text


def test_show_config_to_file(capsys):
    buf = io.StringIO()
    fl.show_config(file=buf)
    assert capsys.readouterr().out == ""
    assert fl.__version__ in buf.getvalue()


def test_thread_setting_round_trip():
    n = fl.get_num_threads()
    try:
        fl.set_num_threads(1)
        assert fl.get_num_threads() == 1
        with pytest.raises(ValueError):
            fl.set_num_threads(0)
    finally:
        fl.set_num_threads(n)
