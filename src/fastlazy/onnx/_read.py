"""Reading an ONNX file: the model message, its tensors (inline or in
external data files) and its nodes' attributes, checked before anything
is allocated from what the file says.

The ``onnx`` package parses the protobuf message (its size is the file's);
every tensor is then decoded here: its declared dimensions must agree with
the bytes it carries before an array is made, an external data file must
lie inside the model's directory and hold the bytes the tensor declares,
and no tensor may declare more than :data:`MAX_ELEMENTS` values.  Anything
malformed raises :class:`~fastlazy.ParameterFileError` naming the tensor
or node.
"""

import os

import numpy as np

from .._util import prod
from ..errors import ParameterFileError, UnsupportedOperatorError

__all__ = ["import_onnx", "read_model", "Tensors", "Node", "MAX_ELEMENTS",
           "TYPE_NAMES", "FLOAT_TYPES"]

#: the most values one tensor of a file may declare (8 GiB of float32)
MAX_ELEMENTS = 1 << 31

#: TensorProto.DataType -> name, for messages
TYPE_NAMES = {
    0: "UNDEFINED", 1: "FLOAT", 2: "UINT8", 3: "INT8", 4: "UINT16",
    5: "INT16", 6: "INT32", 7: "INT64", 8: "STRING", 9: "BOOL",
    10: "FLOAT16", 11: "DOUBLE", 12: "UINT32", 13: "UINT64",
    14: "COMPLEX64", 15: "COMPLEX128", 16: "BFLOAT16",
    17: "FLOAT8E4M3FN", 18: "FLOAT8E4M3FNUZ", 19: "FLOAT8E5M2",
    20: "FLOAT8E5M2FNUZ", 21: "UINT4", 22: "INT4", 23: "FLOAT4E2M1",
}
#: the data types fastlazy computes in (as float32 or float64)
FLOAT_TYPES = (1, 10, 11, 16)

# data type -> (little-endian NumPy dtype of the stored values, the repeated
# field holding them when there is no raw_data); BFLOAT16 is read as its
# 16-bit patterns
_LAYOUT = {
    1: ("<f4", "float_data"), 2: ("u1", "int32_data"),
    3: ("i1", "int32_data"), 4: ("<u2", "int32_data"),
    5: ("<i2", "int32_data"), 6: ("<i4", "int32_data"),
    7: ("<i8", "int64_data"), 9: ("u1", "int32_data"),
    10: ("<u2", "int32_data"), 11: ("<f8", "double_data"),
    12: ("<u4", "uint64_data"), 13: ("<u8", "uint64_data"),
    16: ("<u2", "int32_data"),
}


def import_onnx():
    """The ``onnx`` package, or an ImportError that names the extra."""
    try:
        import onnx
    except ImportError as exc:
        raise ImportError(
            "fastlazy.onnx needs the onnx package: pip install "
            "'fastlazy[onnx]' (or pip install onnx)") from exc
    return onnx


def read_model(source, base_dir=None):
    """``(ModelProto, where, base_dir)`` for a path, bytes or a ModelProto.

    ``where`` names the model in messages; ``base_dir`` is where external
    data files are looked up (the model file's directory, else the
    ``base_dir`` given, else the current directory)."""
    onnx = import_onnx()
    if isinstance(source, onnx.ModelProto):
        check_text(source, "<ModelProto>")
        return source, "<ModelProto>", base_dir or os.getcwd()
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        where = "<bytes>"
        base = base_dir or os.getcwd()
    elif isinstance(source, (str, os.PathLike)):
        path = os.fsdecode(source)
        with open(path, "rb") as f:
            data = f.read()
        where = path
        base = base_dir or os.path.dirname(os.path.abspath(path))
    else:
        raise TypeError(f"fastlazy.onnx.load: expected a path, bytes or an "
                        f"onnx.ModelProto, got {type(source).__name__}")
    model = onnx.ModelProto()
    try:
        model.ParseFromString(data)
    except Exception as exc:        # protobuf's DecodeError and kin
        raise ParameterFileError(
            f"{where}: not a readable ONNX model ({type(exc).__name__}: "
            f"{exc}); is it an .onnx file, whole?") from None
    check_text(model, where)
    return model, where, base


def _texts(model):
    """(what, string) for every name of the model fastlazy reads."""
    for entry in model.opset_import:
        yield "an opset domain", entry.domain
    g = model.graph
    for n in g.node:
        yield "a node name", n.name
        yield f"the operator of node {n.name!r}", n.op_type
        yield f"the domain of node {n.name!r}", n.domain
        for v in list(n.input) + list(n.output):
            yield f"a value of node {n.name!r}", v
        for a in n.attribute:
            yield f"an attribute name of node {n.name!r}", a.name
            for e in a.t.external_data:
                yield "external data of a constant", e.key
                yield "external data of a constant", e.value
    for t in g.initializer:
        yield "an initializer name", t.name
        for e in t.external_data:
            yield f"external data of {t.name!r}", e.key
            yield f"external data of {t.name!r}", e.value
    for t in g.sparse_initializer:
        yield "a sparse initializer name", t.values.name
    for vi in list(g.input) + list(g.output):
        yield "a graph input or output name", vi.name
        if vi.type.WhichOneof("value") == "tensor_type":
            for d in vi.type.tensor_type.shape.dim:
                yield f"a dimension of {vi.name!r}", d.dim_param


def check_text(model, where):
    """Every name is text: protobuf hands a string field that is not
    UTF-8 over as bytes (ONNX's messages are proto2, unchecked)."""
    for what, value in _texts(model):
        if not isinstance(value, str):
            raise ParameterFileError(f"{where}: {what} is not UTF-8 text: "
                                     f"{value[:40]!r}")


# ---------------------------------------------------------------------------
# Tensors


def tensor_dims(t, where):
    """The dimensions a TensorProto declares, checked: none negative, at
    most MAX_ELEMENTS values."""
    dims = tuple(int(d) for d in t.dims)
    if any(d < 0 for d in dims):
        raise ParameterFileError(f"{where}: negative dimension in {dims}")
    if prod(dims) > MAX_ELEMENTS or any(d > MAX_ELEMENTS for d in dims) \
            or len(dims) > 32:
        raise ParameterFileError(
            f"{where}: declares dimensions {dims}, beyond what fastlazy "
            f"reads from one tensor (at most {MAX_ELEMENTS} values, 32 "
            f"axes)")
    return dims


class Tensors:
    """Decodes the model's TensorProtos, inline or external, with the
    external files looked up in ``base_dir`` (and nowhere else)."""

    def __init__(self, where, base_dir):
        self.where = where
        self.base_dir = base_dir

    def decode(self, t, what):
        """The values of TensorProto ``t`` as a native-endian array
        (BFLOAT16 as float32).  ``what`` names it in messages."""
        where = f"{self.where}: {what}"
        dtype_code = int(t.data_type)
        if dtype_code not in _LAYOUT:
            raise ParameterFileError(
                f"{where} has data type "
                f"{TYPE_NAMES.get(dtype_code, dtype_code)}, which fastlazy "
                f"does not read (it reads "
                f"{', '.join(TYPE_NAMES[c] for c in sorted(_LAYOUT))})")
        dims = tensor_dims(t, where)
        count = prod(dims)
        stored, field = _LAYOUT[dtype_code]
        stored = np.dtype(stored)
        if t.HasField("segment"):
            raise ParameterFileError(f"{where} is a segment of a larger "
                                     f"tensor, which fastlazy does not read")
        # (each read of a bytes field of the message copies it: once)
        raw = t.raw_data if int(t.data_location) != 1 else b""
        if int(t.data_location) == 1:
            raw = self._external(t, where, count * stored.itemsize)
            values = np.frombuffer(raw, dtype=stored)
        elif len(raw) or count == 0:
            if len(raw) != count * stored.itemsize:
                raise ParameterFileError(
                    f"{where} declares {dims} ({count} values of "
                    f"{TYPE_NAMES[dtype_code]}, {count * stored.itemsize} "
                    f"bytes) but holds {len(raw)} bytes")
            values = np.frombuffer(raw, dtype=stored)
        else:
            data = getattr(t, field)
            if len(data) != count:
                raise ParameterFileError(
                    f"{where} declares {dims} ({count} values) but holds "
                    f"{len(data)} in {field}")
            if field == "int32_data":
                wide = np.array(data, dtype=np.int64)
                info = np.iinfo(stored) if stored.kind in "iu" else None
                lo, hi = (info.min, info.max) if info else (0, 0xFFFF)
                if wide.size and (wide.min() < lo or wide.max() > hi):
                    raise ParameterFileError(
                        f"{where}: a value in int32_data does not fit "
                        f"{TYPE_NAMES[dtype_code]}")
                values = wide.astype(stored)
            else:
                values = np.array(data, dtype=stored)
        values = values.reshape(dims)
        if dtype_code == 16:        # bfloat16: the high half of a float32
            return (values.astype(np.uint32) << 16).view(np.float32)
        if dtype_code == 10:
            return values.view(np.dtype("<f2")).astype(np.float16)
        if dtype_code == 9:
            return values.astype(bool)
        return values.astype(stored.newbyteorder("="), copy=False)

    def _external(self, t, where, nbytes):
        """The bytes of an external tensor, from a file inside base_dir
        that is large enough for what the tensor declares."""
        info = {}
        for entry in t.external_data:
            info[entry.key] = entry.value
        location = info.get("location")
        if not location:
            raise ParameterFileError(f"{where} is stored externally but "
                                     f"names no file (no 'location')")
        try:
            offset = int(info.get("offset", 0))
            length = int(info["length"]) if "length" in info else None
        except ValueError:
            raise ParameterFileError(
                f"{where}: external data offset/length {info.get('offset')!r}"
                f"/{info.get('length')!r} are not integers") from None
        if os.path.isabs(location) or "\x00" in location:
            raise ParameterFileError(
                f"{where}: external data location {location!r} must be a "
                f"path relative to the model's directory")
        base = os.path.realpath(self.base_dir)
        path = os.path.realpath(os.path.join(base, location))
        if os.path.commonpath([base, path]) != base:
            raise ParameterFileError(
                f"{where}: external data location {location!r} leads out "
                f"of the model's directory {base}; fastlazy reads external "
                f"data only from inside it")
        if offset < 0 or (length is not None and length < 0):
            raise ParameterFileError(f"{where}: negative external data "
                                     f"offset or length")
        try:
            size = os.stat(path).st_size
        except OSError as exc:
            raise ParameterFileError(
                f"{where}: its external data file {location!r} cannot be "
                f"read ({exc.strerror or exc})") from None
        if length is None:
            length = nbytes
        if length != nbytes:
            raise ParameterFileError(
                f"{where} declares {nbytes} bytes but its external data "
                f"length is {length}")
        if offset + length > size:
            raise ParameterFileError(
                f"{where}: external data {location!r} has {size} bytes, the "
                f"tensor needs bytes {offset} to {offset + length}")
        with open(path, "rb") as f:
            f.seek(offset)
            raw = f.read(length)
        if len(raw) != length:
            raise ParameterFileError(f"{where}: external data {location!r} "
                                     f"ended early")
        return raw


# ---------------------------------------------------------------------------
# Nodes and their attributes

# AttributeProto.AttributeType -> (kind, field)
_ATTR = {1: ("float", "f"), 2: ("int", "i"), 3: ("string", "s"),
         4: ("tensor", "t"), 5: ("graph", "g"), 6: ("floats", "floats"),
         7: ("ints", "ints"), 8: ("strings", "strings"),
         9: ("tensors", "tensors"), 10: ("graphs", "graphs"),
         11: ("sparse_tensor", "sparse_tensor"),
         12: ("sparse_tensors", "sparse_tensors"),
         13: ("type_proto", "tp"), 14: ("type_protos", "type_protos")}

_MISSING = object()


class Node:
    """One node of the graph: its operator, inputs, outputs and attributes
    (read with the typed getters, which name the node in their errors).

    ``label`` names the operator in the fusion report (a pattern folded
    into one node keeps the names of the nodes it replaces)."""

    __slots__ = ("name", "op", "domain", "inputs", "outputs", "attrs",
                 "opset", "where", "label", "index")

    def __init__(self, name, op, domain, inputs, outputs, attrs, opset,
                 source, index, label=None):
        self.name = name
        self.op = op
        self.domain = domain
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.attrs = attrs
        self.opset = opset
        self.index = index
        self.label = label or op
        dom = f"{domain} " if domain else ""
        self.where = (f"{source}: node '{name}' ({dom}{op}, opset "
                      f"{opset if opset is not None else '?'})")

    @classmethod
    def from_proto(cls, proto, index, opsets, source):
        domain = proto.domain if proto.domain != "ai.onnx" else ""
        name = proto.name or f"{proto.op_type}_{index}"
        attrs = {}
        for a in proto.attribute:
            kind, field = _ATTR.get(int(a.type), ("undefined", None))
            value = getattr(a, field) if field else None
            if kind in ("floats", "ints", "strings"):
                value = list(value)
            attrs[a.name] = (kind, value)
        return cls(name, proto.op_type, domain, proto.input, proto.output,
                   attrs, opsets.get(domain), source, index)

    def _get(self, key, kinds, default):
        kind, value = self.attrs.get(key, (None, _MISSING))
        if value is _MISSING:
            if default is _MISSING:
                raise ParameterFileError(f"{self.where}: the attribute "
                                         f"{key!r} is missing")
            return default
        if kind not in kinds:
            raise ParameterFileError(
                f"{self.where}: attribute {key!r} is a {kind}, expected "
                f"{' or '.join(kinds)}")
        return value

    def has(self, key):
        return key in self.attrs

    def int(self, key, default=_MISSING):
        return int(self._get(key, ("int",), default))

    def float(self, key, default=_MISSING):
        return float(self._get(key, ("float",), default))

    def floats(self, key, default=_MISSING):
        value = self._get(key, ("floats",), default)
        return None if value is None else [float(v) for v in value]

    def ints(self, key, default=_MISSING):
        value = self._get(key, ("ints",), default)
        return None if value is None else [int(v) for v in value]

    def str(self, key, default=_MISSING):
        value = self._get(key, ("string",), default)
        if isinstance(value, bytes):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                raise ParameterFileError(f"{self.where}: attribute {key!r} "
                                         f"is not UTF-8 text") from None
        return value

    def tensor(self, key):
        return self._get(key, ("tensor",), _MISSING)

    def unsupported(self, what):
        return UnsupportedOperatorError(f"{self.where}: {what}")
