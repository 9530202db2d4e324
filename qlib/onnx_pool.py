"""ONNX Runtime's ``com.microsoft.QLinearAveragePool`` and ``QLinearGlobalAveragePool``, as its CPU provider computes them.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``).

``onnxruntime.quantization.quantize_static`` turns an ``AveragePool`` into ``QLinearAveragePool``
(both formats: ORT's QDQ fusions do it too). Its kernel (``qlinear_pool.cc``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/contrib_ops/cpu/quantization/qlinear_pool.cc)
works in float32, measured against onnxruntime 1.32.0 (``tests/test_onnx_pool.py``):

1. every code to ``x_scale * float(x - x_zero_point)``;
2. each window's values that lie inside the input summed in order (row by row), from 0, then
   divided by the window's count (the whole kernel's with ``count_include_pad``);
3. ``nearbyint(v / y_scale + y_zero_point)``: the zero point added in float32 *before* rounding half
   to even (where ``QuantizeLinear`` adds it after), then clamped to the type's range.

A kernel that covers the whole input without padding takes the global path instead, as
``QLinearGlobalAveragePool`` always does (``MlasQLinearGlobalAveragePoolNchw`` in ``qlgavgpool.cpp``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/qlgavgpool.cpp):
the int32 sum of ``x - x_zero_point`` over the image, times ``x_scale / (y_scale * float(size))`` in
float32, requantized as ``MlasRequantizeOutput`` does (``qlib.onnx_runtime.requantize_output``).
"""

from __future__ import annotations

import math

import torch

from qlib import checks
from qlib.numerics import float32
from qlib.onnx_runtime import requantize_output
from qlib.ranges import DTYPE_RANGES

POOL_CODE_TYPES = (torch.uint8, torch.int8)


def _checked(x: object, x_zero_point: object, y_zero_point: object) -> tuple[torch.Tensor, int, int]:
    if not isinstance(x, torch.Tensor) or x.dtype not in POOL_CODE_TYPES or x.dim() < 3:
        got = f"{x.dtype} of {x.dim()} dimensions" if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(f"x must be uint8 or int8 codes [N, C, spatial...]; got {got}")
    qmin, qmax = DTYPE_RANGES[x.dtype]
    zx = checks.zero_point_value(x_zero_point, qmin, qmax, "x_zero_point")
    return x, zx, checks.zero_point_value(y_zero_point, qmin, qmax, "y_zero_point")


def qlinear_global_average_pool(
    x: torch.Tensor,
    x_scale: float | torch.Tensor,
    x_zero_point: int | torch.Tensor,
    y_scale: float | torch.Tensor,
    y_zero_point: int | torch.Tensor,
) -> torch.Tensor:
    """``com.microsoft.QLinearGlobalAveragePool`` of codes ``x`` ``[N, C, ...]``, bit for bit as ONNX Runtime.

    The int32 sum of ``x - x_zero_point`` over each image, requantized with the
    multiplier ``x_scale / (y_scale * size)`` in float32 (the module docstring
    has the steps). The output is ``[N, C, 1, ...]``.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> x = torch.tensor([[[[10, 11], [12, 14]]]], dtype=torch.uint8)
    >>> qlinear_global_average_pool(x, 0.5, 10, 0.5, 0)  # (0 + 1 + 2 + 4) / 4 = 1.75
    tensor([[[[2]]]], dtype=torch.uint8)
    """
    x, zx, zy = _checked(x, x_zero_point, y_zero_point)
    size = math.prod(x.shape[2:])
    sx = float32(checks.scale_value(x_scale, "x_scale"))
    sy = float32(checks.scale_value(y_scale, "y_scale"))
    multiplier = torch.tensor(sx) / (torch.tensor(sy) * torch.tensor(float(size)))  # float32 throughout
    acc = (x.long() - zx).flatten(2).sum(-1)
    out = requantize_output(acc.to(torch.int32), multiplier, zy, x.dtype)
    return out.view(*x.shape[:2], *[1] * (x.dim() - 2))


def _pool_output_size(size: int, kernel: int, stride: int, head: int, tail: int, ceil_mode: bool) -> int:
    span = size + head + tail - kernel
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    return out - 1 if (out - 1) * stride >= size + head else out  # the last window must start inside


def qlinear_average_pool(
    x: torch.Tensor,
    x_scale: float | torch.Tensor,
    x_zero_point: int | torch.Tensor,
    y_scale: float | torch.Tensor,
    y_zero_point: int | torch.Tensor,
    kernel_shape: list[int],
    *,
    strides: list[int] | None = None,
    pads: list[int] | None = None,
    count_include_pad: bool = False,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """``com.microsoft.QLinearAveragePool`` of codes ``x`` ``[N, C, H, W]`` (or ``[N, C, W]``), bit for bit as ONNX Runtime.

    ``kernel_shape``, ``strides``, ``pads`` (the begins, then the ends),
    ``count_include_pad`` and ``ceil_mode`` as the ONNX attributes. In
    float32: dequantize, sum each window's values in order, divide by the
    count, then ``nearbyint(v / y_scale + y_zero_point)``, clamped (the module
    docstring has the steps, and the global path a whole-input kernel takes).

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> x = torch.tensor([[[10, 11, 12, 15]]], dtype=torch.uint8)
    >>> qlinear_average_pool(x, 1.0, 10, 1.0, 0, [2], strides=[2])  # 0.5 to even, 3.5 to even
    tensor([[[0, 4]]], dtype=torch.uint8)
    """
    x, zx, zy = _checked(x, x_zero_point, y_zero_point)
    rank = x.dim() - 2
    kernel = [int(k) for k in kernel_shape]
    strides = [1] * rank if strides is None else [int(s) for s in strides]
    pads = [0] * (2 * rank) if pads is None else [int(p) for p in pads]
    if rank not in (1, 2) or len(kernel) != rank or len(strides) != rank or len(pads) != 2 * rank:
        raise ValueError(f"a 1-d or 2-d pool needs kernel_shape and strides of {rank} and pads of {2 * rank}")
    if list(x.shape[2:]) == kernel and not any(pads):
        return qlinear_global_average_pool(x, x_scale, zx, y_scale, zy)
    if rank == 1:
        x, kernel, strides, pads = x.unsqueeze(2), [1, *kernel], [1, *strides], [0, pads[0], 0, pads[1]]
    sx = torch.tensor(float32(checks.scale_value(x_scale, "x_scale")))
    sy = torch.tensor(float32(checks.scale_value(y_scale, "y_scale")))
    values = (x.long() - zx).float() * sx
    h, w = x.shape[2:]
    out_h = _pool_output_size(h, kernel[0], strides[0], pads[0], pads[2], ceil_mode)
    out_w = _pool_output_size(w, kernel[1], strides[1], pads[1], pads[3], ceil_mode)
    y = torch.empty(*x.shape[:2], out_h, out_w)
    for i in range(out_h):
        top = i * strides[0] - pads[0]
        rows = range(max(top, 0), min(top + kernel[0], h))
        for j in range(out_w):
            left = j * strides[1] - pads[1]
            cols = range(max(left, 0), min(left + kernel[1], w))
            total = torch.zeros(x.shape[:2])
            for r in rows:
                for c in cols:
                    total = total + values[:, :, r, c]
            count = kernel[0] * kernel[1] if count_include_pad else len(rows) * len(cols)
            y[:, :, i, j] = total / torch.tensor(float(count))
    qmin, qmax = DTYPE_RANGES[x.dtype]
    v = torch.round(y / sy + torch.tensor(float(zy)))
    v = torch.where(v.abs() < 2.0**31, v, torch.tensor(-(2.0**31)))  # past int32 the cast gives INT_MIN
    out = v.clamp(qmin, qmax).to(x.dtype)
    return out.squeeze(2) if rank == 1 else out
