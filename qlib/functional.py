"""The rest of ``FloatFunctional``'s quantized ops on codes, as torch computes them on x86 CPUs:
``mul`` (and ``mul_relu``), ``cat`` (and ``cat_relu``, ``torch.cat``), ``add_scalar`` and
``mul_scalar``. Its ``add`` and ``add_relu`` are ``qlib.add``.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

After conversion a ``torch.ao.nn.quantized.FloatFunctional`` is a ``QFunctional``, whose methods
call ``torch.ops.quantized.mul``, ``cat``, ``add_scalar`` and ``mul_scalar``: mobilenet_v3's
squeeze-excitation blocks multiply, shufflenet_v2, googlenet and inception_v3 concatenate. Each
function takes codes with the quantized tensors' strides
(``torch.empty_strided(q.shape, q.stride(), dtype=torch.uint8).copy_(q.int_repr())``): ``mul``'s
vector body and scalar tail, and ``cat``'s kernel, follow the layout. Each returns codes laid out
as torch's output.

The formulas were derived from a main-branch copy of PyTorch's sources (the links name the files
as the 2.13.0 and 2.14.1 binaries' own error messages do; older trees call ``TensorShape.cpp``'s quantized cat ``qconcat.cpp``) and
measured element by element against torch 2.13.0 and 2.14.1, with the AVX-512 and the AVX2
kernels, on the x86, fbgemm, onednn and qnnpack engines, which all run the same kernels here.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from qlib import checks
from qlib.elementwise_kernels import (
    VECTOR_CODES,
    boolean,
    broadcast_strides,
    call_arguments,
    channels_last_contiguous,
    dense_strides,
    dequantize_val,
    eight_bit_codes,
    laid_out,
    loop_lanes,
    quantize_val,
    quantize_vec,
    requantize_from_int,
    strided_codes,
    suggested_format,
    thread_count,
    vectorized_dequantize,
    vectorized_quantize,
)
from qlib.numerics import float32, float32_reciprocal
from qlib.ranges import DTYPE_RANGES
from qlib.registry import Settings, quantized, register
from qlib.releases import torch_release

CAT_LANES = 8  # channels per vector of qcat_nhwc_kernel's last block: the rest take the scalar tail


def mul(
    a: torch.Tensor,
    a_scale: float,
    a_zero_point: int,
    b: torch.Tensor,
    b_scale: float,
    b_zero_point: int,
    scale: float,
    zero_point: int,
    relu: bool = False,
    *,
    release: str | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """The codes of ``torch.ops.quantized.mul`` (``relu=True``: ``mul_relu``; ``QFunctional.mul``), bit for bit.

    ``QMul::run`` in https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qmul.cpp
    and ``qmul_kernel`` in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp:
    ``m = float32(float32(a_scale) * float32(b_scale)) * (1.0f / float32(scale))`` in float32,
    ``c = (a - a_zero_point) * (b - b_zero_point)`` in int32, and ``requantize_from_int``:
    ``zero_point + rint(float32(float(c) * m))``, saturated (``relu``: then ``max(., zero_point)``).
    The vector body and the scalar tail agree but where ``c * m`` leaves int32: there the body gives
    ``-2**31 + zero_point``, saturated (the dtype's lowest code), the tail the far end of the range.
    No release or CPU dependence.

    ``a`` and ``b``: uint8 (quint8) or int8 (qint8) codes of one dtype with the quantized tensors'
    strides; they broadcast (mobilenet_v3: (1, C, 1, 1) times (1, C, H, W)). The output is
    allocated in ``a``'s suggested memory format, which also decides where the vector body runs
    (``threads``: None for ``torch.get_num_threads()``). ``release`` is checked; both releases
    compute the same.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> a = torch.tensor([10, 200, 255], dtype=torch.uint8)
    >>> mul(a, 0.1, 0, torch.tensor([128], dtype=torch.uint8), 0.05, 100, 0.2, 10)
    tensor([ 17, 150, 189], dtype=torch.uint8)
    """
    dtype = _mul_operands(a, b, "mul")
    qmin, qmax = DTYPE_RANGES[dtype]
    sa = checks.scale_value(a_scale, "a_scale")
    za = checks.zero_point_value(a_zero_point, qmin, qmax, "a_zero_point")
    sb = checks.scale_value(b_scale, "b_scale")
    zb = checks.zero_point_value(b_zero_point, qmin, qmax, "b_zero_point")
    s = checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, qmin, qmax)
    relu = boolean(relu, "relu")
    torch_release(release)  # the same arithmetic in every supported release
    try:
        shape = tuple(torch.broadcast_shapes(a.shape, b.shape))
    except RuntimeError:
        raise ValueError(
            f"a and b must have shapes that broadcast, as quantized::mul requires; got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        ) from None
    layout = suggested_format(a) if len(shape) == a.dim() else torch.contiguous_format
    strides: list[list[int] | None] = [
        dense_strides(shape, layout),
        broadcast_strides(a, shape),
        broadcast_strides(b, shape),
    ]
    lanes = loop_lanes(shape, strides, VECTOR_CODES, thread_count(threads))
    f = torch.tensor([float32(sa), float32(sb), float32_reciprocal(s)], dtype=torch.float32)
    multiplier = (f[0] * f[1] * f[2]).item()
    products = (a.long() - za) * (b.long() - zb)
    codes = requantize_from_int(products.expand(shape), multiplier, z, dtype, lanes)
    if relu:
        codes = codes.clamp(min=z)
    return laid_out(codes.to(a.dtype), layout)


def cat(
    tensors: list[tuple[torch.Tensor, float, int]] | tuple[tuple[torch.Tensor, float, int], ...],
    dim: int,
    scale: float,
    zero_point: int,
    relu: bool = False,
    *,
    release: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.ops.quantized.cat`` (``relu=True``: ``cat_relu``; ``QFunctional.cat``), bit for bit.

    ``tensors`` holds ``(codes, scale, zero_point)`` of each input, codes with the quantized
    tensor's strides (uint8 for quint8, int8 for qint8, all of one dtype); the output has
    ``scale`` and ``zero_point``. ``torch.cat`` of quantized tensors is this with the first input's
    scale and zero point. ``quantized_cat_impl``
    (https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/TensorShape.cpp)
    takes one of two paths, and their codes differ:

    * ``dim == 1`` (as given, not wrapped) and every input 4-d and channels-last contiguous:
      ``qcat_nhwc_kernel`` (in
      https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp,
      an AVX2 kernel on every x86 CPU). An input with the output's scale and zero point (compared
      exactly, as doubles) is copied, unless ``relu``. Every other one is requantized pixel by pixel:
      its first ``C // 8 * 8`` channels in the vector body, ``d = fma(s, q, float32(s * -zero_point))``
      (``relu``: ``max(d, 0)``), then ATen's ``rint(d * inv) + zero_point`` with
      ``inv = float32(1.0 / scale)``, the reciprocal in double; its last ``C % 8`` channels in the
      scalar tail, ``d = float32(s) * (q - zero_point)`` and FBGEMM's scalar ``Quantize`` with
      ``inv = 1.0f / float32(scale)`` (the zero point before rounding in torch 2.13, after in 2.14).
      The output is channels-last.
    * otherwise (shufflenet's mixed layouts, another ``dim``, other ranks): every input is dequantized
      (``float32(s) * (q - zero_point)``), concatenated in float32 and quantized again with
      ``torch.quantize_per_tensor``'s arithmetic (FBGEMM's ``QuantizeAvx2``: torch 2.14
      ``rint(x * inv) + zero_point``, 2.13 ``rint(fma(x, inv, zero_point))``) -- inputs that already
      have the output's scale and zero point too, which comes back unchanged; ``relu``: then
      ``max(q, zero_point)``. The output is channels-last if every input's suggested layout is.

    ``dim``: the dimension to concatenate along (negative counts from the end); ``release`` (None:
    the installed torch) chooses FBGEMM's rounding.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> a, b = torch.tensor([[10, 20]], dtype=torch.uint8), torch.tensor([[7]], dtype=torch.uint8)
    >>> cat([(a, 0.1, 0), (b, 0.5, 5)], 1, 0.2, 3)
    tensor([[ 8, 13,  8]], dtype=torch.uint8)
    >>> tie = [(torch.tensor([[3]], dtype=torch.uint8), 0.5, 0)]  # 1.5, a tie, plus a zero point of 1
    >>> [cat(tie, 0, 1.0, 1, release=r).item() for r in ("2.13", "2.14")]
    [2, 3]
    """
    if not isinstance(tensors, (list, tuple)) or not tensors:
        raise TypeError("tensors must be a non-empty list of (codes, scale, zero_point) tuples")
    first = tensors[0][0] if isinstance(tensors[0], (tuple, list)) and tensors[0] else None
    dtype = eight_bit_codes(first, "tensors[0]'s codes", "cat")
    assert isinstance(first, torch.Tensor)  # eight_bit_codes raised otherwise
    qmin, qmax = DTYPE_RANGES[dtype]
    inputs = []
    for i, item in enumerate(tensors):
        if not isinstance(item, (tuple, list)) or len(item) != 3:
            raise TypeError(f"tensors[{i}] must be a tuple (codes, scale, zero_point); got {item!r:.80}")
        codes, s, z = item
        if eight_bit_codes(codes, f"tensors[{i}]'s codes", "cat") != dtype:
            raise TypeError(
                f"every input must hold codes of one dtype (torch checks it); got {first.dtype} and {codes.dtype}"
            )
        s = checks.scale_value(s, f"tensors[{i}]'s scale")
        z = checks.zero_point_value(z, qmin, qmax, f"tensors[{i}]'s zero_point")
        inputs.append((codes, s, z))
    ndim = inputs[0][0].dim()
    if isinstance(dim, bool) or not isinstance(dim, int) or not -ndim <= dim < ndim:
        raise ValueError(f"dim must be an int in [{-ndim}, {ndim - 1}] for {ndim}-d inputs; got {dim!r}")
    along = dim % ndim
    for i, (codes, _, _) in enumerate(inputs):
        if codes.dim() != ndim or any(
            n != m for d, (n, m) in enumerate(zip(codes.shape, inputs[0][0].shape, strict=True)) if d != along
        ):
            raise ValueError(
                f"every input must have the first one's shape but along dim {dim}; got {tuple(inputs[0][0].shape)} "
                f"and {tuple(codes.shape)} (tensors[{i}])"
            )
    s = checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, qmin, qmax)
    relu = boolean(relu, "relu")
    zero_point_first = torch_release(release) == "2.13"
    if dim == 1 and all(channels_last_contiguous(codes) for codes, _, _ in inputs):  # qcat_nhwc_kernel
        parts = [codes if (si, zi) == (s, z) and not relu else _nhwc_requantized(codes, si, zi, s, z, relu, dtype,
                 zero_point_first) for codes, si, zi in inputs]  # fmt: skip
        return laid_out(torch.cat(parts, 1), torch.channels_last)
    values = torch.cat([dequantize_val(codes, si, zi) for codes, si, zi in inputs], along)
    out = quantize_vec(values.contiguous(), float32_reciprocal(s), z, dtype, zero_point_first).view(values.shape)
    if relu:
        out = out.clamp(min=z)
    layouts = {suggested_format(codes) for codes, _, _ in inputs}
    return laid_out(out.to(dtype=inputs[0][0].dtype), layouts.pop() if len(layouts) == 1 else torch.contiguous_format)


def add_scalar(
    x: torch.Tensor, scale: float, zero_point: int, other: float, relu: bool = False, *, release: str | None = None
) -> tuple[torch.Tensor, float, int]:
    """The codes, scale and zero point of ``torch.ops.quantized.add_scalar`` (``QFunctional.add_scalar``).

    ``_add_scalar_out`` in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/BinaryOps.cpp
    moves the zero point instead of the codes where it can: with ``c = rint(other / scale)`` (in
    double), if ``zero_point - c`` is a code of the dtype, the codes stay and the zero point
    becomes ``zero_point - c``. Otherwise the output's scale is ``(qmax - (zero_point - c)) /
    (qmax - qmin) * scale`` with zero point ``qmin`` (or ``((zero_point - c) - qmin) / (qmax - qmin) *
    scale`` with ``qmax``), in double, and the codes are ``requantize_from_int((q - zero_point) + c,
    float32(scale) * (1.0f / float32(scale')), zero_point')`` (``qadd_scalar_kernel``).
    ``relu=True`` (``add_scalar_relu``): then ``max(q', zero_point')``. No release or CPU dependence.

    ``x``: uint8 or int8 codes with the quantized tensor's strides. Returns ``(codes, scale,
    zero_point)``, the codes laid out in ``x``'s suggested memory format.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> add_scalar(torch.tensor([0, 50, 255], dtype=torch.uint8), 0.1, 10, 0.5)
    (tensor([  0,  50, 255], dtype=torch.uint8), 0.1, 5)
    >>> add_scalar(torch.tensor([0, 50, 255], dtype=torch.uint8), 0.1, 10, 2.0)
    (tensor([ 10,  58, 255], dtype=torch.uint8), 0.103921568627451, 0)
    """
    dtype, s, z, o = _scalar_op_arguments(x, scale, zero_point, other, relu, release, "add_scalar")
    qmin, qmax = DTYPE_RANGES[dtype]
    c = round(o / s)  # std::nearbyint of a double: half to even, as Python rounds
    moved = z - c
    if qmin <= moved <= qmax:
        codes, out_scale, out_zero_point = x.long(), s, moved
    else:
        out_zero_point = qmin if moved < qmin else qmax
        out_scale = (
            (float(qmax) - moved) / (qmax - qmin) * s if moved < qmin else (moved - float(qmin)) / (qmax - qmin) * s
        )
        f = torch.tensor([float32(s), float32_reciprocal(out_scale)], dtype=torch.float32)
        codes = requantize_from_int((x.long() - z) + c, (f[0] * f[1]).item(), out_zero_point, dtype, False)
    if relu:
        codes = codes.clamp(min=out_zero_point)
    return laid_out(codes.to(x.dtype), suggested_format(x)), out_scale, out_zero_point


def mul_scalar(
    x: torch.Tensor, scale: float, zero_point: int, other: float, relu: bool = False, *, release: str | None = None
) -> tuple[torch.Tensor, float, int]:
    """The codes, scale and zero point of ``torch.ops.quantized.mul_scalar`` (``QFunctional.mul_scalar``): no rounding.

    ``_mul_scalar_out`` in https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qmul.cpp
    changes the scale instead of the codes: ``other > 0`` keeps the codes and the zero point, with
    scale ``other * scale`` (in double); ``other == 0`` gives codes 0, scale 1.0 and zero point 0;
    ``other < 0`` mirrors the codes, ``qmax + qmin - q``, with scale ``|other| * scale`` and zero point
    ``qmax - (zero_point - qmin)``. ``relu=True`` (``mul_scalar_relu``): then ``max(q', zero_point')``.
    No release or CPU dependence.

    ``x``: uint8 or int8 codes with the quantized tensor's strides. Returns ``(codes, scale,
    zero_point)``, the codes laid out in ``x``'s suggested memory format.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> mul_scalar(torch.tensor([0, 50, 255], dtype=torch.uint8), 0.1, 10, -2.0)
    (tensor([255, 205,   0], dtype=torch.uint8), 0.2, 245)
    """
    dtype, s, z, o = _scalar_op_arguments(x, scale, zero_point, other, relu, release, "mul_scalar")
    qmin, qmax = DTYPE_RANGES[dtype]
    if o > 0:
        codes, out_scale, out_zero_point = x.long(), o * s, z
    elif o == 0:
        codes, out_scale, out_zero_point = torch.zeros(x.shape, dtype=torch.int64), 1.0, 0
    else:
        codes, out_scale, out_zero_point = qmax + qmin - x.long(), abs(o) * s, qmax - (z - qmin)
    if relu:
        codes = codes.clamp(min=out_zero_point)
    return laid_out(codes.to(x.dtype), suggested_format(x)), out_scale, out_zero_point


def _nhwc_requantized(
    codes: torch.Tensor, s: float, z: int, scale: float, zero_point: int, relu: bool, dtype: torch.dtype, zp_first: bool
) -> torch.Tensor:
    """``qcat_nhwc_kernel`` on one input: its first ``C // 8 * 8`` channels in the vector body, the rest in the tail."""
    body = codes.shape[1] // CAT_LANES * CAT_LANES
    out = torch.empty(codes.shape, dtype=torch.float64)
    d = vectorized_dequantize(codes[:, :body], s, z)
    out[:, :body] = vectorized_quantize(
        d.clamp(min=0.0) if relu else d, float32(1.0 / scale), zero_point, dtype
    ).double()
    d = dequantize_val(codes[:, body:], s, z)
    out[:, body:] = quantize_val(
        d.clamp(min=0.0) if relu else d, float32_reciprocal(scale), zero_point, dtype, zp_first
    )
    return out.to(codes.dtype)


def _mul_operands(a: object, b: object, op: str) -> torch.dtype:
    dtype = eight_bit_codes(a, "a", op)
    if eight_bit_codes(b, "b", op) != dtype:
        assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)  # eight_bit_codes raised otherwise
        raise TypeError(
            f"a and b must hold codes of one dtype, as quantized::{op} requires; got {a.dtype} and {b.dtype}"
        )
    return dtype


def _scalar_op_arguments(
    x: object, scale: object, zero_point: object, other: object, relu: object, release: str | None, op: str
) -> tuple[torch.dtype, float, int, float]:
    """add_scalar's and mul_scalar's arguments, checked: the codes' quantized dtype, the scale, zero point, other."""
    dtype = eight_bit_codes(x, "x", op)
    s = checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, *DTYPE_RANGES[dtype])
    if isinstance(other, bool) or not isinstance(other, (int, float)):
        raise TypeError(f"other must be a number; got {type(other).__name__}")
    boolean(relu, "relu")
    torch_release(release)  # the same arithmetic in every supported release
    return dtype, s, z, float(other)


# ------------------------------------------------------------------------------------------------
# the operator table


@register("quantized::mul", function="qlib.mul", modules=("torch.ao.nn.quantized.QFunctional.mul",))
def _mul_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    a, b = args[0], args[1]
    if not isinstance(a, torch.Tensor):  # quantized::mul.Scalar2: the number first
        a, b = b, a
    if not isinstance(b, torch.Tensor):  # quantized::mul.Scalar is mul_scalar
        codes, scale, zero_point = mul_scalar(strided_codes(a), a.q_scale(), a.q_zero_point(), b)
        return quantized(codes, scale, zero_point, a.dtype)
    if len(args) != 4:
        raise ValueError("qlib models quantized::mul(qa, qb, scale, zero_point), not its out= form")
    scale, zero_point = args[2], args[3]
    codes = mul(
        strided_codes(a), a.q_scale(), a.q_zero_point(), strided_codes(b), b.q_scale(), b.q_zero_point(), scale,
        zero_point, release=settings.release,
    )  # fmt: skip
    return quantized(codes, scale, zero_point, a.dtype)


def _cat_call(tensors: list, dim: int, scale: float | None, zero_point: int | None, settings: Settings) -> torch.Tensor:
    first = tensors[0]
    scale = first.q_scale() if scale is None else scale
    zero_point = first.q_zero_point() if zero_point is None else zero_point
    inputs = [(strided_codes(q), q.q_scale(), q.q_zero_point()) for q in tensors]
    return quantized(cat(inputs, dim, scale, zero_point, release=settings.release), scale, zero_point, first.dtype)


@register("quantized::cat", function="qlib.cat", modules=("torch.ao.nn.quantized.QFunctional.cat",))
def _cat_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    tensors, dim, scale, zero_point = call_arguments(args, kwargs, ("qx", "dim", "scale", "zero_point"), (None, None))
    return _cat_call(list(tensors), dim, scale, zero_point, settings)


@register("aten::cat", function="qlib.cat", modules=("torch.cat",))
def _torch_cat_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    tensors, dim = call_arguments(args, kwargs, ("tensors", "dim"), (0,))
    tensors = list(tensors)
    return _cat_call(tensors, dim % tensors[0].dim(), None, None, settings)


def _scalar_call(args: tuple, kwargs: dict, function: Callable[..., tuple[torch.Tensor, float, int]]) -> torch.Tensor:
    q, other = call_arguments(args, kwargs, ("qa", "b"))
    other = other.item() if isinstance(other, torch.Tensor) else other  # the overload taking a 0-d tensor
    codes, scale, zero_point = function(strided_codes(q), q.q_scale(), q.q_zero_point(), other)
    return quantized(codes, scale, zero_point, q.dtype)


@register(
    "quantized::add_scalar", function="qlib.add_scalar", modules=("torch.ao.nn.quantized.QFunctional.add_scalar",)
)
def _add_scalar_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _scalar_call(args, kwargs, add_scalar)


@register(
    "quantized::mul_scalar", function="qlib.mul_scalar", modules=("torch.ao.nn.quantized.QFunctional.mul_scalar",)
)
def _mul_scalar_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _scalar_call(args, kwargs, mul_scalar)
