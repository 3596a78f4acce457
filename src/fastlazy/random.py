"""Reproducible random streams for initialization.

``fl.random.seed(n)`` makes every later initialization reproducible: a
parameter's values depend only on the seed and its *structural place* in the
network (``'0.weight'``), not on when it is initialized, so a deferred network
and the same network built with ``in_units`` get identical weights.

Without a seed, every ``initialize()`` call draws fresh entropy from the
operating system, so two unseeded networks differ (as users of any random
initializer expect).
"""

import os
import zlib

import numpy as np

from ._util import is_int

__all__ = ["seed", "get_seed", "make_key", "generator"]

_seed = None


def seed(seed_state):
    """Seed every later initialization.

    Parameters
    ----------
    seed_state : int
        A non-negative integer.
    """
    global _seed
    if not is_int(seed_state):
        raise TypeError(f"fl.random.seed needs an int, got "
                        f"{type(seed_state).__name__}")
    if seed_state < 0:
        raise ValueError(f"fl.random.seed needs a non-negative int, got "
                         f"{seed_state}")
    _seed = int(seed_state)


def get_seed():
    """The seed set by :func:`seed`, or None."""
    return _seed


def new_entropy():
    """The entropy for one ``initialize()`` call: the seed, or fresh bits."""
    return _seed if _seed is not None else int.from_bytes(os.urandom(8), "little")


def make_key(structural_name, entropy=None):
    """The random key of a parameter: (entropy, structural name)."""
    return (new_entropy() if entropy is None else entropy, structural_name)


def generator(key):
    """A numpy Generator for a key made by :func:`make_key`."""
    entropy, name = key
    tag = zlib.crc32(str(name).encode("utf-8"))
    return np.random.Generator(np.random.PCG64(
        np.random.SeedSequence([int(entropy), tag, len(str(name))])))
