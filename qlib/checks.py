"""Argument checks shared by qlib's functions.

Every public qlib function validates its arguments here, so that bad input gets
one clear error naming the argument, the value and what is allowed.
``python -m qlib.standalone NAME`` copies the checks a function uses into its
one-file version.
"""

from __future__ import annotations

import math

import torch

from qlib.numerics import INT32_MAX, INT32_MIN

# Smallest and largest float32 scale whose float32 reciprocal is finite and
# non-zero: outside it PyTorch divides by zero or by infinity.
SCALE_MIN = float(torch.finfo(torch.float32).tiny) / 4
SCALE_MAX = float(torch.finfo(torch.float32).max) / 4


def float32_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a float32 tensor, else raise TypeError."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of dtype float32; got {type(x).__name__}")
    if x.is_quantized or x.dtype != torch.float32:
        raise TypeError(
            f"{name} must have dtype torch.float32 (as torch.quantize_per_tensor requires); "
            f"got {x.dtype}. Convert with {name}.float() first"
        )
    return x


def no_nan(x: torch.Tensor, name: str) -> None:
    """Raise ValueError if ``x`` holds NaN: PyTorch maps NaN to an arbitrary integer."""
    if torch.isnan(x).any():
        count = int(torch.isnan(x).sum())
        raise ValueError(
            f"{name} contains {count} NaN value(s). NaN has no integer code: torch turns it into qmax, "
            "0 or -2**31, depending on the kernel, the dtype, the zero point and the release. "
            "Remove or replace NaN before quantizing"
        )


def integer_tensor(q: object, name: str) -> torch.Tensor:
    """Return ``q`` if it is a plain integer tensor, else raise TypeError."""
    allowed = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
    if not isinstance(q, torch.Tensor) or q.is_quantized or q.dtype not in allowed:
        got = q.dtype if isinstance(q, torch.Tensor) else type(q).__name__
        hint = " (call .int_repr() on a quantized tensor)" if isinstance(q, torch.Tensor) else ""
        raise TypeError(
            f"{name} must be an integer tensor of dtype uint8, int8, int16, int32 or int64; got {got}{hint}"
        )
    return q


def _as_number(value: object, name: str) -> float:
    if isinstance(value, torch.Tensor):
        if value.numel() != 1:
            raise ValueError(
                f"{name} must be a single number for per-tensor quantization (axis=None); "
                f"got a tensor of shape {tuple(value.shape)}. Pass axis=... for per-channel"
            )
        return value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or a one-element tensor; got {type(value).__name__}")
    return value


def scale_value(scale: object, name: str = "scale") -> float:
    """Check a per-tensor scale and return it as a Python float."""
    s = float(_as_number(scale, name))
    if not (math.isfinite(s) and SCALE_MIN <= s <= SCALE_MAX):
        raise ValueError(
            f"{name} must be a finite positive number between {SCALE_MIN:.3g} and {SCALE_MAX:.3g} "
            f"(so that it and its reciprocal fit in float32); got {s!r}"
        )
    return s


def zero_point_value(zero_point: object, qmin: int, qmax: int, name: str = "zero_point") -> int:
    """Check a per-tensor zero point and return it as a Python int."""
    z = _as_number(zero_point, name)
    if isinstance(z, float) and not z.is_integer():
        raise ValueError(f"{name} must be a whole number; got {z!r}")
    z = int(z)
    if not qmin <= z <= qmax:
        raise ValueError(f"{name} must lie in [{qmin}, {qmax}] for this dtype or range; got {z}")
    return z


def code_tensor(t: object, name: str, dtype: torch.dtype, what: str) -> torch.Tensor:
    """Return ``t`` if it is a plain ``dtype`` tensor of integer codes, else raise TypeError.

    ``what`` says what the codes are ("quint8 activations"); a quantized tensor
    gets the hint to pass its ``.int_repr()``.
    """
    if not isinstance(t, torch.Tensor) or t.is_quantized or t.dtype != dtype:
        got = (
            "a quantized tensor (pass its .int_repr())"
            if isinstance(t, torch.Tensor) and t.is_quantized
            else (t.dtype if isinstance(t, torch.Tensor) else type(t).__name__)
        )
        raise TypeError(f"{name} must be a {dtype} tensor of codes ({what}); got {got}")
    return t


def int_range(
    quant_min: object,
    quant_max: object,
    lo: int = INT32_MIN,
    hi: int = INT32_MAX,
    *,
    distinct: bool = False,
    contains_zero: bool = False,
    of: str = "",
) -> tuple[int, int]:
    """Check a clamp range: ints with ``lo <= quant_min <= quant_max <= hi``; return them.

    ``distinct`` asks for ``quant_min < quant_max``, ``contains_zero`` for
    ``quant_min <= 0 <= quant_max`` (observers need both); ``of`` ends the
    message (" for torch.uint8").

    >>> int_range(0, 255, 0, 255)
    (0, 255)
    """
    for name, value in (("quant_min", quant_min), ("quant_max", quant_max)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise TypeError(f"{name} must be an int; got {type(value).__name__}")
    assert isinstance(quant_min, int) and isinstance(quant_max, int)  # the loop above raised otherwise
    below = "<" if distinct else "<="
    ok = lo <= quant_min <= quant_max <= hi and (quant_min < quant_max or not distinct)
    rule = f"{lo} <= quant_min {below} quant_max <= {hi}"
    if contains_zero:
        ok = ok and quant_min <= 0 <= quant_max
        rule = f"{lo} <= quant_min <= 0 <= quant_max <= {hi} and quant_min {below} quant_max"
    if not ok:
        raise ValueError(f"need {rule}{of}; got quant_min={quant_min}, quant_max={quant_max}")
    return quant_min, quant_max


def axis_value(axis: object, ndim: int) -> int:
    """Check a channel axis for a tensor with ``ndim`` dimensions; return it non-negative."""
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise TypeError(f"axis must be an int or None; got {type(axis).__name__}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"axis must be in [{-ndim}, {ndim - 1}] for a {ndim}-d tensor; got {axis}")
    return axis % ndim


def channel_scales(scale: object, length: int, axis: int, name: str = "scale") -> torch.Tensor:
    """Check per-channel scales (one per slice along ``axis``); return them as float64."""
    if not isinstance(scale, torch.Tensor) or not scale.is_floating_point():
        raise TypeError(f"{name} must be a 1-d floating-point tensor for per-channel quantization")
    if scale.dim() != 1 or scale.numel() != length:
        raise ValueError(
            f"{name} must have one value per channel: shape ({length},) for size {length} along "
            f"axis {axis}; got shape {tuple(scale.shape)}"
        )
    s = scale.double()
    bad = ~(torch.isfinite(s) & (s >= SCALE_MIN) & (s <= SCALE_MAX))
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(
            f"every {name} must be a finite positive number between {SCALE_MIN:.3g} and "
            f"{SCALE_MAX:.3g}; {name}[{i}] is {s[i].item()!r}"
        )
    return s


def channel_zero_points(
    zero_point: object, length: int, axis: int, qmin: int, qmax: int, name: str = "zero_point"
) -> torch.Tensor:
    """Check per-channel zero points; return them as int64."""
    if not isinstance(zero_point, torch.Tensor) or zero_point.is_floating_point() or zero_point.is_complex():
        raise TypeError(f"{name} must be a 1-d integer tensor for per-channel quantization")
    if zero_point.dim() != 1 or zero_point.numel() != length:
        raise ValueError(
            f"{name} must have one value per channel: shape ({length},) for size {length} "
            f"along axis {axis}; got shape {tuple(zero_point.shape)}"
        )
    z = zero_point.long()
    bad = (z < qmin) | (z > qmax)
    if bad.any():
        i = int(bad.nonzero()[0])
        raise ValueError(f"every {name} must lie in [{qmin}, {qmax}]; {name}[{i}] is {int(z[i])}")
    return z


def channel_shape(ndim: int, axis: int) -> list[int]:
    """Shape that broadcasts a per-channel vector along ``axis`` of an ``ndim``-d tensor."""
    shape = [1] * ndim
    shape[axis] = -1
    return shape
