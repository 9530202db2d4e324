"""What torch's quantized element-wise and pooling kernels share on x86 CPUs, written once: which
elements a ``TensorIterator`` loop computes with its vector body and which with its scalar tail,
the dequantizations and quantizers each path calls, and the layout of the tensors the kernels
allocate. ``qlib.add``, the activations, ``mul``, ``cat``, the poolings and ``batch_norm2d`` are
made of these pieces.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

An element-wise kernel runs through ``cpu_kernel_vec``
(https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/cpu/Loops.h) over a
``TensorIterator`` (https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/TensorIterator.cpp),
which computes the first ``floor(len / (2 * W)) * 2 * W`` elements of each contiguous piece of a
row with its vector body and the rest with its scalar tail (:func:`loop_lanes`). The two paths
call different arithmetic:

* the vector body: ``Vectorized<T>::dequantize``, one fused multiply-add
  (:func:`vectorized_dequantize`), and ``Vectorized<T>::quantize``, ATen's own ``QuantizeAvx2``:
  ``rint(x * inv)`` clipped at ``2**31 - 128``, plus the zero point in int32 (wrapping), saturated,
  the same in torch 2.13 and 2.14 (:func:`vectorized_quantize`), both in
  https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/cpu/vec/vec256/vec256_qint.h;
* the scalar tail: ``dequantize_val`` and ``quantize_val``
  (https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/AffineQuantizerBase.cpp),
  which call FBGEMM's scalar ``Dequantize`` (one float32 product: :func:`dequantize_val`) and
  ``Quantize`` (:func:`quantize_val`), whose zero point torch 2.13's FBGEMM adds before rounding
  and 2.14's after.

Kernels that quantize a whole buffer call ``quantize_vec``, FBGEMM's ``QuantizeAvx2``, the
arithmetic of ``torch.quantize_per_tensor`` (:func:`quantize_vec`), and integer kernels
``requantize_from_int`` (:func:`requantize_from_int`). ``W`` is ``Vectorized<T>::size()`` of the
AVX2 kernels, 32 for quint8 and qint8: every quantized stub these kernels use is registered with
``REGISTER_DISPATCH``, which leaves the AVX-512 slot empty, so CPUs with AVX-512 run the AVX2
kernels too (``qlib.avg_pool2d`` says where that does not hold).

Many kernels pick their path by the codes' memory layout and allocate their output in
``suggest_memory_format()`` (:func:`suggested_format`); so qlib's functions take codes with the
quantized tensor's strides (:func:`strided_codes`) and return codes laid out as torch's output.
"""

from __future__ import annotations

import math

import torch

from qlib.dequant import per_tensor_values
from qlib.numerics import float32, fma_float32, wrap_int32
from qlib.quant import per_tensor_codes
from qlib.ranges import DTYPE_RANGES

GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: TensorIterator runs smaller tensors on one thread
VECTOR_CODES = 32  # Vectorized<quint8>::size() and Vectorized<qint8>::size() in ATen's AVX2 kernels
# The quantized dtype of each plain dtype of 8-bit codes.
EIGHT_BIT: dict[torch.dtype, torch.dtype] = {torch.uint8: torch.quint8, torch.int8: torch.qint8}
# torch.backends.quantized.engine values whose kernels qlib's element-wise and pooling functions know
QUANTIZED_ENGINES = ("x86", "fbgemm", "onednn", "qnnpack")


def eight_bit_codes(t: object, name: str, op: str) -> torch.dtype:
    """The quantized dtype of ``t``, a plain uint8 (quint8) or int8 (qint8) tensor of codes; else TypeError.

    >>> eight_bit_codes(torch.zeros(2, dtype=torch.uint8), "x", "hardswish")
    torch.quint8
    """
    if not isinstance(t, torch.Tensor) or t.is_quantized or t.dtype not in EIGHT_BIT:
        hint = "pass its codes: torch.empty_strided(q.shape, q.stride(), dtype=torch.uint8).copy_(q.int_repr())"
        raise TypeError(
            f"{name} must be a tensor of 8-bit codes, torch.uint8 (quint8) or torch.int8 (qint8), the dtypes "
            f"qlib models {op} for; got {described(t, hint)}"
        )
    return EIGHT_BIT[t.dtype]


def described(t: object, hint: str) -> str:
    """What an error message says it got instead of a tensor of codes: a quantized tensor (and ``hint``), a
    dtype, or a type.

    >>> described(torch.zeros(1), "pass its .int_repr()"), described([1], "")
    ('torch.float32', 'list')
    """
    if isinstance(t, torch.Tensor):
        return f"a quantized tensor ({hint})" if t.is_quantized else str(t.dtype)
    return type(t).__name__


def positive_int(value: object, name: str) -> int:
    """``value`` if it is an int of at least 1; else ValueError.

    >>> positive_int(2, "threads")
    2
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None; got {value!r}")
    return value


def boolean(value: object, name: str) -> bool:
    """``value`` if it is True or False; else TypeError.

    >>> boolean(False, "relu")
    False
    """
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False; got {value!r}")
    return value


def thread_count(threads: int | None) -> int:
    """``threads``, checked, or ``torch.get_num_threads()`` for None: how many chunks a long loop is cut into."""
    return torch.get_num_threads() if threads is None else positive_int(threads, "threads")


def call_arguments(args: tuple, kwargs: dict, names: tuple[str, ...], defaults: tuple = ()) -> list:
    """An op's arguments as ``names`` lists them, from the ``args`` and ``kwargs`` torch dispatched it with;
    the last ones may be missing and take ``defaults`` (the op's schema's, in order).

    >>> call_arguments((1,), {"b": 2}, ("a", "b", "c"), (0, 3))
    [1, 2, 3]
    """
    first_default = len(names) - len(defaults)
    values = []
    for i, name in enumerate(names):
        if i < len(args):
            values.append(args[i])
        elif name in kwargs:
            values.append(kwargs[name])
        elif i >= first_default:
            values.append(defaults[i - first_default])
        else:
            raise TypeError(f"the op was called without its argument {name}")
    return values


def engine_name(engine: str | None) -> str:
    """``engine`` checked against torch's quantized engines (None: ``torch.backends.quantized.engine``).

    >>> engine_name("fbgemm")
    'fbgemm'
    """
    if engine is None:
        engine = torch.backends.quantized.engine
    if engine not in QUANTIZED_ENGINES:
        raise ValueError(
            f"engine must be one of {', '.join(map(repr, QUANTIZED_ENGINES))} (None reads "
            f"torch.backends.quantized.engine); got {engine!r}"
        )
    return engine


# ------------------------------------------------------------------------------------------------
# layouts


def suggested_format(t: torch.Tensor) -> torch.memory_format:
    """``Tensor::suggest_memory_format()``: channels-last if ``t``'s strides look so (4-d, 5-d), else contiguous.

    >>> suggested_format(torch.zeros(1, 3, 2, 2).contiguous(memory_format=torch.channels_last))
    torch.channels_last
    """
    order = {4: (1, 3, 2, 0), 5: (1, 4, 3, 2, 0)}.get(t.dim())
    if order is None or t.stride(1) == 0:
        return torch.contiguous_format
    smallest = 0
    for d in order:
        size, stride = t.shape[d], t.stride(d)
        if size == 0 or stride < smallest or (d == 0 and smallest == t.stride(1)):
            return torch.contiguous_format
        smallest = stride * (size if size > 1 else 1)
    return torch.channels_last if t.dim() == 4 else torch.channels_last_3d


def channels_last_contiguous(t: torch.Tensor) -> bool:
    """``t.is_contiguous(memory_format=torch.channels_last)`` for a 4-d ``t``: what sends a pooling or a
    ``cat`` to its NHWC kernel (every (N, C, 1, 1) tensor is, whatever its strides).

    >>> channels_last_contiguous(torch.zeros(2, 3, 1, 1)), channels_last_contiguous(torch.zeros(2, 3, 2, 2))
    (True, False)
    """
    return t.dim() == 4 and t.is_contiguous(memory_format=torch.channels_last)


def dense_strides(shape: tuple[int, ...] | list[int], memory_format: torch.memory_format) -> list[int]:
    """Strides of a new tensor of ``shape`` in ``memory_format`` (channels-last: channels fastest).

    >>> dense_strides((2, 3, 1, 1), torch.channels_last)
    [3, 1, 3, 3]
    """
    order = {torch.channels_last: (1, 3, 2, 0), torch.channels_last_3d: (1, 4, 3, 2, 0)}.get(memory_format)
    strides, step = [0] * len(shape), 1
    for d in order or reversed(range(len(shape))):
        strides[d] = step
        step *= max(shape[d], 1)
    return strides


def broadcast_strides(t: torch.Tensor, shape: tuple[int, ...] | list[int]) -> list[int]:
    """Strides of ``t`` broadcast to ``shape``: 0 along added or stretched dimensions."""
    return list(t.expand(list(shape)).stride())


def strided_codes(q: torch.Tensor) -> torch.Tensor:
    """The integer codes of quantized ``q`` with ``q``'s own strides (``int_repr()`` makes most views dense).

    >>> q = torch.quantize_per_tensor(torch.zeros(2, 3), 0.1, 0, torch.quint8).t()
    >>> q.int_repr().stride(), strided_codes(q).stride()
    ((2, 1), (1, 3))
    """
    codes = q.int_repr()
    return torch.empty_strided(q.shape, q.stride(), dtype=codes.dtype).copy_(codes)


def laid_out(values: torch.Tensor, memory_format: torch.memory_format) -> torch.Tensor:
    """A copy of ``values`` dense in ``memory_format``, as torch allocates a kernel's output.

    >>> laid_out(torch.zeros(2, 3, 1, 1), torch.channels_last).stride()
    (3, 1, 3, 3)
    """
    return torch.empty(values.shape, dtype=values.dtype, memory_format=memory_format).copy_(values)


def nhwc_into_suggested(x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
    """What an NHWC kernel's output holds: ``out`` (the right codes, any layout), as torch leaves it.

    The NHWC pooling kernels run on every input that is channels-last contiguous and write their
    output in channels-last order, but allocate it in ``x.suggest_memory_format()``. An (N, C, 1, 1)
    input with contiguous strides is both, and suggests the contiguous format: pooled to more than
    1x1, its output then holds the channels-last ordered codes in a contiguous tensor, so that
    element (n, c, h, w) is the code at position n*C*H*W + c*H*W + h*W + w of the channels-last order.
    """
    if suggested_format(x) == torch.channels_last or not channels_last_contiguous(x):
        return laid_out(out, suggested_format(x))
    return out.permute(0, 2, 3, 1).flatten().view(out.shape)  # the channels-last order, read as contiguous


# ------------------------------------------------------------------------------------------------
# TensorIterator: the vector body and the scalar tail


def reorder_dimensions(shape: tuple[int, ...] | list[int], strides: list[list[int] | None]) -> list[int]:
    """``TensorIteratorBase::reorder_dimensions``: the permutation of ``shape``, fastest-moving dimension first.

    ``strides`` holds the output's (None: an output yet to be resized, which takes no part), then each input's.
    """
    n = len(shape)
    perm = list(range(n))[::-1]

    def should_swap(d0: int, d1: int) -> int:
        for st in strides:
            if st is None:
                continue
            s0, s1 = st[d0], st[d1]
            if s0 == 0 or s1 == 0:
                continue
            if s0 != s1:
                return -1 if s0 < s1 else 1
            if shape[d0] > shape[d1]:
                return 1
        return 0

    for i in range(1, n):  # insertion sort that stops at ambiguous comparisons
        d1 = i
        for d0 in range(i - 1, -1, -1):
            comparison = should_swap(perm[d0], perm[d1])
            if comparison > 0:
                perm[d0], perm[d1] = perm[d1], perm[d0]
                d1 = d0
            elif comparison < 0:
                break
    return perm


def coalesce_dimensions(dims: list[int], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
    """``TensorIteratorBase::coalesce_dimensions``: merge neighbours every tensor walks as one."""
    if len(dims) <= 1:
        return dims, strides
    dims, strides = list(dims), [list(st) for st in strides]
    prev = 0
    for d in range(1, len(dims)):
        if dims[prev] == 1 or dims[d] == 1 or all(dims[prev] * st[prev] == st[d] for st in strides):
            if dims[prev] == 1:
                for st in strides:
                    st[prev] = st[d]
            dims[prev] *= dims[d]
        else:
            prev += 1
            if prev != d:
                for st in strides:
                    st[prev] = st[d]
                dims[prev] = dims[d]
    return dims[: prev + 1], [st[: prev + 1] for st in strides]


def element_positions(shape: tuple[int, ...] | list[int], steps: list[int]) -> torch.Tensor:
    """``sum_d index_d * steps[d]`` for every element of a tensor of ``shape`` (int64)."""
    pos = torch.zeros(list(shape), dtype=torch.int64)
    for d, (size, step) in enumerate(zip(shape, steps, strict=True)):
        view = [1] * len(shape)
        view[d] = size
        pos += (torch.arange(size) * step).view(view)
    return pos


def loop_order(shape: tuple[int, ...] | list[int], strides: list[list[int] | None]) -> tuple[torch.Tensor, int, bool]:
    """How ``TensorIterator`` walks a loop over ``shape``: each element's position, the row length, whether
    ``cpu_kernel_vec`` runs the rows through its vector body.

    ``strides`` (in elements, broadcast to ``shape``) holds the output's, then each input's; an output
    given as None is allocated by the iterator, dense in its iteration order (a resized output). The
    dimensions are sorted by the strides (``reorder_dimensions``), neighbours that every tensor walks as
    one are merged (``coalesce_dimensions``), and the innermost merged dimension is the row. Rows
    vectorize when the output and every input are contiguous along them, or all but one input, which
    is constant along them (``is_contiguous`` and ``is_contiguous_scalar`` in ``Loops.h``).

    >>> loop_order((2, 3), [[3, 1], [3, 1]])
    (tensor([[0, 1, 2],
            [3, 4, 5]]), 6, True)
    >>> loop_order((2, 3), [[3, 1], [1, 2]])[1:]  # a transposed input: rows of 3, strided in it
    (3, False)
    """
    n = len(shape)
    perm = reorder_dimensions(shape, strides)
    dims = [shape[d] for d in perm]
    walk = [0] * n  # each original dimension's step in the iteration (perm[0] moves fastest)
    for k, d in enumerate(perm):
        walk[d] = math.prod(dims[:k])
    filled = [[walk[d] for d in range(n)] if st is None else st for st in strides]
    dims, merged = coalesce_dimensions(dims, [[st[d] for d in perm] for st in filled])
    inner = [st[0] if st else 0 for st in merged]
    inputs = inner[1:]
    contiguous = all(s == 1 for s in inputs) or (inputs.count(0) == 1 and all(s in (0, 1) for s in inputs))
    row = dims[0] if len(dims) >= 2 else math.prod(shape)
    return element_positions(shape, walk), row, inner[0] == 1 and contiguous


def loop_lanes(
    shape: tuple[int, ...] | list[int], strides: list[list[int] | None], vector_width: int, threads: int
) -> torch.Tensor:
    """Which elements of a loop over ``shape`` torch's vector body computes (True) and which its scalar tail.

    ``strides`` are :func:`loop_order`'s, ``vector_width`` the elements per vector, ``threads`` the
    number of threads. With more than 32768 elements and more than one thread, ``at::parallel_for``
    cuts the positions into ``min(threads, ceil(n / 32768))`` equal chunks (the last shorter); in each
    piece of a row within a chunk, ``vectorized_loop`` computes the first
    ``floor(len / (2 * vector_width)) * 2 * vector_width`` elements with the vector body, two vectors
    at a time, and the rest with the scalar tail. Rows that do not vectorize take the scalar path.

    >>> lanes = loop_lanes((70,), [[1], [1]], 32, 1)
    >>> int(lanes.sum()), bool(lanes[63]), bool(lanes[64])
    (64, True, False)
    """
    numel = math.prod(shape)
    if numel == 0:
        return torch.zeros(list(shape), dtype=torch.bool)
    positions, row, vectorizes = loop_order(shape, strides)
    if not vectorizes:
        return torch.zeros(list(shape), dtype=torch.bool)
    chunk = numel
    if numel > GRAIN_SIZE and threads > 1:  # TensorIterator::for_each, then at::parallel_for
        chunk = -(-numel // min(threads, -(-numel // GRAIN_SIZE)))
    row_start = positions - positions % row
    chunk_start = positions - positions % chunk
    start = torch.maximum(row_start, chunk_start)
    end = torch.minimum(row_start + row, (chunk_start + chunk).clamp(max=numel))
    step = 2 * vector_width
    return positions - start < (end - start) // step * step


def unary_lanes(x: torch.Tensor, threads: int | None = None) -> torch.Tensor:
    """:func:`loop_lanes` of a unary kernel on codes ``x`` whose output torch allocates like ``x``
    (``suggest_memory_format``), with 32 codes per vector: True where the vector body computes.

    >>> unary_lanes(torch.zeros(70, dtype=torch.uint8), 1)[62:66].tolist()
    [True, True, False, False]
    """
    strides: list[list[int] | None] = [dense_strides(x.shape, suggested_format(x)), list(x.stride())]
    return loop_lanes(x.shape, strides, VECTOR_CODES, thread_count(threads))


# ------------------------------------------------------------------------------------------------
# the arithmetic of the two paths


def vectorized_dequantize(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The vector body's dequantization, ``Vectorized<T>::dequantize``: ``fma(s, float(q), float32(s * -zero_point))``
    in float32, with ``s = float32(scale)`` (the product ``s * -zero_point`` is rounded on its own).

    >>> vectorized_dequantize(torch.tensor([3], dtype=torch.uint8), 0.1, 1)
    tensor([0.2000])
    """
    s = float32(scale)
    premultiplied = (
        torch.tensor(s, dtype=torch.float32) * -torch.tensor(float(zero_point), dtype=torch.float32)
    ).item()
    return fma_float32(q.float(), s, premultiplied)


def dequantize_val(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The scalar tail's dequantization, ``dequantize_val`` (FBGEMM's ``Dequantize``): ``float32(scale) *
    float(q - zero_point)``, one float32 product (:func:`qlib.dequant.per_tensor_values`).

    >>> dequantize_val(torch.tensor([3], dtype=torch.uint8), 0.1, 1)
    tensor([0.2000])
    """
    return per_tensor_values(q, float32(scale), zero_point)


def vectorized_quantize(x: torch.Tensor, inv: float, zero_point: int, dtype: torch.dtype) -> torch.Tensor:
    """The vector body's quantizer, ``Vectorized<T>::quantize`` (ATen's ``QuantizeAvx2``) for 8-bit ``dtype``.

    ``rint(min(x * inv, 2**31 - 128))`` (float32 product), plus ``zero_point`` in int32 (wrapping
    around), saturated to the dtype's range; the same in torch 2.13 and 2.14. ``inv`` is the float32
    value the kernel passes; NaN behaves as ``2**31 - 128`` (``_mm256_min_ps`` returns its second
    operand). Returns the codes as floats.

    >>> vectorized_quantize(torch.tensor([0.5, 1.5, float("inf")]), 1.0, 129, torch.quint8)
    tensor([129., 131.,   0.])
    """
    x = torch.where(torch.isnan(x), float("inf"), x)
    return per_tensor_codes(x, inv, zero_point, dtype, zero_point_first=False)


def quantize_val(
    x: torch.Tensor, inv: float, zero_point: int, dtype: torch.dtype, zero_point_first: bool
) -> torch.Tensor:
    """The scalar tail's quantizer, ``quantize_val``: FBGEMM's scalar ``Quantize``, release by release.

    ``inv`` is the float32 reciprocal it multiplies by (``1.0f / (float)scale``). torch 2.14
    (``zero_point_first=False``): ``rint(float32(x * inv)) + zero_point``; torch 2.13 (True, FBGEMM's
    ``LEGACY``): ``rint(float32(float32(x * inv) + zero_point))``, two float32 roundings; both clamped
    in float64. NaN becomes ``cvttsd2si``'s ``0x80000000``: code 0 for 8-bit dtypes, ``-2**31`` for
    qint32. Returns the codes as floats.

    >>> quantize_val(torch.tensor([0.5, 1.5]), 1.0, 129, torch.quint8, zero_point_first=True)
    tensor([130., 130.], dtype=torch.float64)
    """
    qmin, qmax = DTYPE_RANGES[dtype]
    codes = per_tensor_codes(x, inv, zero_point, torch.qint32, zero_point_first).clamp_(qmin, qmax)
    return codes.masked_fill_(torch.isnan(codes), -(2**31) if dtype == torch.qint32 else 0)


def quantize_vec(
    x: torch.Tensor, inv: float, zero_point: int, dtype: torch.dtype, zero_point_first: bool
) -> torch.Tensor:
    """``quantize_vec`` for 8-bit ``dtype``: FBGEMM's ``QuantizeAvx2``, ``torch.quantize_per_tensor``'s arithmetic.

    Every element alike (the remainder is masked): torch 2.14 (``zero_point_first=False``)
    ``rint(min(x * inv, 2**31 - 128)) + zero_point`` in int32, as :func:`vectorized_quantize`; torch
    2.13 (True) ``rint(min(fma(x, inv, zero_point), 2**31 - 128))``, one rounding
    (:func:`qlib.quant.per_tensor_codes`). NaN behaves as ``2**31 - 128``. Returns the codes as floats.

    >>> quantize_vec(torch.tensor([0.5, 1.5]), 1.0, 129, torch.quint8, zero_point_first=True)
    tensor([130., 130.])
    """
    x = torch.where(torch.isnan(x), float("inf"), x)
    return per_tensor_codes(x, inv, zero_point, dtype, zero_point_first)


def requantize_from_int(
    c: torch.Tensor, multiplier: float, zero_point: int, dtype: torch.dtype, vector: torch.Tensor | bool
) -> torch.Tensor:
    """``requantize_from_int`` (scalar) and ``Vectorized<T>::requantize_from_int`` (vector) of integers ``c``.

    ``zero_point + rint(float32(float(c) * multiplier))``, saturated to ``dtype``'s range, with
    ``multiplier`` a float32 value. The two paths differ only when the rounded product leaves int32:
    the scalar ``lrintf`` keeps it in int64 (it saturates to the far end; past int64, and for NaN
    and infinities, it gives ``-2**63``: the lowest code), the vector ``_mm256_cvtps_epi32`` gives
    ``-2**31``, to which the zero point is added in int32. ``vector`` (a bool tensor that broadcasts
    against ``c``, or one bool) says which elements take the vector body. Returns int64 codes.

    >>> requantize_from_int(torch.tensor([65025, 7]), 1e5, 0, torch.quint8, torch.tensor([True, True]))
    tensor([  0, 255])
    """
    qmin, qmax = DTYPE_RANGES[dtype]
    r = torch.round(c.float() * multiplier).double()
    scalar = torch.where(r.abs() < 2.0**63, r + zero_point, float(qmin)).clamp(qmin, qmax)
    beyond = ~(r.abs() < 2.0**31) & (r != -(2.0**31))  # NaN too
    vec = wrap_int32(torch.where(beyond, -(2.0**31), r).long() + zero_point).clamp(qmin, qmax).double()
    return torch.where(torch.as_tensor(vector), vec, scalar).long()
