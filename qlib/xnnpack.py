"""XNNPACK's signed int8 (qs8) operators, integer by integer, as ExecuTorch 1.5.1's delegate runs them on x86.

A model quantized with ExecuTorch's ``XNNPACKQuantizer`` (PT2E) and lowered with ``XnnpackPartitioner``
runs each quantized layer as one XNNPACK operator on int8 codes. The XNNPACK built into the executorch
1.5.1 wheel is the submodule pin of ExecuTorch's main branch (the wheel's XNNPACK python and yaml files
are those of XNNPACK 92a7ad50), and the sources below are read there: ``XNN`` stands for
https://github.com/google/XNNPACK/blob/92a7ad501b9516f9fecae119e0146dd1f58e54c1 and ``ET`` for
https://github.com/pytorch/executorch/blob/cff6f4dd32e630945b7188512c1f2b4f102b05ad (whose
``quant_params.py`` is the wheel's, byte for byte).

Measured on x86 (AVX512-VNNI; ``tests/test_xnnpack.py``, against the delegate, on both torch releases):

* Convert f32 -> qs8 (the graph's input): ``clamp(rint(float32(x * (1.0f / scale))) + zero_point)``,
  the reciprocal in float32 (``XNN/src/microparams-init.c``, ``xnn_init_f32_qs8_cvt_scalar_params``),
  the zero point added after rounding. qs8 -> f32: ``float32(q - zero_point) * scale``.
* Fully connected and convolution: the int32 accumulator ``sum (q_x - zp_x) * q_w + b_q``, exact
  (the input zero point is folded into the packed bias: ``XNN/src/reference/packing.cc``), then
  ``rint(float32(float32(acc) * M)) + zp_y`` clamped to ``[lo, hi]``, with
  ``M = float32(float32(s_x * s_w) / s_y)`` per output channel (``XNN/src/operators/convolution-nhwc.c``,
  ``XNN/src/operators/fully-connected-nc.c``), rounding half to even (``cvtps2dq``). The int32 bias
  ``b_q`` is ExecuTorch's, written when it serializes the graph: ``QuantParams.from_bias``
  (``ET/backends/xnnpack/operators/quant_params.py``) quantizes the float bias with torch's
  ``quantize_per_tensor`` (per channel: ``quantize_per_channel``) at scale ``s_x * s_w``, zero point 0,
  which ``qlib.quantize_pt2e`` models: half to even. A fused ReLU or clamp (hardtanh) gives
  ``lo, hi = xnn_qs8_quantize(min), xnn_qs8_quantize(max)``, ``lrintf(clamp(min / s_y + zp_y))``
  (``XNN/src/xnnpack/requantization.h``): ``[zp_y, 127]`` for a ReLU.
* Add (``qs8-vadd``): not the GEMM's float32 requantization but fixed point. With
  ``a = float32(s_a / s_y)``, ``b = float32(s_b / s_y)`` and ``shift = 20 - exponent(max(a, b))``, the
  multipliers are ``lrintf(a * 2**shift)`` (a float32 rounded half to even to about 21 bits) and the
  result ``(bias + q_a * m_a + q_b * m_b) >> shift`` (arithmetic shift) ``+ zp_y``, clamped, where
  ``bias = 2**(shift - 1) - m_a zp_a - m_b zp_b``: rounding half *up*, toward +inf, in int32
  (``xnn_init_qs8_add_minmax_scalar_params`` in ``XNN/src/microparams-init.c``;
  ``XNN/src/qs8-vadd/gen/qs8-vadd-minmax-avx512skx-mul32-ld128-u16.c``; the comment "rounding away
  from zero" in ``xnn_qs8_quantize_add``, ``requantization.h``, is not what its code does). A fused ReLU
  is a clamp node after it (``XNN/src/subgraph/binary.c``), with the bounds above.
* Mean over H and W (``mean.dim([-1, -2], keepdim=True)``, XNNPACK's global average pooling, now a
  reduce, ``XNN/src/operators/reduce-nd.c``): the exact int32 sum of the ``N`` codes, then
  ``nearbyint(float32(float32(sum) * s) + z)`` clamped, with
  ``s = float32(float32(s_x / s_y) * float32(1.0f / N))`` and
  ``z = float32(zp_y - float32(float32(N * zp_x) * s))``: the zero point
  added in float32 *before* rounding (the reference convert, ``XNN/src/reference/unary-elementwise.cc``),
  two float32 roundings, no fused multiply-add.
* Max pooling: the largest code of each window (the quantizer gives it its input's scale and zero point).

ARM, from source (not run): the qs8-qc8w GEMMs use the same ``fp32`` requantization on every
architecture (``vcvtnq_s32_f32`` on ARMv8, a magic-number add on ARMv7, both half to even, zero point
after rounding), and XNNPACK's tests hold every microkernel of a kind to one scalar reference, code for
code: ``XNN/test/gemm-microkernel-tester.cc`` asserts each qs8-qc8w GEMM and IGEMM (and the dwconv
tests each depthwise kernel) equal to ``xnn_qs8_requantize_fp32``, with tolerance 0 except on Hexagon
HVX (1), ``XNN/test/vbinary-microkernel-tester.cc`` each qs8 add equal to
``xnn_qs8_quantize_add`` (the fixed point above), and ``XNN/test/rdsum.cc`` checks the sums. So the
formulas above are XNNPACK's claim for ARM too. Not so for the f32 -> qs8 convert, whose tests allow
one code (``Convert::Tolerance`` in ``XNN/test/unary-ops.h``); its AArch64 kernel
(``XNN/src/f32-qs8-vcvt/gen/f32-qs8-vcvt-neonv8-u8.c``) reads as the same arithmetic (multiply,
``vcvtnq_s32_f32``, saturate, add the zero point). Nor for the mean's last step: not a
microkernel but a portable C++ loop (``x * inv_scale + zero_point``), which a compiler may contract
into a fused multiply-add on AArch64, where FMA is in the base ISA and GCC and clang contract by
default; the x86 build does not (measured), an ARM build may differ by one code on rare sums.
"""

from __future__ import annotations

import math

import torch

from qlib import checks
from qlib.numerics import float32, wrap_int32
from qlib.pt2e_ops import quantize_pt2e

QMIN, QMAX = -128, 127


def _qs8_codes(q: object, name: str) -> torch.Tensor:
    return checks.code_tensor(q, name, torch.int8, "int8 codes (XNNPACK's qs8)")


def _zero_point(zero_point: object, name: str) -> int:
    return checks.zero_point_value(zero_point, QMIN, QMAX, name)


def _scale(scale: object, name: str) -> float:
    return float32(checks.scale_value(scale, name))


def _f32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.float32)


def output_bounds(output_min: float, output_max: float, scale: float, zero_point: int) -> tuple[int, int]:
    """The int8 bounds XNNPACK clamps to for a fused activation's float ``[output_min, output_max]``.

    ``xnn_qs8_quantize``: ``lrintf(clamp(float32(v / scale) + zero_point, -128, 127))``.

    >>> output_bounds(0.0, math.inf, 0.05, -3), output_bounds(-math.inf, 6.0, 0.05, -3)
    ((-3, 127), (-128, 117))
    """
    if math.isnan(output_min) or math.isnan(output_max) or output_min > output_max:
        raise ValueError(f"output_min and output_max must be ordered numbers; got {output_min}, {output_max}")
    v = torch.tensor([output_min, output_max], dtype=torch.float32) / torch.tensor(float32(scale))
    v = (v + float(zero_point)).clamp(QMIN, QMAX)
    lo, hi = torch.round(v).long().tolist()
    return lo, hi


def xnnpack_quantize(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """XNNPACK's Convert f32 -> qs8: ``clamp(rint(float32(x * (1.0f / scale))) + zero_point, -128, 127)``.

    ``x`` is float32 (NaN refused); ``scale`` is taken as float32, as the
    ``.pte`` stores it. The module docstring cites the source.

    Chapter: "Off to the edge" (book/15_edge).

    >>> xnnpack_quantize(torch.tensor([-1.0, 0.025, 0.075, 9.0]), 0.05, 1)
    tensor([-19,   1,   3, 127], dtype=torch.int8)
    """
    checks.float32_tensor(x, "x")
    checks.no_nan(x, "x")
    s, z = _scale(scale, "scale"), _zero_point(zero_point, "zero_point")
    inv = torch.tensor(1.0, dtype=torch.float32) / torch.tensor(s, dtype=torch.float32)
    return (torch.round(x * inv) + z).clamp(QMIN, QMAX).to(torch.int8)


def xnnpack_dequantize(q: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """XNNPACK's Convert qs8 -> f32: ``float32(q - zero_point) * float32(scale)``.

    Chapter: "Off to the edge" (book/15_edge).

    >>> xnnpack_dequantize(torch.tensor([-19, 1, 3], dtype=torch.int8), 0.05, 1)
    tensor([-1.0000,  0.0000,  0.1000])
    """
    q = _qs8_codes(q, "q")
    s, z = _scale(scale, "scale"), _zero_point(zero_point, "zero_point")
    return (q.to(torch.int32) - z).to(torch.float32) * s


def xnnpack_bias(bias: torch.Tensor, x_scale: float, weight_scale: float | torch.Tensor) -> torch.Tensor:
    """The int32 bias ExecuTorch writes into the ``.pte`` for a float ``bias`` (one per output channel).

    Per tensor (``weight_scale`` a number) it is torch's ``quantize_per_tensor``
    at the Python (float64) product ``weight_scale * x_scale``; per channel
    (a 1-d tensor) ``quantize_per_channel`` at the float32 products. Both round
    half to even (``qlib.quantize_pt2e``).

    Chapter: "Off to the edge" (book/15_edge).

    >>> xnnpack_bias(torch.tensor([0.375, -0.125]), 0.5, 0.5)
    tensor([2, 0], dtype=torch.int32)
    """
    checks.float32_tensor(bias, "bias")
    if bias.dim() != 1:
        raise ValueError(f"bias must be 1-d, one value per output channel; got shape {tuple(bias.shape)}")
    sx = _scale(x_scale, "x_scale")
    lo, hi = -(2**31), 2**31 - 1
    if isinstance(weight_scale, torch.Tensor) and weight_scale.dim() == 1:
        scales = checks.channel_scales(weight_scale, bias.numel(), 0, "weight_scale").float() * sx
        return quantize_pt2e(bias, scales, torch.zeros(bias.numel(), dtype=torch.int64), lo, hi, torch.int32, axis=0)
    return quantize_pt2e(bias, checks.scale_value(weight_scale, "weight_scale") * sx, 0, lo, hi, torch.int32)


def _weight_scales(weight_scale: object, n: int) -> torch.Tensor:
    if isinstance(weight_scale, torch.Tensor) and weight_scale.dim() == 1:
        return checks.channel_scales(weight_scale, n, 0, "weight_scale").float()
    return torch.full((n,), _scale(weight_scale, "weight_scale"), dtype=torch.float32)


def requantize_fp32(acc: torch.Tensor, multiplier: torch.Tensor, zero_point: int, lo: int, hi: int) -> torch.Tensor:
    """XNNPACK's ``fp32`` requantization of int32 ``acc``: ``clamp(rint(float32(float32(acc) * multiplier)) + zero_point)``.

    ``multiplier`` (float32) broadcasts against ``acc``; the clamp is to
    ``[lo, hi]`` (``xnn_qs8_requantize_fp32`` clamps in float32 to
    ``[lo - zero_point, hi - zero_point]`` first, the same codes).

    >>> requantize_fp32(torch.tensor([24, 8, -8, 99999]), torch.tensor(0.0625), 1, -128, 127)
    tensor([  3,   1,   1, 127], dtype=torch.int8)
    """
    v = _f32(acc) * multiplier.to(torch.float32)
    v = v.clamp(lo - zero_point, hi - zero_point)
    return (torch.round(v) + zero_point).to(torch.int8)


def _gemm_output(acc, x_scale, w_scales, bias_q, scale, zero_point, output_min, output_max, shape):
    s_y, z_y = _scale(scale, "scale"), _zero_point(zero_point, "zero_point")
    lo, hi = output_bounds(output_min, output_max, s_y, z_y)
    if bias_q is not None:
        acc = acc + bias_q.long().view(shape)
    multiplier = _f32(torch.tensor(x_scale, dtype=torch.float32) * w_scales) / torch.tensor(s_y, dtype=torch.float32)
    return requantize_fp32(wrap_int32(acc), multiplier.view(shape), z_y, lo, hi)


def xnnpack_linear(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    output_min: float = -math.inf,
    output_max: float = math.inf,
) -> torch.Tensor:
    """XNNPACK's qs8 fully connected (``qs8-qc8w`` GEMM) on int8 codes ``x`` ``[..., K]`` and ``weight`` ``[N, K]``.

    ``weight_scale``: a number (per tensor) or one per output channel; the
    weight's zero point is 0. ``bias``: the graph's float bias, made int32 as
    ExecuTorch does (``xnnpack_bias``). ``output_min``/``output_max``: a fused
    ReLU (``0, inf``) or hardtanh. Arithmetic: the module docstring.

    Chapter: "Off to the edge" (book/15_edge).

    >>> x = torch.tensor([[10, -3]], dtype=torch.int8)
    >>> w = torch.tensor([[2, 4], [-1, 1]], dtype=torch.int8)
    >>> xnnpack_linear(x, 0.1, 1, w, torch.tensor([0.01, 0.02]), None, 0.004, 0)  # 0.5 and -6.5: to even
    tensor([[ 0, -6]], dtype=torch.int8)
    """
    x, weight = _qs8_codes(x, "x"), _qs8_codes(weight, "weight")
    if weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"x [..., K] and weight [N, K] must agree; got {tuple(x.shape)} and {tuple(weight.shape)}")
    sx, zx = _scale(x_scale, "x_scale"), _zero_point(x_zero_point, "x_zero_point")
    n = weight.shape[0]
    w_scales = _weight_scales(weight_scale, n)
    bias_q = None if bias is None else xnnpack_bias(bias, sx, weight_scale)
    acc = (x.double() - zx) @ weight.double().T  # exact below 2**53
    return _gemm_output(acc.long(), sx, w_scales, bias_q, scale, zero_point, output_min, output_max, [n])


def xnnpack_conv2d(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    output_min: float = -math.inf,
    output_max: float = math.inf,
) -> torch.Tensor:
    """XNNPACK's qs8 2-d convolution (also depthwise) on int8 codes ``x`` ``[B, C, H, W]`` and ``weight`` ``[O, C/groups, kH, kW]``.

    Same arithmetic and arguments as ``xnnpack_linear``; padding counts as the
    input zero point (a zero value), as in torch.

    Chapter: "Off to the edge" (book/15_edge).

    >>> x = torch.tensor([[[[4, -2], [0, 8]]]], dtype=torch.int8)
    >>> xnnpack_conv2d(x, 0.5, 0, torch.ones(1, 1, 2, 2, dtype=torch.int8), 0.5, None, 0.5, 0)
    tensor([[[[5]]]], dtype=torch.int8)
    """
    x, weight = _qs8_codes(x, "x"), _qs8_codes(weight, "weight")
    if x.dim() != 4 or weight.dim() != 4:
        raise ValueError(f"x and weight must be 4-d; got {tuple(x.shape)} and {tuple(weight.shape)}")
    sx, zx = _scale(x_scale, "x_scale"), _zero_point(x_zero_point, "x_zero_point")
    n = weight.shape[0]
    w_scales = _weight_scales(weight_scale, n)
    bias_q = None if bias is None else xnnpack_bias(bias, sx, weight_scale)
    acc = torch.nn.functional.conv2d(x.double() - zx, weight.double(), None, stride, padding, dilation, groups)
    return _gemm_output(acc.long(), sx, w_scales, bias_q, scale, zero_point, output_min, output_max, [1, n, 1, 1])


def add_parameters(a_scale: float, b_scale: float, scale: float) -> tuple[int, int, int]:
    """The fixed-point multipliers of ``a`` and ``b`` and the shift of XNNPACK's qs8 add.

    >>> add_parameters(0.1, 0.05, 0.1)
    (1048576, 524288, 20)
    """
    a = float32(_scale(a_scale, "a_scale") / _scale(scale, "scale"))
    b = float32(_scale(b_scale, "b_scale") / _scale(scale, "scale"))
    largest = max(a, b)
    if min(a, b) < 2.0**-10 or largest >= 2.0**8:
        raise ValueError(f"XNNPACK's add needs input/output scale ratios in [2**-10, 2**8); got {a:.6g}, {b:.6g}")
    shift = 20 - (math.frexp(largest)[1] - 1)
    multipliers = torch.round(torch.tensor([a, b], dtype=torch.float64) * 2.0**shift).long().tolist()
    return multipliers[0], multipliers[1], shift


def xnnpack_add(
    a: torch.Tensor,
    a_scale: float,
    a_zero_point: int,
    b: torch.Tensor,
    b_scale: float,
    b_zero_point: int,
    scale: float,
    zero_point: int,
    output_min: float = -math.inf,
    output_max: float = math.inf,
) -> torch.Tensor:
    """XNNPACK's qs8 add (``qs8-vadd``) of int8 codes ``a`` and ``b`` (broadcasting), in fixed point.

    ``(bias + a * m_a + b * m_b) >> shift + zero_point``, rounding half up: see
    the module docstring and ``add_parameters``. A fused ReLU: ``output_min=0``.

    Chapter: "Off to the edge" (book/15_edge).

    >>> a = torch.tensor([1, 3, -3], dtype=torch.int8)
    >>> xnnpack_add(a, 0.5, 0, torch.zeros(3, dtype=torch.int8), 0.5, 0, 1.0, 0)
    tensor([ 1,  2, -1], dtype=torch.int8)
    """
    a, b = _qs8_codes(a, "a"), _qs8_codes(b, "b")
    za, zb = _zero_point(a_zero_point, "a_zero_point"), _zero_point(b_zero_point, "b_zero_point")
    s_y, z_y = _scale(scale, "scale"), _zero_point(zero_point, "zero_point")
    ma, mb, shift = add_parameters(a_scale, b_scale, s_y)
    lo, hi = output_bounds(output_min, output_max, s_y, z_y)
    bias = (1 << (shift - 1)) - ma * za - mb * zb
    acc = wrap_int32(bias + a.long() * ma + b.long() * mb)
    return ((acc >> shift) + z_y).clamp(QMIN, QMAX).clamp(lo, hi).to(torch.int8)


def xnnpack_mean(x: torch.Tensor, x_scale: float, x_zero_point: int, scale: float, zero_point: int) -> torch.Tensor:
    """XNNPACK's qs8 mean over the last two dimensions of ``x`` ``[B, C, H, W]``, kept (global average pooling).

    ``nearbyint(float32(float32(sum) * s) + z)``, the zero point added before
    rounding: the module docstring has ``s`` and ``z``.

    Chapter: "Off to the edge" (book/15_edge).

    >>> x = torch.tensor([[[[1, 2], [3, 4]]]], dtype=torch.int8)
    >>> xnnpack_mean(x, 1.0, 0, 1.0, 0)  # 2.5 rounds to even
    tensor([[[[2]]]], dtype=torch.int8)
    """
    x = _qs8_codes(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-d [B, C, H, W]; got shape {tuple(x.shape)}")
    sx, zx = _scale(x_scale, "x_scale"), _zero_point(x_zero_point, "x_zero_point")
    s_y, z_y = _scale(scale, "scale"), _zero_point(zero_point, "zero_point")
    n = x.shape[2] * x.shape[3]
    s = float32(float32(sx / s_y) * float32(1.0 / n))
    z = float32(z_y - float32(float32(n * zx) * s))
    total = x.long().sum(dim=(2, 3), keepdim=True)
    v = _f32(_f32(total) * torch.tensor(s, dtype=torch.float32)) + torch.tensor(z, dtype=torch.float32)
    return torch.round(v).clamp(QMIN, QMAX).to(torch.int8)


def xnnpack_max_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, int],
    stride: int | tuple[int, int] | None = None,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    ceil_mode: bool = False,
) -> torch.Tensor:
    """XNNPACK's qs8 max pooling of int8 codes ``x`` ``[B, C, H, W]``: each window's largest code.

    Chapter: "Off to the edge" (book/15_edge).

    >>> xnnpack_max_pool2d(torch.tensor([[[[1, -5], [7, 2]]]], dtype=torch.int8), 2)
    tensor([[[[7]]]], dtype=torch.int8)
    """
    x = _qs8_codes(x, "x")
    if x.dim() != 4:
        raise ValueError(f"x must be 4-d [B, C, H, W]; got shape {tuple(x.shape)}")
    pooled = torch.nn.functional.max_pool2d(x.float(), kernel_size, stride, padding, dilation, ceil_mode)
    return pooled.to(torch.int8)  # padding is -inf: never the maximum
