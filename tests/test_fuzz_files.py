"""Mutated-file fuzzing of the parameter readers and ``load_parameters``.

Every real MXNet file in ``tests/data/mxnet`` and fastlazy's own ``.npz``
files are damaged in many ways -- flipped and overwritten bytes, header
integers set to extremes, truncation, inserted, deleted and duplicated runs,
splices of two files -- and then:

* ``read_params`` returns owned arrays or raises ``ParameterFileError``,
  never anything else, and never allocates much more than the file's size
  (tracemalloc peak);
* ``load_parameters`` into a deferred and an initialized network either
  loads the file whole or raises ``ParameterFileError`` (or
  ``ParameterShapeError``) naming the file, with every parameter unchanged
  byte for byte; the networks keep working.

The normal suite runs a few hundred mutations; ``python -m pytest -m slow``
runs ``FASTLAZY_FILE_MUTATIONS`` (default 100,000) of them.
"""

import io
import os
import random
import struct
import tracemalloc
import zipfile

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import nn
from fastlazy.mxnet.format import read_params
from conftest import snapshot
from test_mxnet_load import DATA, MLPS, PARAM_FILE, Target, layout

LONG = int(os.environ.get("FASTLAZY_FILE_MUTATIONS", "100000"))
FIXTURES = sorted(p.name for p in DATA.glob("*.params"))
INTERESTING = [0, 1, 2, 3, 7, 8, 31, 32, 33, 0x7F, 0x80, 0xFF, 0x7FFF,
               0xFFFF, 2**31 - 1, 2**31, 2**32 - 1, 2**32, 2**40, 2**62,
               2**63 - 1, 2**63, 2**64 - 1]


def header_offsets(data):
    """Offsets outside the payloads (where the reader's checks are), or
    all of them when the file cannot be walked."""
    try:
        _, payloads, _ = layout(data)
    except Exception:
        return list(range(len(data)))
    inside = np.zeros(len(data), bool)
    for start, stop in payloads:
        inside[start:stop] = True
    return np.flatnonzero(~inside).tolist()


def mutate(data, rng, header, others):
    """``data`` damaged by one to three random operations."""
    out = bytearray(data)
    for _ in range(rng.randint(1, 3)):
        if not out:
            out += bytes([rng.randrange(256)])
        n = len(out)
        op = rng.randrange(10)
        if op == 0:                                   # flip a bit
            i = rng.randrange(n)
            out[i] ^= 1 << rng.randrange(8)
        elif op == 1:                                 # overwrite header bytes
            for i in rng.sample(header, min(len(header), rng.randint(1, 4))):
                if i < n:
                    out[i] = rng.randrange(256)
        elif op in (2, 3):                            # an extreme integer
            width = rng.choice([4, 8])
            i = rng.choice(header) if header else 0
            i = min(i - i % 4, max(0, n - width))
            value = rng.choice(INTERESTING) + rng.choice([-1, 0, 0, 1])
            value %= 2 ** (8 * width)
            out[i:i + width] = value.to_bytes(width, "little")
        elif op == 4:                                 # truncate
            del out[rng.randrange(n):]
        elif op == 5:                                 # insert bytes
            i = rng.randrange(n + 1)
            out[i:i] = bytes(rng.randrange(256)
                             for _ in range(rng.randint(1, 16)))
        elif op == 6:                                 # delete a run
            i = rng.randrange(n)
            del out[i:i + rng.randint(1, 64)]
        elif op == 7:                                 # duplicate a run
            i, j = rng.randrange(n), rng.randrange(n + 1)
            out[j:j] = out[i:i + rng.randint(1, 64)]
        elif op == 8:                                 # splice another file
            other = rng.choice(others)
            cut = rng.randrange(n + 1)
            out = out[:cut] + other[rng.randrange(len(other) + 1):]
        else:                                         # garbage at the end
            out += bytes(rng.randrange(256) for _ in range(rng.randint(1, 9)))
    return bytes(out)


def check_read(data, budget):
    """read_params: arrays or ParameterFileError, within ``budget`` bytes."""
    tracemalloc.reset_peak()
    try:
        arrays = read_params(data)
    except fl.ParameterFileError as exc:
        assert "<bytes>" in str(exc)
        ok = False
    else:
        for arr in arrays.values():
            assert isinstance(arr, np.ndarray) and arr.flags.owndata
        ok = True
    peak = tracemalloc.get_traced_memory()[1]
    assert peak < budget, (peak, budget)
    return ok


def fuzz_mxnet(count, seed):
    rng = random.Random(seed)
    files = {name: (DATA / name).read_bytes() for name in FIXTURES}
    others = list(files.values())
    headers = {name: header_offsets(d) for name, d in files.items()}
    loaded = 0
    tracemalloc.start()
    try:
        for i in range(count):
            name = FIXTURES[i % len(FIXTURES)]
            data = files[name]
            bad = mutate(data, rng, headers[name], others)
            loaded += check_read(bad, 8 * len(bad) + (4 << 20))
    finally:
        tracemalloc.stop()
    return loaded


def fuzz_load(count, seed, tmp_path):
    """Mutated MXNet files loaded into deferred and initialized MLPs."""
    rng = random.Random(seed)
    names = sorted(MLPS)
    targets = {n: Target(n, tmp_path / f"{n}.params") for n in names}
    files = {n: (DATA / PARAM_FILE.get(n, f"{n}.params")).read_bytes()
             for n in names}
    others = list(files.values())
    headers = {n: header_offsets(d) for n, d in files.items()}
    loaded = 0
    for i in range(count):
        n = names[i % len(names)]
        loaded += targets[n].load(mutate(files[n], rng, headers[n], others))
    for target in targets.values():
        target.still_runs()
    return loaded


def npz_network():
    net = nn.Sequential()
    net.add(nn.Conv2D(3, 3), nn.BatchNorm(), nn.Flatten(),
            nn.Dense(4, activation="relu"), nn.LayerNorm(), nn.Dense(2))
    return net


X = np.random.default_rng(5).standard_normal((2, 2, 5, 5))


def fuzz_npz(count, seed, tmp_path):
    """Mutated .npz files (fastlazy's own format) into two networks."""
    rng = random.Random(seed)
    src = npz_network()
    src.initialize()
    src(X)
    good = tmp_path / "good.npz"
    src.save_parameters(good)
    data = good.read_bytes()
    # the zip's local headers, central directory and the .npy headers are
    # where the checks are; payload bytes only change values
    header = []
    with zipfile.ZipFile(good) as zf:
        for info in zf.infolist():
            start = info.header_offset
            header += range(start, start + 30 + len(info.filename) + 128)
    cd = data.rfind(b"PK\x01\x02")
    header += range(cd if cd >= 0 else 0, len(data))
    header = sorted(set(i for i in header if i < len(data)))
    nets = []
    for state in ("deferred", "initialized"):
        net = npz_network()
        net.initialize()
        if state == "initialized":
            net(X)
        nets.append(net)
    path = tmp_path / "bad.npz"
    loaded = 0
    for i in range(count):
        bad = mutate(data, rng, header, [data])
        path.write_bytes(bad)
        for k, net in enumerate(nets):
            before = snapshot(net)
            try:
                net.load_parameters(path)
            except fl.ParameterFileError as exc:
                assert str(path) in str(exc), exc
                assert snapshot(net) == before
            else:
                loaded += 1
                assert all(p.is_initialized
                           for p in net.collect_params().values())
                net(X)
                fresh = npz_network()
                fresh.initialize()
                if k:
                    fresh(X)
                nets[k] = fresh
    y = nets[1](X)
    assert y.shape == (2, 2)
    return loaded


# ---------------------------------------------------------------------------
# the normal suite: a few hundred of each


def test_mutated_mxnet_files_read_cleanly():
    fuzz_mxnet(600, seed=1)


def test_mutated_mxnet_files_load_cleanly(tmp_path):
    fuzz_load(200, seed=2, tmp_path=tmp_path)


def test_mutated_npz_files_load_cleanly(tmp_path):
    fuzz_npz(300, seed=3, tmp_path=tmp_path)


def crafted_npz(path, members, compression=zipfile.ZIP_STORED):
    """Write a zip of ``members`` (name -> bytes) with correct CRCs."""
    with zipfile.ZipFile(path, "w", compression) as zf:
        for name, raw in members.items():
            zf.writestr(name, raw)


def npy_bytes(shape, descr="<f4", payload=b"\0" * 24):
    """An .npy file whose header claims ``shape`` but holds ``payload``."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        buf, {"descr": descr, "fortran_order": False, "shape": shape})
    return buf.getvalue() + payload


@pytest.mark.parametrize("shape", [(10**11,), (4_000_000, 1_000_000),
                                   (2**62,), (6_000_000_000,), (1000,)])
@pytest.mark.parametrize("compression", [zipfile.ZIP_STORED,
                                         zipfile.ZIP_DEFLATED])
def test_npz_header_claiming_a_huge_array(tmp_path, shape, compression):
    """An .npy header inside an .npz that claims far more data than the
    member holds is refused before anything that size is allocated, with a
    ParameterFileError (not a MemoryError, nor gigabytes allocated)."""
    net = npz_network()
    net.initialize()
    before = snapshot(net)
    path = tmp_path / "huge.npz"
    crafted_npz(path, {"0.weight.npy": npy_bytes(shape)}, compression)
    tracemalloc.start()
    try:
        with pytest.raises(fl.ParameterFileError, match="claims shape"):
            net.load_parameters(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < (4 << 20), peak
    assert snapshot(net) == before


@pytest.mark.parametrize("members, needle", [
    ({"0.weight": b"not an array"}, "not a .npy array"),
    ({"0.weight.npy": npy_bytes((2,), "|O", b"")}, "parameters hold"),
    ({"0.weight.npy": npy_bytes((2,), "<c8", b"\0" * 16)},
     "parameters hold"),
    ({"0.weight.npy": b"\x93NUMPY\x09\x00" + b"\0" * 40}, "version"),
    ({"0.weight.npy": b"garbage"}, "not a readable"),
])
def test_npz_members_that_are_not_arrays(tmp_path, members, needle):
    net = npz_network()
    net.initialize()
    before = snapshot(net)
    path = tmp_path / "odd.npz"
    crafted_npz(path, members)
    with pytest.raises(fl.ParameterFileError, match=needle):
        net.load_parameters(path)
    assert snapshot(net) == before


def test_npz_unknown_compression_and_encryption(tmp_path):
    """zipfile's NotImplementedError (unknown compression method) and
    RuntimeError (an encrypted member) become ParameterFileError."""
    src = npz_network()
    src.initialize()
    src(X)
    good = tmp_path / "good.npz"
    src.save_parameters(good)
    data = bytearray(good.read_bytes())
    net = npz_network()
    net.initialize()
    before = snapshot(net)
    for field, offset, value in [("method", 8, 99), ("flags", 6, 1)]:
        bad = bytearray(data)
        for sig, delta in ((b"PK\x03\x04", 0), (b"PK\x01\x02", 2)):
            i = bad.find(sig)
            while i >= 0:
                bad[i + offset + delta:i + offset + delta + 2] = \
                    value.to_bytes(2, "little")
                i = bad.find(sig, i + 4)
        path = tmp_path / f"{field}.npz"
        path.write_bytes(bytes(bad))
        with pytest.raises(fl.ParameterFileError):
            net.load_parameters(path)
        assert snapshot(net) == before


# ---------------------------------------------------------------------------
# the slow run


@pytest.mark.slow
def test_mutated_files_long(tmp_path, reliability_report):
    reads = LONG // 2
    loads = LONG // 4
    npz = LONG - reads - loads
    ok_read = fuzz_mxnet(reads, seed=11)
    ok_load = fuzz_load(loads, seed=12, tmp_path=tmp_path)
    ok_npz = fuzz_npz(npz, seed=13, tmp_path=tmp_path)
    reliability_report(
        f"files: {LONG:,} mutated files: {reads:,} MXNet files read "
        f"({ok_read:,} still valid), {loads:,} MXNet files loaded into 2 "
        f"networks ({ok_load:,} loaded whole), {npz:,} .npz files loaded "
        f"into 2 networks ({ok_npz:,} loads succeeded); every other one "
        f"refused with ParameterFileError, parameters unchanged")
