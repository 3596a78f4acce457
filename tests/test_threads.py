"""Threads under load.

* Shared networks, small ones and ones large enough for the thread pool
  (``set_num_threads(2)``; Dense 1024 on a batch of 256), called from 8
  threads while other threads re-initialize (``force_reinit``), ``set_data``
  and build other networks: every result equals, bit for bit, the one the
  same call gave single-threaded.
* Racing first forwards on fresh deferred networks: every parameter is
  initialized exactly once (initializer calls counted), no error, and every
  thread gets the same answer.

The normal suite runs a short version; ``python -m pytest -m slow`` runs
8 threads x 10,000 calls and 1,000 rounds.
"""

import collections
import threading
import time

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn

WORKERS = 8


def shared_networks():
    """(name, network, inputs): from tiny to pool-sized, float32 and
    float64, dense and convolutional, all initialized by a first call."""
    rng = np.random.default_rng(7)
    nets = []

    small = nn.Sequential()
    small.add(nn.Dense(16, activation="tanh"), nn.Dense(3))
    nets.append(("small", small, [rng.standard_normal((n, 5))
                                  for n in (1, 2, 9)]))

    big = nn.Sequential()
    big.add(nn.Dense(1024, activation="relu"), nn.Dense(256))
    nets.append(("big", big, [rng.standard_normal((n, 512)).astype(
        np.float32) for n in (256, 300, 3)]))

    wide = nn.Sequential()
    wide.add(nn.Dense(512, activation="gelu", dtype="float64"),
             nn.Dense(64, dtype="float64"))
    nets.append(("wide64", wide, [rng.standard_normal((n, 256))
                                  for n in (1, 64, 200)]))

    conv = nn.Sequential()
    conv.add(nn.Conv2D(16, 3, padding=1, activation="relu"),
             nn.BatchNorm(), nn.MaxPool2D(), nn.Conv2D(32, 3),
             nn.GlobalAvgPool2D(), nn.Flatten(), nn.Dense(10))
    nets.append(("conv", conv, [rng.standard_normal((n, 3, 32, 32)).astype(
        np.float32) for n in (1, 8, 33)]))

    norm = nn.Sequential()
    norm.add(nn.LayerNorm(), nn.Dense(40, activation="silu", flatten=False),
             nn.Activation("sigmoid"), nn.Dropout(0.3), nn.Flatten(),
             nn.Dense(7))
    nets.append(("norm", norm, [rng.standard_normal((n, 4, 12))
                                for n in (1, 5, 130)]))

    for _, net, inputs in nets:
        net.initialize(init=init.Xavier())
        net(inputs[0])
        for p in net.collect_params().values():
            if p.name.endswith("running_var"):
                p.set_data(rng.uniform(0.5, 2, p.shape))
            elif p.name.endswith(("running_mean", "beta", "gamma")):
                p.set_data(rng.uniform(-1, 1, p.shape))
    return nets


def disturber(stop, errors, rng_seed):
    """Re-initialize, set_data on and build networks of its own until
    told to stop; every change bumps or tests the plans' epoch."""
    rng = np.random.default_rng(rng_seed)
    try:
        own = nn.Sequential()
        own.add(nn.Dense(64, activation="relu"), nn.Dense(8))
        own.initialize()
        x = rng.standard_normal((4, 10))
        own(x)
        i = 0
        while not stop.is_set():
            i += 1
            if i % 3 == 0:
                own.initialize(init.Normal(0.1), force_reinit=True)
            elif i % 3 == 1:
                for p in own.collect_params().values():
                    p.set_data(rng.standard_normal(p.shape))
            else:
                fresh = nn.Sequential()
                fresh.add(nn.Dense(int(rng.integers(1, 50))),
                          nn.Activation("tanh"))
                fresh.initialize()
                fresh(rng.standard_normal((2, int(rng.integers(1, 9)))))
            y = own(x)
            assert y.shape == (4, 8)
            time.sleep(0)
    except BaseException as exc:  # pragma: no cover - reported below
        errors.append(exc)


def run_shared(calls_per_worker, big_every):
    """8 workers x ``calls_per_worker`` calls on shared networks, with 2
    disturbers; returns the number of calls checked."""
    nets = shared_networks()
    expected = {(name, i): net(x) for name, net, inputs in nets
                for i, x in enumerate(inputs)}
    # the single-threaded answer is reproducible before any racing
    for name, net, inputs in nets:
        for i, x in enumerate(inputs):
            np.testing.assert_array_equal(net(x), expected[name, i])
    small = [n for n in nets if n[0] != "big"]
    big = [n for n in nets if n[0] == "big"]
    errors = []
    checked = collections.Counter()
    stop = threading.Event()
    start = threading.Barrier(WORKERS + 1)

    def worker(k):
        rng = np.random.default_rng(100 + k)
        try:
            start.wait()
            for c in range(calls_per_worker):
                pool = big if c % big_every == big_every - 1 else small
                name, net, inputs = pool[rng.integers(len(pool))]
                i = int(rng.integers(len(inputs)))
                y = net(inputs[i])
                if not np.array_equal(y, expected[name, i], equal_nan=True):
                    diff = np.max(np.abs(y - expected[name, i]))
                    raise AssertionError(f"worker {k} call {c}: {name}[{i}] "
                                         f"differs by {diff}")
                checked[name] += 1
        except BaseException as exc:
            errors.append(exc)

    workers = [threading.Thread(target=worker, args=(k,))
               for k in range(WORKERS)]
    others = [threading.Thread(target=disturber, args=(stop, errors, s))
              for s in range(2)]
    for t in workers + others:
        t.start()
    start.wait()
    for t in workers:
        t.join()
    stop.set()
    for t in others:
        t.join()
    if errors:
        raise errors[0]
    assert sum(checked.values()) == WORKERS * calls_per_worker
    return checked


class CountingInit(init.Uniform):
    """Uniform, keyed by the parameter's place; records every call."""

    def __init__(self):
        super().__init__(0.3)
        self.calls = []

    def __call__(self, desc, data):
        self.calls.append(str(desc))
        super().__call__(desc, data)


def fresh_network(kind, counter):
    kw = dict(weight_initializer=counter, bias_initializer=counter)
    net = nn.Sequential()
    if kind == "big":
        net.add(nn.Dense(1024, activation="relu", **kw), nn.Dense(32, **kw))
    elif kind == "conv":
        net.add(nn.Conv2D(4, 3, **kw), nn.BatchNorm(), nn.Flatten(),
                nn.Dense(5, **kw))
    else:
        net.add(nn.Dense(8, activation="sigmoid", **kw), nn.Dense(2, **kw),
                nn.LayerNorm())
    return net


def run_first_forward_races(rounds, racers=4):
    """``rounds`` fresh deferred networks, each hit by ``racers`` threads
    at once with its first input."""
    rng = np.random.default_rng(3)
    inputs = {"big": rng.standard_normal((256, 300)).astype(np.float32),
              "conv": rng.standard_normal((3, 2, 6, 6)),
              "small": rng.standard_normal((2, 5))}
    kinds = ["small", "conv", "small", "small", "conv", "small", "small",
             "small", "conv", "big"]
    for r in range(rounds):
        kind = kinds[r % len(kinds)]
        counter = CountingInit()
        net = fresh_network(kind, counter)
        net.initialize()
        barrier = threading.Barrier(racers)
        results, errors = [None] * racers, []

        def race(k):
            try:
                barrier.wait()
                results[k] = net(inputs[kind])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=race, args=(k,))
                   for k in range(racers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        counts = collections.Counter(counter.calls)
        names = [p.name for p in net.collect_params().values()
                 if p.init is counter]
        assert sorted(counts) == sorted(names), (r, kind, counts)
        assert set(counts.values()) == {1}, (r, kind, counts)
        assert all(p.is_initialized for p in net.collect_params().values())
        for y in results[1:]:
            np.testing.assert_array_equal(y, results[0])


def test_shared_networks_under_load_short(two_threads):
    run_shared(calls_per_worker=200, big_every=25)


def test_racing_first_forwards_short(two_threads):
    run_first_forward_races(rounds=20)


def test_racing_first_forwards_one_thread_pool():
    old = fl.get_num_threads()
    fl.set_num_threads(1)
    try:
        run_first_forward_races(rounds=10)
    finally:
        fl.set_num_threads(old)


@pytest.mark.slow
def test_shared_networks_under_load_long(two_threads, reliability_report):
    checked = run_shared(calls_per_worker=10_000, big_every=50)
    per_net = ", ".join(f"{k} {v:,}" for k, v in sorted(checked.items()))
    reliability_report(
        f"threads: {WORKERS} threads x 10,000 calls on shared networks "
        f"({per_net}) while 2 threads re-initialized, set_data and built "
        f"others: every result bit-identical to the single-threaded one")


@pytest.mark.slow
def test_racing_first_forwards_long(two_threads, reliability_report):
    run_first_forward_races(rounds=1000)
    reliability_report(
        "threads: 1,000 rounds of 4 threads racing the first forward of a "
        "fresh deferred network (small, conv, Dense 1024 on batch 256): "
        "every parameter initialized exactly once, same answer everywhere")


def run_forks(count):
    """Fork right after parallel forward passes (at varying delays, while
    the pool's worker is still spinning or going to sleep); each child runs
    a parallel forward on fresh workers and must get the parent's answer."""
    import os
    import signal

    from fastlazy import _plan
    old = _plan.set_tuning(parallel_macs=0)
    try:
        net = nn.Sequential()
        net.add(nn.Dense(64, activation="relu"), nn.Dense(8))
        net.initialize()
        x = np.random.default_rng(0).standard_normal((256, 32)).astype(
            np.float32)
        expected = net(x)
        failures = []
        for i in range(count):
            net(x)
            t0 = time.perf_counter()
            while time.perf_counter() - t0 < (i % 13) * 2e-5:
                pass
            pid = os.fork()
            if pid == 0:                                  # pragma: no cover
                signal.alarm(10)
                ok = np.array_equal(net(x), expected)
                os._exit(0 if ok else 3)
            deadline = time.monotonic() + 20
            while True:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    break
                if time.monotonic() > deadline:
                    os.kill(pid, signal.SIGKILL)
                    os.waitpid(pid, 0)
                    failures.append((i, "hung"))
                    break
                time.sleep(0.0005)
            if done and status != 0:
                failures.append((i, status))
        assert not failures, failures
    finally:
        _plan.set_tuning(*old)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"),
                    reason="needs fork()")
def test_fork_after_parallel_forward_short(two_threads):
    run_forks(40)


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(__import__("os"), "fork"),
                    reason="needs fork()")
def test_fork_after_parallel_forward_long(two_threads, reliability_report):
    run_forks(3000)
    reliability_report("threads: 3,000 forks right after parallel forward "
                       "passes: every child ran on fresh workers, none hung")
