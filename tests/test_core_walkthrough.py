"""The README's walkthrough runs exactly as written, output included."""

import re

import numpy as np
import pytest

import fastlazy as fl
from fastlazy import init, nn


def getnet():
    net = nn.Sequential()
    net.add(nn.Dense(256, activation='relu'))
    net.add(nn.Dense(10))
    return net


class MyInit(init.Initializer):
    def _init_weight(self, name, data):
        print('Init', name, data.shape)


PARAM_LINE = re.compile(
    r"^  Parameter (dense\d+)_(weight|bias) \(shape=\((.*)\), "
    r"dtype=float32\)$")


def parse_listing(text):
    """The ParameterDict repr as (prefix, [(layer, kind, shape), ...])."""
    lines = text.strip("\n").split("\n")
    head = re.match(r"^(sequential\d+_) \($", lines[0])
    assert head, lines[0]
    assert lines[-1] == ")"
    rows = []
    for ln in lines[1:-1]:
        m = PARAM_LINE.match(ln)
        assert m, ln
        dims = tuple(int(d) for d in m.group(3).split(",") if d.strip())
        rows.append((m.group(1), m.group(2), dims))
    return head.group(1), rows


def test_walkthrough_deferred(capsys, ref):
    net = getnet()
    print(net.collect_params)
    out = capsys.readouterr().out
    assert out.startswith("<bound method")
    assert "collect_params" in out and "Dense(-1 -> 256" in out

    print(net.collect_params())
    out = capsys.readouterr().out
    prefix, rows = parse_listing(out)
    assert prefix == net.prefix
    l0, l1 = net[0].name, net[1].name
    assert rows == [(l0, "weight", (256, -1)), (l0, "bias", (256,)),
                    (l1, "weight", (10, -1)), (l1, "bias", (10,))]
    # the listing exactly as Gluon 1.x prints it, up to the counters
    expected = (f"{net.prefix} (\n"
                f"  Parameter {l0}_weight (shape=(256, -1), dtype=float32)\n"
                f"  Parameter {l0}_bias (shape=(256,), dtype=float32)\n"
                f"  Parameter {l1}_weight (shape=(10, -1), dtype=float32)\n"
                f"  Parameter {l1}_bias (shape=(10,), dtype=float32)\n"
                f")\n")
    assert out == expected

    with pytest.raises(fl.DeferredInitializationError) as exc:
        net[0].weight.data()
    assert isinstance(exc.value, RuntimeError)
    assert l0 + "_weight" in str(exc.value)
    assert "initialize" in str(exc.value)

    net.initialize()
    assert capsys.readouterr().out == ""
    assert repr(net.collect_params()) + "\n" == expected
    assert ref.states(net) == ["deferred", "initialized", "deferred",
                               "initialized"]
    with pytest.raises(fl.DeferredInitializationError) as exc:
        net[0].weight.data()
    msg = str(exc.value)
    assert "deferred" in msg and "in_units" in msg and "forward" in msg

    x = np.random.uniform(size=(2, 20))
    y = net(x)
    assert y.shape == (2, 10) and y.dtype == np.float32
    assert repr(net.collect_params()) + "\n" == expected.replace(
        "(256, -1)", "(256, 20)").replace("(10, -1)", "(10, 256)")
    assert ref.states(net) == ["initialized"] * 4
    ref.forward_matches(net, x, "walkthrough net")


def test_walkthrough_repr():
    net = getnet()
    assert repr(net) == ("Sequential(\n"
                         "  (0): Dense(-1 -> 256, Activation(relu))\n"
                         "  (1): Dense(-1 -> 10, linear)\n"
                         ")")
    net.initialize()
    net(np.ones((1, 20)))
    assert repr(net) == ("Sequential(\n"
                         "  (0): Dense(20 -> 256, Activation(relu))\n"
                         "  (1): Dense(256 -> 10, linear)\n"
                         ")")


INIT_LINES = re.compile(r"^Init (dense\d+)_weight \(256, 20\)\n"
                        r"Init (dense\d+)_weight \(10, 256\)\n$")


def test_walkthrough_myinit(capsys):
    x = np.random.uniform(size=(2, 20))
    net = getnet()
    net.initialize(init=MyInit())
    assert capsys.readouterr().out == ""           # prints nothing
    y = net(x)
    m = INIT_LINES.match(capsys.readouterr().out)
    assert m, "first forward must print both Init lines, in order"
    assert (m.group(1), m.group(2)) == (net[0].name, net[1].name)
    assert y.shape == (2, 10)
    y = net(x)
    assert capsys.readouterr().out == ""           # no re-initialization
    for _ in range(3):
        net(np.random.uniform(size=(5, 20)))
    assert capsys.readouterr().out == ""
    net.initialize(init=MyInit(), force_reinit=True)
    assert INIT_LINES.match(capsys.readouterr().out)   # both again, now
    net(x)
    assert capsys.readouterr().out == ""


def test_walkthrough_in_units_is_immediate(capsys, ref):
    net = nn.Sequential()
    net.add(nn.Dense(256, in_units=20, activation='relu'))
    net.add(nn.Dense(10, in_units=256))
    assert capsys.readouterr().out == ""
    net.initialize(init=MyInit())
    m = INIT_LINES.match(capsys.readouterr().out)
    assert m and (m.group(1), m.group(2)) == (net[0].name, net[1].name)
    assert ref.states(net) == ["initialized"] * 4
    net(np.ones((3, 20)))
    assert capsys.readouterr().out == ""


def test_walkthrough_myinit_leaves_zeros():
    """MyInit only prints: the weights stay as allocated (zeros) and the
    biases get their own 'zeros' initializer."""
    net = getnet()
    net.initialize(init=MyInit())
    y = net(np.ones((2, 20)))
    np.testing.assert_array_equal(y, np.zeros((2, 10), np.float32))
    for p in net.collect_params().values():
        assert not p.data().any()
