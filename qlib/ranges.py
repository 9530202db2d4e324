"""Integer ranges of the dtypes PyTorch quantizes to.

Explained in the book chapter "Integer types and their ranges" (``book/03_dtypes``).
"""

from __future__ import annotations

import torch

# dtype -> (qmin, qmax). The quantized dtypes (quint8, ...) are what
# torch.quantize_per_tensor produces; the plain ones (uint8, ...) are what
# PyTorch now recommends instead, with scale and zero point kept by the user.
DTYPE_RANGES: dict[torch.dtype, tuple[int, int]] = {
    torch.quint8: (0, 255),
    torch.qint8: (-128, 127),
    torch.qint32: (-(2**31), 2**31 - 1),
    torch.quint4x2: (0, 15),
    torch.quint2x4: (0, 3),
    torch.uint8: (0, 255),
    torch.int8: (-128, 127),
    torch.int16: (-(2**15), 2**15 - 1),
    torch.int32: (-(2**31), 2**31 - 1),
}

# The integer dtype each dtype's codes are stored in (qlib.quantize's result; int_repr()'s dtype).
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

# The codes dequantize reads, by storage dtype (int64 codes must fit int32, as torch's dequantize needs).
STORAGE_RANGES: dict[torch.dtype, tuple[int, int]] = {
    torch.uint8: (0, 255),
    torch.int8: (-128, 127),
    torch.int16: (-(2**15), 2**15 - 1),
    torch.int32: (-(2**31), 2**31 - 1),
    torch.int64: (-(2**31), 2**31 - 1),
}

# The plain dtypes of the PT2E ops (quantized_decomposed) and torchao's affine primitives.
PLAIN_DTYPES = (torch.uint8, torch.int8, torch.int16, torch.int32)

# dtypes PyTorch's observers accept that this table knows (no uint16 or float8 ranges)
OBSERVER_DTYPES = (
    torch.quint8,
    torch.qint8,
    torch.qint32,
    torch.quint4x2,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
)

# reduce_range drops one bit; PyTorch's observers apply it only to 8-bit types.
REDUCED_RANGES: dict[torch.dtype, tuple[int, int]] = {
    torch.quint8: (0, 127),
    torch.uint8: (0, 127),
    torch.qint8: (-64, 63),
    torch.int8: (-64, 63),
}


def qrange(dtype: torch.dtype, reduce_range: bool = False) -> tuple[int, int]:
    """Return ``(qmin, qmax)``, the smallest and largest integer of ``dtype``.

    ``reduce_range=True`` gives the 7-bit range PyTorch's observers use for
    activations on x86 (see the chapter on dtypes for why). It exists only for
    8-bit types; asking for it on another dtype is an error, because PyTorch's
    observers silently ignore it there.

    Chapter: "Integer types and their ranges" (book/03_dtypes).

    >>> qrange(torch.quint8)
    (0, 255)
    >>> qrange(torch.qint8, reduce_range=True)
    (-64, 63)
    """
    if not isinstance(dtype, torch.dtype) or dtype not in DTYPE_RANGES:
        allowed = ", ".join(str(d) for d in DTYPE_RANGES)
        raise TypeError(f"dtype must be one of {allowed}; got {dtype!r}")
    if not isinstance(reduce_range, bool):
        raise TypeError(f"reduce_range must be True or False; got {reduce_range!r}")
    if reduce_range:
        if dtype not in REDUCED_RANGES:
            allowed = ", ".join(str(d) for d in REDUCED_RANGES)
            raise ValueError(f"reduce_range=True applies only to 8-bit dtypes ({allowed}); got {dtype}")
        return REDUCED_RANGES[dtype]
    return DTYPE_RANGES[dtype]
