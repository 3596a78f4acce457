#!/usr/bin/env python
"""Regenerate tests/data/onnx/: small ONNX models written by PyTorch's two
exporters and by skl2onnx, with the outputs ONNX Runtime computes from
them.

    python tools/make_onnx_fixtures.py          # needs torch, onnx,
                                                # onnxruntime, scikit-learn
                                                # and skl2onnx

The tests (tests/test_onnx_load.py) read these files with
fastlazy.onnx.load and compare against ONNX Runtime on the same file when it
is installed, else against the outputs saved here (reference.npz, computed
by ONNX Runtime when the files were made).  They exist so that files no one
here wrote are tested where torch is not installed (CI).  Each network is
small (a few thousand weights) and every file is written by the exporter,
never edited, except mlp_external, which onnx itself re-saves with its
weights in an external data file, and mlp_fp16, whose float32 weights
onnx's helpers turn into float16 initializers followed by Cast nodes (what
float16 conversion tools write).

The networks and the exporter settings are listed in MODELS below;
tests/data/onnx/README.md lists what each file covers.
"""

import json
import pathlib
import sys
import warnings

import numpy as np

OUT = pathlib.Path(__file__).resolve().parent.parent / "tests" / "data" / \
    "onnx"
SEED = 0


def torch_models():
    import torch
    from torch import nn
    from torch.nn import functional as F

    class MLP(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(20, 64)
            self.fc2 = nn.Linear(64, 10)

        def forward(self, x):
            return self.fc2(torch.relu(self.fc1(x)))

    class LeNet(nn.Module):
        """LeNet with a GELU and a flatten by x.view(x.size(0), -1)."""

        def __init__(self):
            super().__init__()
            self.c1 = nn.Conv2d(1, 4, 5, padding=2)
            self.c2 = nn.Conv2d(4, 8, 5)
            self.f1 = nn.Linear(8 * 5 * 5, 32)
            self.f2 = nn.Linear(32, 16)
            self.f3 = nn.Linear(16, 10)

        def forward(self, x):
            x = F.avg_pool2d(torch.sigmoid(self.c1(x)), 2)
            x = F.max_pool2d(torch.relu(self.c2(x)), 2)
            x = x.view(x.size(0), -1)
            return self.f3(F.gelu(self.f2(torch.relu(self.f1(x)))))

    class ResBlock(nn.Module):
        def __init__(self, units):
            super().__init__()
            self.d1 = nn.Linear(units, units)
            self.d2 = nn.Linear(units, units)

        def forward(self, x):
            return x + torch.relu(self.d2(torch.relu(self.d1(x))))

    class ResMLP(nn.Module):
        """Dense -> 3 residual blocks -> Dense (the benches' ResMLP)."""

        def __init__(self, units=32):
            super().__init__()
            self.inp = nn.Linear(20, units)
            self.blocks = nn.Sequential(*[ResBlock(units) for _ in range(3)])
            self.out = nn.Linear(units, 10)

        def forward(self, x):
            return self.out(self.blocks(self.inp(x)))

    class BasicBlock(nn.Module):
        def __init__(self, cin, cout, stride):
            super().__init__()
            self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.b1 = nn.BatchNorm2d(cout)
            self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.b2 = nn.BatchNorm2d(cout)
            self.down = None
            if stride != 1 or cin != cout:
                self.down = nn.Sequential(
                    nn.Conv2d(cin, cout, 1, stride, bias=False),
                    nn.BatchNorm2d(cout))

        def forward(self, x):
            y = torch.relu(self.b1(self.c1(x)))
            y = self.b2(self.c2(y))
            return torch.relu(y + (x if self.down is None else self.down(x)))

    class ResNetCNN(nn.Module):
        """A small ResNet: stem, two basic blocks, global pool, fc."""

        def __init__(self):
            super().__init__()
            self.stem = nn.Conv2d(3, 8, 3, 1, 1, bias=False)
            self.bn = nn.BatchNorm2d(8)
            self.pool = nn.MaxPool2d(3, 2, 1)
            self.layer1 = BasicBlock(8, 8, 1)
            self.layer2 = BasicBlock(8, 16, 2)
            self.fc = nn.Linear(16, 10)

        def forward(self, x):
            x = self.pool(torch.relu(self.bn(self.stem(x))))
            x = self.layer2(self.layer1(x))
            x = F.adaptive_avg_pool2d(x, 1).flatten(1)
            return self.fc(x)

    class ConcatNet(nn.Module):
        """Two branches joined by torch.cat, SiLU, LayerNorm, log_softmax."""

        def __init__(self):
            super().__init__()
            self.a = nn.Linear(20, 16)
            self.b = nn.Linear(20, 8)
            self.norm = nn.LayerNorm(24)
            self.out = nn.Linear(24, 5)

        def forward(self, x):
            h = torch.cat([F.silu(self.a(x)), torch.tanh(self.b(x))], dim=1)
            return F.log_softmax(self.out(self.norm(h)), dim=1)

    class SeqNet(nn.Module):
        """A Linear over the last axis of (N, 4, 20) (MatMul + Add), a 1-D
        convolution, PReLU, 1-D max pooling, ELU, HardSwish, Flatten,
        arithmetic with scalars, softmax."""

        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(20, 12)
            self.conv = nn.Conv1d(4, 6, 3, padding=1)
            self.prelu = nn.PReLU(6)
            self.elu = nn.ELU(0.7)
            self.hswish = nn.Hardswish()

        def forward(self, x):
            y = self.prelu(self.conv(self.lin(x)))
            y = self.hswish(self.elu(F.max_pool1d(y, 2)))
            return F.softmax(y.flatten(1) * 2.0 - 1.0, dim=-1)

    torch.manual_seed(SEED)
    nets = {"mlp": MLP(), "lenet": LeNet(), "resmlp": ResMLP(),
            "resnet_cnn": ResNetCNN(), "concat": ConcatNet(),
            "seq": SeqNet()}
    for net in nets.values():
        # BatchNorm with statistics other than (0, 1), then eval mode
        for m in net.modules():
            if isinstance(m, nn.BatchNorm2d):
                with torch.no_grad():
                    m.running_mean.uniform_(-0.5, 0.5)
                    m.running_var.uniform_(0.5, 2.0)
                    m.weight.uniform_(0.5, 1.5)
                    m.bias.uniform_(-0.2, 0.2)
        net.eval()
    return torch, nets


# name -> (network, input sample shape, exporter, opset, options)
MODELS = {
    # the legacy TorchScript exporter (dynamo=False): Gemm, and the
    # Shape/Gather/Unsqueeze/Concat chain of x.view(x.size(0), -1); opset
    # 17: GELU as its erf form; BatchNorm folded into the convolutions
    "mlp": ("mlp", (20,), "legacy", 17, {}),
    "lenet": ("lenet", (1, 28, 28), "legacy", 17, {}),
    "resmlp": ("resmlp", (20,), "legacy", 17, {}),
    "resnet_cnn": ("resnet_cnn", (3, 16, 16), "legacy", 17, {}),
    "concat": ("concat", (20,), "legacy", 17, {}),
    "seq": ("seq", (4, 20), "legacy", 17, {}),
    # without constant folding, BatchNormalization nodes stay
    "resnet_cnn_bn": ("resnet_cnn", (3, 16, 16), "legacy", 17,
                      {"do_constant_folding": False}),
    # the dynamo exporter (torch.export): Gelu as one operator (opset 20)
    "mlp_dynamo": ("mlp", (20,), "dynamo", 18, {}),
    "lenet_dynamo": ("lenet", (1, 28, 28), "dynamo", 20, {}),
    # unoptimized: BatchNormalization, and Shape/Expand/CastLike chains
    "resnet_cnn_bn_dynamo": ("resnet_cnn", (3, 16, 16), "dynamo", 18,
                             {"optimize": False}),
}


def export_torch(torch, net, shape, exporter, opset, options, path):
    x = torch.randn((2,) + shape)
    if exporter == "legacy":
        torch.onnx.export(net, (x,), str(path), dynamo=False,
                          opset_version=opset, input_names=["x"],
                          output_names=["y"],
                          dynamic_axes={"x": {0: "batch"},
                                        "y": {0: "batch"}}, **options)
    else:
        batch = torch.export.Dim("batch", min=1, max=4096)
        program = torch.onnx.export(net, (x,), dynamo=True,
                                    opset_version=opset, input_names=["x"],
                                    output_names=["y"],
                                    dynamic_shapes={"x": {0: batch}},
                                    **options)
        program.save(str(path))


def to_fp16(src, dst):
    """The MLP with float16 initializers, each followed by a Cast to
    float32 (what float16 conversion tools keep for float32 I/O)."""
    import onnx
    from onnx import helper, numpy_helper
    model = onnx.load(str(src))
    graph = model.graph
    casts = []
    inits = []
    for t in graph.initializer:
        a = numpy_helper.to_array(t)
        half = numpy_helper.from_array(a.astype(np.float16), t.name + "_fp16")
        inits.append(half)
        casts.append(helper.make_node("Cast", [half.name], [t.name],
                                      name=f"cast_{t.name}", to=1))
    del graph.initializer[:]
    graph.initializer.extend(inits)
    nodes = list(graph.node)
    del graph.node[:]
    graph.node.extend(casts + nodes)
    onnx.checker.check_model(model)
    onnx.save(model, str(dst))


def to_external(src, dst):
    import onnx
    model = onnx.load(str(src))
    onnx.save_model(model, str(dst), save_as_external_data=True,
                    all_tensors_to_one_file=True,
                    location=dst.name + ".data", size_threshold=0)


def sklearn_mlp(path):
    from sklearn.neural_network import MLPClassifier
    from skl2onnx import to_onnx
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((300, 8)).astype(np.float32)
    y = (x[:, 0] > 0).astype(int) + (x[:, 1] > 0.5)
    clf = MLPClassifier((16, 12), max_iter=300, random_state=SEED).fit(x, y)
    model = to_onnx(clf, x[:1], options={"zipmap": False},
                    target_opset={"": 17, "ai.onnx.ml": 3})
    path.write_bytes(model.SerializeToString())


def main():
    import onnxruntime as ort
    warnings.filterwarnings("ignore")
    OUT.mkdir(parents=True, exist_ok=True)
    torch, nets = torch_models()
    made = {}
    for f in OUT.glob("*.onnx*"):
        f.unlink()
    for name, (net, shape, exporter, opset, options) in MODELS.items():
        path = OUT / f"{name}.onnx"
        export_torch(torch, nets[net], shape, exporter, opset, options,
                     path)
        made[name] = shape
    to_fp16(OUT / "mlp.onnx", OUT / "mlp_fp16.onnx")
    made["mlp_fp16"] = (20,)
    to_external(OUT / "mlp.onnx", OUT / "mlp_external.onnx")
    made["mlp_external"] = (20,)
    sklearn_mlp(OUT / "sklearn_mlp.onnx")
    made["sklearn_mlp"] = (8,)
    # ONNX Runtime's outputs for a fixed input of 3 samples
    refs = {}
    rng = np.random.default_rng(SEED)
    for name, shape in made.items():
        sess = ort.InferenceSession(str(OUT / f"{name}.onnx"),
                                    providers=["CPUExecutionProvider"])
        x = rng.standard_normal((3,) + tuple(shape)).astype(np.float32)
        feed = {sess.get_inputs()[0].name: x}
        outs = sess.run(None, feed)
        names = [o.name for o in sess.get_outputs()]
        refs[f"{name}/x"] = x
        for o, v in zip(names, outs):
            refs[f"{name}/{o}"] = v
    np.savez(OUT / "reference.npz", **refs)
    versions = {"torch": torch.__version__,
                "onnx": __import__("onnx").__version__,
                "onnxruntime": ort.__version__,
                "skl2onnx": __import__("skl2onnx").__version__}
    (OUT / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    for f in sorted(OUT.iterdir()):
        print(f"{f.stat().st_size:>8}  {f.relative_to(OUT.parent.parent)}")


if __name__ == "__main__":
    sys.exit(main())
