"""Thread oversubscription: fastlazy calls (C3, C4) each right after a NumPy
512x512 matmul, which runs on NumPy's own OpenBLAS thread pool (at NumPy's
default thread count), against the same fastlazy calls back to back.  Only
the fastlazy call is timed.  Bar: at most 10% slower than alone."""

import numpy as np
import pytest

from common import check, fastlazy_threads, other_load, tag

ROUNDS = {"C3": 200, "C4": 40}


def _tag(benchmark, peer, cfg, threads):
    tag(benchmark, "oversubscription", f"oversub-{cfg}-{threads}t", peer,
        config=cfg, threads=threads)


@pytest.mark.parametrize("cfg", list(ROUNDS))
@pytest.mark.parametrize("peer", ["alone", "after-numpy-matmul"])
def bench_oversubscription(benchmark, case, cfg, threads, peer):
    _tag(benchmark, peer, cfg, threads)
    a = np.random.default_rng(0).standard_normal((512, 512),
                                                 dtype=np.float32)
    c = np.empty_like(a)

    def numpy_matmul():
        np.matmul(a, a, out=c)

    setup = numpy_matmul if peer == "after-numpy-matmul" else None
    with fastlazy_threads(threads):
        check(case.net(case.x), case.ref)
        with other_load(benchmark):
            benchmark.pedantic(case.net, args=(case.x,), setup=setup,
                               rounds=ROUNDS[cfg], warmup_rounds=5)
