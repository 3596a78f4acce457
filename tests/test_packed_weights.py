"""The packed copy of Dense weights that batched forward passes run on.

The plan keeps each big Dense weight packed into the batched kernel's panel
layout.  The contract it must keep: whatever is written into the weights --
through a ``data()`` view held for a long time, a temporary one, a view of a
view, ``set_data``, re-initialization, loading, casting -- is what the next
call computes with.  NumPy in float64 is the oracle throughout.
"""

import pickle
import threading

import numpy as np
import pytest

from fastlazy import _plan, init, nn

# 300 -> 256 is above the packed kernel's size threshold; 8 rows use it.
IN, HID, OUT, ROWS = 300, 256, 70, 8


@pytest.fixture
def net():
    net = nn.Sequential()
    net.add(nn.Dense(HID, activation="relu"), nn.Dense(OUT))
    net.initialize(init=init.Xavier())
    return net


@pytest.fixture
def x():
    return np.random.default_rng(0).standard_normal((ROWS, IN)).astype(
        np.float32)


def packed(p):
    """True when the parameter's packed copy is current (no live views)."""
    live, current = _plan.packed_state(p)
    return live == 0 and current


def test_batched_call_packs_and_reuses(net, x, ref):
    w = net[0].weight
    assert _plan.packed_state(w) == (0, False)          # nothing packed yet
    ref.forward_matches(net, x)
    # forward_matches read the weights through data(): that counts as a
    # write, so the next call packs again
    net(x)
    assert packed(w)
    before = net(x)
    assert packed(w)                              # no write, no repack
    np.testing.assert_array_equal(net(x), before)


def test_one_row_does_not_pack(net, x):
    net(x[:1])
    assert _plan.packed_state(net[0].weight) == (0, False)


def test_small_layer_does_not_pack(x):
    small = nn.Dense(10, in_units=IN)             # 10 outputs: small kernel
    small.initialize()
    small(x)
    assert _plan.packed_state(small.weight) == (0, False)


def test_write_through_held_view_is_seen(net, x, ref):
    net(x)
    view = net[0].weight.data()
    assert _plan.packed_state(net[0].weight) == (1, False)
    for value in (0.0, 0.01, -0.02):
        view[...] = value
        y = ref.forward_matches(net, x)           # no repack while held
        assert _plan.packed_state(net[0].weight)[0] >= 1
    del view
    y2 = ref.forward_matches(net, x)
    np.testing.assert_allclose(y2, y, rtol=1e-6, atol=1e-6)


def test_write_through_temporary_view_is_seen(net, x, ref):
    net(x)
    net[0].weight.data()[:, :5] = 3.0             # the view dies at once
    assert _plan.packed_state(net[0].weight)[0] == 0
    y = net(x)
    assert packed(net[0].weight)
    expect = ref.forward_matches(net, x)
    np.testing.assert_allclose(y, expect, rtol=1e-5, atol=1e-4)


def test_views_of_views_keep_the_weights_live(net, x, ref):
    net(x)
    part = net[0].weight.data()[10:20]            # derived view only
    row = part[3]
    del part
    assert _plan.packed_state(net[0].weight)[0] == 1
    row[...] = 5.0
    ref.forward_matches(net, x)
    mv = memoryview(row)                          # buffer exports too
    del row
    assert _plan.packed_state(net[0].weight)[0] == 1
    np.asarray(mv)[...] = -5.0
    ref.forward_matches(net, x)
    del mv
    assert _plan.packed_state(net[0].weight)[0] == 0
    ref.forward_matches(net, x)


def test_transposed_view_and_ufunc_out_are_seen(net, x, ref):
    net(x)
    w = net[0].weight.data()
    np.multiply(w, 2.0, out=w)
    w.T[0] = 1.0
    del w
    ref.forward_matches(net, x)


@pytest.mark.parametrize("change", ["set_data", "force_reinit", "load",
                                    "restore"])
def test_every_write_path_is_seen(change, net, x, ref, tmp_path):
    net(x)
    net(x)
    assert packed(net[0].weight)
    rng = np.random.default_rng(5)
    if change == "set_data":
        net[0].weight.set_data(rng.standard_normal((HID, IN)) * 0.05)
    elif change == "force_reinit":
        net.initialize(init=init.Normal(0.3), force_reinit=True)
    elif change == "load":
        other = nn.Sequential()
        other.add(nn.Dense(HID, activation="relu"), nn.Dense(OUT))
        other.initialize(init=init.Normal(0.2))
        other(x)
        other.save_parameters(str(tmp_path / "p.npz"))
        net.load_parameters(str(tmp_path / "p.npz"))
    else:
        snap = net[0].weight._snapshot(copy_values=True)
        net[0].weight.set_data(np.zeros((HID, IN)))
        net(x)
        net[0].weight._restore(snap)
    assert not packed(net[0].weight)
    y = ref.forward_matches(net, x)
    assert np.isfinite(y).all()


def test_cast_packs_in_the_new_dtype(net, x, ref):
    net(x)
    net.cast("float64")
    ref.forward_matches(net, x.astype(np.float64))
    net(x.astype(np.float64))
    assert packed(net[0].weight)
    ref.forward_matches(net, x.astype(np.float64))


def test_isa_switch_repacks_for_the_new_layout(net, x, ref, isa_restore):
    out = []
    for level in (0, 3, 4, None):
        if isa_restore.set_isa(level) != level and level is not None:
            continue                     # this CPU lacks that level
        out.append(net(x))
        out.append(net(x))                        # packed copy reused
        assert packed(net[0].weight)
    for o in out[1:]:
        np.testing.assert_allclose(o, out[0], rtol=1e-5, atol=1e-5)
    ref.forward_matches(net, x)


def test_float64_packed(ref):
    net = nn.Sequential()
    net.add(nn.Dense(200, activation="tanh", dtype="float64"),
            nn.Dense(180, dtype="float64"))
    net.initialize(init=init.Xavier())
    x = np.random.default_rng(1).standard_normal((29, 257))
    ref.forward_matches(net, x)
    net(x)
    assert packed(net[0].weight) and packed(net[1].weight)
    ref.forward_matches(net, x)


def test_pickled_parameter_starts_without_a_packed_copy(net, x, ref):
    net(x)
    net(x)
    clone = pickle.loads(pickle.dumps(net))
    assert _plan.packed_state(clone[0].weight) == (0, False)
    np.testing.assert_array_equal(clone(x), net(x))


def test_shared_weights_pack_once_and_follow_writes(x, ref):
    a = nn.Dense(HID, in_units=IN, activation="relu")
    a.initialize()
    b = nn.Dense(HID, in_units=IN, activation="relu",
                 params=a.collect_params())
    a(x)
    b(x)
    assert packed(a.weight) and a.weight is b.weight
    a.weight.data()[...] = 0.5
    np.testing.assert_array_equal(a(x), b(x))
    ref.forward_matches(b, x)


def test_concurrent_calls_with_writes_between(net, x, ref):
    """Threads run batched calls on one network; between rounds the main
    thread writes new weights through data().  Every call in a round must
    see that round's weights."""
    xs = [x, np.concatenate([x, x, x]), x[:5]]
    net(x)
    for rnd in range(6):
        net[0].weight.data()[...] = np.random.default_rng(rnd).standard_normal(
            (HID, IN)) * 0.05
        expect = [net(v) for v in xs]
        errors = []

        def worker(k):
            try:
                for i in range(30):
                    v = xs[(k + i) % 3]
                    np.testing.assert_array_equal(net(v), expect[(k + i) % 3])
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=worker, args=(k,))
                   for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors, errors[0]
    ref.forward_matches(net, x)


def test_forced_packed_route_covers_every_row_count(ref):
    old = _plan.set_tuning(kernel_route="packed")
    try:
        net = nn.Sequential()
        net.add(nn.Dense(33, activation="sigmoid"), nn.Dense(7))
        net.initialize(init=init.Xavier())
        rng = np.random.default_rng(2)
        for n in (1, 2, 5, 12, 13, 31):
            ref.forward_matches(net, rng.standard_normal((n, 19)))
            net(rng.standard_normal((n, 19)))
            assert packed(net[0].weight)
    finally:
        _plan.set_tuning(*old)


def test_set_tuning_routes():
    old = _plan.set_tuning(kernel_route="packed")
    try:
        assert _plan.set_tuning()[0] == "packed"
        assert len(_plan.set_tuning()) == 5
        with pytest.raises(ValueError, match="kernel_route"):
            _plan.set_tuning(kernel_route="fastest")
    finally:
        _plan.set_tuning(*old)


def test_pack_max_bytes_bounds_the_copies(net, x, ref):
    old = _plan.set_tuning(pack_max_bytes=HID * IN * 4 - 1)
    try:
        net(x)
        assert _plan.packed_state(net[0].weight) == (0, False)   # too big
        ref.forward_matches(net, x)
        _plan.set_tuning(pack_max_bytes=HID * IN * 4)
        net(x)
        assert packed(net[0].weight)
        ref.forward_matches(net, x)
    finally:
        _plan.set_tuning(*old)


# ---------------------------------------------------------------------------
# The (M, K) row copy of a layer with few outputs (the dot kernel), for one
# or two rows: the same contract as the panels


@pytest.fixture
def head():
    """256 -> 10: one or two rows run it on its row copy."""
    net = nn.Sequential()
    net.add(nn.Dense(64, activation="relu"), nn.Dense(10))
    net.initialize(init=init.Xavier())
    return net


@pytest.mark.parametrize("rows", [1, 2])
def test_narrow_layer_runs_on_its_row_copy(head, rows, ref):
    x = np.random.default_rng(4).standard_normal((rows, 256)).astype(
        np.float32)
    ref.forward_matches(head, x)
    head(x)
    assert packed(head[1].weight)
    assert _plan.packed_state(head[0].weight) == (0, False)   # 64 wide
    before = head(x)
    np.testing.assert_array_equal(head(x), before)


def test_narrow_layer_keeps_no_copy_from_three_rows(head):
    head(np.ones((3, 256), np.float32))
    assert _plan.packed_state(head[1].weight) == (0, False)


def test_row_copy_follows_every_write(head, ref):
    x = np.random.default_rng(5).standard_normal((1, 256)).astype(
        np.float32)
    head(x)
    w = head[1].weight
    view = w.data()                                  # held: read in place
    for value in (0.5, -0.25):
        view[...] = value
        ref.forward_matches(head, x)
    del view
    head(x)
    assert packed(w)
    w.data()[3] = 2.0                                # temporary view
    y = head(x)
    assert packed(w)
    np.testing.assert_allclose(y, ref.forward(head, x)[0], rtol=1e-5,
                               atol=1e-5)
    w.set_data(np.random.default_rng(6).standard_normal((10, 64)))
    ref.forward_matches(head, x)
    head.cast("float64")                             # a new copy, or none
    ref.forward_matches(head, x.astype(np.float64))
    ref.forward_matches(head, x.astype(np.float64))


def test_one_weight_alternating_layouts_stays_right(ref):
    """Forced routes make one weight switch between its panel copy and
    its row copy: each call must read the copy it asked for."""
    net = nn.Sequential()
    net.add(nn.Dense(70, in_units=40))
    net.initialize(init=init.Xavier())
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3, 40)).astype(np.float32)
    old = _plan.set_tuning()
    try:
        for route in ("packed", "dot", "packed", "auto", "dot"):
            _plan.set_tuning(kernel_route=route)
            for _ in range(2):
                ref.forward_matches(net, x)
                net(x)
    finally:
        _plan.set_tuning(*old)
