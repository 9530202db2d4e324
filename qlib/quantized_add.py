"""Quantized addition, ``quantized::add`` and ``add_relu``, integer by integer, as torch computes it on x86 CPUs.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

``quantized::add`` (``quantized::add_relu``, and so ``torch.ao.nn.quantized.FloatFunctional`` and
``QFunctional``'s ``add`` and ``add_relu``) runs ATen's ``qadd_kernel`` on every engine but
``qnnpack``: https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp
(called from ``qadd`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/BinaryOps.cpp). It supports
quint8, qint8 and qint32. The three scales are narrowed to float32, and the output's reciprocal is
``inv = 1.0f / scale``. Each element then takes one of two paths, which compute differently:

* the vector body (``Vectorized<T>``, ATen's ``aten/src/ATen/cpu/vec/vec256/vec256_qint.h``):
  each input is dequantized with one fused multiply-add, ``fma(a_scale, float(a), p)`` with the
  premultiplied ``p = float32(a_scale * -a_zero_point)``; the float32 sum ``c`` (ReLU:
  ``max(c, 0)``) is requantized, for 8-bit types, by ATen's ``QuantizeAvx2``: ``rint(c * inv)``,
  clipped at ``2**31 - 128``, plus the zero point in int32 (wrapping around), saturated to the
  dtype's range, in torch 2.13 and 2.14 alike. qint32 is requantized by FBGEMM's scalar
  ``Quantize`` (through ``quantize_vec``), as the tail is.
* the scalar tail (``dequantize_val`` and ``quantize_val`` in
  https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/AffineQuantizerBase.cpp,
  which call FBGEMM's ``Dequantize`` and ``Quantize`` in ``include/fbgemm/QuantUtils.h``): each input
  is ``a_scale * (a - a_zero_point)``, the difference in int32, one float32 product (as
  :func:`qlib.dequant.per_tensor_values`); the sum is requantized by FBGEMM's scalar
  ``Quantize``: torch 2.14 adds the zero point after rounding, ``rint(c * inv) + zero_point``,
  torch 2.13 before, ``rint(float32(c * inv) + zero_point)`` (two float32 roundings, FBGEMM's
  ``LEGACY`` variant); both clamp in float64.

So an element's code can depend on its position, in both releases: the two dequantizations
round differently (the premultiplied ``p`` is rounded), and in torch 2.13 the zero point also
moves. Which elements take the vector body is decided by ``cpu_kernel_vec``
(https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/cpu/Loops.h) over a
``TensorIterator`` (https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/TensorIterator.cpp):

* the iterator orders the dimensions by the strides of the output (allocated like ``a``:
  contiguous, or channels-last if ``a`` is), then of ``a`` and ``b``, and merges those it can
  into rows; same-shaped inputs with one dense layout make a single row in memory order;
* with more than ``GRAIN_SIZE = 32768`` elements and more than one thread
  (``torch.get_num_threads()``), ``at::parallel_for`` cuts the elements into
  ``min(threads, ceil(n / 32768))`` equal chunks (the last shorter);
* in each piece of a row within a chunk, ``vectorized_loop`` computes the first
  ``floor(len / (2 * W)) * 2 * W`` elements with the vector body, two vectors at a time, and the
  rest with the scalar tail, if the row is contiguous in all three tensors (or one input is a
  single value repeated along it); otherwise every element takes the scalar path.

``W`` is ``Vectorized<T>::size()`` of ATen's AVX2 kernel: 32 for quint8 and qint8, 8 for qint32.
AVX512 CPUs run the same AVX2 kernel (``qadd_stub`` is registered with ``REGISTER_DISPATCH``,
which leaves the AVX512 slot empty), so both kinds of x86 CPU compute the same codes (measured
with ``ATEN_CPU_CAPABILITY=avx2`` on an AVX512 CPU).

Scales near float32's limit can make a dequantized input infinite, and a sum NaN (inf - inf).
The vector body's ``_mm256_min_ps`` turns NaN into ``2**31 - 128``, as it does ``+inf`` (8-bit:
``qmax``, or ``qmin`` once the zero point wraps around); the scalar tail's conversion to an
integer turns it into ``0x80000000``: code 0 for 8-bit types, ``-2**31`` for qint32.

All of this holds, and was measured element by element, for torch 2.13.0 and 2.14.1.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from qlib import checks
from qlib.dequant import per_tensor_values
from qlib.numerics import float32, float32_reciprocal, fma_float32
from qlib.quant import per_tensor_codes
from qlib.ranges import DTYPE_RANGES
from qlib.registry import Settings, quantized, register
from qlib.releases import torch_release

# Quantized dtype of each code dtype quantized::add accepts.
ADD_DTYPES: dict[torch.dtype, torch.dtype] = {
    torch.uint8: torch.quint8,
    torch.int8: torch.qint8,
    torch.int32: torch.qint32,
}
# Vectorized<T>::size() in ATen's AVX2 kernel, which AVX2 and AVX512 CPUs both run for quantized::add.
VECTOR_WIDTHS: dict[torch.dtype, int] = {torch.quint8: 32, torch.qint8: 32, torch.qint32: 8}
GRAIN_SIZE = 32768  # at::internal::GRAIN_SIZE: TensorIterator runs smaller tensors on one thread
F32 = torch.float32


def add(
    a: torch.Tensor,
    a_scale: float,
    a_zero_point: int,
    b: torch.Tensor,
    b_scale: float,
    b_zero_point: int,
    scale: float,
    zero_point: int,
    relu: bool = False,
    *,
    release: str | None = None,
    vector_width: int | None = None,
    threads: int | None = None,
) -> torch.Tensor:
    """The codes of ``torch.ops.quantized.add`` (``relu=True``: ``add_relu``), bit for bit, on an x86 CPU.

    ``a`` and ``b`` are the integer codes (``int_repr()``) of two quantized tensors of one dtype:
    uint8 for quint8, int8 for qint8, int32 for qint32, each with its scale and zero point;
    ``scale`` and ``zero_point`` are the output's (zero points lie in the dtype's range). ``a`` and
    ``b`` may broadcast, as in torch (when ``b`` is the larger, torch resizes its output, with a
    deprecation warning). The result is a new contiguous integer tensor of the broadcast shape.

    torch computes some elements with its vector body and the others with its scalar tail, which
    round differently (the module docstring has both), so the result depends on the elements'
    positions and on the memory layout: qlib takes the strides of ``a`` and ``b`` for those of the
    quantized tensors torch adds. ``int_repr()`` keeps a channels-last layout but makes other
    strided views contiguous: give such codes the quantized tensor's strides, e.g.
    ``torch.empty_strided(q.shape, q.stride(), dtype=torch.uint8).copy_(q.int_repr())``.

    ``release`` (``"2.13"``, ``"2.14"``; None: the installed torch) chooses FBGEMM's scalar
    rounding (the tail's, and qint32's body's); ``vector_width`` (None: 32 for 8-bit codes, 8 for
    qint32, what both kinds of x86 CPU run) the elements per vector; ``threads`` (None:
    ``torch.get_num_threads()``) how many chunks a tensor of more than 32768 elements is cut into.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> a = torch.tensor([10, 20, 30], dtype=torch.uint8)
    >>> b = torch.tensor([100, 0, 255], dtype=torch.uint8)
    >>> add(a, 0.1, 0, b, 0.05, 128, 0.2, 64)
    tensor([ 62,  42, 111], dtype=torch.uint8)
    >>> ties = torch.full((70,), 1, dtype=torch.uint8)  # 0.5 + 0 = 0.5 = half the output scale
    >>> codes = add(ties, 0.5, 0, ties, 1.0, 1, 1.0, 1, release="2.13")
    >>> codes[:64].unique().tolist(), codes[64:].unique().tolist()  # vector body, scalar tail
    ([1], [2])
    >>> add(ties, 0.5, 0, ties, 1.0, 1, 1.0, 1, release="2.14").unique().tolist()
    [1]
    >>> a, b = torch.full((70,), 1, dtype=torch.uint8), torch.full((70,), 6, dtype=torch.uint8)
    >>> add(a, 0.1, 3, b, 0.1, 3, 0.2, 0)[62:].tolist()  # 0.1 * (1 - 3) + 0.1 * (6 - 3) = 0.5 * 0.2
    [0, 0, 1, 1, 1, 1, 1, 1]
    """
    dtype = _check_codes(a, b)
    qmin, qmax = DTYPE_RANGES[dtype]
    shape = _result_shape(a, b)
    sa = checks.scale_value(a_scale, "a_scale")
    za = checks.zero_point_value(a_zero_point, qmin, qmax, "a_zero_point")
    sb = checks.scale_value(b_scale, "b_scale")
    zb = checks.zero_point_value(b_zero_point, qmin, qmax, "b_zero_point")
    s = checks.scale_value(scale, "scale")
    z = checks.zero_point_value(zero_point, qmin, qmax, "zero_point")
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be True or False; got {relu!r}")
    zero_point_first = torch_release(release) == "2.13"
    width = VECTOR_WIDTHS[dtype] if vector_width is None else _positive_int(vector_width, "vector_width")
    threads = torch.get_num_threads() if threads is None else _positive_int(threads, "threads")

    in_body = vector_lanes(a, b, width, threads)
    tail = ~in_body
    ae, be = a.expand(shape), b.expand(shape)
    inv = float32_reciprocal(s)
    codes = torch.empty(shape, dtype=a.dtype)
    if in_body.any():  # the vector body: FMA dequantization, ATen's QuantizeAvx2
        c = _sum(_dequantize_fma(ae[in_body], sa, za), _dequantize_fma(be[in_body], sb, zb), relu)
        codes[in_body] = _vector_requantize(c, inv, z, dtype, zero_point_first).to(a.dtype)
    if tail.any():  # the scalar tail: FBGEMM's Dequantize and Quantize
        sa32, sb32 = float32(sa), float32(sb)
        c = _sum(per_tensor_values(ae[tail], sa32, za), per_tensor_values(be[tail], sb32, zb), relu)
        codes[tail] = _scalar_requantize(c, inv, z, dtype, zero_point_first).to(a.dtype)
    return codes


def vector_lanes(a: torch.Tensor, b: torch.Tensor, vector_width: int, threads: int) -> torch.Tensor:
    """Which elements of ``a + b`` torch's vector body computes (True) and which its scalar tail (False).

    ``a`` and ``b`` are tensors of one dtype with the shapes and strides of the quantized tensors
    ``quantized::add`` adds (only their layout matters); ``vector_width`` is elements per
    vector, ``threads`` the number of threads. Emulates ``TensorIterator`` (dimension
    reordering and merging), ``at::parallel_for``'s chunks and ``vectorized_loop``'s
    split of each piece into ``2 * vector_width``-element steps and a scalar rest (module
    docstring). Returns a bool tensor of the broadcast shape.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.zeros(70, dtype=torch.uint8)
    >>> lanes = vector_lanes(x, x, 32, 1)
    >>> int(lanes.sum()), bool(lanes[63]), bool(lanes[64])
    (64, True, False)
    >>> vector_lanes(x[::2], x[::2], 32, 1).any().item()  # strided rows take the scalar path
    False
    """
    shape = list(torch.broadcast_shapes(a.shape, b.shape))
    numel = math.prod(shape)
    if numel == 0:
        return torch.zeros(shape, dtype=torch.bool)
    positions, row, vectorizes = iteration_order(a, b)
    if not vectorizes:
        return torch.zeros(shape, dtype=torch.bool)
    chunk = numel
    if numel > GRAIN_SIZE and threads > 1:  # TensorIterator::for_each, then at::parallel_for
        chunk = -(-numel // min(threads, -(-numel // GRAIN_SIZE)))
    row_start = positions - positions % row
    chunk_start = positions - positions % chunk
    start = torch.maximum(row_start, chunk_start)
    end = torch.minimum(row_start + row, (chunk_start + chunk).clamp(max=numel))
    step = 2 * vector_width
    return positions - start < (end - start) // step * step


def iteration_order(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, int, bool]:
    """How ``TensorIterator`` walks ``out = a + b``: each element's position, the row length, whether rows vectorize.

    Returns an int64 tensor of the broadcast shape with each element's position in the
    iteration, the length of the innermost (merged) rows, and whether ``cpu_kernel_vec`` runs
    those rows through ``vectorized_loop`` (all three tensors contiguous along them, or one input
    constant along them) rather than element by element. As ``qadd`` does, the output is
    allocated like ``a`` (contiguous, or channels-last when ``a``'s strides look so); when ``b``
    is larger than ``a``, torch resizes the output to follow the iteration order.

    The dimensions are sorted by the output's strides, ties broken by ``a``'s, then ``b``'s
    (``reorder_dimensions``), and neighbours that every tensor walks as one are merged
    (``coalesce_dimensions``). TensorIterator's fast set-up for same-shaped tensors of one dense
    layout gives the same single row in memory order, so it needs no case of its own.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.zeros(2, 3, dtype=torch.uint8)
    >>> iteration_order(x, x)
    (tensor([[0, 1, 2],
            [3, 4, 5]]), 6, True)
    >>> iteration_order(x.t(), x.t())[1:]  # the output is contiguous: rows of 2, strided in a and b
    (2, False)
    """
    shape = tuple(torch.broadcast_shapes(a.shape, b.shape))
    resize = tuple(a.shape) != shape
    out = None if resize else _output_strides(shape, _suggested_format(a))
    strides = [out, _broadcast_strides(a, shape), _broadcast_strides(b, shape)]
    perm = _reorder(shape, strides)
    dims = [shape[d] for d in perm]
    # each original dimension's step in the iteration (perm[0] moves fastest)
    walk = [0] * len(shape)
    for k, d in enumerate(perm):
        walk[d] = math.prod(dims[:k])
    if resize:  # the resized output is dense in the iteration order
        strides[0] = [walk[d] for d in range(len(shape))]
    filled = cast(list[list[int]], strides)  # the output's strides are known now, resized or not
    dims, merged = _coalesce(dims, [[st[d] for d in perm] for st in filled])
    inner = [st[0] if st else 0 for st in merged]
    vectorizes = inner in ([1, 1, 1], [1, 0, 1], [1, 1, 0])
    row = dims[0] if len(dims) >= 2 else math.prod(shape)
    return _positions(shape, walk), row, vectorizes


def _reorder(shape: tuple[int, ...], strides: list[list[int] | None]) -> list[int]:
    """``TensorIteratorBase::reorder_dimensions``: the permutation, fastest-moving dimension first."""
    n = len(shape)
    perm = list(range(n))[::-1]

    def should_swap(d0: int, d1: int) -> int:
        for st in strides:
            if st is None:  # an output to be resized takes no part
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


def _coalesce(dims: list[int], strides: list[list[int]]) -> tuple[list[int], list[list[int]]]:
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


def _positions(shape: tuple[int, ...], steps: list[int] | tuple[int, ...]) -> torch.Tensor:
    """``sum_d index_d * steps[d]`` for every element of a tensor of ``shape``."""
    pos = torch.zeros(shape, dtype=torch.int64)
    for d, (size, step) in enumerate(zip(shape, steps, strict=True)):
        view = [1] * len(shape)
        view[d] = size
        pos += (torch.arange(size) * step).view(view)
    return pos


def _broadcast_strides(t: torch.Tensor, shape: tuple[int, ...]) -> list[int]:
    """Strides of ``t`` broadcast to ``shape``: 0 along added or stretched dimensions."""
    return list(t.expand(shape).stride())


def _suggested_format(t: torch.Tensor) -> torch.memory_format:
    """``Tensor::suggest_memory_format()``: channels-last if ``t``'s strides look so (4-d, 5-d), else contiguous."""
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


def _output_strides(shape: tuple[int, ...], memory_format: torch.memory_format) -> list[int]:
    """Strides of a new tensor of ``shape`` in ``memory_format`` (the innermost dimension first in ``order``)."""
    order = {torch.channels_last: (1, 3, 2, 0), torch.channels_last_3d: (1, 4, 3, 2, 0)}.get(memory_format)
    strides, step = [0] * len(shape), 1
    for d in order or reversed(range(len(shape))):
        strides[d] = step
        step *= max(shape[d], 1)
    return strides


def _dequantize_fma(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """The vector body's dequantization: ``fma(scale, float(q), float32(scale * -zero_point))``."""
    s = float32(scale)
    premultiplied = (torch.tensor(s, dtype=F32) * -torch.tensor(float(zero_point), dtype=F32)).item()
    return fma_float32(q.float(), s, premultiplied)


def _sum(da: torch.Tensor, db: torch.Tensor, relu: bool) -> torch.Tensor:
    c = da + db  # float32
    return c.clamp(min=0.0) if relu else c  # max(c, 0) keeps NaN, as both paths do


def _vector_requantize(
    c: torch.Tensor, inv: float, zero_point: int, dtype: torch.dtype, zp_first: bool
) -> torch.Tensor:
    """The vector body's requantization (ATen's ``QuantizeAvx2``; FBGEMM's ``Quantize`` for qint32)."""
    if dtype == torch.qint32:
        return _scalar_requantize(c, inv, zero_point, dtype, zp_first)
    # _mm256_min_ps(NaN, 2**31 - 128) returns 2**31 - 128, as +inf does
    c = torch.where(torch.isnan(c), float("inf"), c)
    return per_tensor_codes(c, inv, zero_point, dtype, zero_point_first=False)


def _scalar_requantize(
    c: torch.Tensor, inv: float, zero_point: int, dtype: torch.dtype, zp_first: bool
) -> torch.Tensor:
    """The scalar tail's requantization, FBGEMM's scalar ``Quantize`` (float32, clamped in float64)."""
    qmin, qmax = DTYPE_RANGES[dtype]
    codes = per_tensor_codes(c, inv, zero_point, torch.qint32, zp_first).clamp_(qmin, qmax)
    # NaN (inf - inf, with scales near float32's limit) converts to cvttsd2si's 0x80000000, low byte 0
    return codes.masked_fill_(torch.isnan(codes), -(2**31) if dtype == torch.qint32 else 0)


def _check_codes(a: object, b: object) -> torch.dtype:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.is_quantized or t.dtype not in ADD_DTYPES:
            got = (
                "a quantized tensor (pass its .int_repr())"
                if isinstance(t, torch.Tensor) and t.is_quantized
                else (t.dtype if isinstance(t, torch.Tensor) else type(t).__name__)
            )
            raise TypeError(
                f"{name} must be a tensor of integer codes: torch.uint8 (quint8), torch.int8 (qint8) or "
                f"torch.int32 (qint32), the dtypes quantized::add supports; got {got}"
            )
    assert isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)  # the loop above raised otherwise
    if a.dtype != b.dtype:
        raise TypeError(
            f"a and b must hold codes of one dtype (torch: 'Add operands should have same data type'); "
            f"got {a.dtype} and {b.dtype}"
        )
    return ADD_DTYPES[a.dtype]


def _result_shape(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    try:
        return tuple(torch.broadcast_shapes(a.shape, b.shape))
    except RuntimeError:
        raise ValueError(
            f"a and b must have shapes that broadcast, as quantized::add requires; got {tuple(a.shape)} and "
            f"{tuple(b.shape)}"
        ) from None


def _positive_int(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int or None; got {value!r}")
    return value


def _add_call(args: tuple, settings: Settings, relu: bool) -> torch.Tensor:
    a, b, scale, zero_point = args
    if not (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor)):
        raise ValueError("qlib models quantized::add of two tensors (FloatFunctional.add), not add_scalar")
    codes = add(
        a.int_repr(), a.q_scale(), a.q_zero_point(), b.int_repr(), b.q_scale(), b.q_zero_point(), scale,
        zero_point, relu=relu, release=settings.release,
    )  # fmt: skip
    return quantized(codes, scale, zero_point, a.dtype)


@register("quantized::add", function="qlib.add", modules=("torch.ao.nn.quantized.QFunctional.add",))
def _add_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _add_call(args, settings, relu=False)


@register("quantized::add_relu", function="qlib.add", modules=("torch.ao.nn.quantized.QFunctional.add_relu",))
def _add_relu_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _add_call(args, settings, relu=True)
