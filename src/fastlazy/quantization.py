"""``fl.quantize``: a copy of a network whose Dense and Conv2D layers run in
int8 (MXNet's ``contrib.quantization.quantize_net``, ONNX Runtime's
``quantize_dynamic`` / ``quantize_static``, PyTorch's
``torch.ao.quantization.quantize_dynamic``).

What a quantized layer computes (kernels/qgemm.inc.h states it exactly):

* weights: int8, symmetric, one scale per output channel (max |w| / 127),
  made from the layer's float32 weight and packed once for the kernel;
* activations: asymmetric uint8 with a zero point -- per row at every call
  (``mode='dynamic'``; a convolution's input per sample), or with the range
  calibrated on ``calib_data`` (``mode='static'``: ``'naive'`` min/max,
  ``'entropy'`` the KL-divergence threshold of MXNet and TensorRT, or
  ``'percentile'``); values outside a static range saturate;
* int32 sums; scale, bias (or a folded BatchNorm) and the activation in
  the kernel's epilogue.

The float32 weights stay the network's parameters: ``save_parameters``
writes them (plus, for a static layer, its calibrated input range as the
parameter ``calib_range``), ``load_parameters`` reads them and the int8
copy is made again from the loaded values.  Pickles and deep copies keep
the quantization.  A network quantizes after its parameters exist (a first
forward pass or ``net.build(shape)``): quantizing a deferred network is an
error that says so.
"""

import copy

import numpy as np

from .errors import DeferredInitializationError, FastLazyError, ShapeError

__all__ = ["quantize", "QuantizationError", "quantized_layers"]

_MODES = ("dynamic", "static")
_CALIB_MODES = ("naive", "entropy", "percentile")


class QuantizationError(FastLazyError, ValueError):
    """The network or the calibration data cannot be quantized as asked."""


def quantize(net, mode="dynamic", calib_data=None, calib_mode="naive",
             percentile=99.99, exclude=None, dtype="int8"):
    """Return a copy of ``net`` whose Dense and Conv2D layers run in int8;
    ``net`` itself is not changed.

    Parameters
    ----------
    net : Block
        An initialized float32 network (after a forward pass or
        ``net.build(shape)``): a Sequential, a HybridBlock graph with
        residuals, a model-zoo network.
    mode : 'dynamic' or 'static'
        'dynamic' quantizes each input row (each sample of a convolution)
        with its own range at every call; 'static' uses one range per layer
        found on ``calib_data``.
    calib_data : array or iterable of arrays
        'static' only: inputs of the network (a batch, or batches).
    calib_mode : 'naive', 'entropy' or 'percentile'
        How 'static' picks each layer's input range from what it saw: the
        minimum and maximum; the threshold with the least KL divergence
        between the values and their quantized form; or the
        ``percentile``-th percentile at each end.
    percentile : float
        For ``calib_mode='percentile'``, in (50, 100].
    exclude : names, blocks or a callable
        Layers to keep in float32 (MXNet's ``exclude_layers``): layer names
        (``'dense0'``) or structural paths (``'0'``, ``'features.3'``),
        blocks of ``net``, or ``exclude(block) -> bool`` called on each of
        ``net``'s Dense and Conv2D layers.
    dtype : 'int8' or 'bfloat16'
        'bfloat16' returns ``copy.deepcopy(net).cast('bfloat16')``
        (no calibration).

    Returns
    -------
    Block
        The quantized copy.  Its repr and ``summary()`` say which layers run
        in int8; grouped and depthwise convolutions stay float32 (the int8
        route has one group) and say so.

    Raises
    ------
    DeferredInitializationError
        A parameter of ``net`` waits for its shape.
    QuantizationError
        NaN or infinity in a weight to quantize or in ``calib_data``; a
        network that is not float32; arguments that do not fit together.
    ShapeError
        ``calib_data`` does not fit the network's input.
    """
    from .block import Block
    if not isinstance(net, Block):
        raise TypeError(f"quantize: net must be a fastlazy Block, got "
                        f"{type(net).__name__}")
    if dtype in ("bfloat16", "bf16"):
        if mode != "dynamic" or calib_data is not None or exclude is not None:
            raise QuantizationError(
                "quantize: dtype='bfloat16' converts every parameter and "
                "needs no mode, calib_data or exclude")
        out = copy.deepcopy(net)
        out.cast("bfloat16")
        return out
    if dtype != "int8":
        raise QuantizationError(f"quantize: dtype must be 'int8' or "
                                f"'bfloat16', got {dtype!r}")
    if mode not in _MODES:
        raise QuantizationError(f"quantize: mode must be 'dynamic' or "
                                f"'static', got {mode!r}")
    if mode == "static":
        if calib_data is None:
            raise QuantizationError(
                "quantize: mode='static' needs calib_data, inputs of the "
                "network to calibrate each layer's input range on (or use "
                "mode='dynamic', which needs none)")
        if calib_mode not in _CALIB_MODES:
            raise QuantizationError(
                f"quantize: calib_mode must be one of {_CALIB_MODES}, got "
                f"{calib_mode!r}")
        if calib_mode == "percentile" and not 50 < float(percentile) <= 100:
            raise QuantizationError(f"quantize: percentile must be in "
                                    f"(50, 100], got {percentile!r}")
    elif calib_data is not None:
        raise QuantizationError(
            "quantize: calib_data is for mode='static'; mode='dynamic' "
            "quantizes each row with its own range at every call")

    # Everything is checked on the original without touching it (no
    # data() views: they count as writes), then done on the copy.
    originals = _layers(net)
    for path, layer in originals:
        w = layer.weight
        if not w.is_initialized:
            raise DeferredInitializationError(
                f"quantize: {_where(path, layer)} is not initialized yet "
                f"(weight shape {w.shape}): run one forward pass or "
                f"net.build(input_shape) first, then quantize")
        if w.dtype != np.float32:
            raise QuantizationError(
                f"quantize: {_where(path, layer)} is {w.dtype}; int8 "
                f"quantization starts from float32 (net.cast('float32'))")
    skip = _excluded(originals, exclude)
    out = copy.deepcopy(net)
    chosen = []
    for path, layer in _layers(out):
        if path in skip:
            continue
        groups = getattr(layer, "_groups", 1)
        if groups != 1:
            layer._quant_kept = "depthwise" if groups == layer.weight.shape[0] \
                and layer.weight.shape[1] == 1 else f"groups={groups}"
            continue
        values = layer.weight.data()
        bad = int(np.size(values) - np.count_nonzero(np.isfinite(values)))
        del values                  # the view: no longer a live writer
        if bad:
            raise QuantizationError(
                f"quantize: parameter {layer.weight.name} of "
                f"{_where(path, layer)} holds {bad} NaN or infinite values; "
                f"int8 has no code for them. Fix the weights or exclude the "
                f"layer (exclude=[{path!r}]); the network is unchanged")
        chosen.append((path, layer))
    ranges = {}
    if mode == "static" and chosen:
        ranges = _calibrate(out, chosen, calib_data, calib_mode,
                            float(percentile))
    from ._steps import Int8Spec
    for path, layer in chosen:
        calib = None
        if mode == "static":
            calib = layer.params.get("calib_range", shape=(2,),
                                     dtype="float32", init="zeros")
            calib.initialize()
            calib.set_data(np.asarray(ranges[path], dtype=np.float32))
            layer.calib_range = calib
        layer._quant = Int8Spec(mode, calib_mode if mode == "static" else
                                None, calib)
        layer._structure_changed()
    out._structure_changed()
    return out


def quantized_layers(net):
    """``[(path, layer, how)]`` for every Dense and Conv2D layer of ``net``:
    ``how`` is 'int8 dynamic', 'int8 static (naive)', ... or 'float32' (with
    the reason, for a convolution int8 does not run)."""
    rows = []
    for path, layer in _layers(net):
        spec = layer._quant
        if spec is not None:
            how = spec.describe()
        elif getattr(layer, "_quant_kept", None):
            how = f"float32 ({layer._quant_kept})"
        else:
            how = "float32"
        rows.append((path, layer, how))
    return rows


# ---------------------------------------------------------------------------


def _layers(net):
    """[(structural path, layer)] of the Dense and Conv2D layers, in order
    (a layer reached twice is listed once)."""
    from .conv_layers import Conv2D
    from .layers import Dense
    out = []
    seen = set()

    def walk(block, path):
        if isinstance(block, (Dense, Conv2D)):
            if id(block) not in seen:
                seen.add(id(block))
                out.append((path or block.name, block))
            return
        for key, child in block._children.items():
            walk(child, f"{path}.{key}" if path else str(key))

    walk(net, "")
    return out


def _where(path, layer):
    return f"{type(layer).__name__} layer '{layer.name}' (at {path!r})"


def _excluded(layers, exclude):
    """Paths of the layers ``exclude`` names."""
    if exclude is None:
        return set()
    if callable(exclude) and not isinstance(exclude, (str, list, tuple,
                                                      set)):
        return {path for path, layer in layers if exclude(layer)}
    from .block import Block
    items = [exclude] if isinstance(exclude, (str, Block)) else list(exclude)
    paths = set()
    for item in items:
        found = [path for path, layer in layers
                 if (isinstance(item, Block) and layer is item)
                 or (isinstance(item, str)
                     and item in (path, layer.name, layer.prefix))]
        if not found:
            names = ", ".join(f"{layer.name} ({path})"
                              for path, layer in layers)
            raise QuantizationError(
                f"quantize: exclude names {item!r}, which is none of the "
                f"network's Dense and Conv2D layers: {names or 'none'}")
        paths.update(found)
    return paths


def _batches(calib_data):
    if isinstance(calib_data, np.ndarray) or not hasattr(calib_data,
                                                          "__iter__"):
        arr = np.asarray(calib_data, dtype=np.float32)
        return [arr[i:i + 256] for i in range(0, max(len(arr), 1), 256)] \
            if arr.ndim else [arr]
    return [np.asarray(b, dtype=np.float32) for b in calib_data]


def _calibrate(net, chosen, calib_data, calib_mode, percentile):
    """Run the float32 copy on ``calib_data`` and pick each chosen layer's
    input range.  Returns {path: (lo, hi)}."""
    try:
        batches = _batches(calib_data)
    except (TypeError, ValueError) as exc:
        raise QuantizationError(f"quantize: calib_data must be an array "
                                f"or an iterable of arrays ({exc})") from None
    if not batches or sum(b.size for b in batches) == 0:
        raise QuantizationError("quantize: calib_data is empty")
    for b in batches:
        if not np.isfinite(b).all():
            raise QuantizationError(
                "quantize: calib_data holds NaN or infinite values; "
                "calibrate on finite inputs")
    seen = {path: [] for path, _ in chosen}
    handles = []
    for path, layer in chosen:
        def hook(block, inputs, _path=path):
            seen[_path].append(np.asarray(inputs[0], dtype=np.float32)
                               .ravel().copy())
        handles.append(layer.register_forward_pre_hook(hook))
    try:
        for b in batches:
            try:
                net(b)
            except ShapeError as exc:
                raise ShapeError(
                    f"quantize: calib_data does not fit the network (a "
                    f"batch of shape {b.shape}): {exc}") from None
    finally:
        for h in handles:
            h.detach()
    ranges = {}
    for path, layer in chosen:
        if not seen[path]:
            raise QuantizationError(
                f"quantize: {_where(path, layer)} was not reached by "
                f"calib_data; exclude it or calibrate on inputs that use it")
        vals = np.concatenate(seen[path])
        seen[path] = None
        ranges[path] = _range(vals, calib_mode, percentile)
    return ranges


def _range(vals, calib_mode, percentile):
    lo, hi = float(vals.min()), float(vals.max())
    if calib_mode == "naive":
        return lo, hi
    if calib_mode == "percentile":
        return (float(np.percentile(vals, 100.0 - percentile)),
                float(np.percentile(vals, percentile)))
    if lo >= 0:
        return 0.0, _kl_threshold(vals, 255)
    th = _kl_threshold(np.abs(vals), 127)
    return max(lo, -th), min(hi, th)


def _kl_threshold(a, levels, bins=2048):
    """The threshold t in (0, max a] whose clipped, ``levels``-level
    quantization of the histogram of ``a`` >= 0 keeps the least KL
    divergence from it (TensorRT's entropy calibration, MXNet's
    'entropy')."""
    amax = float(a.max())
    if amax <= 0:
        return 0.0
    hist, edges = np.histogram(a, bins=bins, range=(0.0, amax))
    hist = hist.astype(np.float64)
    best, best_i = np.inf, bins
    for i in range(levels, bins + 1, 4):
        p = hist[:i].copy()
        p[-1] += hist[i:].sum()
        # merge the i bins into `levels` and spread each merged count over
        # its non-empty bins
        idx = (np.arange(i) * levels) // i
        nz = hist[:i] > 0
        sums = np.bincount(idx, weights=hist[:i], minlength=levels)
        cnt = np.bincount(idx, weights=nz, minlength=levels)
        q = np.where(nz, sums[idx] / np.maximum(cnt[idx], 1), 0.0)
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        p /= ps
        q /= qs
        m = p > 0
        with np.errstate(divide="ignore"):
            kl = np.sum(p[m] * np.log(p[m] / np.where(q[m] > 0, q[m],
                                                      1e-12)))
        if kl < best:
            best, best_i = kl, i
    return float(edges[best_i])
