"""oneDNN's quantized Conv2d and Linear: which kernel runs, and how it turns integer sums into codes.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

Torch runs a quantized ``Conv2d`` (``ConvReLU2d``) on oneDNN on the ``onednn`` engine, and on the
``x86`` engine when ``should_use_onednn_quant`` holds at packing (Linux, a CPU with AVX512-VNNI
per cpuinfo, symmetric weights, at most 100 groups:
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/OnednnUtils.h);
a ``Linear`` only on the ``onednn`` engine (the ``x86`` engine packs it for FBGEMM:
``QLinearPackWeightInt8::run`` in
https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/qlinear_prepack.cpp).
The ``onednn`` engine refuses weights with a zero point other than 0 at packing.
``qlib.conv2d`` and ``qlib.linear`` compute the integer sums with qlib's im2col and integer
matmul; this module holds what is oneDNN's own: the kernel it picks and its requantization.

The arithmetic (torch 2.13.0 and 2.14.1 bundle the same oneDNN, v3.12.0, commit 80afa71). Every
step is one float32 operation, rounded, with no fused multiply-add:

- scales as ideep passes them (``qconv.cpp``, ``qconv_prepack.cpp``, ``qlinear_prepack.cpp`` under
  https://github.com/pytorch/pytorch/blob/v2.14.1/aten/src/ATen/native/quantized/cpu/; ideep's
  https://github.com/intel/ideep/blob/42e7c296a78e27a80126f1f54d654b7dede72ac4/include/ideep/operators/conv.hpp
  and https://github.com/intel/ideep/blob/3b6f5e460f5b9fad2c9d46b9a6e9b6ef118593d3/include/ideep/operators/matmul.hpp,
  read at those commits of ideep's repository: the commit torch bundles was not identified):
  input ``sx = 1.0f / f32(1.0 / x_scale)``; output ``D = 1.0f / f32(1.0 / scale)``, which
  oneDNN inverts once, ``inv = 1.0f / D`` (``dst_scales_inv_ptr[0] = 1.f / dst_scales_ptr[0]``,
  https://github.com/uxlfoundation/oneDNN/blob/80afa71049cd69a3df32adcccb623b12cd7baa22/src/cpu/x64/jit_brgemm_conv.cpp
  line 1425, and likewise in the other kernels); a Conv's weight scale ``sw = f32(w_scale)``; a
  Linear's ``sw = f32(1.0 / p)`` with ``p = 1.0f / f32(w_scale)`` per channel and
  ``p = f32(1.0 / w_scale)`` per tensor (packing inverts it, ideep inverts it back);
- ``acc``, the int32 sum ``sum (x - x_zero_point) * w`` over the taps inside the image (the
  padding adds nothing), converted to float32; kernels without VNNI multiply the raw codes with
  ``vpmaddubsw`` and add each pair of products in saturating int16 (``pairs``), then subtract
  ``x_zero_point * sum w`` in int32 or, in some kernels, in float32 (``compensation``);
- ``v = f32(f32(acc * sx) * sw)`` (``separate``) or ``acc * f32(sx * sw)`` (``combined``);
  ``+ bias``; ``max(v, 0)`` for a fused ReLU; ``v * inv`` (``ref:any``: ``v / D``,
  https://github.com/uxlfoundation/oneDNN/blob/80afa71049cd69a3df32adcccb623b12cd7baa22/src/cpu/ref_convolution_int8.cpp
  lines 231-263); ``+ f32(zero_point)``, *before* rounding; clamped to 0..255 and rounded half
  to even (``saturate_cvt_f32`` in ``src/cpu/x64/jit_generator.hpp``).

Which kernel, hence which ``scales``, ``pairs`` and ``compensation``, depends on the shape and on
the ISA oneDNN uses: the CPU's, capped by ``ONEDNN_MAX_CPU_ISA``
(https://github.com/uxlfoundation/oneDNN/blob/80afa71049cd69a3df32adcccb623b12cd7baa22/src/cpu/x64/cpu_isa_traits.hpp).
The kernel order is ``src/cpu/cpu_convolution_list.cpp``; the brgemm convolution declines
grouped convolutions with few channels a group (``jit_brgemm_conv_utils.cpp`` lines 292-301 and
1846-1857). Measured, bit for bit against both releases, on an AMD EPYC with AVX512-VNNI (its
default ISA, ``avx512_core_vnni`` kernels) and under the caps ``AVX512_CORE``, ``AVX2_VNNI``,
``AVX2``, ``AVX`` and ``SSE41`` on that machine: random and adversarial layers (ties with odd zero
points, sums past 2**24, saturating pairs, outputs far outside 0..255) and torchvision's
quantizable models layer by layer; and against the shapes of ``tests/test_conv.py`` (odd strides
and dilations, tiny images). Two kinds of layer torch gets wrong on this oneDNN (measured on the
``avx512_core_vnni`` kernels, both releases), where qlib gives what the arithmetic gives: a
convolution whose every output column lies in the padding can crash (a segmentation fault; 1x1,
stride 2, padding 1, dilation 2 on an image 1 wide, say), and ``brg_conv_fwd`` with more than
one group of one input channel, ``stride_h == 1 < stride_w`` and an output 1 wide gives codes
that change with the number of threads. The ``amx`` kernels were measured on an Intel Xeon with AMX
in an earlier note, not on this project's CI machines, for 3x3 convolutions with 1 or 2 groups
and depthwise ones only; the AMX Linear's arithmetic is a guess from the source
(``brgemm_matmul.cpp`` runs its AMX micro-kernel) and was never measured.
"""

from __future__ import annotations

import os
from typing import NamedTuple

import torch

from qlib.numerics import float32, float32_reciprocal, wrap_int32

# The int8 kernel families oneDNN names its kernels after (the part after the colon), best first.
ONEDNN_ISAS = ("amx", "avx512_core_vnni", "avx512_core", "avx2_vnni", "avx2", "sse41")
# oneDNN's cpu_isa_t bits (src/cpu/x64/cpu_isa_traits.hpp lines 79-111 at the commit above).
_XMM, _YMM, _ZMM, _AMX_TILE, _EVEX, _AVX2 = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8, 1 << 9
_VEX_VNNI, _VEX_VNNI_2, _EVEX_VNNI, _EVEX_BF16, _EVEX_FP16 = 1 << 10, 1 << 11, 1 << 12, 1 << 13, 1 << 14
_AMX_INT8, _AMX_BF16, _AMX_FP16, _AMX_2 = 1 << 15, 1 << 16, 1 << 17, 1 << 18
_AVX10 = _AVX2 | _VEX_VNNI | _EVEX | _EVEX_VNNI | _EVEX_BF16 | _EVEX_FP16
_AVX512_CORE = _EVEX | _ZMM | _AVX2 | _YMM | _XMM
_AVX10_1_512 = 1 | _AVX10 | _ZMM | _YMM | _XMM
_AVX10_2 = 2 | _AVX10 | _VEX_VNNI_2 | _XMM | _YMM | _ZMM
# ONEDNN_MAX_CPU_ISA's values (cpu_isa_traits.cpp, init_max_cpu_isa) and their bits.
ONEDNN_CAPS = {
    "SSE41": _XMM,
    "AVX": _YMM | _XMM,
    "AVX2": _AVX2 | _YMM | _XMM,
    "AVX2_VNNI": _VEX_VNNI | _AVX2 | _YMM | _XMM,
    "AVX2_VNNI_2": _VEX_VNNI_2 | _VEX_VNNI | _AVX2 | _YMM | _XMM,
    "AVX512_CORE": _AVX512_CORE,
    "AVX512_CORE_VNNI": _EVEX_VNNI | _AVX512_CORE,
    "AVX512_CORE_BF16": _EVEX_BF16 | _EVEX_VNNI | _AVX512_CORE,
    "AVX10_1_512": _AVX10_1_512,
    "AVX512_CORE_FP16": _AVX10_1_512,
    "AVX10_1_512_AMX": _AVX10_1_512 | _AMX_TILE | _AMX_INT8 | _AMX_BF16,
    "AVX512_CORE_AMX": _AVX10_1_512 | _AMX_TILE | _AMX_INT8 | _AMX_BF16,
    "AVX10_1_512_AMX_FP16": _AVX10_1_512 | _AMX_TILE | _AMX_INT8 | _AMX_BF16 | _AMX_FP16,
    "AVX512_CORE_AMX_FP16": _AVX10_1_512 | _AMX_TILE | _AMX_INT8 | _AMX_BF16 | _AMX_FP16,
    "AVX10_2": _AVX10_2,
    "AVX10_2_512": _AVX10_2,
    "AVX10_2_AMX_2": _AVX10_2 | _AMX_TILE | _AMX_INT8 | _AMX_BF16 | _AMX_FP16 | _AMX_2,
    "AVX10_2_512_AMX_2": _AVX10_2 | _AMX_TILE | _AMX_INT8 | _AMX_BF16 | _AMX_FP16 | _AMX_2,
}
_AVX512_FEATURES = ("avx512_f", "avx512_bw", "avx512_vl", "avx512_dq")
# Each family's lowest oneDNN ISA: its bits, and the features (torch's cpuinfo names) it needs.
_FAMILIES = (
    ("amx", ONEDNN_CAPS["AVX10_1_512_AMX"], (*_AVX512_FEATURES, "avx512_bf16", "avx512_fp16", "amx_tile", "amx_int8")),
    ("avx512_core_vnni", ONEDNN_CAPS["AVX512_CORE_VNNI"], (*_AVX512_FEATURES, "avx512_vnni")),
    ("avx512_core", ONEDNN_CAPS["AVX512_CORE"], _AVX512_FEATURES),
    ("avx2_vnni", ONEDNN_CAPS["AVX2_VNNI"], ("avx2", "avx_vnni")),
    ("avx2", ONEDNN_CAPS["AVX2"], ("avx2",)),
    ("sse41", ONEDNN_CAPS["SSE41"], ("sse4_1",)),
)
# The brgemm convolution declines grouped convolutions with at most this many input channels a group
# (the accumulator's SIMD width; jit_brgemm_conv_utils.cpp lines 1846-1857) when they are whole 4s.
_SMALL_GROUP = {"avx512_core_vnni": 16, "avx512_core": 16, "avx2_vnni": 8}


class OnednnArithmetic(NamedTuple):
    """How one oneDNN kernel turns integer sums into codes (the module docstring has the steps).

    ``scales``: ``"separate"`` (``f32(f32(acc * sx) * sw)``) or ``"combined"``
    (``acc * f32(sx * sw)``). ``compensation``: how ``x_zero_point * sum w`` is
    taken off the raw codes' sum: ``"int"`` (int32, exact), ``"float"``
    (``f32(f32(raw) + f32(-x_zero_point * sum w))``) or ``"amx"``
    (``f32(raw) + f32(-sum w) * f32(x_zero_point)``). ``pairs``: which products
    ``vpmaddubsw`` adds in saturating int16: ``"none"``, ``"channels"``
    (consecutive input channels of a group at one tap; a Linear's consecutive
    k), ``"taps kw-major"`` or ``"taps by row"`` (one input channel a group:
    brgemm's "relo" layouts pair kernel taps). ``dst``: ``"multiply"`` by
    ``1 / D`` or ``"divide"`` by ``D``.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> OnednnArithmetic("separate", "int", "none", "multiply").scales
    'separate'
    """

    scales: str
    compensation: str
    pairs: str
    dst: str


def onednn_isa() -> str:
    """The kernel family oneDNN uses for int8 in this process, one of ``ONEDNN_ISAS``.

    The best family the CPU has (as torch's cpuinfo sees it) that
    ``ONEDNN_MAX_CPU_ISA`` (or ``DNNL_MAX_CPU_ISA``) allows: oneDNN allows an ISA
    whose bits are all in the cap's (``mayiuse``). oneDNN reads the variable
    once, when torch first uses it, so set it before torch starts. Checked
    against the ISA oneDNN prints (``ONEDNN_VERBOSE``) for every cap on an
    AVX512-VNNI machine: ``AVX512_CORE_BF16`` and ``AVX512_CORE_VNNI`` both run
    the ``avx512_core_vnni`` kernels, ``AVX2_VNNI_2`` the ``avx2_vnni`` ones
    there (no AVX-VNNI-INT8), ``AVX`` the ``sse41`` ones.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_isa() in ONEDNN_ISAS
    True
    """
    name = (os.environ.get("ONEDNN_MAX_CPU_ISA") or os.environ.get("DNNL_MAX_CPU_ISA") or "ALL").strip().upper()
    cap = ONEDNN_CAPS.get(name, ~0)  # ALL, or a value oneDNN does not know: no cap
    features = torch._C._cpu._get_cpu_capability()
    for family, bits, needs in _FAMILIES:
        if bits & cap == bits and all(features.get(need) for need in needs):
            return family
    return "sse41"


def onednn_isa_for(isa: str | None, pairs_saturate: bool | None) -> str:
    """The kernel family to model: ``isa`` if given (checked), else the one ``pairs_saturate`` stands for.

    ``pairs_saturate`` is qlib's choice of CPU: None this process
    (:func:`onednn_isa`), False a CPU with AVX512-VNNI and no AMX
    (``"avx512_core_vnni"``), True one with AVX2 only (``"avx2"``).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_isa_for(None, True), onednn_isa_for("avx2_vnni", False)
    ('avx2', 'avx2_vnni')
    """
    if isa is not None:
        if isa not in ONEDNN_ISAS:
            raise ValueError(
                f"isa must be None (this process's: the CPU and ONEDNN_MAX_CPU_ISA) or one of oneDNN's int8 kernel "
                f"families {', '.join(map(repr, ONEDNN_ISAS))}; got {isa!r}"
            )
        return isa
    if pairs_saturate is None:
        return onednn_isa()
    return "avx2" if pairs_saturate else "avx512_core_vnni"


def onednn_conv_kernel(
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    isa: str,
    input_size: tuple[int, int] | None = None,
    batch: int | None = None,
) -> str:
    """The kernel oneDNN runs a quantized Conv2d on, named as ``ONEDNN_VERBOSE`` prints it.

    ``isa`` is a family of ``ONEDNN_ISAS``. Depthwise means one input and one
    output channel a group; "small grouped" more than one group of at most 16
    input channels (8 on ``avx2_vnni``), both counts a multiple of 4; 1x1 a 1x1
    kernel without padding, any stride:

    ====================  ============  ===============================  ==================  ================
    family                depthwise     small grouped                    other 1x1           other
    ====================  ============  ===============================  ==================  ================
    avx512_core_vnni      brdgmm_dw     jit_int8_1x1 (1x1) / jit_int8    brgconv_1x1         brg_conv_fwd
    avx512_core           jit_int8      jit_int8_1x1 (1x1) / jit_int8    brgconv_1x1         brg_conv_fwd
    avx2_vnni             brdgmm_dw     jit_uni_int8                     brgconv_1x1         brg_conv_fwd
    avx2, sse41           jit_uni_int8  jit_uni_int8                     jit_uni_int8_1x1    jit_uni_int8
    ====================  ============  ===============================  ==================  ================

    ``brdgmm_dw`` takes no dilation: a dilated depthwise convolution runs
    ``jit_int8`` (``jit_uni_int8`` on ``avx2_vnni``). The jit 1x1 kernels take
    unit strides only, or, with one group, strides that divide the input
    exactly (``rtus_prepare`` in ``jit_uni_1x1_conv_utils.hpp``); else
    ``jit_int8`` and ``jit_uni_int8``. On ``avx2`` and ``sse41`` the 1x1
    kernel takes ``groups == 1`` only, and a grouped convolution whose channel
    counts a group are not multiples of 4 runs ``ref:any``. With one input
    channel and one group on the AVX-512 families, a tiny output makes
    brgemm's blocking fail and oneDNN falls back to ``jit_int8`` when
    ``batch * H_out * W_out * kh * kw`` is below 200 (100 with 2 threads or
    more): a rule fitted on 48 stride-1 shapes (kernels 1, 3 and 5, batch 1
    and 2) at 1 and 2 threads on both families, given ``input_size``
    and ``batch`` (brgemm's blocking search also fails on other layers with
    very few channels, which qlib does not predict); on the VNNI families both
    kernels give the same codes, so only the name can be wrong there. ``amx``
    (measured on a Xeon in an earlier note, not on this project's CI
    machines): ``brdgmm_dw:avx512_core_vnni`` for depthwise, else
    ``brg_conv_fwd:avx10_1_512_amx`` (1x1, small grouped and dilated
    depthwise never measured).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_conv_kernel(64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, "avx512_core_vnni")
    'brg_conv_fwd:avx512_core_vnni'
    >>> onednn_conv_kernel(32, 32, (3, 3), (1, 1), (1, 1), (1, 1), 32, "avx2")
    'jit_uni_int8:avx2'
    """
    in_g, out_g = in_channels // groups, out_channels // groups
    depthwise = groups > 1 and in_g == out_g == 1
    one_by_one = tuple(kernel_size) == (1, 1) and tuple(padding) == (0, 0)
    unit_stride = tuple(stride) == (1, 1)
    if one_by_one and not unit_stride and input_size is not None:  # rtus: a strided 1x1 read as a unit-stride one
        out = _output_size(kernel_size, stride, padding, dilation, input_size)
        reducible = all(o * s == i for o, s, i in zip(out, stride, input_size, strict=True))
    else:
        reducible = True
    whole_4s = in_g % 4 == 0 and out_g % 4 == 0
    small_grouped = groups > 1 and not depthwise and whole_4s and in_g <= _SMALL_GROUP.get(isa, 0)
    brdgmm = depthwise and tuple(dilation) == (1, 1)  # brdgmm_dw takes no dilation
    if isa == "amx":
        return "brdgmm_dw:avx512_core_vnni" if brdgmm else "brg_conv_fwd:avx10_1_512_amx"
    if isa in ("avx2", "sse41"):
        if groups == 1 and one_by_one and reducible:
            return f"jit_uni_int8_1x1:{isa}"
        return f"jit_uni_int8:{isa}" if depthwise or groups == 1 or whole_4s else "ref:any"
    if depthwise:
        if brdgmm and isa != "avx512_core":
            return f"brdgmm_dw:{isa}"
        return "jit_uni_int8:avx2_vnni" if isa == "avx2_vnni" else f"jit_int8:{isa}"
    if small_grouped:
        if isa == "avx2_vnni":
            return "jit_uni_int8:avx2_vnni"
        return f"jit_int8_1x1:{isa}" if one_by_one and unit_stride else f"jit_int8:{isa}"
    if one_by_one:
        return f"brgconv_1x1:{isa}"
    if in_g == groups == 1 and isa != "avx2_vnni" and input_size is not None and batch is not None:
        h_out, w_out = _output_size(kernel_size, stride, padding, dilation, input_size)
        positions = batch * h_out * w_out
        work = positions * kernel_size[0] * kernel_size[1]
        if work < 100 or (work < 200 and torch.get_num_threads() < 2):
            return f"jit_int8:{isa}"
    return f"brg_conv_fwd:{isa}"


def onednn_conv_arithmetic(
    kernel: str,
    in_channels: int,
    out_channels: int,
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    groups: int,
    input_size: tuple[int, int],
) -> OnednnArithmetic:
    """The arithmetic of the oneDNN convolution ``kernel`` (a name :func:`onednn_conv_kernel` gives).

    The brgemm and depthwise kernels scale ``separate``\\ly, the ``jit_uni``
    ones ``combined``; the ``_1x1`` jit kernels take the zero point off in
    float32 (``jit_uni_x8s8s32x_1x1_conv_kernel.cpp`` lines 313-420,
    ``jit_avx512_core_x8s8s32x_1x1_conv_kernel.cpp`` lines 391-442; the
    ``avx512`` one from the source alone: its sums stay below 2**24); without
    VNNI (``avx512_core``, ``avx2``, ``sse41``) pairs of channels saturate,
    but not in the depthwise kernels (``vpmaddwd`` on 16-bit data), and with
    one input channel a group ``brg_conv_fwd:avx512_core`` pairs kernel taps
    on CPUs with AVX512-VBMI (brgemm's relo layouts,
    ``jit_brgemm_conv_utils.cpp`` lines 2146-2265): kw-major over the whole
    kernel when ``kh > 1`` and the output is more than 4 wide (the layout of
    ``jit_brgemm_conv.cpp`` line 1928), else along each kernel row.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_conv_arithmetic("jit_uni_int8_1x1:avx2", 8, 8, (1, 1), (1, 1), (0, 0), (1, 1), 1, (4, 4))
    OnednnArithmetic(scales='combined', compensation='float', pairs='channels', dst='multiply')
    """
    impl, _, isa = kernel.partition(":")
    depthwise = groups > 1 and in_channels == groups == out_channels
    pairs = "channels" if isa in ("avx512_core", "avx2", "sse41") and not depthwise else "none"
    if impl == "ref":
        return OnednnArithmetic("separate", "int", "none", "divide")
    if impl == "brg_conv_fwd" and isa == "avx10_1_512_amx":
        return OnednnArithmetic("combined", "amx", "none", "multiply")
    if impl == "brg_conv_fwd" and pairs != "none" and in_channels == groups:
        pairs = _relo_pairs(kernel_size, stride, padding, dilation, input_size)
    if impl in ("brg_conv_fwd", "brgconv_1x1", "brdgmm_dw", "jit_int8"):
        return OnednnArithmetic("separate", "int", pairs, "multiply")
    if impl == "jit_int8_1x1":
        return OnednnArithmetic("separate", "float", pairs, "multiply")
    if impl == "jit_uni_int8":
        return OnednnArithmetic("combined", "int", pairs, "multiply")
    if impl == "jit_uni_int8_1x1" and pairs != "none":
        return OnednnArithmetic("combined", "float", pairs, "multiply")
    raise ValueError(f"qlib does not model the oneDNN convolution kernel {kernel!r}")


def onednn_linear_kernel(isa: str) -> str:
    """The kernel oneDNN runs a quantized Linear on (the ``onednn`` engine), as ``ONEDNN_VERBOSE`` names it.

    ``brg_matmul`` on the VNNI and AVX-512 families, ``gemm:jit``
    (``gemm_x8s8s32x_matmul``) on ``avx2`` and ``sse41``; the ``amx`` name is
    a guess (never measured).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_linear_kernel("avx512_core_vnni"), onednn_linear_kernel("avx2")
    ('brg_matmul:avx512_core_vnni', 'gemm:jit')
    """
    if isa in ("avx2", "sse41"):
        return "gemm:jit"
    return "brg_matmul:avx10_1_512_amx" if isa == "amx" else f"brg_matmul:{isa}"


def onednn_linear_arithmetic(kernel: str) -> OnednnArithmetic:
    """The arithmetic of the oneDNN matmul ``kernel`` (a name :func:`onednn_linear_kernel` gives).

    ``brg_matmul`` scales ``separate``\\ly and, on ``avx512_core``, saturates
    pairs of consecutive k; ``gemm:jit`` scales ``combined``
    (``src_scales[0] * wei_scales[i]``, ``precompute_scales`` in
    https://github.com/uxlfoundation/oneDNN/blob/80afa71049cd69a3df32adcccb623b12cd7baa22/src/cpu/scale_utils.cpp)
    and saturates pairs; all take the zero point off in int32. The AMX
    micro-kernel's is a guess from the convolution's: ``combined``, ``amx``
    compensation (never measured).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_linear_arithmetic("gemm:jit")
    OnednnArithmetic(scales='combined', compensation='int', pairs='channels', dst='multiply')
    """
    impl, _, isa = kernel.partition(":")
    if impl == "gemm":
        return OnednnArithmetic("combined", "int", "channels", "multiply")
    if isa == "avx10_1_512_amx":
        return OnednnArithmetic("combined", "amx", "none", "multiply")
    return OnednnArithmetic("separate", "int", "channels" if isa == "avx512_core" else "none", "multiply")


def onednn_src_scale(x_scale: float) -> float:
    """The input scale oneDNN multiplies by: ``1.0f / f32(1.0 / x_scale)`` (ideep passes a reciprocal's reciprocal).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_src_scale(0.1) == float32(0.1), onednn_src_scale(0.03) == float32(0.03)
    (True, False)
    """
    return float32_reciprocal(1.0 / x_scale)


def onednn_dst_scale(scale: float) -> float:
    """The output scale oneDNN receives, ``D = 1.0f / f32(1.0 / scale)``; its kernels multiply by ``1.0f / D``.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_dst_scale(0.2)
    0.20000000298023224
    """
    return float32_reciprocal(1.0 / scale)


def onednn_linear_weight_scales(weight_scale: torch.Tensor, per_channel: bool) -> torch.Tensor:
    """A Linear's float32 weight scales as oneDNN multiplies by them, from the float64 ``weight_scale`` ``[N]``.

    Packing stores the reciprocal, ``1.0f / f32(s)`` per channel and
    ``f32(1.0 / s)`` per tensor (``PackedLinearWeightsOnednn::prepack`` in
    ``qlinear_prepack.cpp``); ideep's matmul inverts it back in float64
    (``s = 1.0 / s``), rounded to float32.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> onednn_linear_weight_scales(torch.tensor([0.1, 0.3], dtype=torch.float64), True)
    tensor([0.1000, 0.3000])
    """
    packed = torch.tensor(1.0) / weight_scale.float() if per_channel else (1.0 / weight_scale).float()
    return (1.0 / packed.double()).float()


def onednn_accumulators(
    raw: torch.Tensor, weight_sums: torch.Tensor, x_zero_point: int, compensation: str
) -> torch.Tensor:
    """The float32 sums oneDNN scales, from ``raw`` (int64: ``sum x * w`` of the raw codes, pairs saturated
    as the kernel does) and ``weight_sums`` (``sum w`` over the same taps, broadcasting to ``raw``).

    ``compensation`` is :class:`OnednnArithmetic`'s; the int32 sums wrap
    around as the kernels' do.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> raw, sums = torch.tensor([2**24 + 1]), torch.tensor([1])
    >>> onednn_accumulators(raw, sums, 1, "int").item(), onednn_accumulators(raw, sums, 1, "float").item()
    (16777216.0, 16777215.0)
    """
    if compensation == "int":
        return wrap_int32(raw - x_zero_point * weight_sums).float()
    if compensation == "float":
        return wrap_int32(raw).float() + wrap_int32(-x_zero_point * weight_sums).float()
    if compensation == "amx":
        return wrap_int32(raw).float() + (-weight_sums).float() * float32(x_zero_point)
    raise ValueError(f"compensation must be 'int', 'float' or 'amx'; got {compensation!r}")


def onednn_requantize(
    acc: torch.Tensor,
    x_scale: float,
    weight_scale: torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    relu: bool,
    arithmetic: OnednnArithmetic,
) -> torch.Tensor:
    """uint8 codes from oneDNN's float32 sums ``acc`` ``[M, N]`` (the module docstring's last step).

    ``weight_scale`` is float32 ``[N]`` as oneDNN multiplies by it (a Conv's
    ``f32(w_scale)``, a Linear's :func:`onednn_linear_weight_scales`),
    ``bias`` float32 ``[N]`` or None.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> acc = torch.tensor([[5.0, -30.0]])
    >>> onednn_requantize(acc, 0.5, torch.tensor([0.5, 0.5]), None, 1.0, 127, False, OnednnArithmetic(
    ...     "separate", "int", "none", "multiply"))
    tensor([[128, 120]], dtype=torch.uint8)
    """
    sx = torch.tensor(onednn_src_scale(x_scale))
    v = (acc * sx) * weight_scale if arithmetic.scales == "separate" else acc * (sx * weight_scale)
    if bias is not None:
        v = v + bias
    if relu:
        v = v.clamp_min(0.0)
    dst = onednn_dst_scale(scale)
    v = v / dst if arithmetic.dst == "divide" else v * float32_reciprocal(dst)
    # the zero point is added in float32, before rounding: rne(2.5 + 127) = 130, where rne(2.5) + 127 = 129
    return (v + float32(zero_point)).clamp_(0.0, 255.0).round_().to(torch.uint8)


def _output_size(
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    input_size: tuple[int, int],
) -> tuple[int, int]:
    (kh, kw), (sh, sw), (ph, pw), (dh, dw), (h, w) = kernel_size, stride, padding, dilation, input_size
    return (h + 2 * ph - dh * (kh - 1) - 1) // sh + 1, (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1


def _relo_pairs(
    kernel_size: tuple[int, int],
    stride: tuple[int, int],
    padding: tuple[int, int],
    dilation: tuple[int, int],
    input_size: tuple[int, int],
) -> str:
    """The pairs of ``brg_conv_fwd:avx512_core`` with one input channel a group (measured on 8 shapes)."""
    if tuple(dilation) != (1, 1) or not torch._C._cpu._get_cpu_capability().get("avx512_vbmi"):
        return "channels"  # no relo layout: one channel and a zero, which never saturate
    kh, kw = kernel_size
    if kh > 1 and _output_size(kernel_size, stride, padding, dilation, input_size)[1] > 4:
        return "taps kw-major"
    return "taps by row" if kw > 1 else "channels"
