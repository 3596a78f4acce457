"""``net(x, out=y)``: the result written into the caller's array.

Every route and network kind gives exactly what ``net(x)`` gives; every
unusable ``out`` is refused with an OutputError that says why, before
anything is written or initialized."""

import threading

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import _plan, init, nn
from test_graphs import TwoIn, TwoOut


def textbook(units=256, classes=10, dtype="float32"):
    net = nn.Sequential()
    net.add(nn.Dense(units, activation="relu", dtype=dtype),
            nn.Dense(classes, dtype=dtype))
    net.initialize()
    return net


class Residual(nn.HybridBlock):
    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.inp = nn.Dense(16)
            self.d1 = nn.Dense(16, activation="relu")
            self.d2 = nn.Dense(16)

    def hybrid_forward(self, F, x):
        h = self.inp(x)
        return h + F.relu(self.d2(self.d1(h)))


class PyForward(nn.Block):
    """A plain Block with a Python forward: always the eager path."""

    def __init__(self, **kw):
        super().__init__(**kw)
        with self.name_scope():
            self.dense = nn.Dense(5)

    def forward(self, x):
        return self.dense(x) * 2.0


def lenet():
    net = nn.Sequential()
    net.add(nn.Conv2D(6, kernel_size=5, padding=2, activation="relu"),
            nn.MaxPool2D(pool_size=2, strides=2),
            nn.Conv2D(16, kernel_size=5, activation="relu"),
            nn.AvgPool2D(pool_size=2, strides=2),
            nn.Dense(120, activation="relu"), nn.Dense(10))
    net.initialize(init=init.Xavier())
    return net


def rand(*shape, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(shape).astype(dtype)


# ---------------------------------------------------------------------------
# The result is net(x)'s, written where asked


@pytest.mark.parametrize("route", ["auto", "own", "blas", "packed", "dot"])
@pytest.mark.parametrize("batch", [0, 1, 2, 7, 64, 300])
def test_out_equals_a_new_result_on_every_route(route, batch):
    net = textbook()
    x = rand(batch, 20, seed=batch)
    old = _plan.set_tuning(kernel_route=route)
    try:
        want = net(x)
        y = np.full((batch, 10), np.nan, np.float32)
        got = net(x, out=y)
        assert got is y
        np.testing.assert_array_equal(y, want)
    finally:
        _plan.set_tuning(*old)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_out_in_the_networks_dtype_and_on_the_first_call(dtype):
    net = textbook(dtype=dtype)
    x = rand(3, 20, dtype=dtype)
    y = np.empty((3, 10), dtype)
    assert net(x, out=y) is y          # the first call compiles the plan
    np.testing.assert_array_equal(y, net(x))


def test_out_with_inputs_that_are_converted():
    net = textbook()
    x64 = rand(4, 20, dtype=np.float64)
    want = net(x64)
    for x in (x64, np.asfortranarray(x64), x64.tolist(),
              np.ascontiguousarray(x64.astype(np.float32)[:, ::-1][:, ::-1]),
              x64.astype(">f4")):
        y = np.empty((4, 10), np.float32)
        np.testing.assert_array_equal(net(x, out=y), want)


def test_out_may_be_a_contiguous_slice_or_an_ndarray_subclass(tmp_path):
    net = textbook()
    x = rand(6, 20)
    big = np.zeros((10, 10), np.float32)
    net(x, out=big[2:8])
    np.testing.assert_array_equal(big[2:8], net(x))
    assert not big[:2].any() and not big[8:].any()
    mm = np.lib.format.open_memmap(tmp_path / "y.npy", mode="w+",
                                   dtype=np.float32, shape=(6, 10))
    assert net(x, out=mm) is mm
    np.testing.assert_array_equal(mm, net(x))


def test_out_reused_across_calls_never_leaks_old_values():
    net = textbook()
    y = np.empty((5, 10), np.float32)
    for seed in range(5):
        x = rand(5, 20, seed=seed)
        net(x, out=y)
        np.testing.assert_array_equal(y, net(x))


def test_out_in_graph_networks_several_inputs_and_outputs():
    net = Residual()
    net.initialize()
    x = rand(4, 9)
    y = np.empty((4, 16), np.float32)
    assert net(x, out=y) is y
    np.testing.assert_array_equal(y, net(x))

    two = TwoIn()
    two.initialize()
    a, b = rand(3, 5, seed=1), rand(3, 7, seed=2)
    y = np.empty((3, 6), np.float32)
    assert two(a, b, out=y) is y
    np.testing.assert_array_equal(y, two(a, b))

    heads = TwoOut()
    heads.initialize()
    x = rand(3, 5, seed=3)
    want = heads(x)
    outs = (np.empty((3, 3), np.float32), np.empty((3, 2), np.float32))
    got = heads(x, out=outs)
    assert got is outs
    np.testing.assert_array_equal(outs[0], want[0])
    np.testing.assert_array_equal(outs[1], want[1])
    # a list is taken too; a tuple comes back
    as_list = [np.empty((3, 3), np.float32), np.empty((3, 2), np.float32)]
    got = heads(x, out=as_list)
    assert isinstance(got, tuple) and got[0] is as_list[0]
    np.testing.assert_array_equal(as_list[1], want[1])


def test_out_in_a_convolutional_network():
    net = lenet()
    x = rand(3, 1, 28, 28)
    want = net(x)
    y = np.empty((3, 10), np.float32)
    assert net(x, out=y) is y
    np.testing.assert_array_equal(y, want)


def test_out_on_the_eager_path():
    net = PyForward()
    net.initialize()
    x = rand(2, 3)
    want = net(x)
    y = np.empty((2, 5), np.float32)
    assert net(x, out=y) is y
    np.testing.assert_array_equal(y, want)
    with pytest.raises(fl.OutputError, match=r"shape \(2, 5\)"):
        net(x, out=np.empty((2, 4), np.float32))


def test_hooks_see_the_callers_out():
    net = textbook()
    seen = []
    net[1].register_forward_hook(lambda b, i, o: seen.append(o))
    x = rand(2, 20)
    want = net(x)
    y = np.empty((2, 10), np.float32)
    assert net(x, out=y) is y
    np.testing.assert_array_equal(y, want)
    # the hooked layer is called by the eager Sequential, without out
    assert len(seen) == 2 and seen[1] is not y
    z = np.empty((2, 10), np.float32)
    net[1].register_forward_hook(lambda b, i, o: seen.append(o))
    h = rand(2, 256)
    assert net[1](h, out=z) is z and seen[-1] is z


def test_out_from_several_threads_each_its_own():
    net = textbook(units=512)
    xs = [rand(64, 20, seed=s) for s in range(4)]
    wants = [net(x) for x in xs]
    errors = []

    def work(k):
        y = np.empty((64, 10), np.float32)
        try:
            for _ in range(200):
                net(xs[k], out=y)
                if not np.array_equal(y, wants[k]):
                    errors.append(k)
                    return
        except Exception as exc:   # pragma: no cover - reported below
            errors.append(exc)

    old = fl.get_num_threads()
    fl.set_num_threads(2)
    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        fl.set_num_threads(old)
    assert errors == []


# ---------------------------------------------------------------------------
# What out cannot be


def bad_outs():
    y = np.empty((4, 10), np.float32)
    ro = np.empty((4, 10), np.float32)
    ro.flags.writeable = False
    raw = np.empty(4 * 10 * 4 + 1, np.uint8)
    misaligned = raw[1:].view(np.float32).reshape(4, 10)
    return [
        ([0.0] * 40, "must be a NumPy array"),
        (y.astype(np.float64), "dtype float32"),
        (y.astype(">f4"), "dtype float32"),
        (np.empty((3, 10), np.float32), r"shape \(4, 10\)"),
        (np.empty((4, 11), np.float32), r"shape \(4, 10\)"),
        (np.empty((4, 10, 1), np.float32), r"shape \(4, 10\)"),
        (np.empty(40, np.float32), r"shape \(4, 10\)"),
        (np.empty((4, 20), np.float32)[:, ::2], "C-contiguous"),
        (np.asfortranarray(y), "C-contiguous"),
        (misaligned, "aligned"),
        (ro, "read-only"),
        ((y,), "must be a NumPy array"),
    ]


@pytest.mark.parametrize("case", range(len(bad_outs())))
def test_unusable_out_is_refused_and_left_alone(case, ref):
    net = textbook()
    x = rand(4, 20)
    net(x)                                   # compiled: the fast path
    bad, message = bad_outs()[case]
    before = np.array(bad, copy=True) if isinstance(bad, np.ndarray) \
        else None
    snap = ref.snapshot(net)
    with pytest.raises(fl.OutputError, match=message):
        net(x, out=bad)
    if before is not None and before.dtype.kind == "f":
        np.testing.assert_array_equal(bad, before)
    assert ref.snapshot(net) == snap
    assert issubclass(fl.OutputError, (fl.FastLazyError, ValueError))


@pytest.mark.parametrize("case", range(len(bad_outs())))
def test_unusable_out_on_the_first_call_initializes_nothing(case, ref):
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    net.initialize()
    bad, message = bad_outs()[case]
    snap = ref.snapshot(net)
    with pytest.raises(fl.OutputError, match=message):
        net(rand(4, 20), out=bad)
    assert ref.snapshot(net) == snap
    assert net[0].weight.state == "deferred" and net._plan is None


def test_out_sharing_memory_with_the_input_is_refused():
    net = nn.Sequential()
    net.add(nn.Dense(8, activation="relu"), nn.Dense(8))
    net.initialize()
    x = rand(4, 8)
    net(x)
    keep = x.copy()
    for out in (x, x[:], x.reshape(4, 8)):
        with pytest.raises(fl.OutputError, match="shares memory with the "
                                                 "input"):
            net(x, out=out)
    np.testing.assert_array_equal(x, keep)
    # a strided input the plan converts, still the caller's memory
    buf = np.zeros((4, 16), np.float32)
    buf[:, ::2] = x
    with pytest.raises(fl.OutputError, match="input"):
        net(buf[:, ::2], out=buf.reshape(8, 8)[:4])
    # the same strided input into an array of its own: allowed
    y = np.empty((4, 8), np.float32)
    np.testing.assert_array_equal(net(buf[:, ::2], out=y), net(x))


def test_out_sharing_memory_with_a_parameter_is_refused():
    net = nn.Sequential()
    net.add(nn.Dense(8, in_units=8))
    net.initialize()
    w = net[0].weight.data()
    keep = w.copy()
    with pytest.raises(fl.OutputError, match="parameter"):
        net(rand(8, 8), out=w.T)    # the storage, C-contiguous
    np.testing.assert_array_equal(net[0].weight.data(), keep)


def test_several_outputs_need_a_tuple_of_separate_arrays():
    net = TwoOut()
    net.initialize()
    x = rand(3, 5)
    net(x)
    a, b = np.empty((3, 3), np.float32), np.empty((3, 2), np.float32)
    with pytest.raises(fl.OutputError, match="tuple of 2"):
        net(x, out=a)
    with pytest.raises(fl.OutputError, match="tuple of 2"):
        net(x, out=(a,))
    with pytest.raises(fl.OutputError, match=r"out\[1\] must have shape"):
        net(x, out=(a, np.empty((3, 3), np.float32)))
    shared = np.empty(9, np.float32)
    with pytest.raises(fl.OutputError, match="share memory"):
        net(x, out=(shared.reshape(3, 3), shared[:6].reshape(3, 2)))
    # one array for a one-output network, not a tuple
    one = textbook()
    with pytest.raises(fl.OutputError, match="returns one array"):
        one(rand(2, 20), out=(np.empty((2, 10), np.float32),))
