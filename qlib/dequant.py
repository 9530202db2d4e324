"""Dequantize integer codes exactly as ``Tensor.dequantize`` does on x86 CPUs,
in torch 2.13 and 2.14 alike (measured on both).

Explained in the book chapter "The affine map" (``book/02_affine_map``).

The formula is always ``scale * (q - zero_point)``, but the two kernels
evaluate it in different precisions:

* per tensor (FBGEMM ``Dequantize``, ``include/fbgemm/QuantUtils.h``): the
  difference ``q - zero_point`` is taken in int32 (it wraps around for qint32
  codes near the ends of the range), converted to float32 and multiplied by the
  scale narrowed to float32;
* per channel (ATen ``dequantize_per_channel_affine_kernel`` in
  ``QuantizedOpKernels.cpp``): ``float(q) - float(zero_point)`` in float32, then
  multiplied by the float64 scale in float64 and rounded to float32.
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import CHUNK
from qlib.ranges import STORAGE_RANGES
from qlib.registry import Settings, register
from qlib.releases import torch_release


def dequantize(
    q: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    axis: int | None = None,
    *,
    release: str | None = None,
) -> torch.Tensor:
    """Map integer codes ``q`` back to float32: ``scale * (q - zero_point)``.

    Equals ``torch.Tensor.dequantize()`` of the quantized tensor whose
    ``int_repr()`` is ``q``, bit for bit: per tensor with ``axis=None``, per
    channel (1-d ``scale`` and ``zero_point`` tensors) with an ``axis``. ``q`` is
    a plain integer tensor; the zero point must lie in the range of its dtype.
    ``release`` (``"2.13"``, ``"2.14"`` or None for the installed torch) is
    checked, but both compute the same.

    Chapter: "The affine map" (book/02_affine_map).

    >>> dequantize(torch.tensor([0, 3, 6, 93], dtype=torch.uint8), 0.1, 3)
    tensor([-0.3000,  0.0000,  0.3000,  9.0000])
    """
    checks.integer_tensor(q, "q")
    torch_release(release)  # the same arithmetic in every supported release
    qmin, qmax = STORAGE_RANGES[q.dtype]
    if q.dtype == torch.int64 and q.numel() and (q.min() < qmin or q.max() > qmax):
        raise ValueError(f"q holds int64 codes outside the int32 range [{qmin}, {qmax}]")
    # Python numbers per tensor, tensors per channel
    s: float | torch.Tensor
    z: int | torch.Tensor
    if axis is None:
        s = checks.scale_value(scale)
        z = checks.zero_point_value(zero_point, qmin, qmax)
        flat = q.reshape(-1)
        x = torch.empty(flat.shape, dtype=torch.float32)
        for start in range(0, flat.numel(), CHUNK):  # cache-sized pieces, for speed
            x[start : start + CHUNK] = per_tensor_values(flat[start : start + CHUNK], s, z)
        return x.view(q.shape)
    axis = checks.axis_value(axis, q.dim())
    n = q.shape[axis]
    s = checks.channel_scales(scale, n, axis)
    z = checks.channel_zero_points(zero_point, n, axis, qmin, qmax)
    shape = checks.channel_shape(q.dim(), axis)
    return per_channel_values(q, s.view(shape), z.view(shape))


def per_tensor_values(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """``scale * (q - zero_point)`` as torch's per-tensor kernel computes it.

    The difference is taken in int32 (wrapping around, like the C++ kernel, for
    qint32 codes near the ends of the range), converted to float32 and
    multiplied by ``scale`` narrowed to float32.

    >>> per_tensor_values(torch.tensor([0, 3, 6], dtype=torch.uint8), 0.1, 3)
    tensor([-0.3000,  0.0000,  0.3000])
    """
    if q.dtype in (torch.uint8, torch.int8, torch.int16):
        diff = q.float().sub_(zero_point)  # exact: |q - zero_point| < 2**24
    else:
        diff = (q.long() - zero_point).to(torch.int32).float()
    return diff.mul_(scale)  # a float32 multiply by float32(scale)


def per_channel_values(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor) -> torch.Tensor:
    """``scale * (q - zero_point)`` as torch's per-channel kernel computes it.

    ``scale`` (float64) and ``zero_point`` are already shaped to broadcast along
    the channel axis. The difference is taken in float32, the product in float64
    with the float64 scale, and only the result is rounded to float32.

    >>> per_channel_values(torch.tensor([[0, 3]]), torch.tensor([[0.1]], dtype=torch.float64), torch.tensor([[3]]))
    tensor([[-0.3000,  0.0000]])
    """
    diff = q.float() - zero_point.float()
    return (diff.double() * scale).float()


@register("aten::dequantize", function="qlib.dequantize", modules=("torch.ao.nn.quantized.DeQuantize",))
def _dequantize_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q = args[0]
    if not isinstance(q, torch.Tensor):
        raise ValueError("qlib models dequantize of one tensor, not a list of them")
    if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        axis = q.q_per_channel_axis()
        return dequantize(q.int_repr(), q.q_per_channel_scales(), q.q_per_channel_zero_points(), axis=axis)
    return dequantize(q.int_repr(), q.q_scale(), q.q_zero_point(), release=settings.release)
