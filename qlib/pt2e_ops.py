"""The PT2E quantize and dequantize ops, as ``convert_pt2e`` puts them in a model, bit for bit.

Explained in the book chapter "The same model on torchao" (``book/11_torchao``).

torchao's PT2E flow (``prepare_pt2e``/``convert_pt2e`` in
``torchao.quantization.pt2e.quantize_pt2e``) writes a model whose quantization is
a pair of ops around every quantized tensor:
``torch.ops.quantized_decomposed.quantize_per_tensor`` then
``dequantize_per_tensor`` (activations), and ``dequantize_per_channel`` after
weights already stored as codes. torchao 0.18 registers none of them: torch
itself defines them, in Python, in ``torch/ao/quantization/fx/_decomposed.py``
(the ``quantized_decomposed`` library), and torch 2.13 and 2.14 run the same
code (the two files differ only in a docstring), so this module has no
``release`` argument. Inductor, which turns such a model into int8 kernels,
lowers the two per-tensor ops with the same arithmetic
(``torch/_inductor/lowering.py``).

Their arithmetic is not ``torch.quantize_per_tensor``'s:

* per tensor, the scale is a Python float and the reciprocal is computed in
  float64, ``inv = 1.0 / scale``; the multiplication by the float32 tensor
  narrows it to float32, so ``inv = float32(1 / double(scale))``, where the
  ATen kernel takes ``1.0f / float32(scale)``. The two differ by one float32 step
  for about a quarter of the scales that are not float32 numbers (a Python
  ``0.01696838``), and for almost none that are (every scale ``convert_pt2e``
  writes comes from an observer's float32);
* the zero point is added after rounding, in float32, in torch 2.13 as in 2.14:
  ``rint(float32(x * inv)) + zero_point``;
* the clamp is to ``[quant_min, quant_max]``, the observer's range, not to the
  dtype's: with a quantizer that asks for ``quant_max=127`` (``reduce_range``)
  the op clamps at 127, where a ``quint8`` tensor clamps at 255;
* the clamp runs in float32, and an int32 ``quant_max`` of ``2**31 - 1`` is
  ``2**31`` there; converting that to int32 overflows, and x86 CPUs return
  ``-2**31``: on int32 every value at or past the top clamps to the bottom;
* per channel, the scales are a tensor and ``1.0 / scales`` is computed in
  their dtype: float32 scales (``convert_pt2e`` writes float32) give
  ``1.0f / scale`` and float32 arithmetic, float64 scales float64 arithmetic.

Dequantizing is ``(float32(q) - zero_point) * float32(scale)`` per tensor, all
in float32; per channel ``(q - zero_point)`` in integers, then times the scales
in their dtype, rounded to float32.
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import INT32_MAX, INT32_MIN, float32, to_codes
from qlib.ranges import DTYPE_RANGES, PLAIN_DTYPES
from qlib.registry import Settings, register

# The plain integer dtypes the ops take (quantized dtypes such as torch.quint8 are not allowed).


def reciprocal(scale: float) -> float:
    """``float32(1.0 / scale)`` with the division in float64: the factor the per-tensor op multiplies by.

    Chapter: "The same model on torchao" (book/11_torchao).

    >>> reciprocal(0.0180064)  # torch.quantize_per_tensor multiplies by 1.0f / 0.0180064f = 55.53581237792969
    55.53580856323242
    """
    return float32(1.0 / scale)


def quantize_pt2e(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    quant_min: int,
    quant_max: int,
    dtype: torch.dtype,
    axis: int | None = None,
) -> torch.Tensor:
    """The codes of ``torch.ops.quantized_decomposed.quantize_per_tensor`` (``axis=None``) or ``quantize_per_channel``.

    With ``axis=None``: ``scale`` a number, ``zero_point`` an int, as
    ``convert_pt2e`` writes them into the graph; the result equals
    ``quantize_per_tensor(x, scale, zero_point, quant_min, quant_max, dtype)``.
    With an ``axis``: ``scale`` a 1-d float32 or float64 tensor and
    ``zero_point`` a 1-d integer tensor, one value per slice along ``axis``; the
    result equals ``quantize_per_channel(x, scale, zero_point, axis, quant_min,
    quant_max, dtype)``. ``dtype`` is a plain integer dtype (``torch.uint8``,
    ``int8``, ``int16``, ``int32``) and ``[quant_min, quant_max]``, inside its
    range, is where codes are clamped. ``x`` is float32; NaN raises (torch's
    code for it depends on the CPU). The module docstring has the arithmetic.

    Chapter: "The same model on torchao" (book/11_torchao).

    >>> x = torch.tensor([-0.8, 0.0, 0.5, 1.6, 9.0])
    >>> quantize_pt2e(x, 0.0089678745716810226, 80, 0, 255, torch.uint8)
    tensor([  0,  80, 136, 255, 255], dtype=torch.uint8)
    >>> quantize_pt2e(x, 0.0089678745716810226, 80, 0, 127, torch.uint8)
    tensor([  0,  80, 127, 127, 127], dtype=torch.uint8)
    """
    checks.float32_tensor(x, "x")
    checks.no_nan(x, "x")
    check_quant_range(quant_min, quant_max, dtype)
    # Python numbers per tensor, tensors per channel
    s: float | torch.Tensor
    z: int | torch.Tensor
    inv: float | torch.Tensor
    if axis is None:
        s = checks.scale_value(scale)
        z = checks.zero_point_value(zero_point, *DTYPE_RANGES[dtype])
        inv = reciprocal(s)  # 1.0 / scale in float64, narrowed to float32 by the multiplication
        values = torch.round(x * inv) + z  # float32: rint, then the zero point
    else:
        axis = checks.axis_value(axis, x.dim())
        n = x.shape[axis]
        s = typed_channel_scales(scale, n, axis)
        z = checks.channel_zero_points(zero_point, n, axis, *DTYPE_RANGES[dtype])
        shape = checks.channel_shape(x.dim(), axis)
        inv = 1.0 / s.view(shape)  # in the scales' own dtype
        # float32 scales: float32 throughout (the zero point converted to float32); float64: float64
        values = torch.round(x * inv) + z.view(shape).to(inv.dtype)
    # the bounds are converted to the values' dtype: in float32, an int32 quant_max of 2**31 - 1 is 2**31
    return to_codes(values.clamp(quant_min, quant_max), dtype)


def dequantize_pt2e(
    q: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor | None,
    axis: int | None = None,
) -> torch.Tensor:
    """The float32 values of ``dequantize_per_tensor`` (``axis=None``) or ``dequantize_per_channel``.

    Per tensor, ``(float32(q) - zero_point) * float32(scale)``, every step in
    float32 (``q`` is converted first, so int32 codes beyond 2**24 round).
    Per channel, ``(q - zero_point)`` in integers, times the 1-d ``scale``
    tensor in its dtype, rounded to float32; ``zero_point`` may be None there
    (symmetric weights), as in torch. ``q`` is a plain integer tensor.

    Chapter: "The same model on torchao" (book/11_torchao).

    >>> dequantize_pt2e(torch.tensor([0, 80, 136], dtype=torch.uint8), 0.0089678745716810226, 80)
    tensor([-0.7174,  0.0000,  0.5022])
    """
    checks.integer_tensor(q, "q")
    qmin, qmax = DTYPE_RANGES.get(q.dtype, (INT32_MIN, INT32_MAX))
    s: float | torch.Tensor  # a Python float per tensor, a tensor per channel
    if axis is None:
        s = checks.scale_value(scale)
        if zero_point is None:
            raise ValueError("zero_point must be an int for per-tensor dequantization; got None")
        z = checks.zero_point_value(zero_point, qmin, qmax)
        return (q.float() - z) * s  # float32 minus float32(z), times float32(scale)
    axis = checks.axis_value(axis, q.dim())
    n = q.shape[axis]
    s = typed_channel_scales(scale, n, axis)
    shape = checks.channel_shape(q.dim(), axis)
    if zero_point is None:
        return (q * s.view(shape)).float()
    checks.channel_zero_points(zero_point, n, axis, qmin, qmax)
    assert isinstance(zero_point, torch.Tensor)  # channel_zero_points raised otherwise
    # the difference in the promoted integer dtype (int64 with convert_pt2e's zero points), then the scales' dtype
    return ((q - zero_point.view(shape)) * s.view(shape)).float()


def check_quant_range(quant_min: object, quant_max: object, dtype: object) -> None:
    """Check ``dtype`` and the clamp range ``[quant_min, quant_max]`` inside its range."""
    if dtype not in PLAIN_DTYPES:
        allowed = ", ".join(str(d) for d in PLAIN_DTYPES)
        hint = " (the PT2E ops take plain dtypes: torch.uint8, not torch.quint8)" if dtype in DTYPE_RANGES else ""
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}{hint}")
    checks.int_range(quant_min, quant_max, *DTYPE_RANGES[dtype], of=f" for {dtype}")


def typed_channel_scales(scale: object, length: int, axis: int) -> torch.Tensor:
    """Check per-channel scales: a 1-d float32 or float64 tensor (the dtype sets the arithmetic); return it."""
    if not isinstance(scale, torch.Tensor) or scale.dtype not in (torch.float32, torch.float64):
        got = scale.dtype if isinstance(scale, torch.Tensor) else type(scale).__name__
        raise TypeError(
            f"scale must be a 1-d float32 or float64 tensor for per-channel quantization (its dtype sets the "
            f"arithmetic; convert_pt2e writes float32); got {got}"
        )
    checks.channel_scales(scale, length, axis)
    return scale.detach()


@register(
    "quantized_decomposed::quantize_per_tensor",
    "quantized_decomposed::quantize_per_channel",
    function="qlib.quantize_pt2e",
    modules=("convert_pt2e's quantize nodes",),
    on_float=True,
    qparams=lambda args: (float(args[1]), int(args[2])) if len(args) == 6 else (float("nan"), 0),
)
def _quantize_pt2e_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    if len(args) == 7:  # per channel: input, scales, zero points, axis, quant_min, quant_max, dtype
        x, scale, zero_point, axis, quant_min, quant_max, dtype = args
        return quantize_pt2e(x, scale, zero_point, quant_min, quant_max, dtype, axis=axis)
    x, scale, zero_point, quant_min, quant_max, dtype = args
    if isinstance(scale, torch.Tensor):  # the .tensor overload: 1-element tensors
        scale, zero_point = scale.item(), int(zero_point.item())
    return quantize_pt2e(x, scale, zero_point, quant_min, quant_max, dtype)


@register(
    "quantized_decomposed::dequantize_per_tensor",
    "quantized_decomposed::dequantize_per_channel",
    function="qlib.dequantize_pt2e",
    modules=("convert_pt2e's dequantize nodes",),
    on_float=True,
)
def _dequantize_pt2e_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    if kwargs.get("out_dtype") not in (None, torch.float32):
        raise ValueError(f"qlib models dequantize to float32; this node asks for {kwargs['out_dtype']}")
    if len(args) == 7:
        q, scale, zero_point, axis = args[:4]
        return dequantize_pt2e(q, scale, zero_point, axis=axis)
    q, scale, zero_point = args[:3]
    if isinstance(scale, torch.Tensor):
        scale, zero_point = scale.item(), int(zero_point.item())
    return dequantize_pt2e(q, scale, zero_point)
