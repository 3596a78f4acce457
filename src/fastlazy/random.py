"""Reproducible random streams for initialization.

After ``fl.random.seed(n)``, a parameter's values depend on three things:

* the seed ``n``;
* which ``initialize()`` call since the seed decided them -- the 1st, the
  2nd, ... (``Block.initialize``, ``ParameterDict.initialize`` and
  ``Parameter.initialize`` each count as one call, and so does
  ``force_reinit=True``, which therefore draws new values);
* the parameter's structural place in the network (``'0.weight'``).

They do *not* depend on when the deferred initialization actually runs, so
with one seed and one ``initialize()`` call a deferred network and the same
network built with ``in_units`` get identical weights, while an ensemble
built and initialized after one seed gets different, reproducible members::

    fl.random.seed(0)
    nets = [make_net() for _ in range(3)]
    for net in nets:
        net.initialize()        # calls 1, 2, 3: three different nets

Without a seed, every ``initialize()`` call draws fresh entropy from the
operating system.
"""

import itertools
import os
import threading
import zlib

import numpy as np

from ._util import is_int

__all__ = ["seed", "get_seed", "new_call", "make_key", "generator"]

_seed = None
_calls = itertools.count(1)
_lock = threading.Lock()


def seed(seed_state):
    """Seed every later initialization, and start counting ``initialize()``
    calls from 1 again.

    Parameters
    ----------
    seed_state : int
        A non-negative integer.
    """
    global _seed, _calls
    if not is_int(seed_state):
        raise TypeError(f"fl.random.seed needs an int, got "
                        f"{type(seed_state).__name__}")
    if seed_state < 0:
        raise ValueError(f"fl.random.seed needs a non-negative int, got "
                         f"{seed_state}")
    with _lock:
        _seed = int(seed_state)
        _calls = itertools.count(1)


def get_seed():
    """The seed set by :func:`seed`, or None."""
    return _seed


def new_call():
    """The entropy of one ``initialize()`` call: ``(seed, call number)``
    after a seed, fresh bits from the operating system without one."""
    with _lock:
        if _seed is None:
            return (int.from_bytes(os.urandom(8), "little"),)
        return (_seed, next(_calls))


def make_key(structural_name, call=None):
    """The random key of a parameter: (entropy of its initialize() call,
    structural name).  ``call`` None starts a new call."""
    return (new_call() if call is None else call, structural_name)


def generator(key):
    """A numpy Generator for a key made by :func:`make_key`."""
    call, name = key
    if is_int(call):
        call = (call,)
    tag = zlib.crc32(str(name).encode("utf-8"))
    return np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([int(c) for c in call]
                               + [tag, len(str(name))])))
