"""Matching the keys of Gluon 1.x parameter files to a network's parameters.

:func:`fastlazy.io.load_into` uses a file's keys as they are when they are
structural keys (``'0.weight'``).  MXNet 1.x also wrote files keyed by
parameter *name*, and those are matched here:

1. An exported file's keys carry an ``arg:`` or ``aux:`` prefix
   (``'arg:dense0_weight'``); it is dropped first (:func:`strip_export_prefix`,
   :func:`bare_keys`), for structural keys too.
2. **Gluon 1.x parameter names** (``'dense0_weight'``, as written by
   ``collect_params().save()``, ``save_params`` or ``export``) are matched
   by name first, as Gluon does: a key names a parameter if it equals its
   name, or its name without the network's prefix.
3. If the names are those of another session (``dense8_weight`` for this
   network's ``dense0_weight``), by **layer order**: the keys are grouped
   by layer (``dense8_`` + ``weight``, ``bias``) and the k-th layer of the
   file goes to the k-th layer of the network that has parameters.  This
   is accepted only when both have the same number of such layers and each
   pair of layers the same parameter names; shapes are then checked as
   always.

Gluon numbered its blocks with a global counter, so the same network built
twice has other names (``dense0_`` then ``dense2_``): rule 3 is what lets a
file saved in another session load at all.
"""

from collections import OrderedDict

from ..errors import ParameterFileError
from ..io import key_hint, unique_params

__all__ = ["strip_export_prefix", "bare_keys", "match_names"]

#: The key prefixes of ``export()``: ``arg:`` for learned parameters,
#: ``aux:`` for running statistics.
_EXPORT_PREFIXES = ("arg", "aux")


def strip_export_prefix(key):
    """Split the ``arg:``/``aux:`` prefix off a key of an exported file.

    Parameters
    ----------
    key : str
        A key as stored in the file (see
        :func:`fastlazy.mxnet.format.read_params`).

    Returns
    -------
    kind : str or None
        ``"arg"`` or ``"aux"``, or ``None`` if ``key`` has no such prefix.
    name : str
        The parameter name without the prefix.

    Examples
    --------
    >>> strip_export_prefix("aux:bn0_running_mean")
    ('aux', 'bn0_running_mean')
    >>> strip_export_prefix("0.weight")
    (None, '0.weight')
    """
    kind, sep, name = key.partition(":")
    if sep and kind in _EXPORT_PREFIXES:
        return kind, name
    return None, key


def bare_keys(keys, source):
    """OrderedDict file key -> key without its ``arg:``/``aux:`` prefix.

    Raises
    ------
    ParameterFileError
        If two keys name the same parameter (``arg:w`` and ``aux:w``).
    """
    bare = OrderedDict()
    seen = {}
    for key in keys:
        name = strip_export_prefix(key)[1]
        if name in seen:
            raise ParameterFileError(
                f"{source}: keys {seen[name]!r} and {key!r} both name "
                f"parameter '{name}'; a file must hold each parameter once")
        seen[name] = key
        bare[key] = name
    return bare


def match_names(block, params, bare, source, allow_missing, ignore_extra):
    """``[(structural key, file key)]`` for a file keyed by Gluon 1.x
    parameter names: by name (rule 2 of the module docstring), else by
    layer order (rule 3).

    Parameters
    ----------
    block : Block
        The network.
    params : dict of str to Parameter
        ``block._collect_params_with_prefix()``.
    bare : OrderedDict of str to str
        File key -> name without ``arg:``/``aux:`` (:func:`bare_keys`).
    source : str
        The file, for error messages.
    allow_missing, ignore_extra : bool
        As in :func:`fastlazy.io.load_into`; matching by layer order needs a
        one-to-one match and ignores them.

    Raises
    ------
    ParameterFileError
        If a key names no parameter, a parameter is missing, or the layers
        cannot be paired; the message names the key or layer.
    """
    unique = unique_params(params)
    by_name = {p.name: keys[0] for p, keys in unique}
    named = OrderedDict(
        (key, by_name.get(name, by_name.get(block.prefix + name)))
        for key, name in bare.items())
    found = {k for k in named.values() if k is not None}
    if None not in named.values() or len(found) == len(unique):
        extra = [key for key, k in named.items() if k is None]
        if extra and not ignore_extra:
            raise ParameterFileError(
                f"{source}: the file has parameter {extra[0]!r}, which "
                f"names no parameter of {block.name} ({len(extra)} such "
                f"keys; the network's parameters are {key_hint(by_name)}). "
                f"Pass ignore_extra=True to skip such keys.")
        missing = [keys[0] for _, keys in unique if keys[0] not in found]
        if missing and not allow_missing:
            raise ParameterFileError(
                f"{source}: parameter {params[missing[0]].name} "
                f"({missing[0]!r}) of {block.name} is not in the file "
                f"({len(missing)} missing; the file has {key_hint(bare)}). "
                f"Pass allow_missing=True to keep those parameters as "
                f"they are.")
        return [(k, key) for key, k in named.items() if k is not None]
    return _match_layer_order(block, unique, bare, source)


def _match_layer_order(block, unique, bare, source):
    """Pair the file's layers with the network's, in order (rule 3 of the
    module docstring); ParameterFileError unless the pairing is
    unambiguous."""
    net_layers = OrderedDict()
    for _, keys in unique:
        path, _, attr = keys[0].rpartition(".")
        net_layers.setdefault(path, OrderedDict())[attr] = keys[0]
    attrs = {attr for layer in net_layers.values() for attr in layer}

    def fail(reason):
        return ParameterFileError(
            f"{source}: the file names its parameters the Gluon 1.x way "
            f"({key_hint(bare)}), not by structural keys ('0.weight'), and "
            f"the names are not those of {block.name}'s parameters "
            f"({key_hint(p.name for p, _ in unique)}). Matching them layer "
            f"by layer, in order, failed: {reason}. Build the network with "
            f"the same layers in the same order as the one that saved the "
            f"file; for a model saved with export(), "
            f"fl.load_mxnet_export(prefix) rebuilds it from its "
            f"-symbol.json.")

    file_layers = OrderedDict()
    for key, name in bare.items():
        attr = max((a for a in attrs if name.endswith(a)), key=len,
                   default=None)
        if attr is None:
            known = ", ".join(sorted(attrs))
            raise fail(f"key {key!r} does not end with the name of any "
                       f"parameter of the network ({known})")
        file_layers.setdefault(name[:-len(attr)], OrderedDict())[attr] = key
    if len(file_layers) != len(net_layers):
        raise fail(f"the file has parameters of {len(file_layers)} layers "
                   f"({key_hint(file_layers)}), the network of "
                   f"{len(net_layers)}")
    pairs = []
    for index, ((prefix, in_file), (path, in_net)) in enumerate(
            zip(file_layers.items(), net_layers.items())):
        if set(in_file) != set(in_net):
            where = f"layer '{path}'" if path else "the block itself"
            raise fail(f"layer {index} of the file ('{prefix}') has "
                       f"{sorted(in_file)}, but {where} of the network has "
                       f"{sorted(in_net)}")
        pairs += [(skey, in_file[attr]) for attr, skey in in_net.items()]
    return pairs
