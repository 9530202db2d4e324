"""A whole ONNX model, run node by node with qlib's operators as ONNX Runtime's CPU provider runs it.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``).

ONNX Runtime does not run the graph it is given: with the default ``SessionOptions`` it first
rewrites it (``ORT_ENABLE_ALL``): it folds constants, fuses each ``DequantizeLinear -> Conv ->
QuantizeLinear`` into one ``QLinearConv`` (``Gemm`` into ``QGemm``, ``MatMul`` into
``QLinearMatMul``, ``Add`` into ``QLinearAdd``), quantizes a float bias to int32, and moves
convolutions to channels-last layout (``com.microsoft`` ``QLinearConv`` with ``channels_last``,
``NhwcMaxPool``, ``Transpose`` nodes around them). ``run_onnx`` asks ORT for that graph (a session
with ``optimized_model_filepath``, which writes the graph it will run) and runs its nodes in order
with qlib: every integer node through ``qlib.onnx_qdq``, ``qlib.onnx_runtime``, ``qlib.onnx_conv``,
``qlib.onnx_pool`` and ``qlib.onnx_tables``, nodes that only move codes (``Transpose``, ``Reshape``, ``MaxPool``...) in
torch, and float nodes in float32 as ORT computes them: a ``Gemm``, ``MatMul`` or ``Conv`` as MLAS
does, through ``qlib.onnx_sgemm`` (a ``Conv`` unfolded channel by channel, kernel position fastest,
as ``MlasConv`` does; the ``Gemm``'s bias or ``FusedConv``'s ``Sum`` input before the products, the
``Conv``'s bias after), a ``ReduceMean`` over trailing axes (a global average pool) as Eigen
sums it, through ``qlib.onnx_reduce`` (from the caller's buffer when it reads a graph input, as ORT
does), and a float ``AveragePool`` through ``qlib.onnx_float_pool``. Measured on the models of ``tests/test_onnx_model.py`` and on single nodes;
float products are modelled on one thread (the limit ``qlib.onnx_sgemm`` states), and a float
convolution for outputs small enough for one im2col buffer.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from qlib.integer_model import Activation, Run
from qlib.onnx_conv import conv_integer, qlinear_add, qlinear_conv
from qlib.onnx_float_pool import average_pool
from qlib.onnx_pool import qlinear_average_pool, qlinear_global_average_pool
from qlib.onnx_qdq import dequantize_linear, quantize_linear
from qlib.onnx_reduce import reduce_mean
from qlib.onnx_runtime import matmul_integer, qgemm, qlinear_matmul
from qlib.onnx_sgemm import sgemm
from qlib.onnx_tables import qlinear_concat, qlinear_sigmoid

# ONNX's tensor element types that qlib meets, as torch dtypes
ONNX_DTYPES = {1: torch.float32, 2: torch.uint8, 3: torch.int8, 5: torch.int16, 6: torch.int32, 7: torch.int64}


@dataclass
class _Node:
    """What a handler sees: the node's inputs (None where absent), its attributes, and the run's settings."""

    inputs: list
    attrs: dict
    pairs_saturate: bool | None
    constant: tuple[bool, ...] = ()  # which inputs are initializers (ORT packs a constant matrix ahead)
    misalignment: int = 0  # input 0's byte offset from a 16-byte boundary: a graph input's, else 0


def optimized_model(model: Any) -> Any:
    """The graph ONNX Runtime runs for ``model`` (an ``onnx.ModelProto`` or a path) with default ``SessionOptions``.

    An ``onnx.ModelProto``, as ORT wrote it (``optimized_model_filepath``),
    for this CPU: ORT warns that such a graph may hold kernels chosen for it.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> from onnx import TensorProto, helper
    >>> graph = helper.make_graph(
    ...     [helper.make_node("Identity", ["x"], ["y"]), helper.make_node("Relu", ["y"], ["z"])], "g",
    ...     [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])],
    ...     [helper.make_tensor_value_info("z", TensorProto.FLOAT, [3])],
    ... )
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    >>> [node.op_type for node in optimized_model(model).graph.node]  # ORT drops the Identity
    ['Relu']
    """
    import onnx
    import onnxruntime as ort  # type: ignore[import-untyped]

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))  # with the weights of an external data file beside it
    data = model.SerializeToString()
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimized.onnx")
        options = ort.SessionOptions()
        options.optimized_model_filepath = path
        options.log_severity_level = 3  # ORT warns that the saved graph suits this CPU only: so it does
        ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        return onnx.load(path)


def _scalar(t: torch.Tensor | None) -> Any:
    """A quantization parameter as the op functions take it: a number, or a 1-d tensor of several."""
    if t is None:
        return None
    if t.numel() == 1:
        return t.item()
    return t.flatten()


def _ints(values) -> list[int] | None:
    return None if values is None else [int(v) for v in values]


def _conv_attrs(attrs: dict, rank: int) -> dict:
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise ValueError(f"qlib runs convolutions with explicit pads only; got auto_pad={attrs['auto_pad']!r}")
    return {
        "strides": _ints(attrs.get("strides")),
        "pads": _ints(attrs.get("pads")),
        "dilations": _ints(attrs.get("dilations")),
        "group": int(attrs.get("group", 1)),
    }


def _channels_last(attrs: dict, run: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``run`` on NCHW; the ``channels_last`` form of ORT's layout optimizer takes and gives NHWC."""
    if not attrs.get("channels_last", 0):
        return run(x)
    return run(x.movedim(-1, 1)).movedim(1, -1).contiguous()


def _quantize(node: _Node) -> torch.Tensor:
    x, scale, zero_point = (node.inputs + [None, None])[:3]
    dtype = torch.uint8 if zero_point is None else zero_point.dtype
    axis = int(node.attrs.get("axis", 1)) if scale.numel() > 1 else None
    return quantize_linear(x, _scalar(scale), 0 if zero_point is None else _scalar(zero_point), dtype, axis)


def _dequantize(node: _Node) -> torch.Tensor:
    q, scale, zero_point = (node.inputs + [None, None])[:3]
    axis = int(node.attrs.get("axis", 1)) if scale.numel() > 1 else None
    return dequantize_linear(q, _scalar(scale), 0 if zero_point is None else _scalar(zero_point), axis)


def _qlinear_conv(node: _Node) -> torch.Tensor:
    x, sx, zx, w, sw, zw, sy, zy, bias = (node.inputs + [None])[:9]
    attrs = _conv_attrs(node.attrs, w.dim() - 2)

    def conv(t: torch.Tensor) -> torch.Tensor:
        return qlinear_conv(
            t, _scalar(sx), _scalar(zx), w, _scalar(sw), _scalar(zw), _scalar(sy), _scalar(zy), bias,
            **attrs, pairs_saturate=node.pairs_saturate,
        )  # fmt: skip

    return _channels_last(node.attrs, conv, x)


def _conv_integer(node: _Node) -> torch.Tensor:
    x, w, zx, zw = (node.inputs + [None, None])[:4]
    zx, zw = 0 if zx is None else _scalar(zx), 0 if zw is None else _scalar(zw)
    return conv_integer(x, w, zx, zw, **_conv_attrs(node.attrs, w.dim() - 2))


def _qlinear_matmul(node: _Node) -> torch.Tensor:
    a, sa, za, b, sb, zb, sy, zy = node.inputs[:8]
    return qlinear_matmul(
        a, _scalar(sa), _scalar(za), b, _scalar(sb), _scalar(zb), _scalar(sy), _scalar(zy),
        pairs_saturate=node.pairs_saturate,
    )  # fmt: skip


def _matmul_integer(node: _Node) -> torch.Tensor:
    a, b, za, zb = (node.inputs + [None, None])[:4]
    za, zb = 0 if za is None else _scalar(za), 0 if zb is None else _scalar(zb)
    return matmul_integer(a, b, za, zb, pairs_saturate=node.pairs_saturate)


def _qgemm(node: _Node) -> torch.Tensor:
    a, sa, za, b, sb, zb, c, sy, zy = (node.inputs + [None] * 3)[:9]
    return qgemm(
        a, _scalar(sa), _scalar(za), b, _scalar(sb), _scalar(zb), c, _scalar(sy), _scalar(zy),
        alpha=float(node.attrs.get("alpha", 1.0)), trans_a=bool(node.attrs.get("transA", 0)),
        trans_b=bool(node.attrs.get("transB", 0)), pairs_saturate=node.pairs_saturate,
    )  # fmt: skip


def _qlinear_add(node: _Node) -> torch.Tensor:
    a, sa, za, b, sb, zb, sc, zc = node.inputs[:8]
    return qlinear_add(a, _scalar(sa), _scalar(za), b, _scalar(sb), _scalar(zb), _scalar(sc), _scalar(zc))


def _qlinear_average_pool(node: _Node) -> torch.Tensor:
    x, sx, zx, sy, zy = (node.inputs + [None, None])[:5]
    attrs = node.attrs
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
        raise ValueError(f"qlib runs QLinearAveragePool with explicit pads only; got auto_pad={attrs['auto_pad']!r}")
    zx, zy = 0 if zx is None else _scalar(zx), 0 if zy is None else _scalar(zy)

    def pool(t: torch.Tensor) -> torch.Tensor:
        return qlinear_average_pool(
            t, _scalar(sx), zx, _scalar(sy), zy, _ints(attrs["kernel_shape"]) or [], strides=_ints(attrs.get("strides")),
            pads=_ints(attrs.get("pads")), count_include_pad=bool(attrs.get("count_include_pad", 0)),
            ceil_mode=bool(attrs.get("ceil_mode", 0)),
        )  # fmt: skip

    return _channels_last(attrs, pool, x)


def _qlinear_global_average_pool(node: _Node) -> torch.Tensor:
    x, sx, zx, sy, zy = (node.inputs + [None, None])[:5]
    zx, zy = 0 if zx is None else _scalar(zx), 0 if zy is None else _scalar(zy)
    return _channels_last(node.attrs, lambda t: qlinear_global_average_pool(t, _scalar(sx), zx, _scalar(sy), zy), x)


def _qlinear_concat(node: _Node) -> torch.Tensor:
    sy, zy, *rest = node.inputs
    parts = [(rest[i], _scalar(rest[i + 1]), _scalar(rest[i + 2])) for i in range(0, len(rest), 3)]
    return qlinear_concat(parts, _scalar(sy), _scalar(zy), int(node.attrs["axis"]))


def _qlinear_sigmoid(node: _Node) -> torch.Tensor:
    x, sx, zx, sy, zy = (node.inputs + [None, None])[:5]
    zx, zy = 0 if zx is None else _scalar(zx), 0 if zy is None else _scalar(zy)
    return qlinear_sigmoid(x, _scalar(sx), zx, _scalar(sy), zy)


def _max_pool(node: _Node) -> torch.Tensor:
    x = node.inputs[0]
    kernel = [int(k) for k in node.attrs["kernel_shape"]]
    rank = len(kernel)
    strides = _ints(node.attrs.get("strides")) or [1] * rank
    dilations = _ints(node.attrs.get("dilations")) or [1] * rank
    pads = _ints(node.attrs.get("pads")) or [0] * (2 * rank)
    if node.attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID") or rank != 2:
        raise ValueError("qlib runs 2-d MaxPool with explicit pads only")
    nhwc = node.attrs.get("_nhwc", False)
    t = (x.movedim(-1, 1) if nhwc else x).double()
    t = torch.nn.functional.pad(t, (pads[1], pads[3], pads[0], pads[2]), value=-float("inf"))  # padding never wins
    y = torch.nn.functional.max_pool2d(
        t, kernel, strides, 0, dilations, ceil_mode=bool(node.attrs.get("ceil_mode", 0))
    ).to(x.dtype)
    return y.movedim(1, -1).contiguous() if nhwc else y


def _nhwc_max_pool(node: _Node) -> torch.Tensor:
    return _max_pool(_Node(node.inputs, {**node.attrs, "_nhwc": True}, node.pairs_saturate))


def _gemm(node: _Node) -> torch.Tensor:
    a, b, c = (node.inputs + [None])[:3]
    alpha, beta = float(node.attrs.get("alpha", 1.0)), float(node.attrs.get("beta", 1.0))
    if alpha != 1.0 or beta not in (0.0, 1.0) or node.attrs.get("transA", 0):
        raise ValueError(f"qlib runs a float Gemm with alpha 1, beta 0 or 1 and no transA; got {node.attrs}")
    trans_b = bool(node.attrs.get("transB", 0))
    b = b.t() if trans_b else b
    start = None if c is None or beta == 0.0 else c.float().expand(a.shape[0], b.shape[1]).contiguous()
    return sgemm(a.float(), b.float(), start, packed=node.constant[1], b_transposed=trans_b)


def _matmul(node: _Node) -> torch.Tensor:
    a, b = node.inputs[:2]
    if a.dtype != torch.float32 or b.dim() != 2:
        raise ValueError("qlib runs a float32 MatMul by a 2-d matrix only (integer products are MatMulInteger)")
    rows = a.reshape(-1, a.shape[-1])
    return sgemm(rows, b, packed=node.constant[1]).reshape(*a.shape[:-1], b.shape[1])


def _conv(node: _Node) -> torch.Tensor:
    """A float ``Conv`` (or ``com.microsoft.FusedConv``: its ``Sum`` input and a ReLU) as MLAS's im2col and SGEMM."""
    x, w, bias, total = (node.inputs + [None, None])[:4]
    attrs = _conv_attrs(node.attrs, w.dim() - 2)
    if x.dim() != 4 or attrs["group"] != 1:
        raise ValueError("qlib runs float convolutions of 2-d inputs with one group only")
    pads, strides = attrs["pads"] or [0, 0, 0, 0], attrs["strides"] or [1, 1]
    dilations = attrs["dilations"] or [1, 1]
    padded = torch.nn.functional.pad(x, (pads[1], pads[3], pads[0], pads[2]))
    kernel = tuple(w.shape[2:])
    # [N, C * KK, L]: channel slowest, as MLAS's im2col
    cols = torch.nn.functional.unfold(padded, kernel, dilation=tuple(dilations), stride=tuple(strides))
    n, m = x.shape[0], w.shape[0]
    out_h = (padded.shape[2] - dilations[0] * (kernel[0] - 1) - 1) // strides[0] + 1
    filters = w.reshape(m, -1)
    y = torch.stack(
        [sgemm(filters, cols[i], None if total is None else total[i].reshape(m, -1).contiguous()) for i in range(n)]
    )
    if bias is not None:
        y = y + bias.view(1, m, 1)
    activation = node.attrs.get("activation", b"")
    activation = activation.decode() if isinstance(activation, bytes) else activation
    if activation == "Relu":
        y = torch.relu(y)
    elif activation:
        raise ValueError(f"qlib runs FusedConv with a Relu or no activation; got {activation}")
    return y.reshape(n, m, out_h, -1)


def _reshape(node: _Node) -> torch.Tensor:
    x, shape = node.inputs[:2]
    dims = [int(d) for d in shape]
    if not node.attrs.get("allowzero", 0):
        dims = [x.shape[i] if d == 0 else d for i, d in enumerate(dims)]
    return x.reshape(dims)


def _flatten(node: _Node) -> torch.Tensor:
    x = node.inputs[0]
    axis = int(node.attrs.get("axis", 1)) % max(1, x.dim())
    return x.reshape(int(torch.tensor(x.shape[:axis]).prod()), -1)


def _transpose(node: _Node) -> torch.Tensor:
    x = node.inputs[0]
    perm = _ints(node.attrs.get("perm")) or list(reversed(range(x.dim())))
    return x.permute(perm).contiguous()


def _relu(node: _Node) -> torch.Tensor:
    return torch.relu(node.inputs[0])


def _clip(node: _Node) -> torch.Tensor:
    x, low, high = (node.inputs + [None, None])[:3]
    if low is not None:
        x = torch.maximum(x, low.to(x.dtype))
    if high is not None:
        x = torch.minimum(x, high.to(x.dtype))
    return x


def _float_add(node: _Node) -> torch.Tensor:
    a, b = node.inputs[:2]
    if a.dtype != torch.float32 or b.dtype != torch.float32:
        raise ValueError("qlib runs a float32 Add only (an integer one is com.microsoft.QLinearAdd)")
    return a + b


def _average_pool(node: _Node) -> torch.Tensor:
    x, attrs = node.inputs[0], node.attrs
    if x.dtype != torch.float32 or x.dim() != 4:
        raise ValueError(f"qlib runs a float32 2-d AveragePool only; got {x.dtype}, {x.dim()}-d")
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID") or attrs.get("ceil_mode", 0):
        raise ValueError("qlib runs AveragePool with explicit pads and ceil_mode=0 only")
    if any(d != 1 for d in _ints(attrs.get("dilations")) or []):
        raise ValueError(f"qlib runs AveragePool without dilations; got {attrs['dilations']}")
    return average_pool(
        x, _ints(attrs["kernel_shape"]) or [], _ints(attrs.get("strides")), _ints(attrs.get("pads")),
        bool(attrs.get("count_include_pad", 0)),
    )  # fmt: skip


def _reduce_mean(node: _Node) -> torch.Tensor:
    x, axes = (node.inputs + [None])[:2]
    if x.dtype != torch.float32:
        raise ValueError(f"qlib runs a float32 ReduceMean only; got {x.dtype}")
    axes = _ints(node.attrs.get("axes")) if axes is None else [int(a) for a in axes]  # an attribute before opset 18
    if not axes:
        if node.attrs.get("noop_with_empty_axes", 0):
            return x
        axes = list(range(x.dim()))
    return reduce_mean(x, axes, bool(node.attrs.get("keepdims", 1)), misalignment=node.misalignment)


# (domain, op type) -> handler; "moves codes": the output keeps input 0's scale and zero point
HANDLERS: dict[tuple[str, str], tuple[Callable[[_Node], torch.Tensor], bool]] = {
    ("", "QuantizeLinear"): (_quantize, False),
    ("", "DequantizeLinear"): (_dequantize, False),
    ("", "QLinearConv"): (_qlinear_conv, False),
    ("com.microsoft", "QLinearConv"): (_qlinear_conv, False),
    ("", "ConvInteger"): (_conv_integer, False),
    ("", "QLinearMatMul"): (_qlinear_matmul, False),
    ("", "MatMulInteger"): (_matmul_integer, False),
    ("com.microsoft", "QGemm"): (_qgemm, False),
    ("com.microsoft", "QLinearAdd"): (_qlinear_add, False),
    ("com.microsoft", "QLinearAveragePool"): (_qlinear_average_pool, False),
    ("com.microsoft", "QLinearConcat"): (_qlinear_concat, False),
    ("com.microsoft", "QLinearSigmoid"): (_qlinear_sigmoid, False),
    ("com.microsoft", "QLinearGlobalAveragePool"): (_qlinear_global_average_pool, False),
    ("", "MaxPool"): (_max_pool, True),
    ("com.microsoft", "NhwcMaxPool"): (_nhwc_max_pool, True),
    ("", "Reshape"): (_reshape, True),
    ("", "Flatten"): (_flatten, True),
    ("", "Transpose"): (_transpose, True),
    ("", "Identity"): (lambda node: node.inputs[0], True),
    ("", "Relu"): (_relu, False),
    ("", "Clip"): (_clip, False),
    ("", "Add"): (_float_add, False),
    ("", "ReduceMean"): (_reduce_mean, False),
    ("", "AveragePool"): (_average_pool, False),
    ("", "Gemm"): (_gemm, False),
    ("", "MatMul"): (_matmul, False),
    ("", "Conv"): (_conv, False),
    ("com.microsoft", "FusedConv"): (_conv, False),
}


def supported_ops() -> list[str]:
    """The ONNX ops ``run_onnx`` runs, ``domain.op`` for those outside the default domain.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> "com.microsoft.QLinearAdd" in supported_ops() and "QLinearConv" in supported_ops()
    True
    """
    return [f"{domain}.{op}" if domain else op for domain, op in HANDLERS]


def _tensor(array) -> torch.Tensor:
    import numpy as np

    return torch.from_numpy(np.array(array, copy=True))


def _attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _node_qparams(op: tuple[str, str], node, values: dict) -> tuple[object, object] | None:
    """The scale and zero point of an integer node's output codes, from its inputs (None for other nodes)."""
    names = list(node.input)
    where = {
        ("", "QuantizeLinear"): (1, 2),
        ("", "QLinearConv"): (6, 7),
        ("com.microsoft", "QLinearConv"): (6, 7),
        ("", "QLinearMatMul"): (6, 7),
        ("com.microsoft", "QGemm"): (7, 8),
        ("com.microsoft", "QLinearAdd"): (6, 7),
        ("com.microsoft", "QLinearAveragePool"): (3, 4),
        ("com.microsoft", "QLinearConcat"): (0, 1),
        ("com.microsoft", "QLinearSigmoid"): (3, 4),
        ("com.microsoft", "QLinearGlobalAveragePool"): (3, 4),
    }.get(op)
    if where is None or len(names) <= where[0] or not names[where[0]]:
        return None
    scale = _scalar(values[names[where[0]]])
    zero_point = _scalar(values[names[where[1]]]) if len(names) > where[1] and names[where[1]] else 0
    return scale, zero_point


def _misalignment(value: object) -> int:
    """Where the caller's buffer starts past a 16-byte boundary: ORT runs a graph input from it, uncopied."""
    if isinstance(value, torch.Tensor):
        return value.data_ptr() % 16 if value.is_contiguous() else 0
    data = getattr(getattr(value, "ctypes", None), "data", None)
    return data % 16 if isinstance(data, int) else 0


def _inputs_by_name(graph, x: object) -> tuple[dict[str, torch.Tensor], dict[str, int]]:
    """The graph inputs as tensors, and each caller's buffer's offset from a 16-byte boundary."""
    initializers = {init.name for init in graph.initializer}
    names = [i.name for i in graph.input if i.name not in initializers]
    if isinstance(x, dict):
        missing = [name for name in names if name not in x]
        if missing:
            raise ValueError(f"x has no value for the model's input(s) {missing}; the model's inputs: {names}")
        given = x
    else:
        if len(names) != 1:
            raise ValueError(f"the model has {len(names)} inputs {names}: pass x as a dict by input name")
        given = {names[0]: x}
    out = {}
    for name in names:
        value = given[name]
        out[name] = value.detach().contiguous() if isinstance(value, torch.Tensor) else _tensor(value)
    return out, {name: _misalignment(given[name]) for name in names}


def run_onnx(model: Any, x: object, *, pairs_saturate: bool | None = None, optimize: bool = True) -> Run:
    """Run an ONNX model on ``x`` with qlib's operators, node by node as ONNX Runtime runs it.

    ``model`` is an ``onnx.ModelProto`` or the path of a ``.onnx`` file; ``x``
    one input tensor, or a dict by input name. The nodes are those of the
    graph ORT runs with default ``SessionOptions`` (:func:`optimized_model`),
    and every node's result equals ORT's bit for bit where qlib models its
    kernel (the module docstring lists them). ``pairs_saturate`` chooses the
    CPU for ORT's uint8 x int8 products, as in :func:`qlib.matmul_integer`
    (None: this one). ``optimize=False`` runs the nodes as given: a graph ORT
    already optimized, on another CPU say. The result's ``activations`` are
    keyed by each node's output name, with the codes, scale and zero point of
    integer results (None for float ones); ``returned`` is the model's first
    output.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> from onnx import TensorProto, helper
    >>> node = helper.make_node("QuantizeLinear", ["x", "s", "z"], ["q"])
    >>> scale, zero = helper.make_tensor("s", TensorProto.FLOAT, [], [0.5]), helper.make_tensor("z", 2, [], [128])
    >>> x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, [3])
    >>> q_info = helper.make_tensor_value_info("q", TensorProto.UINT8, [3])
    >>> graph = helper.make_graph([node], "quantize", [x_info], [q_info], [scale, zero])
    >>> model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 21)], ir_version=10)
    >>> run_onnx(model, torch.tensor([0.25, 0.75, -1.0])).returned.codes  # 0.5 and 1.5 to even
    tensor([128, 130, 126], dtype=torch.uint8)
    """
    import onnx

    if not isinstance(model, onnx.ModelProto):
        model = onnx.load(os.fspath(model))
    graph = (optimized_model(model) if optimize else model).graph
    values: dict[str, torch.Tensor] = {
        init.name: _tensor(onnx.numpy_helper.to_array(init)) for init in graph.initializer
    }
    initializers = set(values)
    inputs_given, misalignments = _inputs_by_name(graph, x)
    values.update(inputs_given)
    qparams: dict[str, tuple[object, object]] = {}
    result = Run()
    for node in graph.node:
        op = (node.domain if node.domain != "ai.onnx" else "", node.op_type)
        if op == ("", "Constant"):
            values[node.output[0]] = _tensor(onnx.numpy_helper.to_array(node.attribute[0].t))
            continue
        if op not in HANDLERS:
            raise ValueError(
                f"qlib.run does not model the ONNX op {'.'.join(filter(None, op))} (node {node.name!r}) of ORT's "
                f"optimized graph; it runs {', '.join(supported_ops())}"
            )
        handler, moves_codes = HANDLERS[op]
        inputs = [values[name] if name else None for name in node.input]
        constant = tuple(name in initializers for name in node.input)
        try:
            misalignment = misalignments.get(node.input[0], 0) if node.input else 0
            out = handler(_Node(inputs, _attributes(node), pairs_saturate, constant, misalignment))
        except Exception as error:
            raise type(error)(f"qlib.run: ONNX node {node.name!r} ({node.op_type}): {error}") from error
        name = node.output[0]
        values[name] = out
        if moves_codes and node.input[0] in qparams and not out.is_floating_point():
            qparams[name] = qparams[node.input[0]]
        elif not out.is_floating_point() and (found := _node_qparams(op, node, values)) is not None:
            qparams[name] = found
        scale, zero_point = qparams.get(name, (None, None))
        result.activations[name] = Activation(name, node.op_type, out, scale, zero_point)  # type: ignore[arg-type]
    output = graph.output[0].name
    result.returned = result.activations.get(output, Activation(output, "input", values[output], None, None))
    return result
