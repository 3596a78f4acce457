"""Gluon's model zoo in fastlazy (``fastlazy.model_zoo.vision``).

* MXNet's own files: ``tests/data/mxnet_graphs/NAME.params``, written by
  MXNet 1.9.1's ``save_parameters`` for ``get_model(NAME)`` with random
  weights and BatchNorm statistics, load into fastlazy's ``get_model(NAME)``
  and reproduce MXNet's output ``y`` (``NAME.io.npz``) as one compiled plan.
* Every other name: the parameters -- structural keys, names and shapes, in
  order -- are those MXNet 1.9.1 builds (``tests/data/model_zoo/
  gluon_structure.json``, written by ``make_gluon_structure.py`` there),
  the parameter counts are the published ones, deferred shapes fill in at
  the first forward, and the compiled network gives what the same network
  gives with every block run on the eager path (each layer on its own,
  every residual sum, concatenation and ReLU6 in NumPy).
* ``get_model``: unknown names, ``classes``, ``pretrained=True`` from a
  ``root`` folder (never a download), and ``import fastlazy`` not
  importing the zoo.

The big networks (ResNet-50 and deeper, DenseNet, Inception v3, VGG at
224) run under ``-m slow``.
"""

import copy
import json
from io import StringIO
import pathlib
import pickle
import re
import shutil
import subprocess
import sys
import warnings

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import _compile
from fastlazy.block import HybridBlock, Sequential
from fastlazy.model_zoo import model_store, vision

HERE = pathlib.Path(__file__).parent
GRAPHS = HERE / "data" / "mxnet_graphs"
ZOO = HERE / "data" / "model_zoo"

with open(ZOO / "gluon_structure.json") as _fh:
    GLUON = json.load(_fh)["models"]

# MXNet's files: the project's fixtures in tests/data/mxnet_graphs (MXNet's
# default Xavier initialization: only resnet18_v1's output depends much on
# its input) and those of tests/data/model_zoo (He-normal weights: every
# layer matters; make_gluon_structure.py there)
MXNET_FILES = [("mobilenetv2_0.25", GRAPHS), ("squeezenet1.1", GRAPHS),
               ("resnet18_v1", GRAPHS), ("mobilenet0.25", ZOO),
               ("mobilenetv2_0.25", ZOO), ("squeezenet1.1", ZOO)]
FILE_IDS = [f"{name}-{folder.name}" for name, folder in MXNET_FILES]

# Trainable parameters (without BatchNorm's running statistics) at 224x224
# (299 for Inception v3), as published for the architectures: torchvision's
# counts for ResNet V1-18/34, VGG, AlexNet, DenseNet, SqueezeNet and
# Inception v3 without its auxiliary head; Keras's for MobileNet 1.0.
# Gluon differs where its definitions do: BottleneckV1's two 1x1
# convolutions have biases (ResNet-50: + 18,880; 101: + 40,640; 152:
# + 59,840), MobileNetV2 keeps the 1x1 expansion of the first block (t=1:
# + 1,088) and classifies with a 1x1 convolution without bias (- 1,000).
PUBLISHED = {
    "resnet18_v1": 11_689_512, "resnet34_v1": 21_797_672,
    "resnet50_v1": 25_557_032 + 18_880, "resnet101_v1": 44_549_160 + 40_640,
    "resnet152_v1": 60_192_808 + 59_840,
    "vgg11": 132_863_336, "vgg13": 133_047_848, "vgg16": 138_357_544,
    "vgg19": 143_667_240, "vgg11_bn": 132_868_840, "vgg13_bn": 133_053_736,
    "vgg16_bn": 138_365_992, "vgg19_bn": 143_678_248,
    "alexnet": 61_100_840,
    "densenet121": 7_978_856, "densenet161": 28_681_000,
    "densenet169": 14_149_480, "densenet201": 20_013_928,
    "squeezenet1.0": 1_248_424, "squeezenet1.1": 1_235_496,
    "inceptionv3": 23_834_568,
    "mobilenet1.0": 4_231_976,
    "mobilenetv2_1.0": 3_504_872 + 1_088 - 1_000,
}

# Cheap enough for the default run (at the sizes of eager_input_size)
FAST = ["resnet18_v2", "mobilenet1.0", "mobilenet0.75", "mobilenetv2_1.0",
        "mobilenetv2_0.5", "squeezenet1.0", "alexnet", "vgg11_bn"]
ALL = vision.model_names()
SLOW = [n for n in ALL if n not in FAST
        and n not in {name for name, _ in MXNET_FILES}]


def load_io(name, folder=GRAPHS):
    """MXNet's input ``x`` and output ``y`` for ``name``."""
    with np.load(folder / f"{name}.io.npz") as data:
        return data["x"], data["y"]


def input_shape(name, batch=1, size=None):
    size = size or GLUON[name]["input_size"]
    return (batch, 3, size, size)


def eager_input_size(name):
    """The size of the compiled-vs-eager comparison: the smallest each
    architecture takes (VGG 32, AlexNet 63), else the structure test's."""
    if name.startswith("vgg"):
        return 32
    if name == "alexnet":
        return 63
    return GLUON[name]["input_size"]


def trainable(params):
    return sum(int(np.prod(shape)) for key, _, shape in params
               if not key.endswith(("running_mean", "running_var")))


def traced_structure(net, shape):
    """[(structural key, name without the network's prefix, shape)] of the
    network for inputs of ``shape``: known shapes plus those shape
    inference completes -- without initializing anything."""
    _, _, _, pending, _ = _compile._trace(net, [shape])
    out = []
    for key, p in net._collect_params_with_prefix().items():
        assert p.name.startswith(net.prefix), (p.name, net.prefix)
        out.append((key, p.name[len(net.prefix):],
                    tuple(pending.get(p, p.shape))))
    return out


def compiled_in_one_plan(net, x):
    report = fl.explain(net, x, file=StringIO())
    return net._eager_reason is None and "compiled: one plan" in report


def force_eager(net):
    """Run every container and HybridBlock of ``net`` on the eager path:
    their code in NumPy, each built-in layer as its own plan."""
    def mark(block):
        if isinstance(block, (HybridBlock, Sequential)) and block._children:
            block._fell_back(_compile.TraceFailed(block, "forced eager"))
    net.apply(mark)


# ---------------------------------------------------------------------------
# MXNet's files


@pytest.mark.parametrize("name, folder", MXNET_FILES, ids=FILE_IDS)
def test_mxnet_file_reproduces_mxnet(name, folder):
    x, y = load_io(name, folder)
    net = vision.get_model(name)
    net.load_parameters(folder / f"{name}.params")
    out = net(x)
    assert out.shape == y.shape == (x.shape[0], 1000)
    assert out.dtype == np.float32
    # float32 vs MXNet's float32: float64 differs from MXNet by < 5e-7
    # (metadata.json); summation orders differ in the last bits
    scale = float(np.abs(y).max())
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5 * scale)
    assert compiled_in_one_plan(net, x)
    if folder == ZOO:
        # these files make every layer count: another input changes the
        # output well beyond the tolerance
        other = net(np.random.default_rng(1).uniform(
            -1, 1, x.shape).astype(np.float32))
        assert np.abs(other - out).max() > 0.005 * scale


def _small_networks():
    """``SMALL`` of make_gluon_structure.py: (name, constructor expression,
    input size), read without running that script (it needs MXNet)."""
    import ast
    tree = ast.parse((ZOO / "make_gluon_structure.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "SMALL":
            return ast.literal_eval(node.value)
    raise AssertionError("no SMALL in make_gluon_structure.py")


SMALL = _small_networks()


@pytest.mark.parametrize("name, expr, size", SMALL,
                         ids=[s[0] for s in SMALL])
def test_mxnet_small_family_member(name, expr, size):
    """The family classes with other arguments (a bottleneck ResNet V1, V2
    with both blocks, a thumbnail stem, a small DenseNet): MXNet's file and
    output for the same constructor call, a batch of 2."""
    x, y = load_io(name, ZOO)
    net = eval(expr, {"vision": vision})
    net.load_parameters(ZOO / f"{name}.params")
    out = net(x)
    scale = float(np.abs(y).max())
    np.testing.assert_allclose(out, y, rtol=1e-4, atol=1e-5 * scale)
    assert compiled_in_one_plan(net, x)
    assert np.abs(out[0] - out[1]).max() > 0.005 * scale


@pytest.mark.parametrize("kind", ["names", "0000"])
def test_mxnet_name_keyed_files(kind):
    """Gluon 1.x's other files: keyed by parameter name without the
    network's prefix (``save_params``; the model store's older files) and
    ``export``'s ``arg:``/``aux:`` names.  fastlazy's names are Gluon's, so
    the keys name the network's parameters whatever its prefix."""
    from fastlazy.io import load_arrays
    name = "small_resnet_v2_basic"
    expr = dict((s[0], s[1]) for s in SMALL)[name]
    x, y = load_io(name, ZOO)
    path = ZOO / f"{name}-{kind}.params"
    keys = [k.split(":", 1)[-1] for k in load_arrays(path)]
    eval(expr, {"vision": vision})          # another count: resnetv2N_
    net = eval(expr, {"vision": vision})
    names = [p.name for p in net.collect_params().values()]
    if kind == "names":
        assert keys == [n[len(net.prefix):] for n in names]
    else:
        assert [k.split("_", 1)[1] for k in keys] == \
            [n[len(net.prefix):] for n in names]
    net.load_parameters(path)
    np.testing.assert_allclose(net(x), y, rtol=1e-4,
                               atol=1e-5 * float(np.abs(y).max()))


def test_mxnet_file_wrong_values_are_detected():
    # the comparison above fails for a network that is slightly off
    name = "resnet18_v1"
    x, y = load_io(name)
    net = vision.get_model(name)
    net.load_parameters(GRAPHS / f"{name}.params")
    gamma = net.features[4][0].body[1].gamma
    gamma.set_data(gamma.data() * 1.01)
    with pytest.raises(AssertionError):
        np.testing.assert_allclose(net(x), y, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(y).max()))


@pytest.mark.parametrize("name, folder", MXNET_FILES, ids=FILE_IDS)
def test_mxnet_file_names_and_keys(name, folder):
    # the file's structural keys are exactly the network's, in order
    from fastlazy.io import load_arrays
    keys = list(load_arrays(folder / f"{name}.params"))
    net = vision.get_model(name)
    assert keys == list(net._collect_params_with_prefix())


# ---------------------------------------------------------------------------
# Structure of every network


@pytest.mark.parametrize("name", ALL)
def test_structure_is_gluons(name):
    """Keys, names (without the network's prefix) and shapes, in order, as
    MXNet 1.9.1 builds the same network."""
    net = vision.get_model(name)
    expected = GLUON[name]
    # the class's name and Gluon's per-class counter ('resnetv10_'); the
    # counts depend on what the process built before
    pattern = re.escape(type(net).__name__.lower()) + r"\d+_"
    assert re.fullmatch(pattern, net.prefix)
    assert re.fullmatch(pattern, expected["prefix"])
    got = traced_structure(net, input_shape(name))
    want = [(k, n, tuple(s)) for k, n, s in expected["params"]]
    assert got == want
    # nothing was initialized or completed by looking
    assert all(p.state != "initialized"
               for p in net.collect_params().values())


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_parameter_count_is_published(name):
    size = 299 if name == "inceptionv3" else 224
    net = vision.get_model(name)
    assert trainable(traced_structure(net, input_shape(name, size=size))) \
        == PUBLISHED[name]


def test_structure_detects_a_difference():
    # one channel more in one layer is caught
    net = vision.get_model("resnet18_v1")
    got = traced_structure(net, input_shape("resnet18_v1"))
    want = [(k, n, tuple(s)) for k, n, s in GLUON["resnet18_v1"]["params"]]
    got[5] = (got[5][0], got[5][1], (65,) + got[5][2][1:])
    assert got != want


# ---------------------------------------------------------------------------
# Forward: deferred shapes, compiled == eager


def check_compiled_equals_eager(name):
    shape = input_shape(name, batch=2, size=eager_input_size(name))
    x = np.random.default_rng(3).uniform(-1, 1, shape).astype(np.float32)
    fl.random.seed(11)
    net = vision.get_model(name)
    # He-normal: the signal keeps its size through the deep networks, so
    # the output depends on every layer (MXNet's default Xavier fades it)
    net.initialize(fl.init.Xavier(rnd_type="gaussian", factor_type="in",
                                  magnitude=2))
    assert any(-1 in p.shape for p in net.collect_params().values())
    out = net(x)
    assert out.shape == (2, 1000)
    params = net.collect_params().values()
    assert all(p.is_initialized and -1 not in p.shape for p in params)
    assert compiled_in_one_plan(net, x)
    # give BatchNorm non-trivial statistics, then compare
    rng = np.random.default_rng(5)
    for key, p in net._collect_params_with_prefix().items():
        if key.endswith(("running_var", "gamma")):
            p.set_data(rng.uniform(0.5, 1.5, p.shape).astype(np.float32))
        elif key.endswith(("running_mean", "beta", "bias")):
            p.set_data(rng.uniform(-0.2, 0.2, p.shape).astype(np.float32))
    out = net(x)
    twin = vision.get_model(name)
    twin.share_parameters(net.collect_params())
    force_eager(twin)
    ref = twin(x)
    assert twin._eager_reason is not None
    scale = float(np.abs(ref).max())
    assert scale > 0
    np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-5 * scale)
    # the output depends on the input (the comparison covers every layer)
    # and the two samples are not mixed up: they differ by ten times the
    # tolerance at least (ResNet-152 V1 and VGG come closest)
    assert np.abs(out[0] - out[1]).max() > 1e-3 * scale


@pytest.mark.parametrize("name", FAST)
def test_compiled_equals_eager(name):
    check_compiled_equals_eager(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", SLOW)
def test_compiled_equals_eager_big(name):
    check_compiled_equals_eager(name)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["vgg16", "alexnet"])
def test_vgg_alexnet_at_224(name):
    # the size of the pretrained weights: the first Dense takes 25,088
    # (VGG) or 9,216 (AlexNet) inputs
    net = vision.get_model(name)
    net.initialize()
    x = np.random.default_rng(0).uniform(-1, 1, (1, 3, 224, 224))
    assert net(x.astype(np.float32)).shape == (1, 1000)
    first_dense = net.features[-4]
    assert first_dense.weight.shape[1] == (25088 if name == "vgg16" else 9216)


def test_mobilenet_v2_relu6_compiles_to_a_clip():
    # ReLU6 is F.clip(x, 0, 6): compiled, not a fallback
    net = vision.get_model("mobilenetv2_0.25")
    relu6 = net.features[2]
    assert isinstance(relu6, vision.RELU6)
    x = np.linspace(-10, 10, 8 * 8 * 8, dtype=np.float32).reshape(1, 8, 8, 8)
    np.testing.assert_array_equal(relu6(x), np.clip(x, 0, 6))
    assert compiled_in_one_plan(relu6, x)


@pytest.mark.parametrize("state", ["deferred", "loaded"])
def test_pickle_and_deepcopy(state):
    name = "mobilenet0.25"
    x, y = load_io(name, ZOO)
    net = vision.get_model(name)
    if state == "loaded":
        net.load_parameters(ZOO / f"{name}.params")
        net(x)
    for twin in (pickle.loads(pickle.dumps(net)), copy.deepcopy(net)):
        if state == "deferred":
            assert all(p.state == "deferred" or p.state == "unset"
                       for p in twin.collect_params().values())
            twin.load_parameters(ZOO / f"{name}.params")
        np.testing.assert_allclose(twin(x), y, rtol=1e-4,
                                   atol=1e-5 * float(np.abs(y).max()))
        assert twin._eager_reason is None


# ---------------------------------------------------------------------------
# get_model


def test_unknown_name_lists_the_known_ones():
    with pytest.raises(ValueError) as err:
        vision.get_model("resnet19_v1")
    msg = str(err.value)
    assert "resnet19_v1" in msg
    for name in ALL:
        assert name in msg


def test_names_and_options():
    assert len(ALL) == 34 and "inceptionv3" in ALL
    net = vision.get_model("ResNet18_V1", classes=10)
    assert isinstance(net, vision.ResNetV1)
    net.initialize()
    assert net(np.zeros((1, 3, 32, 32), np.float32)).shape == (1, 10)
    net = vision.get_model("resnet18_v1", thumbnail=True)
    assert net.features[0].weight.shape == (64, -1, 3, 3)
    with pytest.raises(TypeError):
        vision.get_model("alexnet", no_such_option=1)


def test_pretrained_from_root(tmp_path):
    # a file under the plain name
    shutil.copy(GRAPHS / "resnet18_v1.params", tmp_path / "resnet18_v1.params")
    net = vision.get_model("resnet18_v1", pretrained=True, root=tmp_path)
    x, y = load_io("resnet18_v1")
    np.testing.assert_allclose(net(x), y, rtol=1e-4, atol=1e-5)
    # MXNet's name for the file; its SHA-1 is not that of MXNet's published
    # weights, so it loads with a warning
    mx_name = f"squeezenet1.1-{model_store.short_hash('squeezenet1.1')}.params"
    assert mx_name == "squeezenet1.1-33ba0f93.params"
    shutil.copy(GRAPHS / "squeezenet1.1.params", tmp_path / mx_name)
    with pytest.warns(UserWarning, match="SHA-1"):
        net = vision.get_model("squeezenet1.1", pretrained=True,
                               root=str(tmp_path))
    x, y = load_io("squeezenet1.1")
    np.testing.assert_allclose(net(x), y, rtol=1e-4, atol=1e-6)


def test_pretrained_missing_file_never_downloads(tmp_path, monkeypatch):
    with pytest.raises(FileNotFoundError) as err:
        vision.get_model("mobilenetv2_1.0", pretrained=True, root=tmp_path)
    msg = str(err.value)
    assert "never downloads" in msg and str(tmp_path) in msg
    assert "mobilenetv2_1.0-36da4ff1.params" in msg
    assert "mobilenetv2_1.0.params" in msg
    # the default folder is MXNet's: $MXNET_HOME/models
    monkeypatch.setenv("MXNET_HOME", str(tmp_path / "mxhome"))
    with pytest.raises(FileNotFoundError, match="mxhome"):
        vision.get_model("alexnet", pretrained=True)
    monkeypatch.delenv("MXNET_HOME")
    assert model_store.default_root() == str(
        pathlib.Path("~/.mxnet/models").expanduser())


def test_pretrained_file_mismatch_is_refused(tmp_path):
    # the wrong network's file is refused (naming a key it cannot place)
    shutil.copy(GRAPHS / "squeezenet1.1.params",
                tmp_path / "resnet18_v1.params")
    with pytest.raises(fl.ParameterFileError, match="features"):
        vision.get_model("resnet18_v1", pretrained=True, root=tmp_path)


def test_import_fastlazy_does_not_import_the_zoo():
    code = ("import sys, fastlazy; "
            "print(any(m.startswith('fastlazy.model_zoo') "
            "for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                         text=True, check=True, env=None)
    assert out.stdout.strip() == "False"


def test_warnings_free_build():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("resnet18_v1", "mobilenet0.25", "densenet121"):
            vision.get_model(name)
