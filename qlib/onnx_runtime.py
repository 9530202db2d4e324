"""ONNX Runtime's integer matrix products, integer by integer, as its CPU provider computes them on x86.

Explained in the book chapter "Inside a quantized Linear" (``book/09_linear``), which shows the same
saturating pairs in FBGEMM.

``MatMulInteger``, ``QLinearMatMul`` and ``QGemm`` (domain ``com.microsoft``, what
``onnxruntime.quantization`` and ORT's QDQ fusions turn a ``Gemm`` into) all run MLAS's quantized
GEMM (``MlasGemmBatch``) on the raw codes, then requantize. Measured against onnxruntime 1.32.0
(``tests/test_onnx_runtime.py``), with the sources:

1. ``acc = sum_k a[m, k] * b[k, n]`` of the raw codes, in int32. MLAS picks its kernel from CPUID
   once (``platform.cpp``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/platform.cpp).
   For uint8 ``a`` and int8 ``b`` on a CPU with AVX2 or AVX-512 but neither AVX512-VNNI, AVX-VNNI
   nor AMX, the kernel multiplies with ``vpmaddubsw``, which adds each pair of products
   ``(k, k + 1)``, k even, in int16 *with saturation* (``QgemmU8S8KernelAvx2.S``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/x86_64/QgemmU8S8KernelAvx2.S);
   an odd K gets a zero partner. The VNNI and AMX kernels, and every uint8 x uint8, int8 x int8 and
   int8 x uint8 product on any CPU, are exact.
2. The zero points' corrections, in int32 (wrapping): ``acc - b_zero_point[n] * sum_k a[m, k] -
   a_zero_point * sum_k b[k, n] + K * a_zero_point * b_zero_point[n]``, which is ``sum_k (a -
   a_zero_point) (b - b_zero_point)`` whenever no pair saturated (``qgemm.h``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/qgemm.h). QGemm
   starts the accumulator at its int32 bias ``C``.
3. Requantization (``MlasRequantizeOutput`` in ``quantize.cpp``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/quantize.cpp):
   ``float32(acc) * multiplier`` (``float32(acc)`` rounds once ``|acc| > 2**24``), clamped in
   float32 to ``[qmin - y_zero_point, qmax - y_zero_point]``, rounded half to even, plus
   ``y_zero_point``. The multiplier is ``float32(a_scale * b_scale[n]) / y_scale`` for
   ``QLinearMatMul`` (``quantize_linear_matmul.cc``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/providers/cpu/quantization/quantize_linear_matmul.cc)
   and ``float32(float32(alpha * a_scale) * b_scale[n]) / y_scale`` for ``QGemm``
   (``quant_gemm.cc``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/contrib_ops/cpu/quantization/quant_gemm.cc),
   every step in float32; QGemm without ``y_scale`` returns ``float32(acc) * multiplier``.

ORT divides where torch multiplies by a reciprocal, and it adds an int32 bias where torch's FBGEMM
adds a float one: the same layer can differ by a code from torch's.
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import float32, wrap_int32
from qlib.quantized_linear import int_matmul
from qlib.ranges import DTYPE_RANGES

CODE_TYPES = (torch.uint8, torch.int8)


def ort_pairs_saturate_here() -> bool:
    """Whether ONNX Runtime's uint8 x int8 GEMM on this CPU adds pairs of products in saturating int16.

    True on a CPU with AVX2 and none of AVX512-VNNI, AVX-VNNI and AMX-INT8
    (MLAS then runs its ``vpmaddubsw`` kernels), as torch's CPUID probe
    (``torch.cpu.get_capabilities()``: ``avx2``, ``avx512_vnni``, ``avx_vnni``,
    ``amx_int8``) reports them; it reads CPUID, so it answers for the CPU an
    emulator such as ``qemu-x86_64 -cpu Haswell`` shows.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> ort_pairs_saturate_here() in (True, False)
    True
    """
    features = torch.cpu.get_capabilities()
    exact = any(features.get(name) for name in ("avx512_vnni", "avx_vnni", "amx_int8"))
    return bool(features.get("avx2")) and not exact


def _codes(t: object, name: str) -> torch.Tensor:
    if not isinstance(t, torch.Tensor) or t.is_quantized or t.dtype not in CODE_TYPES:
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{name} must be a uint8 or int8 tensor of codes (an ONNX tensor of type T1/T2); got {got}")
    if t.dim() < 1:
        raise ValueError(f"{name} must have at least one dimension; got a 0-d tensor")
    return t


def _column_zero_points(zero_point: object, n: int, dtype: torch.dtype, name: str) -> torch.Tensor:
    """A per-tensor (number) or per-column (1-d tensor of ``n``) zero point of ``dtype`` codes, as int64 ``[n]``."""
    qmin, qmax = DTYPE_RANGES[dtype]
    if isinstance(zero_point, torch.Tensor) and zero_point.dim() == 1 and zero_point.numel() != 1:
        return checks.channel_zero_points(zero_point, n, 1, qmin, qmax, name)
    return torch.full((n,), checks.zero_point_value(zero_point, qmin, qmax, name))


def _column_scales(scale: object, n: int, name: str) -> torch.Tensor:
    """A per-tensor (number) or per-column (1-d tensor of ``n``) scale, as float32 ``[n]``."""
    if isinstance(scale, torch.Tensor) and scale.dim() == 1 and scale.numel() != 1:
        return checks.channel_scales(scale, n, 1, name).float()
    return torch.full((n,), float32(checks.scale_value(scale, name)), dtype=torch.float32)


def mlas_gemm(
    a: torch.Tensor,
    a_zero_point: int,
    b: torch.Tensor,
    b_zero_point: torch.Tensor,
    pairs_saturate: bool,
    c: torch.Tensor | None = None,
) -> torch.Tensor:
    """MLAS's int32 result ``[M, N]`` for 2-d codes ``a`` ``[M, K]`` and ``b`` ``[K, N]`` (steps 1 and 2).

    ``b_zero_point`` is int64 ``[N]``; ``pairs_saturate`` applies to uint8 x
    int8 only; ``c`` (int32, broadcasting to ``[M, N]``) starts the
    accumulator, as QGemm's bias does.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> a = torch.tensor([[255, 255]], dtype=torch.uint8)
    >>> b = torch.tensor([[127], [127]], dtype=torch.int8)
    >>> mlas_gemm(a, 128, b, torch.tensor([0]), False), mlas_gemm(a, 128, b, torch.tensor([0]), True)
    (tensor([[32258]], dtype=torch.int32), tensor([[255]], dtype=torch.int32))
    """
    k = a.shape[1]
    saturate = pairs_saturate and a.dtype == torch.uint8 and b.dtype == torch.int8
    acc = int_matmul(a, b.T.contiguous(), saturate)  # MLAS pairs products as FBGEMM does (vpmaddubsw)
    row_sums = a.long().sum(1, keepdim=True)
    column_sums = b.long().sum(0, keepdim=True)
    acc = acc - b_zero_point[None, :] * row_sums - a_zero_point * column_sums + k * a_zero_point * b_zero_point[None, :]
    if c is not None:
        acc = acc + c.long()
    return wrap_int32(acc)


def requantize_output(acc: torch.Tensor, multiplier: torch.Tensor, zero_point: int, dtype: torch.dtype) -> torch.Tensor:
    """MLAS's ``MlasRequantizeOutput``: int32 ``acc`` ``[..., N]`` to ``dtype`` codes (step 3 of the module docstring).

    ``multiplier`` is float32 ``[N]`` (or one value): ``float32(acc) *
    multiplier``, clamped to ``[qmin - zero_point, qmax - zero_point]``,
    rounded half to even, plus ``zero_point``.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> requantize_output(torch.tensor([[5, -5, 10**9]], dtype=torch.int32), torch.tensor([0.5]), 100, torch.uint8)
    tensor([[102,  98, 255]], dtype=torch.uint8)
    """
    qmin, qmax = DTYPE_RANGES[dtype]
    v = acc.to(torch.int32).float() * multiplier
    v = v.clamp(qmin - zero_point, qmax - zero_point)
    return (torch.round(v).long() + zero_point).to(dtype)


def _matmul_2d(
    a: torch.Tensor, b: torch.Tensor, name: str = "b"
) -> tuple[torch.Tensor, torch.Tensor, tuple[int, ...], int]:
    """``a`` ``[..., M, K]`` (or ``[K]``) and ``b`` ``[K, N]`` as 2-d matrices, with the output's leading shape and N."""
    if b.dim() != 2:
        raise ValueError(f"{name} must be 2-d, [K, N] (qlib reproduces a constant right-hand matrix); got {b.dim()}-d")
    if a.shape[-1] != b.shape[0]:
        raise ValueError(f"a's last dimension ({a.shape[-1]}) must equal {name}'s first ({b.shape[0]})")
    lead = tuple(a.shape[:-1])
    return a.reshape(-1, a.shape[-1]), b, lead, b.shape[1]


def matmul_integer(
    a: torch.Tensor,
    b: torch.Tensor,
    a_zero_point: int | torch.Tensor = 0,
    b_zero_point: int | torch.Tensor = 0,
    *,
    pairs_saturate: bool | None = None,
) -> torch.Tensor:
    """ONNX ``MatMulInteger``: the int32 product of codes ``a`` ``[..., K]`` and ``b`` ``[K, N]``, as ONNX Runtime.

    ``sum_k (a - a_zero_point)(b - b_zero_point)`` exactly, except that a
    uint8 ``a`` times an int8 ``b`` saturates pairs of raw-code products on a
    CPU without VNNI: ``pairs_saturate`` chooses the CPU (None: this one, as
    :func:`ort_pairs_saturate_here` says; True: AVX2 or AVX-512 without
    VNNI; False: with VNNI or AMX). ``b_zero_point`` is a number or one per
    column (``[N]``). The module docstring has the arithmetic.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> a = torch.tensor([[255, 255]], dtype=torch.uint8)
    >>> b = torch.tensor([[127], [127]], dtype=torch.int8)
    >>> matmul_integer(a, b, pairs_saturate=False), matmul_integer(a, b, pairs_saturate=True)
    (tensor([[64770]], dtype=torch.int32), tensor([[32767]], dtype=torch.int32))
    """
    a, b = _codes(a, "a"), _codes(b, "b")
    rows, b, lead, n = _matmul_2d(a, b)
    za = checks.zero_point_value(a_zero_point, *DTYPE_RANGES[a.dtype], "a_zero_point")
    zb = _column_zero_points(b_zero_point, n, b.dtype, "b_zero_point")
    saturate = ort_pairs_saturate_here() if pairs_saturate is None else pairs_saturate
    return mlas_gemm(rows, za, b, zb, saturate).reshape(*lead, n)


def qlinear_matmul(
    a: torch.Tensor,
    a_scale: float | torch.Tensor,
    a_zero_point: int | torch.Tensor,
    b: torch.Tensor,
    b_scale: float | torch.Tensor,
    b_zero_point: int | torch.Tensor,
    y_scale: float | torch.Tensor,
    y_zero_point: int | torch.Tensor,
    *,
    pairs_saturate: bool | None = None,
) -> torch.Tensor:
    """ONNX ``QLinearMatMul`` of codes ``a`` ``[..., K]`` and ``b`` ``[K, N]``, bit for bit as ONNX Runtime.

    The output has ``a``'s dtype (uint8 or int8), as ORT's kernels do. ``b``
    may be quantized per column (1-d ``b_scale`` and ``b_zero_point`` of
    length N). The multiplier is ``float32(a_scale * b_scale) / y_scale``
    in float32; ``pairs_saturate`` as in :func:`matmul_integer`. The module
    docstring has the arithmetic.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> a = torch.tensor([[130, 140]], dtype=torch.uint8)
    >>> b = torch.tensor([[10, 30], [-20, 40]], dtype=torch.int8)
    >>> qlinear_matmul(a, 0.1, 128, b, 0.05, 0, 0.2, 100)  # -5.5 and 13.5, rounded half to even
    tensor([[ 94, 114]], dtype=torch.uint8)
    """
    a, b = _codes(a, "a"), _codes(b, "b")
    rows, b, lead, n = _matmul_2d(a, b)
    za = checks.zero_point_value(a_zero_point, *DTYPE_RANGES[a.dtype], "a_zero_point")
    zb = _column_zero_points(b_zero_point, n, b.dtype, "b_zero_point")
    zy = checks.zero_point_value(y_zero_point, *DTYPE_RANGES[a.dtype], "y_zero_point")
    sa = torch.tensor(float32(checks.scale_value(a_scale, "a_scale")))
    sy = torch.tensor(float32(checks.scale_value(y_scale, "y_scale")))
    multiplier = (sa * _column_scales(b_scale, n, "b_scale")) / sy  # float32 throughout
    saturate = ort_pairs_saturate_here() if pairs_saturate is None else pairs_saturate
    acc = mlas_gemm(rows, za, b, zb, saturate)
    return requantize_output(acc, multiplier, zy, a.dtype).reshape(*lead, n)


def qgemm(
    a: torch.Tensor,
    a_scale: float | torch.Tensor,
    a_zero_point: int | torch.Tensor,
    b: torch.Tensor,
    b_scale: float | torch.Tensor,
    b_zero_point: int | torch.Tensor,
    c: torch.Tensor | None = None,
    y_scale: float | torch.Tensor | None = None,
    y_zero_point: int | torch.Tensor | None = None,
    *,
    alpha: float = 1.0,
    trans_a: bool = False,
    trans_b: bool = False,
    pairs_saturate: bool | None = None,
) -> torch.Tensor:
    """``com.microsoft.QGemm``: ``alpha * A @ B + C`` on codes, bit for bit as ONNX Runtime.

    ``a`` is ``[M, K]`` (``trans_a``: ``[K, M]``), ``b`` ``[K, N]``
    (``trans_b``: ``[N, K]``), uint8 x uint8/int8 or int8 x int8, ``b``
    quantized per tensor or per column; ``c`` an optional int32 bias
    broadcasting to ``[M, N]``, added to the accumulator. With ``y_scale``
    and ``y_zero_point`` the result is requantized to ``a``'s dtype with the
    multiplier ``float32(float32(alpha * a_scale) * b_scale) / y_scale``;
    without them it is float32, ``float32(acc) * float32(alpha * a_scale *
    b_scale)``. ``pairs_saturate`` as in :func:`matmul_integer`.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> a = torch.tensor([[130, 140]], dtype=torch.uint8)
    >>> b = torch.tensor([[10, 30], [-20, 40]], dtype=torch.int8)
    >>> c = torch.tensor([50, -50], dtype=torch.int32)
    >>> qgemm(a, 0.1, 128, b, 0.05, 0, c, 0.2, 100)
    tensor([[ 96, 112]], dtype=torch.uint8)
    """
    a, b = _codes(a, "a"), _codes(b, "b")
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"QGemm takes 2-d a and b; got {a.dim()}-d and {b.dim()}-d")
    if a.dtype == torch.int8 and b.dtype != torch.int8:
        raise TypeError("ONNX Runtime's QGemm takes an int8 a with an int8 b only")
    a = a.t() if trans_a else a
    b = b.t() if trans_b else b
    rows, b, _, n = _matmul_2d(a.contiguous(), b.contiguous())
    if c is not None:
        if not isinstance(c, torch.Tensor) or c.dtype != torch.int32:
            raise TypeError("c must be an int32 tensor (QGemm's bias, in units of a_scale * b_scale)")
        torch.broadcast_shapes(c.shape, (rows.shape[0], n))  # raises if c does not broadcast
    if (y_scale is None) != (y_zero_point is None):
        raise ValueError("give y_scale and y_zero_point together (requantized output) or neither (float32 output)")
    za = checks.zero_point_value(a_zero_point, *DTYPE_RANGES[a.dtype], "a_zero_point")
    zb = _column_zero_points(b_zero_point, n, b.dtype, "b_zero_point")
    sa = torch.tensor(float32(checks.scale_value(a_scale, "a_scale")))
    multiplier = (torch.tensor(float32(alpha)) * sa) * _column_scales(b_scale, n, "b_scale")
    saturate = ort_pairs_saturate_here() if pairs_saturate is None else pairs_saturate
    acc = mlas_gemm(rows, za, b, zb, saturate, c)
    if y_scale is None:
        return acc.float() * multiplier
    zy = checks.zero_point_value(y_zero_point, *DTYPE_RANGES[a.dtype], "y_zero_point")
    multiplier = multiplier / torch.tensor(float32(checks.scale_value(y_scale, "y_scale")))
    return requantize_output(acc, multiplier, zy, a.dtype)
