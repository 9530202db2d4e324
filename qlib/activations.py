"""Quantized activation functions on codes, as torch computes them on x86 CPUs: ReLU, Hardswish,
Hardsigmoid, Sigmoid, and clamp (Hardtanh, ReLU6).

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

``relu`` and ``clamp`` only compare codes. The others run ATen's element-wise kernels
(``qhardswish_kernel``, ``qhardsigmoid_kernel``, ``qsigmoid_kernel`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp,
called from https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qhardswish.cpp,
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qhardsigmoid.cpp and
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qsigmoid.cpp) through ``cpu_kernel_vec``: some elements take the vector body, the others the scalar tail, and
the two dequantize and quantize differently (``qlib.elementwise_kernels``), so a code can depend
on its position, on the layout of the codes, on the thread count for tensors of more than 32768
elements, and, in the tail, on the release. Every function takes codes with the quantized
tensor's strides (``torch.empty_strided(q.shape, q.stride(), dtype=torch.uint8).copy_(q.int_repr())``;
``int_repr()`` keeps a channels-last layout but makes other views contiguous) and returns codes
laid out as torch's output, in the input's suggested memory format.

The formulas were derived from a main-branch copy of PyTorch's sources, where these files are
merged into ``Activation.cpp`` (the links name them as the 2.13.0 and 2.14.1 binaries' own
error messages do), and measured element by element against torch 2.13.0 and 2.14.1, with the AVX-512 and the AVX2 kernels, on the x86, fbgemm, onednn and qnnpack engines.
The first three run the same kernels; on ``qnnpack`` torch runs QNNPACK's own for quint8 codes:
a lookup table for Hardswish (modelled: ``engine=``), tables for Hardsigmoid and Sigmoid that give
the same codes as the other engines, and a clamp that gives channels-last inputs back in another
layout (modelled: ``engine=``).
"""

from __future__ import annotations

import math

import torch

from qlib import checks
from qlib.elementwise_kernels import (
    call_arguments,
    dequantize_val,
    eight_bit_codes,
    engine_name,
    laid_out,
    quantize_val,
    strided_codes,
    suggested_format,
    unary_lanes,
    vectorized_dequantize,
    vectorized_quantize,
)
from qlib.numerics import float32, float32_reciprocal
from qlib.ranges import DTYPE_RANGES
from qlib.registry import Settings, quantized, register
from qlib.releases import torch_release

# The scale and zero point torch gives Hardsigmoid's and Sigmoid's output: 1 / 256, and the dtype's lowest code
# for qint8 (hardsigmoid_quantized_cpu in qhardsigmoid.cpp, sigmoid_quantized_cpu in qsigmoid.cpp)
FLOAT32_MAX = float(torch.finfo(torch.float32).max)
FIXED_QPARAMS: dict[torch.dtype, tuple[float, int]] = {torch.quint8: (0.00390625, 0), torch.qint8: (0.00390625, -128)}


def relu(q: torch.Tensor, zero_point: int) -> torch.Tensor:
    """The codes of ``torch.relu`` on a quantized tensor: ``max(q, zero_point)``, exact.

    A code below the zero point stands for a negative value; ReLU raises it to the
    zero point, which stands for 0. The scale and zero point stay the input's.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> relu(torch.tensor([3, 10, 200], dtype=torch.uint8), 10)
    tensor([ 10,  10, 200], dtype=torch.uint8)
    """
    checks.integer_tensor(q, "q")
    return torch.maximum(q, torch.tensor(zero_point, dtype=q.dtype))


def hardswish(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    scale: float,
    zero_point: int,
    *,
    release: str | None = None,
    threads: int | None = None,
    engine: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.ao.nn.quantized.Hardswish`` (``quantized::hardswish(x, scale, zero_point)``), bit for bit.

    ``y = d * min(max(d + 3, 0), 6) / 6`` in float32 of each input value ``d``, quantized with the
    output's ``scale`` and ``zero_point`` (``quantized_hardswish`` in ``qhardswish.cpp``, then
    ``qhardswish_kernel``; module docstring for the links):

    * vector body: ``d = fma(s, q, float32(s * -zero_point))`` (``Vectorized::dequantize``), then ATen's
      ``rint(y * inv) + zero_point`` with ``inv = float32(1.0 / scale)``, the reciprocal taken in double;
    * scalar tail: ``d = float32(s) * (q - zero_point)`` (``dequantize_val``), then FBGEMM's scalar
      ``Quantize`` with ``inv = 1.0f / float32(scale)``: torch 2.14 ``rint(y * inv) + zero_point``,
      torch 2.13 ``rint(float32(y * inv) + zero_point)``.

    Which elements take the tail follows ``qlib.elementwise_kernels.unary_lanes``: the last
    ``n % 64`` of each contiguous run (per thread's chunk above 32768 elements). On the ``qnnpack``
    engine (quint8) torch looks every code up in QNNPACK's table instead
    (``pytorch_qnnp_create_hardswish_nc_q8``): ``d = float32(s) * (i - x_zero_point)``, the same ``y``,
    ``rint(min(max(float32(y * (1.0f / scale)) + zero_point, 0), 255))``, in both releases.

    ``x``: uint8 (quint8) or int8 (qint8) codes with the quantized tensor's strides, of a tensor
    with ``x_scale`` and ``x_zero_point``. ``release`` (None: the installed torch), ``threads``
    (None: ``torch.get_num_threads()``) and ``engine`` (None: ``torch.backends.quantized.engine``)
    choose the variant. Returns codes laid out in ``x``'s suggested memory format, as torch's.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> hardswish(torch.tensor([0, 128, 160, 255], dtype=torch.uint8), 0.05, 128, 0.05, 20)
    tensor([ 20,  20,  45, 147], dtype=torch.uint8)
    >>> x = torch.full((70,), 131, dtype=torch.uint8)  # d = 3, y = 3: 1.5 steps; rint(1.5) + 1, or 2.13's rint(2.5)
    >>> [hardswish(x, 1.0, 128, 2.0, 1, release=r, threads=1)[62:66].tolist() for r in ("2.13", "2.14")]
    [[3, 3, 2, 2], [3, 3, 3, 3]]
    """
    dtype = eight_bit_codes(x, "x", "hardswish")
    qmin, qmax = DTYPE_RANGES[dtype]
    sx = checks.scale_value(x_scale, "x_scale")
    zx = checks.zero_point_value(x_zero_point, qmin, qmax, "x_zero_point")
    s = checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, qmin, qmax)
    zero_point_first = torch_release(release) == "2.13"
    lanes = unary_lanes(x, threads)
    if engine_name(engine) == "qnnpack" and dtype == torch.quint8:
        y = _hardswish(dequantize_val(torch.arange(256), sx, zx))
        table = torch.round((y * float32_reciprocal(s) + z).clamp(0.0, 255.0))
        return laid_out(table[x.long()].to(x.dtype), suggested_format(x))
    codes = torch.empty(x.shape, dtype=torch.float64)
    codes[lanes] = vectorized_quantize(
        _hardswish(vectorized_dequantize(x[lanes], sx, zx)), float32(1.0 / s), z, dtype
    ).double()
    codes[~lanes] = quantize_val(
        _hardswish(dequantize_val(x[~lanes], sx, zx)), float32_reciprocal(s), z, dtype, zero_point_first
    )
    return laid_out(codes.to(x.dtype), suggested_format(x))


def hardsigmoid(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    *,
    release: str | None = None,
    threads: int | None = None,
) -> tuple[torch.Tensor, float, int]:
    """The codes, scale and zero point of ``torch.nn.functional.hardsigmoid`` on a quantized tensor (``aten::hardsigmoid``).

    mobilenet_v3's ``SqueezeExcitation`` keeps a float ``nn.Hardsigmoid`` after conversion; called
    on a quantized tensor it runs ``hardsigmoid_quantized_cpu`` (``qhardsigmoid.cpp``, then
    ``qhardsigmoid_kernel``). The output's scale is ``1 / 256`` and its zero point 0 for quint8,
    -128 for qint8 (``FIXED_QPARAMS``), and ``y = min(max(d + 3, 0), 6) / 6`` in float32:

    * vector body: ``d = fma(s, q, float32(s * -zero_point))``, codes ``rint(y * 256) + zero point``;
    * scalar tail: ``d = float32(s) * (q - zero_point)``, FBGEMM's scalar ``Quantize``, which gives the
      same ``rint(y * 256)`` in both releases (``y * 256`` is exact, the zero point an integer).

    The two dequantizations can round a value apart, so a code can still depend on the path
    (``threads`` as for ``qlib.hardswish``). On the ``qnnpack`` engine QNNPACK's table gives the same
    codes (measured). ``x``: uint8 or int8 codes with the quantized tensor's strides. Returns
    ``(codes, scale, zero_point)``, the codes laid out in ``x``'s suggested memory format.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> hardsigmoid(torch.tensor([0, 100, 130, 255], dtype=torch.uint8), 0.05, 100)
    (tensor([  0, 128, 192, 255], dtype=torch.uint8), 0.00390625, 0)
    """
    dtype = eight_bit_codes(x, "x", "hardsigmoid")
    qmin, qmax = DTYPE_RANGES[dtype]
    sx = checks.scale_value(x_scale, "x_scale")
    zx = checks.zero_point_value(x_zero_point, qmin, qmax, "x_zero_point")
    zero_point_first = torch_release(release) == "2.13"
    lanes = unary_lanes(x, threads)
    scale, zero_point = FIXED_QPARAMS[dtype]
    codes = torch.empty(x.shape, dtype=torch.float64)
    body = _hardsigmoid(vectorized_dequantize(x[lanes], sx, zx))
    codes[lanes] = vectorized_quantize(body, float32(1.0 / scale), zero_point, dtype).double()
    tail = _hardsigmoid(dequantize_val(x[~lanes], sx, zx))
    codes[~lanes] = quantize_val(tail, float32_reciprocal(scale), zero_point, dtype, zero_point_first)
    return laid_out(codes.to(x.dtype), suggested_format(x)), scale, zero_point


def sigmoid(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    scale: float | None = None,
    zero_point: int | None = None,
    *,
    release: str | None = None,
    threads: int | None = None,
    engine: str | None = None,
) -> tuple[torch.Tensor, float, int]:
    """The codes, scale and zero point of ``torch.sigmoid`` on a quantized tensor (``aten::sigmoid``), or of
    ``torch.ao.nn.quantized.Sigmoid`` (``quantized::sigmoid``) with the output's ``scale`` and ``zero_point``.

    ``torch.sigmoid`` gives its output a scale of ``1 / 256`` and a zero point of 0 for quint8,
    -128 for qint8 (``FIXED_QPARAMS``); ``y = 1 / (1 + exp(-d))`` (``sigmoid_quantized_cpu`` in
    ``qsigmoid.cpp``, then ``qsigmoid_kernel``):

    * vector body: ``d = (float(q) - zero_point) * s`` (no fused multiply-add here), ``y`` in
      float32 with Sleef's ``expf``, ATen's ``rint(y * inv) + zero_point``, ``inv = float32(1.0 / scale)``;
    * scalar tail: ``d = float32(s) * (q - zero_point)``, ``y = float32(1 / (1 + double(expf(-d))))``,
      FBGEMM's scalar ``Quantize`` (the zero point before rounding in torch 2.13, after in 2.14).

    qlib takes ``expf`` as correctly rounded (``exp`` in float64, rounded to float32); Sleef's and
    glibc's are accurate to 1 ulp, not correctly rounded, yet 2,560,000 codes measured (every code,
    2,000 scale and zero-point pairs, both paths, both releases, AVX-512 and AVX2) all agree: a
    rare difference cannot be excluded. On the ``qnnpack`` engine (``engine``; None:
    ``torch.backends.quantized.engine``) QNNPACK's table gives the same codes (measured), but takes
    quint8 outputs of scale ``1 / 256`` and zero point 0 only. ``x``: uint8 or int8 codes with the
    quantized tensor's strides; ``threads`` as for ``qlib.hardswish``. Returns ``(codes, scale,
    zero_point)``, the codes laid out in ``x``'s suggested memory format.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> sigmoid(torch.tensor([0, 100, 130, 255], dtype=torch.uint8), 0.05, 100)
    (tensor([ 2, 128, 209, 255], dtype=torch.uint8), 0.00390625, 0)
    """
    dtype = eight_bit_codes(x, "x", "sigmoid")
    qmin, qmax = DTYPE_RANGES[dtype]
    sx = checks.scale_value(x_scale, "x_scale")
    zx = checks.zero_point_value(x_zero_point, qmin, qmax, "x_zero_point")
    if (scale is None) != (zero_point is None):
        raise ValueError("give both scale and zero_point (quantized::sigmoid) or neither (torch.sigmoid)")
    s, z = FIXED_QPARAMS[dtype] if scale is None else (checks.scale_value(scale), zero_point)
    z = checks.zero_point_value(z, qmin, qmax)
    zero_point_first = torch_release(release) == "2.13"
    if engine_name(engine) == "qnnpack" and dtype == torch.quint8 and (s, z) != FIXED_QPARAMS[dtype]:
        raise ValueError(
            "torch's QNNPACK sigmoid (engine 'qnnpack', quint8 codes) takes an output scale of 1/256 and a zero "
            f"point of 0 only; got scale={s!r}, zero_point={z!r}"
        )
    lanes = unary_lanes(x, threads)
    codes = torch.empty(x.shape, dtype=torch.float64)
    d = (x[lanes].float() - float(zx)) * float32(sx)
    body = 1.0 / (1.0 + torch.exp(-d.double()).float())  # float32
    codes[lanes] = vectorized_quantize(body, float32(1.0 / s), z, dtype).double()
    d = dequantize_val(x[~lanes], sx, zx)
    tail = (1.0 / (1.0 + torch.exp(-d.double()).float().double())).float()
    codes[~lanes] = quantize_val(tail, float32_reciprocal(s), z, dtype, zero_point_first)
    return laid_out(codes.to(x.dtype), suggested_format(x)), s, z


def clamp(
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    min: float | None = None,
    max: float | None = None,
    *,
    release: str | None = None,
    engine: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.clamp`` (``F.hardtanh``, ``nn.ReLU6``, ``F.relu6``, ``nnq.ReLU6``) on a quantized tensor.

    ``min(max(q, Q(min)), Q(max))``: the bounds, narrowed to float32, are quantized with the input's
    ``scale`` and ``zero_point`` by FBGEMM's scalar ``Quantize`` (``quantize_val``: torch 2.13 adds the
    zero point before rounding, 2.14 after, so a bound on a tie can move by one code), then the
    codes are clamped; the scale and zero point stay the input's (``quantized_clamp_impl`` in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qclamp.cpp,
    then ``qclamp_kernel``). With ``min > max`` every code is ``Q(max)``. ``nn.ReLU6`` and ``F.relu6``
    call ``aten::hardtanh(x, 0, 6)``, and ``quantized::relu6`` ``hardtanh`` too: ``clamp(x, s, z, 0.0, 6.0)``.

    On the ``qnnpack`` engine (quint8, both bounds) QNNPACK clamps the codes of ``x`` in its
    suggested layout but writes them into a contiguous tensor: a channels-last input comes back
    scrambled, element (n, c, h, w) holding the clamped code at position n*C*H*W + c*H*W + h*W + w of
    the channels-last order, as here. QNNPACK needs both bounds, and ``Q(min) <= Q(max)``.

    ``x``: uint8 or int8 codes with the quantized tensor's strides; ``min`` and ``max`` numbers or
    None (not both). ``release`` (None: the installed torch) and ``engine`` (None:
    ``torch.backends.quantized.engine``) choose the variant. Returns codes laid out as torch's.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> clamp(torch.tensor([0, 100, 130, 255], dtype=torch.uint8), 0.05, 100, 0.0, 6.0)
    tensor([100, 100, 130, 220], dtype=torch.uint8)
    >>> [clamp(torch.tensor([255], dtype=torch.uint8), 1.0, 1, max=2.5, release=r).item() for r in ("2.13", "2.14")]
    [4, 3]
    """
    dtype = eight_bit_codes(x, "x", "clamp")
    qmin, qmax = DTYPE_RANGES[dtype]
    s = checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, qmin, qmax)
    bounds = []
    for name, bound in (("min", min), ("max", max)):
        if bound is not None and (isinstance(bound, bool) or not isinstance(bound, (int, float))):
            raise TypeError(f"{name} must be a number or None; got {type(bound).__name__}")
        if bound is not None and math.isfinite(bound) and abs(bound) > FLOAT32_MAX:
            raise ValueError(f"{name} must fit in float32, as torch converts it to float; got {bound!r}")
        bounds.append(bound)
    if min is None and max is None:
        raise ValueError("give min, max or both (torch: 'At least one of 'min' or 'max' must not be None')")
    zero_point_first = torch_release(release) == "2.13"
    qnnpack = engine_name(engine) == "qnnpack"
    if qnnpack and (min is None or max is None):
        raise ValueError("torch's QNNPACK clamp (engine 'qnnpack') needs both min and max")
    inv = float32_reciprocal(s)
    lo, hi = (
        None
        if bound is None
        else int(quantize_val(torch.tensor([float(bound)]), inv, z, dtype, zero_point_first).item())
        for bound in bounds
    )
    if qnnpack and dtype == torch.quint8 and lo is not None and hi is not None and lo > hi:
        raise ValueError(
            f"torch's QNNPACK clamp (engine 'qnnpack', quint8 codes) needs Q(min) <= Q(max); got codes {lo} and {hi}"
        )
    codes = torch.clamp(x.long(), lo, hi)
    if qnnpack and dtype == torch.quint8 and suggested_format(x) == torch.channels_last:
        return codes.permute(0, 2, 3, 1).flatten().view(x.shape).to(x.dtype)  # written in channels-last order
    return laid_out(codes.to(x.dtype), suggested_format(x))


def _hardswish(d: torch.Tensor) -> torch.Tensor:
    """``d * min(max(d + 3, 0), 6) / 6`` in float32."""
    return d * (d + 3.0).clamp(0.0, 6.0) / 6.0


def _hardsigmoid(d: torch.Tensor) -> torch.Tensor:
    """``min(max(d + 3, 0), 6) / 6`` in float32."""
    return (d + 3.0).clamp(0.0, 6.0) / 6.0


# ------------------------------------------------------------------------------------------------
# the operator table


@register("aten::relu", "aten::relu_", function="qlib.relu", modules=("torch.nn.ReLU", "torch.relu"))
def _relu_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    x = args[0]
    return quantized(relu(x.int_repr(), x.q_zero_point()), x.q_scale(), x.q_zero_point(), x.dtype)


@register("quantized::hardswish", function="qlib.hardswish", modules=("torch.ao.nn.quantized.Hardswish",))
def _hardswish_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q, scale, zero_point = call_arguments(args, kwargs, ("qx", "output_scale", "output_zero_point"))
    codes = hardswish(strided_codes(q), q.q_scale(), q.q_zero_point(), scale, zero_point, release=settings.release)
    return quantized(codes, scale, zero_point, q.dtype)


@register(
    "aten::hardsigmoid",
    "aten::hardsigmoid_",
    function="qlib.hardsigmoid",
    modules=("torch.nn.Hardsigmoid", "torch.nn.functional.hardsigmoid"),
)
def _hardsigmoid_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q = args[0]
    codes, scale, zero_point = hardsigmoid(strided_codes(q), q.q_scale(), q.q_zero_point(), release=settings.release)
    return quantized(codes, scale, zero_point, q.dtype)


@register(
    "aten::sigmoid",
    "quantized::sigmoid",
    function="qlib.sigmoid",
    modules=("torch.nn.Sigmoid", "torch.sigmoid", "torch.ao.nn.quantized.Sigmoid"),
)
def _sigmoid_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q, scale, zero_point = call_arguments(args, kwargs, ("qx", "output_scale", "output_zero_point"), (None, None))
    codes, scale, zero_point = sigmoid(
        strided_codes(q), q.q_scale(), q.q_zero_point(), scale, zero_point, release=settings.release
    )
    return quantized(codes, scale, zero_point, q.dtype)


@register(
    "aten::hardtanh",
    "aten::hardtanh_",
    "aten::clamp",
    function="qlib.clamp",
    modules=("torch.nn.Hardtanh", "torch.nn.ReLU6", "torch.nn.functional.relu6", "torch.clamp"),
)
def _clamp_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q, low, high = call_arguments(args, kwargs, ("self", "min", "max"), (None, None))
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        raise ValueError("qlib models clamp with number bounds (torch.clamp.Tensor refuses quantized tensors)")
    if "min_val" in kwargs or "max_val" in kwargs:  # hardtanh's own names
        low, high = kwargs.get("min_val", low), kwargs.get("max_val", high)
    codes = clamp(strided_codes(q), q.q_scale(), q.q_zero_point(), low, high, release=settings.release)
    return quantized(codes, q.q_scale(), q.q_zero_point(), q.dtype)


@register("quantized::relu6", function="qlib.clamp", modules=("torch.ao.nn.quantized.ReLU6",))
def _relu6_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q, inplace = call_arguments(args, kwargs, ("qx", "inplace"), (False,))
    codes = clamp(strided_codes(q), q.q_scale(), q.q_zero_point(), 0.0, 6.0, release=settings.release)
    result = quantized(codes, q.q_scale(), q.q_zero_point(), q.dtype)
    return q.copy_(result) if inplace else result  # clamping twice changes nothing: torch may run after
