"""Write gluon_structure.json: every model of MXNet Gluon's model zoo as
MXNet 1.9.1 builds it -- each parameter's structural key (as
``save_parameters`` writes it), its name without the network's prefix, and
its shape for the input size the tests use.

Run with MXNet 1.9.1 (``pip install "numpy<1.24" mxnet==1.9.1`` in a
virtual environment of its own), from this folder:
``python make_gluon_structure.py``.  Optional ``--check DIR``: also write,
for every model, ``DIR/NAME.params`` and ``DIR/NAME.io.npz`` (input ``x``,
MXNet's output ``y``) to compare fastlazy against; the small ones are kept
here (``mobilenet0.25``, ``mobilenetv2_0.25``, ``squeezenet1.1``), the
rest (1.5 GB) is not.  ``--small DIR`` writes the files of ``SMALL``
(kept here): small networks of the families whose blocks have their own
``hybrid_forward``.

Weights are drawn so that the output depends on the input: convolutions
and Dense layers He-normal (``Xavier('gaussian', 'in', 2)``), every
BatchNorm's gamma U(0.5, 1.5), beta U(-0.2, 0.2), running_mean
U(-0.2, 0.2), running_var U(0.5, 1.5), every bias U(-0.2, 0.2).  (With
MXNet's default Xavier the signal of the deep networks fades at 64x64:
their output hardly depends on the input, and a wrong early layer would
go unnoticed.)
"""

import json
import os
import sys

import mxnet as mx
import numpy as np
from mxnet.gluon.model_zoo import vision

NAMES = ["resnet18_v1", "resnet34_v1", "resnet50_v1", "resnet101_v1",
         "resnet152_v1", "resnet18_v2", "resnet34_v2", "resnet50_v2",
         "resnet101_v2", "resnet152_v2", "vgg11", "vgg13", "vgg16", "vgg19",
         "vgg11_bn", "vgg13_bn", "vgg16_bn", "vgg19_bn", "alexnet",
         "densenet121", "densenet161", "densenet169", "densenet201",
         "squeezenet1.0", "squeezenet1.1", "inceptionv3", "mobilenet1.0",
         "mobilenet0.75", "mobilenet0.5", "mobilenet0.25", "mobilenetv2_1.0",
         "mobilenetv2_0.75", "mobilenetv2_0.5", "mobilenetv2_0.25"]


def input_size(name):
    """The smallest convenient input: SqueezeNet and DenseNet end in a
    fixed-size pool (224), Inception v3 too (299); the others take 64."""
    if name == "inceptionv3":
        return 299
    if name.startswith(("squeezenet", "densenet")):
        return 224
    return 64


#: Small members of each family with custom blocks (residual sums,
#: concatenations) that the kept files above do not cover: the public
#: classes with few channels, ``(name, constructor, input size)``; the same
#: expressions build them in fastlazy (``vision.`` is either zoo).
SMALL = [
    ("small_resnet_v1_bottleneck",
     "vision.ResNetV1(vision.BottleneckV1, [1, 2, 1, 1], "
     "[16, 32, 64, 128, 256], classes=10)", 64),
    ("small_resnet_v2_basic",
     "vision.ResNetV2(vision.BasicBlockV2, [2, 1, 1, 1], "
     "[8, 8, 16, 32, 64], classes=10)", 64),
    ("small_resnet_v2_bottleneck",
     "vision.ResNetV2(vision.BottleneckV2, [1, 2, 1, 1], "
     "[16, 32, 64, 128, 256], classes=10)", 64),
    ("small_resnet_v1_thumbnail",
     "vision.ResNetV1(vision.BasicBlockV1, [1, 1, 1, 1], "
     "[8, 8, 16, 32, 64], classes=10, thumbnail=True)", 32),
    ("small_densenet",
     "vision.DenseNet(16, 8, [2, 3, 2, 2], bn_size=2, classes=10)", 224),
]


#: SMALL networks also saved by name (``NAME-names.params``) and exported
#: (``NAME-0000.params``; the graph itself is not kept)
LEGACY = ("small_resnet_v2_basic",)


def write_small(folder):
    """MXNet's files for the SMALL networks: ``NAME.params`` (as
    ``check`` does) and ``NAME.io.npz`` (``x``: a batch of 2, ``y``)."""
    rng = np.random.RandomState(11)
    for name, expr, size in SMALL:
        net = eval(expr)
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in",
                                      magnitude=2))
        x = rng.uniform(-1, 1, (2, 3, size, size)).astype(np.float32)
        net(mx.nd.array(x))
        _randomize(net, rng)
        y = net(mx.nd.array(x)).asnumpy()
        net.save_parameters(os.path.join(folder, f"{name}.params"))
        np.savez(os.path.join(folder, f"{name}.io.npz"), x=x, y=y)
        if name in LEGACY:
            # the other two ways Gluon 1.x saved parameters: by name
            # without the network's prefix (save_params, and the model
            # store's older files), and export's arg:/aux: names
            net.collect_params().save(
                os.path.join(folder, f"{name}-names.params"),
                strip_prefix=net.prefix)
            net.hybridize()
            net(mx.nd.array(x))
            net.export(os.path.join(folder, name))
            os.remove(os.path.join(folder, f"{name}-symbol.json"))
        print(name, flush=True)


def _randomize(net, rng):
    for key, p in net._collect_params_with_prefix().items():
        shape = p.shape
        if key.endswith("running_var") or key.endswith("gamma"):
            p.set_data(mx.nd.array(rng.uniform(0.5, 1.5, shape)))
        elif key.endswith(("running_mean", "beta", "bias")):
            p.set_data(mx.nd.array(rng.uniform(-0.2, 0.2, shape)))


def main(check_dir=None):
    rng = np.random.RandomState(7)
    out = {"mxnet_version": mx.__version__, "models": {}}
    for name in NAMES:
        net = vision.get_model(name)
        net.initialize(mx.init.Xavier(rnd_type="gaussian", factor_type="in",
                                      magnitude=2))
        size = input_size(name)
        x = rng.uniform(-1, 1, (1, 3, size, size)).astype(np.float32)
        net(mx.nd.array(x))                       # completes the shapes
        params = net._collect_params_with_prefix()
        prefix = net.prefix
        entries = []
        for key, p in params.items():
            assert p.name.startswith(prefix), (p.name, prefix)
            entries.append([key, p.name[len(prefix):], list(p.shape)])
        out["models"][name] = {"input_size": size, "prefix": prefix,
                               "params": entries}
        print(name, len(entries), flush=True)
        if check_dir:
            _randomize(net, rng)
            y = net(mx.nd.array(x)).asnumpy()
            net.save_parameters(os.path.join(check_dir, f"{name}.params"))
            np.savez(os.path.join(check_dir, f"{name}.io.npz"), x=x, y=y)
    with open("gluon_structure.json", "w") as fh:
        json.dump(out, fh, separators=(",", ":"))


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--small":
        write_small(sys.argv[2])
    else:
        main(sys.argv[2] if len(sys.argv) > 2 and sys.argv[1] == "--check"
             else None)
