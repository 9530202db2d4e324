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

import torch

from qlib import checks
from qlib.dequant import per_tensor_values
from qlib.elementwise_kernels import GRAIN_SIZE as GRAIN_SIZE  # chapter 10 reads qlib.quantized_add.GRAIN_SIZE
from qlib.elementwise_kernels import (
    broadcast_strides,
    dense_strides,
    described,
    loop_lanes,
    loop_order,
    positive_int,
    quantize_val,
    suggested_format,
    thread_count,
    vectorized_dequantize,
    vectorized_quantize,
)
from qlib.numerics import float32, float32_reciprocal
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
    width = VECTOR_WIDTHS[dtype] if vector_width is None else positive_int(vector_width, "vector_width")
    threads = thread_count(threads)

    in_body = vector_lanes(a, b, width, threads)
    tail = ~in_body
    ae, be = a.expand(shape), b.expand(shape)
    inv = float32_reciprocal(s)
    if bool(in_body.all()):  # the common case, every element in the vector body: no masks to gather through
        c = _sum(vectorized_dequantize(ae, sa, za), vectorized_dequantize(be, sb, zb), relu)
        return _vector_requantize(c, inv, z, dtype, zero_point_first).to(a.dtype).contiguous()
    codes = torch.empty(shape, dtype=a.dtype)
    if in_body.any():  # the vector body: FMA dequantization, ATen's QuantizeAvx2
        c = _sum(vectorized_dequantize(ae[in_body], sa, za), vectorized_dequantize(be[in_body], sb, zb), relu)
        codes[in_body] = _vector_requantize(c, inv, z, dtype, zero_point_first).to(a.dtype)
    if tail.any():  # the scalar tail: FBGEMM's Dequantize and Quantize
        sa32, sb32 = float32(sa), float32(sb)
        c = _sum(per_tensor_values(ae[tail], sa32, za), per_tensor_values(be[tail], sb32, zb), relu)
        codes[tail] = quantize_val(c, inv, z, dtype, zero_point_first).to(a.dtype)
    return codes


def vector_lanes(a: torch.Tensor, b: torch.Tensor, vector_width: int, threads: int) -> torch.Tensor:
    """Which elements of ``a + b`` torch's vector body computes (True) and which its scalar tail (False).

    ``a`` and ``b`` are tensors of one dtype with the shapes and strides of the quantized tensors
    ``quantized::add`` adds (only their layout matters); ``vector_width`` is elements per
    vector, ``threads`` the number of threads. Emulates ``TensorIterator`` (dimension
    reordering and merging), ``at::parallel_for``'s chunks and ``vectorized_loop``'s
    split of each piece into ``2 * vector_width``-element steps and a scalar rest (module
    docstring; :func:`qlib.elementwise_kernels.loop_lanes`). Returns a bool tensor of the broadcast shape.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.zeros(70, dtype=torch.uint8)
    >>> lanes = vector_lanes(x, x, 32, 1)
    >>> int(lanes.sum()), bool(lanes[63]), bool(lanes[64])
    (64, True, False)
    >>> vector_lanes(x[::2], x[::2], 32, 1).any().item()  # strided rows take the scalar path
    False
    """
    shape, strides = _add_strides(a, b)
    return loop_lanes(shape, strides, vector_width, threads)


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
    (``coalesce_dimensions``): :func:`qlib.elementwise_kernels.loop_order`. TensorIterator's fast
    set-up for same-shaped tensors of one dense layout gives the same single row in memory order, so
    it needs no case of its own.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.zeros(2, 3, dtype=torch.uint8)
    >>> iteration_order(x, x)
    (tensor([[0, 1, 2],
            [3, 4, 5]]), 6, True)
    >>> iteration_order(x.t(), x.t())[1:]  # the output is contiguous: rows of 2, strided in a and b
    (2, False)
    """
    shape, strides = _add_strides(a, b)
    return loop_order(shape, strides)


def _add_strides(a: torch.Tensor, b: torch.Tensor) -> tuple[tuple[int, ...], list[list[int] | None]]:
    """The broadcast shape and the strides of ``qadd``'s loop: the output's (None when it is resized), a's, b's."""
    shape = tuple(torch.broadcast_shapes(a.shape, b.shape))
    out = None if tuple(a.shape) != shape else dense_strides(shape, suggested_format(a))
    return shape, [out, broadcast_strides(a, shape), broadcast_strides(b, shape)]


def _sum(da: torch.Tensor, db: torch.Tensor, relu: bool) -> torch.Tensor:
    c = da + db  # float32
    return c.clamp(min=0.0) if relu else c  # max(c, 0) keeps NaN, as both paths do


def _vector_requantize(
    c: torch.Tensor, inv: float, zero_point: int, dtype: torch.dtype, zp_first: bool
) -> torch.Tensor:
    """The vector body's requantization (ATen's ``QuantizeAvx2``; FBGEMM's ``Quantize`` for qint32)."""
    if dtype == torch.qint32:
        return quantize_val(c, inv, zero_point, dtype, zp_first)
    return vectorized_quantize(c, inv, zero_point, dtype)


def _check_codes(a: object, b: object) -> torch.dtype:
    for name, t in (("a", a), ("b", b)):
        if not isinstance(t, torch.Tensor) or t.is_quantized or t.dtype not in ADD_DTYPES:
            raise TypeError(
                f"{name} must be a tensor of integer codes: torch.uint8 (quint8), torch.int8 (qint8) or "
                f"torch.int32 (qint32), the dtypes quantized::add supports; got {described(t, 'pass its .int_repr()')}"
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
