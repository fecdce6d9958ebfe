"""fastrnn layers and models as ONNX graphs of the standard operators, and back.

``export(obj, path)`` writes ``obj`` as a graph of ONNX's ``RNN``, ``LSTM`` and ``GRU`` operators
(direction forward; "reverse" for a layer with ``reverse=True``; "bidirectional" for a
``Bidirectional`` of two layers of one cell and size, its Y (T, 2, N, H) then transposed and
reshaped to (T, N, 2H) for ``merge="concat"`` or summed over the direction axis for
"sum"), ``Gather`` for an embedding and ``MatMul`` + ``Add`` for an affine layer;
``import_onnx(path)`` reads such a graph back into fastrnn objects.  The operators are
time-major, fastrnn batch-major: the graph transposes (N, T, D) to (T, N, D) before the first
recurrent operator and back after the last, and stacked layers are chained time-major.

The mapping (per layer): ``W[0] = Wx.T`` and ``R[0] = Wh.T`` block by block, in ONNX's gate order
(LSTM i, o, f, c for fastrnn's i, o, f, g; GRU z, r, h with z negated, since ONNX's z weighs the
old state and fastrnn's the candidate); ``B[0]`` is ``[b, 0]`` for the RNN and LSTM (ONNX adds
its two halves) and ``[b[0], b[1]]`` for a reset_after GRU, which is ONNX's
``linear_before_reset=1``; a classic GRU is ``linear_before_reset=0`` with ``B[0] = [b, 0]``.

Graph inputs: ``xs`` (N, T, D) float for recurrent layers and stacks, or ``ids`` (N, T) int64 for
a model starting with an embedding; optionally ``sequence_lens`` (N,) int32, passed to every
recurrent operator.  Output: ``hs`` (N, T, H), or ``logits`` (N, T, V) for a model ending in an
affine layer.  A ``SequenceClassifier`` (plain encoder connections) is its inference graph:
embedding or dense input, the recurrent operators, its pooling head over each row's valid steps
(nodes named ``pool/...``: a 0/1 step mask from ``sequence_lens`` multiplied in and summed over
time for "last" and "mean", ``Where`` with -inf then ``ReduceMax`` for "max"; "last" of a
concatenating bidirectional output takes the backward half at t = 0) and ``MatMul`` + ``Add``:
``logits`` (N, C); ``sequence_lens`` is then always a graph input.

Weights are stored in the parameters' dtype (float32 or float64) unless ``dtype`` says otherwise
(onnxruntime's recurrent operators run float32 only).  The graph carries the fastrnn class and
config as metadata, so that ``import_onnx`` rebuilds models (tied weights included) and not only
their layers.
"""

import json

import numpy as np

from . import require
from ._gates import blocks_of, build, describe, from_rows, to_rows
from ._stack import directions

__all__ = ["export", "import_onnx"]

OPSET = 17

_ONNX_GATES = {"rnn": ("h",), "lstm": ("i", "o", "f", "g"), "gru": ("z", "r", "h")}
_NEGATED = {"rnn": (), "lstm": (), "gru": ("z",)}
_OPS = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}
_KINDS = {v: k for k, v in _OPS.items()}
_META_CLASS = "fastrnn.class"
_META_CONFIG = "fastrnn.config"
_META_PARAMS = "fastrnn.params"


def _onnx():
    return require("onnx", "onnx")


# ---- the parts of an object ----------------------------------------------------------------------


def _parts(obj):
    """obj as a list of ("embedding", layer) / ("recurrent", layer) / ("affine", layer)."""
    from ..layers.bidirectional import Bidirectional

    if isinstance(obj, Bidirectional):
        return [("recurrent", obj)]
    try:
        describe(obj)
        return [("recurrent", obj)]
    except TypeError:
        pass
    from ..models.classifier import SequenceClassifier
    from ..models.lm import LanguageModel
    from ._stack import stack_layers

    if isinstance(obj, SequenceClassifier):
        parts = [("embedding", obj.embedding)] if obj.embedding is not None else []
        parts += [("recurrent", layer) for layer in stack_layers(obj.encoder)]
        return parts + [("pool", obj.pool), ("affine", _Affine(obj.W, obj.b))]
    if isinstance(obj, LanguageModel):
        if obj.connection is not None:
            raise ValueError(
                f"a LanguageModel with connection={obj.connection!r} cannot be "
                "exported (only plain stacks)"
            )
        parts = [("embedding", obj.embedding)]
        parts += [("recurrent", layer) for layer in obj.stack.layers]
        if obj.proj is not None:
            parts.append(("affine", obj.proj))
        return parts + [("affine", obj.affine)]
    layers = stack_layers(obj)
    if layers is not None:
        return [("recurrent", layer) for layer in layers]
    name = type(obj).__name__
    if name == "TimeEmbedding":
        return [("embedding", obj)]
    if name == "TimeAffine":
        return [("affine", obj)]
    layers = getattr(obj, "layers", None)
    if isinstance(layers, (list, tuple)):
        parts = []
        for layer in layers:
            if not getattr(layer, "params", None):  # dropout and the like: identity here
                continue
            parts.extend(_parts(layer))
        if parts:
            return parts
    raise TypeError(
        f"cannot export {type(obj).__module__}.{type(obj).__qualname__}: expected a "
        "fastrnn recurrent layer, TimeEmbedding, TimeAffine, or a stack or model of "
        "them"
    )


class _Affine:
    """The affine head of a SequenceClassifier as a layer (its own W and b arrays)."""

    def __init__(self, W, b):
        self.params = [W, b]


def _check_order(parts):
    kinds = [k for k, _ in parts if k != "pool"]
    n_emb = kinds.count("embedding")
    n_rec = kinds.count("recurrent")
    tail = kinds[n_emb + n_rec :]
    if (
        n_emb > 1
        or kinds[n_emb : n_emb + n_rec] != ["recurrent"] * n_rec
        or any(k != "affine" for k in tail)
        or (len(parts) > 1 and not n_rec)
    ):
        raise TypeError(
            f"cannot export layers in the order {kinds}: expected [embedding], "
            "recurrent layers, [affine layers]"
        )


# ---- export -----------------------------------------------------------------------------------


def _tensor_type(dtype):
    TensorProto = _onnx().TensorProto
    dtype = np.dtype(dtype)
    if dtype == np.float32:
        return TensorProto.FLOAT
    if dtype == np.float64:
        return TensorProto.DOUBLE
    raise TypeError(f"parameters must be float32 or float64 to export, got {dtype}")


def export(obj, path, *, sequence_lens=False, dtype=None, opset=OPSET):
    """Write ``obj`` to ``path`` as an ONNX model.

    Parameters
    ----------
    obj
        A fastrnn recurrent time layer (``TimeRNN``, ``TimeLSTM``, ``TimeGRU``), a
        ``TimeEmbedding`` or ``TimeAffine``, a stack of recurrent layers, or a language model
        (embedding, recurrent layers, affine: its ``layers``, dropout skipped), or a
        ``SequenceClassifier`` (its inference graph: ``logits`` (N, C) of ``predict``).
    path : str or os.PathLike
        Destination ``.onnx`` file, written atomically (a temporary file in the same directory,
        then ``os.replace``).
    sequence_lens : bool
        Add the optional graph input ``sequence_lens`` (N,) int32 and feed it to every recurrent
        operator (ONNX then zeroes the outputs past each row's length).  Always on for a
        ``SequenceClassifier``, whose pooling reads it.
    dtype : None, numpy.float32 or numpy.float64
        The graph's float type; None (default): the parameters' dtype.  onnxruntime's CPU
        kernels of RNN, LSTM and GRU are float32 only, so export float64 models with
        ``dtype=np.float32`` to run them there (the ONNX reference evaluator runs either).
    opset : int
        ONNX opset of the graph (default 17).

    Returns
    -------
    onnx.ModelProto
        The model written (checked with ``onnx.checker``).
    """
    onnx = _onnx()
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    parts = _parts(obj)
    _check_order(parts)
    dtypes = {np.asarray(p).dtype for _, layer in parts for p in layer.params}
    if len(dtypes) != 1:
        raise TypeError(
            f"all parameters must have one dtype to export, got {sorted(map(str, dtypes))}"
        )
    dtype = dtypes.pop() if dtype is None else np.dtype(dtype)
    pooled = any(kind == "pool" for kind, _ in parts)
    sequence_lens = sequence_lens or pooled  # a pooling head reads each row's length
    elem = _tensor_type(dtype)
    nodes, inits = [], []

    def init(name, array):
        if array.dtype.kind == "f":
            array = array.astype(dtype, copy=False)
        inits.append(numpy_helper.from_array(np.asarray(array, order="C"), name))  # 0-d stays 0-d
        return name

    def node(op, inputs, outputs, **attrs):
        nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0] + "_" + op, **attrs))
        return outputs[0]

    if parts[0][0] == "embedding":
        graph_input = helper.make_tensor_value_info(
            "ids", onnx.TensorProto.INT64, ["batch", "time"]
        )
        cur = "ids"
    else:
        first = parts[0][1]
        D = np.asarray(first.params[0]).shape[0]
        graph_input = helper.make_tensor_value_info("xs", elem, ["batch", "time", D])
        cur = "xs"
    inputs = [graph_input]
    if sequence_lens:
        inputs.append(
            helper.make_tensor_value_info("sequence_lens", onnx.TensorProto.INT32, ["batch"])
        )
    axes1 = None
    time_major = False
    width = None
    for k, (kind, layer) in enumerate(parts):
        p = f"l{k}_"
        if kind == "embedding":
            W = np.asarray(layer.params[0])
            cur = node("Gather", [init(p + "W", W), cur], [p + "out"], axis=0)
            width = W.shape[1]
        elif kind == "pool":
            cur = _pool_nodes(layer, cur, elem, dtype, width, opset, node, init)
            time_major = False
        elif kind == "affine":
            W, b = (np.asarray(a) for a in layer.params)
            if time_major:
                cur = node("Transpose", [cur], [p + "batch_major"], perm=[1, 0, 2])
                time_major = False
            cur = node("MatMul", [cur, init(p + "W", W)], [p + "matmul"])
            cur = node("Add", [cur, init(p + "b", b)], [p + "out"])
            width = W.shape[1]
        else:
            fwd, bwd, merge = directions(layer)
            rkind, is_time, reset_after, nonlinearity = describe(fwd)
            if not is_time:
                raise TypeError(
                    "export the time layers (TimeRNN, TimeLSTM, TimeGRU), not single-step cells"
                )
            Wx, Wh, _ = (np.asarray(a) for a in fwd.params)
            H = Wh.shape[0]
            if bwd is not None and (
                describe(bwd) != describe(fwd) or np.asarray(bwd.params[1]).shape != Wh.shape
            ):
                raise ValueError(
                    f"layer {k}: ONNX's bidirectional {_OPS[rkind]} runs one cell: both "
                    "directions must be the same cell with the same settings and hidden size"
                )
            if width is not None and Wx.shape[0] != width:
                raise ValueError(
                    f"layer {k} takes inputs of size {Wx.shape[0]}, the layer before gives {width}"
                )
            rows = [
                to_rows(_ONNX_GATES[rkind], blocks_of(d), _NEGATED[rkind])
                for d in ((fwd, bwd) if bwd is not None else (fwd,))
            ]
            if bwd is not None:
                direction = "bidirectional"
            else:
                direction = "reverse" if getattr(fwd, "reverse", False) else "forward"
            if not time_major:
                cur = node("Transpose", [cur], [p + "time_major"], perm=[1, 0, 2])
                time_major = True
            attrs = {"hidden_size": H, "direction": direction}
            if rkind == "rnn":
                act = {"tanh": "Tanh", "relu": "Relu"}[nonlinearity]
                attrs["activations"] = [act] * len(rows)
            if rkind == "gru":
                attrs["linear_before_reset"] = int(reset_after)
            node(
                _OPS[rkind],
                [
                    cur,
                    init(p + "W", np.stack([r[0] for r in rows])),
                    init(p + "R", np.stack([r[1] for r in rows])),
                    init(p + "B", np.stack([np.concatenate([r[2], r[3]]) for r in rows])),
                    "sequence_lens" if sequence_lens else "",
                ],
                [p + "Y"],
                **attrs,
            )
            if axes1 is None and (bwd is None or merge == "sum"):
                axes1 = init("axes_1", np.array([1], np.int64))
            if bwd is None:  # Y (T, 1, N, H) -> (T, N, H)
                cur = node("Squeeze", [p + "Y", axes1], [p + "out"])
                width = H
            elif merge == "sum":  # Y (T, 2, N, H) -> the two directions' sum (T, N, H)
                cur = node("ReduceSum", [p + "Y", axes1], [p + "out"], keepdims=0)
                width = H
            else:  # Y (T, 2, N, H) -> (T, N, 2, H) -> (T, N, 2H): forward half first
                y = node("Transpose", [p + "Y"], [p + "Y_tnd"], perm=[0, 2, 1, 3])
                shape = init(p + "shape", np.array([0, 0, 2 * H], np.int64))
                cur = node("Reshape", [y, shape], [p + "out"])
                width = 2 * H
    if time_major:
        cur = node("Transpose", [cur], ["batch_major"], perm=[1, 0, 2])
    out_name = (
        "logits"
        if parts[-1][0] == "affine" and len(parts) > 1
        else ("hs" if parts[-1][0] == "recurrent" else "out")
    )
    nodes.append(helper.make_node("Identity", [cur], [out_name], name=out_name + "_Identity"))
    out_dims = ["batch", width] if pooled else ["batch", "time", width]
    graph = helper.make_graph(
        nodes,
        "fastrnn",
        inputs,
        [helper.make_tensor_value_info(out_name, elem, out_dims)],
        initializer=inits,
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="fastrnn"
    )
    meta = _metadata(obj, parts)
    if meta is not None:
        helper.set_model_props(model, meta)
    onnx.checker.check_model(model)
    from ..io import atomic_write

    atomic_write(path, lambda f: f.write(model.SerializeToString()))
    return model


def _pool_nodes(pool, ys, elem, dtype, width, opset, node, init):
    """The nodes of a pooling head over the valid steps of Y (T, N, F) time-major, given
    ``sequence_lens`` (N,): (N, F).  Every node is named ``pool/...`` (import_onnx skips them
    and rebuilds the head from the metadata).  The steps are selected by multiplying with a 0/1
    mask and summing over time (exact: one term per row is not zero) or, for max, by Where with
    -inf."""
    onnx = _onnx()
    INT64 = onnx.TensorProto.INT64
    name = type(pool).__name__
    if name not in ("LastPool", "MeanPool", "MaxPool"):
        raise TypeError(f"cannot export the pooling head {name}")

    def pnode(op, inputs, out, **attrs):
        return node(op, inputs, ["pool/" + out], **attrs)

    def const(tag, array):
        return init("pool/" + tag, array)

    shape = pnode("Shape", [ys], "shape")
    steps_total = pnode("Gather", [shape, const("zero", np.array(0, np.int64))], "T", axis=0)
    one = const("one", np.array(1, np.int64))
    steps = pnode("Range", [const("start", np.array(0, np.int64)), steps_total, one], "steps")
    steps = pnode("Unsqueeze", [steps, const("axes_1", np.array([1], np.int64))], "steps_col")
    lens = pnode("Cast", ["sequence_lens"], "lens", to=INT64)  # (N,), against (T, 1)
    axes2 = const("axes_2", np.array([2], np.int64))

    def step_mask(op, target, tag):
        """(T, N, 1) mask of the steps where ``steps op target`` holds, as elem (0/1) or bool."""
        hit = pnode(op, [steps, target], tag)
        return pnode("Unsqueeze", [hit, axes2], tag + "_3d")

    def masked_sum(mask_bool, tag):
        weights = pnode("Cast", [mask_bool], tag + "_weights", to=elem)
        picked = pnode("Mul", [ys, weights], tag + "_picked")
        axis0 = const("axes_0", np.array([0], np.int64))
        return pnode("ReduceSum", [picked, axis0], tag + "_sum", keepdims=0)

    if name == "MeanPool":
        total = masked_sum(step_mask("Less", lens, "valid"), "valid")
        count = pnode("Cast", [lens], "count", to=elem)
        count = pnode("Unsqueeze", [count, const("axes_1b", np.array([1], np.int64))], "count_col")
        return pnode("Div", [total, count], "out")
    if name == "MaxPool":
        valid = step_mask("Less", lens, "valid")
        low = const("minus_inf", np.array(-np.inf, dtype))
        kept = pnode("Where", [valid, ys, low], "kept")
        if opset >= 18:  # axes an input since opset 18, an attribute before
            axis0 = const("axes_0", np.array([0], np.int64))
            return pnode("ReduceMax", [kept, axis0], "out", keepdims=0)
        return pnode("ReduceMax", [kept], "out", axes=[0], keepdims=0)
    last = pnode("Sub", [lens, one], "last_step")
    out = masked_sum(step_mask("Equal", last, "last"), "last")
    if pool.split is None:
        return out
    # a concatenating bidirectional output: the backward half's final state is at t = 0
    first = pnode("Gather", [ys, const("zero_b", np.array(0, np.int64))], "first", axis=0)
    axes = const("feature_axis", np.array([1], np.int64))
    split = const("split", np.array([pool.split], np.int64))
    fwd = pnode("Slice", [out, const("begin", np.array([0], np.int64)), split, axes], "fwd")
    bwd = pnode("Slice", [first, split, const("end", np.array([width], np.int64)), axes], "bwd")
    return pnode("Concat", [fwd, bwd], "out", axis=1)


def _metadata(obj, parts):
    """The fastrnn class and config of a registered object, and where each of its params is
    among the graph's layers' params (so import_onnx can rebuild it, tied weights included);
    None when obj is a single layer or one of its params is no layer's."""
    from ..io import _name_of

    if len(parts) == 1 and parts[0][1] is obj:
        return None
    try:
        name = _name_of(obj)
    except TypeError:  # not a registered class: the graph alone describes it
        return None
    flat = [p for _, layer in parts for p in layer.params]
    index = []
    for p in obj.params:
        hit = next((i for i, q in enumerate(flat) if q is p), None)
        if hit is None:
            return None
        index.append(hit)
    return {
        _META_CLASS: name,
        _META_CONFIG: json.dumps(obj.get_config()),
        _META_PARAMS: json.dumps(index),
    }


# ---- import -----------------------------------------------------------------------------------


def _attrs(node):
    onnx = _onnx()
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


def _decode(v):
    return v.decode() if isinstance(v, bytes) else v


def import_onnx(path):
    """Read a graph of ONNX ``RNN`` / ``LSTM`` / ``GRU`` (any direction), ``Gather``
    (embedding), ``MatMul`` + ``Add`` (affine) back into fastrnn objects.

    Returns the object ``export`` wrote when the graph carries fastrnn's metadata and the class is
    known; otherwise the single layer, a ``fastrnn.models.Stack`` of recurrent layers, or a list
    of the layers in graph order.  Raises ValueError for operators or attributes fastrnn has no
    counterpart for (naming them).  A bidirectional operator becomes a ``Bidirectional``
    (merge "sum" when its output feeds a ReduceSum, else "concat").  A file that is not an ONNX
    model (corrupt, truncated, another format) or whose weights fastrnn's layers refuse (shapes,
    dtypes, NaN) is a ValueError naming `path`; a missing file, the OSError of opening it.
    """
    onnx = _onnx()
    numpy_helper = onnx.numpy_helper
    model = _load_model(onnx, path)
    graph = model.graph
    try:
        inits = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
        consts = dict(inits)
        for n in graph.node:  # Constant nodes: values like an initializer's
            if n.op_type == "Constant" and n.output:
                consts[n.output[0]] = numpy_helper.to_array(_attrs(n)["value"])
    except Exception as e:  # (onnx's own errors: a tensor that does not decode, say)
        raise ValueError(
            f"{path}: an initializer or Constant of the graph does not read ({e})"
        ) from e
    parts = []  # (kind, what it holds, the node: for errors)
    pending_matmul = {}  # MatMul output name -> W
    # a bidirectional operator's Y summed over its direction axis: merge="sum"
    summed = {n.input[0] for n in graph.node if n.op_type == "ReduceSum" and n.input}
    bidirectional_outputs = set()
    meta = {p.key: p.value for p in model.metadata_props}
    for n in graph.node:
        op = n.op_type
        if n.name.startswith("pool/"):
            if _META_CLASS not in meta:
                raise ValueError(
                    f"{path}: node {n.name!r} belongs to a pooling head, which import_onnx "
                    "rebuilds only from fastrnn's metadata (missing here)"
                )
            continue  # the pooling head: rebuilt by the model's from_config
        if op == "ReduceSum" and n.input and n.input[0] in bidirectional_outputs:
            continue  # the merge of a bidirectional layer's directions
        if op in (
            "Transpose",
            "Squeeze",
            "Unsqueeze",
            "Identity",
            "Constant",
            "Reshape",
            "Cast",
            "Dropout",
        ):
            continue  # layout only
        if op in ("Gather", "MatMul") and len(n.input) < 2:
            raise ValueError(f"{path}: {op} node {n.name!r} has {len(n.input)} inputs, not 2")
        if op == "Gather":
            if n.input[0] not in inits:
                raise ValueError(f"{path}: Gather node {n.name!r} does not read an initializer")
            parts.append(("embedding", inits[n.input[0]], n))
        elif op == "MatMul":
            if n.input[1] not in inits:
                raise ValueError(
                    f"{path}: MatMul node {n.name!r} does not multiply by an initializer"
                )
            if not n.output:
                raise ValueError(f"{path}: MatMul node {n.name!r} has no output")
            pending_matmul[n.output[0]] = inits[n.input[1]]
            parts.append(("affine", [n.output[0], inits[n.input[1]], None, None], n))
        elif op == "Add":
            src = [i for i in n.input if i in pending_matmul]
            bias = [i for i in n.input if i in inits]
            if not src or not bias:
                raise ValueError(f"{path}: Add node {n.name!r} is not the bias of a MatMul")
            for kind, spec, _ in parts:
                if kind == "affine" and spec[0] == src[0]:
                    spec[2], spec[3] = inits[bias[0]], n  # (its node named in errors)
        elif op in _KINDS:
            merge = "sum" if n.output and n.output[0] in summed else "concat"
            layer = _recurrent_from_node(path, n, inits, merge)
            if n.output and getattr(layer, "merge", None) is not None:
                bidirectional_outputs.add(n.output[0])
            parts.append(("recurrent", layer, n))
        else:
            raise ValueError(f"{path}: operator {op} ({n.name!r}) has no fastrnn counterpart")
    layers = []
    for kind, spec, node in parts:
        try:
            if kind == "embedding":
                from ..layers.lm import TimeEmbedding

                layers.append(TimeEmbedding(np.ascontiguousarray(spec)))
            elif kind == "affine":
                from ..layers.lm import TimeAffine

                _, W, b, _ = spec
                if W.ndim != 2:
                    raise ValueError(f"W must be a 2-D matrix, got shape {W.shape}")
                b = np.zeros(W.shape[1], W.dtype) if b is None else b.reshape(-1)
                layers.append(TimeAffine(np.ascontiguousarray(W), np.ascontiguousarray(b)))
            else:
                layers.append(spec)
        except (ValueError, TypeError) as e:
            where = f"{node.op_type} node {node.name!r}"
            if kind == "affine" and spec[3] is not None:
                where += f" and its bias, Add node {spec[3].name!r}"
            raise ValueError(f"{path}: {where}: {e}") from None
    if not layers:
        raise ValueError(f"{path}: the graph holds no layer fastrnn can read")
    if _META_CLASS in meta:
        return _rebuild(path, meta, layers)
    if len(layers) == 1:
        return layers[0]
    if all(k == "recurrent" for k, _ in parts):
        from ._stack import make_stack

        return make_stack(layers)
    return layers


def _rebuild(path, meta, layers):
    from ..io import _REGISTRY, _import_providers

    name = meta[_META_CLASS]
    cls = _REGISTRY.get(name)
    if cls is None:
        _import_providers()
        cls = _REGISTRY.get(name)
    if cls is None:
        raise ValueError(f"{path}: unknown fastrnn class {name!r} in the metadata")
    try:
        config = json.loads(meta[_META_CONFIG])
    except (KeyError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: bad fastrnn config in the metadata ({e})") from None
    flat = [p for layer in layers for p in layer.params]
    try:
        index = json.loads(meta[_META_PARAMS])
        if not isinstance(index, list) or not all(
            isinstance(i, int) and not isinstance(i, bool) and 0 <= i < len(flat) for i in index
        ):
            raise IndexError(f"entries must be in [0, {len(flat)})")
        params = [flat[i] for i in index]
    except (KeyError, json.JSONDecodeError, TypeError, IndexError) as e:
        raise ValueError(f"{path}: bad fastrnn params index in the metadata ({e})") from None
    try:
        return cls.from_config(config, params)
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise ValueError(
            f"{path}: the graph's layers do not fit the {name} of its metadata: {e}"
        ) from e


def _load_model(onnx, path):
    """The ModelProto in `path`; a ValueError naming it when the file holds no ONNX model."""
    try:
        model = onnx.load(str(path))
    except OSError:
        raise  # (a missing or unreadable file: the OSError names it)
    except Exception as e:  # protobuf's DecodeError and onnx's own: not an ONNX model
        raise ValueError(
            f"{path}: not an ONNX model (corrupt, truncated or another format: "
            f"{type(e).__name__}: {e})"
        ) from None
    if not model.HasField("graph"):
        raise ValueError(
            f"{path}: not an ONNX model (it holds no graph: an empty file or another format?)"
        )
    return model


def _recurrent_from_node(path, n, inits, merge="concat"):
    kind = _KINDS[n.op_type]
    attrs = {k: _decode(v) for k, v in _attrs(n).items()}
    direction = attrs.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise ValueError(
            f"{path}: node {n.name!r} has direction {direction!r}; expected forward, reverse "
            "or bidirectional"
        )
    dirs = 2 if direction == "bidirectional" else 1
    if attrs.get("layout", 0) != 0 or attrs.get("clip") is not None or attrs.get("input_forget", 0):
        raise ValueError(
            f"{path}: node {n.name!r} uses layout, clip or input_forget, which "
            "fastrnn does not have"
        )
    acts = [_decode(a).lower() for a in attrs.get("activations", [])]
    default = {"rnn": ["tanh"], "lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"]}[
        kind
    ]
    nonlinearity = "tanh"
    if kind == "rnn" and acts in (["relu"] * dirs,):
        nonlinearity = "relu"
    elif acts and acts != default * dirs:
        raise ValueError(
            f"{path}: node {n.name!r} has activations {acts}; fastrnn's {kind} uses {default}"
        )
    ins = list(n.input) + [""] * (8 - len(n.input))
    for i, what in ((5, "initial_h"), (6, "initial_c"), (7, "P (peepholes)")):
        if ins[i]:
            raise ValueError(
                f"{path}: node {n.name!r} has input {what}, which fastrnn's layers "
                "do not take from the graph"
            )
    try:
        W, R = inits[ins[1]], inits[ins[2]]
    except KeyError:
        raise ValueError(
            f"{path}: node {n.name!r} does not read W and R from initializers"
        ) from None
    B = inits.get(ins[3]) if ins[3] else None
    gates = len(_ONNX_GATES[kind])
    if W.ndim != 3 or W.shape[0] != dirs or R.ndim != 3 or R.shape[0] != dirs:
        raise ValueError(
            f"{path}: node {n.name!r} (direction {direction}) W / R must be "
            f"[{dirs}, gates*H, ...], got {W.shape} / {R.shape}"
        )
    H = R.shape[2]
    if attrs.get("hidden_size", H) != H or W.shape[1] != gates * H or R.shape[1] != gates * H:
        raise ValueError(
            f"{path}: node {n.name!r} shapes W {W.shape}, R {R.shape} do not fit "
            f"hidden_size {attrs.get('hidden_size')}"
        )
    if B is None:
        B = np.zeros((dirs, 2 * gates * H), W.dtype)
    if B.shape != (dirs, 2 * gates * H):
        raise ValueError(
            f"{path}: node {n.name!r} B must be [{dirs}, {2 * gates * H}], got {B.shape}"
        )
    reset_after = kind == "gru" and bool(attrs.get("linear_before_reset", 0))
    layers = []
    for d in range(dirs):
        blocks = from_rows(
            _ONNX_GATES[kind], W[d], R[d], B[d, : gates * H], B[d, gates * H :], _NEGATED[kind]
        )
        reverse = direction == "reverse" or d == 1
        try:
            layers.append(
                build(
                    kind,
                    blocks,
                    reset_after=reset_after,
                    nonlinearity=nonlinearity,
                    reverse=reverse,
                )
            )
        except (ValueError, TypeError) as e:
            raise ValueError(f"{path}: node {n.name!r} ({n.op_type}): {e}") from None
    if dirs == 1:
        return layers[0]
    from ..layers.bidirectional import Bidirectional

    return Bidirectional(layers[0], layers[1], merge)
