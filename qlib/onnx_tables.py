"""ONNX Runtime's ``com.microsoft.QLinearConcat`` and ``QLinearSigmoid``: tables of 256 codes.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``).

``onnxruntime.quantization.quantize_static`` (both formats, and ORT's QDQ fusions) turns a
``Concat`` of quantized tensors into ``QLinearConcat`` and a ``Sigmoid`` into ``QLinearSigmoid``.
``QLinearConcat``'s kernel (``qlinear_concat.cc``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/contrib_ops/cpu/quantization/qlinear_concat.cc)
copies an input whose scale and zero point equal the output's; any other input goes through a table
built once for all 256 codes (``QlinearBuildLookupTable`` in ``qlinear_lookup_table.cc``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/contrib_ops/cpu/quantization/qlinear_lookup_table.cc):
``x_scale * float(x - x_zero_point)`` in float32, then ``MlasQuantizeLinear``, the division of
``QuantizeLinear`` (:func:`qlib.quantize_linear`). ``QLinearSigmoid`` builds its table the same
way with MLAS's logistic between the two steps (``qlinear_activations.cc``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/contrib_ops/cpu/quantization/qlinear_activations.cc):
on x86 with AVX2 the kernel of ``LogisticKernelFma3.S``
(https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/x86_64/LogisticKernelFma3.S),
Eigen's rational approximation in float32: ``x`` clamped to [-18, 18], ``p`` and ``q`` polynomials in
``x * x`` by fused multiply-adds (constants in ``logistic.cpp``), then ``max(0, x * p / q + 0.5)``.
Measured against onnxruntime 1.32.0 (``tests/test_onnx_tables.py``).
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import float32, fma_float32
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


# MLAS's logistic constants (logistic.cpp, Eigen's): the numerator's, then the denominator's
LOGISTIC_ALPHA = (
    4.37031012579801e-11,
    1.15627324459942e-07,
    6.08574864600143e-05,
    8.51377133304701e-03,
    2.48287947061529e-01,
)
LOGISTIC_BETA = (
    6.10247389755681e-13, 5.76102136993427e-09, 6.29106785017040e-06, 1.70198817374094e-03, 1.16817656904453e-01,
    9.93151921023180e-01,
)  # fmt: skip


def mlas_logistic(x: torch.Tensor) -> torch.Tensor:
    """MLAS's float32 logistic on x86 with AVX2 (``LogisticKernelFma3.S``), bit for bit.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> mlas_logistic(torch.tensor([0.0, 1.0, -30.0])).tolist()  # past -18, p / q + 0.5 falls below 0
    [0.5, 0.7310585975646973, 0.0]
    """
    v = torch.maximum(torch.minimum(x, torch.tensor(18.0)), torch.tensor(-18.0))
    v2 = v * v
    p = fma_float32(v2, float32(LOGISTIC_ALPHA[0]), float32(LOGISTIC_ALPHA[1]))
    for alpha in LOGISTIC_ALPHA[2:]:
        p = fma_float32(v2, p, float32(alpha))
    q = fma_float32(v2, float32(LOGISTIC_BETA[0]), float32(LOGISTIC_BETA[1]))
    for beta in LOGISTIC_BETA[2:]:
        q = fma_float32(v2, q, float32(beta))
    return torch.clamp_min((v * p) / q + 0.5, 0.0)


def qlinear_sigmoid(
    x: torch.Tensor,
    x_scale: float | torch.Tensor,
    x_zero_point: int | torch.Tensor,
    y_scale: float | torch.Tensor,
    y_zero_point: int | torch.Tensor,
) -> torch.Tensor:
    """``com.microsoft.QLinearSigmoid`` of codes ``x``, bit for bit as ONNX Runtime on x86 with AVX2.

    ``QuantizeLinear(mlas_logistic(DequantizeLinear(x)))``, all in float32
    (the module docstring has the sources); the output has ``x``'s dtype.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> qlinear_sigmoid(torch.tensor([0, 128, 255], dtype=torch.uint8), 0.05, 128, 1 / 256, 0)
    tensor([  0, 128, 255], dtype=torch.uint8)
    """
    if not isinstance(x, torch.Tensor) or x.dtype not in (torch.uint8, torch.int8):
        raise TypeError(f"x must be uint8 or int8 codes; got {x.dtype if isinstance(x, torch.Tensor) else type(x)}")
    qmin, qmax = DTYPE_RANGES[x.dtype]
    sx = float32(checks.scale_value(x_scale, "x_scale"))
    zx = checks.zero_point_value(x_zero_point, qmin, qmax, "x_zero_point")
    sy = float32(checks.scale_value(y_scale, "y_scale"))
    zy = checks.zero_point_value(y_zero_point, qmin, qmax, "y_zero_point")
    return quantize_linear(mlas_logistic(dequantize_linear(x, sx, zx)), sy, zy, x.dtype)
