"""Language-model weights as torchao 0.18's ``quantize_`` stores them on CPU, and the Linear outputs they give.

Explained in the book chapter "Weights for language models" (``book/12_llm_weights``; its
groundwork, torchao's ``quantize_`` and ``quantize_affine`` with a block size, is "The same model on
torchao", ``book/11_torchao``). A weight of shape ``(N, K)`` (N output features, rows of K inputs) is cut
into groups of ``group_size`` consecutive elements of a row; each group gets one scale and zero
point ("int4, group size 128": 4-bit codes, one scale per 128 weights). Per row is one group of K.
The configs that run on CPU, what their weight subclass holds, and what their Linear computes:

* ``Int8WeightOnlyConfig()`` (per row) or ``(granularity=PerGroup(g))``: ``Int8Tensor``
  (:func:`~qlib.int8_weight`); ``aten::mm`` on the codes as floats, then the scale, or on the dequantized
  weight per group (:func:`~qlib.linear_int8_weight_only`).
* ``Int8DynamicActivationInt8WeightConfig()``: ``Int8Tensor`` (:func:`~qlib.int8_weight`); the activation
  quantized per token, ``aten::_int_mm``, a float epilogue (:func:`~qlib.linear_int8_dynamic`).
* ``IntxWeightOnlyConfig`` and ``Int8DynamicActivationIntxWeightConfig`` (e.g. ``torch.int4``,
  ``PerGroup(32)``): ``IntxUnpackedToInt8Tensor`` (:func:`~qlib.intx_weight`); ``F.linear`` on the
  dequantized weight (and activation) (:func:`~qlib.linear_intx`): no integer matmul.
* ``PrototypeInt4WeightOnlyConfig(group_size)``: ``Int4OpaqueTensor`` (:func:`~qlib.int4_weight_cpu`:
  :func:`~qlib.quantize_int4_tinygemm`, then :func:`~qlib.pack_int4_for_cpu`); ``aten::_weight_int4pack_mm_for_cpu``
  (:func:`~qlib.linear_int4_cpu`). The public ``Int4WeightOnlyConfig`` needs CUDA kernels in 0.18.

The arithmetic is torchao's ``choose_qparams_affine``/``quantize_affine``/``dequantize_affine`` per
group (:func:`~qlib.quantize_per_group`, :func:`~qlib.dequantize_per_group`), done as torchao does it: in the
weight's own dtype (a bfloat16 weight's scale is computed in bfloat16, each step rounded to bfloat16,
then stored as float32 by the int8 configs and as bfloat16 by the intx ones).

Everything here is torchao's bit for bit on x86 CPUs (``tests/test_llm_weights.py``, both torch
releases, AVX512 and AVX2 kernels). Two paths end in torch's own float matmul (MKL or oneDNN), which
qlib does not model: weight-only int8 and intx. There qlib computes the matmul's operands exactly and
calls ``torch.mm``/``F.linear`` on them, as torchao does. The int4 kernel and the ``_int_mm`` path
are modelled to the last bit; ``_int_mm`` is exact on every CPU unless ``ONEDNN_MAX_CPU_ISA`` holds oneDNN
below VNNI on a VNNI CPU, where qlib models its saturating int16 pairs.

Sources: torchao v0.18.0's
`quant_primitives.py <https://github.com/pytorch/ao/blob/v0.18.0/torchao/quantization/quant_primitives.py>`_,
`int8_tensor.py <https://github.com/pytorch/ao/blob/v0.18.0/torchao/quantization/quantize_/workflows/int8/int8_tensor.py>`_,
`intx_unpacked_to_int8_tensor.py <https://github.com/pytorch/ao/blob/v0.18.0/torchao/quantization/quantize_/workflows/intx/intx_unpacked_to_int8_tensor.py>`_,
`int4_opaque_tensor.py <https://github.com/pytorch/ao/blob/v0.18.0/torchao/prototype/quantization/int4/int4_opaque_tensor.py>`_,
`intmm.py <https://github.com/pytorch/ao/blob/v0.18.0/torchao/kernel/intmm.py>`_; torch v2.14.1's
`int4mm_kernel.cpp <https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/cpu/int4mm_kernel.cpp>`_,
`LinearAlgebra.cpp <https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/LinearAlgebra.cpp>`_ (``_int_mm_out_cpu``).
"""

from __future__ import annotations

from typing import Any

import torch

from qlib import checks
from qlib.numerics import INT16_MAX, INT16_MIN, fma_float32, wrap_int32
from qlib.observers import FLOAT32_EPS  # the int8 configs' smallest scale, for bfloat16 weights too
from qlib.onednn import onednn_isa
from qlib.ranges import DTYPE_RANGES
from qlib.registry import Settings, register
from qlib.releases import X86_CAPABILITIES

#: The weight dtypes qlib follows torchao's configs for.
WEIGHT_DTYPES = (torch.float32, torch.bfloat16)
#: Group sizes torchao's int4 CPU path accepts (``Int4OpaqueTensor.from_hp`` asserts them).
INT4_CPU_GROUP_SIZES = (32, 64, 128)


def quantize_per_group(
    x: torch.Tensor,
    group_size: int | None,
    bits: int = 8,
    symmetric: bool = True,
    scale_dtype: torch.dtype | None = None,
    eps: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, scale, zero_point)`` per group of ``group_size`` along the last dimension, as torchao's
    ``choose_qparams_affine`` then ``quantize_affine`` with ``block_size=(1, ..., group_size)``.

    ``group_size=None`` is one group per row (torchao's ``PerRow``, or per token for activations).
    Codes lie in ``[-2**(bits-1), 2**(bits-1) - 1]`` and are stored as int8 (torchao's sub-byte
    dtypes too); ``zero_point`` is int8; ``scale`` is ``scale_dtype`` (None: ``x``'s dtype), shaped
    ``(..., K // group_size)``. Per group, in ``x``'s dtype (float32 or bfloat16, each step rounded
    to it): ``min``, ``max`` widened to include 0; **symmetric**: ``scale = max(-min, max) / ((qmax -
    qmin) / 2)`` (8 bits: 127.5; 4 bits: 7.5), zero point 0; **asymmetric**: ``scale = (max - min) /
    (qmax - qmin)``, ``zero_point = clamp(qmin - round(min / scale))``; ``scale`` floored at ``eps``
    (None: the smallest normal number of ``x``'s dtype), converted to ``scale_dtype``; then
    ``codes = clamp(round(x * (1 / scale)) + zero_point)``, half to even, with ``1 / scale`` in the
    stored scale's dtype.

    NaN and ±inf raise: torchao turns them into arbitrary codes. A last dimension that is not a
    multiple of ``group_size`` raises ValueError (torchao: AssertionError).

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> w = torch.tensor([[0.5, -1.0, 0.25, 0.0], [2.0, 3.0, -0.5, 1.0]])
    >>> codes, scale, zero_point = quantize_per_group(w, 2, bits=4)
    >>> codes  # -1.0 * float32(1 / scale) is just above -7.5: -7
    tensor([[ 4, -7,  7,  0],
            [ 5,  7, -4,  7]], dtype=torch.int8)
    >>> scale
    tensor([[0.1333, 0.0333],
            [0.4000, 0.1333]])
    """
    _float_tensor(x, "x")
    qmin, qmax = _bits_range(bits)
    group = _group_size(x, group_size)
    scale_dtype = x.dtype if scale_dtype is None else scale_dtype
    if scale_dtype not in WEIGHT_DTYPES:
        raise TypeError(f"scale_dtype must be torch.float32 or torch.bfloat16 (or None); got {scale_dtype!r}")
    if eps is None:
        eps = torch.finfo(x.dtype).smallest_normal  # torchao's default: the smallest normal of x's dtype
    if not isinstance(symmetric, bool):
        raise TypeError(f"symmetric must be True or False; got {symmetric!r}")
    groups = x.reshape(*x.shape[:-1], x.shape[-1] // group, group)
    min_val, max_val = groups.amin(dim=-1), groups.amax(dim=-1)
    _finite(x, min_val, max_val, "x")
    min_neg = torch.min(min_val, torch.zeros_like(min_val))  # the range always includes 0
    max_pos = torch.max(max_val, torch.zeros_like(max_val))
    if symmetric:
        scale = torch.max(-min_neg, max_pos) / (float(qmax - qmin) / 2)
        zero_point = torch.full_like(scale, int((qmax + qmin + 1) / 2))
        scale = torch.clamp(scale, min=eps)
    else:
        scale = torch.clamp((max_pos - min_neg) / float(qmax - qmin), min=eps)
        zero_point = torch.clamp(qmin - torch.round(min_neg / scale), qmin, qmax)
    scale, zero_point = scale.to(scale_dtype), zero_point.to(torch.int8)
    inverse = (1.0 / scale).unsqueeze(-1)  # in the scale's dtype, as torchao's 1.0 / scale
    codes = torch.clamp(torch.round(groups * inverse) + zero_point.unsqueeze(-1), qmin, qmax)
    return codes.to(torch.int8).reshape(x.shape), scale, zero_point


def dequantize_per_group(
    codes: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Values of ``codes`` in ``dtype``, as torchao's ``dequantize_affine(..., output_dtype=dtype)``.

    One ``scale`` and ``zero_point`` per group, shaped ``(..., K // group_size)``. torchao 0.18
    converts codes and zero points to ``dtype`` first, subtracts there, multiplies by the scale in
    the promoted dtype (a float32 scale makes a bfloat16 difference float32) and rounds the product
    to ``dtype``: ``dtype((dtype(q) - dtype(zero_point)) * scale)``.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> codes = torch.tensor([[4, -8, 7, 0]], dtype=torch.int8)
    >>> dequantize_per_group(codes, torch.tensor([[0.125, 0.25]]), torch.zeros(1, 2, dtype=torch.int8), torch.float32)
    tensor([[ 0.5000, -1.0000,  1.7500,  0.0000]])
    """
    checks.code_tensor(codes, "codes", torch.int8, "int8 codes of a torchao weight")
    if dtype not in WEIGHT_DTYPES:
        raise TypeError(f"dtype must be torch.float32 or torch.bfloat16; got {dtype!r}")
    count = scale.shape[-1] if scale.dim() else 0
    if count == 0 or codes.shape[-1] % count or tuple(scale.shape[:-1]) != tuple(codes.shape[:-1]):
        raise ValueError(
            f"scale must hold one value per group, shaped (..., K // group_size) for codes of shape "
            f"{tuple(codes.shape)}; got {tuple(scale.shape)}"
        )
    if zero_point.shape != scale.shape:
        raise ValueError(f"zero_point must be shaped as scale, {tuple(scale.shape)}; got {tuple(zero_point.shape)}")
    group = codes.shape[-1] // count
    groups = codes.reshape(*codes.shape[:-1], count, group).to(dtype)
    values = (groups - zero_point.unsqueeze(-1).to(dtype)) * scale.unsqueeze(-1)
    return values.reshape(codes.shape).to(dtype)


def int8_weight(weight: torch.Tensor, group_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(qdata, scale, zero_point)`` of the ``Int8Tensor`` that ``Int8WeightOnlyConfig`` and
    ``Int8DynamicActivationInt8WeightConfig`` make of ``weight``.

    Symmetric int8 per row (``group_size=None``, the default ``PerRow()``) or per group
    (``Int8WeightOnlyConfig(granularity=PerGroup(group_size))``): :func:`quantize_per_group` with a
    float32 scale floored at float32's epsilon, for bfloat16 weights too (so their scales are
    bfloat16 values stored as float32). Zero points are 0.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> qdata, scale, zero_point = int8_weight(torch.tensor([[0.5, -1.0, 0.25, 0.0]]))
    >>> qdata, scale
    (tensor([[  64, -127,   32,    0]], dtype=torch.int8), tensor([[0.0078]]))
    """
    return quantize_per_group(weight, group_size, 8, True, torch.float32, FLOAT32_EPS)


def intx_weight(
    weight: torch.Tensor, group_size: int | None = 32, bits: int = 4, symmetric: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(qdata, scale, zero_point)`` of the ``IntxUnpackedToInt8Tensor`` that ``IntxWeightOnlyConfig``
    and ``Int8DynamicActivationIntxWeightConfig`` make of ``weight``.

    ``bits`` is the config's ``weight_dtype`` (``torch.int4``: 4), ``group_size`` its
    ``PerGroup(group_size)`` (None: ``PerAxis(0)``, one group per row), ``symmetric`` its mapping
    type. :func:`quantize_per_group` with torchao's defaults: the scale in the weight's dtype, floored
    at its smallest normal number; codes in ``[-2**(bits-1), 2**(bits-1) - 1]`` held as int8.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> qdata, scale, zero_point = intx_weight(torch.tensor([[0.5, -1.0, 0.25, 0.0]]), group_size=4)
    >>> qdata, scale
    (tensor([[ 4, -7,  2,  0]], dtype=torch.int8), tensor([[0.1333]]))
    """
    return quantize_per_group(weight, group_size, bits, symmetric)


def quantize_int4_tinygemm(weight: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(codes, scale, zero)`` of ``PrototypeInt4WeightOnlyConfig``: torchao's tinygemm int4 arithmetic.

    Asymmetric, codes 0..15 (int32), and a float zero point that is not the code of 0.0: per group,
    in the weight's dtype, ``scale = max(eps, (max - min) / 15)`` with ``eps = 1e-6`` (the range is
    not widened to include 0), ``zero = min + scale * 8``; then ``codes = clamp(round((w - (zero -
    scale * 8)) / scale), 0, 15)``. The kernel reads a code ``c`` as ``(c - 8) * scale + zero``.
    ``scale`` and ``zero`` have the weight's dtype, shaped ``(N, K // group_size)``. Group sizes
    32, 64 and 128 only, as torchao asserts (its docstring also lists 256). A group whose range
    overflows the dtype raises ValueError (torchao's codes are then NaN converted to int32).

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> codes, scale, zero = quantize_int4_tinygemm(torch.arange(32.0).reshape(1, 32), 32)
    >>> codes[0, :6], scale, zero
    (tensor([0, 0, 1, 1, 2, 2], dtype=torch.int32), tensor([[2.0667]]), tensor([[16.5333]]))
    """
    _float_tensor(weight, "weight")
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-d, (out_features, in_features); got shape {tuple(weight.shape)}")
    if group_size not in INT4_CPU_GROUP_SIZES:
        raise ValueError(
            f"group_size must be one of {INT4_CPU_GROUP_SIZES} for torchao's int4 CPU weight "
            f"(Int4OpaqueTensor.from_hp asserts it); got {group_size!r}"
        )
    if weight.shape[1] % group_size:
        raise ValueError(
            f"the row length {weight.shape[1]} is not a multiple of group_size {group_size}: "
            "PrototypeInt4WeightOnlyConfig then leaves the layer unquantized (it only logs a message)"
        )
    groups = weight.reshape(weight.shape[0], -1, group_size)
    min_val, max_val = groups.amin(dim=-1), groups.amax(dim=-1)
    _finite(weight, min_val, max_val, "weight")
    scale = torch.clamp((max_val - min_val) / 15.0, min=1e-6)
    if torch.isinf(scale).any():
        raise ValueError(
            f"a group's range max - min overflows {weight.dtype} (its scale is inf): torchao's codes then "
            "come from NaN (-2**31 as int32, packed as 0). Scale the weight down before quantizing"
        )
    zero = min_val + scale * 8.0
    lowest = (zero - scale * 8.0).unsqueeze(-1)  # the value of code 0
    codes = torch.clamp(torch.round((groups - lowest) / scale.unsqueeze(-1)), 0, 15)
    return codes.to(torch.int32).reshape(weight.shape), scale, zero


def pack_int4_for_cpu(codes: torch.Tensor, capability: str | None = None) -> torch.Tensor:
    """The bytes of ``torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1)``: two codes a byte.

    ``codes`` is int32 ``(N, K)`` with values 0..15, N a multiple of 16 and K even (torch checks
    both). The result is uint8 ``(N, K // 2)``, holding for each block of ``BLOCK_N`` rows (64 on
    AVX512, 32 on AVX2; ``capability`` None reads ``torch.backends.cpu.get_cpu_capability()``) a
    ``(K, BLOCK_N // 2)`` matrix: byte ``[k, j]`` is ``codes[j + BLOCK_N//2, k] << 4 | codes[j, k]``.
    A last, shorter block (16, 32 or 48 rows) pairs neighbouring rows instead: ``codes[2j + 1, k]
    << 4 | codes[2j, k]``. The layout depends on the CPU, so a checkpoint's bytes do too.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> codes = torch.arange(16, dtype=torch.int32).reshape(16, 1).repeat(1, 2)
    >>> pack_int4_for_cpu(codes, "AVX512")[:2]
    tensor([[16],
            [50]], dtype=torch.uint8)
    """
    checks.code_tensor(codes, "codes", torch.int32, "int4 codes 0..15")
    block = _int4_block_n(capability)
    if codes.dim() != 2 or codes.shape[0] % 16 or codes.shape[1] % 2:
        raise ValueError(
            f"codes must be 2-d (N, K) with N a multiple of 16 and K even, as torch's "
            f"_convert_weight_to_int4pack_for_cpu checks; got shape {tuple(codes.shape)}"
        )
    if codes.numel() and (codes.min() < 0 or codes.max() > 15):
        raise ValueError("codes must lie in [0, 15] (torch would keep only the low 4 bits)")
    n, k = codes.shape
    nibbles = codes.to(torch.uint8)
    whole = n - n % block
    # whole blocks: (blocks, 2 halves, BLOCK_N // 2 rows, K); the second half goes to the high nibbles
    halves = nibbles[:whole].reshape(whole // block, 2, block // 2, k)
    parts = [((halves[:, 1] << 4) | halves[:, 0]).transpose(1, 2).reshape(-1)]  # each block k major
    if whole < n:  # the last, shorter block: neighbouring rows share a byte
        rest = nibbles[whole:]
        parts.append(((rest[1::2] << 4) | rest[0::2]).t().reshape(-1))
    return torch.cat(parts).reshape(n, k // 2)


def int4_weight_cpu(
    weight: torch.Tensor, group_size: int = 128, capability: str | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(qdata, scale_and_zero)`` of the ``Int4OpaqueTensor`` that ``PrototypeInt4WeightOnlyConfig(group_size)``
    makes of ``weight``: the codes of :func:`quantize_int4_tinygemm` packed by
    :func:`pack_int4_for_cpu`, and scales and zeros interleaved, ``(K // group_size, N, 2)`` in the
    weight's dtype (``[..., 0]`` scales, ``[..., 1]`` zeros).

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> qdata, scale_and_zero = int4_weight_cpu(torch.arange(32.0).repeat(16, 1), 32)
    >>> qdata.shape, scale_and_zero[0, 0]
    (torch.Size([16, 16]), tensor([ 2.0667, 16.5333]))
    """
    codes, scale, zero = quantize_int4_tinygemm(weight, group_size)
    qdata = pack_int4_for_cpu(codes, capability)
    return qdata, torch.stack([scale.t(), zero.t()], dim=-1).contiguous()


def linear_int8_dynamic(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    bias: torch.Tensor | None = None,
    pairs_saturate: bool | None = None,
) -> torch.Tensor:
    """The output of a Linear after ``Int8DynamicActivationInt8WeightConfig()``, bit for bit.

    ``qdata``, ``scale`` are :func:`int8_weight`'s (per row). torchao quantizes each row of ``x``
    (each token) symmetrically to int8 (:func:`quantize_per_group`, float32 scale floored at
    float32's epsilon), multiplies the codes in int32 (``torch._int_mm``, oneDNN), then in torch's
    order: ``float32(acc) * x_scale``, rounded to ``x``'s dtype, times the weight's scale (float32: a
    bfloat16 product is promoted), plus ``bias``, rounded to ``x``'s dtype.

    The product is exact on every CPU as it comes: torch's ``_int_mm`` calls oneDNN only where cpuinfo
    reports AVX512-VNNI (oneDNN then runs VNNI or AMX instructions; torchao adds 128 to the codes on
    VNNI CPUs without AMX and subtracts ``128 * column sums`` again: the same integers), and on any
    other CPU (AVX2 only, AVX-VNNI only, AVX-512 without VNNI) adds the int32 products in a loop of its
    own. Only when ``ONEDNN_MAX_CPU_ISA`` caps oneDNN below VNNI on an AVX512-VNNI CPU
    (``pairs_saturate=True``; a way to emulate an AVX2 CPU that does not emulate it here) do oneDNN's
    AVX2 and AVX-512 kernels run: they add 128, multiply with ``vpmaddubsw`` and add each pair of
    products ``(k, k + 1)`` in saturating int16, so that ``acc = sum_pairs clamp16((x[k] + 128) w[k] +
    (x[k+1] + 128) w[k+1]) - 128 sum_k w[k]``: far from the exact product once codes are large.
    ``None`` reads this process's: saturating where the CPU has AVX512-VNNI and oneDNN's int8 kernels
    (``qlib.onednn.onednn_isa()``) are ``avx512_core``, ``avx2`` or ``sse41``. Measured: exact under
    ``qemu-x86_64 -cpu Haswell`` (torch makes no oneDNN call there), saturated with the cap on an
    AVX512-VNNI CPU; the condition is ``_int_mm_out_cpu``'s in torch's ``LinearAlgebra.cpp``.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> w, s, _ = int8_weight(torch.tensor([[0.5, -1.0], [0.25, 2.0]]))
    >>> x = torch.tensor([[1.0, 2.0]])
    >>> linear_int8_dynamic(x, w, s, pairs_saturate=False), linear_int8_dynamic(x, w, s, pairs_saturate=True)
    (tensor([[-1.4804,  4.2207]]), tensor([[-1.4804,  3.5588]]))
    """
    _float_tensor(x, "x")
    checks.code_tensor(qdata, "qdata", torch.int8, "int8 weight codes")
    if qdata.dim() != 2 or x.shape[-1] != qdata.shape[1] or scale.numel() != qdata.shape[0]:
        raise ValueError(
            f"need x (..., K), qdata (N, K) and one scale per row of qdata; got {tuple(x.shape)}, "
            f"{tuple(qdata.shape)} and {scale.numel()} scales"
        )
    codes, x_scale, _ = quantize_per_group(x, None, 8, True, torch.float32, FLOAT32_EPS)
    codes = codes.reshape(-1, x.shape[-1])
    if pairs_saturate is None:  # oneDNN (VNNI CPUs only) held below VNNI by ONEDNN_MAX_CPU_ISA
        pairs_saturate = torch.cpu._is_vnni_supported() and onednn_isa() in ("avx512_core", "avx2", "sse41")
    acc = wrap_int32(_int_matmul(codes, qdata, pairs_saturate))
    y = (acc.to(torch.float32) * x_scale.reshape(-1, 1)).to(x.dtype)
    y = (y * scale.flatten()).reshape(*x.shape[:-1], qdata.shape[0])
    if bias is not None:
        y += bias
    return y.to(x.dtype)


def _int_matmul(codes: torch.Tensor, weight: torch.Tensor, pairs_saturate: bool) -> torch.Tensor:
    """``codes @ weight.T`` in int64, or as oneDNN's ``vpmaddubsw`` kernels compute it (pairs saturated)."""
    if not pairs_saturate:
        return codes.long() @ weight.long().t()
    shifted, w = codes.long() + 128, weight.long()
    if w.shape[1] % 2:  # an odd K: the last product's partner is 0
        shifted, w = torch.nn.functional.pad(shifted, (0, 1)), torch.nn.functional.pad(w, (0, 1))
    acc = torch.zeros(shifted.shape[0], w.shape[0], dtype=torch.int64)
    for start in range(0, w.shape[1], 256):  # 128 pairs at a time keeps the (M, N, pairs) products small
        products = shifted[:, None, start : start + 256] * w[None, :, start : start + 256]
        acc += (products[..., 0::2] + products[..., 1::2]).clamp(INT16_MIN, INT16_MAX).sum(-1)
    return acc - 128 * w.sum(1)


def linear_int8_weight_only(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    bias: torch.Tensor | None = None,
) -> torch.Tensor:
    """The output of a Linear after ``Int8WeightOnlyConfig``, from :func:`int8_weight`'s ``qdata``, ``scale``, ``zero_point``.

    Per row (one scale per row): ``torch.mm(x, qdata.t().to(x.dtype)) * scale``, the codes as floats
    in torch's float matmul and the scale after it; per group: ``torch.mm(x, w.t())`` with ``w``
    :func:`dequantize_per_group` in ``x``'s dtype. Then ``+ bias``, rounded to ``x``'s dtype. The
    matmul is torch's own (MKL/oneDNN, whose accumulation order qlib does not model), on operands
    equal bit for bit to torchao's, so the output is too.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> w, s, z = int8_weight(torch.tensor([[0.5, -1.0], [0.25, 2.0]]))
    >>> linear_int8_weight_only(torch.tensor([[1.0, 2.0]]), w, s, z)
    tensor([[-1.4902,  4.2353]])
    """
    _float_tensor(x, "x")
    checks.code_tensor(qdata, "qdata", torch.int8, "int8 weight codes")
    rows = x.reshape(-1, x.shape[-1])
    if scale.shape[-1] == 1:
        y = torch.mm(rows, qdata.t().to(x.dtype))
        y = y * scale.to(y.dtype).flatten()
    else:
        y = torch.mm(rows, dequantize_per_group(qdata, scale, zero_point, x.dtype).t())
    y = y.reshape(*x.shape[:-1], qdata.shape[0])
    if bias is not None:
        y += bias
    return y.to(x.dtype)


def dequantize_activation_per_token(x: torch.Tensor) -> torch.Tensor:
    """``x`` quantized to int8 per token (asymmetric) and back, as ``Int8DynamicActivationIntxWeightConfig`` does.

    torchao's ``_apply_int8_act_asym_per_token_quant_dequant``: :func:`quantize_per_group` per row,
    asymmetric, the scale in ``x``'s dtype floored at its smallest normal number, then
    :func:`dequantize_per_group` in ``x``'s dtype. The Linear then multiplies this in float.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> dequantize_activation_per_token(torch.tensor([[0.1, -0.3, 1.0]]))
    tensor([[ 0.1020, -0.3008,  0.9992]])
    """
    codes, scale, zero_point = quantize_per_group(x, None, 8, False)
    return dequantize_per_group(codes, scale, zero_point, x.dtype)


def linear_intx(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    bias: torch.Tensor | None = None,
    dynamic_activation: bool = False,
) -> torch.Tensor:
    """The output of a Linear after ``IntxWeightOnlyConfig`` (or, ``dynamic_activation=True``,
    ``Int8DynamicActivationIntxWeightConfig``), from :func:`intx_weight`'s ``qdata``, ``scale``, ``zero_point``.

    torchao dequantizes the weight (:func:`dequantize_per_group`, in the weight's dtype, which is
    ``scale``'s), with dynamic activations replaces ``x`` by :func:`dequantize_activation_per_token`,
    and calls ``F.linear``: torch's own float matmul on operands equal bit for bit to torchao's.
    No integer matmul happens on this path.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> w, s, z = intx_weight(torch.tensor([[0.5, -1.0], [0.25, 2.0]]), group_size=2)
    >>> linear_intx(torch.tensor([[1.0, 2.0]]), w, s, z)
    tensor([[-1.3333,  4.0000]])
    """
    _float_tensor(x, "x")
    if not isinstance(dynamic_activation, bool):
        raise TypeError(f"dynamic_activation must be True or False; got {dynamic_activation!r}")
    weight = dequantize_per_group(qdata, scale, zero_point, scale.dtype)
    if dynamic_activation:
        x = dequantize_activation_per_token(x)
    return torch.nn.functional.linear(x, weight, bias)


def linear_int4_cpu(
    x: torch.Tensor,
    qdata: torch.Tensor,
    scale_and_zero: torch.Tensor,
    group_size: int,
    bias: torch.Tensor | None = None,
    capability: str | None = None,
) -> torch.Tensor:
    """The output of a Linear after ``PrototypeInt4WeightOnlyConfig``: ``aten::_weight_int4pack_mm_for_cpu``, modelled bit for bit.

    ``qdata``, ``scale_and_zero`` are :func:`int4_weight_cpu`'s. torch's kernel
    (``int4mm_kernel.cpp``) computes each output in float32, one input ``k`` after the other, with
    fused multiply-adds: the weight ``b = fma(c - 8, scale, zero)`` and ``acc = fma(x[k], b, acc)``,
    rounded at the end to ``x``'s dtype. bfloat16 on AVX2 kernels reads the code as ``fma(c, scale,
    fma(scale, -8, zero))`` instead (``capability`` None reads ``torch.backends.cpu.get_cpu_capability()``),
    as torch's source says: the two readings differ in the last bit of some weights, but no random
    test has told them apart after the rounding to bfloat16 (0 of 655,360 outputs differ).
    torchao then adds ``bias`` in ``x``'s dtype. The loop over K makes qlib slow here (a few ms per
    thousand inputs), and exact.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> qdata, sz = int4_weight_cpu(torch.arange(32.0).repeat(16, 1), 32)
    >>> linear_int4_cpu(torch.ones(1, 32), qdata, sz, 32)[0, :2]
    tensor([496.0000, 496.0000])
    """
    _float_tensor(x, "x")
    found = _capability(capability)
    if scale_and_zero.dtype != x.dtype:
        raise TypeError(f"scale_and_zero must have x's dtype, {x.dtype} (torch checks it); got {scale_and_zero.dtype}")
    n, k = qdata.shape[0], qdata.shape[1] * 2
    if x.shape[-1] != k or tuple(scale_and_zero.shape) != (k // group_size, n, 2) or k % group_size:
        raise ValueError(
            f"need x (..., K), qdata (N, K // 2) and scale_and_zero (K // group_size, N, 2); got "
            f"{tuple(x.shape)}, {tuple(qdata.shape)}, {tuple(scale_and_zero.shape)} for group_size {group_size}"
        )
    codes = _unpack_int4_for_cpu(qdata, found)
    scale = scale_and_zero[..., 0].float().t().repeat_interleave(group_size, dim=1)  # (N, K)
    zero = scale_and_zero[..., 1].float().t().repeat_interleave(group_size, dim=1)
    if found == "AVX2" and x.dtype == torch.bfloat16:
        weight = fma_float32(codes.float(), scale, fma_float32(scale, -8.0, zero))
    else:
        weight = fma_float32((codes - 8).float(), scale, zero)
    rows = x.reshape(-1, k).float()
    acc = torch.zeros(rows.shape[0], n)
    for i in range(k):
        acc = fma_float32(rows[:, i : i + 1].expand_as(acc), weight[:, i].expand_as(acc), acc)
    y = acc.to(x.dtype).reshape(*x.shape[:-1], n)
    if bias is not None:
        y += bias
    return y.to(x.dtype)


def _unpack_int4_for_cpu(qdata: torch.Tensor, capability: str) -> torch.Tensor:
    """The int32 codes ``(N, K)`` that :func:`pack_int4_for_cpu` packed into ``qdata``."""
    checks.code_tensor(qdata, "qdata", torch.uint8, "int4 codes packed two a byte")
    block = _int4_block_n(capability)
    n, k = qdata.shape[0], qdata.shape[1] * 2
    flat, rows = qdata.reshape(-1).int(), []
    for start in range(0, n, block):
        size = min(block, n - start)
        part = flat[start * k // 2 : (start + size) * k // 2].reshape(k, size // 2).t()
        low, high = part & 15, part >> 4
        rows.append(torch.cat([low, high]) if size == block else torch.stack([low, high], 1).reshape(size, k))
    return torch.cat(rows)


def _int4_block_n(capability: str | None) -> int:
    return {"AVX512": 64, "AVX2": 32}[_capability(capability)]


def _capability(capability: str | None) -> str:
    found = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    if not isinstance(found, str) or found.upper() not in X86_CAPABILITIES:
        raise ValueError(
            f"capability must be one of {', '.join(map(repr, X86_CAPABILITIES))}, the x86 kernels qlib models "
            f"(None reads torch.backends.cpu.get_cpu_capability()); got {found!r}"
        )
    return found.upper()


def torchao_linear_op(weight: object) -> str | None:
    """The row of qlib's operator table (``qlib.registry``) for ``F.linear`` on ``weight``: one of torchao's
    CPU weights above (``"torchao::linear_int4_cpu"``...), or None for any other weight.

    torchao's subclasses compute ``F.linear`` in their ``__torch_function__``, above torch's dispatcher, so
    ``qlib.run`` and ``qlib.compare`` meet them there and ask this which qlib function is theirs.

    Chapter: "Weights for language models" (book/12_llm_weights).

    >>> torchao_linear_op(torch.ones(2, 2)) is None
    True
    """
    if not type(weight).__module__.startswith("torchao."):
        return None
    kind = type(weight).__name__
    if kind == "Int8Tensor":
        dynamic = getattr(weight, "act_quant_kwargs", None) is not None
        return "torchao::linear_int8_dynamic" if dynamic else "torchao::linear_int8_weight_only"
    return {"IntxUnpackedToInt8Tensor": "torchao::linear_intx", "Int4OpaqueTensor": "torchao::linear_int4_cpu"}.get(
        kind
    )


def _linear_arguments(args: tuple, kwargs: dict) -> tuple[torch.Tensor, Any, torch.Tensor | None]:
    """``F.linear``'s input, weight (a torchao subclass: its tensors are attributes) and bias, however passed."""
    x = args[0] if args else kwargs["input"]
    weight = args[1] if len(args) > 1 else kwargs["weight"]
    bias = args[2] if len(args) > 2 else kwargs.get("bias")
    return x, weight, bias


def _refuse(weight: Any, what: str) -> None:
    raise ValueError(
        f"this {type(weight).__name__} weight {what}, which qlib does not model: qlib follows torchao's CPU "
        "configs as quantize_ makes them with their defaults (see qlib.llm_weights)"
    )


def _no_pre_scale(weight: Any) -> None:
    if getattr(weight, "act_pre_scale", None) is not None:
        _refuse(weight, "scales its input first (act_pre_scale: AWQ, SmoothQuant)")


@register(
    "torchao::linear_int8_weight_only",
    function="qlib.linear_int8_weight_only",
    modules=("torch.nn.Linear after quantize_(model, Int8WeightOnlyConfig())",),
    on_float=True,
)
def _linear_int8_weight_only_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    x, weight, bias = _linear_arguments(args, kwargs)
    _no_pre_scale(weight)
    return linear_int8_weight_only(x, weight.qdata, weight.scale, weight.zero_point, bias)


@register(
    "torchao::linear_int8_dynamic",
    function="qlib.linear_int8_dynamic",
    modules=("torch.nn.Linear after quantize_(model, Int8DynamicActivationInt8WeightConfig())",),
    on_float=True,
)
def _linear_int8_dynamic_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    x, weight, bias = _linear_arguments(args, kwargs)
    _no_pre_scale(weight)
    activation = weight.act_quant_kwargs
    if type(activation.granularity).__name__ != "PerRow" or activation.mapping_type.name != "SYMMETRIC":
        _refuse(weight, f"quantizes its input {activation.mapping_type.name} {activation.granularity}, not per row")
    if activation.reduce_range or getattr(weight, "act_quant_scale", None) is not None:
        _refuse(weight, "quantizes its input with reduce_range or a static scale")
    return linear_int8_dynamic(x, weight.qdata, weight.scale, bias, settings.pairs_saturate)


@register(
    "torchao::linear_intx",
    function="qlib.linear_intx",
    modules=(
        "torch.nn.Linear after quantize_(model, IntxWeightOnlyConfig(...))",
        "torch.nn.Linear after quantize_(model, Int8DynamicActivationIntxWeightConfig(...))",
    ),
    on_float=True,
)
def _linear_intx_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    x, weight, bias = _linear_arguments(args, kwargs)
    activation = weight.activation_quantization
    if activation is not None and activation != "int8_asym_per_token":  # a str enum, or a str after a copy
        _refuse(weight, f"quantizes its input as {activation}")
    dynamic = activation is not None
    return linear_intx(x, weight.qdata, weight.scale, weight.zero_point, bias, dynamic_activation=dynamic)


@register(
    "torchao::linear_int4_cpu",
    function="qlib.linear_int4_cpu",
    modules=("torch.nn.Linear after quantize_(model, PrototypeInt4WeightOnlyConfig(group_size))",),
    on_float=True,
)
def _linear_int4_cpu_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    x, weight, bias = _linear_arguments(args, kwargs)
    _no_pre_scale(weight)
    if getattr(weight, "act_mapping_type", None) is not None:
        _refuse(weight, "quantizes its input to int8 (torchao's DA8W4 path)")
    return linear_int4_cpu(x, weight.qdata, weight.scale_and_zero, weight.block_size[1], bias)


def _float_tensor(x: object, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor) or x.dtype not in WEIGHT_DTYPES:
        got = x.dtype if isinstance(x, torch.Tensor) else type(x).__name__
        raise TypeError(
            f"{name} must be a float32 or bfloat16 tensor (what qlib follows torchao's configs for); got {got}"
        )
    return x


def _finite(x: torch.Tensor, min_val: torch.Tensor, max_val: torch.Tensor, name: str) -> None:
    """Raise if ``x`` holds NaN or ±inf, seen in its groups' minima and maxima (no extra pass over ``x``)."""
    if torch.isfinite(min_val).all() and torch.isfinite(max_val).all():
        return
    checks.no_nan(x, name)
    raise ValueError(
        f"{name} contains {int(torch.isinf(x).sum())} infinite value(s): torchao's scale becomes inf or "
        "its codes NaN, which turn into arbitrary integers. Replace them before quantizing"
    )


def _bits_range(bits: object) -> tuple[int, int]:
    if isinstance(bits, bool) or not isinstance(bits, int) or not 1 <= bits <= 8:
        raise ValueError(f"bits must be an int from 1 to 8 (torchao's torch.int1 .. torch.int8); got {bits!r}")
    lo, hi = DTYPE_RANGES[torch.int8]
    return lo >> (8 - bits), hi >> (8 - bits)


def _group_size(x: torch.Tensor, group_size: object) -> int:
    if x.dim() < 1 or x.shape[-1] == 0:
        raise ValueError(f"x must have a non-empty last dimension; got shape {tuple(x.shape)}")
    if group_size is None:
        return x.shape[-1]
    if isinstance(group_size, bool) or not isinstance(group_size, int) or group_size < 1:
        raise TypeError(f"group_size must be a positive int or None (one group per row); got {group_size!r}")
    if x.shape[-1] % group_size:
        raise ValueError(
            f"the row length {x.shape[-1]} is not a multiple of group_size {group_size}; torchao asserts "
            f"the same (AssertionError: 'Last dimension of input {x.shape[-1]} is not divisible by group size "
            f"{group_size}'). Pick a group size that divides the row, or pad the weight"
        )
    return group_size
