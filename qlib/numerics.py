"""The floor every qlib module stands on: float32 rounding, the fused multiply-add, integer bounds.

PyTorch's CPU kernels compute in float32 and int32. Python's floats are float64 and its ints
are unbounded, so every qlib function that follows a kernel needs the same few conversions;
they live here, once.

Explained in the book chapter "Rounding" (``book/04_rounding``).
"""

from __future__ import annotations

import math
import struct

import torch

INT16_MIN, INT16_MAX = -(2**15), 2**15 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
# The largest float32 below 2**31: FBGEMM's 8-bit vector kernels clamp x * inv to it before converting to int32.
INT32_FLOAT_MAX = 2147483520.0
# Elements per piece for the long elementwise loops: 4 MiB per float32 buffer, which stays in the
# CPU's cache (measured fastest of 2**18..2**22).
CHUNK = 2**20
# FBGEMM's smallest scale (6.1e-5f in ATen's choose_qparams paths): a smaller one is raised to it.
FBGEMM_SMALL_SCALE = 6.1e-5

_FLOAT32 = struct.Struct("f")
# Bits a float64 has beyond a float32's 24-bit significand, and the pattern of a float64 lying
# exactly halfway between two neighbouring float32 values.
_DROPPED_BITS_MASK = (1 << 29) - 1
_HALFWAY_PATTERN = 1 << 28


def float32(value: float) -> float:
    """Round a Python float to the nearest float32, as C's ``(float)value`` does (beyond its range: ±inf).

    Chapter: "Rounding" (book/04_rounding).

    >>> float32(0.1)
    0.10000000149011612
    """
    try:
        return _FLOAT32.unpack(_FLOAT32.pack(value))[0]
    except OverflowError:  # struct refuses what C rounds to infinity
        return math.copysign(math.inf, value)


def float32_reciprocal(scale: float) -> float:
    """``1.0f / (float)scale``: the reciprocal PyTorch's kernels multiply by.

    Chapter: "Rounding" (book/04_rounding).

    >>> float32_reciprocal(0.1)
    10.0
    """
    return (torch.tensor(1.0) / torch.tensor(scale, dtype=torch.float32)).item()


def fma_float32(
    x: torch.Tensor,
    inv: float | torch.Tensor,
    zero_point: int | float | torch.Tensor,
    out: torch.Tensor | None = None,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """``x * inv + zero_point`` rounded once to float32, like an FMA instruction.

    ``x`` is float32; ``inv`` and ``zero_point`` are numbers or float32 tensors
    that broadcast to ``x`` (``inv`` must be a float32 value).

    ``x * inv`` is exact in float64 (24-bit times 24-bit significands), so the
    float64 sum is rounded once. Rounding that to float32 is the FMA's answer
    except when the float64 sum lies exactly halfway between two float32 values
    but the true sum does not (double rounding); those few elements are moved
    one float64 step towards the true sum before the final rounding. ``out``
    (float32) and ``work`` (float64), shaped like ``x``, are optional buffers
    to compute in.

    Chapter: "Rounding" (book/04_rounding).

    >>> fma_float32(torch.tensor([0.25]), 2.0, 3)
    tensor([3.5000])
    """
    v = x.double() if work is None else work.copy_(x)
    v.mul_(inv.double() if isinstance(inv, torch.Tensor) else inv)
    v.add_(zero_point.double() if isinstance(zero_point, torch.Tensor) else zero_point)
    halfway = (v.view(torch.int64) & _DROPPED_BITS_MASK) == _HALFWAY_PATTERN
    if halfway.any():
        idx = halfway.nonzero(as_tuple=True)
        factor = inv.expand_as(x)[idx].double() if isinstance(inv, torch.Tensor) else inv
        addend = zero_point.expand_as(x)[idx].double() if isinstance(zero_point, torch.Tensor) else zero_point
        product = x[idx].double() * factor
        total = v[idx]
        # TwoSum (Knuth): total + error == product + addend exactly.
        part = total - product
        error = (product - (total - part)) + (addend - part)
        toward = torch.where(error > 0, float("inf"), float("-inf")).double()
        v[idx] = torch.where(error == 0, total, torch.nextafter(total, toward))
    return v.float() if out is None else out.copy_(v)


def wrap_int32(values: torch.Tensor) -> torch.Tensor:
    """int64 ``values`` as int32 arithmetic leaves them: wrapped around modulo 2**32.

    >>> wrap_int32(torch.tensor([2**31, -1]))
    tensor([-2147483648,          -1], dtype=torch.int32)
    """
    return ((values + 2**31).remainder(2**32) - 2**31).to(torch.int32)


def to_codes(values: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Clamped float ``values`` to integer ``dtype``, as ``.to(dtype)`` does on x86.

    A value of ``2**31`` (only an int32 ``quant_max`` of ``2**31 - 1`` rounded to
    float32 gives one) overflows to ``-2**31``, as the x86 conversion does.

    >>> to_codes(torch.tensor([3.0, 2.0**31]), torch.int32)
    tensor([          3, -2147483648], dtype=torch.int32)
    """
    if dtype == torch.int32:
        overflow = values >= 2.0**31
        return values.masked_fill(overflow, INT32_MIN).to(torch.int32)
    return values.to(dtype)
