"""Decoding Apache MXNet's files: ``.params`` parameter files and exported
``-symbol.json`` graphs, into NumPy arrays and plain operator nodes.

What the keys of a ``.params`` file mean is :mod:`fastlazy.mxnet.names`'s
business; turning a graph into a network is :mod:`fastlazy.mxnet.export`'s.

Nothing here imports :mod:`mxnet`; the binary layout is decoded with
:mod:`struct` and :mod:`numpy` under explicit bounds checks, so a damaged or
hostile file raises :class:`~fastlazy.errors.ParameterFileError` instead of
allocating what a header claims.

Layout of a ``.params`` file (all integers little-endian)::

    uint64  list magic 0x112
    uint64  reserved (written as 0, ignored by MXNet on load)
    uint64  number of arrays N, then N NDArray records
    uint64  number of keys K (K == N, or 0 for an unnamed list)
    K times: uint64 byte length, then that many UTF-8 bytes

An NDArray record starts with a ``uint32`` that selects its layout:

``0xF993FACA`` (NumPy mode, written under ``npx.set_np()``) and ``0xF993FAC9``
(classic)
    ``int32`` storage type (0 = dense; 1 = row_sparse and 2 = csr carry extra
    storage/aux shapes and are rejected here), then the shape as ``int32 ndim``
    followed by ``ndim`` ``int64`` sizes.  In NumPy mode ``ndim == 0`` is a
    scalar and ``ndim == -1`` (or a size of -1) an unknown shape; in classic
    mode ``ndim == 0`` is the unknown shape.  An array of unknown shape ends
    the record.
``0xF993FAC8`` (V1)
    No storage type; the shape is stored as above, classic semantics.
anything else (pre-V1)
    The ``uint32`` itself is ``ndim`` and ``ndim`` ``uint32`` sizes follow.

The shape is followed by the context (``int32`` device type, ``int32`` device
id), the ``int32`` mshadow type flag and the row-major payload.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import dataclass

import numpy as np

from .._util import is_int, prod
from ..errors import ParameterFileError

__all__ = [
    "SymbolDAG",
    "SymbolGraph",
    "parse_attr_bool",
    "parse_attr_float",
    "parse_attr_int",
    "parse_attr_tuple",
    "read_params",
    "read_symbol",
    "read_symbol_dag",
    "read_symbol_graph",
]

_LIST_MAGIC = 0x112
_V1_MAGIC = 0xF993FAC8
_V2_MAGIC = 0xF993FAC9
_V3_MAGIC = 0xF993FACA

#: Largest ``ndim`` accepted; NumPy 1.x cannot represent more dimensions.
_MAX_NDIM = 32

_U32 = struct.Struct("<I")
_I32 = struct.Struct("<i")
_U64 = struct.Struct("<Q")
_I64 = struct.Struct("<q")

#: Fewest bytes one named array can take: a pre-V1 record header with
#: ``ndim == 0`` plus the length of an empty key.
_MIN_ENTRY_BYTES = _U32.size + _U64.size

#: mshadow type flag -> little-endian NumPy dtype of the stored payload.
_TYPE_FLAGS = {
    0: np.dtype("<f4"),
    1: np.dtype("<f8"),
    2: np.dtype("<f2"),
    3: np.dtype("u1"),
    4: np.dtype("<i4"),
    5: np.dtype("i1"),
    6: np.dtype("<i8"),
    7: np.dtype("?"),
    8: np.dtype("<i2"),
    9: np.dtype("<u2"),
    10: np.dtype("<u4"),
    11: np.dtype("<u8"),
}
_BFLOAT16_FLAG = 12

_STORAGE_TYPES = {-1: "undefined", 0: "default", 1: "row_sparse", 2: "csr"}
#: MXNet device types: cpu, gpu, cpu_pinned, cpu_shared.
_DEVICE_TYPES = frozenset({1, 2, 3, 5})


@dataclass(frozen=True)
class _Record:
    """Header of one NDArray record whose payload has been bounds-checked."""

    index: int
    offset: int
    shape: tuple | None
    dtype: np.dtype | None = None
    data_offset: int = 0
    bfloat16: bool = False      # the payload is bfloat16 (uint16 patterns)


class _Cursor:
    """Bounds-checked little-endian reader over an in-memory file.

    Parameters
    ----------
    data : bytes
        The whole file.
    source : str
        File name used in error messages.

    Attributes
    ----------
    data : bytes
        The whole file.
    pos : int
        Offset of the next byte to read.
    where : str
        Current record or key (e.g. ``"record 3"``), for error messages.
    """

    def __init__(self, data, source):
        self.data = data
        self._source = source
        self.pos = 0
        self.where = ""

    @property
    def remaining(self):
        """int: Number of bytes after the current position."""
        return len(self.data) - self.pos

    def error(self, message, offset=None):
        """Build a :class:`ParameterFileError` located in the file.

        Parameters
        ----------
        message : str
            What was expected and what was found.
        offset : int, optional
            Byte offset to report; defaults to the current position.

        Returns
        -------
        ParameterFileError
        """
        at = self.pos if offset is None else offset
        where = f" {self.where}," if self.where else ""
        return ParameterFileError(f"{self._source}:{where} at byte {at}: {message}")

    def require(self, size, what):
        """Fail unless ``size`` more bytes are available.

        Parameters
        ----------
        size : int
            Number of bytes needed.
        what : str
            Description of the field, for the error message.

        Raises
        ------
        ParameterFileError
            If the file ends first.
        """
        if size > self.remaining:
            raise self.error(
                f"expected {what} ({size} bytes), but only {self.remaining} "
                "bytes remain in the file"
            )

    def unpack(self, fmt, what):
        """Read one integer field.

        Parameters
        ----------
        fmt : struct.Struct
            Single-field little-endian format.
        what : str
            Description of the field, for the error message.

        Returns
        -------
        int
        """
        self.require(fmt.size, what)
        (value,) = fmt.unpack_from(self.data, self.pos)
        self.pos += fmt.size
        return value

    def skip(self, size, what):
        """Step over ``size`` bytes and return where they start.

        Parameters
        ----------
        size : int
            Number of bytes.
        what : str
            Description of the bytes, for the error message.

        Returns
        -------
        int
            Offset of the first skipped byte.
        """
        self.require(size, what)
        start = self.pos
        self.pos += size
        return start


def _load_source(source):
    """Return ``(bytes, display name)`` for a path or an in-memory file."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        return bytes(source), "<bytes>"
    if isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
        with open(source, "rb") as handle:
            return handle.read(), name
    raise TypeError(
        f"expected a path or a bytes-like object, got {type(source).__name__}"
    )


def _read_dims(cur, ndim, fmt, what):
    """Read ``ndim`` sizes of format ``fmt`` after checking they fit."""
    cur.require(ndim * fmt.size, f"{ndim} {what} shape sizes")
    return tuple(cur.unpack(fmt, what) for _ in range(ndim))


def _read_tshape(cur, numpy_mode):
    """Read an ``int32 ndim`` + ``int64`` sizes shape.

    Returns
    -------
    tuple or None
        The shape, or ``None`` for MXNet's unknown shape.
    """
    start = cur.pos
    ndim = cur.unpack(_I32, "int32 ndim")
    lowest = -1 if numpy_mode else 0
    if not lowest <= ndim <= _MAX_NDIM:
        raise cur.error(f"ndim {ndim} is outside [{lowest}, {_MAX_NDIM}]", start)
    if ndim == -1 or (ndim == 0 and not numpy_mode):
        return None
    dims_at = cur.pos
    dims = _read_dims(cur, ndim, _I64, "int64")
    if numpy_mode and -1 in dims:
        return None
    if any(d < 0 for d in dims):
        raise cur.error(f"shape {dims} has a negative size", dims_at)
    return dims


def _read_record_shape(cur):
    """Read the header up to and including the shape.

    Returns
    -------
    tuple or None
        The shape, or ``None`` for an array of unknown shape.
    """
    start = cur.pos
    magic = cur.unpack(_U32, "uint32 NDArray magic number")
    if magic in (_V2_MAGIC, _V3_MAGIC):
        stype_at = cur.pos
        stype = cur.unpack(_I32, "int32 storage type")
        if stype != 0:
            kind = _STORAGE_TYPES.get(stype, "unknown")
            raise cur.error(
                f"storage type {stype} ({kind}) is not supported; only dense "
                "arrays (storage type 0) can be read",
                stype_at,
            )
        return _read_tshape(cur, numpy_mode=magic == _V3_MAGIC)
    if magic == _V1_MAGIC:
        return _read_tshape(cur, numpy_mode=False)
    if magic > _MAX_NDIM:
        raise cur.error(
            f"unknown NDArray magic number 0x{magic:08X}; expected 0x{_V3_MAGIC:08X} "
            f"(NumPy mode), 0x{_V2_MAGIC:08X} (classic), 0x{_V1_MAGIC:08X} (V1) "
            f"or a pre-V1 ndim of at most {_MAX_NDIM}",
            start,
        )
    if magic == 0:
        return None
    return _read_dims(cur, magic, _U32, "uint32")


def _read_record(cur, index):
    """Read one NDArray record header and bounds-check its payload.

    Parameters
    ----------
    cur : _Cursor
        Positioned at the record's first byte; left after its payload.
    index : int
        Position of the record in the file, for error messages.

    Returns
    -------
    _Record
    """
    start = cur.pos
    shape = _read_record_shape(cur)
    if shape is None:
        return _Record(index, start, None)
    device_at = cur.pos
    device = cur.unpack(_I32, "int32 device type")
    if device not in _DEVICE_TYPES:
        raise cur.error(
            f"device type {device} is not one of {sorted(_DEVICE_TYPES)}", device_at
        )
    cur.unpack(_I32, "int32 device id")
    flag_at = cur.pos
    flag = cur.unpack(_I32, "int32 type flag")
    if flag == _BFLOAT16_FLAG:
        # read as float32, exactly: a bfloat16 is a float32's upper half
        size = 2 * prod(shape)
        data_offset = cur.skip(size, f"the bfloat16 payload of shape {shape}")
        return _Record(index, start, shape, np.dtype("<u2"), data_offset, True)
    if flag not in _TYPE_FLAGS:
        raise cur.error(
            f"unknown type flag {flag}; expected one of {sorted(_TYPE_FLAGS)}", flag_at
        )
    dtype = _TYPE_FLAGS[flag]
    size = dtype.itemsize * prod(shape)
    data_offset = cur.skip(size, f"the {dtype.name} payload of shape {shape}")
    return _Record(index, start, shape, dtype, data_offset)


def _read_key(cur, keys):
    """Read one length-prefixed UTF-8 key that is not already in ``keys``."""
    start = cur.pos
    length = cur.unpack(_U64, "uint64 key length")
    text_at = cur.skip(length, "the key bytes")
    raw = cur.data[text_at : text_at + length]
    try:
        key = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise cur.error(f"key is not valid UTF-8 ({exc.reason})", text_at) from None
    if key in keys:
        raise cur.error(f"duplicate key {key!r}", start)
    return key


def _to_array(data, record):
    """Copy a record's payload into an owned, native-order, C-contiguous array."""
    count = prod(record.shape)
    if record.dtype.kind == "b":
        raw = np.frombuffer(data, np.uint8, count, record.data_offset)
        return raw.reshape(record.shape) != 0
    if record.bfloat16:
        raw = np.frombuffer(data, "<u2", count, record.data_offset)
        wide = raw.astype(np.uint32) << 16
        return wide.view(np.float32).reshape(record.shape).copy()
    raw = np.frombuffer(data, record.dtype, count, record.data_offset)
    native = record.dtype.newbyteorder("=")
    return raw.reshape(record.shape).astype(native, order="C", copy=True)


def read_params(source):
    """Read an MXNet ``.params`` file into NumPy arrays.

    Both NDArray layouts written by MXNet 1.x are understood: the NumPy-mode
    records of ``npx.set_np()`` and the classic records of most Gluon 1.x
    files, as well as the older V1 and pre-V1 headers.

    Parameters
    ----------
    source : str, os.PathLike or bytes-like
        Path of the file, or its whole content.

    Returns
    -------
    dict of str to numpy.ndarray
        Arrays by key, in file order.  Keys are exactly as stored, including
        any ``arg:``/``aux:`` prefix of exported files (see
        :func:`fastlazy.mxnet.names.strip_export_prefix`).  Every array owns
        its memory, is writable, C-contiguous and in native byte order.

    Raises
    ------
    ParameterFileError
        If the content is not a well-formed list of named, dense NDArrays of
        a supported dtype: bad magic numbers, truncation, headers that do not
        fit in the file, keys that are not unique UTF-8 strings, a key count
        that differs from the array count (as in the unnamed lists saved by
        ``mx.nd.save`` from a list), arrays of unknown shape, or bytes after
        the last key.  The message names the file, the record or key
        and the byte offset.
    OSError
        If ``source`` is a path that cannot be read.
    TypeError
        If ``source`` is neither a path nor bytes-like.
    """
    data, name = _load_source(source)
    cur = _Cursor(data, name)
    magic = cur.unpack(_U64, "uint64 list magic number")
    if magic != _LIST_MAGIC:
        raise cur.error(
            f"not an MXNet parameter file: list magic number is 0x{magic:X}, "
            f"expected 0x{_LIST_MAGIC:X}",
            0,
        )
    cur.unpack(_U64, "uint64 reserved field")

    count_at = cur.pos
    count = cur.unpack(_U64, "uint64 array count")
    if count * _MIN_ENTRY_BYTES + _U64.size > cur.remaining:
        raise cur.error(
            f"array count {count} cannot fit in the {cur.remaining} bytes that follow",
            count_at,
        )
    records = []
    for index in range(count):
        cur.where = f"record {index}"
        records.append(_read_record(cur, index))

    cur.where = "key list"
    nkeys_at = cur.pos
    nkeys = cur.unpack(_U64, "uint64 key count")
    if nkeys != count:
        raise cur.error(
            f"key count {nkeys} does not match the array count {count}", nkeys_at
        )
    keys = {}
    for index in range(nkeys):
        cur.where = f"key {index}"
        keys[_read_key(cur, keys)] = records[index]

    cur.where = ""
    if cur.remaining:
        raise cur.error(
            f"expected the end of the file after the last key, but {cur.remaining} "
            "more bytes follow"
        )

    for key, record in keys.items():
        if record.shape is None:
            cur.where = f"record {record.index} ({key!r})"
            raise cur.error(
                "the array has an unknown shape and no data (an uninitialized "
                "parameter was saved)",
                record.offset,
            )
    return {key: _to_array(data, record) for key, record in keys.items()}


# --------------------------------------------------------------------------
# Exported symbol graphs
# --------------------------------------------------------------------------

#: Input roles of operators with parameters, in MXNet's argument order.
_ROLES = {
    "FullyConnected": ("data", "weight", "bias"),
    "Convolution": ("data", "weight", "bias"),
    "Deconvolution": ("data", "weight", "bias"),
    "BatchNorm": ("data", "gamma", "beta", "moving_mean", "moving_var"),
    "LayerNorm": ("data", "gamma", "beta"),
    "InstanceNorm": ("data", "gamma", "beta"),
    "GroupNorm": ("data", "gamma", "beta"),
    "Embedding": ("data", "weight"),
    "LeakyReLU": ("data", "gamma"),
}


@dataclass(frozen=True)
class SymbolGraph:
    """An exported MXNet graph reduced to its operator nodes.

    Attributes
    ----------
    nodes : list of dict
        Operator nodes in topological order, as described in
        :func:`read_symbol`.
    inputs : list of str
        Variable nodes fed to operators as data rather than as a parameter
        (normally just ``"data"``), in graph order.  Only the operators listed
        in ``_ROLES`` have parameter inputs; variables feeding any other
        operator count as data.
    outputs : list of str
        Names of the nodes producing the graph's outputs, in order.
    """

    nodes: list
    inputs: list
    outputs: list


def _load_graph(source):
    """``(graph, display name, error)`` for a ``-symbol.json`` path or
    text: the parsed object, checked to have 'nodes' and 'heads' lists, and
    a function that makes a ParameterFileError naming the file."""
    graph, name = _load_json(source)

    def error(message):
        return ParameterFileError(f"{name}: {message}")

    if not isinstance(graph, dict):
        raise error("expected a JSON object with 'nodes' and 'heads'")
    for key in ("nodes", "heads"):
        if not isinstance(graph.get(key), list):
            raise error(f"missing or non-list {key!r}")
    return graph, name, error


def _load_json(source):
    """Return ``(parsed JSON, display name)`` for a path or JSON text."""
    if isinstance(source, (bytes, bytearray)):
        text, name = source, "<json>"
    elif isinstance(source, str) and source.lstrip().startswith("{"):
        text, name = source, "<json>"
    elif isinstance(source, (str, os.PathLike)):
        name = os.fsdecode(source)
        with open(source, "rb") as handle:
            text = handle.read()
    else:
        raise TypeError(f"expected a path or JSON text, got {type(source).__name__}")
    try:
        return json.loads(text), name
    except (ValueError, RecursionError) as exc:
        raise ParameterFileError(f"{name}: not valid JSON: {exc}") from None


def _node_ref(entry, limit, fail, what):
    """Validate a ``[node_id, output_index(, version)]`` entry; return the id."""
    if (
        not isinstance(entry, list)
        or len(entry) not in (2, 3)
        or not all(is_int(v) for v in entry)
    ):
        raise fail(f"{what} {entry!r} is not a [node, output, version] entry")
    node_id, output = entry[0], entry[1]
    if not 0 <= node_id < limit:
        raise fail(f"{what} refers to node {node_id}, expected 0 <= node < {limit}")
    if output < 0:
        raise fail(f"{what} has negative output index {output}")
    return node_id


def _node_attrs(node, fail):
    """Return a node's attributes (``attrs``, or legacy ``attr``/``param``)."""
    attrs = node.get("attrs", node.get("attr", node.get("param", {})))
    if not isinstance(attrs, dict) or not all(
        isinstance(v, str) for v in attrs.values()
    ):
        raise fail("attributes must be an object of strings")
    return dict(attrs)


def _parse_node(index, node, names, seen, error):
    """Validate one raw graph node.

    Parameters
    ----------
    index : int
        Position of the node in ``nodes``.
    node : object
        The parsed JSON value.
    names : list of str
        Names of the nodes before this one.
    seen : set of str
        The same names, for the uniqueness check.
    error : callable
        Builds a :class:`ParameterFileError` from a message.

    Returns
    -------
    dict or None
        The operator node as described in :func:`read_symbol`, or ``None``
        for a variable node.
    """
    label = node.get("name") if isinstance(node, dict) else None

    def fail(message):
        return error(f"node {index} ({label!r}): {message}")

    if not isinstance(node, dict):
        raise fail("expected a JSON object")
    for key in ("op", "name"):
        if not isinstance(node.get(key), str):
            raise fail(f"missing or non-string {key!r}")
    if not isinstance(node.get("inputs"), list):
        raise fail("missing or non-list 'inputs'")
    if node["name"] in seen:
        raise fail("duplicate node name")
    attrs = _node_attrs(node, fail)
    refs = [
        _node_ref(entry, index, fail, f"input {i}")
        for i, entry in enumerate(node["inputs"])
    ]
    op = node["op"]
    if op == "null":
        if refs:
            raise fail("a variable node cannot have inputs")
        return None
    roles = _ROLES.get(op)
    if roles is None:
        data_refs, params = refs, {}
    elif len(refs) > len(roles):
        raise fail(f"{op} takes at most {len(roles)} inputs {roles}, got {len(refs)}")
    else:
        data_refs = refs[:1]
        params = {role: names[ref] for role, ref in zip(roles[1:], refs[1:])}
    return {
        "op": op,
        "name": node["name"],
        "attrs": attrs,
        "inputs": [names[ref] for ref in data_refs],
        "params": params,
    }


def read_symbol_graph(source):
    """Parse an exported ``-symbol.json`` graph.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        Path of the file, or its JSON text (a ``str`` starting with ``{``, or
        bytes).

    Returns
    -------
    SymbolGraph
        Operator nodes, data inputs and outputs.

    Raises
    ------
    ParameterFileError
        If the JSON is malformed or the graph is inconsistent: missing keys,
        wrongly typed fields, duplicate node names, inputs that refer to a
        later or missing node, variables with inputs, or more inputs than an
        operator with parameters accepts.  The message names the node.
    OSError
        If ``source`` is a path that cannot be read.
    """
    graph, name, error = _load_graph(source)

    names = []
    seen = set()
    variables = set()
    nodes = []
    for index, raw in enumerate(graph["nodes"]):
        node = _parse_node(index, raw, names, seen, error)
        names.append(raw["name"])
        seen.add(raw["name"])
        if node is None:
            variables.add(index)
        else:
            nodes.append(node)

    arg_nodes = graph.get("arg_nodes", [])
    if not isinstance(arg_nodes, list) or not all(
        is_int(i) and i in variables for i in arg_nodes
    ):
        raise error("'arg_nodes' must list the indices of variable nodes")
    outputs = [
        names[_node_ref(entry, len(names), error, f"head {i}")]
        for i, entry in enumerate(graph["heads"])
    ]
    if not outputs:
        raise error("'heads' is empty; the graph has no output")

    variable_names = {names[i] for i in variables}
    param_names = {p for node in nodes for p in node["params"].values()}
    inputs = []
    for node in nodes:
        for ref in node["inputs"]:
            if ref in variable_names and ref not in param_names and ref not in inputs:
                inputs.append(ref)
    return SymbolGraph(nodes, inputs, outputs)


@dataclass(frozen=True)
class SymbolDAG:
    """An exported MXNet graph with every node and output index kept.

    Attributes
    ----------
    nodes : list of dict
        Every node in file order (a topological order), variables included:
        ``"op"`` (``"null"`` for a variable), ``"name"``, ``"attrs"`` (dict
        of str to str, as stored) and ``"inputs"``, a list of ``(node name,
        output index)`` pairs.
    heads : list of tuple
        The graph's outputs as ``(node name, output index)``, in order.
    source : str
        The file name (or ``"<json>"``), for error messages.
    """

    nodes: list
    heads: list
    source: str


def read_symbol_dag(source):
    """Parse an exported ``-symbol.json`` graph, keeping its whole DAG.

    Unlike :func:`read_symbol_graph`, variables stay in the node list and
    every input is a ``(node, output index)`` pair, so graphs with
    branches, operators with several outputs and several heads can be
    rebuilt.  Which variables are parameters is left to the caller.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        Path of the file, or its JSON text.

    Returns
    -------
    SymbolDAG

    Raises
    ------
    ParameterFileError
        If the JSON is malformed, a node lacks a field, two nodes share a
        name, a variable has inputs, or an input refers to a node that does
        not exist, to the node itself or to a later node (a cycle, or nodes
        out of topological order).  The message names the node.
    OSError
        If ``source`` is a path that cannot be read.
    """
    graph, name, error = _load_graph(source)
    raw_nodes = graph["nodes"]
    labels = [n.get("name") if isinstance(n, dict) else None
              for n in raw_nodes]
    nodes = []
    seen = set()
    for index, node in enumerate(raw_nodes):
        label = labels[index]

        def fail(message, index=index, label=label):
            return error(f"node {index} ({label!r}): {message}")

        if not isinstance(node, dict):
            raise fail("expected a JSON object")
        for key in ("op", "name"):
            if not isinstance(node.get(key), str) or not node[key]:
                raise fail(f"missing, empty or non-string {key!r}")
        if not isinstance(node.get("inputs"), list):
            raise fail("missing or non-list 'inputs'")
        if node["name"] in seen:
            raise fail("duplicate node name")
        seen.add(node["name"])
        attrs = _node_attrs(node, fail)
        inputs = []
        for i, entry in enumerate(node["inputs"]):
            ref = _node_ref(entry, len(raw_nodes), fail, f"input {i}")
            if ref == index:
                raise fail(f"input {i} is the node's own output: the graph "
                           f"has a cycle")
            if ref > index:
                raise fail(f"input {i} is the output of node {ref} "
                           f"({labels[ref]!r}), which comes after it: the "
                           f"graph has a cycle, or its nodes are not in "
                           f"topological order")
            inputs.append((labels[ref], int(entry[1])))
        if node["op"] == "null" and inputs:
            raise fail("a variable node cannot have inputs")
        nodes.append({"op": node["op"], "name": node["name"],
                      "attrs": attrs, "inputs": inputs})
    heads = []
    for i, entry in enumerate(graph["heads"]):
        ref = _node_ref(entry, len(nodes), error, f"head {i}")
        heads.append((nodes[ref]["name"], int(entry[1])))
    if not heads:
        raise error("'heads' is empty; the graph has no output")
    return SymbolDAG(nodes, heads, name)


def read_symbol(source):
    """Parse an exported ``-symbol.json`` graph into its operator nodes.

    Parameters
    ----------
    source : str, os.PathLike or bytes
        Path of the file, or its JSON text.

    Returns
    -------
    list of dict
        One dict per operator, in topological order, variable (``"null"``)
        nodes left out.  Keys:

        ``"op"`` : str
            Operator name, e.g. ``"FullyConnected"``.
        ``"name"`` : str
            Node name, e.g. ``"dense0_fwd"``.
        ``"attrs"`` : dict of str to str
            Operator attributes as stored (see the ``parse_attr_*`` helpers).
        ``"inputs"`` : list of str
            Names of the nodes feeding the operator's data: for operators with
            parameters only the first input, otherwise all of them.
        ``"params"`` : dict of str to str
            For operators with parameters, the MXNet argument name of every
            further input (``weight``, ``bias``, ``gamma``, ``beta``,
            ``moving_mean``, ``moving_var``) mapped to the node feeding it.

    Raises
    ------
    ParameterFileError
        See :func:`read_symbol_graph`.

    See Also
    --------
    read_symbol_graph : also reports the graph's data inputs and outputs.
    """
    return read_symbol_graph(source).nodes


def _attr_error(text, expected):
    return ParameterFileError(f"attribute value {text!r} is not {expected}")


def parse_attr_tuple(text):
    """Parse a shape-like attribute such as ``"(5, 5)"``.

    Parameters
    ----------
    text : str
        A parenthesised or bracketed, comma-separated list of integers, or a
        single integer.

    Returns
    -------
    tuple of int

    Raises
    ------
    ParameterFileError
        If ``text`` is not such a list.

    Examples
    --------
    >>> parse_attr_tuple("(5, 5)")
    (5, 5)
    >>> parse_attr_tuple("(64,)")
    (64,)
    """
    body = text.strip()
    if body[:1] + body[-1:] in ("()", "[]"):
        body = body[1:-1]
    items = [item.strip() for item in body.split(",")]
    if items and not items[-1]:
        items.pop()
    try:
        return tuple(int(item) for item in items)
    except ValueError:
        raise _attr_error(text, "a tuple of integers") from None


def parse_attr_bool(text):
    """Parse a boolean attribute (``"True"``, ``"false"``, ``"1"``, ...).

    Parameters
    ----------
    text : str

    Returns
    -------
    bool

    Raises
    ------
    ParameterFileError
        If ``text`` is not a boolean spelling.
    """
    value = text.strip().lower()
    if value in ("true", "1"):
        return True
    if value in ("false", "0"):
        return False
    raise _attr_error(text, "a boolean")


def parse_attr_int(text):
    """Parse an integer attribute such as ``num_hidden``.

    Parameters
    ----------
    text : str

    Returns
    -------
    int

    Raises
    ------
    ParameterFileError
        If ``text`` is not an integer.
    """
    try:
        return int(text)
    except ValueError:
        raise _attr_error(text, "an integer") from None


def parse_attr_float(text):
    """Parse a real-valued attribute such as ``eps``.

    Parameters
    ----------
    text : str

    Returns
    -------
    float

    Raises
    ------
    ParameterFileError
        If ``text`` is not a number.
    """
    try:
        return float(text)
    except ValueError:
        raise _attr_error(text, "a number") from None
