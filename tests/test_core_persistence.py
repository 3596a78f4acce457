"""save_parameters / load_parameters (.npz, structural keys, atomic),
pickle and copy.deepcopy in every state."""

import copy
import os
import pathlib
import pickle

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn


def mlp(in_units=0, dtype="float32"):
    net = nn.Sequential()
    net.add(nn.Dense(6, activation="relu", in_units=in_units, dtype=dtype),
            nn.Dense(3, dtype=dtype))
    return net


X = np.random.default_rng(0).standard_normal((4, 5))


def trained(dtype="float32"):
    net = mlp(dtype=dtype)
    net.initialize(init=init.Normal(0.5))
    net(X)
    rng = np.random.default_rng(9)
    for p in net.collect_params().values():
        p.set_data(rng.standard_normal(p.shape))
    return net


# ---------------------------------------------------------------------------
# save / load


def test_save_uses_structural_keys_and_exact_name(tmp_path, ref):
    net = trained()
    for name in ("model.params", "weights", "w.npz", "dir.v2.bin"):
        path = tmp_path / name
        net.save_parameters(str(path))
        assert path.exists()
        assert not (tmp_path / (name + ".npz")).exists()
        with np.load(path) as f:
            assert f.files == ["0.weight", "0.bias", "1.weight", "1.bias"]
            np.testing.assert_array_equal(f["0.weight"],
                                          net[0].weight.data())
            assert f["0.weight"].shape == (6, 5)
            assert f["0.weight"].dtype == np.float32
    assert sorted(os.listdir(tmp_path)) == sorted(
        ["model.params", "weights", "w.npz", "dir.v2.bin"])


def test_save_accepts_pathlike(tmp_path):
    net = trained()
    path = tmp_path / "p.params"
    net.save_parameters(path)
    other = mlp()
    other.load_parameters(pathlib.Path(path))
    np.testing.assert_array_equal(other(X), net(X))


def test_round_trip_values_exact(tmp_path, ref):
    net = trained()
    path = str(tmp_path / "net.params")
    net.save_parameters(path)
    fresh = mlp()
    fresh.initialize()
    fresh(X)
    fresh.load_parameters(path)
    for p, q in zip(fresh.collect_params().values(),
                    net.collect_params().values()):
        assert p.data().tobytes() == q.data().tobytes()
    np.testing.assert_array_equal(fresh(X), net(X))


@pytest.mark.parametrize("state", ["unset", "deferred"])
def test_load_into_lazy_net_fills_shapes(tmp_path, state, ref):
    net = trained()
    path = str(tmp_path / "net.params")
    net.save_parameters(path)
    lazy = mlp()
    if state == "deferred":
        lazy.initialize()
    lazy.load_parameters(path)
    assert ref.shapes(lazy) == [(6, 5), (6,), (3, 6), (3,)]
    assert ref.states(lazy) == ["initialized"] * 4
    assert repr(lazy).splitlines()[1] == \
        "  (0): Dense(5 -> 6, Activation(relu))"
    assert "(6, 5)" in repr(lazy.collect_params())
    np.testing.assert_array_equal(lazy[0].weight.data(), net[0].weight.data())
    np.testing.assert_array_equal(lazy(X), net(X))


def test_file_independent_of_name_counters(tmp_path):
    net = trained()
    path = str(tmp_path / "net.params")
    net.save_parameters(path)
    for _ in range(7):
        nn.Dense(2)
        nn.Sequential()
    other = mlp()
    assert other[0].name != net[0].name
    other.load_parameters(path)
    np.testing.assert_array_equal(other(X), net(X))


def test_nested_keys(tmp_path):
    inner = nn.Sequential()
    inner.add(nn.Dense(4), nn.Dense(3))
    outer = nn.Sequential()
    outer.add(inner, nn.Dense(2))
    outer.initialize()
    outer(X)
    path = str(tmp_path / "n.params")
    outer.save_parameters(path)
    with np.load(path) as f:
        assert f.files == ["0.0.weight", "0.0.bias", "0.1.weight",
                           "0.1.bias", "1.weight", "1.bias"]
    inner2 = nn.Sequential()
    inner2.add(nn.Dense(4), nn.Dense(3))
    outer2 = nn.Sequential()
    outer2.add(inner2, nn.Dense(2))
    outer2.load_parameters(path)
    np.testing.assert_array_equal(outer2(X), outer(X))


def test_save_deferred_raises_and_writes_nothing(tmp_path):
    net = mlp()
    net.initialize()
    path = tmp_path / "x.params"
    with pytest.raises(fl.DeferredInitializationError) as exc:
        net.save_parameters(str(path))
    assert net[0].weight.name in str(exc.value)
    assert not path.exists()
    assert os.listdir(tmp_path) == []
    # an existing file is left untouched
    path.write_bytes(b"old")
    with pytest.raises(fl.DeferredInitializationError):
        net.save_parameters(str(path))
    assert path.read_bytes() == b"old"
    # build() makes it saveable before any data exists
    net.build((None, 5))
    net.save_parameters(str(path))
    with np.load(path) as f:
        assert f["0.weight"].shape == (6, 5)


def test_allow_missing(tmp_path, ref):
    net = trained()
    path = str(tmp_path / "part.params")
    net[0:1].save_parameters(path)        # only '0.weight', '0.bias'
    lazy = mlp()
    lazy.initialize()
    before = ref.snapshot(lazy)
    with pytest.raises(fl.ParameterFileError) as exc:
        lazy.load_parameters(path)
    assert "1.weight" in str(exc.value) and "allow_missing" in str(exc.value)
    assert ref.snapshot(lazy) == before
    lazy.load_parameters(path, allow_missing=True)
    assert ref.states(lazy) == ["initialized", "initialized", "deferred",
                                "initialized"]
    assert lazy[1].weight.shape == (3, -1)
    np.testing.assert_array_equal(lazy[0].weight.data(), net[0].weight.data())
    ref.forward_matches(lazy, X)
    assert lazy[1].weight.shape == (3, 6)


def test_ignore_extra(tmp_path, ref):
    big = nn.Sequential()
    big.add(nn.Dense(6, activation="relu"), nn.Dense(3), nn.Dense(2))
    big.initialize()
    big(X)
    path = str(tmp_path / "big.params")
    big.save_parameters(path)
    small = mlp()
    small.initialize()
    before = ref.snapshot(small)
    with pytest.raises(fl.ParameterFileError) as exc:
        small.load_parameters(path)
    assert "2.weight" in str(exc.value) and "ignore_extra" in str(exc.value)
    assert ref.snapshot(small) == before
    small.load_parameters(path, ignore_extra=True)
    np.testing.assert_array_equal(small[1].weight.data(),
                                  big[1].weight.data())


def _write_npz(path, arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)


@pytest.mark.parametrize("state", ["unset", "deferred", "initialized"])
def test_failed_load_changes_nothing(tmp_path, state, ref):
    net = mlp()
    if state != "unset":
        net.initialize()
    if state == "initialized":
        net(X)
    good = {"0.weight": np.ones((6, 5), np.float32),
            "0.bias": np.ones(6, np.float32),
            "1.weight": np.ones((3, 6), np.float32),
            "1.bias": np.ones(3, np.float32)}
    cases = {
        # the last key is wrong: the first ones must not have been copied
        "bad_last_shape": dict(good, **{"1.bias": np.ones(4, np.float32)}),
        "bad_rank": dict(good, **{"1.weight": np.ones((3, 6, 1),
                                                       np.float32)}),
        "wrong_in_units": dict(good, **{"0.weight": np.ones((6, 7),
                                                             np.float32)})
        if state == "initialized" else None,
        "dtype": dict(good, **{"1.bias": np.ones(3, np.float64)}),
        "strings": dict(good, **{"1.bias": np.array(["a", "b", "c"])}),
        "empty": dict(good, **{"1.bias": np.ones(0, np.float32)}),
        "missing": {k: v for k, v in good.items() if k != "1.bias"},
        "extra": dict(good, **{"2.weight": np.ones(2, np.float32)}),
    }
    before = ref.snapshot(net)
    for name, arrays in cases.items():
        if arrays is None:
            continue
        path = tmp_path / f"{name}.params"
        _write_npz(path, arrays)
        with pytest.raises(fl.ParameterFileError) as exc:
            net.load_parameters(str(path))
        assert isinstance(exc.value, ValueError)
        assert ref.snapshot(net) == before, name
    corrupt = tmp_path / "corrupt.params"
    corrupt.write_bytes(b"PK\x03\x04garbage" * 10)
    with pytest.raises(fl.ParameterFileError):
        net.load_parameters(str(corrupt))
    other = tmp_path / "other.params"
    other.write_bytes(b"hello world, not parameters")
    with pytest.raises(fl.ParameterFileError):
        net.load_parameters(str(other))
    with pytest.raises(FileNotFoundError):
        net.load_parameters(str(tmp_path / "nope.params"))
    assert ref.snapshot(net) == before
    # the good file still loads
    _write_npz(tmp_path / "good.params", good)
    net.load_parameters(str(tmp_path / "good.params"))
    np.testing.assert_array_equal(net[0].weight.data(), 1)


def test_load_shape_error_names_key_and_shapes(tmp_path):
    net = trained()
    path = str(tmp_path / "net.params")
    net.save_parameters(path)
    other = mlp(in_units=7)
    with pytest.raises(fl.ParameterFileError) as exc:
        other.load_parameters(path)
    msg = str(exc.value)
    assert "0.weight" in msg and "(6, 5)" in msg and "(6, 7)" in msg


def test_dtype_mismatch_and_cast(tmp_path):
    net64 = trained("float64")
    path = str(tmp_path / "f64.params")
    net64.save_parameters(path)
    with np.load(path) as f:
        assert f["0.weight"].dtype == np.float64
    net32 = mlp()
    with pytest.raises(fl.ParameterFileError, match="cast_dtype"):
        net32.load_parameters(path)
    net32.load_parameters(path, cast_dtype=True)
    assert net32[0].weight.dtype == np.float32
    np.testing.assert_allclose(net32(X), net64(X), rtol=1e-5, atol=1e-5)
    again = mlp(dtype="float64")
    again.load_parameters(path)
    np.testing.assert_array_equal(again(X), net64(X))


def test_tied_parameters_save_load(tmp_path):
    shared = nn.Dense(5, activation="tanh")
    net = nn.Sequential()
    net.add(nn.Dense(5), shared, nn.Dense(5, params=shared.collect_params()))
    net.initialize()
    net(X)
    path = str(tmp_path / "tied.params")
    net.save_parameters(path)
    shared2 = nn.Dense(5, activation="tanh")
    net2 = nn.Sequential()
    net2.add(nn.Dense(5), shared2,
             nn.Dense(5, params=shared2.collect_params()))
    net2.load_parameters(path)
    assert net2[1].weight is net2[2].weight
    np.testing.assert_array_equal(net2(X), net(X))


# ---------------------------------------------------------------------------
# pickle and deepcopy in every state


def _pickle_copy(obj):
    return pickle.loads(pickle.dumps(obj))


COPIERS = {"deepcopy": copy.deepcopy, "pickle": _pickle_copy}


def make(state):
    net = mlp()
    if state in ("deferred", "initialized"):
        net.initialize(init=init.Normal(0.3))
    if state == "initialized":
        net(X)
    return net


@pytest.mark.parametrize("how", COPIERS)
@pytest.mark.parametrize("state", ["unset", "deferred", "initialized"])
def test_copy_keeps_state(state, how, ref):
    net = make(state)
    before = ref.snapshot(net)
    dup = COPIERS[how](net)
    assert ref.states(dup) == ref.states(net)
    assert ref.shapes(dup) == ref.shapes(net)
    assert repr(dup) == repr(net)
    assert repr(dup.collect_params()) == repr(net.collect_params())
    assert all(p is not q for p, q in zip(dup.collect_params().values(),
                                          net.collect_params().values()))
    if state == "unset":
        with pytest.raises(fl.DeferredInitializationError):
            dup(X)
        dup.initialize()
    y = dup(X)
    assert y.shape == (4, 3)
    ref.forward_matches(dup, X)
    # the original is untouched by anything done to the copy
    assert ref.snapshot(net) == before
    if state == "initialized":
        np.testing.assert_array_equal(y, net(X))
        dup[0].weight.data()[...] = 0
        assert ref.snapshot(net) == before
    if state == "deferred":
        # the copy carries the same random key: same weights once inferred
        np.testing.assert_array_equal(y, net(X))


@pytest.mark.parametrize("how", COPIERS)
def test_copy_of_parameter(how):
    for p in (fl.Parameter("w", shape=(2, -1)),
              fl.Parameter("w", shape=(2, 3), init=init.One())):
        p.initialize()
        q = COPIERS[how](p)
        assert (q.name, q.shape, q.state, q.dtype) == (p.name, p.shape,
                                                       p.state, p.dtype)
        if p.state == "initialized":
            np.testing.assert_array_equal(q.data(), p.data())
            assert not np.shares_memory(q.data(), p.data())


@pytest.mark.parametrize("how", COPIERS)
def test_copy_keeps_tying(how):
    shared = nn.Dense(4)
    net = nn.Sequential()
    net.add(shared, nn.Dense(4, params=shared.collect_params()))
    net.initialize()
    dup = COPIERS[how](net)
    assert dup[0].weight is dup[1].weight
    assert dup[0].weight is not shared.weight
    dup(np.ones((1, 4)))
    assert shared.weight.state == "deferred"


@pytest.mark.parametrize("how", COPIERS)
def test_copy_float64_and_dense_layout(how, ref):
    net = mlp(dtype="float64")
    net.initialize()
    net(X)
    dup = COPIERS[how](net)
    assert dup[0].weight.dtype == np.float64
    assert dup[0].weight.data().shape == (6, 5)
    np.testing.assert_array_equal(dup(X), net(X))
    ref.forward_matches(dup, X)


def test_copy_after_failed_forward_keeps_deferred(ref):
    net = nn.Sequential()
    net.add(nn.Dense(4), nn.Dense(2, in_units=3))
    net.initialize()
    with pytest.raises(fl.ShapeError):
        net(X)
    dup = copy.deepcopy(net)
    assert ref.states(dup) == ref.states(net)
    assert dup[0].weight.state == "deferred"


def test_deduplicated_file_loads_into_tied_net(tmp_path, ref):
    """save_parameters(deduplicate=True) keeps one key per shared
    parameter; loading it back must not call the other keys missing."""
    def tied():
        shared = nn.Dense(4, activation="relu")
        net = nn.Sequential()
        net.add(nn.Dense(4), shared,
                nn.Dense(4, params=shared.collect_params()), nn.Dense(2))
        return net

    net = tied()
    net.initialize(init=init.Normal(0.5))
    net(X)
    path = str(tmp_path / "dedup.params")
    net.save_parameters(path, deduplicate=True)
    with np.load(path) as f:
        assert f.files == ["0.weight", "0.bias", "1.weight", "1.bias",
                           "3.weight", "3.bias"]
    for state in ("unset", "deferred", "initialized"):
        other = tied()
        if state != "unset":
            other.initialize()
        if state == "initialized":
            other(X)
        other.load_parameters(path)
        assert ref.states(other) == ["initialized"] * 6
        np.testing.assert_array_equal(other(X), net(X))
    # a file that lacks every key of a shared parameter is still refused
    part = str(tmp_path / "part.params")
    net[0:1].save_parameters(part)
    other = tied()
    with pytest.raises(fl.ParameterFileError, match="1.weight"):
        other.load_parameters(part, ignore_extra=True)


@pytest.mark.parametrize("protocol", [4, 5])
def test_pickled_network_is_its_parameters_plus_under_1kb(protocol):
    """No plan, packed copy, lock or hook travels; the values go as raw
    bytes (out of band with protocol 5)."""
    import pickle
    net = nn.Sequential()
    net.add(nn.Dense(256, activation="relu"), nn.Dense(10))
    net.initialize()
    x = np.ones((64, 20), np.float32)
    y = net(x)                      # a plan and packed weights exist now
    params = sum(p.data().nbytes for p in net.collect_params().values())
    blob = pickle.dumps(net, protocol=protocol)
    assert len(blob) < params + 1024, (len(blob), params)
    back = pickle.loads(blob)
    np.testing.assert_array_equal(back(x), y)
    for p in back.collect_params().values():
        assert p.data().flags.writeable
    buffers = []
    blob = pickle.dumps(net, protocol=5, buffer_callback=buffers.append)
    assert len(blob) < 1024 and len(buffers) == 4
    back = pickle.loads(blob, buffers=buffers)
    np.testing.assert_array_equal(back(x), y)
