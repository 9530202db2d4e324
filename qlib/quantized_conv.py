"""A quantized Conv2d, integer by integer, as PyTorch's ``x86``, ``fbgemm`` and ``onednn`` engines compute it.

The arithmetic it shares with a Linear is explained in "Inside a quantized Linear" (``book/09_linear``).

``torch.ao.nn.quantized.Conv2d`` (and ``ConvReLU2d``) call ``quantized::conv2d``, which on the
``fbgemm`` engine (and on ``x86``, unless oneDNN takes it, below) runs
``PackedConvWeight<2>::apply_impl`` (PyTorch's ``aten/src/ATen/native/quantized/cpu/qconv.cpp``):
FBGEMM's ``fbgemmConv`` (``src/FbgemmConv.cc``) on the activations in NHWC order. Its
``ConvFastPath`` picks one of four kernels; each sums raw codes in int32, and on CPUs without
AVX512-VNNI some of them add pairs of u8·s8 products in saturating int16 (``vpmaddubsw``):

- depthwise (``takeDepthWiseFastPath``): ``groups == in_channels``, ``out_channels`` equal to
  ``groups`` or twice it, ``groups`` a multiple of 8, a square 3x3, 5x5 or 7x7 kernel, strides 1
  or 2, dilation 1, padding ``(k - 1) / 2``. A JIT AVX2 kernel (``src/GenerateI8Depthwise.cc``)
  adds the taps in pairs, in row-major order (the last one of an odd count with zero), with
  ``vpmaddubsw``: pairs saturate on every CPU, with VNNI or without. Its requantization
  (``requantize_`` in ``src/FbgemmI8DepthwiseAvx2-inl.h``) adds a per-tensor bias
  ``bias * float32(1 / ats)`` to ``raw`` with one rounding (an FMA) in torch 2.13 and with two in
  torch 2.14 (the same source, compiled otherwise: ``depthwise_2d_`` in the 2.13.0+cpu wheel's
  ``libtorch_cpu.so`` has ``vfmadd``, the 2.14.1 PyPI wheel's (CUDA 13.0) ``vmulps`` and ``vaddps``).
- groupwise (``fbgemmOptimizedGConv`` in ``src/Fbgemm.cc``): as many input as output channels per
  group, 2, 4, 8 or 16 of them, a 3x3 kernel, padding 1, dilation 1, strides (1, 1) or (2, 2), and
  ``groups >= G_together = max(1, W // out_per_group // max(in_per_group, 4))``, W = 64 on CPUs with
  AVX-512, 32 on AVX2 ones: groups = 1 with 8 or 16 channels in and out takes it too. Its JIT
  kernels (``src/GroupwiseConv*.cc``) pair the channels ``(c, c + 1)`` of one tap; the kernel
  is chosen by the CPU (cpuinfo), not by ``FBGEMM_ENABLE_INSTRUCTIONS``, so pairs saturate iff the
  CPU has no AVX512-VNNI. When ``groups`` is not a multiple of ``G_together`` torch 2.13 and 2.14
  give wrong codes for the first groups or corrupt the heap and abort (measured): qlib raises.
- pointwise (1x1, stride 1, no padding, dilation 1): the GEMM of ``qlib.linear`` per group.
- im2col (every other convolution): ``PackAWithIm2Col`` (``src/PackAWithIm2Col.cc``) lays out each
  output position's receptive field per group as ``(kh, kw, c)``, c fastest, positions in the
  padding holding the input zero point, K padded with zeros to whole pairs; then the GEMM of
  ``qlib.linear``, whose pairs saturate iff FBGEMM runs its AVX2 or AVX-512 kernels.

Then, per group of K = ``kh * kw * in_channels / groups`` columns, the zero-point corrections
``raw = acc - x_zero_point * (sum w - w_zero_point * K) - w_zero_point * sum x`` (``sum x``
includes the padding's zero points) and the float32 requantization of ``qlib.linear``.

On Linux the ``x86`` engine sends the convolution to oneDNN instead when the CPU has AVX512-VNNI
(cpuinfo's view: ``ONEDNN_MAX_CPU_ISA`` does not change it), the weights are symmetric and
``groups <= 100`` (``should_use_onednn_quant`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/OnednnUtils.h,
decided when the weight is packed); the ``onednn`` engine always does, and refuses asymmetric
weights. oneDNN sums ``(x - x_zero_point) * w`` over the taps inside the image, exactly on CPUs
with VNNI, and requantizes in float32 otherwise than FBGEMM: the zero point is added before
rounding, the scales are multiplied in an order of the kernel's own, and kernels without VNNI
saturate pairs of products of the raw codes. The kernel, and with it the arithmetic, follows the
shape and the ISA oneDNN uses (``qlib.onednn`` has the rules). qlib computes the sums with the same
im2col and integer products as FBGEMM's (the padding then holds 0, which oneDNN's kernels skip,
and an odd channel count a group gets a zero channel, so that pairs stay within one tap) and
oneDNN's requantization from ``qlib.onednn``. torch 2.13's and 2.14's oneDNN crash (a
segmentation fault) on some convolutions whose every output column lies in the padding (1x1,
stride 2, padding 1, dilation 2 on an image 1 wide, say; measured on the ``avx512_core_vnni``
kernels): qlib gives the codes oneDNN's arithmetic gives there, which no torch could confirm.

The same arithmetic in torch 2.13 and 2.14 but for that depthwise bias (measured on the 2.13.0+cpu
and 2.14.1 wheels; whether the rounding follows the release or the wheel's build is not known).
"""

from __future__ import annotations

import sys

import torch

from qlib import checks
from qlib.numerics import INT16_MAX, INT16_MIN, wrap_int32
from qlib.onednn import (
    OnednnArithmetic,
    onednn_accumulators,
    onednn_conv_arithmetic,
    onednn_conv_kernel,
    onednn_isa_for,
    onednn_requantize,
)
from qlib.quantized_linear import (
    checked_bias,
    int_matmul,
    pairs_saturate_here,
    requantize,
    round_to_codes,
    weight_of,
    weight_qparams,
)
from qlib.registry import Settings, packed_backend, quantized, register
from qlib.releases import torch_release

CONV_ENGINES = ("x86", "fbgemm", "onednn")  # the quantized engines whose Conv2d qlib reproduces
ONEDNN_MAX_GROUPS = 100  # should_use_onednn_quant: oneDNN only up to this many groups
ONEDNN_ASYMMETRIC = (
    "the onednn engine refuses weights whose zero point is not 0: torch's quantized::conv2d_prepack raises "
    "'ONEDNN only supports symmetric quantization of weight, whose zero point must be 0' (the x86 engine sends "
    "them to FBGEMM)"
)


def conv2d_kernel(
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    symmetric: bool,
    *,
    engine: str | None = None,
    pairs_saturate: bool | None = None,
    isa: str | None = None,
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
) -> str:
    """Which kernel torch runs a quantized Conv2d on: FBGEMM's ``"depthwise"``, ``"groupwise"``,
    ``"pointwise"`` or ``"im2col"``, or ``"oneDNN "`` and oneDNN's kernel as ``ONEDNN_VERBOSE`` names it.

    ``symmetric``: every weight zero point is 0. ``engine``,
    ``pairs_saturate`` and ``isa`` are :func:`conv2d`'s. ``"groupwise
    (broken)"`` names the groupwise kernel on a number of groups it gets wrong
    (see the module docstring). ``input_size`` (H, W) and ``batch`` matter
    for one choice of oneDNN's, on tiny outputs with one input channel a group
    (``qlib.onednn.onednn_conv_kernel``).

    Chapter: "A whole model, integer by integer" (book/10_model); the arithmetic is the Linear's (book/09_linear).

    >>> conv2d_kernel(32, 32, (3, 3), (1, 1), (1, 1), (1, 1), 32, False, engine="fbgemm")
    'depthwise'
    >>> conv2d_kernel(3, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, engine="x86", pairs_saturate=True)
    'im2col'
    >>> conv2d_kernel(3, 8, (3, 3), (1, 1), (1, 1), (1, 1), 1, True, engine="x86", pairs_saturate=False)
    'oneDNN brg_conv_fwd:avx512_core_vnni'
    """
    engine = _engine(engine)
    _, vnni, avx512 = _cpu(pairs_saturate)
    g = groups
    if isa is not None and engine == "fbgemm":
        raise ValueError(f"isa chooses oneDNN's kernels, and the fbgemm engine never runs oneDNN; got isa={isa!r}")
    on_x86 = engine == "x86" and sys.platform.startswith("linux") and vnni and symmetric and g <= ONEDNN_MAX_GROUPS
    if engine == "onednn" or on_x86:
        if not symmetric:
            raise ValueError(ONEDNN_ASYMMETRIC)
        family = onednn_isa_for(isa, pairs_saturate)
        shape = (in_channels, out_channels, kernel_size, stride, padding, dilation, groups)
        return "oneDNN " + onednn_conv_kernel(*shape, family, input_size, batch)
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    in_g, out_g = in_channels // g, out_channels // g
    no_dilation = dh == dw == 1
    if (
        g == in_channels
        and out_channels in (g, 2 * g)
        and g % 8 == 0
        and sh in (1, 2)
        and sw in (1, 2)
        and kh == kw in (3, 5, 7)
        and no_dilation
        and ph == pw == (kh - 1) // 2
    ):
        return "depthwise"
    together = max(1, (64 if avx512 else 32) // out_g // max(in_g, 4))
    if (
        in_g == out_g in (2, 4, 8, 16)
        and g >= together
        and kh == kw == 3
        and ph == pw == 1
        and no_dilation
        and sh == sw in (1, 2)
    ):
        return "groupwise" if g % together == 0 else "groupwise (broken)"
    if kh == kw == sh == sw == 1 and ph == pw == 0 and no_dilation:
        return "pointwise"
    return "im2col"


def conv2d(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    weight_zero_point: int | torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    relu: bool = False,
    *,
    pairs_saturate: bool | None = None,
    engine: str | None = None,
    release: str | None = None,
    isa: str | None = None,
) -> torch.Tensor:
    """The uint8 codes of a quantized Conv2d, bit for bit as torch's ``x86``, ``fbgemm`` or ``onednn`` engine.

    Equals ``torch.ao.nn.quantized.Conv2d`` (``relu=True``:
    ``torch.ao.nn.intrinsic.quantized.ConvReLU2d``, zero padding) applied to
    the quint8 tensor with codes ``x`` ``[N, C, H, W]``, scale ``x_scale`` and
    zero point ``x_zero_point``, with int8 weight codes ``weight``
    ``[O, C / groups, kh, kw]`` quantized per tensor (``weight_scale``,
    ``weight_zero_point`` numbers) or per output channel (1-d tensors of
    length O), a float32 ``bias`` ``[O]`` or None, output ``scale`` and
    ``zero_point``: its ``int_repr()``, ``[N, O, H_out, W_out]``. ``stride``,
    ``padding`` and ``dilation`` are ints or (height, width) pairs.

    ``pairs_saturate`` chooses the CPU: None the one torch runs on, True a CPU
    without AVX-512 (AVX2 only), False one with AVX512-VNNI. ``engine`` is
    ``torch.backends.quantized.engine`` when the module's weight was set:
    None reads it; ``"x86"``, ``"fbgemm"`` or ``"onednn"``. The ``x86``
    engine runs the convolution on oneDNN on Linux CPUs with AVX512-VNNI when
    the weights are symmetric and ``groups <= 100``, else on FBGEMM, as
    ``fbgemm`` always does; ``onednn`` always on oneDNN, and refuses asymmetric
    weights (see the module docstring). ``isa`` chooses oneDNN's kernels: None
    those of this process (the CPU, capped by ``ONEDNN_MAX_CPU_ISA``), or of
    the CPU ``pairs_saturate`` names (``"avx2"`` for True,
    ``"avx512_core_vnni"`` for False); or one of ``"amx"`` (measured on a
    Xeon in an earlier note only), ``"avx512_core_vnni"``, ``"avx512_core"``,
    ``"avx2_vnni"``, ``"avx2"`` and ``"sse41"``, as ``ONEDNN_MAX_CPU_ISA`` or
    another CPU would make it. :func:`conv2d_kernel` says which kernel runs.
    The groupwise kernel's wrong group counts raise ``ValueError``.
    ``release`` (None: the installed torch's) matters for one rounding only,
    the depthwise kernel's per-tensor bias.

    Chapter: "A whole model, integer by integer" (book/10_model); the arithmetic is the Linear's (book/09_linear).

    >>> x = torch.tensor([[[[130, 140], [120, 255]]]], dtype=torch.uint8)
    >>> w = torch.tensor([[[[10, -20], [30, 40]]]], dtype=torch.int8)
    >>> conv2d(x, 0.1, 128, w, 0.05, 3, torch.tensor([0.5]), 0.2, 100, padding=1, engine="fbgemm")
    tensor([[[[104, 115, 111],
              [ 94, 208, 190],
              [107,  28, 125]]]], dtype=torch.uint8)
    >>> conv2d(x, 0.1, 128, w, 0.05, 0, torch.tensor([0.5]), 0.2, 100, padding=1, engine="onednn")
    tensor([[[[104, 116, 112],
              [ 94, 218, 201],
              [106,  37, 134]]]], dtype=torch.uint8)
    """
    release = torch_release(release)
    engine = _engine(engine)
    x = checks.code_tensor(x, "x", torch.uint8, "quint8 activations")
    weight = checks.code_tensor(weight, "weight", torch.int8, "qint8 weights")
    if x.dim() != 4:
        raise ValueError(
            f"x must have 4 dimensions [N, C, H, W], as a quantized Conv2d requires (qlib models 2-d convolution "
            f"only); got {x.dim()}"
        )
    if weight.dim() != 4:
        raise ValueError(f"weight must have 4 dimensions [O, C / groups, kh, kw]; got {weight.dim()}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"groups must be a positive int; got {groups!r}")
    n_out, in_g, kh, kw = weight.shape
    n, c, h, w = x.shape
    if n_out % groups or n_out == 0 or in_g * groups != c:
        raise ValueError(
            f"weight {tuple(weight.shape)} with groups={groups} needs out channels a positive multiple of groups "
            f"and x with C = weight.shape[1] * groups = {in_g * groups} channels; x has shape {tuple(x.shape)}"
        )
    stride, padding, dilation = (
        _pair(v, name, lo)
        for v, name, lo in ((stride, "stride", 1), (padding, "padding", 0), (dilation, "dilation", 1))
    )
    h_out = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    w_out = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if h_out < 1 or w_out < 1 or kh < 1 or kw < 1:
        raise ValueError(
            f"the output would have no positions: {h}x{w} input, {kh}x{kw} kernel, stride {stride}, padding "
            f"{padding}, dilation {dilation} give {h_out}x{w_out}"
        )
    if not isinstance(relu, bool):
        raise TypeError(f"relu must be True or False; got {type(relu).__name__}")
    sx = checks.scale_value(x_scale, "x_scale")
    zx = checks.zero_point_value(x_zero_point, 0, 255, "x_zero_point")
    s = checks.scale_value(scale, "scale")
    z = checks.zero_point_value(zero_point, 0, 255, "zero_point")
    per_channel, sw, zw = weight_qparams(weight_scale, weight_zero_point, n_out)
    sw = sw.float()
    bias = checked_bias(bias, n_out)

    symmetric = bool((zw == 0).all())
    kernel = conv2d_kernel(
        c, n_out, (kh, kw), stride, padding, dilation, groups, symmetric, engine=engine,
        pairs_saturate=pairs_saturate, isa=isa, input_size=(h, w), batch=n,
    )  # fmt: skip
    if kernel.startswith("oneDNN "):
        shape = (c, n_out, (kh, kw), stride, padding, dilation, groups)
        arithmetic = onednn_conv_arithmetic(kernel.removeprefix("oneDNN "), *shape, (h, w))
        acc = _onednn_sums(x, zx, weight, (kh, kw), stride, padding, dilation, groups, arithmetic)
        codes = onednn_requantize(acc.reshape(n, h_out, w_out, n_out), sx, sw, bias, s, z, relu, arithmetic)
        return codes.permute(0, 3, 1, 2).contiguous()
    if kernel == "groupwise (broken)":
        raise ValueError(
            f"torch runs this Conv on FBGEMM's groupwise kernel, which handles {groups} groups of {in_g} channels "
            "wrongly on this kind of CPU (groups must be a multiple of the groups it computes together): torch "
            "2.13 and 2.14 give wrong codes or corrupt memory, so there is nothing to reproduce"
        )
    gemm_saturates, vnni, _ = _cpu(pairs_saturate)
    saturate = {"depthwise": True, "groupwise": not vnni}.get(kernel, gemm_saturates)

    rows = _im2col(x, zx, (kh, kw), stride, padding, dilation, groups)  # [groups, positions, K]
    k = rows.shape[-1]
    w_rows = weight.permute(0, 2, 3, 1).reshape(groups, n_out // groups, k)  # K ordered (kh, kw, c)
    zw_g = zw.view(groups, -1)
    acc = _grouped_int_matmul(rows, w_rows, saturate)  # [groups, positions, outputs per group]
    column_sums = w_rows.long().sum(2) - zw_g * k  # [groups, outputs per group]
    row_sums = rows.long().sum(2)  # [groups, positions]
    raw = acc - zx * column_sums[:, None, :] - row_sums[:, :, None] * zw_g[:, None, :]
    raw = raw.permute(1, 0, 2).reshape(rows.shape[1], n_out)  # outputs in group order
    raw = wrap_int32(raw)  # int32 arithmetic wraps around
    if kernel == "depthwise" and bias is not None and not per_channel and release == "2.14":
        # requantize_ in FbgemmI8DepthwiseAvx2-inl.h, as torch 2.14 compiled it: bias * float32(1 / ats), rounded, added
        ats = torch.tensor(sx, dtype=torch.float32) * sw
        rcp = torch.tensor(1.0 / float(ats[0].double()), dtype=torch.float32)
        v = raw.float() + bias[None, :] * rcp
        codes = round_to_codes(v, ats / torch.tensor(s, dtype=torch.float32), z, relu)
    else:
        codes = requantize(raw, sx, sw, bias, s, z, relu, per_channel)
    return codes.view(n, h_out, w_out, n_out).permute(0, 3, 1, 2).contiguous()


def _onednn_sums(
    x: torch.Tensor,
    x_zero_point: int,
    weight: torch.Tensor,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    arithmetic: OnednnArithmetic,
) -> torch.Tensor:
    """The float32 sums oneDNN's kernel scales, ``[N, H_out, W_out, O]`` or ``[N * H_out * W_out, O]`` (``qlib.onednn``)."""
    n_out, in_g = weight.shape[:2]
    conv = (stride, padding, dilation, groups)
    if arithmetic.pairs == "none":  # exact sums: float32 convolutions, as long as they are exact (_exact_conv)
        if arithmetic.compensation == "int":
            exact = _exact_conv(x.float() - x_zero_point, weight, *conv)
            if exact is not None:
                return exact.float().permute(0, 2, 3, 1)  # f32(acc), rounded once; |acc| < 2**31: no wrap
        else:
            raw = _exact_conv(x.float(), weight, *conv)
            in_bound = _exact_conv(torch.ones_like(x, dtype=torch.float32), weight, *conv)
            if raw is not None and in_bound is not None:  # sum w over each position's taps inside the image
                raw_sums, weight_sums = (t.long().permute(0, 2, 3, 1) for t in (raw, in_bound))
                return onednn_accumulators(raw_sums, weight_sums, x_zero_point, arithmetic.compensation)
    shape = (kernel_size, stride, padding, dilation, groups)
    w_rows = weight.permute(0, 2, 3, 1).reshape(groups, n_out // groups, -1)  # K ordered (kh, kw, c)
    rows = _im2col(x, 0, *shape)  # raw codes; oneDNN's kernels skip the padding, which adds 0 here
    if any(padding):  # sum w over each position's taps inside the image
        weight_sums = _by_channel(_grouped_int_matmul(_im2col(torch.ones_like(x), 0, *shape), w_rows, False))
    else:
        weight_sums = w_rows.long().sum(2).view(1, n_out)
    rows, w_rows = (_onednn_pair_order(t, arithmetic.pairs, kernel_size, in_g) for t in (rows, w_rows))
    raw = _grouped_int_matmul(rows, w_rows, arithmetic.pairs != "none")
    acc = onednn_accumulators(_by_channel(raw), weight_sums, x_zero_point, arithmetic.compensation)
    return acc  # [N * H_out * W_out, O]


def _exact_conv(
    values: torch.Tensor,
    weight: torch.Tensor,
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor | None:
    """The exact integer sums ``conv2d(values, weight)`` (zero padding) of whole-number float32 ``values``
    (``|values| <= 255``), by float32 convolutions: float32 when one suffices, else float64; None beyond.

    A float32 sum of integers is exact, in any order and with or without fused multiply-adds, while
    every partial sum stays below 2**24: one convolution when ``K * max|values| * max|w|`` does, else
    ``values = 16 * hi + lo`` (``|hi| <= 16``, ``0 <= lo < 16``) in two, added in float64. NNPACK's
    fast algorithms (Winograd, FFT) round otherwise, so they are turned off.
    """
    wf = weight.float()
    k = weight[0].numel()
    largest = max(1.0, float(values.abs().max())) * max(1, int(wf.abs().max()))
    with torch.backends.nnpack.flags(enabled=False):
        if k * largest < 2**24:
            return torch.nn.functional.conv2d(values, wf, None, stride, padding, dilation, groups)
        if k * 16 * 128 >= 2**24:
            return None
        hi = torch.floor(values / 16)
        lo = values - 16 * hi
        parts = [torch.nn.functional.conv2d(v, wf, None, stride, padding, dilation, groups) for v in (hi, lo)]
        return parts[0].double().mul_(16).add_(parts[1])


def _onednn_pair_order(t: torch.Tensor, pairs: str, kernel_size: tuple[int, int], in_g: int) -> torch.Tensor:
    """Im2col rows or weights ``[G, *, kh * kw * C/G]`` reordered so that oneDNN's pairs are ``(k, k + 1)``, k even.

    ``"channels"``: a zero channel after an odd number of them at each tap;
    ``"taps kw-major"``: the taps (one channel) in kw-major order; ``"taps by
    row"``: a zero tap after an odd number of them in each kernel row.
    """
    kh, kw = kernel_size
    if pairs == "channels" and in_g % 2:
        return torch.nn.functional.pad(t.unflatten(2, (kh * kw, in_g)), (0, 1)).flatten(2)
    if pairs == "taps kw-major":
        return t.unflatten(2, (kh, kw)).transpose(2, 3).flatten(2)
    if pairs == "taps by row" and kw % 2:
        return torch.nn.functional.pad(t.unflatten(2, (kh, kw)), (0, 1)).flatten(2)
    return t


def _by_channel(sums: torch.Tensor) -> torch.Tensor:
    """``[G, P, O/G]`` -> ``[P, O]``, the outputs in group order."""
    return sums.permute(1, 0, 2).reshape(sums.shape[1], -1)


def _grouped_int_matmul(rows: torch.Tensor, weights: torch.Tensor, saturate: bool) -> torch.Tensor:
    """``int_matmul`` for every group at once: ``rows`` ``[G, P, K]``, ``weights`` ``[G, N, K]`` -> int64 ``[G, P, N]``.

    For short K (depthwise and most grouped layers) one batched float32 product of pair sums,
    exact because every partial sum stays below 2**24; otherwise ``int_matmul`` group by group.
    """
    groups, _, k = rows.shape
    if groups == 1 or k * 255 * 128 >= 2**24:
        return torch.stack([int_matmul(rows[g], weights[g], saturate) for g in range(groups)])
    if k % 2:  # pairs (k, k + 1), k even, as FBGEMM pads K with a zero
        rows = torch.nn.functional.pad(rows, (0, 1))
        weights = torch.nn.functional.pad(weights, (0, 1))
    r = rows.float().unflatten(2, (-1, 2))  # [G, P, pairs, 2]
    w = weights.float().unflatten(2, (-1, 2))  # [G, N, pairs, 2]
    pairs = torch.einsum("gpti,gnti->gpnt", r, w)  # each pair's x0*w0 + x1*w1, exact in float32
    if saturate:
        pairs = pairs.clamp(INT16_MIN, INT16_MAX)
    return pairs.sum(3).long()


def _engine(engine: str | None) -> str:
    if engine is None:
        engine = torch.backends.quantized.engine
    if engine not in CONV_ENGINES:
        raise ValueError(
            f"engine must be one of {', '.join(map(repr, CONV_ENGINES))} (the quantized engines whose Conv2d "
            f"qlib reproduces; None reads torch.backends.quantized.engine); got {engine!r}"
        )
    return engine


def _cpu(pairs_saturate: bool | None) -> tuple[bool, bool, bool]:
    """(FBGEMM's GEMM saturates pairs, the CPU has AVX512-VNNI, the CPU has AVX-512) for ``pairs_saturate``."""
    if pairs_saturate is not None and not isinstance(pairs_saturate, bool):
        raise TypeError(f"pairs_saturate must be None, True or False; got {type(pairs_saturate).__name__}")
    if pairs_saturate is None:  # this CPU, as cpuinfo sees it; the GEMM's kernels may be forced down
        return pairs_saturate_here(), torch.cpu._is_vnni_supported(), torch.cpu._is_avx512_supported()
    return pairs_saturate, not pairs_saturate, not pairs_saturate


def _pair(value: object, name: str, lowest: int) -> tuple[int, int]:
    items = (value, value) if not isinstance(value, (tuple, list)) else tuple(value)
    if len(items) != 2 or any(isinstance(v, bool) or not isinstance(v, int) or v < lowest for v in items):
        raise ValueError(f"{name} must be an int >= {lowest} or a pair of them (height, width); got {value!r}")
    return items


def _im2col(
    x: torch.Tensor,
    x_zero_point: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
) -> torch.Tensor:
    """uint8 ``[groups, N * H_out * W_out, kh * kw * C / groups]``: each output position's inputs, (kh, kw, c) order.

    The padding holds the input zero point, as FBGEMM's im2col fills it.
    """
    n, c, h, w = x.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = kernel_size, stride, padding, dilation
    h_out, w_out = (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    padded = torch.full((n, c, h + 2 * ph, w + 2 * pw), x_zero_point, dtype=torch.uint8)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    taps = [
        padded[:, :, i * dh : i * dh + sh * (h_out - 1) + 1 : sh, j * dw : j * dw + sw * (w_out - 1) + 1 : sw]
        for i in range(kh)
        for j in range(kw)
    ]
    cols = torch.stack(taps, 2).view(n, groups, c // groups, kh * kw, h_out, w_out)
    return cols.permute(1, 0, 4, 5, 3, 2).reshape(groups, n * h_out * w_out, kh * kw * (c // groups))


def _conv2d_call(args: tuple, settings: Settings, relu: bool) -> torch.Tensor:
    if len(args) != 4:
        raise ValueError("qlib models quantized::conv2d.new (a Conv2d module's call), not the old overload")
    x, packed, scale, zero_point = args
    if packed.transpose():
        raise ValueError("qlib does not model transposed convolutions (ConvTranspose2d)")
    backend = packed_backend(packed)  # torch runs the op there, whatever the engine is now
    if backend == "qnnpack":
        raise ValueError(
            "this Conv2d's weight was packed for qnnpack (torch runs it there whatever the engine is now); qlib "
            "models the convolutions of FBGEMM and oneDNN: set torch.backends.quantized.engine = 'x86', 'fbgemm' or "
            "'onednn' before prepare and convert, and convert again"
        )
    weight, weight_scale, weight_zero_point, bias = weight_of(packed)
    codes = conv2d(
        x.int_repr(), x.q_scale(), x.q_zero_point(), weight, weight_scale, weight_zero_point, bias, scale,
        zero_point, stride=tuple(packed.stride()), padding=tuple(packed.padding()),
        dilation=tuple(packed.dilation()), groups=packed.groups(), relu=relu,
        pairs_saturate=settings.pairs_saturate, engine=backend, release=settings.release,
    )  # fmt: skip
    return quantized(codes, scale, zero_point, torch.quint8)


@register("quantized::conv2d", function="qlib.conv2d", modules=("torch.ao.nn.quantized.Conv2d",))
def _conv2d_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _conv2d_call(args, settings, relu=False)


@register("quantized::conv2d_relu", function="qlib.conv2d", modules=("torch.ao.nn.intrinsic.quantized.ConvReLU2d",))
def _conv2d_relu_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    return _conv2d_call(args, settings, relu=True)
