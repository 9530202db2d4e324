"""Quantize float32 tensors exactly as ``torch.quantize_per_tensor`` and
``torch.quantize_per_channel`` do on x86 CPUs, in torch 2.13 and 2.14.

Explained in the book chapters "The affine map" and "Rounding"
(``book/02_affine_map``, ``book/04_rounding``).

Every path narrows the scale to float32, multiplies by its float32 reciprocal
``inv = 1.0f / scale`` (never divides), rounds half to even and clamps to the
dtype's full range. What differs, between paths and between releases, is
where the zero point is added:

* torch 2.14 adds it *after* rounding on every path: ``rint(float32(x * inv))
  + zero_point``. The 8-bit per-tensor kernel (FBGEMM ``QuantizeAvx2`` in
  ``src/QuantUtilsAvx2.cc``) adds it as an int32, which wraps around for
  results beyond about ±2**31: there ``+inf`` (or any ``x * inv >= 2**31 -
  128``) with a zero point of 128 or more gives code ``qmin``, not ``qmax``, and
  ``-inf`` with a negative zero point gives ``qmax``. qint32 and per-channel
  (FBGEMM's scalar ``Quantize`` in ``include/fbgemm/QuantUtils.h``) add it in
  float32.
* torch 2.13 adds it *before* rounding, except on the 4- and 2-bit path: the
  8-bit per-tensor kernel computes ``rint(fma(x, inv, zero_point))``, one
  float32 rounding of ``x * inv + zero_point`` (a fused multiply-add); qint32
  and per-channel compute ``rint(float32(float32(x * inv) + zero_point))``, two
  roundings. This is FBGEMM's ``LEGACY`` variant: the FBGEMM headers inside
  the torch 2.13 wheel default ``LEGACY`` to ``true``, and PyTorch PR 181067
  had removed the explicit ``false`` that used to select the other variant;
  FBGEMM PR 5624 flipped the default, and torch 2.14 bundles that FBGEMM.
* 4- and 2-bit (quint4x2, quint2x4), both releases: ``rint(float32(x * inv)) +
  zero_point`` in float32 (ATen's
  ``quantize_tensor_per_tensor_affine_sub_byte_cpu``), converted with
  ``lrintf``, which overflows for results beyond ±2**63 (``+inf`` included):
  the clamp then turns them into code 0, not 15.

The 8-bit fast path needs a CPU with AVX2 and FMA (FBGEMM checks both at run
time, in ``src/QuantUtils.cc``); elsewhere FBGEMM falls back to its scalar
``Quantize``, which torch 2.13 runs with two roundings instead of one.
"""

from __future__ import annotations

from typing import cast

import torch

from qlib import checks
from qlib.numerics import CHUNK, INT32_FLOAT_MAX, INT32_MIN, float32_reciprocal, fma_float32
from qlib.ranges import CODE_DTYPES, DTYPE_RANGES
from qlib.registry import Settings, quantized, register
from qlib.releases import torch_release

SUB_BYTE = (torch.quint4x2, torch.quint2x4)


# Below |x * inv + zp| = 2**10 (where every 8-bit code is decided) the float32 sum with two
# roundings lies within 2**-12 of the FMA's: only a rint tie closer than this can tell them apart.
NEAR_TIE = 0.5 - 2.0**-11


def _fma_codes(
    x: torch.Tensor, inv: float, zero_point: int, out: torch.Tensor, work: torch.Tensor | None
) -> torch.Tensor:
    """``rint(fma(x, inv, zero_point))`` in float32, unclamped (``out`` and ``work`` are scratch).

    The plain float32 ``x * inv + zero_point`` rounds twice; its ``rint`` equals the
    FMA's except near a tie, so only elements within ``0.5 - NEAR_TIE`` of one are
    recomputed with ``fma_float32``. It gives the same codes as ``fma_float32`` on
    every element, in a fraction of the time.
    """
    total = torch.mul(x, inv, out=out).add_(zero_point)
    codes = torch.empty_like(out) if work is None else work.view(torch.float32)[: out.numel()]
    torch.round(total, out=codes)
    near = total.sub_(codes).abs_() >= NEAR_TIE  # NaN (from ±inf) is not near
    idx = _true_positions(near.reshape(-1))
    if idx.numel():
        flat = codes.view(-1)
        flat[idx] = fma_float32(x.reshape(-1)[idx], inv, zero_point).round_()
    return codes


def _true_positions(mask: torch.Tensor) -> torch.Tensor:
    """Where a 1-d bool tensor is True, found eight at a time (nonzero scans 8-byte words, not bytes)."""
    padded = mask if mask.numel() % 8 == 0 else torch.cat([mask, mask.new_zeros(-mask.numel() % 8)])
    words = padded.view(torch.int64).nonzero().view(-1)
    positions = (words.view(-1, 1) * 8 + torch.arange(8)).view(-1)
    return positions[padded[positions]]


def quantize(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    dtype: torch.dtype,
    axis: int | None = None,
    *,
    release: str | None = None,
) -> torch.Tensor:
    """Quantize float32 ``x`` to integer codes, bit for bit like PyTorch on an x86 CPU.

    With ``axis=None`` this equals ``torch.quantize_per_tensor(x, scale,
    zero_point, dtype).int_repr()``; with an ``axis`` it equals
    ``torch.quantize_per_channel(x, scale, zero_point, axis, dtype).int_repr()``,
    where ``scale`` and ``zero_point`` are 1-d tensors with one value per slice
    along ``axis``. ``release`` (``"2.13"`` or ``"2.14"``; None: the installed
    torch) chooses whose arithmetic; the module docstring lists each path's.

    ``dtype`` is a quantized dtype (``torch.quint8``, ``qint8``, ``qint32``,
    ``quint4x2``, ``quint2x4``) or a plain one (``torch.uint8``, ``int8``,
    ``int32``), which is quantized like its quantized twin. The result is a
    plain integer tensor; 4- and 2-bit codes come one per ``uint8`` element,
    not packed as ``int_repr()`` packs them. Codes are clamped to the dtype's
    full range (``quint8``: 0..255, even if the observer used
    ``reduce_range``). Values far past the range, ``±inf`` included, saturate
    to the range's ends except where torch's kernels wrap around (see the
    module docstring); NaN raises ``ValueError`` (torch's result for NaN
    depends on the kernel).

    Chapters: "The affine map" (book/02_affine_map), "Rounding" (book/04_rounding).

    >>> quantize(torch.tensor([-1.0, 0.0, 0.26, 9.0]), 0.1, 3, torch.quint8)
    tensor([ 0,  3,  6, 93], dtype=torch.uint8)
    >>> quantize(torch.tensor([0.5, 1.5, 2.5]), 1.0, 129, torch.quint8, release="2.13")
    tensor([130, 130, 132], dtype=torch.uint8)
    >>> quantize(torch.tensor([0.5, 1.5, 2.5]), 1.0, 129, torch.quint8, release="2.14")
    tensor([129, 131, 131], dtype=torch.uint8)
    """
    checks.float32_tensor(x, "x")
    if dtype not in CODE_DTYPES:
        allowed = ", ".join(str(d) for d in CODE_DTYPES)
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}")
    zero_point_first = torch_release(release) == "2.13"
    checks.no_nan(x, "x")
    qmin, qmax = DTYPE_RANGES[dtype]

    # Python numbers per tensor, tensors per channel
    s: float | torch.Tensor
    z: int | torch.Tensor
    inv: float | torch.Tensor
    if axis is None:
        s = checks.scale_value(scale)
        z = checks.zero_point_value(zero_point, qmin, qmax)
        inv = float32_reciprocal(s)
        flat = x.reshape(-1)
        codes = torch.empty(flat.shape, dtype=CODE_DTYPES[dtype])
        # Work in cache-sized pieces, in buffers allocated once: the arithmetic
        # then never leaves the CPU cache, which makes this many times faster.
        out = torch.empty(min(CHUNK, flat.numel()), dtype=torch.float32)
        work = torch.empty(out.shape, dtype=torch.float32) if zero_point_first else None
        for start in range(0, flat.numel(), CHUNK):
            piece = flat[start : start + CHUNK]
            n = piece.numel()
            w = None if work is None else work[:n]
            codes[start : start + n] = per_tensor_codes(piece, inv, z, dtype, zero_point_first, out[:n], w)
        return codes.view(x.shape)

    if dtype in SUB_BYTE:
        raise TypeError(f"torch quantizes {dtype} per tensor only; use axis=None")
    axis = checks.axis_value(axis, x.dim())
    n = x.shape[axis]
    s = checks.channel_scales(scale, n, axis)
    z = checks.channel_zero_points(zero_point, n, axis, qmin, qmax)
    shape = checks.channel_shape(x.dim(), axis)
    inv = (1.0 / s.float()).view(shape)
    zf = z.float().view(shape)  # FBGEMM's scalar Quantize adds the int32 zero point to a float
    q = torch.round(x * inv + zf) if zero_point_first else torch.round(x * inv) + zf
    return q.double().clamp_(qmin, qmax).to(CODE_DTYPES[dtype])


def per_tensor_codes(
    x: torch.Tensor,
    inv: float,
    zero_point: int,
    dtype: torch.dtype,
    zero_point_first: bool,
    out: torch.Tensor | None = None,
    work: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integer-valued codes of ``x`` for one scale's reciprocal ``inv``, clamped to ``dtype``'s range.

    The per-tensor kernels of the module docstring: ``zero_point_first=True``
    is torch 2.13's arithmetic, ``False`` torch 2.14's. The codes come as
    floats (float64 for 32-bit dtypes, which need it for their range);
    ``out`` and ``work`` (float32, or ``work`` float64), shaped like ``x``, are optional
    buffers for the 8-bit arithmetic.

    Chapter: "Rounding" (book/04_rounding).

    >>> per_tensor_codes(torch.tensor([0.5, 1.5]), 1.0, 129, torch.quint8, zero_point_first=True)
    tensor([130., 130.])
    >>> per_tensor_codes(torch.tensor([0.5, 1.5]), 1.0, 129, torch.quint8, zero_point_first=False)
    tensor([129., 131.])
    """
    qmin, qmax = DTYPE_RANGES[dtype]
    if dtype in SUB_BYTE:
        q = torch.round(x * inv) + zero_point
        # lrintf() overflows to INT64_MIN beyond ±2**63 (and for ±inf): torch then clamps to qmin
        return torch.where(q.abs() < 2.0**63, q, float(qmin)).clamp_(qmin, qmax)
    if qmax - qmin > 255:
        # 32-bit: the float32 sum, clamped in float64, where 2**31 - 1 is exact
        q = torch.round(x * inv + zero_point) if zero_point_first else torch.round(x * inv) + zero_point
        return q.double().clamp_(qmin, qmax)
    q = torch.empty_like(x) if out is None else out
    if zero_point_first:
        return _fma_codes(x, inv, zero_point, q, work).clamp_(qmin, qmax)
    torch.mul(x, inv, out=q).round_()
    # The int32 add of the zero point wraps around at the ends of the int32 range.
    wraps = None
    if zero_point >= 128:
        wraps = q >= INT32_FLOAT_MAX
    elif zero_point < 0:
        wraps = q <= INT32_MIN
    # Exact below 2**24; beyond, the sum clamps to the same end whatever its rounding.
    q.add_(zero_point).clamp_(qmin, qmax)
    if wraps is not None:
        q.masked_fill_(wraps, qmin if zero_point >= 128 else qmax)
    return q


@register(
    "aten::quantize_per_tensor",
    function="qlib.quantize",
    modules=("torch.ao.nn.quantized.Quantize", "torch.quantize_per_tensor"),
    on_float=True,
)
def _quantize_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    x, scale, zero_point, dtype = args
    if isinstance(x, (list, tuple)):
        raise ValueError("qlib models quantize_per_tensor of one tensor, not a list of them")
    scale = scale.item() if isinstance(scale, torch.Tensor) else scale
    # the op's zero point is an integer (torch's stub types .item() as int | float | bool)
    zero_point = cast(int, zero_point.item()) if isinstance(zero_point, torch.Tensor) else zero_point
    codes = quantize(x, scale, zero_point, dtype, release=settings.release)
    return quantized(codes, scale, zero_point, dtype)
