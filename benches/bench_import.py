"""Import cost: ``python -c 'import fastlazy'`` against ``python -c 'import
numpy'``, each in fresh subprocesses; the difference of the medians is what
fastlazy adds to NumPy (bar: at most 50 ms).

Bytecode caching is allowed (PYTHONDONTWRITEBYTECODE removed), as it is for
an installed package; the warm-up rounds write the caches."""

import os
import subprocess
import sys

import pytest

import fastlazy
from common import other_load, tag

ROUNDS = 40


def _env():
    env = dict(os.environ)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    package_parent = os.path.dirname(os.path.dirname(fastlazy.__file__))
    env["PYTHONPATH"] = os.pathsep.join(
        [package_parent] + [p for p in [env.get("PYTHONPATH")] if p])
    return env


@pytest.mark.parametrize("module", ["numpy", "fastlazy"])
def bench_import(benchmark, module):
    tag(benchmark, "import", "import", module)
    cmd = [sys.executable, "-c", f"import {module}"]
    env = _env()
    subprocess.run(cmd, check=True, env=env)
    with other_load(benchmark):
        benchmark.pedantic(subprocess.run, args=(cmd,),
                           kwargs={"check": True, "env": env},
                           rounds=ROUNDS, warmup_rounds=2)
