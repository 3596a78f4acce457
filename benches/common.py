"""What every benchmark of the suite shares.

Every benchmark answers one question in one pytest-benchmark group (e.g.
``C3-2t``: configuration C3 at 2 threads), checks its output against a
float64 NumPy reference before timing, and records what it measured in
``benchmark.extra_info`` (``kind``, ``peer``, and ``config`` / ``threads``
where they apply) for ``benches/run.py`` to tabulate.  Every alternative
runs the very same weights: those fastlazy initialized, copied out of
``net[i].weight.data()``.
"""

import functools
import os
import time
from contextlib import contextmanager

import numpy as np
from threadpoolctl import threadpool_limits

import fastlazy as fl
from fastlazy._bench import (CONFIGS, dense_layers, make_net,
                             reference_forward, warm_up)

SEED = 3
RTOL = 1e-4          # float32 against the float64 reference
WARMUP_S = 0.3       # see fastlazy._bench.warm_up: lets other pools sleep


# ---------------------------------------------------------------------------
# The networks


class Case:
    """One configuration: the initialized fastlazy network, its input, its
    weights as ``[(W, b, act)]`` and the float64 reference output."""

    def __init__(self, cfg):
        self.cfg = cfg
        self.config = CONFIGS[cfg]
        rng = np.random.default_rng(SEED)
        fl.random.seed(SEED)
        self.net = make_net(self.config)
        self.net.initialize()
        self.x = rng.standard_normal((self.config.batch,
                                      self.config.in_units), dtype=np.float32)
        self.net(self.x)
        # biases start at zero; random ones make the check cover them
        for layer in self.net:
            layer.bias.set_data(rng.uniform(-0.1, 0.1, layer.bias.shape))
        self.layers = dense_layers(self.net)
        self.ref = reference_forward(self.layers, self.x)


@functools.cache
def get_case(cfg):
    return Case(cfg)


def check(y, ref):
    """Assert a float32 result matches the float64 reference."""
    np.testing.assert_allclose(np.asarray(y), ref, rtol=RTOL,
                               atol=RTOL * float(np.abs(ref).max()))


# ---------------------------------------------------------------------------
# Thread counts, one way per library


@contextmanager
def fastlazy_threads(n):
    old = fl.get_num_threads()
    fl.set_num_threads(n)
    try:
        assert fl.get_num_threads() == n
        yield
    finally:
        fl.set_num_threads(old)


@contextmanager
def numpy_threads(n):
    with threadpool_limits(n, user_api="blas"):
        yield


@contextmanager
def torch_threads(torch, n):
    old = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


# ---------------------------------------------------------------------------
# Naming and timing


def tag(benchmark, kind, group, peer, **extra):
    """Put a benchmark in ``group`` and record what it measures for
    run.py: ``kind`` (dense, first-forward, import, oversubscription,
    bulk), ``peer`` (fastlazy, numpy, ...) and e.g. ``config``,
    ``threads``."""
    benchmark.group = group
    benchmark.extra_info.update(kind=kind, peer=peer, **extra)


QUIET = 0.25         # other processes' cores below which the machine is quiet


def _busy_seconds():
    """CPU seconds the whole machine has been busy, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]                 # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _usage():
    """(wall, machine busy, this process's and its waited-for children's
    CPU seconds); children count as ours (bench_import's interpreters)."""
    t = os.times()
    return (time.perf_counter(), _busy_seconds(),
            t.user + t.system + t.children_user + t.children_system)


def _other_cores(since):
    """Cores that other processes kept busy, on average, since ``since``
    (a ``_usage()`` snapshot): the machine's busy time minus this
    process's CPU time (all its threads, and its children), over the wall
    time."""
    wall, busy, own = since
    now_wall, now_busy, now_own = _usage()
    other = (now_busy - busy) - (now_own - own)
    return max(other, 0.0) / (now_wall - wall)


@contextmanager
def other_load(benchmark):
    """Record in extra_info['other_load'] how many cores other processes
    kept busy while the block ran: the shared machine's noise, per
    benchmark.  Linux only (nothing is recorded elsewhere)."""
    if not os.path.exists("/proc/stat"):
        yield
        return
    since = _usage()
    yield
    benchmark.extra_info["other_load"] = round(_other_cores(since), 2)


def wait_quiet(max_seconds):
    """Wait, at most ``max_seconds``, for half a second in which other
    processes use fewer than QUIET cores.  Returns the seconds waited."""
    start = time.perf_counter()
    if not os.path.exists("/proc/stat"):
        return 0.0
    while time.perf_counter() - start < max_seconds:
        since = _usage()
        time.sleep(0.5)
        if _other_cores(since) < QUIET:
            break
    return time.perf_counter() - start


def timed(benchmark, fn, *args):
    """Warm ``fn`` up, then time ``fn(*args)`` with pytest-benchmark's
    calibrated rounds; returns the last result."""
    warm_up(fn, *args, seconds=WARMUP_S)
    with other_load(benchmark):
        return benchmark(fn, *args)


# ---------------------------------------------------------------------------
# Interleaved rounds (the scripts bench_fp32.py and bench_bf16.py)


def time_round(fn, target, settle=0.0):
    """Seconds per call of ``fn`` over about ``target`` seconds; with
    ``settle``, after a pause that long and a warm-up call (so pools that
    were spinning for the previous library have stopped)."""
    if settle:
        time.sleep(settle)
        fn()
    t = time.perf_counter()
    fn()
    one = time.perf_counter() - t
    reps = max(1, min(20000, int(target / max(one, 1e-7))))
    t = time.perf_counter()
    for _ in range(reps):
        fn()
    return (time.perf_counter() - t) / reps


def interleaved(calls, rounds, target, quiet=0.0, settle=0.0):
    """{name: [seconds per call, one per round]}: every round times each of
    ``calls`` (name -> zero-argument call) in turn, in an order shuffled
    per round (seeded by the round), after three warm-up calls each; with
    ``quiet``, each round first waits up to that long for the machine to
    calm down (wait_quiet)."""
    import random
    for call in calls.values():
        for _ in range(3):
            call()
    times = {name: [] for name in calls}
    order = list(calls)
    for r in range(rounds):
        if quiet:
            wait_quiet(quiet)
        random.Random(r).shuffle(order)
        for name in order:
            times[name].append(time_round(calls[name], target, settle))
    return times
