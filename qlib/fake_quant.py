"""Fake quantization (quantize, then dequantize, in float32) exactly as
``torch.fake_quantize_per_tensor_affine`` and
``torch.fake_quantize_per_channel_affine`` compute it on x86 CPUs, in torch
2.13 and 2.14 alike (measured on both).

Explained in the book chapter "Rounding" (``book/04_rounding``).
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import float32_reciprocal
from qlib.releases import torch_release


def fake_quantize(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    quant_min: int,
    quant_max: int,
    axis: int | None = None,
    *,
    release: str | None = None,
) -> torch.Tensor:
    """Round ``x`` to the quantization grid and return float32 values on it.

    Computes ``(clamp(rint(x * inv) + zero_point, quant_min, quant_max) -
    zero_point) * scale`` with ``inv = 1.0f / scale`` in float32 (the
    per-channel kernel does the last multiply in float64), which equals
    ``torch.fake_quantize_per_tensor_affine`` (``axis=None``) and
    ``torch.fake_quantize_per_channel_affine`` (1-d ``scale`` and
    ``zero_point``, one per slice along ``axis``) bit for bit.

    Fake quantization adds the zero point *after* rounding, in both releases.
    So did ``torch.quantize_per_tensor`` before torch 2.13 and again from
    2.14; in torch 2.13 it adds it before, so a value exactly halfway between
    two grid points can land on a different one: with scale 1 and zero point
    129, ``x = 0.5`` fake-quantizes to 0.0, but 2.13's ``quantize`` gives code
    130 (0.5 + 129 = 129.5 rounds to even 130), which dequantizes to 1.0.
    ``release`` (``"2.13"``, ``"2.14"`` or None for the installed torch) is
    checked, but both compute the same. The per-channel
    ``scale`` is narrowed to float32, as torch requires float32 scales there.

    One quirk is reproduced, not fixed: the per-channel kernel converts to
    int64 before clamping, so values whose code would exceed ±2**63, and
    ``+inf``, come out as ``quant_min``; the per-tensor kernel saturates them
    to ``quant_max``. NaN raises ``ValueError``.

    Chapter: "Rounding" (book/04_rounding).

    >>> fake_quantize(torch.tensor([0.5, 1.5, 2.5, 9.0]), 1.0, 129, 0, 255)
    tensor([0., 2., 2., 9.])
    """
    checks.float32_tensor(x, "x")
    checks.int_range(quant_min, quant_max)
    checks.no_nan(x, "x")
    torch_release(release)  # the same arithmetic in every supported release

    # Python numbers per tensor, tensors per channel
    z: int | torch.Tensor
    inv: float | torch.Tensor
    if axis is None:
        s = checks.scale_value(scale)
        z = checks.zero_point_value(zero_point, quant_min, quant_max)
        inv = float32_reciprocal(s)
        s32 = torch.tensor(s, dtype=torch.float32)
    else:
        axis = checks.axis_value(axis, x.dim())
        n = x.shape[axis]
        shape = checks.channel_shape(x.dim(), axis)
        s32 = checks.channel_scales(scale, n, axis).float().view(shape)
        z = checks.channel_zero_points(zero_point, n, axis, quant_min, quant_max).view(shape)
        inv = 1.0 / s32
    rounded = torch.round(x * inv)
    if axis is None:
        # The per-tensor kernel adds the zero point in float32, then clamps in
        # float64 (where quant_max = 2**31 - 1 is exact) and converts to int64.
        q = (rounded + z).double().clamp_(quant_min, quant_max).long()
    else:
        # The per-channel kernel converts to int64 before clamping: values
        # beyond ±2**63 (and ±inf) overflow to INT64_MIN, then clamp to quant_min.
        assert isinstance(z, torch.Tensor)  # per channel, as set above
        v = rounded + z.float()
        v = torch.where(v.abs() < 2.0**63, v, -(2.0**63))
        q = v.long().clamp_(quant_min, quant_max)
        # ...and multiplies back in float64 before rounding to float32.
        return ((q - z).double() * s32.double()).float()
    return (q - z).float() * s32
