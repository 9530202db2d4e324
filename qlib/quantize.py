"""Quantize float32 tensors exactly as ``torch.quantize_per_tensor`` and
``torch.quantize_per_channel`` do in PyTorch 2.13 on x86 CPUs.

Explained in the book chapters "The affine map" and "Rounding"
(``book/02_affine_map``, ``book/04_rounding``).

PyTorch 2.13 runs three different kernels, and they do not round alike. All of
them narrow the scale to float32, multiply by its float32 reciprocal
``inv = 1.0f / scale`` (never divide), round half to even and clamp to the
dtype's full range:

* per tensor, 8-bit (quint8, qint8): ``rint(fma(x, inv, zero_point))``, the
  zero point added *before* rounding, with one float32 rounding for
  ``x * inv + zero_point`` (FBGEMM ``QuantizeAvx2`` in ``src/QuantUtilsAvx2.cc``,
  its ``LEGACY`` variant, reached from ATen's
  ``quantize_tensor_per_tensor_affine_cpu`` in ``QuantizedOpKernels.cpp``);
* per tensor qint32, and per channel for every dtype:
  ``rint(float32(float32(x * inv) + zero_point))``, two float32 roundings
  (FBGEMM's scalar ``Quantize`` in ``include/fbgemm/QuantUtils.h``, called
  through ATen's ``quantize_val``);
* per tensor, 4- and 2-bit (quint4x2, quint2x4): ``rint(float32(x * inv)) +
  zero_point``, the zero point added *after* rounding (ATen's
  ``quantize_tensor_per_tensor_affine_sub_byte_cpu``).

The first path needs a CPU with AVX2 and FMA (FBGEMM checks both at run time,
in ``src/QuantUtils.cc``); without them torch 2.13 falls back to the scalar
arithmetic of the second path, and qlib's 8-bit results can then differ at
exact ties. Builds without FBGEMM (ARM) round differently again.

The zero point is added before rounding in the first two because the FBGEMM
headers bundled with torch 2.13 still default to the ``LEGACY`` variant, while
PyTorch PR #181067 removed the explicit ``false`` that used to select the
other one, as a no-op after FBGEMM PR #5624 had flipped that default (the
measured behaviour is certain; this cause is inferred). Values exactly halfway
between integers therefore round differently from ``round(x / scale) +
zero_point``.

One quirk of the 4- and 2-bit kernel: it converts with ``lrintf``, which
overflows for results beyond ±2**63, including ``+inf``; the clamp then turns
them into code 0, not 15. qlib reproduces that; the 8- and 32-bit kernels
saturate ``+inf`` to qmax as one would expect.
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.ranges import DTYPE_RANGES

# Storage dtype of the integer codes for each dtype quantize accepts.
CODE_DTYPES: dict[torch.dtype, torch.dtype] = {
    torch.quint8: torch.uint8,
    torch.qint8: torch.int8,
    torch.qint32: torch.int32,
    torch.quint4x2: torch.uint8,
    torch.quint2x4: torch.uint8,
    torch.uint8: torch.uint8,
    torch.int8: torch.int8,
    torch.int32: torch.int32,
}
SUB_BYTE = (torch.quint4x2, torch.quint2x4)
CHUNK = 2**18  # elements per piece: 2 MiB of float64 intermediates

# Bits a float64 has beyond a float32's 24-bit significand, and the pattern of
# a float64 lying exactly halfway between two neighbouring float32 values.
_DROPPED_BITS_MASK = (1 << 29) - 1
_HALFWAY_PATTERN = 1 << 28


def float32_reciprocal(scale: float) -> float:
    """``1.0f / (float)scale``: the reciprocal PyTorch's kernels multiply by.

    >>> float32_reciprocal(0.1)
    10.0
    """
    return (torch.tensor(1.0) / torch.tensor(scale, dtype=torch.float32)).item()


def fma_float32(x: torch.Tensor, inv: float, zero_point: int) -> torch.Tensor:
    """``x * inv + zero_point`` rounded once to float32, like an FMA instruction.

    ``x * inv`` is exact in float64 (24-bit times 24-bit significands), so the
    float64 sum is rounded once. Rounding that to float32 is the FMA's answer
    except when the float64 sum lies exactly halfway between two float32 values
    but the true sum does not (double rounding); those few elements are moved
    one float64 step towards the true sum before the final rounding.

    >>> fma_float32(torch.tensor([0.25]), 2.0, 3)
    tensor([3.5000])
    """
    v = x.double().mul_(inv).add_(zero_point)
    halfway = (v.view(torch.int64) & _DROPPED_BITS_MASK) == _HALFWAY_PATTERN
    if halfway.any():
        idx = halfway.nonzero(as_tuple=True)
        product = x[idx].double() * inv
        total = v[idx]
        # TwoSum (Knuth): total + error == product + zero_point exactly.
        part = total - product
        error = (product - (total - part)) + (zero_point - part)
        toward = torch.where(error > 0, float("inf"), float("-inf")).double()
        v[idx] = torch.where(error == 0, total, torch.nextafter(total, toward))
    return v.float()


def quantize(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    dtype: torch.dtype,
    axis: int | None = None,
) -> torch.Tensor:
    """Quantize float32 ``x`` to integer codes, bit for bit like PyTorch 2.13.

    With ``axis=None`` this equals ``torch.quantize_per_tensor(x, scale,
    zero_point, dtype).int_repr()``; with an ``axis`` it equals
    ``torch.quantize_per_channel(x, scale, zero_point, axis, dtype).int_repr()``,
    where ``scale`` and ``zero_point`` are 1-d tensors with one value per slice
    along ``axis``. The module docstring lists the arithmetic of each path.

    ``dtype`` is a quantized dtype (``torch.quint8``, ``qint8``, ``qint32``,
    ``quint4x2``, ``quint2x4``) or a plain one (``torch.uint8``, ``int8``,
    ``int32``), which is quantized like its quantized twin. The result is a
    plain integer tensor; 4- and 2-bit codes come one per ``uint8`` element,
    not packed as ``int_repr()`` packs them. Codes are clamped to the dtype's
    full range (``quint8``: 0..255, even if the observer used
    ``reduce_range``). ``±inf`` saturates to the range's ends as in torch (the
    4- and 2-bit kernel maps values beyond ±2**63 to 0, see above); NaN raises
    ``ValueError`` (torch's result for NaN depends on the kernel).

    Chapters: "The affine map" (book/02_affine_map), "Rounding" (book/04_rounding).

    >>> quantize(torch.tensor([-1.0, 0.0, 0.25, 9.0]), 0.1, 3, torch.quint8)
    tensor([ 0,  3,  6, 93], dtype=torch.uint8)

    Depends on: qlib.ranges.DTYPE_RANGES, the helpers in this module
    (per_tensor_codes, fma_float32, float32_reciprocal) and qlib.checks
    (argument checks only).
    """
    checks.float32_tensor(x, "x")
    if dtype not in CODE_DTYPES:
        allowed = ", ".join(str(d) for d in CODE_DTYPES)
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}")
    checks.no_nan(x, "x")
    qmin, qmax = DTYPE_RANGES[dtype]

    if axis is None:
        s = checks.scale_value(scale)
        z = checks.zero_point_value(zero_point, qmin, qmax)
        inv = float32_reciprocal(s)
        flat = x.reshape(-1)
        codes = torch.empty(flat.shape, dtype=CODE_DTYPES[dtype])
        # Work in cache-sized pieces: the float64 intermediates then never
        # leave the CPU cache, which makes this several times faster.
        for start in range(0, flat.numel(), CHUNK):
            piece = flat[start : start + CHUNK]
            codes[start : start + CHUNK] = per_tensor_codes(piece, inv, z, dtype)
        return codes.view(x.shape)

    if dtype in SUB_BYTE:
        raise TypeError(f"torch quantizes {dtype} per tensor only; use axis=None")
    axis = checks.axis_value(axis, x.dim())
    n = x.shape[axis]
    s = checks.channel_scales(scale, n, axis)
    z = checks.channel_zero_points(zero_point, n, axis, qmin, qmax)
    shape = checks.channel_shape(x.dim(), axis)
    inv = (1.0 / s.float()).view(shape)
    q = torch.round(x * inv + z.float().view(shape))
    return q.double().clamp_(qmin, qmax).to(CODE_DTYPES[dtype])


def per_tensor_codes(x: torch.Tensor, inv: float, zero_point: int, dtype: torch.dtype) -> torch.Tensor:
    """Integer-valued codes of ``x`` for one scale's reciprocal ``inv``, clamped to ``dtype``'s range.

    The three per-tensor kernels of torch 2.13 (see the module docstring).

    >>> per_tensor_codes(torch.tensor([0.5, 1.5]), 1.0, 129, torch.quint8)
    tensor([130., 130.])
    """
    qmin, qmax = DTYPE_RANGES[dtype]
    if dtype in SUB_BYTE:
        q = torch.round(x * inv) + zero_point
        # lrintf() overflows to INT64_MIN beyond ±2**63 (and for ±inf): torch then clamps to qmin
        q = torch.where(q.abs() < 2.0**63, q, float(qmin))
    elif qmax - qmin > 255:
        # 32-bit: two float32 roundings; clamp in float64, where 2**31 - 1 is exact
        q = torch.round(x * inv + zero_point).double()
    else:
        q = torch.round(fma_float32(x, inv, zero_point))
    return q.clamp_(qmin, qmax)
