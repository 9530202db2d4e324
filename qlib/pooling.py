"""Quantized pooling on codes, as torch computes it on x86 CPUs: ``max_pool2d``, ``avg_pool2d``,
``adaptive_avg_pool2d`` and ``mean``.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

All four keep the input's scale and zero point, and torch picks their kernels by the codes'
layout: an input that is channels-last contiguous (a 4-d tensor in ``torch.channels_last``, and
every (N, C, 1, 1) tensor, whatever its strides) runs an NHWC kernel, any other one a loop over
its contiguous NCHW copy, and the two round differently. So each function here reads the layout
from the strides of the codes it is given: pass codes with the quantized tensor's strides,
``torch.empty_strided(q.shape, q.stride(), dtype=torch.uint8).copy_(q.int_repr())``
(``qlib.elementwise_kernels.strided_codes(q)``; ``int_repr()`` keeps a channels-last layout but
makes other views contiguous). Each returns codes laid out as torch's output is: channels-last
where torch's is.

The formulas were derived from a main-branch copy of PyTorch's sources (the links name the files
as the 2.13.0 and 2.14.1 binaries' own error messages do; older trees call them ``qpool.cpp``, ``q_avgpool.cpp``, ``q_adaavgpool.cpp``
and ``qreduction.cpp``) and measured element by element against torch 2.13.0 and 2.14.1, with
the AVX-512 and the AVX2 kernels (``ATEN_CPU_CAPABILITY=avx2``), on the x86, fbgemm, onednn and
qnnpack engines. The first three engines run the same kernels. On the ``qnnpack`` engine torch
runs QNNPACK's own kernels for quint8 codes (without ``ceil_mode`` for the poolings), each
modelled here (QNNPACK's sources: ``aten/src/ATen/native/quantized/cpu/qnnpack/src/q8avgpool``
and ``q8gavgpool``, their SSE2 kernels): its max pooling gives the same codes as the other engines;
its average, adaptive average and global average (``mean`` over (2, 3)) poolings multiply the
window's ``acc`` by one float32 factor, ``qnnpack_pool_scale`` (in this module). Its max pooling with a
dilation above 1 gives other codes, which qlib does not model: it raises ``NotImplementedError``.
"""

from __future__ import annotations

import math

import torch

from qlib import checks
from qlib.dequant import per_tensor_values
from qlib.elementwise_kernels import (
    boolean,
    call_arguments,
    channels_last_contiguous,
    eight_bit_codes,
    engine_name,
    laid_out,
    nhwc_into_suggested,
    quantize_val,
    quantize_vec,
    strided_codes,
    suggested_format,
    vectorized_quantize,
)
from qlib.numerics import float32, float32_reciprocal
from qlib.ranges import DTYPE_RANGES
from qlib.registry import Settings, quantized, register
from qlib.releases import X86_CAPABILITIES, torch_release

# Channels per vector of qavg_pool2d_nhwc_kernel, the one quantized stub registered for AVX-512 too
AVG_POOL_LANES = {"AVX512": 16, "AVX2": 8}
NHWC_QUANTIZE_LANES = 8  # channels per vector of the NHWC adaptive average pooling (an AVX2 kernel everywhere)
SUM_BLOCK = 32  # channels at a time in ATen's float sum of a channels-last tensor (cascade_sum's 4 vectors of 8)


def max_pool2d(
    x: torch.Tensor,
    kernel_size: int | tuple[int, ...] | list[int],
    stride: int | tuple[int, ...] | list[int] | None = None,
    padding: int | tuple[int, ...] | list[int] = 0,
    dilation: int | tuple[int, ...] | list[int] = 1,
    ceil_mode: bool = False,
    *,
    engine: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.nn.functional.max_pool2d`` on a quantized tensor (``aten::quantized_max_pool2d``).

    ``y[n, c, i, j] = max(x[n, c, i * sh - ph + a * dh, j * sw - pw + b * dw])`` over the window's
    positions that lie inside the input (the padding never takes part; a window with none gives
    the dtype's lowest code), as ``quantized_max_pool2d`` in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/Pooling.cpp
    computes it: ``qmaxpool_2d_nhwc_kernel`` (in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp)
    for a channels-last contiguous input, ``spatial_dilated_max_pooling`` for any other. Integers
    only: the release and the CPU do not matter. The output keeps the input's scale and zero point.

    ``x`` holds uint8 (quint8) or int8 (qint8) codes of shape (N, C, H, W) or (C, H, W), with the
    quantized tensor's strides (the module docstring says why). ``kernel_size``, ``stride`` (None:
    the kernel size), ``padding`` (at most half the kernel) and ``dilation`` are ints or pairs
    (height, width), as for ``torch.nn.MaxPool2d``. ``engine`` (None: ``torch.backends.quantized.engine``)
    matters only for ``"qnnpack"``, whose kernel takes 4-d input only, refuses a 1x1 window, and is
    not modelled with a dilation above 1 (NotImplementedError).

    The result is laid out as torch's: channels-last for a channels-last input (an (N, C, 1, 1)
    input with contiguous strides pooled to more than 1x1 gets the codes of the channels-last
    order in a contiguous tensor, as torch's NHWC kernel leaves them), else contiguous.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.tensor([[[[1, 9, 3], [4, 5, 200], [7, 8, 0]]]], dtype=torch.uint8)
    >>> max_pool2d(x, 2, 1)
    tensor([[[[  9, 200],
              [  8, 200]]]], dtype=torch.uint8)
    """
    dtype = _pooling_codes(x, "max_pool2d")
    kernel, step, pad = _pool_window(kernel_size, stride, padding)
    dh, dw = _pool_pair(dilation, "dilation", 1)
    ceil = boolean(ceil_mode, "ceil_mode")
    qnnpack = _runs_qnnpack(x, dtype, engine, ceil, kernel, "max pooling")
    if qnnpack and (dh, dw) != (1, 1):
        raise NotImplementedError(
            "qlib does not model QNNPACK's max pooling with a dilation above 1 (engine 'qnnpack', quint8 "
            "codes): it gives other codes than the other engines. Use engine 'x86', 'fbgemm' or 'onednn'"
        )
    xb = x.unsqueeze(0) if x.dim() == 3 else x
    n, c, h, w = xb.shape
    oh = _pooling_output_size(h, kernel[0], pad[0], step[0], dh, ceil, x.shape)
    ow = _pooling_output_size(w, kernel[1], pad[1], step[1], dw, ceil, x.shape)
    reach_h, reach_w = dh * (kernel[0] - 1) + 1, dw * (kernel[1] - 1) + 1
    # the input inside a frame of values below every code, large enough for every window
    lowest = DTYPE_RANGES[dtype][0]
    frame_h, frame_w = max((oh - 1) * step[0] + reach_h, pad[0] + h), max((ow - 1) * step[1] + reach_w, pad[1] + w)
    framed = torch.full((n, c, frame_h, frame_w), lowest - 1, dtype=torch.int16)
    framed[:, :, pad[0] : pad[0] + h, pad[1] : pad[1] + w] = xb
    windows = framed.unfold(2, reach_h, step[0]).unfold(3, reach_w, step[1])[:, :, :oh, :ow, ::dh, ::dw]
    out = windows.amax(dim=(-1, -2)).clamp(min=lowest).to(x.dtype)
    return _laid_out_as_torch(x, out, qnnpack)


def avg_pool2d(
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    kernel_size: int | tuple[int, ...] | list[int],
    stride: int | tuple[int, ...] | list[int] | None = None,
    padding: int | tuple[int, ...] | list[int] = 0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    divisor_override: int | None = None,
    *,
    release: str | None = None,
    capability: str | None = None,
    engine: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.nn.functional.avg_pool2d`` on a quantized tensor (``aten::avg_pool2d``), bit for bit.

    ``x`` holds the codes (uint8 for quint8, int8 for qint8; (N, C, H, W) or (C, H, W), with the
    quantized tensor's strides) of a tensor with ``scale`` and ``zero_point``, which the output
    keeps. Per window, in int32, ``acc = sum(q) - zero_point * size``, ``size`` the window's
    elements inside the input, and the divisor ``d`` is ``divisor_override``, or with
    ``count_include_pad`` the window's elements inside the padded input, else ``size``. Then
    (``avg_pool2d_quantized_cpu`` in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/AveragePool2d.cpp):

    * channels-last contiguous ``x`` (``qavg_pool2d_nhwc_kernel`` in
      https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp):
      ``m = 1.0f / d`` in float32 (the input scale over the output's, the same); the first ``C // W * W``
      channels take the vector body, ``rint(acc * m) + zero_point`` (ATen's ``QuantizeAvx2``), the
      other ``C % W`` FBGEMM's scalar ``Quantize`` with scale ``1.0f / m``, whose zero point torch 2.13
      adds before rounding. ``W`` is 16 on AVX-512 kernels and 8 on AVX2 ones: this is the one
      quantized kernel registered for AVX-512 too (``ALSO_REGISTER_AVX512_DISPATCH``), so in torch
      2.13 the codes depend on ``capability``; in 2.14 the two paths agree (``1.0f / (1.0f / m)`` is
      ``m`` for every ``d`` up to 10**6).
    * any other ``x`` (``avg_pool2d_out_frame``): ``m = float32(1.0 / d)`` (in double),
      ``rint(float32(float32(acc * m) + zero_point))``, clamped: no release or CPU dependence.
    * ``engine="qnnpack"`` (quint8 codes, no ``ceil_mode``; ``qnnpack_avg_pool2d``): QNNPACK ignores
      ``count_include_pad`` and ``divisor_override``, divides every window by ``kH * kW`` (the padding
      counts as the zero point) and computes ``rint(float32(acc * m)) + zero_point``, saturated, on
      every channel, whatever the layout, release or CPU, with ``m`` ``qnnpack_pool_scale`` (in this module)
      of ``kH * kW``. It takes 4-d input only and refuses a 1x1 window.

    ``kernel_size``, ``stride`` (None: the kernel size) and ``padding`` (at most half the kernel)
    are ints or pairs (height, width). ``release`` (``"2.13"``, ``"2.14"``; None: the installed
    torch), ``capability`` (``"AVX512"`` or ``"AVX2"``; None: ``torch.backends.cpu.get_cpu_capability()``)
    and ``engine`` (None: ``torch.backends.quantized.engine``) choose the variant. The result is laid
    out as torch's: channels-last for a channels-last input (``qlib.max_pool2d`` says what an
    (N, C, 1, 1) input gives), else contiguous.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.tensor([[[[1, 2], [3, 5]]]], dtype=torch.uint8)  # sums 11 - 4 * 1 = 7: 7 / 4 = 1.75
    >>> avg_pool2d(x, 0.1, 1, 2)
    tensor([[[[3]]]], dtype=torch.uint8)
    >>> tie = torch.tensor([[[[1, 2]]]], dtype=torch.uint8)  # one channel: channels-last too; acc 3 - 2 = 1
    >>> [avg_pool2d(tie, 0.1, 1, (1, 2), release=r).item() for r in ("2.13", "2.14")]  # 1 / 2 + 1, rounded
    [2, 1]
    """
    dtype = _pooling_codes(x, "avg_pool2d")
    checks.scale_value(scale)  # the output's scale is the input's: only their ratio, 1, enters the arithmetic
    qmin, qmax = DTYPE_RANGES[dtype]
    z = checks.zero_point_value(zero_point, qmin, qmax)
    kernel, step, pad = _pool_window(kernel_size, stride, padding)
    ceil = boolean(ceil_mode, "ceil_mode")
    with_padding = boolean(count_include_pad, "count_include_pad")
    if divisor_override is not None and (
        isinstance(divisor_override, bool) or not isinstance(divisor_override, int) or divisor_override == 0
    ):
        raise ValueError(f"divisor_override must be None or a non-zero int (torch: 'divisor must be not zero'); "
                         f"got {divisor_override!r}")  # fmt: skip
    zero_point_first = torch_release(release) == "2.13"
    lanes = AVG_POOL_LANES[_avg_pool_capability(capability)]
    qnnpack = _runs_qnnpack(x, dtype, engine, ceil, kernel, "average pooling")
    xb = x.unsqueeze(0) if x.dim() == 3 else x
    n, c, h, w = xb.shape
    oh = _pooling_output_size(h, kernel[0], pad[0], step[0], 1, ceil, x.shape)
    ow = _pooling_output_size(w, kernel[1], pad[1], step[1], 1, ceil, x.shape)
    hs, he, h_extent = _avg_pool_bounds(oh, step[0], pad[0], kernel[0], h)
    ws, we, w_extent = _avg_pool_bounds(ow, step[1], pad[1], kernel[1], w)
    size = (he - hs).view(-1, 1) * (we - ws).view(1, -1)  # (OH, OW): the window's elements inside the input
    if qnnpack:
        divisor = torch.full_like(size, kernel[0] * kernel[1])
    elif divisor_override is not None:
        divisor = torch.full_like(size, divisor_override)
    else:
        divisor = h_extent.view(-1, 1) * w_extent.view(1, -1) if with_padding else size
    acc = (window_sums(xb, hs, he, ws, we) - z * size).float()  # int32 in torch, exact in float32 here
    out = torch.empty(acc.shape, dtype=torch.float64)
    vector = (torch.arange(c) < c // lanes * lanes).view(1, -1, 1, 1).expand(acc.shape)
    for d in divisor.unique().tolist():
        here = (divisor == d).expand(acc.shape)
        if qnnpack:
            out[here] = (torch.round(acc[here] * qnnpack_pool_scale(scale, d)) + z).double().clamp(qmin, qmax)
        elif channels_last_contiguous(x):
            m = float32_reciprocal(d)
            inv = float32_reciprocal(float32_reciprocal(m))  # quantize_val(1.0f / m): 1.0f / (1.0f / m)
            out[here & vector] = vectorized_quantize(acc[here & vector], m, z, dtype).double()
            out[here & ~vector] = quantize_val(acc[here & ~vector], inv, z, dtype, zero_point_first)
        else:
            m = float32(1.0 / d)
            out[here] = torch.round(acc[here] * m + z).double().clamp(qmin, qmax)
    return _laid_out_as_torch(x, out.to(x.dtype), qnnpack)


def adaptive_avg_pool2d(
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    output_size: int | None | tuple[int | None, ...] | list[int | None],
    *,
    release: str | None = None,
    engine: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.nn.functional.adaptive_avg_pool2d`` (``nn.AdaptiveAvgPool2d``) on a quantized tensor.

    For a quantized tensor ``aten::adaptive_avg_pool2d`` calls ``aten::_adaptive_avg_pool2d``
    (``adaptive_avg_pool2d_quantized_cpu`` in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/AdaptiveAveragePooling.cpp).
    Output row ``i`` of ``O`` pools input rows ``floor(float(i * I) / O)`` to
    ``ceil(float((i + 1) * I) / O)`` (float32 quotients), columns alike; ``size`` is the window's
    element count. The output keeps the input's ``scale`` and ``zero_point``.

    * channels-last contiguous ``x`` (``_qadaptive_avg_pool_kernel`` in
      https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/kernels/QuantizedOpKernels.cpp,
      an AVX2 kernel on every x86 CPU): ``acc = sum(q) - zero_point * size`` in int32,
      ``m = 1.0f / size`` (the scales' ratio being 1), then FBGEMM's quantizer with scale
      ``1.0f / m``: the first ``C // 8 * 8`` channels its ``QuantizeAvx2`` (``quantize_vec``), the
      other ``C % 8`` its scalar ``Quantize``; torch 2.14 computes ``rint(acc * inv) + zero_point``,
      torch 2.13 ``rint(fma(acc, inv, zero_point))`` and ``rint(float32(float32(acc * inv) +
      zero_point))``, ``inv = 1.0f / (1.0f / m)``. The codes depend on the release.
    * any other ``x`` (``adaptive_avg_pool_single_out_frame``): ``rint(float(sum(q)) * r)`` with
      ``r = float32(float32(1.0f / kH) / kW)``, the window's height and width: codes averaged
      directly, no zero point, no release or CPU dependence.

    ``x``: uint8 or int8 codes of shape (N, C, H, W) or (C, H, W) with the quantized tensor's
    strides; ``output_size`` an int or a pair (None keeps that input size). ``release`` (None:
    the installed torch) and ``engine`` (None: ``torch.backends.quantized.engine``) choose the
    variant. On the ``"qnnpack"`` engine a quint8 tensor pooled to a size that divides its own (and
    is not it) runs QNNPACK's average pooling instead (``qnnpack_adaptive_avg_pool2d``), with
    windows and strides of ``(H / OH, W / OW)``: ``qlib.avg_pool2d`` says how it rounds; it takes
    4-d input only. The result is laid out as torch's (``qlib.max_pool2d`` says how).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.tensor([[[[10, 11], [12, 14]]]], dtype=torch.uint8)  # mean 11.75
    >>> adaptive_avg_pool2d(x, 0.1, 3, 1)
    tensor([[[[12]]]], dtype=torch.uint8)
    >>> ties = torch.tensor([[[[4, 5]]]], dtype=torch.uint8).contiguous(memory_format=torch.channels_last)
    >>> [adaptive_avg_pool2d(ties, 0.1, 1, 1, release=r).item() for r in ("2.13", "2.14")]  # acc 7 / 2 = 3.5
    [4, 5]
    """
    dtype = _pooling_codes(x, "adaptive_avg_pool2d")
    checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, *DTYPE_RANGES[dtype])
    oh, ow = _adaptive_output_size(output_size, x.shape[-2:])
    zero_point_first = torch_release(release) == "2.13"
    xb = x.unsqueeze(0) if x.dim() == 3 else x
    n, c, h, w = xb.shape
    if engine_name(engine) == "qnnpack" and dtype == torch.quint8 and (oh, ow) != (h, w) and h % oh == w % ow == 0:
        window = (h // oh, w // ow)
        return avg_pool2d(x, scale, z, window, window, 0, False, False, release=release, engine="qnnpack")
    hs, he = _adaptive_bounds(oh, h)
    ws, we = _adaptive_bounds(ow, w)
    kh, kw = (he - hs).view(-1, 1), (we - ws).view(1, -1)
    size = kh * kw
    sums = window_sums(xb, hs, he, ws, we)
    if not channels_last_contiguous(x):
        r = (torch.ones(1) / kh.float()) / kw.float()  # float32, kD = 1
        out = torch.round(sums.float() * r).clamp(*DTYPE_RANGES[dtype])
        return _laid_out_as_torch(x, out.to(x.dtype), False)
    acc = (sums - z * size).float()
    codes = torch.empty(acc.shape, dtype=torch.float64)
    vector = (torch.arange(c) < c // NHWC_QUANTIZE_LANES * NHWC_QUANTIZE_LANES).view(1, -1, 1, 1).expand(acc.shape)
    for elements in size.unique().tolist():
        here = (size == elements).expand(acc.shape)
        inv = float32_reciprocal(float32_reciprocal(float32_reciprocal(elements)))  # 1.0f / (1.0f / m)
        codes[here & vector] = quantize_vec(acc[here & vector], inv, z, dtype, zero_point_first).double()
        codes[here & ~vector] = quantize_val(acc[here & ~vector], inv, z, dtype, zero_point_first)
    return _laid_out_as_torch(x, codes.to(x.dtype), False)


def mean(
    x: torch.Tensor,
    scale: float,
    zero_point: int,
    dim: int | tuple[int, ...] | list[int] | None = None,
    keepdim: bool = False,
    *,
    release: str | None = None,
    engine: str | None = None,
) -> torch.Tensor:
    """The codes of ``torch.mean(q, dim, keepdim)`` on a quantized tensor (``aten::mean.dim``), bit for bit.

    The output keeps the input's ``scale`` and ``zero_point``. ``mean_out_quantized_cpu`` (in
    https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/ReduceOps.cpp)
    takes one of two paths:

    * ``x`` contiguous and ``dim`` its innermost dimensions (``qmean_inner_dim_kernel``):
      ``rint(float(sum(q)) / float(N))``, the codes' exact sum over the ``N`` reduced elements and
      one float32 division; no zero point, no release dependence.
    * otherwise (shufflenet's ``x.mean([2, 3])`` on a channels-last tensor): the input is
      dequantized (``scale * (q - zero_point)`` in float32, dense in its suggested layout),
      averaged by ``at::mean`` in float32 (a sum, then ``/ N``), and quantized again with
      ``torch.quantize_per_tensor``'s arithmetic (FBGEMM's ``QuantizeAvx2``: torch 2.14 adds the
      zero point after rounding, 2.13 before). For a channels-last (N, C, H, W) ``x`` reduced over
      (2, 3) the float sum is written out in ATen's order: ``cascade_sum``
      (https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/cpu/SumKernel.cpp, the
      AVX2 kernel on every x86 CPU) sums the H * W rows of channels ``[0, C // 32 * 32)`` with
      ``multi_row_sum`` (four float32 levels of partial sums) and the others with ``row_sum`` (four
      interleaved ``multi_row_sum``); with ``C < 8`` the split is ``C // 4 * 4``. Other layouts and
      dimensions take ``torch.mean`` of that float32 tensor: ATen's reduction itself, not written out.

    ``x``: uint8 or int8 codes with the quantized tensor's strides; ``dim`` an int or a sequence
    of them (None: every dimension). ``release`` (None: the installed torch) chooses the
    quantizer; ``engine`` (None: ``torch.backends.quantized.engine``): on ``"qnnpack"`` a quint8 4-d
    tensor reduced over ``dim`` given as exactly (2, 3) runs QNNPACK's global average pooling instead
    (``qnnpack_mean``): ``rint(float32(acc * m)) + zero_point``, saturated, with ``acc`` the codes'
    sum less ``H * W * zero_point`` and ``m`` ``qnnpack_pool_scale`` (in this module) of ``H * W``. The result is
    contiguous, or dense in the layout torch's ``at::mean`` gives the float result on the second path.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> x = torch.tensor([[[[1, 2], [4, 4]]]], dtype=torch.uint8)  # sum 11 over 4: 2.75
    >>> mean(x, 0.1, 0, (2, 3))
    tensor([[3]], dtype=torch.uint8)
    >>> rows = torch.tensor([[1, 1, 1], [2, 2, 2]], dtype=torch.uint8).t()  # rows [1, 2], not contiguous
    >>> [mean(rows, 1.0, 1, 1, release=r).tolist() for r in ("2.13", "2.14")]  # values 0 and 1: 0.5, a tie
    [[2, 2, 2], [1, 1, 1]]
    """
    dtype = eight_bit_codes(x, "x", "mean")
    s = checks.scale_value(scale)
    z = checks.zero_point_value(zero_point, *DTYPE_RANGES[dtype])
    dims = _mean_dims(dim, x.dim())
    keep = boolean(keepdim, "keepdim")
    zero_point_first = torch_release(release) == "2.13"
    given = [dim] if isinstance(dim, int) else list(dim) if dim is not None else None
    count = math.prod(x.shape[d] for d in dims)
    if engine_name(engine) == "qnnpack" and dtype == torch.quint8 and x.dim() == 4 and given == [2, 3]:
        acc = (x.long().sum((2, 3), keepdim=keep) - z * count).float()
        return (torch.round(acc * qnnpack_pool_scale(s, count)) + z).clamp(0, 255).to(x.dtype)
    if x.is_contiguous() and dims == list(range(x.dim() - len(dims), x.dim())):  # the innermost dimensions
        sums = x.long().sum(dim=dims, keepdim=keep) if dims else x.long().sum()
        return torch.round(sums.float() / float(count)).to(x.dtype)
    values = laid_out(per_tensor_values(x, float32(s), z), suggested_format(x))  # q.dequantize()
    if x.dim() == 4 and dims == [2, 3] and channels_last_contiguous(x):
        averages = channels_last_spatial_sum(values) / float(count)
        averages = averages.view(*averages.shape, 1, 1) if keep else averages
    else:
        averages = torch.mean(values, dim=dims, keepdim=keep)
    inv = float32_reciprocal(s)
    codes = quantize_vec(averages.contiguous(), inv, z, dtype, zero_point_first).to(x.dtype)
    return laid_out(codes.view(averages.shape), suggested_format(averages))


# ------------------------------------------------------------------------------------------------
# building blocks


def qnnpack_pool_scale(scale: float, elements: int) -> float:
    """The float32 multiplier of QNNPACK's average poolings: ``input_scale / (output_scale * (float)elements)``
    in float32, both scales ``float32(scale)``: not ``1 / elements`` when ``scale * elements`` rounds.

    >>> qnnpack_pool_scale(0.0473, 6) == float32_reciprocal(6)
    False
    """
    s = torch.tensor(scale, dtype=torch.float32)
    return (s / (s * float(elements))).item()


def window_sums(
    x: torch.Tensor, hs: torch.Tensor, he: torch.Tensor, ws: torch.Tensor, we: torch.Tensor
) -> torch.Tensor:
    """The exact sums of ``x`` (N, C, H, W) over the windows ``[hs[i], he[i]) x [ws[j], we[j])``, (N, C, OH, OW) int64.

    >>> window_sums(torch.ones(1, 1, 3, 3), torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([0]), torch.tensor([3]))
    tensor([[[[6],
              [6]]]])
    """
    n, c, h, w = x.shape
    prefix = torch.zeros((n, c, h + 1, w + 1), dtype=torch.int64)
    prefix[:, :, 1:, 1:] = x.long().cumsum(2).cumsum(3)
    hs, he, ws, we = hs.view(-1, 1), he.view(-1, 1), ws.view(1, -1), we.view(1, -1)
    return prefix[:, :, he, we] - prefix[:, :, hs, we] - prefix[:, :, he, ws] + prefix[:, :, hs, ws]


def channels_last_spatial_sum(values: torch.Tensor) -> torch.Tensor:
    """``at::sum(values, (2, 3))`` of a channels-last float32 (N, C, H, W) tensor, in ATen's order: (N, C).

    ``TensorIterator`` merges H and W into one reduced dimension of stride C; ``cascade_sum``
    (``aten/src/ATen/native/cpu/SumKernel.cpp``) then sums each channel over those ``H * W`` rows:
    with ``C >= 8`` (``vectorized_outer_sum``) channels ``[0, C // 32 * 32)`` four vectors at a time
    with ``multi_row_sum``, the others with ``row_sum``; with ``C < 8`` (``scalar_outer_sum``)
    channels ``[0, C // 4 * 4)`` with ``multi_row_sum``, the rest with ``row_sum``. Splitting the
    channels between threads (at multiples of 32) changes no channel's sum.

    >>> channels_last_spatial_sum(torch.ones(1, 2, 3, 3).contiguous(memory_format=torch.channels_last))
    tensor([[9., 9.]])
    """
    n, c, h, w = values.shape
    rows = values.reshape(n, c, h * w)
    out = torch.empty((n, c), dtype=torch.float32)
    blocked = c // SUM_BLOCK * SUM_BLOCK if c >= 8 else c // 4 * 4
    if blocked:
        out[:, :blocked] = _multi_row_sum(rows[:, :blocked])
    if blocked < c:
        out[:, blocked:] = _row_sum(rows[:, blocked:])
    return out


def _multi_row_sum(rows: torch.Tensor) -> torch.Tensor:
    """ATen's ``multi_row_sum`` along the last dimension: float32 partial sums on four levels.

    Level 0 takes ``2**p`` rows at a time (``p = max(4, ceil(log2 n) // 4)``), then carries into
    the next levels; the rows left over go into level 0, and the levels are added up at the end.
    """
    n = rows.shape[-1]
    levels = 4
    power = max(4, (n - 1).bit_length() // levels) if n > 0 else 4
    step, mask = 1 << power, (1 << power) - 1
    zero = torch.zeros(rows.shape[:-1], dtype=torch.float32)
    acc = [zero.clone() for _ in range(levels)]
    i = 0
    while i + step <= n:
        for _ in range(step):
            acc[0] = acc[0] + rows[..., i]
            i += 1
        for j in range(1, levels):
            acc[j] = acc[j] + acc[j - 1]
            acc[j - 1] = zero.clone()
            if i & (mask << (j * power)):
                break
    while i < n:
        acc[0] = acc[0] + rows[..., i]
        i += 1
    for j in range(1, levels):
        acc[0] = acc[0] + acc[j]
    return acc[0]


def _row_sum(rows: torch.Tensor) -> torch.Tensor:
    """ATen's ``row_sum``: four interleaved ``multi_row_sum`` partial sums, the leftover rows, then combined."""
    n = rows.shape[-1]
    quarter = n // 4
    parts = [_multi_row_sum(rows[..., k : quarter * 4 : 4]) for k in range(4)]
    for i in range(quarter * 4, n):
        parts[0] = parts[0] + rows[..., i]
    for k in range(1, 4):
        parts[0] = parts[0] + parts[k]
    return parts[0]


def _pooling_codes(x: object, op: str) -> torch.dtype:
    dtype = eight_bit_codes(x, "x", op)
    assert isinstance(x, torch.Tensor)  # eight_bit_codes raised otherwise
    if x.dim() not in (3, 4) or 0 in x.shape[-3:]:
        raise ValueError(
            f"x must be 3-d (C, H, W) or 4-d (N, C, H, W) with C, H and W above 0, as torch's quantized {op} "
            f"requires; got shape {tuple(x.shape)}"
        )
    return dtype


def _pool_pair(value: object, name: str, lowest: int) -> tuple[int, int]:
    """An int or a sequence of one or two ints, each at least ``lowest``, as (height, width)."""
    items = value if isinstance(value, (tuple, list)) else (value,)
    if len(items) == 1:
        items = (items[0], items[0])
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < lowest for v in items):
        raise ValueError(f"{name} must be an int >= {lowest} or a pair of them (height, width); got {value!r}")
    return items[0], items[1]


def _pool_window(
    kernel_size: object, stride: object, padding: object
) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
    kernel = _pool_pair(kernel_size, "kernel_size", 1)
    step = kernel if stride is None or stride in ((), []) else _pool_pair(stride, "stride", 1)
    pad = _pool_pair(padding, "padding", 0)
    if pad[0] > kernel[0] // 2 or pad[1] > kernel[1] // 2:
        raise ValueError(
            f"padding must be at most half the kernel size, as torch requires; got padding {padding!r} for "
            f"kernel_size {kernel_size!r}"
        )
    return kernel, step, pad


def _avg_pool_capability(capability: str | None) -> str:
    found = torch.backends.cpu.get_cpu_capability() if capability is None else capability
    if not isinstance(found, str) or found.upper() not in AVG_POOL_LANES:
        raise ValueError(
            f"capability must be one of {', '.join(map(repr, X86_CAPABILITIES))}, the x86 kernels qlib models "
            f"(None reads torch.backends.cpu.get_cpu_capability()); got {found!r}"
        )
    return found.upper()


def _runs_qnnpack(
    x: torch.Tensor, dtype: torch.dtype, engine: str | None, ceil_mode: bool, kernel: tuple[int, int], what: str
) -> bool:
    """Whether torch runs QNNPACK's pooling (the qnnpack engine, quint8, no ceil_mode), checking what it refuses."""
    if engine_name(engine) != "qnnpack" or dtype != torch.quint8 or ceil_mode:
        return False
    if x.dim() != 4:
        raise ValueError(f"torch's QNNPACK {what} takes 4-d input only (engine 'qnnpack'); got shape {tuple(x.shape)}")
    if kernel == (1, 1):
        raise ValueError(
            f"torch's QNNPACK {what} refuses a 1x1 window (engine 'qnnpack': '1x1 pooling is meaningless')"
        )
    return True


def _pooling_output_size(
    size: int, kernel: int, pad: int, stride: int, dilation: int, ceil_mode: bool, shape: object
) -> int:
    """ATen's ``pooling_output_shape`` (``aten/src/ATen/native/Pool.h``), which must be at least 1."""
    span = size + 2 * pad - dilation * (kernel - 1) - 1 + (stride - 1 if ceil_mode else 0)
    out = span // stride + 1
    if ceil_mode and (out - 1) * stride >= size + pad:
        out -= 1
    if out < 1:
        raise ValueError(f"the input of shape {shape} is too small for this window: the output would have no rows")
    return out


def _avg_pool_bounds(count: int, stride: int, pad: int, kernel: int, size: int) -> tuple[torch.Tensor, ...]:
    """avg_pool2d's windows along one dimension: start and end clipped to the input, extent in the padded input."""
    start = torch.arange(count) * stride - pad
    end = torch.clamp(start + kernel, max=size + pad)
    return start.clamp(min=0), end.clamp(max=size), end - start


def _adaptive_bounds(count: int, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``start_index`` and ``end_index``: floor and ceil of float32 quotients."""
    o = torch.arange(count)
    start = torch.floor((o * size).float() / float(count)).long()
    end = torch.ceil(((o + 1) * size).float() / float(count)).long()
    return start, end


def _adaptive_output_size(output_size: object, sizes: torch.Size) -> tuple[int, int]:
    items = output_size if isinstance(output_size, (tuple, list)) else (output_size,)
    items = (items[0], items[0]) if len(items) == 1 else items
    resolved = [size if v is None else v for v, size in zip(items, sizes, strict=False)]
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in resolved):
        raise ValueError(
            f"output_size must be an int >= 1, None, or a pair of them (height, width); got {output_size!r}"
        )
    return resolved[0], resolved[1]


def _mean_dims(dim: object, ndim: int) -> list[int]:
    if dim is None:
        return list(range(ndim))
    items = [dim] if isinstance(dim, int) and not isinstance(dim, bool) else dim
    if not isinstance(items, (tuple, list)) or any(isinstance(d, bool) or not isinstance(d, int) for d in items):
        raise TypeError(f"dim must be an int, a sequence of ints or None; got {dim!r}")
    if any(not -ndim <= d < ndim for d in items):
        raise ValueError(f"dim must lie in [{-ndim}, {ndim - 1}] for a {ndim}-d tensor; got {dim!r}")
    wrapped = sorted(d % ndim for d in items)
    if len(set(wrapped)) != len(wrapped):
        raise ValueError(f"dim must name each dimension once; got {dim!r}")
    return wrapped if items else list(range(ndim))


def _laid_out_as_torch(x: torch.Tensor, out: torch.Tensor, qnnpack: bool) -> torch.Tensor:
    """A pooling's codes ``out`` (N, C, OH, OW) in the layout torch gives them for input ``x``."""
    if x.dim() == 3:
        return out.squeeze(0).contiguous()
    if qnnpack:  # QNNPACK writes a channels-last tensor; torch keeps it if it is contiguous in x's suggested layout
        nhwc, layout = laid_out(out, torch.channels_last), suggested_format(x)
        return nhwc if nhwc.is_contiguous(memory_format=layout) else laid_out(out, layout)
    if channels_last_contiguous(x):
        return nhwc_into_suggested(x, out)
    return out.contiguous()


# ------------------------------------------------------------------------------------------------
# the operator table


def _codes_and_qparams(q: torch.Tensor) -> tuple[torch.Tensor, float, int]:
    return strided_codes(q), q.q_scale(), q.q_zero_point()


@register(
    "aten::quantized_max_pool2d",
    "quantized::max_pool2d",
    function="qlib.max_pool2d",
    modules=("torch.nn.MaxPool2d", "torch.ao.nn.quantized.MaxPool2d", "torch.nn.functional.max_pool2d"),
)
def _max_pool2d_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    names = ("self", "kernel_size", "stride", "padding", "dilation", "ceil_mode")
    q, kernel_size, stride, padding, dilation, ceil_mode = call_arguments(args, kwargs, names, ([], 0, 1, False))
    codes = max_pool2d(strided_codes(q), kernel_size, stride or None, padding, dilation, ceil_mode)
    return quantized(codes, q.q_scale(), q.q_zero_point(), q.dtype)


@register(
    "aten::avg_pool2d",
    function="qlib.avg_pool2d",
    modules=("torch.nn.AvgPool2d", "torch.nn.functional.avg_pool2d"),
)
def _avg_pool2d_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    names = ("self", "kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override")
    q, kernel, stride, padding, ceil, with_padding, divisor = call_arguments(
        args, kwargs, names, ([], 0, False, True, None)
    )
    codes, scale, zero_point = _codes_and_qparams(q)
    pooled = avg_pool2d(
        codes, scale, zero_point, kernel, stride or None, padding, ceil, with_padding, divisor, release=settings.release
    )
    return quantized(pooled, scale, zero_point, q.dtype)


@register(
    "aten::_adaptive_avg_pool2d",
    function="qlib.adaptive_avg_pool2d",
    modules=("torch.nn.AdaptiveAvgPool2d", "torch.nn.functional.adaptive_avg_pool2d"),
)
def _adaptive_avg_pool2d_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q, output_size = call_arguments(args, kwargs, ("self", "output_size"))
    codes, scale, zero_point = _codes_and_qparams(q)
    pooled = adaptive_avg_pool2d(codes, scale, zero_point, output_size, release=settings.release)
    return quantized(pooled, scale, zero_point, q.dtype)


@register("aten::mean", function="qlib.mean", modules=("torch.mean", "torch.Tensor.mean"))
def _mean_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    q, dim, keepdim = call_arguments(args, kwargs, ("self", "dim", "keepdim"), (None, False))
    if kwargs.get("dtype") not in (None, q.dtype):
        raise ValueError("qlib models torch.mean of a quantized tensor without a dtype argument")
    codes, scale, zero_point = _codes_and_qparams(q)
    averaged = mean(codes, scale, zero_point, dim, keepdim, release=settings.release)
    return quantized(averaged, scale, zero_point, q.dtype)
