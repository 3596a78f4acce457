"""Gluon 1.x's naming rule for blocks given an explicit ``prefix``.

In Gluon, a block created inside ``with parent.name_scope():`` with an
explicit prefix (``HybridSequential(prefix='stage1_')``, or ``prefix=''``)
is named ``parent.prefix + prefix`` (``resnetv10_stage1_``), and entering
the name scope of a block whose prefix was given as ``''`` changes nothing
(its children keep counting in the enclosing scope).  The model zoo's
definitions rely on both for their parameter *names*
(``mobilenetv20_features_conv0_weight``); their structural keys
(``features.0.weight``) do not depend on names at all.

fastlazy's :class:`~fastlazy.block.Block` uses an explicit prefix as given,
so the zoo asks :func:`scoped` for the full prefix.  :func:`scoped` checks
once how ``Block`` behaves and adds the parent's prefix only if ``Block``
does not, so it stays right when ``Block`` adopts Gluon's rule.
"""

import contextlib

from ..block import Block, _NameScope

__all__ = ["scoped", "name_scope"]

_BLOCK_JOINS = None


def _block_joins_prefix():
    """Whether Block itself prefixes an explicit prefix with the enclosing
    scope's (Gluon's rule).  Explicit prefixes touch no name counter."""
    global _BLOCK_JOINS
    if _BLOCK_JOINS is None:
        probe = Block(prefix="probe_")
        with probe.name_scope():
            child = Block(prefix="child_")
        _BLOCK_JOINS = child.prefix == "probe_child_"
    return _BLOCK_JOINS


def scoped(prefix):
    """The prefix to pass for a block that Gluon creates with ``prefix``:
    with the enclosing name scope's prefix in front, as Gluon names it."""
    scope = _NameScope.current()
    if scope is None or _block_joins_prefix():
        return prefix
    return scope._block.prefix + prefix


def name_scope(block):
    """``block.name_scope()``, except for a block whose own prefix is its
    parent's (given as ``''``): entering that one changes nothing in
    Gluon, so it changes nothing here either."""
    parent = _NameScope.current()
    if parent is not None and block.prefix == parent._block.prefix:
        return contextlib.nullcontext()
    return block.name_scope()
