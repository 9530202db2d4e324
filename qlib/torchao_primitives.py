"""torchao's affine quantization primitives, as ``quantize_`` uses them, bit for bit.

Explained in the book chapter "The same model on torchao" (``book/11_torchao``).
Source: ``torchao/quantization/quant_primitives.py`` in torchao 0.18
(``choose_qparams_affine``, ``quantize_affine``, ``dequantize_affine`` and the
``_get_reduction_params`` they share). They are PyTorch tensor code, so torch
2.13 and 2.14 compute them alike; what they compute is torchao's.

A ``block_size`` says which elements share one scale and zero point: a tuple
with one entry per dimension of ``x``, each either the whole dimension, 1, or
a divisor of it. ``x.shape`` is per tensor; ``(1, K)`` for an ``(N, K)``
tensor is per row (one scale per row: torchao's ``PerRow``, the per-token
granularity of dynamic activation quantization, and per output channel for a
Linear's weight); ``(1, C, H, W)`` is per channel along axis 0.

The arithmetic, float32 input:

* ``choose_qparams_affine``: per block, ``min`` and ``max`` widened to include
  0; **symmetric**: ``scale = max(-min, max) / ((qmax - qmin) / 2)``, so 8 bits
  divide by 127.5, and ``zero_point = int((qmax + qmin + 1) / 2)`` (0 for int8,
  128 for uint8); **asymmetric**: ``scale = (max - min) / (qmax - qmin)``,
  ``zero_point = clamp(qmin - rint(min / scale), qmin, qmax)``. Every step is
  float32; ``scale`` is then floored at ``eps`` (default: the smallest normal
  float32, 1.2e-38; ``quantize_``'s int8 configs pass float32's epsilon,
  1.2e-7) and the results converted to ``scale_dtype`` and
  ``zero_point_dtype``.
* ``quantize_affine``: ``clamp(rint(x * (1 / scale)) + zero_point, qmin,
  qmax)``, where ``1 / scale`` is a reciprocal in the scale's dtype (float32:
  ``1.0f / scale``, the ATen kernels' factor; float64 makes the whole
  computation float64) and the zero point is added after rounding. As in the
  PT2E op, an int32 ``qmax`` of ``2**31 - 1`` is ``2**31`` in float32, and the
  conversion to int32 turns it into ``-2**31``.
* ``dequantize_affine``: ``(float32(q) - float32(zero_point)) * scale``.

Symmetric 8-bit quantization puts the block's largest magnitude at 127.5
steps, up to float32 rounding: a positive maximum whose product comes out at
127.5 or above rounds to 128 (half to even) and is clamped to 127, one below
it rounds to 127; a negative one gives -128 or -127 and is never clamped.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from qlib import checks
from qlib.numerics import to_codes
from qlib.ranges import DTYPE_RANGES, PLAIN_DTYPES

# The integer dtypes qlib follows torchao for (torchao also has sub-byte and float8 dtypes).
MAPPING_TYPES = ("SYMMETRIC", "ASYMMETRIC")
SCALE_DTYPES = (torch.float32, torch.float64)


def choose_qparams_affine(
    x: torch.Tensor,
    mapping_type: str | object,
    block_size: Sequence[int],
    dtype: torch.dtype,
    quant_min: int | None = None,
    quant_max: int | None = None,
    eps: float | None = None,
    scale_dtype: torch.dtype | None = None,
    zero_point_dtype: torch.dtype = torch.int32,
    keepdim: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` per block of ``x``, equal to torchao's ``choose_qparams_affine``.

    ``mapping_type`` is ``"symmetric"`` or ``"asymmetric"`` (or torchao's
    ``MappingType.SYMMETRIC``/``ASYMMETRIC``: anything whose ``name`` is one
    of those). ``quant_min``/``quant_max`` default to ``dtype``'s range;
    ``eps`` to the smallest normal float32; ``scale_dtype`` to float32. The
    results have one entry per block: shaped ``x.shape // block_size`` with
    ``keepdim=True``, with the reduced dimensions dropped otherwise (as torchao
    does). The module docstring has the arithmetic.

    Chapter: "The same model on torchao" (book/11_torchao).

    >>> x = torch.tensor([[0.5, -1.0, 0.25], [0.0, 2.0, 3.0]])
    >>> choose_qparams_affine(x, "symmetric", (1, 3), torch.int8, eps=2**-23, zero_point_dtype=torch.int8)
    (tensor([0.0078, 0.0235]), tensor([0, 0], dtype=torch.int8))
    >>> choose_qparams_affine(x, "asymmetric", (1, 3), torch.uint8)
    (tensor([0.0059, 0.0118]), tensor([170,   0], dtype=torch.int32))
    """
    checks.float32_tensor(x, "x")
    kind = _mapping_type(mapping_type)
    qmin, qmax = quant_range(dtype, quant_min, quant_max)
    if eps is None:
        eps = torch.finfo(torch.float32).tiny  # torchao: the smallest normal number of x's dtype
    elif isinstance(eps, bool) or not isinstance(eps, (int, float)) or not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite positive number or None; got {eps!r}")
    scale_dtype = torch.float32 if scale_dtype is None else scale_dtype
    if scale_dtype not in SCALE_DTYPES:
        raise TypeError(f"scale_dtype must be torch.float32 or torch.float64; got {scale_dtype!r}")
    if not isinstance(zero_point_dtype, torch.dtype) or zero_point_dtype.is_complex:
        raise TypeError(f"zero_point_dtype must be a torch dtype; got {zero_point_dtype!r}")
    checks.no_nan(x, "x")
    blocks, reduced = block_shape(x.shape, block_size)
    values = x.reshape(blocks)
    min_val = torch.amin(values, dim=reduced, keepdim=keepdim)
    max_val = torch.amax(values, dim=reduced, keepdim=keepdim)
    min_neg = torch.minimum(min_val, torch.zeros_like(min_val))  # the range always includes 0
    max_pos = torch.maximum(max_val, torch.zeros_like(max_val))
    if kind == "SYMMETRIC":
        amax = torch.maximum(-min_neg, max_pos)
        scale = amax / (float(qmax - qmin) / 2)  # float32: 8 bits divide by 127.5
        zero_point = torch.full_like(scale, int((qmax + qmin + 1) / 2))
        scale = torch.clamp(scale, min=eps)
    else:
        scale = torch.clamp((max_pos - min_neg) / float(qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(min_neg / scale), qmin, qmax)  # float32, half to even
    if keepdim:
        per_block = [size // block for size, block in zip(x.shape, block_size, strict=True)]
        scale, zero_point = scale.reshape(per_block), zero_point.reshape(per_block)
    return scale.to(scale_dtype), zero_point.to(zero_point_dtype)


def quantize_affine(
    x: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    dtype: torch.dtype,
    quant_min: int | None = None,
    quant_max: int | None = None,
) -> torch.Tensor:
    """Codes of ``x``, equal to torchao's ``quantize_affine``: ``clamp(rint(x * (1/scale)) + zero_point)``.

    ``scale`` (float32 or float64) and ``zero_point`` hold one value per block
    of ``block_size``, in any shape with that many elements in block order (as
    ``choose_qparams_affine`` returns them). Codes are clamped to
    ``[quant_min, quant_max]`` (default: ``dtype``'s range) and returned as
    ``dtype``. torchao fails on ``zero_point=None`` (it adds None); qlib says so.

    Chapter: "The same model on torchao" (book/11_torchao).

    >>> x = torch.tensor([[0.5, -1.0, 0.25], [0.0, 2.0, 3.0]])
    >>> scale, zero_point = choose_qparams_affine(x, "symmetric", (1, 3), torch.int8)
    >>> quantize_affine(x, (1, 3), scale, zero_point, torch.int8)
    tensor([[  64, -127,   32],
            [   0,   85,  127]], dtype=torch.int8)
    """
    checks.float32_tensor(x, "x")
    checks.no_nan(x, "x")
    qmin, qmax = quant_range(dtype, quant_min, quant_max)
    blocks, reduced = block_shape(x.shape, block_size)
    per_block = [1 if i in reduced else size for i, size in enumerate(blocks)]
    s = _block_values(scale, per_block, "scale")
    if s.dtype not in SCALE_DTYPES:
        raise TypeError(f"scale must be a float32 or float64 tensor; got {s.dtype}")
    z = _block_values(zero_point, per_block, "zero_point")
    inv = 1.0 / s  # a reciprocal in the scale's dtype: float32 gives 1.0f / scale
    values = torch.round(x.reshape(blocks) * inv) + z  # the zero point after rounding
    # the bounds are converted to the values' dtype: in float32, an int32 qmax of 2**31 - 1 is 2**31
    return to_codes(values.clamp(qmin, qmax), dtype).reshape(x.shape)


def dequantize_affine(
    q: torch.Tensor,
    block_size: Sequence[int],
    scale: torch.Tensor,
    zero_point: torch.Tensor | None,
    dtype: torch.dtype,
    quant_min: int | None = None,
    quant_max: int | None = None,
) -> torch.Tensor:
    """float32 values of codes ``q``, equal to torchao's ``dequantize_affine``: ``(q - zero_point) * scale``.

    ``q`` must have dtype ``dtype`` (torchao asserts it); the difference is
    taken in float32 (``q`` and ``zero_point`` converted first), the product in
    the scale's dtype, and the result is float32. ``zero_point`` may be None
    (nothing subtracted).

    Chapter: "The same model on torchao" (book/11_torchao).

    >>> q = torch.tensor([[64, -128, 32], [0, 85, 127]], dtype=torch.int8)
    >>> scale = torch.tensor([1 / 127.5, 3 / 127.5])
    >>> dequantize_affine(q, (1, 3), scale, torch.zeros(2, dtype=torch.int8), torch.int8)
    tensor([[ 0.5020, -1.0039,  0.2510],
            [ 0.0000,  2.0000,  2.9882]])
    """
    checks.integer_tensor(q, "q")
    if q.dtype != dtype:
        raise TypeError(f"q must have dtype {dtype} (torchao checks that the codes are of dtype); got {q.dtype}")
    quant_range(dtype, quant_min, quant_max)
    blocks, reduced = block_shape(q.shape, block_size)
    per_block = [1 if i in reduced else size for i, size in enumerate(blocks)]
    s = _block_values(scale, per_block, "scale")
    if s.dtype not in SCALE_DTYPES:
        raise TypeError(f"scale must be a float32 or float64 tensor; got {s.dtype}")
    values = q.reshape(blocks).float()
    if zero_point is not None:
        values = values - _block_values(zero_point, per_block, "zero_point").float()
    return (values * s).float().reshape(q.shape)


def quant_range(dtype: object, quant_min: object, quant_max: object) -> tuple[int, int]:
    """``(quant_min, quant_max)``, each defaulting to ``dtype``'s end, checked to lie inside its range."""
    if dtype not in PLAIN_DTYPES:
        allowed = ", ".join(str(d) for d in PLAIN_DTYPES)
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}")
    lo, hi = DTYPE_RANGES[dtype]
    qmin = lo if quant_min is None else quant_min
    qmax = hi if quant_max is None else quant_max
    return checks.int_range(qmin, qmax, lo, hi, distinct=True, of=f" for {dtype}")


def block_shape(shape: torch.Size, block_size: object) -> tuple[list[int], list[int]]:
    """torchao's ``_get_reduction_params``: the shape that puts each block in dimensions of its own, and those dimensions.

    A dimension whose block is neither 1 nor the whole dimension is split in
    two, (number of blocks, block); the block's dimensions are reduced over.

    >>> block_shape(torch.Size([4, 6]), (1, 3))
    ([4, 2, 3], [2])
    """
    if isinstance(block_size, (str, bytes)) or not isinstance(block_size, Sequence):
        raise TypeError(f"block_size must be a tuple of ints, one per dimension; got {block_size!r}")
    if len(block_size) != len(shape):
        raise ValueError(f"block_size needs one entry per dimension of the {len(shape)}-d input; got {block_size!r}")
    blocks, reduced = [], []
    for size, block in zip(shape, block_size, strict=True):
        if isinstance(block, bool) or not isinstance(block, int) or block < 1 or size % block:
            raise ValueError(f"every block size must be a positive divisor of its dimension; got {block!r} for {size}")
        if block not in (1, size):
            blocks += [size // block, block]
            reduced.append(len(blocks) - 1)
        else:
            blocks.append(size)
            if block != 1:
                reduced.append(len(blocks) - 1)
    return blocks, reduced


def _block_values(values: object, per_block: list[int], name: str) -> torch.Tensor:
    """``scale`` or ``zero_point`` viewed so that it broadcasts over the blocks, as torchao views it."""
    if not isinstance(values, torch.Tensor):
        hint = " (torchao adds it to the rounded values and fails on None)" if values is None else ""
        raise TypeError(f"{name} must be a tensor with one value per block; got {type(values).__name__}{hint}")
    count = math.prod(per_block)
    if values.numel() != count:
        raise ValueError(f"{name} must hold one value per block, {count}; got {values.numel()}")
    return values.reshape(per_block)


def _mapping_type(mapping_type: object) -> str:
    name = getattr(mapping_type, "name", mapping_type)
    if not isinstance(name, str) or name.upper() not in MAPPING_TYPES:
        raise ValueError(f"mapping_type must be 'symmetric' or 'asymmetric' (or torchao's MappingType); got {name!r}")
    return name.upper()
