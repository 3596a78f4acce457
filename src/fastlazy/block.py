"""Block and Sequential: the Gluon surface -- naming, children,
parameters, persistence, reprs.

A block whose whole subtree is made of built-in layers ("plannable") runs as
one compiled plan once its shapes are known: ``block(x)`` is the C call
slot of :class:`fastlazy._plan.CompiledCall`, Block's base, and the first
call for an input shape
goes through :mod:`fastlazy._compile`.  A user-defined block with its own
``forward`` runs that forward in Python, its built-in children still
compiled.  A layer states its shape rule once, in ``_infer``, and describes
its compiled work in ``_emit`` (typed steps, :mod:`fastlazy._steps`).
"""

import re
import sys
import threading
import warnings
import weakref
from collections import OrderedDict

import numpy as np

from ._plan import CompiledCall, deliver
from ._parameter import Parameter, _float_dtype
from ._util import bfloat16
from ._util import is_int
from .errors import DeferredInitializationError, ShapeError
from .initializers import Uniform
from .parameter_dict import ParameterDict

__all__ = ["Block", "HybridBlock", "Sequential", "HybridSequential"]


def _compiler():
    """fastlazy._compile, imported at the first compilation (it brings the
    tracer and the step kinds, which ``import fastlazy`` does not need)."""
    from . import _compile
    return _compile


# ---------------------------------------------------------------------------
# Naming


class _NameScope:
    """``with block.name_scope():`` -- names and parameters of the blocks
    created inside it, as Gluon 1.x's ``_BlockScope``.

    Outside any scope a block without ``prefix`` is named by a global
    per-class counter (``dense0_``).  Inside ``parent.name_scope()`` the
    counter is the parent's own, and the child is named ``parent.prefix +
    (prefix or hint + count)``; its parameters are named from
    ``parent.params.prefix`` the same way and, unless the child gets its
    own ``params``, are looked up first in the ParameterDict the parent
    was given with ``params=...`` -- so ``Sequential(params=other)``
    shares with every child created in its scope.  A block made with the
    empty prefix ``''`` opens no scope: blocks created in its
    ``name_scope()`` are named by the enclosing scope (the model zoo's
    ``self.features = HybridSequential(prefix='')`` pattern), as in Gluon.
    """

    _local = threading.local()
    _global_counter = {}

    def __init__(self, block):
        self._block = block
        self._old = None
        self._entered = False

    @classmethod
    def current(cls):
        return getattr(cls._local, "scope", None)

    @classmethod
    def create(cls, prefix, params, hint):
        """``(prefix, ParameterDict)`` of a new block (see the class)."""
        scope = cls.current()
        if scope is None:
            if prefix is None:
                count = cls._global_counter.get(hint, 0)
                cls._global_counter[hint] = count + 1
                prefix = f"{hint}{count}_"
            if params is None:
                return prefix, ParameterDict(prefix)
            return prefix, ParameterDict(params.prefix, shared=params)
        parent = scope._block
        if prefix is None:
            counter = parent._name_counter
            count = counter.get(hint, 0)
            counter[hint] = count + 1
            prefix = f"{hint}{count}_"
        if params is None:
            params = ParameterDict(parent.params.prefix + prefix,
                                   shared=parent.params._shared)
        else:
            params = ParameterDict(params.prefix, shared=params)
        return parent.prefix + prefix, params

    def __enter__(self):
        if self._block._empty_prefix:
            return self
        self._old = _NameScope.current()
        _NameScope._local.scope = self
        self._entered = True
        return self

    def __exit__(self, *exc):
        if self._entered:
            _NameScope._local.scope = self._old
            self._old = None
            self._entered = False
        return False


# a block's own bookkeeping dicts, never searched for unregistered Blocks
_OWN_CONTAINERS = frozenset(("_children", "_reg_params", "_forward_hooks",
                             "_forward_pre_hooks", "_name_counter"))


class HookHandle:
    """What :meth:`Block.register_forward_hook` and
    :meth:`Block.register_forward_pre_hook` return: ``detach()`` removes
    the hook (again: nothing happens); also a context manager that detaches
    on exit, as Gluon's ``HookHandle``."""

    def __init__(self, block, hooks, key):
        self._block = weakref.ref(block)
        self._hooks = weakref.ref(hooks)
        self._key = key

    def detach(self):
        """Remove the hook.  The block compiles again once it has no hooks
        left (its plans and its parents' are rebuilt at the next call)."""
        hooks = self._hooks()
        if hooks is None or self._key not in hooks:
            return
        del hooks[self._key]
        block = self._block()
        if block is not None:
            block._structure_changed()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.detach()
        return False


def _traced(x, more):
    """Whether a call's inputs are values of a trace (see _compile)."""
    ops = sys.modules.get("fastlazy.ops")
    if ops is None:             # nothing was ever traced in this process
        return False
    return isinstance(x, ops.Sym) or any(isinstance(m, ops.Sym)
                                         for m in more)


def _indent(text, spaces):
    lines = text.split("\n")
    return "\n".join([lines[0]] + [" " * spaces + ln for ln in lines[1:]])


# ---------------------------------------------------------------------------
# Block


class Block(CompiledCall):
    """Base class of every layer and container.

    Parameters
    ----------
    prefix : str, optional
        Prefix of this block's name and of its parameters' names; by default
        the lower-cased class name and a per-class counter (``dense0_``).
    params : ParameterDict, optional
        Parameters to share: this block uses the very same Parameter objects.

    Subclass and override ``forward(x)`` for a custom block; assigning a
    Block or Parameter to an attribute registers it (as in Gluon).
    """

    # True for built-in blocks that the compiled plan can run
    _plannable = False

    def __init__(self, prefix=None, params=None):
        object.__setattr__(self, "_children", OrderedDict())
        object.__setattr__(self, "_reg_params", OrderedDict())
        object.__setattr__(self, "_plan", None)
        # its plan while it has hooks (see _call_slow)
        object.__setattr__(self, "_hook_plan", None)
        # plans of this block or of a block containing it (see _watch_plan)
        object.__setattr__(self, "_plans", None)
        # why the compiler runs this block eagerly, if it does
        object.__setattr__(self, "_eager_reason", None)
        # this network's own lock: its first forward never waits for
        # another network's
        object.__setattr__(self, "_lock", threading.RLock())
        if params is not None and not isinstance(params, ParameterDict):
            raise TypeError(f"{type(self).__name__}: params must be a "
                            f"ParameterDict (e.g. other.collect_params()), "
                            f"got {type(params).__name__}")
        if prefix is not None and not isinstance(prefix, str):
            raise TypeError(f"{type(self).__name__}: prefix must be a str, "
                            f"got {type(prefix).__name__}")
        # Gluon: a block made with prefix='' opens no scope of its own (its
        # children are named in the enclosing scope), wherever it is made
        object.__setattr__(self, "_empty_prefix", prefix == "")
        prefix, params = _NameScope.create(prefix, params, self._alias())
        object.__setattr__(self, "_prefix", prefix)
        object.__setattr__(self, "_name",
                           prefix[:-1] if prefix.endswith("_") else prefix)
        object.__setattr__(self, "_params", params)
        # per-class counters of the children created in its name_scope()
        # (kept here, not in a scope object that would make a reference
        # cycle with the block)
        object.__setattr__(self, "_name_counter", {})
        # forward hooks (see register_forward_hook); they belong to this
        # object: copies and pickles have none
        object.__setattr__(self, "_forward_hooks", OrderedDict())
        object.__setattr__(self, "_forward_pre_hooks", OrderedDict())
        # blocks that run eagerly because this block's code could not be
        # traced: they retry when this block changes (see _fell_back)
        object.__setattr__(self, "_fallen", None)

    def _alias(self):
        return type(self).__name__.lower()

    # -- identity ----------------------------------------------------------

    @property
    def prefix(self):
        """Prefix of this block's parameter names (``'dense0_'``)."""
        return self._prefix

    @property
    def name(self):
        """Name of this block (``'dense0'``)."""
        return self._name

    @property
    def params(self):
        """This block's own parameters (not its children's)."""
        return self._params

    def name_scope(self):
        """Context in which new child blocks are named under this block:
        ``with self.name_scope(): self.dense = nn.Dense(4)`` names it
        ``<prefix>dense0_`` and has it share the parameters this block was
        given with ``params=...`` (see :class:`_NameScope`)."""
        return _NameScope(self)

    def __setattr__(self, name, value):
        # never through self.__dict__: reading it makes CPython give up the
        # compact attribute storage, and every later attribute read (the
        # forward's self._plan) slower
        existing = None
        if name in getattr(self, "_children", ()) or \
                name in getattr(self, "_reg_params", ()):
            try:
                existing = object.__getattribute__(self, name)
            except AttributeError:      # registered under a name only
                existing = None
        if isinstance(existing, (Block, Parameter)) and \
                not isinstance(value, type(existing)):
            raise TypeError(
                f"Changing attribute type for {name} from {type(existing)} "
                f"to {type(value)} is not allowed. {type(self).__name__} "
                f"'{self.name}' registered {name!r} as a child "
                f"{'block' if isinstance(existing, Block) else 'parameter'}"
                f"; assign another {type(existing).__name__} to replace it, "
                f"or use another attribute name.")
        if isinstance(value, Block):
            self.register_child(value, name)
        elif isinstance(value, Parameter):
            old = self._reg_params.get(name)
            if old is not None and old is not value:
                # the replaced parameter must not stay in params (it would
                # be initialized, listed and saved)
                if self._params._params.get(old.name) is old:
                    del self._params._params[old.name]
            self._reg_params[name] = value
            self._params._add(value)
            self._structure_changed()
        elif isinstance(value, (list, tuple, dict)):
            # looked into by collect_params (see _unregistered_containers)
            containers = getattr(self, "_container_attrs", None)
            if containers is None:
                containers = set()
                object.__setattr__(self, "_container_attrs", containers)
            containers.add(name)
        object.__setattr__(self, name, value)

    def _unregistered_containers(self):
        """Names (``'Net.layers'``) of the list, tuple or dict attributes
        that hold Blocks which are not children of this block: they are not
        in collect_params, save or initialize (Gluon warns about them).
        The attributes looked at are those assigned a list, tuple or dict
        (their contents are looked at now, so later appends count)."""
        children = set(map(id, self._children.values()))

        def hidden(data):
            if isinstance(data, (list, tuple)):
                return any(hidden(d) for d in data)
            if isinstance(data, dict):
                return any(hidden(d) for d in data.values())
            return isinstance(data, Block) and id(data) not in children

        out = []
        for key in sorted(getattr(self, "_container_attrs", None) or ()):
            if key.startswith("__") or key in _OWN_CONTAINERS:
                continue
            try:
                value = object.__getattribute__(self, key)
            except AttributeError:
                continue
            if isinstance(value, (list, tuple, dict)) and hidden(value):
                out.append(f"{type(self).__name__}.{key}")
        return out

    # -- the plans that depend on this block ---------------------------------

    def _watch_plan(self, plan):
        """``plan`` (of this block or of one containing it) reads this
        block's structure: it is rebuilt when the structure changes."""
        if self._plans is None:
            object.__setattr__(self, "_plans", weakref.WeakSet())
        self._plans.add(plan)

    def _structure_changed(self):
        """A child, parameter or hook was added or replaced: the plans that
        contain this block are rebuilt at their next call, and the blocks
        that run eagerly because this one could not be traced try again.
        No other network is touched."""
        plans = self._plans
        if plans:
            for plan in list(plans):
                plan._invalidate()
            plans.clear()
        object.__setattr__(self, "_eager_reason", None)
        object.__setattr__(self, "_hook_plan", None)
        fallen = self._fallen
        if fallen:
            blocks = list(fallen)
            fallen.clear()
            for block in blocks:
                if block is not self:
                    block._structure_changed()

    def register_child(self, block, name=None):
        """Add ``block`` as a child, under ``name`` (default: its index)."""
        if not isinstance(block, Block):
            raise TypeError(f"{self.name}: children must be Blocks, got "
                            f"{type(block).__name__}")
        if name is None:
            name = str(len(self._children))
        self._children[name] = block
        self._structure_changed()
        return block

    # -- hooks ---------------------------------------------------------------

    def register_forward_pre_hook(self, hook):
        """Call ``hook(block, inputs)`` before each forward of this block
        (``inputs``: the tuple of positional inputs).  Returns a
        :class:`HookHandle`; ``handle.detach()`` removes it.

        The hook's return value is ignored: it cannot change the inputs (as
        in Gluon 1.x; the arrays it sees are the caller's, so do not write
        into them).  See :meth:`register_forward_hook` for what hooks cost.
        """
        return self._add_hook(self._forward_pre_hooks, hook)

    def register_forward_hook(self, hook):
        """Call ``hook(block, inputs, output)`` after each forward of this
        block.  Returns a :class:`HookHandle`; ``handle.detach()`` removes
        it.  The return value is ignored; ``output`` is the array the
        caller gets.

        Notes
        -----
        A compiled plan cannot call Python between its layers, so a
        network containing a block with hooks does not run as one plan:
        every block *above* the hooked one runs on the eager path (its
        ``forward``: a Sequential calls its children in turn, a HybridBlock
        runs ``hybrid_forward`` on NumPy arrays), and the other children
        stay compiled on their own.  The hooked block itself still runs
        compiled, its hooks called around its plan.  ``fl.explain(net,
        x)`` names the hooked block ("has forward hooks").  Detaching the
        last hook counts as a structure change: the plans are rebuilt at
        the next call and the network compiles as one plan again.  Hooks
        belong to the block object: copies and pickles have none.
        """
        return self._add_hook(self._forward_hooks, hook)

    def _add_hook(self, hooks, hook):
        if not callable(hook):
            raise TypeError(f"{type(self).__name__} '{self.name}': a hook "
                            f"must be callable, got {type(hook).__name__}")
        key = object()
        hooks[key] = hook
        # the plans that contain this block must not run it without its
        # hooks any more
        object.__setattr__(self, "_plan", None)
        self._structure_changed()
        return HookHandle(self, hooks, key)

    def _has_hooks(self):
        return bool(self._forward_hooks) or bool(self._forward_pre_hooks)

    def _hooks_below(self):
        """Whether a block under this one (not itself) has hooks."""
        for child in self._children.values():
            if child._has_hooks() or child._hooks_below():
                return True
        return False

    # -- parameters ----------------------------------------------------------

    def _collect_params_with_prefix(self, prefix=""):
        """OrderedDict structural key ('0.weight') -> Parameter."""
        if prefix:
            prefix += "."
        out = OrderedDict((prefix + k, p) for k, p in self._reg_params.items())
        for cname, child in self._children.items():
            out.update(child._collect_params_with_prefix(prefix + cname))
        return out

    def collect_params(self, select=None):
        """A :class:`ParameterDict` of this block's and all its children's
        parameters, in layer order; ``select`` is a regular expression
        matched against the names (e.g. ``'.*weight'``).

        Warns (``UserWarning``, as Gluon) about Blocks kept in a list,
        tuple or dict attribute anywhere in the network: they are not
        registered, so their parameters are not collected."""
        hidden = []
        self.apply(lambda b: hidden.extend(b._unregistered_containers()))
        for name in hidden:
            warnings.warn(
                f'"{name}" is an unregistered container with Blocks. Note '
                f"that Blocks inside the list, tuple or dict will not be "
                f"registered automatically. Make sure to register them "
                f"using register_child() or switching to "
                f"nn.Sequential/nn.HybridSequential instead. ",
                UserWarning, stacklevel=2)
        out = ParameterDict(self._params.prefix)
        regex = re.compile(select) if select is not None else None
        seen = {}
        for key, param in self._collect_params_with_prefix().items():
            first = seen.setdefault(param.name, (param, key))
            if first[0] is param and first[1] != key:
                continue        # shared: listed once, at its first place
            if first[0] is not param:
                # silently keeping one would leave the other out of
                # initialize(), save and load
                raise ValueError(
                    f"{self.name}: two different parameters are named "
                    f"'{param.name}' (at '{first[1]}' and '{key}'). Give "
                    f"the blocks different prefixes, or make one block use "
                    f"the other's parameters with params=... or "
                    f"share_parameters().")
            if regex is None or regex.match(param.name):
                out._add(param, key)
        return out

    def initialize(self, init=None, ctx=None, verbose=False,
                   force_reinit=False):
        """Initialize every parameter, now where its shape is known and at
        the first forward pass otherwise.

        Parameters
        ----------
        init : Initializer or str, default init.Uniform()
            Used for parameters without their own initializer.
        force_reinit : bool
            Re-run initialization of already-initialized parameters;
            otherwise they are left alone with a warning.
        """
        self.collect_params().initialize(init if init is not None
                                         else Uniform(), ctx, verbose,
                                         force_reinit)

    def share_parameters(self, params):
        """Use the Parameter objects in ``params`` for this block's own.

        ``params`` is a ParameterDict (e.g. ``other.collect_params()``) of a
        block with the same structure; parameters are matched by structural
        key, else by name suffix.  Returns self.
        """
        if not isinstance(params, (ParameterDict, dict)):
            raise TypeError(f"{self.name}.share_parameters needs a "
                            f"ParameterDict, got {type(params).__name__}")
        mine = self._collect_params_with_prefix()
        by_key = {}
        if isinstance(params, ParameterDict):
            for name, p in params.items():
                key = params.structural_key(name)
                if key is not None:
                    by_key[key] = p
        else:
            by_key.update(params)
        # stage every replacement first: nothing changes on error
        staged = []
        for key, old in mine.items():
            new = by_key.get(key)
            if new is None:
                cands = [p for n, p in params.items()
                         if n == key or n.endswith("_" + key)
                         or n.endswith("." + key)]
                if len(cands) == 1:
                    new = cands[0]
            if new is None:
                raise ValueError(
                    f"{self.name}.share_parameters: no parameter for "
                    f"'{key}' ({old.name}) in the given ParameterDict "
                    f"(keys: {list(params.keys())[:8]})")
            if new.shape is not None and old.shape is not None:
                try:
                    old._merge_shape(new.shape)
                except ShapeError as exc:
                    raise ShapeError(f"{self.name}.share_parameters: "
                                     f"{exc}") from None
            staged.append((key, old, new))
        for key, old, new in staged:
            self._replace_param(key.split("."), old, new)
        return self

    def _replace_param(self, path, old, new):
        if len(path) == 1:
            attr = path[0]
            self._reg_params[attr] = new
            object.__setattr__(self, attr, new)
            self._params._params.pop(old.name, None)
            self._params._params[new.name] = new
            self._structure_changed()
            return
        self._children[path[0]]._replace_param(path[1:], old, new)

    def cast(self, dtype):
        """Convert the parameters to ``dtype``: 'float32', 'float64' or
        'bfloat16'.

        With 'bfloat16' the weights of Dense and Conv2D layers (and the
        FullyConnected and Convolution weights of an exported graph)
        become bfloat16, rounded to nearest even; every other parameter
        -- biases, BatchNorm and LayerNorm parameters and statistics,
        PReLU slopes, constants -- becomes float32, as Gluon keeps
        BatchNorm in float32 under half precision.  The network then takes
        and returns float32, and every value between its layers is
        float32.  Parameters not initialized yet take the dtype when they
        are created.  Casting back to float32 is exact.
        """
        params = list(self.collect_params().values())
        dt = _float_dtype(dtype, f"{self.name}.cast")
        if dt is bfloat16:
            weights = set()
            self.apply(lambda b: weights.update(
                id(p) for p in b._bf16_weights() if p is not None))
            targets = [(p, bfloat16 if id(p) in weights
                        else np.dtype(np.float32)) for p in params]
        else:
            targets = [(p, dt) for p in params]
        snaps = [(p, p._snapshot()) for p in params]
        try:
            for p, target in targets:
                p.cast(target)
        except BaseException:
            for p, snap in snaps:
                p._restore(snap)
            raise
        self.apply(lambda b: (b._on_cast(dt), b._structure_changed()))

    def _on_cast(self, dtype):
        """Hook for blocks that remember their dtype."""

    def _bf16_weights(self):
        """This block's own parameters that ``cast('bfloat16')`` stores as
        bfloat16 (the matrices its products read); none by default."""
        return ()

    def hybridize(self, active=True, **kwargs):
        """Accepted for Gluon compatibility: every fastlazy forward is
        already compiled."""

    def apply(self, fn):
        """Call ``fn`` on every child recursively and on self; returns self."""
        for child in self._children.values():
            child.apply(fn)
        fn(self)
        return self

    # -- forward -----------------------------------------------------------

    # block(x, *more, out=None) is CompiledCall.__call__: the compiled plan
    # when it fits, else _call_slow

    def forward(self, x, *args):
        """Compute the output for ``x``; custom blocks override this.  A
        built-in layer's forward is its compiled plan."""
        if type(self)._plannable and self._eager_reason is None:
            return self(x, *args)
        raise NotImplementedError(
            f"{type(self).__name__} must implement forward(x) (or derive "
            f"from HybridBlock and implement hybrid_forward(F, x))")

    def _is_plannable(self):
        """Whether the compiler traces this block (else: eager forward)."""
        if self._eager_reason is not None:
            return False
        if type(self)._plannable:
            return True
        # a plain Block: compiled only if it is a container that keeps
        # Block's own forward
        return False

    def _fell_back(self, failed):
        """Tracing failed (``failed``: fastlazy._compile.TraceFailed): run
        eagerly until the structure of this block, of a block under it or
        of the block whose code failed changes (a child replaced, a hook
        detached): then the next call tries to compile again."""
        object.__setattr__(self, "_eager_reason",
                           (failed.block.name, failed.reason))
        watched = [failed.block] if isinstance(failed.block, Block) else []
        self.apply(watched.append)
        for block in watched:
            if block is self:
                continue
            if block._fallen is None:
                object.__setattr__(block, "_fallen", weakref.WeakSet())
            block._fallen.add(self)

    def _call_slow(self, x, *more, out=None):
        """``block(x)`` without a current plan.  A custom block's Python
        forward comes here at every call: that case is kept to two
        attribute tests.  ``out``: see :class:`~fastlazy._plan.CompiledCall`."""
        if self._forward_hooks or self._forward_pre_hooks or \
                (type(self)._plannable and self._children):
            return self._call_hooked(x, *more, out=out)
        return _compiler().call_slow(self, x, *more, out=out)

    def _call_hooked(self, x, *more, out=None):
        """:meth:`_call_slow` when this block has hooks, or may have
        hooked blocks below: hooks around the computation, and eager when
        a block below has hooks (see :meth:`register_forward_hook`)."""
        if not (self._forward_hooks or self._forward_pre_hooks):
            if self._is_plannable() and self._hooks_below() and \
                    not _traced(x, more):
                return self._forward_around_hooks(x, *more, out=out)
            return _compiler().call_slow(self, x, *more, out=out)
        if _traced(x, more):
            return _compiler().call_slow(self, x, *more)   # hooks: see trace
        inputs = (x,) + more
        for hook in list(self._forward_pre_hooks.values()):
            hook(self, inputs)
        if self._is_plannable() and self._hooks_below():
            res = self._forward_around_hooks(x, *more, out=out)
        else:
            # this block's own plan, kept apart from _plan: the fast path
            # of block(x) would run it without the hooks
            plan = self._hook_plan
            res = None
            if plan is not None and plan.is_current():
                res = plan.run(x, out) if not more else \
                    plan.run_many(*inputs, out=out)
            if res is None:
                res = _compiler().call_slow(self, x, *more, out=out,
                                            _slot="_hook_plan")
        for hook in list(self._forward_hooks.values()):
            hook(self, inputs, res)
        return res

    def _forward_around_hooks(self, x, *more, out=None):
        """The eager forward of a block with hooked blocks below it.  Its
        deferred parameters are completed first, from a trace (hooks do not
        stop a trace that builds no plan), so a ``hybrid_forward`` that
        reads its own parameters works on the first call too."""
        if not self._params_ready():
            arrs = _compiler()._arrays(self, (x,) + more)
            with self._lock:
                try:
                    _compiler().prepare(self, [a.shape for a in arrs])
                except _compiler().TraceFailed:
                    pass        # forward() says what is wrong
        res = self.forward(x, *more)
        if out is None:
            return res
        return deliver(res, out, (x,) + more,
                       f"{type(self).__name__} '{self.name}'")

    def _params_ready(self):
        """Whether every parameter here and below is initialized."""
        for p in self._reg_params.values():
            if not p.is_initialized:
                return False
        for child in self._children.values():
            if not child._params_ready():
                return False
        return True

    def _infer(self, shape, pending):
        """The shape rule: output shape for input ``shape``, recording
        completed parameter shapes in ``pending`` (Parameter -> shape)
        without changing anything.  Raises ShapeError naming the layer.
        A container's is its children's, in order."""
        for child in self._children.values():
            shape = child._infer(shape, pending)
        return shape

    def _emit(self, builder, x, in_shape, out_shape):
        """Add this layer's steps reading buffer ``x`` (samples of
        ``in_shape``) to ``builder``; return the buffer holding the output
        (of ``out_shape``, from ``_infer``).  The default is the identity
        (Dropout, Flatten: a buffer is flat per sample)."""
        return x

    def _trace_sym(self, x, *more):
        """This layer applied to traced values (fastlazy.ops.Sym): its
        shape rule, then its steps.  Containers and HybridBlocks override
        it."""
        if self._eager_reason is not None:
            raise _compiler().TraceFailed(self, self._eager_reason[1])
        if not type(self)._plannable:
            raise _compiler().TraceFailed(
                self, "its forward() is Python code; derive from "
                "HybridBlock and write hybrid_forward(F, x) to compile it")
        if more:
            raise TypeError(f"{type(self).__name__} '{self.name}' takes one "
                            f"input, got {1 + len(more)}")
        from .ops import Sym
        out = self._infer(x.shape, x.ctx.pending)
        buf = self._emit(x.ctx.builder, x.buf, x.shape, out)
        return Sym(x.ctx, buf, out)

    def build(self, input_shape):
        """Finish deferred initialization for inputs of ``input_shape``
        (e.g. ``(None, 20)``; None is the batch size) without computing
        anything.  Returns the output shape."""
        if not isinstance(input_shape, (tuple, list)) or not input_shape:
            raise TypeError(f"{self.name}.build: input_shape must be a "
                            f"non-empty tuple such as (None, 20), got "
                            f"{input_shape!r}")
        shape = []
        for d in input_shape:
            if d is None:
                d = 1
            if not is_int(d) or d < 0:
                raise TypeError(f"{self.name}.build: dimensions must be "
                                f"non-negative ints or None, got "
                                f"{input_shape!r}")
            shape.append(int(d))
        if not self._is_plannable():
            raise TypeError(f"{self.name}.build: only blocks made of "
                            f"built-in layers can be built from a shape; "
                            f"call it on an example input instead")
        with self._lock:
            try:
                out = _compiler().prepare(self, [tuple(shape)])
            except _compiler().TraceFailed as failed:
                raise TypeError(
                    f"{self.name}.build: {failed}. A network whose code "
                    f"cannot be compiled is built from an example input "
                    f"instead: call it on one") from None
        if len(out) == 1:
            return (input_shape[0],) + tuple(out[0][1:])
        return tuple((input_shape[0],) + tuple(o[1:]) for o in out)

    # -- persistence -------------------------------------------------------

    def save_parameters(self, filename, deduplicate=False):
        """Save every parameter to ``filename`` (NumPy ``.npz``) under
        structural keys ('0.weight').  The file is written whole or not at
        all.  Parameters must be initialized (see :meth:`build`).
        bfloat16 parameters are saved as their exact float32 values (a
        ``.npz`` has no bfloat16); loading them into a bfloat16 network
        gives the same bits back, into a float32 one the same values."""
        from .io import save_arrays
        arrays = OrderedDict()
        seen = set()
        for key, p in self._collect_params_with_prefix().items():
            if deduplicate and id(p) in seen:
                continue
            seen.add(id(p))
            if not p.is_initialized:
                raise DeferredInitializationError(
                    f"{self.name}.save_parameters: {p._not_ready_message()}")
            arrays[key] = p.data()
        save_arrays(filename, arrays)

    def load_parameters(self, filename, ctx=None, allow_missing=False,
                        ignore_extra=False, cast_dtype=False,
                        dtype_source="current"):
        """Load parameters saved by :meth:`save_parameters` or by MXNet
        Gluon (``.params``).  A deferred network takes its shapes from the
        file.  On any error nothing is changed.

        Parameters
        ----------
        allow_missing : bool
            Leave parameters that the file lacks as they are.
        ignore_extra : bool
            Ignore keys in the file that the network does not have.
        cast_dtype : bool
            Convert arrays whose dtype differs from the parameter's
            (``dtype_source='saved'`` converts the parameter instead).
        """
        from .io import load_into
        with self._lock:
            load_into(self, filename, allow_missing, ignore_extra, cast_dtype,
                      dtype_source)

    # -- representation, copying ---------------------------------------------

    def __repr__(self):
        body = "\n".join(f"  ({k}): {_indent(repr(b), 2)}"
                         for k, b in self._children.items())
        return f"{type(self).__name__}(\n{body}\n)"

    # What a pickle or a copy leaves out: per-process and per-object state,
    # rebuilt empty (plans, their watchers, the lock, hooks, the eager
    # fallback -- a copy finds that out again at its first call).  Listed in
    # Block.__init__'s order, which __setstate__ keeps, so a copy keeps
    # CPython's compact attribute storage.
    _TRANSIENT = ("_plan", "_hook_plan", "_plans", "_eager_reason", "_lock",
                  "_forward_hooks", "_forward_pre_hooks", "_fallen")
    _BASE_ORDER = ("_children", "_reg_params") + _TRANSIENT[:5] + (
        "_empty_prefix", "_prefix", "_name", "_params", "_name_counter") \
        + _TRANSIENT[5:]

    def __getstate__(self):
        state = self.__dict__.copy()
        for key in Block._TRANSIENT:
            state.pop(key, None)
        state.pop("_scope", None)
        return state

    def __setstate__(self, state):
        # attribute by attribute, in __init__'s order, not through
        # self.__dict__ (see __setattr__)
        state = dict(state)
        state.pop("_scope", None)
        fresh = {"_plan": None, "_hook_plan": None, "_plans": None,
                 "_eager_reason": None, "_lock": threading.RLock(),
                 "_forward_hooks": OrderedDict(),
                 "_forward_pre_hooks": OrderedDict(), "_fallen": None,
                 "_name_counter": {},
                 "_empty_prefix": state.get("_prefix") == ""}
        ordered = {}
        for key in Block._BASE_ORDER:
            ordered[key] = state.pop(key) if key in state else fresh[key]
        ordered.update(state)
        if "_container_attrs" not in ordered:
            ordered["_container_attrs"] = {
                k for k, v in ordered.items()
                if k not in Block._BASE_ORDER
                and isinstance(v, (list, tuple, dict))}
        for key, value in ordered.items():
            object.__setattr__(self, key, value)

    def predict(self, data, batch_size=None, out=None, progress=False):
        """Score ``data`` chunk by chunk in bounded memory (an array, an
        ``np.memmap``, a ``.npy`` path or an iterable of chunks); see
        :func:`fastlazy.predict.predict`."""
        from .predict import predict
        return predict(self, data, batch_size=batch_size, out=out,
                       progress=progress)

    def summary(self, *inputs):
        """Print Gluon's table of each block's output shape and parameter
        count, and return its rows.

        Parameters
        ----------
        *inputs : array_like or tuple
            Example inputs, or their shapes with None for the batch size
            (``(None, 1, 28, 28)``).  Only shapes are used: the network is
            traced, nothing is computed, initialized or changed (a deferred
            network stays deferred, hooks are not called), so it works
            before and after the first forward pass.

        Returns
        -------
        list of (str, tuple, int)
            ``(block, output shape, parameter count)`` per block call, in
            the order the calls finish, as Gluon's hooks fire: a block's
            children before the block; Sequentials (and Concurrent, one in
            Gluon) get no row of their own.  A block with several outputs
            has a list of shapes.  Without the input row.

        Raises
        ------
        TypeError
            If a block's code cannot be traced (a Python ``forward``, or
            ``hybrid_forward`` code that needs values): the message names
            that block.
        """
        from ._summary import summary
        return summary(self, *inputs)


class HybridBlock(Block):
    """A block whose computation is ``hybrid_forward(F, x, *args,
    **params)``, as in Gluon 1.x: ``F`` is :mod:`fastlazy.ops` and the
    block's own registered parameters arrive as keyword arguments.

    The first call for an input shape *traces* ``hybrid_forward`` into the
    network's compiled plan (residuals, concatenations and children
    included); later calls are one compiled call.  Code that cannot be
    traced (Python control flow on values, NumPy functions) runs on the
    eager path -- ``hybrid_forward`` on NumPy arrays, children still
    compiled -- and ``fl.explain(net, x)`` says why.  ``hybridize()`` is
    accepted and changes nothing.
    """

    _plannable = True

    def hybrid_forward(self, F, x, *args, **kwargs):
        """Override: compute the output from ``x`` with the operators of
        ``F``; parameters registered on this block come as keywords."""
        if self._children and type(self).hybrid_forward is \
                HybridBlock.hybrid_forward:
            raise NotImplementedError(
                f"{type(self).__name__} '{self.name}' has children but no "
                f"hybrid_forward(F, x); use HybridSequential to chain them")
        raise NotImplementedError(
            f"{type(self).__name__} must implement hybrid_forward(F, x)")

    def forward(self, x, *args):
        """The eager path: ``hybrid_forward`` on NumPy arrays, with this
        block's parameters' values."""
        from . import ops
        params = {}
        for name, p in self._reg_params.items():
            params[name] = p.data()
        return self.hybrid_forward(ops, x, *args, **params)

    def _trace_sym(self, x, *more):
        from . import ops
        params = {name: ops.Sym(x.ctx, None, None, param=p)
                  for name, p in self._reg_params.items()}
        return self.hybrid_forward(ops, x, *more, **params)

    def _infer(self, shape, pending):
        raise TypeError(f"{type(self).__name__} '{self.name}': shapes come "
                        f"from tracing hybrid_forward")


# ---------------------------------------------------------------------------
# Sequential


class Sequential(Block):
    """Stacks blocks: ``net.add(nn.Dense(256, activation='relu'))``.

    Supports ``net[i]``, ``net[a:b]`` (a Sequential sharing the blocks),
    ``len(net)``, iteration and nesting.
    """

    _plannable = True

    def add(self, *blocks):
        """Append blocks, in order."""
        for block in blocks:
            self.register_child(block)
        return self

    def forward(self, x, *more):
        for block in self._children.values():
            x = block(x, *more)
            more = ()
        return x

    def _is_plannable(self):
        if type(self).forward is not Sequential.forward:
            return False
        return super()._is_plannable()

    def _trace_sym(self, x, *more):
        if self._eager_reason is not None:
            raise _compiler().TraceFailed(self, self._eager_reason[1])
        if type(self).forward is not Sequential.forward:
            raise _compiler().TraceFailed(self, "its forward() is Python code")
        for block in self._children.values():
            x = _compiler().trace_block(block, x, *more)
            more = ()
        return x

    def _infer(self, shape, pending):
        for child in self._children.values():
            shape = child._infer(shape, pending)
        return shape

    def __getitem__(self, key):
        layers = list(self._children.values())[key]
        if isinstance(layers, list):
            net = type(self)(prefix=self._prefix)
            net.add(*layers)
            return net
        return layers

    def __len__(self):
        return len(self._children)

    def __iter__(self):
        return iter(self._children.values())


class HybridSequential(Sequential, HybridBlock):
    """Gluon's HybridSequential: a :class:`Sequential` that is also a
    :class:`HybridBlock` (every fastlazy network is compiled)."""

    def hybrid_forward(self, F, x, *more):
        for block in self._children.values():
            x = block(x, *more)
            more = ()
        return x
