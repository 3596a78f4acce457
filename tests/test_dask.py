"""fastlazy.dask.predict on every kind of scheduler: Dask's local one, a
LocalCluster, and `dask scheduler` / `dask worker` processes started from
the command line -- all on 127.0.0.1, started and stopped by these tests.

The oracle is the local ``net(x)`` on the same rows (float rounding
allowed: chunk sizes pick kernel routes; a missing, duplicated or shifted
row is off by far more)."""

import os
import pickle
import signal
import socket
import subprocess
import sys
import time
from contextlib import contextmanager

import numpy as np
import pytest

dask = pytest.importorskip(
    "dask", reason="Dask is not installed (pip install fastlazy[dask])")
da = pytest.importorskip("dask.array", reason="dask.array needs the extra "
                         "(pip install fastlazy[dask])")
dd = pytest.importorskip("dask.dataframe", reason="dask.dataframe needs the "
                         "extra (pip install fastlazy[dask])")
pd = pytest.importorskip("pandas", reason="pandas (fastlazy[dask]) absent")

import fastlazy as fl  # noqa: E402
import fastlazy.dask as fd  # noqa: E402
from fastlazy import nn  # noqa: E402
from fastlazy.errors import ShapeError  # noqa: E402

pytestmark = pytest.mark.dask

TIMEOUT = 120           # seconds for any one wait on a cluster


def make_net(units=(256, 10), in_units=0, seed=7):
    """Dense relu layers, the last linear; deferred unless in_units."""
    fl.random.seed(seed)
    net = nn.Sequential()
    for i, u in enumerate(units):
        last = i == len(units) - 1
        net.add(nn.Dense(u, activation=None if last else "relu",
                         in_units=in_units if i == 0 else 0))
    net.initialize()
    return net


def rows(n, features=20, dtype=np.float32, seed=0):
    return np.random.default_rng(seed).standard_normal(
        (n, features)).astype(dtype)


def close(y, ref):
    y = np.asarray(y)
    assert y.shape == ref.shape and y.dtype == ref.dtype, (y.shape, ref.shape)
    scale = float(np.nanmax(np.abs(ref))) if ref.size else 1.0
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5 * scale)


def params_bytes(net):
    return sum(p.data().nbytes for p in net.collect_params().values())


# ---------------------------------------------------------------------------
# The default (local, threaded) scheduler


def test_array_uneven_chunks_keeps_chunks_shape_dtype():
    net = make_net()
    x = rows(1000, dtype=np.float64)
    X = da.from_array(x, chunks=((1, 299, 0, 400, 300), (7, 13)))
    Y = fd.predict(net, X)
    assert Y.shape == (1000, 10) and Y.dtype == np.float32
    assert Y.chunks == ((1, 299, 0, 400, 300), (10,))
    close(Y.compute(), net(x))
    close(fd.predict(net, X, batch_size=64).compute(), net(x))


def test_array_unknown_row_chunks_are_fine():
    net = make_net()
    x = rows(600)
    X = da.from_array(x, chunks=(100, 20))
    Xu = X[X[:, 0] > -np.inf]                  # same rows, unknown sizes
    assert np.isnan(Xu.shape[0])
    close(fd.predict(net, Xu).compute(), net(x))


@pytest.mark.parametrize("shape,chunks", [((300, 20), (100, 20)),
                                          ((90, 1, 8, 8), (30, 1, 8, 8))])
def test_array_tasks_do_not_copy_their_block(monkeypatch, shape, chunks):
    """A task scores its block as it is: the block is not passed through
    Dask's concatenation (a copy of the whole block) on the way in."""
    import dask.array.core
    if len(shape) == 2:
        net = make_net()
    else:
        net = nn.Sequential()
        net.add(nn.Conv2D(2, 3), nn.Flatten(), nn.Dense(3))
        net.initialize()
    x = rows(int(np.prod(shape)) // shape[-1], features=shape[-1]) \
        .reshape(shape)
    copies, seen = [], []
    concat = dask.array.core.concatenate_axes
    real = fd._predict_local

    def counting_concat(*args, **kwargs):
        copies.append(1)
        return concat(*args, **kwargs)

    def spy(net_, block, batch_size=None):
        seen.append(type(block))
        return real(net_, block, batch_size=batch_size)

    monkeypatch.setattr(dask.array.core, "concatenate_axes", counting_concat)
    monkeypatch.setattr(fd, "_predict_local", spy)
    y = fd.predict(net, da.from_array(x, chunks=chunks)).compute(
        scheduler="sync")
    assert copies == [] and seen == [np.ndarray] * 3
    close(y, net(x))


def test_array_conv_network_rows_of_any_shape():
    fl.random.seed(1)
    net = nn.Sequential()
    net.add(nn.Conv2D(4, 3, activation="relu"), nn.Flatten(), nn.Dense(3))
    net.initialize()
    x = rows(40 * 64, features=1).reshape(40, 1, 8, 8)
    Y = fd.predict(net, da.from_array(x, chunks=(15, 1, 4, 8)))
    assert Y.shape == (40, 3) and Y.chunks[0] == (15, 15, 10)
    close(Y.compute(), net(x))


def test_deferred_network_is_completed_on_the_driver():
    net = make_net()
    assert net[0].weight.shape[1] in (0, -1)
    x = rows(500, features=12)
    Y = fd.predict(net, da.from_array(x, chunks=100))
    assert net[0].weight.shape == (256, 12)    # before any compute
    close(Y.compute(), net(x))


def test_weights_changed_after_predict_are_not_used():
    net = make_net()
    x = rows(400)
    before = net(x)
    Y = fd.predict(net, da.from_array(x, chunks=100))
    w = net[0].weight
    w.set_data(w.data() * 2)
    after = net(x)
    assert not np.allclose(after, before)
    close(Y.compute(), before)                 # the weights at predict time
    close(fd.predict(net, da.from_array(x, chunks=100)).compute(), after)


def test_dataframe_columns_names_index_divisions():
    net = make_net(units=(16, 3))
    x = rows(300, features=4, dtype=np.float64)
    df = pd.DataFrame(x, columns=list("abcd"),
                      index=pd.Index(np.arange(1000, 1300), name="id"))
    df["label"] = "text"
    df["c"] = df["c"].astype(np.float32)
    D = dd.from_pandas(df, npartitions=4)
    R = fd.predict(net, D, columns=["a", "b", "c", "d"],
                   names=["p", "q", "r"])
    assert R.divisions == D.divisions and R.npartitions == 4
    assert list(R.columns) == ["p", "q", "r"]
    got = R.compute()
    assert got.index.equals(df.index)
    close(got.to_numpy(), net(df[list("abcd")].to_numpy(np.float32)))
    default = fd.predict(net, D, columns=list("abcd")).compute()
    assert list(default.columns) == ["y0", "y1", "y2"]


def test_dataframe_nullable_and_int_columns():
    net = make_net(units=(8, 2))
    df = pd.DataFrame({"a": pd.array([1, None, 3, 4], dtype="Int64"),
                       "b": [0.5, 1.5, 2.5, 3.5]})
    got = fd.predict(net, dd.from_pandas(df, npartitions=2)).compute()
    x = np.array([[1, .5], [np.nan, 1.5], [3, 2.5], [4, 3.5]], np.float32)
    close(got.to_numpy(), net(x))
    assert np.isnan(got.to_numpy()[1]).all()


# -- bad input: errors at predict(), before any task runs


def _must_not_run(block):
    raise AssertionError("a task ran although the input was bad")


def test_bad_input_fails_before_any_task():
    net = make_net()
    net(rows(1))
    poisoned = da.from_array(rows(100, 21), chunks=50).map_blocks(
        _must_not_run, dtype=np.float32)
    with pytest.raises(ShapeError, match=r"rows of shape \(21,\).*20 input"):
        fd.predict(net, poisoned)
    with pytest.raises(TypeError, match="expected numbers"):
        fd.predict(net, da.from_array(np.array([["x"] * 20] * 4)))
    unknown = da.from_array(rows(100), chunks=50).map_blocks(
        _must_not_run, dtype=np.float32, chunks=((50, 50), (np.nan,)))
    with pytest.raises(ValueError, match="unknown sizes"):
        fd.predict(net, unknown)
    with pytest.raises(ShapeError, match="rows on axis 0"):
        fd.predict(net, da.ones(10))
    with pytest.raises(TypeError, match="dask.array.Array or a dask"):
        fd.predict(net, rows(10))
    with pytest.raises(TypeError, match="apply to a dask DataFrame"):
        fd.predict(net, da.ones((4, 20)), names=["a"])
    with pytest.raises(ValueError, match="batch_size"):
        fd.predict(net, da.ones((4, 20)), batch_size=-1)


def test_bad_dataframe_fails_before_any_task():
    net = make_net(units=(8, 2))
    df = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "s": ["u", "v"],
                       "t": pd.to_datetime(["2024-01-01", "2024-01-02"])})
    D = dd.from_pandas(df, npartitions=1)
    with pytest.raises(TypeError, match=r"'s' \(.*\), 't' \(datetime"):
        fd.predict(net, D)
    with pytest.raises(ValueError, match=r"\['zz'\] not in the DataFrame"):
        fd.predict(net, D, columns=["a", "zz"])
    with pytest.raises(ShapeError, match="2 distinct column names"):
        fd.predict(net, D, columns=["a", "b"], names=["only_one"])
    with pytest.raises(ShapeError, match="2 distinct"):
        fd.predict(net, D, columns=["a", "b"], names=["p", "p"])
    fd.predict(net, D, columns=["a", "b"])           # completes: 2 features
    with pytest.raises(ShapeError, match=r"rows of shape \(1,\)"):
        fd.predict(net, D, columns=["a"])
    with pytest.raises(TypeError, match="Series"):
        fd.predict(net, D["a"])


# -- what travels to the workers


@pytest.mark.parametrize("units,features", [((256, 10), 20),
                                            ((512, 512, 10), 784)])
def test_pickled_size_is_parameters_plus_under_1kb(units, features):
    net = make_net(units)
    x = rows(256, features)
    ref = net(x)                     # plans and packed weight copies exist
    shipped = fd._ShippedNet(net)
    blob = pickle.dumps(shipped, protocol=5)
    assert len(blob) <= params_bytes(net) + 1024, \
        (len(blob), params_bytes(net))
    back = pickle.loads(blob)
    close(back.net(x), ref)
    for p in back.net.collect_params().values():
        assert p.data().flags.writeable and p.data().ctypes.data % 64 == 0
    # the network's own pickle has no plan or packed copy either (either
    # would add a second copy of the weights)
    assert len(pickle.dumps(net)) < params_bytes(net) + 4096


def test_import_without_dask_names_the_extra():
    code = ("import sys\n"
            "for m in ('dask', 'dask.array', 'dask.base'):\n"
            "    sys.modules[m] = None\n"
            "try:\n"
            "    import fastlazy.dask\n"
            "except ImportError as e:\n"
            "    print(e)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, timeout=TIMEOUT)
    assert res.returncode == 0, res.stderr
    assert "pip install fastlazy[dask]" in res.stdout


# ---------------------------------------------------------------------------
# distributed: a LocalCluster, then CLI-started processes


def _distributed():
    return pytest.importorskip("distributed", reason="distributed is not "
                               "installed (pip install fastlazy[dask])")


@pytest.fixture(scope="module")
def local_cluster():
    distributed = _distributed()
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True,
        host="127.0.0.1", dashboard_address=None)
    try:
        with distributed.Client(cluster, timeout=TIMEOUT) as client:
            client.wait_for_workers(2, timeout=TIMEOUT)
            yield client
    finally:
        cluster.close(timeout=TIMEOUT)


def _stats(client):
    return client.run(lambda: dict(sys.modules["fastlazy.dask"]._stats)
                      if "fastlazy.dask" in sys.modules
                      else {"unpickled": 0, "tasks": 0})


def test_local_cluster_array_net_sent_once_per_worker(local_cluster):
    client = local_cluster
    net = make_net((512, 512, 10))
    x = rows(3000, features=784, dtype=np.float64)
    X = da.from_array(x, chunks=((100,) * 10 + (250,) * 8,
                                 (784,)))
    before = _stats(client)
    y = client.compute(fd.predict(net, X)).result(timeout=TIMEOUT)
    close(y, net(x))
    after = _stats(client)
    moved = {w: after[w]["unpickled"] - before[w]["unpickled"]
             for w in after}
    tasks = {w: after[w]["tasks"] - before[w]["tasks"] for w in after}
    assert sum(tasks.values()) == 18
    for w in after:
        # a worker that scored blocks received the network once
        assert moved[w] == (1 if tasks[w] else moved[w]) and moved[w] <= 1, \
            (moved, tasks)


def test_local_cluster_dataframe_and_changed_weights(local_cluster):
    client = local_cluster
    net = make_net(units=(32, 4))
    x = rows(2000, features=6, dtype=np.float64, seed=3)
    df = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    D = dd.from_pandas(df, npartitions=5)
    want = net(x)
    R = fd.predict(net, D, names=list("wxyz"))
    w = net[1].weight
    w.set_data(-w.data())                      # after predict, before compute
    got = client.compute(R).result(timeout=TIMEOUT)
    assert got.index.equals(df.index) and list(got.columns) == list("wxyz")
    close(got.to_numpy(), want)


def test_local_cluster_deferred_network(local_cluster):
    net = make_net(units=(64, 2))
    x = rows(999, features=9)
    Y = fd.predict(net, da.from_array(x, chunks=250))
    y = local_cluster.compute(Y).result(timeout=TIMEOUT)
    close(y, net(x))


def test_parquet_end_to_end(local_cluster, tmp_path):
    """The docs' example: read Parquet, score, write Parquet."""
    pytest.importorskip("pyarrow", reason="pyarrow (fastlazy[dask]) absent")
    net = make_net(units=(16, 2))
    rng = np.random.default_rng(5)
    table = pd.DataFrame({"customer": np.arange(500) + 10_000,
                          "age": rng.integers(18, 90, 500),
                          "spend": rng.standard_normal(500),
                          "visits": rng.integers(0, 50, 500).astype(float),
                          "segment": rng.choice(["a", "b"], 500)})
    dd.from_pandas(table.set_index("customer"), npartitions=4).to_parquet(
        tmp_path / "customers")

    # -- as in docs/scale-out.md
    features = ["age", "spend", "visits"]
    customers = dd.read_parquet(tmp_path / "customers")
    scores = fd.predict(net, customers, columns=features,
                        names=["p_churn", "p_stay"])
    scores.to_parquet(tmp_path / "scores")
    # --

    got = pd.read_parquet(tmp_path / "scores").sort_index()
    src = table.set_index("customer")
    assert got.index.equals(src.index)
    close(got[["p_churn", "p_stay"]].to_numpy(),
          net(src[features].to_numpy(np.float32)))


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _stop(proc, timeout=20):
    """Stop a process group we started: SIGTERM, then SIGKILL."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=timeout)
        except ProcessLookupError:
            pass


@contextmanager
def cli_cluster(tmp_path, nthreads=(1, 2)):
    """`dask scheduler` and one `dask worker` per entry of ``nthreads``, as
    separate processes on 127.0.0.1 -- the way a real cluster starts."""
    distributed = _distributed()
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = []
    # a cluster runs the client's code: helpers of this module run in
    # tasks, so the scheduler and workers must import it too
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [os.path.dirname(os.path.abspath(__file__))]
        + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep)
           if p]))

    def start(name, args):
        log = open(tmp_path / f"{name}.log", "w")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "dask", *args], stdout=log,
            stderr=subprocess.STDOUT, cwd=tmp_path, env=env,
            start_new_session=True))
        log.close()

    try:
        start("scheduler", ["scheduler", "--host", "127.0.0.1", "--port",
                            str(port), "--no-dashboard"])
        for i, n in enumerate(nthreads):
            start(f"worker{i}", ["worker", address, "--host", "127.0.0.1",
                                 "--nthreads", str(n), "--name", f"w{i}",
                                 "--no-dashboard", "--death-timeout", "60",
                                 "--local-directory", str(tmp_path)])
        with distributed.Client(address, timeout=TIMEOUT) as client:
            client.wait_for_workers(len(nthreads), timeout=TIMEOUT)
            yield client
    finally:
        for proc in reversed(procs):
            _stop(proc)


@pytest.fixture(scope="module")
def cli(tmp_path_factory):
    with cli_cluster(tmp_path_factory.mktemp("cli")) as client:
        yield client


def test_cli_cluster_threads_follow_worker_nthreads(cli):
    client = cli
    net = make_net()
    x = rows(20_000)
    Y = fd.predict(net, da.from_array(x, chunks=1000))
    close(client.compute(Y).result(timeout=TIMEOUT), net(x))
    nthreads = client.nthreads()
    assert sorted(nthreads.values()) == [1, 2]
    seen = client.run(lambda: fl.get_num_threads())
    tasks = _stats(client)
    for worker, n in nthreads.items():
        assert tasks[worker]["tasks"] > 0, tasks
        assert seen[worker] == n, (seen, nthreads)
    # and inside a task, not only between them
    for worker, n in nthreads.items():
        got = client.submit(fl.get_num_threads, workers=[worker],
                            pure=False).result(timeout=TIMEOUT)
        assert got == n


def test_cli_cluster_dataframe(cli):
    net = make_net(units=(8, 3))
    x = rows(1200, features=5, dtype=np.float64)
    df = pd.DataFrame(x, columns=list("abcde"),
                      index=pd.RangeIndex(0, 2400, 2))
    D = dd.from_pandas(df, npartitions=6)
    R = fd.predict(net, D, columns=list("edcba"))
    assert R.divisions == D.divisions
    got = cli.compute(R).result(timeout=TIMEOUT)
    assert got.index.equals(df.index)
    close(got.to_numpy(), net(df[list("edcba")].to_numpy(np.float32)))


def _slow_copy(block):
    time.sleep(0.1)
    return block.copy()


def _finished_tasks(dask_scheduler):
    return sum(ts.state == "memory" and ts.key[0].startswith(
        "fastlazy-predict") for ts in dask_scheduler.tasks.values()
        if isinstance(ts.key, tuple))


def test_cli_cluster_worker_killed_mid_job(tmp_path):
    """SIGKILL one worker process while blocks are being scored: the nanny
    restarts it, Dask reruns what was lost, and the result has every row
    once, equal to the local net(x)."""
    with cli_cluster(tmp_path, nthreads=(1, 1)) as client:
        net = make_net()
        x = rows(12_000, seed=11)                # distinct rows: a lost or
        X = da.from_array(x, chunks=(250, 20))   # repeated one shows
        Y = fd.predict(net, X.map_blocks(_slow_copy, dtype=X.dtype))
        pids = client.run(os.getpid)
        future = client.compute(Y)
        deadline = time.monotonic() + TIMEOUT
        while client.run_on_scheduler(_finished_tasks) < 8:
            assert time.monotonic() < deadline, "no progress"
            time.sleep(0.05)
        assert not future.done()
        victim, pid = sorted(pids.items())[0]
        os.kill(pid, signal.SIGKILL)
        y = future.result(timeout=TIMEOUT)
        assert y.shape == (12_000, 10)
        close(y, net(x))
        client.wait_for_workers(2, timeout=TIMEOUT)
        # the killed worker really left (its nanny started a new one)
        assert victim not in client.scheduler_info()["workers"]
