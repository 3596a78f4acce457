"""pytest hooks of the benchmark suite: the ``--threads`` option, the
``case`` fixture, test order, and the machine information saved with the
results (see common.py for what every benchmark does)."""

import faulthandler
import io
import os
import sys

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastlazy as fl
from common import get_case, wait_quiet


def pytest_addoption(parser):
    parser.addoption("--threads", default="1,2",
                     help="comma-separated thread counts to run (default "
                          "1,2)")
    parser.addoption("--hang-timeout", type=float, default=120.0,
                     metavar="SECONDS",
                     help="a benchmark still running after SECONDS (plus "
                          "--wait-quiet) is hung: dump every thread's stack "
                          "and exit (default 120)")
    parser.addoption("--wait-quiet", type=float, default=0.0,
                     metavar="SECONDS",
                     help="before each benchmark, wait up to SECONDS for "
                          "other processes to leave the CPUs (default 0: "
                          "do not wait)")


def pytest_generate_tests(metafunc):
    if "threads" in metafunc.fixturenames:
        counts = [int(t) for t in
                  metafunc.config.getoption("threads").split(",")]
        metafunc.parametrize("threads", counts, ids=[f"{n}t" for n in counts])


def pytest_collection_modifyitems(items):
    """Run all alternatives of one group back to back (files keep their
    order), so a slow spell on the shared machine hits them alike."""
    files = {}
    for item in items:
        files.setdefault(item.fspath, len(files))

    def key(item):
        params = item.callspec.params if hasattr(item, "callspec") else {}
        return (files[item.fspath], params.get("cfg", ""),
                params.get("threads", 0))

    items.sort(key=key)


def pytest_benchmark_update_machine_info(config, machine_info):
    """Record the BLAS libraries and thread pools that were loaded (at the
    end of the session, so every peer's libraries are in) and the
    environment variables that change OpenBLAS's kernel choice."""
    machine_info["threadpools"] = threadpool_info()
    machine_info["fastlazy"] = fl.show_config(file=io.StringIO())
    machine_info["fastlazy"]["path"] = os.path.dirname(fl.__file__)
    machine_info["env"] = {name: os.environ.get(name) for name in
                           ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE",
                            "OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS")}
    versions = {"numpy": np.__version__}
    for name in ("onnxruntime", "onnx", "torch"):
        if name in sys.modules:
            versions[name] = sys.modules[name].__version__
    machine_info["versions"] = versions
    if "torch" in sys.modules:
        machine_info["torch_parallel"] = \
            sys.modules["torch"].__config__.parallel_info()


@pytest.fixture
def case(cfg):
    """The network, input, weights and reference of configuration ``cfg``."""
    return get_case(cfg)


@pytest.fixture(autouse=True)
def _quiet_machine(request):
    """With --wait-quiet, start each benchmark on a quiet machine if one
    comes within the limit (the 'other load' column shows the outcome)."""
    limit = request.config.getoption("wait_quiet")
    if limit > 0:
        wait_quiet(limit)


def pytest_configure(config):
    # the real stderr, before pytest captures it around each test
    config.hang_stderr = open(os.dup(sys.stderr.fileno()), "w")


@pytest.fixture(autouse=True)
def _hang_watchdog(request):
    """A deadlock in a forward pass must end the run with the stacks that
    show where, not stall it forever."""
    config = request.config
    faulthandler.dump_traceback_later(
        config.getoption("hang_timeout") + config.getoption("wait_quiet"),
        exit=True, file=config.hang_stderr)
    yield
    faulthandler.cancel_dump_traceback_later()
