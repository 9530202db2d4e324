"""ONNX Runtime's integer convolutions and ``QLinearAdd``, integer by integer, as its CPU provider computes them on x86.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``).

``QLinearConv`` (and ``com.microsoft.QLinearConv``, its channels-last twin that ORT's layout
optimizer writes) and ``ConvInteger`` run MLAS on the raw codes (``qlinearconv.cc``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/providers/cpu/quantization/qlinearconv.cc).
Measured against onnxruntime 1.32.0 (``tests/test_onnx_conv.py``), with the sources:

1. The input is laid out channels last and unfolded (im2col), padded with the input's zero point:
   the reduction index of each output is ``(kernel position, input channel)``, channels fastest,
   within a group. Three kernels share it. A depthwise convolution (one input and one output
   channel per group) runs ``MlasConvDepthwise`` or, for int8 weights with zero point 0,
   ``MlasConvSymDepthwise``, which widen every code to 32 bits before multiplying
   (``vpmovzxbd``/``vpmovsxbd`` then ``vpmaddwd``, ``ConvSymKernelAvx2.S``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/x86_64/ConvSymKernelAvx2.S):
   exact on every CPU. Otherwise ``MlasConvSym`` (int8 weights with zero point 0, one group, input
   channels a multiple of 4, ``convsym.cpp``:
   https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/convsym.cpp) or
   MLAS's quantized GEMM: on a CPU with AVX2 and no VNNI, uint8 codes times int8 weights add each
   pair of products ``(k, k + 1)``, k even, in saturating int16 (``vpmaddubsw``), as
   ``qlib.onnx_runtime.mlas_gemm`` models; with VNNI, or for any other pair of types, the sum is exact.
2. The zero points' corrections in int32, then the int32 bias: ``sum (x - x_zero_point)(w -
   w_zero_point) + bias`` whenever no pair saturated. ``ConvInteger`` stops here.
3. ``MlasRequantizeOutput`` (or the same steps inside ``MlasConvSym``'s kernel): ``float32(acc) *
   multiplier[c]``, clamped to ``[qmin - y_zero_point, qmax - y_zero_point]``, rounded half to
   even, plus ``y_zero_point``, with ``multiplier[c] = float32(x_scale * w_scale[c]) / y_scale``
   in float32 (``ComputeOutputScale``), one per output channel when the weight has one scale per
   output channel. ORT takes one weight zero point: per-channel zero points must all be equal.

``com.microsoft.QLinearAdd`` runs ``MlasQLinearAdd`` (``qladd_avx2.cpp``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/intrinsics/avx2/qladd_avx2.cpp),
all in float32: ``ra = a_scale / c_scale``, ``rb = b_scale / c_scale``, a constant ``k =
c_zero_point - fma(ra, a_zero_point, rb * b_zero_point)``, then ``fma(a, ra, fma(b, rb, k))`` with
one rounding per fused multiply-add, converted with ``cvtps2dq`` (half to even; past the int32 range
it gives INT_MIN, the lowest code) and packed to the output type with saturation. Where ``a``
repeats along the innermost broadcast span (a scalar, a per-channel tensor), its term joins the
constant first: ``k = c_zero_point - fma(rb, b_zero_point, ra * a_zero_point)``, then ``fma(b, rb,
fma(a, ra, k))``. The source writes the multiplies and adds apart; which of them are fused
(GCC contracts them, ``-ffp-contract=fast``) was measured: ``tests/test_onnx_conv.py`` builds
inputs on which each other order gives other codes.
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.numerics import float32, fma_float32, wrap_int32
from qlib.onnx_runtime import CODE_TYPES, mlas_gemm, ort_pairs_saturate_here, requantize_output
from qlib.ranges import DTYPE_RANGES


def _code_tensor(t: object, name: str) -> torch.Tensor:
    """``t`` if it is a tensor of uint8 or int8 codes, of any rank (QLinearAdd broadcasts 0-d ones)."""
    if not isinstance(t, torch.Tensor) or t.is_quantized or t.dtype not in CODE_TYPES:
        got = t.dtype if isinstance(t, torch.Tensor) else type(t).__name__
        raise TypeError(f"{name} must be a uint8 or int8 tensor of codes; got {got}")
    return t


def _conv_shape(
    x: torch.Tensor, w: torch.Tensor, strides, pads, dilations, group: int
) -> tuple[list[int], list[int], list[int], int]:
    """Checked ``strides``, ``pads`` (ONNX order: all begins, then all ends), ``dilations`` and ``group``."""
    if x.dim() not in (3, 4) or w.dim() != x.dim():
        raise ValueError(
            f"x must be [N, C, W] or [N, C, H, W] and w [M, C / group, kW] or [M, C / group, kH, kW] (1-d or 2-d "
            f"convolutions); got x {tuple(x.shape)} and w {tuple(w.shape)}"
        )
    rank = x.dim() - 2
    strides = [1] * rank if strides is None else [int(s) for s in strides]
    dilations = [1] * rank if dilations is None else [int(d) for d in dilations]
    pads = [0] * (2 * rank) if pads is None else [int(p) for p in pads]
    if len(strides) != rank or len(dilations) != rank or len(pads) != 2 * rank:
        raise ValueError(
            f"strides and dilations need {rank} values and pads {2 * rank}; got {strides}, {dilations}, {pads}"
        )
    if min(strides + dilations) < 1 or min(pads) < 0:
        raise ValueError(f"strides and dilations must be >= 1 and pads >= 0; got {strides}, {dilations}, {pads}")
    group = int(group)
    if group < 1 or x.shape[1] != w.shape[1] * group or w.shape[0] % group:
        raise ValueError(
            f"x's {x.shape[1]} channels must be group ({group}) times w's {w.shape[1]}, and w's {w.shape[0]} "
            "output channels a multiple of group"
        )
    return strides, pads, dilations, group


def _columns(
    x: torch.Tensor, x_zero_point: int, w: torch.Tensor, strides, pads, dilations
) -> tuple[torch.Tensor, list[int]]:
    """im2col of codes ``x`` padded with ``x_zero_point``: ``[N, L, kernel positions, C]`` of x's dtype, and the output's spatial shape."""
    if x.dim() == 3:  # a 1-d convolution as a 2-d one of height 1
        x, w = x.unsqueeze(2), w.unsqueeze(2)
        strides, dilations, pads = [1, *strides], [1, *dilations], [0, pads[0], 0, pads[1]]
    n, c = x.shape[:2]
    padded = torch.nn.functional.pad(x.double(), (pads[1], pads[3], pads[0], pads[2]), value=float(x_zero_point))
    kernel = list(w.shape[2:])
    cols = torch.nn.functional.unfold(
        padded, tuple(kernel), dilation=tuple(dilations), stride=tuple(strides)
    )  # C slowest
    out = [(padded.shape[2 + i] - dilations[i] * (kernel[i] - 1) - 1) // strides[i] + 1 for i in range(2)]
    if min(out) < 1:
        raise ValueError(
            f"the kernel {kernel} (dilated {dilations}) does not fit the padded input {list(padded.shape[2:])}"
        )
    cols = cols.view(n, c, kernel[0] * kernel[1], -1).permute(0, 3, 2, 1)  # [N, L, KK, C]
    return cols.to(x.dtype), out


def _accumulate(
    x: torch.Tensor, x_zero_point: int, w: torch.Tensor, w_zero_point: int, strides, pads, dilations, group: int,
    pairs_saturate: bool, bias: torch.Tensor | None,
) -> torch.Tensor:  # fmt: skip
    """MLAS's int32 accumulators ``[N, M, *out]`` (steps 1 and 2 of the module docstring)."""
    one_d = x.dim() == 3
    cols, out = _columns(x, x_zero_point, w, strides, pads, dilations)
    n, length, kk, _ = cols.shape
    m = w.shape[0]
    cg, mg = w.shape[1], m // group
    depthwise = cg == 1 and mg == 1
    weights = w.reshape(m, cg, kk).permute(0, 2, 1)  # [M, KK, Cg]: kernel position, then channel
    acc = torch.empty(n * length, m, dtype=torch.int64)
    for g in range(group):
        a = cols[..., g * cg : (g + 1) * cg].reshape(n * length, kk * cg)
        b = weights[g * mg : (g + 1) * mg].reshape(mg, kk * cg).T.contiguous()
        zb = torch.full((mg,), w_zero_point)
        acc[:, g * mg : (g + 1) * mg] = mlas_gemm(a, x_zero_point, b, zb, pairs_saturate and not depthwise).long()
    if bias is not None:
        acc = acc + bias.long()
    shape = [n, *(out[1:] if one_d else out), m]
    return wrap_int32(acc).view(shape).movedim(-1, 1)


def conv_integer(
    x: torch.Tensor,
    w: torch.Tensor,
    x_zero_point: int | torch.Tensor = 0,
    w_zero_point: int | torch.Tensor = 0,
    *,
    strides: list[int] | None = None,
    pads: list[int] | None = None,
    dilations: list[int] | None = None,
    group: int = 1,
) -> torch.Tensor:
    """ONNX ``ConvInteger``: the int32 convolution of codes, ``sum (x - x_zero_point)(w - w_zero_point)``.

    ``x`` is ``[N, C, (H,) W]`` codes, ``w`` ``[M, C / group, (kH,) kW]``
    codes (uint8 or int8 each), each with one zero point (ONNX Runtime's
    kernel takes no per-channel zero point); ``strides``, ``pads`` (ONNX
    order: the begins, then the ends) and ``dilations`` as the ONNX
    attributes. ORT's GEMM takes the weight as its left matrix, a product
    that is exact on every CPU (measured under AVX2 emulation too).

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> x = torch.tensor([[[10, 20, 30]]], dtype=torch.uint8)
    >>> conv_integer(x, torch.tensor([[[1, 3]]], dtype=torch.uint8), 10, 1, pads=[1, 0])
    tensor([[[ 0, 20, 40]]], dtype=torch.int32)
    """
    x, w = _code_tensor(x, "x"), _code_tensor(w, "w")
    strides, pads, dilations, group = _conv_shape(x, w, strides, pads, dilations, group)
    zx = checks.zero_point_value(x_zero_point, *DTYPE_RANGES[x.dtype], "x_zero_point")
    zw = checks.zero_point_value(w_zero_point, *DTYPE_RANGES[w.dtype], "w_zero_point")
    return _accumulate(x, zx, w, zw, strides, pads, dilations, group, False, None).to(torch.int32)


def _weight_zero_point(zero_point: object, m: int, dtype: torch.dtype) -> int:
    """ORT's one weight zero point: a number, or a tensor of ``m`` (or 1) equal values."""
    qmin, qmax = DTYPE_RANGES[dtype]
    if isinstance(zero_point, torch.Tensor) and zero_point.numel() > 1:
        if zero_point.dim() != 1 or zero_point.numel() != m:
            raise ValueError(f"w_zero_point must be a number or hold one value per output channel ({m})")
        if (zero_point != zero_point.flatten()[0]).any():
            raise ValueError("ONNX Runtime's QLinearConv needs every output channel's w_zero_point equal")
        zero_point = zero_point.flatten()[0]
    return checks.zero_point_value(zero_point, qmin, qmax, "w_zero_point")


def qlinear_conv(
    x: torch.Tensor,
    x_scale: float | torch.Tensor,
    x_zero_point: int | torch.Tensor,
    w: torch.Tensor,
    w_scale: float | torch.Tensor,
    w_zero_point: int | torch.Tensor,
    y_scale: float | torch.Tensor,
    y_zero_point: int | torch.Tensor,
    bias: torch.Tensor | None = None,
    *,
    strides: list[int] | None = None,
    pads: list[int] | None = None,
    dilations: list[int] | None = None,
    group: int = 1,
    pairs_saturate: bool | None = None,
) -> torch.Tensor:
    """ONNX ``QLinearConv`` of codes, bit for bit as ONNX Runtime's CPU provider.

    ``x`` is ``[N, C, (H,) W]`` uint8 or int8 codes, ``w`` ``[M, C / group,
    (kH,) kW]`` int8 or uint8 (an int8 ``x`` takes int8 weights only), with
    one ``w_scale`` or one per output channel, and one zero point (a
    per-channel ``w_zero_point`` must hold equal values); ``bias`` optional
    int32 ``[M]``, in units of ``x_scale * w_scale``. ``strides``, ``pads``
    (the begins, then the ends) and ``dilations`` as the ONNX attributes. The
    output has ``x``'s dtype. ``pairs_saturate`` chooses the CPU as in
    :func:`qlib.matmul_integer` (None: this one); depthwise convolutions
    never saturate. The module docstring has the arithmetic.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> x = torch.tensor([[[130, 140, 150]]], dtype=torch.uint8)
    >>> w = torch.tensor([[[2, -1]]], dtype=torch.int8)
    >>> qlinear_conv(x, 0.1, 128, w, 0.5, 0, 0.2, 100, torch.tensor([5], dtype=torch.int32))
    tensor([[[ 99, 102]]], dtype=torch.uint8)
    """
    x, w = _code_tensor(x, "x"), _code_tensor(w, "w")
    if x.dtype == torch.int8 and w.dtype != torch.int8:
        raise TypeError("ONNX Runtime's QLinearConv takes an int8 x with an int8 w only")
    strides, pads, dilations, group = _conv_shape(x, w, strides, pads, dilations, group)
    m = w.shape[0]
    zx = checks.zero_point_value(x_zero_point, *DTYPE_RANGES[x.dtype], "x_zero_point")
    zy = checks.zero_point_value(y_zero_point, *DTYPE_RANGES[x.dtype], "y_zero_point")
    zw = _weight_zero_point(w_zero_point, m, w.dtype)
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.dtype != torch.int32 or bias.shape != (m,)):
        raise TypeError(f"bias must be an int32 tensor of shape [{m}] (one per output channel)")
    if isinstance(w_scale, torch.Tensor) and w_scale.numel() > 1:
        ws = checks.channel_scales(w_scale.flatten(), m, 0, "w_scale").float()
    else:
        ws = torch.tensor([float32(checks.scale_value(w_scale, "w_scale"))])
    sx = torch.tensor(float32(checks.scale_value(x_scale, "x_scale")))
    sy = torch.tensor(float32(checks.scale_value(y_scale, "y_scale")))
    multiplier = (sx * ws) / sy  # float32 throughout, as ComputeOutputScale
    saturate = ort_pairs_saturate_here() if pairs_saturate is None else pairs_saturate
    acc = _accumulate(x, zx, w, zw, strides, pads, dilations, group, saturate, bias)
    return requantize_output(acc.movedim(1, -1), multiplier, zy, x.dtype).movedim(-1, 1)


def _scalar_side(a_shape: torch.Size, b_shape: torch.Size) -> str:
    """Which input MLAS sees as one value per span: ``"a"``, ``"b"`` or ``""`` (both vary).

    ORT's broadcaster merges dimensions and runs the innermost span at a time;
    an input of size 1 along the innermost dimension that is not 1 in the output
    repeats one value over the span (a one-element input always does).
    """
    out = torch.broadcast_shapes(a_shape, b_shape)
    rank = len(out)
    a_full = [1] * (rank - len(a_shape)) + list(a_shape)
    b_full = [1] * (rank - len(b_shape)) + list(b_shape)
    if a_full == list(out) and b_full == list(out) and out.numel() > 1:
        return ""
    for d in reversed(range(rank)):
        if out[d] == 1:
            continue
        if a_full[d] == 1:
            return "a"
        if b_full[d] == 1:
            return "b"
        return ""
    return "a"  # a single element: MLAS takes A as the scalar


def qlinear_add(
    a: torch.Tensor,
    a_scale: float | torch.Tensor,
    a_zero_point: int | torch.Tensor,
    b: torch.Tensor,
    b_scale: float | torch.Tensor,
    b_zero_point: int | torch.Tensor,
    c_scale: float | torch.Tensor,
    c_zero_point: int | torch.Tensor,
) -> torch.Tensor:
    """``com.microsoft.QLinearAdd`` of codes ``a`` and ``b`` (broadcasting), bit for bit as ONNX Runtime on x86.

    Both inputs and the output have one dtype, uint8 or int8, and per-tensor
    parameters. In float32: ``fma(a, a_scale / c_scale, fma(b, b_scale /
    c_scale, c_zero_point - (ra * a_zero_point + rb * b_zero_point)))``,
    rounded half to even and saturated (the module docstring has the order
    of the operations and the broadcast case).

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> a = torch.tensor([100, 130, 255], dtype=torch.uint8)
    >>> b = torch.tensor([100, 129, 255], dtype=torch.uint8)
    >>> qlinear_add(a, 0.1, 100, b, 0.1, 100, 0.2, 100)  # 0 + 0, 3 + 2.9 = 5.9, ...
    tensor([100, 130, 255], dtype=torch.uint8)
    """
    a, b = _code_tensor(a, "a"), _code_tensor(b, "b")
    if a.dtype != b.dtype:
        raise TypeError(f"a and b must have one dtype (QLinearAdd's T); got {a.dtype} and {b.dtype}")
    qmin, qmax = DTYPE_RANGES[a.dtype]
    za = checks.zero_point_value(a_zero_point, qmin, qmax, "a_zero_point")
    zb = checks.zero_point_value(b_zero_point, qmin, qmax, "b_zero_point")
    zc = checks.zero_point_value(c_zero_point, qmin, qmax, "c_zero_point")
    sc = torch.tensor(float32(checks.scale_value(c_scale, "c_scale")))
    ra = torch.tensor(float32(checks.scale_value(a_scale, "a_scale"))) / sc
    rb = torch.tensor(float32(checks.scale_value(b_scale, "b_scale"))) / sc
    try:
        out_shape = torch.broadcast_shapes(a.shape, b.shape)
    except RuntimeError as error:
        raise ValueError(f"a {tuple(a.shape)} and b {tuple(b.shape)} do not broadcast") from error
    af, bf = a.float().expand(out_shape), b.float().expand(out_shape)
    # zc - (ra * za + rb * zb), the inner sum contracted into one fused multiply-add (measured: GCC fuses
    # the last product in the kernel for a repeated a, the first in the others)
    if _scalar_side(a.shape, b.shape) == "a":
        fixed = torch.tensor(float(zc)) - fma_float32(rb.view(1), float(zb), ra * za)[0]
        v = fma_float32(bf, rb, fma_float32(af, ra, fixed))  # the repeated input's term joins the constant first
    else:
        fixed = torch.tensor(float(zc)) - fma_float32(ra.view(1), float(za), rb * zb)[0]
        v = fma_float32(af, ra, fma_float32(bf, rb, fixed))
    v = torch.where(v.abs() < 2.0**31, v, torch.tensor(-(2.0**31)))  # cvtps2dq: NaN and overflow give INT_MIN
    return torch.round(v).clamp(qmin, qmax).to(a.dtype)
