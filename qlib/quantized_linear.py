"""A quantized Linear layer, integer by integer, as PyTorch's ``x86``, ``fbgemm``, ``qnnpack`` and ``onednn`` engines
compute it.

Explained in the book chapter "Inside a quantized Linear" (``book/09_linear``).

``torch.ao.nn.quantized.Linear`` (and ``LinearReLU``) call ``quantized::linear``, which on the
``x86`` and ``fbgemm`` engines runs FBGEMM (``PackedLinearWeight::apply_impl`` in PyTorch's
``aten/src/ATen/native/quantized/cpu/qlinear.cpp``). For uint8 activation codes ``x`` and int8
weight codes ``w`` it computes, per output element:

1. ``acc = sum_k x[m, k] * w[n, k]``, an int32 sum of the raw codes. On CPUs without
   AVX512-VNNI, FBGEMM multiplies with ``vpmaddubsw``, which adds each pair of products
   ``(k, k + 1)``, k even, in int16 *with saturation* before the exact int32 sum; with VNNI
   (``vpdpbusd``) no pair saturates.
2. ``raw = acc - x_zero_point * (sum_k w[n, k] - w_zero_point[n] * K) - w_zero_point[n] *
   sum_k x[m, k]``, in int32 (wrapping): the zero points' corrections, so that ``raw`` is
   ``sum_k (x - x_zero_point) (w - w_zero_point)`` whenever no pair saturated.
3. Requantization in float32 (FBGEMM ``requantizeOutputProcessingAvx2``):
   ``ats = float32(x_scale) * w_scale[n]`` and ``mult = ats / float32(scale)``; the float bias
   is added in units of the accumulator, ``fma(bias, float32(1 / double(ats)), raw)`` per
   tensor (one rounding: the compiler fused the multiply and the add, in the 2.13.0+cpu and 2.14.1
   x86 wheels measured; another build could round twice) and ``raw + bias / ats`` per channel; then
   ``rint(v * mult)`` (an out-of-range result becomes ``-2**31``), plus the output zero point,
   clamped to 0..255; a fused ReLU is ``max(q, zero_point)``.

The ``qnnpack`` engine (the default of PyTorch's mobile builds; Linux builds with oneDNN, ARM ones
included, default to ``onednn`` unless FBGEMM supports the CPU: ``Context::qEngine`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/Context.cpp; it runs on x86 too) computes the same layer
differently (``PackedLinearWeightsQnnp::apply_impl`` in ``qlinear.cpp``, the kernel
``pytorch_q8gemm_ukernel_4x4c2__sse2`` under ``qnnpack/src/q8gemm/``):

1. the float bias is quantized to int32 once, by ``quant_utils::QuantizeBias`` (ATen's
   ``QuantUtils.h``): ``quantize_per_tensor`` (per channel: ``quantize_per_channel``) to qint32
   with scale ``x_scale * weight_scale`` in float64 and zero point 0;
2. ``acc = int32 bias + sum_k (x - x_zero_point)(w - w_zero_point)``, exact in int32 (the zero
   points are subtracted before multiplying, in int16; no pair can saturate);
3. ``mult = float32(float32(x_scale) * w_scale[n]) * (1.0f / float32(scale))``, all float32
   (``generate_requantization_scales`` in ``QnnpackUtils.h``: a reciprocal, not a division);
   ``rint(float32(acc) * mult)`` (``float32(acc)`` rounds once ``|acc| > 2**24``), plus the zero
   point, clamped to 0..255; a fused ReLU is ``max(q, zero_point)``.

The ``onednn`` engine runs it on oneDNN (``PackedLinearWeightsOnednn::apply_impl`` in ``qlinear.cpp``:
a ``brg_matmul`` kernel, or ``gemm:jit`` on CPUs with AVX2 only), which refuses weights whose zero
point is not 0 and requantizes as its convolutions do (``qlib.onednn``): the exact int32 sum
``sum_k (x - x_zero_point) w`` (pairs saturate on CPUs without VNNI), scaled in float32 with a
weight scale that went through two reciprocals, the float bias added, the zero point added before
rounding. The ``x86`` engine never sends a Linear to oneDNN (``QLinearPackWeightInt8::run`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qlinear_prepack.cpp
packs it for FBGEMM).

The same arithmetic in torch 2.13 and 2.14, for every engine (measured on both).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from qlib import checks
from qlib.numerics import INT16_MAX, INT16_MIN, fma_float32
from qlib.onednn import (
    onednn_accumulators,
    onednn_isa_for,
    onednn_linear_arithmetic,
    onednn_linear_kernel,
    onednn_linear_weight_scales,
    onednn_requantize,
)
from qlib.quant import quantize
from qlib.registry import Settings, packed_backend, quantized, register
from qlib.releases import torch_release

ENGINES = ("x86", "fbgemm", "qnnpack", "onednn")  # the quantized engines whose Linear qlib reproduces
PAIR_CHUNK = 2**22  # products per piece when summing pairs with saturation (16 MiB of float32)


def pairs_saturate_here() -> bool:
    """Whether FBGEMM on this CPU adds pairs of u8·s8 products in saturating int16.

    True on CPUs without AVX512-VNNI (FBGEMM's AVX2 and AVX-512 kernels use
    ``vpmaddubsw``), and when the environment variable
    ``FBGEMM_ENABLE_INSTRUCTIONS`` forces FBGEMM down to ``AVX2``, ``AVX512``
    or ``AVX512_256``; False where FBGEMM runs its VNNI kernels.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> pairs_saturate_here() in (True, False)
    True
    """
    forced = os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS", "").strip().upper()
    if forced in ("AVX2", "AVX512", "AVX512_256"):
        return True
    return not torch.cpu._is_vnni_supported()


def int_matmul(x: torch.Tensor, weight: torch.Tensor, pairs_saturate: bool) -> torch.Tensor:
    """``sum_k x[m, k] * weight[n, k]`` as int64, ``[M, N]``, optionally with saturating pairs.

    ``x`` holds uint8 codes ``[M, K]``, ``weight`` int8 codes ``[N, K]`` (the
    exact sum takes any 8-bit codes on either side, as ONNX Runtime's
    products need). With ``pairs_saturate`` (uint8 ``x`` only) each pair of
    products ``(k, k + 1)``, k even, is clamped to the int16 range before the
    sum, as ``vpmaddubsw`` does.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> x = torch.tensor([[255, 255]], dtype=torch.uint8)
    >>> w = torch.tensor([[-128, -128]], dtype=torch.int8)
    >>> int_matmul(x, w, pairs_saturate=False), int_matmul(x, w, pairs_saturate=True)
    (tensor([[-65280]]), tensor([[-32768]]))
    """
    m, k = x.shape
    n = weight.shape[0]
    exact = torch.zeros(m, n, dtype=torch.int64)
    if exact.numel() and k:
        # float32 holds every integer up to 2**24 exactly, and a float32 matmul of integers is then exact
        # whatever the order of its additions: sum K in pieces short enough that no partial sum of
        # |x| * |w| can pass 2**24 (512 products of 255 * 128, more for smaller codes), in int64.
        largest = max(1, max(int(x.max()), -int(x.min())) * max(int(weight.max()), -int(weight.min())))
        piece = max(1, 2**24 // largest)
        xf, wf = x.float(), weight.float()
        for start in range(0, k, piece):
            part = (xf[:, start : start + piece] @ wf[:, start : start + piece].T).long()
            exact = part if start == 0 else exact.add_(part)
    if not pairs_saturate:
        return exact
    if k % 2:  # FBGEMM pads K with zeros to a whole number of pairs
        x = torch.nn.functional.pad(x, (0, 1))
        weight = torch.nn.functional.pad(weight, (0, 1))
    xp = x.float().view(m, -1, 2)  # [M, pairs, 2]
    wp = weight.float().view(n, -1, 2)  # [N, pairs, 2]
    # |x0*w0 + x1*w1| <= 128 * (x0 + x1): only rows with a pair of codes summing past 256 can leave int16
    rows = (xp.sum(-1) > 256).any(1).nonzero().flatten()
    xp = xp[rows]
    excess = torch.zeros(len(rows), n, dtype=torch.float64)
    pairs_per_piece = max(1, PAIR_CHUNK // max(1, len(rows) * n))
    for start in range(0, xp.shape[1], pairs_per_piece):
        # each pair's sum x0*w0 + x1*w1 for every (m, n): exact in float32 (|sum| < 2**17)
        sums = torch.einsum(
            "mpi,npi->pmn", xp[:, start : start + pairs_per_piece], wp[:, start : start + pairs_per_piece]
        )
        excess += (sums - sums.clamp(INT16_MIN, INT16_MAX)).sum(0, dtype=torch.float64)
    exact[rows] -= excess.long()
    return exact


def requantize(
    raw: torch.Tensor,
    x_scale: float,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    relu: bool,
    per_channel: bool,
) -> torch.Tensor:
    """uint8 output codes from int32 accumulators ``raw`` ``[M, N]`` (step 3 of the module docstring).

    ``weight_scale`` is float32 ``[N]`` (one value repeated for per-tensor
    weights); ``bias`` float32 ``[N]`` or None.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> raw = torch.tensor([[100, -40]], dtype=torch.int32)
    >>> requantize(raw, 0.02, torch.tensor([0.01, 0.01]), None, 0.05, 128, False, False)
    tensor([[128, 128]], dtype=torch.uint8)
    """
    ats = torch.tensor(x_scale, dtype=torch.float32) * weight_scale  # float32 products
    mult = ats / torch.tensor(scale, dtype=torch.float32)
    v = raw.float()
    if bias is not None and per_channel:
        v = v + bias / ats
    elif bias is not None:
        rcp = torch.tensor(1.0 / float(ats[0].double()), dtype=torch.float32).item()
        v = fma_float32(bias.expand_as(v), rcp, v)  # the compiler fused multiply and add
    return round_to_codes(v, mult, zero_point, relu)


def round_to_codes(v: torch.Tensor, mult: torch.Tensor, zero_point: int, relu: bool) -> torch.Tensor:
    """uint8 codes from float32 accumulators ``v`` ``[M, N]`` (bias added) and multipliers ``mult`` ``[N]``.

    The end of FBGEMM's requantization: ``rint(v * mult)`` in float32 (an
    out-of-range result becomes ``-2**31``, as ``cvtps2dq`` gives), plus the
    output zero point, clamped to 0..255; ``relu`` clamps at the zero point.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> round_to_codes(torch.tensor([[2.5, -1e10]]), torch.tensor([1.0, 1.0]), 100, False)
    tensor([[102,   0]], dtype=torch.uint8)
    """
    y = torch.round(v * mult)
    y = torch.where(y.abs() < 2.0**31, y, -(2.0**31))  # cvtps2dq: out of range gives INT32_MIN
    # y + zero_point is exact in float32 below 2**24, and beyond that the clamp alone decides the code
    return y.add_(zero_point).clamp_(zero_point if relu else 0, 255).to(torch.uint8)  # ReLU: max(q, zero_point)


def bias_int32(
    bias: torch.Tensor, x_scale: float, weight_scale: torch.Tensor, per_channel: bool, release: str | None = None
) -> torch.Tensor:
    """The qnnpack engine's int32 bias: ``bias`` quantized with scale ``x_scale * weight_scale``, zero point 0.

    As PyTorch's ``quant_utils::QuantizeBias``: the scale is the float64
    product of the input scale and the weight's float64 scale (``[N]``, one
    value repeated for per-tensor weights), and the quantization is
    ``quantize_per_tensor`` (per channel: ``quantize_per_channel``) to qint32,
    which the two releases compute alike when the zero point is 0. Returns
    int64 ``[N]``.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> bias_int32(torch.tensor([0.5, -0.5]), 0.1, torch.tensor([0.05, 0.05], dtype=torch.float64), False)
    tensor([ 100, -100])
    """
    scales = weight_scale.double() * x_scale
    for value in scales.unique().tolist():
        if not checks.SCALE_MIN <= value <= checks.SCALE_MAX:
            raise ValueError(
                f"x_scale * weight_scale = {value!r} is the scale qnnpack quantizes the bias with; qlib models "
                f"it between {checks.SCALE_MIN:.3g} and {checks.SCALE_MAX:.3g}"
            )
    if per_channel:
        zeros = torch.zeros(len(scales), dtype=torch.long)
        return quantize(bias, scales, zeros, torch.qint32, axis=0, release=release).long()
    return quantize(bias, float(scales[0]), 0, torch.qint32, release=release).long()


def requantize_qnnpack(
    acc: torch.Tensor, x_scale: float, weight_scale: torch.Tensor, scale: float, zero_point: int, relu: bool
) -> torch.Tensor:
    """uint8 output codes from the qnnpack engine's int32 accumulators ``acc`` ``[M, N]`` (bias included).

    ``weight_scale`` is float32 ``[N]``. The multiplier is
    ``float32(x_scale) * weight_scale * (1 / float32(scale))``, every step in
    float32, and each accumulator is converted to float32 before the product
    (``_mm_cvtepi32_ps``): beyond ``2**24`` that conversion rounds. The
    product is rounded half to even (``_mm_cvtps_epi32``; out of range gives
    ``-2**31``), then the zero point added and the result clamped to 0..255.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> acc = torch.tensor([[1000, -1000]], dtype=torch.int32)
    >>> requantize_qnnpack(acc, 0.02, torch.tensor([0.01, 0.01]), 0.05, 128, False)
    tensor([[132, 124]], dtype=torch.uint8)
    """
    f32 = torch.float32
    mult = (torch.tensor(x_scale, dtype=f32) * weight_scale) * (1 / torch.tensor(scale, dtype=f32))
    if not torch.all((mult > 0) & (mult >= torch.finfo(f32).tiny) & torch.isfinite(mult)):
        raise ValueError(
            "qnnpack refuses a requantization scale x_scale * weight_scale / scale that is not a normal positive "
            f"float32 (torch raises 'failed to create op'); got {mult.min().item()!r}..{mult.max().item()!r}"
        )
    return round_to_codes(acc.to(torch.int32).float(), mult, zero_point, relu)  # the same end as FBGEMM's


def weight_qparams(
    weight_scale: float | torch.Tensor, weight_zero_point: int | torch.Tensor, n: int
) -> tuple[bool, torch.Tensor, torch.Tensor]:
    """``(per_channel, scales, zero_points)`` of int8 weights with ``n`` output channels, checked.

    Numbers mean per tensor, 1-d tensors of length ``n`` per channel; the scales
    come back as float64 and the zero points as int64, one per output channel.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> weight_qparams(0.5, 3, 2)
    (False, tensor([0.5000, 0.5000], dtype=torch.float64), tensor([3, 3]))
    """
    per_channel = isinstance(weight_scale, torch.Tensor) and weight_scale.dim() == 1
    if per_channel:
        scales = checks.channel_scales(weight_scale, n, 0, "weight_scale")
        zero_points = checks.channel_zero_points(weight_zero_point, n, 0, -128, 127, "weight_zero_point")
    else:
        scales = torch.full((n,), checks.scale_value(weight_scale, "weight_scale"), dtype=torch.float64)
        zero_points = torch.full((n,), checks.zero_point_value(weight_zero_point, -128, 127, "weight_zero_point"))
    return per_channel, scales, zero_points


def checked_bias(bias: torch.Tensor | None, n: int) -> torch.Tensor | None:
    """``bias`` if it is None or a float32 tensor of shape ``(n,)`` without NaN, else a clear error.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> checked_bias(torch.tensor([0.5, -1.0]), 2)
    tensor([ 0.5000, -1.0000])
    """
    if bias is None:
        return None
    checks.float32_tensor(bias, "bias")
    if bias.shape != (n,):
        raise ValueError(f"bias must have shape ({n},), one value per output; got {tuple(bias.shape)}")
    checks.no_nan(bias, "bias")
    return bias


def linear(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    weight_zero_point: int | torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    relu: bool = False,
    *,
    pairs_saturate: bool | None = None,
    release: str | None = None,
    engine: str = "x86",
    isa: str | None = None,
) -> torch.Tensor:
    """The uint8 codes of a quantized Linear, bit for bit as torch's ``x86``, ``fbgemm``, ``qnnpack`` or ``onednn``
    engine.

    Equals ``torch.ao.nn.quantized.Linear`` (``relu=True``:
    ``torch.ao.nn.intrinsic.quantized.LinearReLU``) applied to the quint8
    tensor with codes ``x`` ``[..., K]``, scale ``x_scale`` and zero point
    ``x_zero_point``, with int8 weight codes ``weight`` ``[N, K]`` quantized
    per tensor (``weight_scale``, ``weight_zero_point`` numbers) or per output
    channel (1-d tensors of length N), a float32 ``bias`` ``[N]`` or None, and
    output ``scale`` and ``zero_point``: its ``int_repr()``, shape ``[..., N]``.
    ``pairs_saturate`` chooses the CPU: None follows the one torch runs on
    (:func:`pairs_saturate_here`), True computes what a CPU without
    AVX512-VNNI gives, False what one with it gives. The module docstring has
    the arithmetic. ``engine`` is the value of
    ``torch.backends.quantized.engine`` to reproduce: ``"x86"`` and
    ``"fbgemm"`` (the same arithmetic) or ``"qnnpack"``, whose kernel never
    saturates pairs (so ``pairs_saturate`` must then stay None) and which
    quantizes the bias to int32 first, or ``"onednn"``, which takes symmetric
    weights only; ``isa`` (``onednn`` only) chooses oneDNN's kernels as in
    :func:`qlib.conv2d`: None those of this process, or of the CPU
    ``pairs_saturate`` names, or one of ``"amx"`` (a guess, never measured),
    ``"avx512_core_vnni"``, ``"avx512_core"``, ``"avx2_vnni"``, ``"avx2"``
    and ``"sse41"``.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> x = torch.tensor([[130, 140]], dtype=torch.uint8)
    >>> w = torch.tensor([[10, -20], [30, 40]], dtype=torch.int8)
    >>> linear(x, 0.1, 128, w, 0.05, 0, torch.tensor([0.5, -0.5]), 0.2, 100)
    tensor([[ 97, 111]], dtype=torch.uint8)
    >>> linear(x, 0.1, 128, w, 0.05, 0, torch.tensor([0.5, -0.5]), 0.2, 100, engine="qnnpack")
    tensor([[ 97, 111]], dtype=torch.uint8)
    >>> linear(x, 0.1, 128, w, 0.05, 0, torch.tensor([0.5, -0.5]), 0.2, 100, engine="onednn")
    tensor([[ 97, 111]], dtype=torch.uint8)
    """
    torch_release(release)  # the same arithmetic in every supported release
    if engine not in ENGINES:
        raise ValueError(
            f"engine must be one of {', '.join(map(repr, ENGINES))} (the quantized engines qlib reproduces); "
            f"got {engine!r}"
        )
    if isa is not None and engine != "onednn":
        raise ValueError(
            f"isa chooses oneDNN's kernels, which compute a Linear on the onednn engine only; got isa={isa!r} with "
            f"engine={engine!r}"
        )
    if engine == "qnnpack" and pairs_saturate is not None:
        raise ValueError(
            "pairs_saturate chooses the CPU for the x86 and fbgemm engines; the qnnpack engine never saturates "
            f"pairs on any CPU: leave it None; got {pairs_saturate!r}"
        )
    x = checks.code_tensor(x, "x", torch.uint8, "quint8 activations")
    weight = checks.code_tensor(weight, "weight", torch.int8, "qint8 weights")
    if x.dim() < 2:
        raise ValueError(f"x must have at least 2 dimensions, [..., K], as quantized::linear requires; got {x.dim()}")
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape [N, K] with K = x.shape[-1] = {x.shape[-1]}; got {tuple(weight.shape)}"
        )
    n, k = weight.shape
    sx = checks.scale_value(x_scale, "x_scale")
    zx = checks.zero_point_value(x_zero_point, 0, 255, "x_zero_point")
    s = checks.scale_value(scale, "scale")
    z = checks.zero_point_value(zero_point, 0, 255, "zero_point")
    per_channel, sw64, zw = weight_qparams(weight_scale, weight_zero_point, n)
    sw = sw64.float()
    bias = checked_bias(bias, n)
    if engine == "onednn":
        if (zw != 0).any():
            raise ValueError(
                "the onednn engine refuses weights whose zero point is not 0: torch's quantized::linear_prepack raises "
                "'ONEDNN only supports symmetric quantization of weight, whose zero point must be 0'"
            )
        arithmetic = onednn_linear_arithmetic(onednn_linear_kernel(onednn_isa_for(isa, pairs_saturate)))
        rows = x.reshape(-1, k)
        raw = int_matmul(rows, weight, arithmetic.pairs != "none")
        acc = onednn_accumulators(raw, weight.long().sum(1)[None, :], zx, arithmetic.compensation)
        scales = onednn_linear_weight_scales(sw64, per_channel)
        return onednn_requantize(acc, sx, scales, bias, s, z, relu, arithmetic).reshape(*x.shape[:-1], n)
    if engine == "qnnpack":
        pairs_saturate = False
    elif pairs_saturate is None:
        pairs_saturate = pairs_saturate_here()

    rows = x.reshape(-1, k)
    acc = int_matmul(rows, weight, pairs_saturate)
    column_sums = weight.long().sum(1) - zw * k
    row_sums = rows.long().sum(1)
    raw = acc - zx * column_sums[None, :] - row_sums[:, None] * zw[None, :]
    if engine == "qnnpack":  # the int32 bias starts the accumulator; the float bias never reaches requantization
        if bias is not None:
            raw = raw + bias_int32(bias, sx, sw64, per_channel, release)[None, :]
        raw = (raw + 2**31).remainder(2**32) - 2**31  # int32 arithmetic wraps around
        codes = requantize_qnnpack(raw.to(torch.int32), sx, sw, s, z, relu)
        return codes.reshape(*x.shape[:-1], n)
    raw = (raw + 2**31).remainder(2**32) - 2**31  # int32 arithmetic wraps around
    codes = requantize(raw.to(torch.int32), sx, sw, bias, s, z, relu, per_channel)
    return codes.reshape(*x.shape[:-1], n)


def weight_of(packed: Any) -> tuple:
    """``(codes, scale, zero point, bias)`` of a packed quantized weight, per tensor or per output channel."""
    weight, bias = packed.unpack()
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise ValueError(f"per-channel weights must be quantized along axis 0; got {weight.q_per_channel_axis()}")
        return weight.int_repr(), weight.q_per_channel_scales().float(), weight.q_per_channel_zero_points(), bias
    return weight.int_repr(), weight.q_scale(), weight.q_zero_point(), bias


def _linear_call(args: tuple, settings: Settings, relu: bool) -> torch.Tensor:
    x, packed, scale, zero_point = args
    backend = packed_backend(packed)  # torch runs the op there, whatever the engine is now
    weight, weight_scale, weight_zero_point, bias = weight_of(packed)
    codes = linear(
        x.int_repr(), x.q_scale(), x.q_zero_point(), weight, weight_scale, weight_zero_point, bias, scale,
        zero_point, relu=relu, pairs_saturate=None if backend == "qnnpack" else settings.pairs_saturate,
        release=settings.release, engine=backend,
    )  # fmt: skip
    return quantized(codes, scale, zero_point, torch.quint8)


@register("quantized::linear", function="qlib.linear", modules=("torch.ao.nn.quantized.Linear",))
def _linear_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _linear_call(args, settings, relu=False)


@register("quantized::linear_relu", function="qlib.linear", modules=("torch.ao.nn.intrinsic.quantized.LinearReLU",))
def _linear_relu_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _linear_call(args, settings, relu=True)
