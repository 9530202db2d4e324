"""Choose scale and zero point from an observed range, exactly as PyTorch's
``MinMaxObserver`` and ``PerChannelMinMaxObserver`` do in
``calculate_qparams()`` (torch 2.13 and 2.14 run the same code).

Explained in the book chapter "Choosing scale and zero point"
(``book/05_qparams``). Source: ``torch/ao/quantization/observer.py``,
``UniformQuantizationObserverBase._calculate_qparams`` and
``torch/ao/quantization/utils.py``, ``calculate_qmin_qmax``.
"""

from __future__ import annotations

import math
import warnings

import torch

from qlib import checks
from qlib.ranges import DTYPE_RANGES, qrange

# dtypes whose symmetric zero point sits mid-range instead of at 0.
UNSIGNED_8BIT = (torch.quint8, torch.uint8)


def observer_range(
    dtype: torch.dtype,
    reduce_range: bool = False,
    quant_min: int | None = None,
    quant_max: int | None = None,
) -> tuple[int, int]:
    """The ``(qmin, qmax)`` an observer computes with.

    Without a custom range this is ``qrange(dtype, reduce_range)``. With one,
    both ends must be given, must include 0 and lie inside the dtype's range,
    and ``reduce_range`` halves each end with floor division, as torch does
    (``calculate_qmin_qmax`` in ``torch/ao/quantization/utils.py``).

    Chapter: "Choosing scale and zero point" (book/05_qparams).

    >>> observer_range(torch.quint8, reduce_range=True)
    (0, 127)
    >>> observer_range(torch.qint8, True, quant_min=-15, quant_max=15)
    (-8, 7)
    """
    if quant_min is None and quant_max is None:
        return qrange(dtype, reduce_range)
    if quant_min is None or quant_max is None:
        raise ValueError("give both quant_min and quant_max, or neither")
    checks.int_range(quant_min, quant_max, *qrange(dtype), distinct=True, contains_zero=True, of=f" for {dtype}")
    if reduce_range:
        lo, hi = quant_min // 2, quant_max // 2
        if lo == hi:
            raise ValueError(
                f"reduce_range halves [{quant_min}, {quant_max}] to [{lo}, {hi}], a single value; "
                "widen the range or drop reduce_range"
            )
        return lo, hi
    return quant_min, quant_max


def choose_qparams(
    min_val: float | torch.Tensor,
    max_val: float | torch.Tensor,
    dtype: torch.dtype = torch.quint8,
    symmetric: bool = False,
    reduce_range: bool = False,
    quant_min: int | None = None,
    quant_max: int | None = None,
    eps: float = torch.finfo(torch.float32).eps,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return ``(scale, zero_point)`` for the range ``[min_val, max_val]``.

    Bit for bit what ``MinMaxObserver`` (scalar ``min_val``/``max_val``) or
    ``PerChannelMinMaxObserver`` (1-d tensors, one entry per channel) return
    from ``calculate_qparams()`` after observing that range, for the affine
    (``symmetric=False``) and symmetric qschemes:

    * the range is first widened to include 0, so 0.0 is always exactly
      representable;
    * affine: ``scale = (max - min) / (qmax - qmin)``, ``zero_point = qmin -
      round(min / scale)`` (half to even), clamped to ``[qmin, qmax]``;
    * symmetric: ``scale = max(-min, max) / ((qmax - qmin) / 2)``, so 8 bits
      divide by 127.5, not 127; ``zero_point`` is 0, or 128 for quint8/uint8
      (the middle of a custom range);
    * ``scale`` is never below ``eps``; ``reduce_range`` drops one bit.

    For 32-bit dtypes torch computes the affine zero point in int32, which
    overflows when the eps floor makes ``min / scale`` exceed 2**31 (for example
    qint32 with range [-257, 0] gives zero point 0 instead of 8388608). qlib
    returns torch's value and emits a ``RuntimeWarning`` naming the exact one.

    ``min_val``/``max_val`` are taken as float32, as observers store them.
    ``scale`` is float32 and ``zero_point`` int64, each shaped like
    ``min_val`` (torch returns shape ``(1,)`` for a scalar range, and int32
    zero points for affine qparams).

    Chapter: "Choosing scale and zero point" (book/05_qparams).

    >>> choose_qparams(-1.0, 2.0)
    (tensor(0.0118), tensor(85))
    >>> choose_qparams(-1.0, 2.0, dtype=torch.qint8, symmetric=True)
    (tensor(0.0157), tensor(0))

    """
    if dtype not in DTYPE_RANGES:
        allowed = ", ".join(str(d) for d in DTYPE_RANGES)
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}")
    if not isinstance(eps, (int, float)) or isinstance(eps, bool) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive number; got {eps!r}")
    lo_t = _range_end(min_val, "min_val")
    hi_t = _range_end(max_val, "max_val")
    if lo_t.shape != hi_t.shape:
        raise ValueError(
            f"min_val and max_val must have the same shape; got {tuple(lo_t.shape)} and {tuple(hi_t.shape)}"
        )
    if (lo_t > hi_t).any():
        i = (lo_t > hi_t).nonzero()[0].tolist()
        raise ValueError(
            f"min_val must not exceed max_val; at index {i}: {lo_t[tuple(i)].item()} > {hi_t[tuple(i)].item()}"
        )
    qmin, qmax = observer_range(dtype, reduce_range, quant_min, quant_max)

    zero = torch.zeros_like(lo_t)
    min_neg = torch.minimum(lo_t, zero)
    max_pos = torch.maximum(hi_t, zero)
    eps_t = torch.tensor(eps, dtype=torch.float32)
    if symmetric:
        amax = torch.maximum(-min_neg, max_pos)
        scale = torch.maximum(amax / (float(qmax - qmin) / 2), eps_t)
        mid = (128 if quant_min is None else (qmin + qmax) // 2) if dtype in UNSIGNED_8BIT else 0
        zero_point = torch.full_like(lo_t, mid, dtype=torch.int64)
    else:
        scale = torch.maximum((max_pos - min_neg) / float(qmax - qmin), eps_t)
        steps = torch.round(min_neg / scale)
        # torch computes this in int32, which overflows for 32-bit ranges once
        # the eps floor makes min / scale exceed 2**31; reproduce it, but say so.
        zero_point = (qmin - steps.to(torch.int32)).clamp(qmin, qmax).long()
        exact = (qmin - steps.double()).clamp(qmin, qmax).long()
        if not torch.equal(zero_point, exact):
            warnings.warn(
                f"zero_point {zero_point.tolist()} reproduces an int32 overflow in torch's observer; "
                f"the exact zero point for this range and scale is {exact.tolist()}",
                RuntimeWarning,
                stacklevel=2,
            )
    if not torch.isfinite(scale).all():
        raise ValueError(
            f"the range [{min_val}, {max_val}] is too wide: its scale overflows float32 "
            "(torch would return scale inf, which no kernel can use)"
        )
    return scale, zero_point


def _range_end(value: float | torch.Tensor, name: str) -> torch.Tensor:
    if isinstance(value, torch.Tensor):
        if not value.is_floating_point():
            raise TypeError(f"{name} must be a float or a floating-point tensor; got {value.dtype}")
        if value.dim() > 1:
            raise ValueError(f"{name} must be a number or a 1-d tensor (per channel); got shape {tuple(value.shape)}")
        t = value.detach().float()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        t = torch.tensor(float(value), dtype=torch.float32)
    else:
        raise TypeError(f"{name} must be a float or a tensor; got {type(value).__name__}")
    if not torch.isfinite(t).all():
        raise ValueError(
            f"{name} must be finite; got {t.tolist()}. (If it comes from an observer that has seen "
            "no data, that observer holds min=+inf, max=-inf; torch then returns scale 1.0, zero point 0)"
        )
    return t
