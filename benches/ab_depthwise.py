"""Depthwise convolution (MobileNet's hot spot) against PyTorch eager and
other fastlazy routes, in fresh processes, interleaved.

    python benches/ab_depthwise.py [--rounds 3] [--threads 1,2]
                                   [--old OTHER_SRC] [--cases dw1,dw2,block]

Cases, float32, one image, same weights for every peer:

* ``dw1``:   Conv2D(64, 3, padding=1, groups=64) on 1 x 64 x 56 x 56
* ``dw2``:   the same with strides=2
* ``block``: a MobileNetV2 block on 1 x 32 x 56 x 56: 1x1 expand to 192 ->
  BatchNorm -> relu6 -> 3x3 depthwise -> BatchNorm -> relu6 -> 1x1 project
  to 32 -> BatchNorm (relu6 is ``HybridLambda(lambda F, x: F.clip(x, 0,
  6))``, as Gluon model zoos write it)

Peers: ``direct`` (this checkout's ``src``, the depthwise kernel of the
table), ``gemm`` (the same build with ``set_conv_tuning(depthwise=False)``:
im2col + GEMM per group), ``old`` (``--old``: another built ``src``, e.g. a
``git worktree`` of an earlier commit) and ``torch`` (when it imports).
Each round runs every (case, threads, peer) once, in a fresh interpreter,
so drift on a shared machine hits all; the table shows the median over
rounds of each run's median forward time, in microseconds.  Every peer's
output is checked against PyTorch's (or the direct route's) first.
"""

import argparse
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SRC = os.path.join(os.path.dirname(HERE), "src")

# run in a fresh interpreter: argv = case threads peer src; prints
# "<median us> <max abs output>"
CHILD = r'''
import sys, time
import numpy as np
case, threads, peer, src = sys.argv[1], int(sys.argv[2]), *sys.argv[3:5]
rng = np.random.default_rng(0)
E = 192
if case in ("dw1", "dw2"):
    s = 1 if case == "dw1" else 2
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    w = (rng.standard_normal((64, 1, 3, 3)) * 0.3).astype(np.float32)
    b = (rng.standard_normal(64) * 0.1).astype(np.float32)
else:
    x = rng.standard_normal((1, 32, 56, 56)).astype(np.float32)
    ws = [(rng.standard_normal((E, 32, 1, 1)) * 0.2).astype(np.float32),
          (rng.standard_normal((E, 1, 3, 3)) * 0.3).astype(np.float32),
          (rng.standard_normal((32, E, 1, 1)) * 0.1).astype(np.float32)]
    bns = [[rng.uniform(lo, hi, c).astype(np.float32)
            for lo, hi in ((0.5, 1.5), (-.2, .2), (-.2, .2), (.5, 1.5))]
           for c in (E, E, 32)]

def timeit(f, reps=200):
    for _ in range(20):
        f()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        f()
        ts.append(time.perf_counter() - t)
    return float(np.median(ts)) * 1e6

if peer == "torch":
    import torch
    torch.set_num_threads(threads)
    nn_ = torch.nn
    with torch.no_grad():
        if case != "block":
            m = nn_.Conv2d(64, 64, 3, stride=s, padding=1, groups=64)
            m.weight.copy_(torch.from_numpy(w))
            m.bias.copy_(torch.from_numpy(b))
        else:
            def bn(c, p):
                m = nn_.BatchNorm2d(c, eps=1e-5)
                for t, v in zip((m.weight, m.bias, m.running_mean,
                                 m.running_var), p):
                    t.copy_(torch.from_numpy(v))
                return m
            convs = [nn_.Conv2d(32, E, 1, bias=False),
                     nn_.Conv2d(E, E, 3, padding=1, groups=E, bias=False),
                     nn_.Conv2d(E, 32, 1, bias=False)]
            for c, v in zip(convs, ws):
                c.weight.copy_(torch.from_numpy(v))
            m = nn_.Sequential(convs[0], bn(E, bns[0]), nn_.ReLU6(),
                               convs[1], bn(E, bns[1]), nn_.ReLU6(),
                               convs[2], bn(32, bns[2]))
        m.eval()
        tx = torch.from_numpy(x)
        out = m(tx).numpy()
        us = timeit(lambda: m(tx))
else:
    sys.path.insert(0, src)
    import fastlazy as fl
    from fastlazy import nn, _plan
    fl.set_num_threads(threads)
    if peer == "gemm":
        _plan.set_conv_tuning(depthwise=False)
    if case != "block":
        net = nn.Conv2D(64, 3, strides=s, padding=1, groups=64,
                        in_channels=64)
        net.initialize()
        net.weight.set_data(w)
        net.bias.set_data(b)
    else:
        relu6 = lambda: nn.HybridLambda(lambda F, x: F.clip(x, 0, 6))
        net = nn.HybridSequential()
        net.add(nn.Conv2D(E, 1, use_bias=False, in_channels=32),
                nn.BatchNorm(), relu6(),
                nn.Conv2D(E, 3, padding=1, groups=E, use_bias=False,
                          in_channels=E),
                nn.BatchNorm(), relu6(),
                nn.Conv2D(32, 1, use_bias=False, in_channels=E),
                nn.BatchNorm())
        net.initialize()
        net(x)
        for k, (ci, bi) in enumerate(((0, 1), (3, 4), (6, 7))):
            net[ci].weight.set_data(ws[k])
            bn = net[bi]
            for prm, v in zip((bn.gamma, bn.beta, bn.running_mean,
                               bn.running_var), bns[k]):
                prm.set_data(v)
    out = np.asarray(net(x))
    us = timeit(lambda: net(x))
np.save(sys.argv[5], out)
print(f"{us:.1f}")
'''


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--cases", default="dw1,dw2,block")
    ap.add_argument("--old", help="another built fastlazy src folder")
    args = ap.parse_args()
    peers = {"direct": SRC, "gemm": SRC}
    if args.old:
        peers["old"] = args.old
    try:
        subprocess.run([sys.executable, "-c", "import torch"], check=True,
                       capture_output=True)
        peers["torch"] = ""
    except subprocess.CalledProcessError:
        print("(torch does not import: no PyTorch column)")
    import tempfile
    import numpy as np
    tmp = tempfile.mkdtemp(prefix="ab-depthwise-")
    times = {}
    for _ in range(args.rounds):
        for case in args.cases.split(","):
            for t in args.threads.split(","):
                outs = {}
                for peer, src in peers.items():
                    path = os.path.join(tmp, f"{case}-{peer}.npy")
                    r = subprocess.run(
                        [sys.executable, "-c", CHILD, case, t, peer, src,
                         path], capture_output=True, text=True, check=True)
                    times.setdefault((case, t, peer), []).append(
                        float(r.stdout.split()[-1]))
                    outs[peer] = np.load(path)
                ref = outs.get("torch", outs["direct"])
                for peer, y in outs.items():
                    if not np.allclose(y, ref, rtol=1e-4, atol=1e-4):
                        sys.exit(f"{case}: {peer}'s output differs from the "
                                 f"reference by {np.abs(y - ref).max()}")
    cols = list(peers)
    print("| case | threads | " + " | ".join(f"{p} (us)" for p in cols)
          + " | " + " | ".join(f"{p}/direct" for p in cols if p != "direct")
          + " |")
    print("| --- " * (2 + 2 * len(cols) - 1) + "|")
    for case in args.cases.split(","):
        for t in args.threads.split(","):
            med = {p: statistics.median(times[(case, t, p)]) for p in cols}
            print(f"| {case} | {t} | "
                  + " | ".join(f"{med[p]:.0f}" for p in cols) + " | "
                  + " | ".join(f"{med[p] / med['direct']:.2f}x"
                               for p in cols if p != "direct") + " |")


if __name__ == "__main__":
    main()
