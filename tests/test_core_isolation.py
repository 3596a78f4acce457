"""Networks are independent: building, initializing, loading or casting one
never costs another anything, and one network's first forward (long
initialization) does not stall another network's calls."""

import threading
import time

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn


def served():
    """The textbook network (C1), compiled for batch 1."""
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    net.initialize()
    x = np.random.default_rng(0).random((1, 20), dtype=np.float32)
    net(x)
    return net, x


def others(tmp_path):
    """Things a service does to other networks."""
    def build_layer():
        nn.Dense(5)

    def first_forward():
        other = nn.Sequential()
        other.add(nn.Dense(8), nn.Dense(3))
        other.initialize()
        other(np.ones((2, 4)))

    def reinit():
        other = nn.Dense(4, in_units=3)
        other.initialize()
        other.initialize(force_reinit=True)

    def load():
        src = nn.Dense(4, in_units=3)
        src.initialize()
        path = tmp_path / "other.npz"
        src.save_parameters(str(path))
        dst = nn.Dense(4)
        dst.load_parameters(str(path))

    def cast():
        other = nn.Dense(4, in_units=3)
        other.initialize()
        other.cast("float64")

    def set_data():
        other = nn.Dense(4, in_units=3)
        other.initialize()
        other.weight.set_data(np.zeros((4, 3)))

    def add_child():
        other = nn.Sequential()
        other.add(nn.Dense(2, in_units=2))
        other.initialize()
        other(np.ones((1, 2)))
        other.add(nn.Dense(2))

    return [build_layer, first_forward, reinit, load, cast, set_data,
            add_child]


def test_other_networks_never_rebuild_this_plan(tmp_path):
    net, x = served()
    plan = net._plan
    for action in others(tmp_path):
        action()
        y = net(x)
        assert net._plan is plan, action.__name__
        assert plan.is_current(), action.__name__
    np.testing.assert_array_equal(y, net(x))


def test_own_changes_do_rebuild(tmp_path):
    net, x = served()
    plan = net._plan
    net.add(nn.Dense(3))                 # its own structure changed
    assert not plan.is_current()
    net[-1].initialize()
    assert net(x).shape == (1, 3)
    plan = net._plan
    net.cast("float64")                  # its storage moved
    assert not plan.is_current()
    assert net(x).dtype == np.float64
    plan = net._plan
    net[0].weight.set_data(np.zeros((256, 20)))   # written in place: kept
    assert plan.is_current()
    assert net._plan is plan


def test_next_call_after_building_a_layer_is_a_steady_call():
    """Measured as a ratio in one run: the first call after an unrelated
    layer is built costs about what a steady call costs (a plan rebuild
    would be ~100x a call).  Building a layer runs enough Python to push
    the network's 30 KB of weights out of L1, which alone makes the next
    call 1.4-1.9x a steady one on a 2-core Zen 3 (touching 256 KB of an
    unrelated array: 1.4x), so the bound leaves room for that, not for a
    rebuild; test_other_networks_never_rebuild_this_plan checks the plan
    itself."""
    net, x = served()

    def one_call():
        t = time.perf_counter_ns()
        net(x)
        return time.perf_counter_ns() - t

    for _ in range(200):
        one_call()
    steady = min(one_call() for _ in range(300))
    after = []
    for _ in range(30):
        nn.Dense(5)
        after.append(one_call())
    assert min(after) <= 5 * steady, (min(after), steady)
    assert np.median(after) <= 5 * np.median(
        [one_call() for _ in range(30)]) + 2000


def test_first_forward_of_one_network_does_not_stall_another():
    """A thread serves the textbook network while another runs the first
    forward of a wide network (Xavier on ~12M weights): the server keeps
    completing calls all through that first forward, and its slowest call
    stays well below the first forward's time (measured as a ratio in one
    run; a network lock or the GIL held across the initialization would
    make the slowest call as long as the whole first forward)."""
    net, x = served()
    big = nn.Sequential()
    big.add(nn.Dense(2048, activation="relu"), nn.Dense(2048),
            nn.Dense(2048))
    big.initialize(init=init.Xavier())
    started = threading.Event()
    done = threading.Event()
    finished = []          # (end time, duration) of every served call

    def serve():
        started.set()
        while not done.is_set():
            t = time.perf_counter()
            net(x)
            end = time.perf_counter()
            finished.append((end, end - t))

    server = threading.Thread(target=serve)
    server.start()
    started.wait()
    time.sleep(0.01)
    t0 = time.perf_counter()
    big(np.ones((1, 2048), dtype=np.float32))
    t1 = time.perf_counter()
    done.set()
    server.join()
    first_forward = t1 - t0
    during = [d for end, d in finished if t0 < end <= t1]
    # calls completed in each half of the first forward: the server was
    # never held for the whole of it
    mid = (t0 + t1) / 2
    assert any(t0 < end <= mid for end, _ in finished)
    assert any(mid < end <= t1 for end, _ in finished)
    assert len(during) > 10
    assert max(d for _, d in finished) < 0.5 * first_forward, \
        (max(d for _, d in finished), first_forward)


def test_two_first_forwards_run_at_once():
    """Two networks' first forwards do not queue behind one lock: each
    network has its own."""
    nets = []
    for _ in range(2):
        net = nn.Sequential()
        net.add(nn.Dense(1024), nn.Dense(1024))
        net.initialize(init=init.Xavier())
        nets.append(net)
    inside = threading.Barrier(2, timeout=20)
    results = []
    orig = nets[0]._lock

    class Probe:
        """Wraps a network's lock: both threads must be inside their own
        network's slow path at the same time."""

        def __init__(self, lock):
            self.lock = lock

        def __enter__(self):
            self.lock.__enter__()
            inside.wait()
            return self

        def __exit__(self, *exc):
            return self.lock.__exit__(*exc)

    for net in nets:
        net.__dict__["_lock"] = Probe(net._lock)
    threads = [threading.Thread(
        target=lambda n=n: results.append(n(np.ones((1, 64))).shape))
        for n in nets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert results == [(1, 1024), (1, 1024)]
    assert orig is nets[0]._lock.lock


def test_shared_parameter_initialized_once_across_networks():
    calls = []

    class Counting(init.Initializer):
        def _init_weight(self, name, data):
            calls.append(str(name))
            time.sleep(0.05)
            data[...] = 1

    a = nn.Sequential()
    a.add(nn.Dense(8, weight_initializer=Counting()))
    a.initialize()
    b = nn.Sequential()
    b.add(nn.Dense(8, params=a[0].collect_params()))
    threads = [threading.Thread(target=n, args=(np.ones((1, 3)),))
               for n in (a, b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1
    np.testing.assert_array_equal(a(np.ones((1, 3))), b(np.ones((1, 3))))


def test_thread_count_is_bounded_when_set():
    with pytest.raises(ValueError, match="at most 64"):
        fl.set_num_threads(10 ** 6)
    with pytest.raises(ValueError, match="1 to 64"):
        fl.set_num_threads(0)
    with pytest.raises(TypeError):
        fl.set_num_threads(2.5)
    n = fl.get_num_threads()
    net, x = served()
    assert net(x).shape == (1, 10)
    assert fl.get_num_threads() == n
