"""A quantized BatchNorm2d on codes, as torch computes it on x86 CPUs.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

``torch.ao.nn.quantized.BatchNorm2d`` (and ``torch.ao.nn.intrinsic.quantized.BNReLU2d``) calls
``quantized::batch_norm2d`` (``batch_norm2d_relu``): ``q_batch_norm_impl`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/Normalization.cpp
(``qbatch_norm.cpp`` in older trees), which folds the statistics into one float32 factor and
offset per channel (``compute_fused_params``) and runs ``q_batch_norm_kernel`` (in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp,
an AVX2 kernel on every x86 CPU). Eager-mode models fuse every BatchNorm into the convolution
before them, so none of torchvision's quantizable models calls it.

Derived from a main-branch copy of PyTorch's sources (the 2.13.0 and 2.14.1 binaries' own error
messages name ``Normalization.cpp`` too) and measured element by element against
torch 2.13.0 and 2.14.1, with the AVX-512 and the AVX2 kernels, on the x86, fbgemm, onednn and
qnnpack engines: the same codes everywhere.
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.elementwise_kernels import (
    boolean,
    call_arguments,
    eight_bit_codes,
    laid_out,
    strided_codes,
    vectorized_quantize,
)
from qlib.numerics import float32, fma_float32
from qlib.ranges import DTYPE_RANGES
from qlib.registry import Settings, quantized, register
from qlib.releases import torch_release

BATCH_NORM_LANES = 8  # Vectorized<float>::size() of the AVX2 kernel: the channels past the last 8 take the scalar path


def batch_norm2d(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    bias: torch.Tensor,
    mean: torch.Tensor,
    var: torch.Tensor,
    eps: float,
    scale: float,
    zero_point: int,
    relu: bool = False,
    *,
    release: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.ops.quantized.batch_norm2d`` (``relu=True``: ``batch_norm2d_relu``), bit for bit.

    Per channel, in float32 but for the two marked steps (``compute_fused_params``)::

        inv_sigma = float32(1.0 / sqrtf(var + float32(eps)))          # the division in double
        alpha = float32(float32(inv_sigma * weight) * (x_scale / scale))   # the product in double
        beta = float32(float32(bias - float32(mean * inv_sigma) * weight) / scale)  # in double

    then each code is ``zero_point + rint(fma(alpha, q - x_zero_point, beta))``, one rounding, and
    saturated (``relu``: then ``max(., zero_point)``). The first ``C // 8 * 8`` channels take the
    vector lanes (``vec::fmadd``, then ATen's ``QuantizeAvx2``, which clips the rounded value at
    ``2**31 - 128`` and adds the zero point in int32: beyond, it wraps around), the other ``C % 8``
    the scalar path (``lrintf(alpha * (q - zp) + beta)``, which the compiler contracts to an FMA in
    the AVX2 kernel, then the zero point in int64: beyond int32 it saturates; ``lrintf``'s
    overflow, NaN and infinities included, gives the lowest code). No release, CPU or engine dependence.

    ``x``: uint8 (quint8) or int8 (qint8) codes of shape (N, C, H, W), with ``x_scale`` and
    ``x_zero_point``; ``weight``, ``bias``, ``mean`` and ``var``: float32 tensors of shape (C,); the
    output has ``scale`` and ``zero_point``. ``release`` is checked; both releases compute the
    same. Returns codes in channels-last layout, as torch allocates its output whatever the input's.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.tensor([[[[0, 128, 255]]]], dtype=torch.uint8)
    >>> one, zero = torch.ones(1), torch.zeros(1)
    >>> batch_norm2d(x, 0.1, 128, 2 * one, one, zero, 4 * one, 0.0, 0.1, 128)  # 2 * v / 2 + 1
    tensor([[[[ 10, 138, 255]]]], dtype=torch.uint8)
    """
    dtype = eight_bit_codes(x, "x", "batch_norm2d")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-d (N, C, H, W), as quantized::batch_norm2d requires; got shape {tuple(x.shape)}")
    qmin, qmax = DTYPE_RANGES[dtype]
    sx = checks.scale_value(x_scale, "x_scale")
    zx = checks.zero_point_value(x_zero_point, qmin, qmax, "x_zero_point")
    s = checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, qmin, qmax)
    channels = x.shape[1]
    w, b, mu, v = (
        _batch_norm_vector(t, name, channels)
        for t, name in ((weight, "weight"), (bias, "bias"), (mean, "mean"), (var, "var"))
    )
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
        raise ValueError(f"eps must be a non-negative number; got {eps!r}")
    relu = boolean(relu, "relu")
    torch_release(release)  # the same arithmetic in every supported release
    inv_sigma = (1.0 / torch.sqrt(v + float32(eps)).double()).float()
    alpha = ((inv_sigma * w).double() * (sx / s)).float()
    beta = ((b - mu * inv_sigma * w).double() / s).float()
    shape = (1, channels, 1, 1)
    values = fma_float32((x.long() - zx).float(), alpha.view(shape), beta.view(shape))
    vector = (torch.arange(channels) < channels // BATCH_NORM_LANES * BATCH_NORM_LANES).view(shape)
    rounded = torch.round(values).double()
    scalar = torch.where(rounded.abs() < 2.0**63, rounded + z, float(qmin)).clamp(qmin, qmax)  # lrintf, int64
    codes = torch.where(vector, vectorized_quantize(values, 1.0, z, dtype).double(), scalar)
    if relu:
        codes = codes.clamp(min=z)
    return laid_out(codes.to(x.dtype), torch.channels_last)


def _batch_norm_vector(t: object, name: str, channels: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.dtype != torch.float32 or t.shape != (channels,):
        got = f"{t.dtype} of shape {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{name} must be a float32 tensor of shape ({channels},), one value per channel; got {got}")
    return t.detach()


def _batch_norm_call(args: tuple, kwargs: dict, settings: Settings, relu: bool) -> torch.Tensor:
    names = ("qx", "weight", "bias", "mean", "var", "eps", "output_scale", "output_zero_point")
    q, weight, bias, mean, var, eps, scale, zero_point = call_arguments(args, kwargs, names)
    if weight is None or bias is None:
        raise ValueError("quantized::batch_norm2d needs a weight and a bias (torch: 'Weight must be provided')")
    codes = batch_norm2d(
        strided_codes(q), q.q_scale(), q.q_zero_point(), weight, bias, mean, var, eps, scale, zero_point, relu,
        release=settings.release,
    )  # fmt: skip
    return quantized(codes, scale, zero_point, q.dtype)


@register("quantized::batch_norm2d", function="qlib.batch_norm2d", modules=("torch.ao.nn.quantized.BatchNorm2d",))
def _batch_norm2d_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _batch_norm_call(args, kwargs, settings, relu=False)


@register(
    "quantized::batch_norm2d_relu", function="qlib.batch_norm2d", modules=("torch.ao.nn.intrinsic.quantized.BNReLU2d",)
)
def _batch_norm2d_relu_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _batch_norm_call(args, kwargs, settings, relu=True)
