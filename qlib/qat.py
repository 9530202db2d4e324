"""Quantization-aware training: fake quantization with its gradient, as PyTorch's
``torch.ao.quantization.FakeQuantize`` and ``FusedMovingAvgObsFakeQuantize``
compute it on x86 CPUs, bit for bit, forward and backward (torch 2.13 and 2.14
alike, measured on both).

Explained in the book chapter "Training with fake quantization" (``book/13_qat``).

Forward: ``fake_quantize`` (``qlib.fake_quant``) of the input with the module's
scale and zero point. Backward: the straight-through estimator. The rounding
has derivative 0 almost everywhere, so PyTorch passes the incoming gradient
through unchanged where the code was inside ``[quant_min, quant_max]`` and
sends 0 where it was clamped: ``grad * mask``, with the mask the forward kernel
saved (``fake_quantize_per_tensor_affine_cachemask_backward`` in PyTorch's
``aten/src/ATen/native/quantized/FakeQuantPerTensorAffine.cpp``).

Where the scale and zero point come from is what distinguishes the two modules:

* ``FakeQuantize`` runs its observer (a ``MovingAverageMinMaxObserver`` by
  default) and takes the observer's ``calculate_qparams()``, the formula of
  ``qlib.choose_qparams``;
* ``FusedMovingAvgObsFakeQuantize``, which ``get_default_qat_qconfig("x86")``
  and ``("fbgemm")`` use for activations and weights, runs one C++ op,
  ``fused_moving_avg_obs_fake_quant`` (``aten/src/ATen/native/quantized/cpu/
  fused_obs_fake_quant.cpp``): the moving average of min and max in float32,
  then FBGEMM's ``ChooseQuantizationParams`` (``src/QuantUtils.cc``), a
  different formula (``qlib.choose_qparams_fused``). ``convert`` later asks the
  observer, so the converted model can use other qparams than training did.

``fake_quantize_learnable`` is ``torch._fake_quantize_learnable_per_tensor_affine``
(LSQ, a learnable scale and zero point) with its three gradients.
"""

from __future__ import annotations

import math
from typing import cast

import torch

from qlib import checks
from qlib.fake_quant import fake_quantize
from qlib.histogram import HistogramObserver
from qlib.numerics import FBGEMM_SMALL_SCALE, fma_float32
from qlib.observers import (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    PerChannelMinMaxObserver,
    batch_min_max,
)

INT64_EDGE = 2.0**63  # float results at or beyond it convert to INT64_MIN on x86
OBSERVERS = (
    MinMaxObserver,
    MovingAverageMinMaxObserver,
    PerChannelMinMaxObserver,
    MovingAveragePerChannelMinMaxObserver,
    HistogramObserver,
)
FUSED_OBSERVERS = (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)


def choose_qparams_fused(
    min_val: torch.Tensor,
    max_val: torch.Tensor,
    quant_min: int,
    quant_max: int,
    symmetric: bool = False,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``(scale, zero_point)`` as the fused QAT op computes them: FBGEMM's ``ChooseQuantizationParams``.

    ``min_val``/``max_val`` are float32 tensors, 0-d or 1-d (one entry per
    channel). For each entry, with ``n = quant_max - quant_min``:

    * ``symmetric`` and ``min < 0 < max``: ``m = max(|min| / (n // 2 + 1),
      max / (n // 2))`` in float32, and the range becomes ``[-(n // 2 + 1) m,
      (n // 2) m]`` (float64 products narrowed to float32). A channel that is
      all of one sign gets *affine* qparams, symmetric or not;
    * the range is widened to include 0, ``scale = float32((max - min) / n)``
      computed in float64, replaced by 0.1 if it is 0 or its float32
      reciprocal is infinite, and raised to ``6.1e-5`` if smaller (stretching
      the range); no ``eps``;
    * zero point: ``quant_min - min / scale`` or ``quant_max - max / scale``
      (float64), whichever adds smaller terms, clamped and rounded half to
      even; ``(quant_min + quant_max) / 2`` rounded for a symmetric range
      across 0 (so 0 for -128..127, 128 for 0..255).

    Observers (``qlib.choose_qparams``) divide by ``n / 2`` instead: for
    symmetric int8 weights their scale is ``amax / 127.5``, the fused op's
    ``|min| / 128`` or ``max / 127``. Returns float32 scales and int32 zero
    points of shape ``(1,)`` for 0-d input, else the input's shape.

    Chapter: "Training with fake quantization" (book/13_qat).

    >>> choose_qparams_fused(torch.tensor(-1.0), torch.tensor(2.0), 0, 255)
    (tensor([0.0118]), tensor([85], dtype=torch.int32))
    >>> choose_qparams_fused(torch.tensor([-1.0, 0.5]), torch.tensor([1.0, 2.0]), -128, 127, symmetric=True)
    (tensor([0.0079, 0.0078]), tensor([   0, -128], dtype=torch.int32))
    """
    quant_min, quant_max = checks.int_range(quant_min, quant_max)
    n = quant_max - quant_min
    if n >= 2**31:
        raise ValueError(f"quant_max - quant_min must be below 2**31 (FBGEMM computes it in int32); got {n}")
    if symmetric and n < 2:
        raise ValueError(f"a symmetric range needs quant_max - quant_min >= 2 (the kernel divides by it // 2); got {n}")
    lo, hi = (_range_tensor(v, name) for v, name in ((min_val, "min_val"), (max_val, "max_val")))
    if lo.shape != hi.shape:
        raise ValueError(f"min_val and max_val must have the same shape; got {tuple(lo.shape)} and {tuple(hi.shape)}")
    if symmetric:
        across = (lo < 0) & (hi > 0)
        sym_min, sym_max = -(n // 2 + 1), n // 2
        m = torch.maximum((lo / sym_min).abs(), (hi / sym_max).abs())  # float32 divisions
        lo = torch.where(across, (m.double() * sym_min).float(), lo)
        hi = torch.where(across, (m.double() * sym_max).float(), hi)
    lo, hi = torch.clamp(lo, max=0.0), torch.clamp(hi, min=0.0)
    scale = ((hi.double() - lo.double()) / n).float()
    useless = (scale == 0) | torch.isinf(1.0 / scale)
    scale = torch.where(useless, torch.tensor(0.1, dtype=torch.float32), scale)
    threshold = torch.tensor(FBGEMM_SMALL_SCALE, dtype=torch.float32)
    small = scale < threshold
    if small.any():  # stretch the range to the smallest scale, in float32 as FBGEMM does
        amplifier = threshold / scale
        stretched_hi = torch.where(lo == 0, threshold * n, hi * amplifier)
        stretched_lo = torch.where(lo == 0, lo, torch.where(hi == 0, -threshold * n, lo * amplifier))
        lo, hi = torch.where(small, stretched_lo, lo), torch.where(small, stretched_hi, hi)
        scale = torch.where(small, threshold, scale)
    s = scale.double()
    from_min, from_max = quant_min - lo.double() / s, quant_max - hi.double() / s
    error_min = abs(quant_min) + (lo.double() / s).abs()
    error_max = abs(quant_max) + (hi.double() / s).abs()
    initial = torch.where(error_min < error_max, from_min, from_max)
    if symmetric:
        initial = torch.where(
            (lo < 0) & (hi > 0), torch.tensor((quant_min + quant_max) / 2, dtype=torch.float64), initial
        )
    zero_point = torch.round(initial.clamp(quant_min, quant_max)).to(torch.int32)
    if scale.dim() == 0:
        scale, zero_point = scale.reshape(1), zero_point.reshape(1)
    return scale, zero_point


def _range_tensor(value: object, name: str) -> torch.Tensor:
    if not isinstance(value, torch.Tensor) or not value.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor (0-d, or 1-d per channel)")
    if value.dim() > 1:
        raise ValueError(f"{name} must be 0-d or 1-d (one entry per channel); got shape {tuple(value.shape)}")
    t = value.detach().float()
    if torch.isnan(t).any():
        raise ValueError(f"{name} contains NaN; the kernel would turn it into an arbitrary scale")
    return t


def fake_quantize_mask(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    quant_min: int,
    quant_max: int,
    axis: int | None = None,
    *,
    release: str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fake-quantized ``x`` and the mask the backward pass multiplies by, as torch's cachemask kernels.

    The output is ``qlib.fake_quantize``'s. The mask is True where the code
    before clamping, ``rint(x * inv) + zero_point``, lies in ``[quant_min,
    quant_max]``. Per tensor the comparison is in float32 (``quant_min`` and
    ``quant_max`` converted to float32); per channel the code is converted to
    int64 first, so ``±inf`` and codes beyond ``±2**63`` are outside.

    Chapter: "Training with fake quantization" (book/13_qat).

    >>> fake_quantize_mask(torch.tensor([-1.0, 0.4, 20.0]), 0.1, 0, 0, 127)
    (tensor([ 0.0000,  0.4000, 12.7000]), tensor([False,  True, False]))
    """
    out = fake_quantize(x, scale, zero_point, quant_min, quant_max, axis, release=release)
    if axis is None:
        inv = 1.0 / torch.tensor(checks.scale_value(scale), dtype=torch.float32)
        code = torch.round(x * inv) + checks.zero_point_value(zero_point, quant_min, quant_max)
        lo, hi = torch.tensor(quant_min, dtype=torch.float32), torch.tensor(quant_max, dtype=torch.float32)
        return out, (code >= lo) & (code <= hi)
    axis = checks.axis_value(axis, x.dim())
    assert isinstance(scale, torch.Tensor) and isinstance(zero_point, torch.Tensor)  # fake_quantize checked them
    shape = checks.channel_shape(x.dim(), axis)
    inv = 1.0 / scale.float().view(shape)
    code = torch.round(x * inv) + zero_point.view(shape).float()
    return out, (code.abs() < INT64_EDGE) & (code >= quant_min) & (code <= quant_max)


class _StraightThrough(torch.autograd.Function):
    """Forward: fake quantization; backward: ``grad * mask`` (the straight-through estimator)."""

    @staticmethod
    def forward(ctx, x, scale, zero_point, quant_min, quant_max, axis, release):
        out, mask = fake_quantize_mask(x.detach(), scale, zero_point, quant_min, quant_max, axis, release=release)
        ctx.save_for_backward(mask)
        return out

    @staticmethod
    def backward(ctx, grad):
        (mask,) = ctx.saved_tensors
        return grad * mask, None, None, None, None, None, None


def fake_quantize_ste(
    x: torch.Tensor,
    scale: float | torch.Tensor,
    zero_point: int | torch.Tensor,
    quant_min: int,
    quant_max: int,
    axis: int | None = None,
    *,
    release: str | None = None,
) -> torch.Tensor:
    """``qlib.fake_quantize`` with torch's gradient: the straight-through estimator with its clamp mask.

    Forward equals ``torch.fake_quantize_per_tensor_affine`` (``axis=None``)
    or ``torch.fake_quantize_per_channel_affine``; after ``.backward()``,
    ``x.grad`` equals torch's bit for bit: the incoming gradient where the
    code was inside ``[quant_min, quant_max]`` (see ``fake_quantize_mask``),
    and ``grad * False`` elsewhere: 0.0, -0.0 for a negative gradient, NaN
    for an infinite one. Scale and zero point get no gradient. ``release``
    as in ``qlib.fake_quantize`` (both releases compute the same).

    Chapter: "Training with fake quantization" (book/13_qat).

    >>> x = torch.tensor([-1.0, 0.26, 20.0], requires_grad=True)
    >>> fake_quantize_ste(x, 0.1, 0, 0, 127).sum().backward()
    >>> x.grad
    tensor([0., 1., 0.])
    """
    checks.float32_tensor(x, "x")
    return _StraightThrough.apply(x, scale, zero_point, quant_min, quant_max, axis, release)


def cpu_contracts_fma() -> bool:
    """Whether the installed torch's CPU kernels were built with FMA contraction for this CPU.

    PyTorch compiles its elementwise CPU kernels once per instruction set and
    picks one at start-up (``torch.backends.cpu.get_cpu_capability()``, or
    the environment variable ``ATEN_CPU_CAPABILITY``). The AVX2 and AVX-512
    builds fuse ``a * b + c`` into one FMA where the C++ allows it; the
    ``DEFAULT`` build rounds the product first. Only
    :func:`fake_quantize_learnable`'s backward depends on it here.

    Chapter: "Training with fake quantization" (book/13_qat).

    >>> isinstance(cpu_contracts_fma(), bool)
    True
    """
    return torch.backends.cpu.get_cpu_capability() != "DEFAULT"


def _learnable_zero_point(zero_point: torch.Tensor, quant_min: int, quant_max: int, forward: bool) -> int:
    z = torch.tensor(zero_point.detach().reshape(-1)[0].item(), dtype=torch.float32)
    # forward: nearbyint (half to even); backward: + 0.5 and truncation towards zero
    z = torch.round(z) if forward else z + 0.5
    z = torch.clamp(z, float(quant_min), float(quant_max))
    return int(z.item())


class _Learnable(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale, zero_point, quant_min, quant_max, grad_factor, fma, release):
        s = scale.detach().reshape(-1)[0].float().item()
        z = _learnable_zero_point(zero_point, quant_min, quant_max, forward=True)
        ctx.save_for_backward(x, scale, zero_point)
        ctx.settings = (quant_min, quant_max, grad_factor, fma)
        return fake_quantize(x.detach(), s, z, quant_min, quant_max, release=release)

    @staticmethod
    def backward(ctx, grad):
        x, scale, zero_point = ctx.saved_tensors
        quant_min, quant_max, grad_factor, fma = ctx.settings
        x, dy = x.detach(), grad
        s = scale.detach().reshape(-1)[0].float()
        inv = 1.0 / s
        z = _learnable_zero_point(zero_point, quant_min, quant_max, forward=False)
        factor = torch.tensor(grad_factor, dtype=torch.float32)
        # the code, with the zero point added before rounding (in one FMA where the kernel has one)
        total = fma_float32(x, inv.item(), z) if fma else x * inv + z
        code = torch.round(total).double()
        code = torch.where(code.abs() < INT64_EDGE, code, -INT64_EDGE)  # float -> int64 on x86
        below, above = code < quant_min, code > quant_max
        dx = dy * ~(below | above)
        # the fake-quantized value, and its distance to x (one FMA where the kernel has one)
        steps = (code.clamp(quant_min, quant_max) - z).float()
        distance = fma_float32(steps, s.item(), -x) if fma else steps * s - x
        inside = dy * distance * inv * factor
        outside = torch.where(below, dy * float(quant_min - z), dy * float(quant_max - z)) * factor
        d_scale = torch.where(below | above, outside, inside)
        d_zero_point = torch.where(below | above, dy * -1.0 * s * factor, torch.zeros_like(dy))
        d_scale = d_scale.sum().reshape(scale.shape)
        d_zero_point = d_zero_point.sum().reshape(zero_point.shape)
        return dx, d_scale, d_zero_point, None, None, None, None, None


def fake_quantize_learnable(
    x: torch.Tensor,
    scale: torch.Tensor,
    zero_point: torch.Tensor,
    quant_min: int,
    quant_max: int,
    grad_factor: float = 1.0,
    *,
    fma: bool | None = None,
    release: str | None = None,
) -> torch.Tensor:
    """``torch._fake_quantize_learnable_per_tensor_affine`` (LSQ): forward and the gradients of x, scale and zero point.

    ``scale`` and ``zero_point`` are one-element float32 tensors (usually
    with ``requires_grad``). Forward: ``qlib.fake_quantize`` with the zero
    point rounded half to even and clamped. Backward (``PyTorch's
    fake_quantize_learnable_tensor_grad_kernel_cpu``), per element, with the
    zero point taken as ``trunc(clamp(z + 0.5))`` and the code
    ``q = rint(x * inv + z)``, zero point added *before* rounding:

    * ``x``: ``grad`` where ``quant_min <= q <= quant_max``, else ``grad * 0``;
    * ``scale``: ``grad * (x_fq - x) * inv * grad_factor`` inside,
      ``grad * (quant_min - z)`` or ``grad * (quant_max - z)`` (times
      ``grad_factor``) below or above, where ``x_fq = (clamp(q) - z) * scale``;
    * ``zero_point``: 0 inside, ``-grad * scale * grad_factor`` outside;

    and the last two summed with ``torch.sum``. Because the backward adds the
    zero point before rounding and the forward after, the two can disagree at
    a tie with an odd zero point. ``fma``: whether ``x * inv + z`` and
    ``x_fq - x`` are one fused multiply-add (torch's AVX2 and AVX-512
    kernels) or two roundings (its ``DEFAULT`` kernel); None asks
    :func:`cpu_contracts_fma`. ``release`` as in ``qlib.fake_quantize``
    (on a ``DEFAULT`` build qlib asks for it, ``release="2.14"``).

    Chapter: "Training with fake quantization" (book/13_qat).

    >>> s, z = torch.tensor([0.1], requires_grad=True), torch.tensor([0.0], requires_grad=True)
    >>> fake_quantize_learnable(torch.tensor([-1.0, 0.26, 20.0]), s, z, 0, 127).sum().backward()
    >>> s.grad, z.grad
    (tensor([127.4000]), tensor([-0.2000]))
    """
    checks.float32_tensor(x, "x")
    checks.no_nan(x, "x")
    quant_min, quant_max = checks.int_range(quant_min, quant_max)
    if not quant_min <= 0 <= quant_max:
        raise ValueError(f"the range must include 0 (torch's backward checks it); got [{quant_min}, {quant_max}]")
    for name, value in (("scale", scale), ("zero_point", zero_point)):
        if not isinstance(value, torch.Tensor) or value.dtype != torch.float32 or value.numel() != 1:
            raise TypeError(f"{name} must be a one-element float32 tensor (torch's backward requires it)")
    checks.scale_value(scale.detach().float().item())
    if not math.isfinite(zero_point.item()):
        raise ValueError(f"zero_point must be finite; got {zero_point.item()!r}")
    if isinstance(grad_factor, bool) or not isinstance(grad_factor, (int, float)) or not math.isfinite(grad_factor):
        raise ValueError(f"grad_factor must be a finite number; got {grad_factor!r}")
    fma = cpu_contracts_fma() if fma is None else bool(fma)
    return _Learnable.apply(x, scale, zero_point, quant_min, quant_max, grad_factor, fma, release)


class FakeQuantize:
    """Observer plus fake quantization: twin of ``torch.ao.quantization.FakeQuantize`` and,
    with ``fused=True``, of ``FusedMovingAvgObsFakeQuantize``, forward and backward.

    ``observer`` is one of qlib's observer classes (default
    ``MovingAverageMinMaxObserver``), made with ``observer_kwargs`` and with
    ``quant_min``/``quant_max`` (both or neither; ``fused`` defaults them to
    0 and 255, as torch does), so ``reduce_range`` halves them as in torch.
    ``fq(x)``, for a float32 ``x``:

    * ``observer_enabled``: the observer sees ``x``. Unfused, ``scale`` and
      ``zero_point`` become the observer's ``calculate_qparams()``. Fused,
      ``min_val``/``max_val`` move as the kernel moves them: each one that is
      still infinite takes the batch's value, the others
      ``running + c * (batch - running)`` in float32;
    * ``fake_quant_enabled``: returns :func:`fake_quantize_ste` of ``x``
      (per channel along ``ch_axis`` for per-channel qschemes). Fused, the
      qparams are first recomputed from ``min_val``/``max_val`` by
      :func:`choose_qparams_fused`, on every call, observer on or off;
    * otherwise returns ``x`` (fused: a copy), gradient unchanged.

    ``calculate_qparams()`` is the observer's formula, which is what
    ``convert`` uses; fused, it differs from the ``scale`` training used.
    ``enable_observer``/``disable_observer``/``enable_fake_quant``/
    ``disable_fake_quant`` as torch's; ``FakeQuantize.from_torch(module)``
    copies a torch module's settings and state. Fused per-channel needs
    ``ch_axis=0`` (torch's kernel checks it); ``per_channel_affine_float_qparams``
    is not modelled. ``release`` as in ``qlib.fake_quantize``.

    Chapter: "Training with fake quantization" (book/13_qat).

    >>> fq = FakeQuantize(quant_min=0, quant_max=255, reduce_range=True, fused=True)
    >>> fq(torch.tensor([-1.0, 0.0, 2.0]))
    tensor([-0.9921,  0.0000,  2.0079])
    >>> fq.scale, fq.zero_point, fq.calculate_qparams()[0]
    (tensor([0.0236]), tensor([42], dtype=torch.int32), tensor([0.0236]))
    """

    def __init__(
        self,
        observer: type = MovingAverageMinMaxObserver,
        quant_min: int | None = None,
        quant_max: int | None = None,
        *,
        fused: bool = False,
        release: str | None = None,
        **observer_kwargs,
    ) -> None:
        if not isinstance(observer, type) or not issubclass(observer, OBSERVERS):
            allowed = ", ".join(f"qlib.{o.__name__}" for o in OBSERVERS)
            raise TypeError(f"observer must be one of {allowed} (the class); got {observer!r}")
        if fused and not issubclass(observer, FUSED_OBSERVERS):
            raise ValueError(
                "fused=True needs qlib.MovingAverageMinMaxObserver or qlib.MovingAveragePerChannelMinMaxObserver "
                f"(torch's FusedMovingAvgObsFakeQuantize asserts it); got qlib.{observer.__name__}"
            )
        if fused and quant_min is None and quant_max is None:
            quant_min, quant_max = 0, 255
        if (quant_min is None) != (quant_max is None):
            raise ValueError("give both quant_min and quant_max, or neither")
        if quant_min is not None:
            checks.int_range(quant_min, quant_max)
            observer_kwargs.update(quant_min=quant_min, quant_max=quant_max)
        self.observer = observer(**observer_kwargs)
        self.quant_min, self.quant_max = self.observer.quant_min, self.observer.quant_max
        self.qscheme = self.observer.qscheme
        if self.qscheme == torch.per_channel_affine_float_qparams:
            raise ValueError("qscheme torch.per_channel_affine_float_qparams (float zero points) is not modelled")
        self.is_per_channel = self.qscheme in (torch.per_channel_affine, torch.per_channel_symmetric)
        # a per-channel qscheme is a PerChannelMinMaxObserver's (or its moving-average subclass's)
        self.ch_axis = cast(PerChannelMinMaxObserver, self.observer).ch_axis if self.is_per_channel else -1
        self.symmetric = self.qscheme in (torch.per_tensor_symmetric, torch.per_channel_symmetric)
        self.fused = bool(fused)
        self.release = release
        if self.fused and self.is_per_channel and self.ch_axis != 0:
            raise ValueError(
                f"fused per-channel fake quantization needs ch_axis=0 (torch's kernel checks it); got {self.ch_axis}"
            )
        self.scale = torch.tensor([1.0])
        self.zero_point = torch.tensor([0], dtype=torch.int32)
        self.observer_enabled = True
        self.fake_quant_enabled = True

    @property
    def activation_post_process(self):
        """The observer, under torch's name for it."""
        return self.observer

    @property
    def min_val(self) -> torch.Tensor:
        """The observer's running minimum."""
        return self.observer.min_val

    @property
    def max_val(self) -> torch.Tensor:
        """The observer's running maximum."""
        return self.observer.max_val

    def enable_observer(self, enabled: bool = True) -> None:
        self.observer_enabled = bool(enabled)

    def disable_observer(self) -> None:
        self.enable_observer(False)

    def enable_fake_quant(self, enabled: bool = True) -> None:
        self.fake_quant_enabled = bool(enabled)

    def disable_fake_quant(self) -> None:
        self.enable_fake_quant(False)

    def calculate_qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The observer's ``(scale, zero_point)``: what ``convert`` gives the quantized module."""
        return self.observer.calculate_qparams()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Observe ``x`` (if enabled) and return it fake-quantized (if enabled)."""
        checks.float32_tensor(x, "x")
        checks.no_nan(x, "x")
        if self.fused:
            if x.numel() == 0:
                return x.clone()
            self._fused_observe(x)
            if not self.fake_quant_enabled:
                return x.clone()
            self.scale, self.zero_point = choose_qparams_fused(
                self.observer.min_val, self.observer.max_val, self.quant_min, self.quant_max, self.symmetric
            )
        else:
            if self.observer_enabled:
                self.observer(x.detach())
                scale, zero_point = self.observer.calculate_qparams()
                self.scale, self.zero_point = scale.float(), zero_point.to(torch.int32)
            if not self.fake_quant_enabled:
                return x
        if self.is_per_channel:
            return fake_quantize_ste(
                x, self.scale, self.zero_point, self.quant_min, self.quant_max, self.ch_axis, release=self.release
            )
        return fake_quantize_ste(
            x, self.scale.item(), int(self.zero_point), self.quant_min, self.quant_max, release=self.release
        )

    def _fused_observe(self, x: torch.Tensor) -> None:
        # fused=True takes only FUSED_OBSERVERS (checked in __init__)
        obs = cast(MovingAverageMinMaxObserver | MovingAveragePerChannelMinMaxObserver, self.observer)
        if self.is_per_channel:
            if x.dim() < 2:
                raise ValueError(
                    f"fused per-channel fake quantization needs at least 2 dimensions; got {tuple(x.shape)}"
                )
            if obs.min_val.numel() == 0:  # the kernel sizes its buffers on the first call
                obs.min_val = torch.full((x.shape[0],), math.inf)
                obs.max_val = torch.full((x.shape[0],), -math.inf)
            elif obs.min_val.numel() != x.shape[0]:
                raise ValueError(f"this module has seen {obs.min_val.numel()} channels; got shape {tuple(x.shape)}")
        if not self.observer_enabled:
            return
        batch_min, batch_max = batch_min_max(x, 0 if self.is_per_channel else None)
        if not (torch.isfinite(batch_min).all() and torch.isfinite(batch_max).all()):
            raise ValueError("x contains ±inf: the fused observer would record it as the range")
        c = torch.tensor(obs.averaging_constant, dtype=torch.float32)  # the kernel takes it as a float
        obs.min_val = torch.where(torch.isinf(obs.min_val), batch_min, obs.min_val + c * (batch_min - obs.min_val))
        obs.max_val = torch.where(torch.isinf(obs.max_val), batch_max, obs.max_val + c * (batch_max - obs.max_val))

    @classmethod
    def from_torch(cls, module) -> FakeQuantize:
        """A qlib twin of a torch ``FakeQuantize`` or ``FusedMovingAvgObsFakeQuantize``, state included."""
        name = type(module).__name__
        if name not in ("FakeQuantize", "FusedMovingAvgObsFakeQuantize"):
            raise TypeError(f"module must be a torch FakeQuantize or FusedMovingAvgObsFakeQuantize; got {name}")
        theirs = module.activation_post_process
        observer = {o.__name__: o for o in OBSERVERS[:4]}.get(type(theirs).__name__)
        if observer is None:
            raise TypeError(f"from_torch copies min/max observers only; this module's is {type(theirs).__name__}")
        kwargs = dict(dtype=theirs.dtype, qscheme=theirs.qscheme, reduce_range=theirs.reduce_range)
        kwargs["eps"] = float(theirs.eps)
        if hasattr(theirs, "averaging_constant"):
            kwargs["averaging_constant"] = theirs.averaging_constant
        if hasattr(theirs, "ch_axis"):
            kwargs["ch_axis"] = theirs.ch_axis
        quant_min, quant_max = None, None
        if theirs.has_customized_qrange:  # torch keeps the range after reduce_range halved it
            quant_min, quant_max, kwargs["reduce_range"] = theirs.quant_min, theirs.quant_max, False
        ours = cls(observer, quant_min, quant_max, fused=name == "FusedMovingAvgObsFakeQuantize", **kwargs)
        if hasattr(theirs, "min_val"):
            ours.observer.min_val = theirs.min_val.detach().clone()
            ours.observer.max_val = theirs.max_val.detach().clone()
        ours.scale = module.scale.detach().clone()
        ours.zero_point = module.zero_point.detach().clone()
        ours.observer_enabled = bool(module.observer_enabled[0])
        ours.fake_quant_enabled = bool(module.fake_quant_enabled[0])
        return ours

    def __repr__(self) -> str:
        kind = "fused" if self.fused else "observer"
        return (
            f"FakeQuantize({kind}, {type(self.observer).__name__}, quant_min={self.quant_min}, "
            f"quant_max={self.quant_max}, qscheme={self.qscheme}, observer_enabled={self.observer_enabled}, "
            f"fake_quant_enabled={self.fake_quant_enabled}, scale={self.scale.tolist()}, "
            f"zero_point={self.zero_point.tolist()})"
        )
