"""ONNX's ``QuantizeLinear`` and ``DequantizeLinear`` as ONNX Runtime 1.32 computes them on x86 CPUs.

Explained in the book chapter "Rounding" (``book/04_rounding``), which compares them with torch.

ONNX Runtime's CPU provider quantizes with MLAS (``MlasQuantizeLinear``, one call per tensor, or
per channel along ``axis``), on SSE2, AVX2 and AVX-512 alike (the arithmetic does not depend on the
CPU):

* ``QuantizeLinear``: ``v = x / scale`` in float32 (a true division, where torch multiplies by the
  float32 reciprocal), clamped to ``[qmin - zero_point, qmax - zero_point]`` in float32 (``maxps``
  then ``minps``: NaN becomes ``qmin - zero_point``, so NaN quantizes to ``qmin``), rounded half to
  even (``cvtps2dq``), plus the zero point in int32 (exact: the clamp already kept it in range).
  MLAS's ``quantize.cpp``
  (https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/quantize.cpp) and
  its AVX-512 twin ``quantize_avx512f.cpp``
  (https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/intrinsics/avx512/quantize_avx512f.cpp);
  the operator is ``quantize_linear.cc``
  (https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/providers/cpu/quantization/quantize_linear.cc).
* ``DequantizeLinear``: ``float32(int32(q) - zero_point) * scale``, the difference in int32
  (wrapping around for int32 codes near the ends of the range), the product in float32
  (``DequantizeLinearApply`` in the same ``quantize_linear.cc``).

Measured against onnxruntime 1.32.0 (``tests/test_onnx_runtime.py``).
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import float32, wrap_int32
from qlib.ranges import DTYPE_RANGES, STORAGE_RANGES

# The code dtypes ONNX Runtime's QuantizeLinear writes that qlib reproduces.
QDQ_DTYPES = (torch.uint8, torch.int8, torch.int16)


def _qparams(
    x: torch.Tensor, scale: object, zero_point: object, axis: int | None, qmin: int, qmax: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` checked and shaped to broadcast against ``x``: float32 and int64 tensors."""
    if axis is None:
        s = float32(checks.scale_value(scale))
        z = checks.zero_point_value(zero_point, qmin, qmax)
        return torch.tensor(s, dtype=torch.float32), torch.tensor(z)
    axis = checks.axis_value(axis, x.dim())
    n = x.shape[axis]
    shape = checks.channel_shape(x.dim(), axis)
    s32 = checks.channel_scales(scale, n, axis).float()
    return s32.view(shape), checks.channel_zero_points(zero_point, n, axis, qmin, qmax).view(shape)


def quantize_linear(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    dtype: torch.dtype = torch.uint8,
    axis: int | None = None,
) -> torch.Tensor:
    """ONNX ``QuantizeLinear`` of float32 ``x``, bit for bit as ONNX Runtime's CPU provider.

    ``dtype`` is the type of the zero point in the ONNX graph (``torch.uint8``,
    ``int8`` or ``int16``); ``axis=None`` quantizes per tensor (``scale`` and
    ``zero_point`` numbers), an ``axis`` per channel along it (1-d ``scale`` and
    ``zero_point`` tensors). ``x / scale`` is a float32 division, rounded half
    to even after the clamp; NaN gives ``qmin``, ``±inf`` the ends of the range
    (the module docstring has the arithmetic).

    Chapter: "Rounding" (book/04_rounding).

    >>> quantize_linear(torch.tensor([0.5, 1.5, 2.5, float("nan"), 1e9]), 1.0, 128)
    tensor([128, 130, 130,   0, 255], dtype=torch.uint8)
    >>> quantize_linear(torch.tensor([0.3]), 0.1, 0, torch.int8)  # 0.3f / 0.1f = 3.0000002f
    tensor([3], dtype=torch.int8)
    """
    checks.float32_tensor(x, "x")
    if dtype not in QDQ_DTYPES:
        allowed = ", ".join(str(d) for d in QDQ_DTYPES)
        raise TypeError(f"dtype must be one of {allowed} (ONNX Runtime's integer QuantizeLinear); got {dtype!r}")
    qmin, qmax = DTYPE_RANGES[dtype]
    s, z = _qparams(x, scale, zero_point, axis, qmin, qmax)
    v = x / s.expand_as(x)  # a tensor, never a scalar: the division stays a division
    lo, hi = (qmin - z).float(), (qmax - z).float()
    v = torch.where(torch.isnan(v), lo, v)  # maxps(NaN, lo) gives lo
    v = torch.minimum(torch.maximum(v, lo), hi)
    return (torch.round(v).long() + z).to(dtype)


def dequantize_linear(
    q: torch.Tensor, scale: float | torch.Tensor, zero_point: int | torch.Tensor = 0, axis: int | None = None
) -> torch.Tensor:
    """ONNX ``DequantizeLinear`` of integer codes ``q`` to float32, bit for bit as ONNX Runtime's CPU provider.

    ``float32(int32(q) - zero_point) * float32(scale)``: the difference wraps
    around in int32 (it matters for int32 codes only). ``axis=None``
    dequantizes per tensor, an ``axis`` per channel (1-d ``scale`` and
    ``zero_point`` tensors).

    Chapter: "Rounding" (book/04_rounding).

    >>> dequantize_linear(torch.tensor([0, 3, 255], dtype=torch.uint8), 0.1, 3)
    tensor([-0.3000,  0.0000, 25.2000])
    """
    checks.integer_tensor(q, "q")
    if q.dtype == torch.int64:
        raise TypeError("q must hold the codes of an ONNX tensor: uint8, int8, int16 or int32, not int64")
    qmin, qmax = STORAGE_RANGES[q.dtype]
    s, z = _qparams(q, scale, zero_point, axis, qmin, qmax)
    return wrap_int32(q.long() - z).float() * s
