"""ONNX Runtime's ``com.microsoft.QLinearConcat``: its inputs requantized through a table of 256 codes.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``).

``onnxruntime.quantization.quantize_static`` (both formats, and ORT's QDQ fusions) turns a
``Concat`` of quantized tensors into ``QLinearConcat``. Its kernel (``qlinear_concat.cc``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/contrib_ops/cpu/quantization/qlinear_concat.cc)
copies an input whose scale and zero point equal the output's; any other input goes through a table
built once for all 256 codes (``QlinearBuildLookupTable`` in ``qlinear_lookup_table.cc``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/contrib_ops/cpu/quantization/qlinear_lookup_table.cc):
``x_scale * float(x - x_zero_point)`` in float32, then ``MlasQuantizeLinear``, the division of
``QuantizeLinear`` (:func:`qlib.quantize_linear`). Measured against onnxruntime 1.32.0
(``tests/test_onnx_tables.py``).
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import float32
from qlib.onnx_qdq import dequantize_linear, quantize_linear
from qlib.ranges import DTYPE_RANGES


def qlinear_concat(
    inputs: list[tuple[torch.Tensor, float | torch.Tensor, int | torch.Tensor]],
    y_scale: float | torch.Tensor,
    y_zero_point: int | torch.Tensor,
    axis: int,
) -> torch.Tensor:
    """``com.microsoft.QLinearConcat`` of ``inputs`` (``(codes, scale, zero_point)`` each) along ``axis``.

    Every input has the output's dtype (uint8 or int8). An input with the
    output's scale and zero point is copied; any other is dequantized in
    float32 and quantized again with ``QuantizeLinear``'s division (the module
    docstring has the sources).

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> a = torch.tensor([10, 11], dtype=torch.uint8)
    >>> b = torch.tensor([10, 11, 13], dtype=torch.uint8)
    >>> qlinear_concat([(a, 0.5, 10), (b, 0.25, 10)], 0.5, 10, 0)  # b: 0.25 to even, 0.75 up
    tensor([10, 11, 10, 10, 12], dtype=torch.uint8)
    """
    if not inputs:
        raise ValueError("QLinearConcat needs at least one (codes, scale, zero_point) input")
    dtype = inputs[0][0].dtype if isinstance(inputs[0][0], torch.Tensor) else None
    if dtype not in (torch.uint8, torch.int8):
        raise TypeError(f"the inputs must be uint8 or int8 codes; got {dtype}")
    qmin, qmax = DTYPE_RANGES[dtype]
    sy = float32(checks.scale_value(y_scale, "y_scale"))
    zy = checks.zero_point_value(y_zero_point, qmin, qmax, "y_zero_point")
    parts = []
    for i, (codes, scale, zero_point) in enumerate(inputs):
        if not isinstance(codes, torch.Tensor) or codes.dtype != dtype:
            raise TypeError(f"input {i} must hold {dtype} codes, the first input's dtype")
        sx = float32(checks.scale_value(scale, f"scale of input {i}"))
        zx = checks.zero_point_value(zero_point, qmin, qmax, f"zero point of input {i}")
        if (sx, zx) == (sy, zy):
            parts.append(codes)
        else:
            parts.append(quantize_linear(dequantize_linear(codes, sx, zx), sy, zy, dtype))
    return torch.cat(parts, checks.axis_value(axis, parts[0].dim()))
