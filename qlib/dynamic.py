"""Dynamic quantization: scale and zero point chosen per call, as PyTorch's dynamic Linear does it.

Explained in the book chapter "Inside a quantized Linear" (``book/09_linear``).

``torch.ao.nn.quantized.dynamic.Linear`` keeps int8 weights and float activations. On every call
``quantized::linear_dynamic`` (``PackedLinearWeight::apply_dynamic_impl`` in PyTorch's
``aten/src/ATen/native/quantized/cpu/qlinear_dynamic.cpp``, FBGEMM on x86):

1. finds the minimum and maximum of the *whole* input tensor (not per row), and turns them into
   scale and zero point with ATen's ``quant_utils::ChooseQuantizationParams``
   (``aten/src/ATen/native/quantized/cpu/QuantUtils.h``), not an observer's formula: the range
   widened to include 0, ``scale = (max - min) / (qmax - qmin)`` in float64, raised to at least
   ``6.1e-5`` (``numerics.FBGEMM_SMALL_SCALE``), and the zero point taken from whichever end of the
   range gives the smaller rounding error, nudged to an integer. The module passes
   ``reduce_range=True``: codes 0..127;
2. quantizes the input with the float32 scale like ``quantize_per_tensor`` of the release
   (torch 2.13: the zero point added before rounding, in one FMA; torch 2.14: after), clamped to
   0..255 whatever the range;
3. runs the integer matmul and zero-point corrections of ``qlib.linear`` (pairs saturate on CPUs
   without AVX512-VNNI);
4. returns float32 ``fma(raw, float32(x_scale) * w_scale, bias)`` (FBGEMM
   ``requantizeForFloatAvx2``; without bias a plain product), with ReLU as ``max(0, y)``.

Because the scale comes from the whole tensor, a row's output depends on the other rows in the
batch.
"""

from __future__ import annotations

import math

import torch

from qlib import checks
from qlib.numerics import FBGEMM_SMALL_SCALE, float32, fma_float32
from qlib.quant import quantize
from qlib.quantized_linear import checked_bias, int_matmul, pairs_saturate_here, weight_of, weight_qparams
from qlib.registry import Settings, packed_backend, register
from qlib.releases import torch_release


def choose_qparams_dynamic(
    min_val: float, max_val: float, reduce_range: bool = False, qmin: int = 0, qmax: int = 255
) -> tuple[float, int]:
    """``(scale, zero_point)`` from a tensor's float32 minimum and maximum, as ATen's
    ``quant_utils::ChooseQuantizationParams`` computes them for dynamic quantization.

    Equals the ``q_scale()`` (a float64) and ``q_zero_point()`` of
    ``torch.quantize_per_tensor_dynamic(x, torch.quint8, reduce_range)`` for
    ``min_val = x.min()``, ``max_val = x.max()``; the dynamic Linear uses the
    scale narrowed to float32. ``reduce_range`` halves ``qmin`` and ``qmax``
    (integer division).

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> choose_qparams_dynamic(-1.0, 2.0)
    (0.011764705882352941, 85)
    >>> choose_qparams_dynamic(0.0, 1e-3)  # the scale never goes below 6.1e-5
    (6.0999998822808266e-05, 0)
    """
    lo, hi = _finite_end(min_val, "min_val"), _finite_end(max_val, "max_val")
    if lo > hi:
        raise ValueError(f"min_val must not exceed max_val; got {lo} > {hi}")
    if reduce_range:
        qmin, qmax = qmin // 2, qmax // 2
    lo, hi = min(lo, 0.0), max(hi, 0.0)
    scale = (hi - lo) / (qmax - qmin)  # in float64, from the float32 ends
    if float32(scale) == 0.0 or math.isinf(float32(1.0 / float32(scale))):
        scale = 0.1
    threshold = float32(FBGEMM_SMALL_SCALE)
    if scale < threshold:
        original = float32(scale)
        scale = threshold
        if lo == 0.0:
            hi = float32(threshold * (qmax - qmin))
        elif hi == 0.0:
            lo = float32(-threshold * (qmax - qmin))
        else:  # min and max are float32 variables in ATen: every step rounds to float32
            amplifier = float32(threshold / original)
            lo, hi = float32(lo * amplifier), float32(hi * amplifier)
    from_min, from_max = qmin - lo / scale, qmax - hi / scale
    error_min, error_max = abs(qmin) - abs(lo / scale), abs(qmax) - abs(hi / scale)
    initial = from_min if error_min < error_max else from_max
    if initial < qmin:
        zero_point = qmin
    elif initial > qmax:
        zero_point = qmax
    else:
        zero_point = round(initial)  # nearbyint: half to even, as Python's round
    return scale, zero_point


def linear_dynamic(
    x: torch.Tensor,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    weight_zero_point: int | torch.Tensor,
    bias: torch.Tensor | None,
    reduce_range: bool = True,
    relu: bool = False,
    *,
    pairs_saturate: bool | None = None,
    release: str | None = None,
) -> torch.Tensor:
    """The float32 output of a dynamically quantized Linear, bit for bit as torch's x86 engine.

    Equals ``torch.ao.nn.quantized.dynamic.Linear`` (``relu=True``: its ReLU
    variant, ``torch.ao.nn.intrinsic.quantized.dynamic.LinearReLU``) with int8
    weight codes ``weight`` ``[N, K]`` and their scale and zero point (numbers,
    or 1-d tensors of length N per channel), float32 ``bias`` ``[N]`` or None,
    applied to float32 ``x`` ``[..., K]``. The module always passes
    ``reduce_range=True``; ``quantized::linear_dynamic`` itself defaults to
    False. ``pairs_saturate`` and ``release`` are as in ``qlib.linear`` and
    ``qlib.quantize``; the module docstring has the arithmetic.

    Chapter: "Inside a quantized Linear" (book/09_linear).

    >>> w = torch.tensor([[10, -20], [30, 40]], dtype=torch.int8)
    >>> linear_dynamic(torch.tensor([[0.5, -1.0]]), w, 0.05, 0, torch.tensor([0.5, -0.5]))
    tensor([[ 1.7520, -1.7638]])
    """
    zero_point_first = torch_release(release) == "2.13"
    checks.float32_tensor(x, "x")
    if not torch.isfinite(x).all():
        raise ValueError("x must be finite: its minimum and maximum become the scale (torch would quantize to garbage)")
    if not isinstance(weight, torch.Tensor) or weight.is_quantized or weight.dtype != torch.int8:
        raise TypeError("weight must be a torch.int8 tensor of codes (pass a quantized weight's .int_repr())")
    if x.dim() < 1 or weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"weight must have shape [N, K] with K = x.shape[-1]; got weight {tuple(weight.shape)}, x {tuple(x.shape)}"
        )
    n, k = weight.shape
    _, sw, zw = weight_qparams(weight_scale, weight_zero_point, n)
    sw = sw.float()
    bias = checked_bias(bias, n)
    if pairs_saturate is None:
        pairs_saturate = pairs_saturate_here()

    rows = x.reshape(-1, k)
    lo, hi = (rows.min().item(), rows.max().item()) if rows.numel() else (0.0, 0.0)
    scale, zero_point = choose_qparams_dynamic(lo, hi, reduce_range)
    scale32 = float32(scale)
    codes = quantize(rows, scale32, zero_point, torch.uint8, release="2.13" if zero_point_first else "2.14")
    acc = int_matmul(codes, weight, pairs_saturate)
    raw = acc - zero_point * (weight.long().sum(1) - zw * k)[None, :] - codes.long().sum(1)[:, None] * zw[None, :]
    raw = ((raw + 2**31).remainder(2**32) - 2**31).float()  # int32, then converted to float32
    multiplier = torch.tensor(scale32, dtype=torch.float32) * sw
    # one fused multiply-add per element (FBGEMM's requantizeForFloatAvx2), a product without bias
    y = raw * multiplier if bias is None else fma_float32(raw, multiplier[None, :], bias[None, :])
    if relu:
        y = torch.clamp(y, min=0.0)
    return y.reshape(*x.shape[:-1], n)


def _finite_end(value: float, name: str) -> float:
    if isinstance(value, torch.Tensor):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number; got {value!r}")
    return float32(value)


def _linear_dynamic_call(args: tuple, kwargs: dict, settings: Settings, relu: bool) -> torch.Tensor:
    x, packed = args[0], args[1]
    reduce_range = args[2] if len(args) > 2 else kwargs.get("reduce_range", False)
    backend = packed_backend(packed)
    if backend != "fbgemm":
        raise ValueError(
            f"this dynamic Linear's weight was packed for {backend}; qlib models the x86 and fbgemm engines' "
            "dynamic Linear (FBGEMM)"
        )
    weight, weight_scale, weight_zero_point, bias = weight_of(packed)
    return linear_dynamic(
        x, weight, weight_scale, weight_zero_point, bias, reduce_range, relu,
        pairs_saturate=settings.pairs_saturate, release=settings.release,
    )  # fmt: skip


@register(
    "quantized::linear_dynamic",
    function="qlib.linear_dynamic",
    modules=("torch.ao.nn.quantized.dynamic.Linear",),
    on_float=True,
)
def _linear_dynamic_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _linear_dynamic_call(args, kwargs, settings, relu=False)


@register(
    "quantized::linear_relu_dynamic",
    function="qlib.linear_dynamic",
    modules=("torch.ao.nn.intrinsic.quantized.dynamic.LinearReLU",),
    on_float=True,
)
def _linear_relu_dynamic_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _linear_dynamic_call(args, kwargs, settings, relu=True)
