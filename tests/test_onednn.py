"""qlib.conv2d and qlib.linear against torch where torch runs them on oneDNN: the x86 engine's convolutions with
symmetric weights on AVX512-VNNI CPUs, and everything on the onednn engine.

Layers of the shapes torchvision's quantizable models use, filled by the adversarial generators the oneDNN
arithmetic was measured with: exact ties with odd zero points, near ties, input scales whose oneDNN round trip
``1/f32(1/x_scale)`` is not ``f32(x_scale)``, double output scales, sums past 2**24, full-range codes whose pairs
saturate without VNNI, outputs far outside 0..255. Every layer's kernel is also checked against the name oneDNN
prints (its verbose mode). Other ISAs: ``make unit-avx2`` runs this file again with ``ONEDNN_MAX_CPU_ISA=AVX2``;
``AVX512_CORE`` and ``AVX2_VNNI`` each run a compact check in a fresh interpreter.
"""

from __future__ import annotations

import copy
import os
import re
import sys
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples

import qlib
from qlib.numerics import float32, float32_reciprocal
from qlib.onednn import onednn_isa, onednn_linear_kernel, onednn_linear_weight_scales, onednn_src_scale
from qlib.registry import packed_backend
from qlib.testing import COMPARED, assert_same_ints, run_with_kernels, torch_conv2d, torch_linear

F32, F64 = torch.float32, torch.float64
VNNI = torch.cpu._is_vnni_supported() and sys.platform.startswith("linux")
# torch's integers here depend on the CPU kind: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = [
    pytest.mark.cpu_kind,
    pytest.mark.skipif(
        not VNNI,
        reason="this CPU has no AVX512-VNNI (or this is not Linux): the x86 engine runs FBGEMM here, and qlib's "
        "oneDNN rules were measured on an AVX512-VNNI CPU (other ISAs through ONEDNN_MAX_CPU_ISA on it)",
    ),
]


def shape(c, o, k, s=1, p=None, g=1, h=8, d=1):
    """(C, O, groups, (kh, kw), stride, padding, dilation, (H, W)); padding defaults to "same"."""
    k = (k, k) if isinstance(k, int) else k
    p = (k[0] // 2, k[1] // 2) if p is None else ((p, p) if isinstance(p, int) else p)
    return (c, o, g, k, (s, s) if isinstance(s, int) else s, p, (d, d), (h, h))


# torchvision's layers (resnet, resnext, mobilenet_v2/v3, shufflenet_v2, googlenet, inception_v3) on small images,
# and the edges of oneDNN's kernel choice
SHAPES = {
    "stem 7x7 s2, 3 channels": shape(3, 64, 7, 2, 3, h=20),
    "3x3 s1": shape(64, 64, 3, h=6),
    "3x3 s2": shape(64, 128, 3, 2, h=7),
    "1x1 s1": shape(256, 64, 1, 1, 0, h=5),
    "1x1 s2 (downsample)": shape(64, 128, 1, 2, 0, h=7),
    "1x1 on a 1x1 map (squeeze-excitation)": shape(72, 24, 1, 1, 0, h=1),
    "stem 3x3 s2, 3 channels": shape(3, 32, 3, 2, 1, h=16),
    "depthwise 3x3 s1": shape(32, 32, 3, g=32, h=9),
    "depthwise 3x3 s2": shape(96, 96, 3, 2, g=96, h=9),
    "depthwise 5x5 s1": shape(72, 72, 5, g=72, h=8),
    "depthwise 5x5 s2": shape(72, 72, 5, 2, g=72, h=9),
    "depthwise, 58 channels": shape(58, 58, 3, g=58, h=7),
    "depthwise, 100 groups": shape(100, 100, 3, g=100, h=5),
    "depthwise, 101 groups": shape(101, 101, 3, g=101, h=5),
    "depthwise, 2 outputs a channel": shape(16, 32, 3, g=16, h=9),
    "groups 32, 4 channels a group": shape(128, 128, 3, g=32, h=6),
    "groups 32, 8 channels a group, s2": shape(256, 256, 3, 2, g=32, h=6),
    "groups 2, 8 channels a group, 1x1": shape(16, 16, 1, 1, 0, g=2, h=6),
    "groups 4, 3 channels a group, 1x1": shape(12, 20, 1, 1, 0, g=4, h=6),
    "groups 8, 6 channels a group": shape(48, 48, 3, g=8, h=6),
    "groups 2, 32 channels a group": shape(64, 64, 3, g=2, h=6),
    "1x7": shape(128, 128, (1, 7), h=7),
    "7x1": shape(128, 192, (7, 1), h=7),
    "5x5": shape(48, 64, 5, h=7),
    "3x3 s2, no padding": shape(32, 32, 3, 2, 0, h=11),
    "odd channels 5 -> 7": shape(5, 7, 3, h=7),
    "1x1, 24 -> 58": shape(24, 58, 1, 1, 0, h=6),
    "1x1 with padding": shape(16, 16, 1, 1, 1, h=6),
    "3x3 dilation 2": shape(32, 32, 3, 1, 2, d=2, h=9),
    "1 channel 3x3": shape(1, 16, 3, h=12),
    "1 channel 7x7 s2": shape(1, 32, 7, 2, 3, h=20),
    "1 channel 1x5": shape(1, 16, (1, 5), h=10),
    "1 channel 3x3, 4 wide": shape(1, 16, 3, h=12)[:-1] + ((12, 4),),
    "long sums, 1x1 2048 -> 64": shape(2048, 64, 1, 1, 0, h=4),
    "long sums, 3x3 512 -> 32": shape(512, 32, 3, h=5),
}
GENERATORS = ["tie", "near", "nearsx", "nearsy", "rand", "wide", "full", "bigk", "clip"]


def scales_and_codes(kind, n_out, k, per_channel, gen):
    """(x_scale, x_zero_point, scale, zero_point, weight scales [n_out] as Python floats, x codes, w codes)
    for a layer summing ``k`` products per output; the codes are functions of a shape."""

    def uniform(lo, hi):
        return float(lo + (hi - lo) * torch.rand((), generator=gen, dtype=F64))

    def integer(lo, hi, size=()):
        return torch.randint(lo, hi + 1, size, generator=gen)

    f32 = float32
    if kind == "tie":  # dyadic scales: exact .5 ties, odd zero points
        sx, zx = 2.0 ** -int(integer(3, 6)), int(integer(100, 140))
        sy, zy = 2.0 ** -int(integer(2, 5)), int(integer(1, 127)) * 2 - 1
        sw = [sy / sx * 2.0 ** -int(integer(1, 3)) * [1, 3, 5, 7][int(integer(0, 3))] for _ in range(n_out)]
        x_kind, w_kind = "small", "small"
    elif kind.startswith("near"):  # multipliers odd / 2**p within 6 ulps
        while True:
            sx, zx = f32(uniform(0.005, 0.05)), int(integer(40, 90))
            sy, zy = f32(uniform(0.01, 0.2)), int(integer(0, 255))
            if kind == "nearsy":  # a double output scale, where 1 / (1 / f32(1 / scale)) is not f32(1 / scale)
                sy = uniform(0.01, 0.2)
                if float32_reciprocal(float32_reciprocal(1.0 / sy)) == f32(1.0 / sy):
                    continue
            if kind == "nearsx" and onednn_src_scale(sx) == sx:
                continue
            break
        base = sy / sx * [1.0, 3.0][int(integer(0, 1))] * 2.0 ** -int(integer(1, 2))
        sw = [base * (1 + int(integer(-6, 6)) * 2.0**-23) for _ in range(n_out)]
        x_kind, w_kind = "small", "small"
    elif kind == "bigk":  # raw sums past 2**24 (x near 240, one sign of |w| 50..64 a channel), outputs in range
        sx, zx = f32(uniform(0.005, 0.05)), int(integer(225, 250))
        sy, zy = f32(uniform(0.05, 0.2)), int(integer(60, 200))
        multiplier = uniform(40, 80) / (2.0 * 57 * k**0.5)
        sw = [sy * multiplier / sx * (1 + uniform(-1e-3, 1e-3)) for _ in range(n_out)]
        x_kind, w_kind = "small", "big"
    elif kind == "full":  # codes 0, 1, 2, 253, 254, 255 and weights +-126, 127: pairs saturate without VNNI
        sx, zx, sy, zy = f32(uniform(0.005, 0.05)), int(integer(100, 155)), f32(uniform(1.0, 4.0)), int(integer(0, 255))
        sw = [uniform(0.002, 0.02) for _ in range(n_out)]
        x_kind, w_kind = "full", "full"
    elif kind in ("wide", "clip"):  # clip: a tiny output scale, outputs far outside 0..255
        sx, zx = f32(uniform(0.005, 0.1)), int(integer(0, 255))
        sy, zy = f32(uniform(0.05, 2.0) if kind == "wide" else uniform(1e-5, 1e-3)), int(integer(0, 255))
        sw = [uniform(0.001, 0.05) for _ in range(n_out)]
        x_kind, w_kind = "wide", "wide"
    else:
        sx, zx, sy, zy = f32(uniform(0.005, 0.05)), int(integer(0, 127)), f32(uniform(0.02, 0.5)), int(integer(0, 255))
        sw = [uniform(0.002, 0.02) for _ in range(n_out)]
        x_kind, w_kind = "rand", "rand"
    sw = [f32(s) for s in sw]  # float32 weight scales, as observers make them
    if not per_channel:
        sw = [sw[0]] * n_out

    def x_codes(size):
        if x_kind == "small":
            return (zx + integer(-3, 3, size)).clamp(0, 255).to(torch.uint8)
        if x_kind == "full":
            return torch.tensor([0, 1, 2, 253, 254, 255], dtype=torch.uint8)[integer(0, 5, size)]
        return integer(0, 255 if x_kind == "wide" else 127, size).to(torch.uint8)

    def w_codes(size):
        if w_kind == "small":
            return integer(-3, 3, size).to(torch.int8)
        if w_kind == "full":
            return torch.tensor([-127, -126, 126, 127], dtype=torch.int8)[integer(0, 3, size)]
        if w_kind == "big":
            sign = integer(0, 1, (size[0],) + (1,) * (len(size) - 1)) * 2 - 1
            return (integer(50, 64, size) * sign).to(torch.int8)
        return integer(-127, 127, size).to(torch.int8)

    return sx, zx, sy, zy, sw, x_codes, w_codes


def bias_for(kind, sx, sw, sy, gen):
    """A float32 bias: whole multiples of x_scale * w_scale (ties stay ties), nudged for near ties, else random."""
    n_out = len(sw)
    steps = torch.randint(-20, 21, (n_out,), generator=gen).double() * sx * torch.tensor(sw, dtype=F64)
    if kind == "tie":
        return steps.float()
    if kind.startswith("near"):
        return (steps * (1 + torch.randint(-3, 4, (n_out,), generator=gen).double() * 2.0**-22)).float()
    return (torch.randn(n_out, generator=gen, dtype=F64) * sy * 20).float()


def conv_layer(name, kind, per_channel, with_bias, relu, batch, seed):
    """Arguments of qlib.conv2d for the shape ``name`` filled by generator ``kind``."""
    c, n_out, groups, kernel, stride, padding, dilation, size = SHAPES[name]
    gen = torch.Generator().manual_seed(seed)
    k = c // groups * kernel[0] * kernel[1]
    sx, zx, sy, zy, sw, x_codes, w_codes = scales_and_codes(kind, n_out, k, per_channel, gen)
    x, w = x_codes((batch, c, *size)), w_codes((n_out, c // groups, *kernel))
    bias = bias_for(kind, sx, sw, sy, gen) if with_bias else None
    w_scale = torch.tensor(sw, dtype=F32) if per_channel else sw[0]
    w_zero_point = torch.zeros(n_out, dtype=torch.long) if per_channel else 0
    return (x, sx, zx, w, w_scale, w_zero_point, bias, sy, zy, stride, padding, dilation, groups, relu)


class OneDNNLog:
    """``with OneDNNLog() as log:`` turns oneDNN's verbose mode on and collects the kernels it runs
    (``log.kernels("convolution")``), read from file descriptor 1, where oneDNN prints them."""

    def __enter__(self):
        sys.stdout.flush()
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(1)
        os.dup2(self.file.fileno(), 1)
        self.verbose = torch.backends.mkldnn.verbose(torch.backends.mkldnn.VERBOSE_ON)
        self.verbose.__enter__()
        return self

    def __exit__(self, *exc):
        self.verbose.__exit__(*exc)
        os.dup2(self.saved, 1)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode(errors="replace")
        self.file.close()

    def kernels(self, kind: str) -> list[str]:
        return re.findall(rf"^onednn_verbose,[^\n]*?,primitive,exec,cpu,{kind},([^,]+),", self.text, flags=re.M)


def check_conv(args, engine: str, context: str = "") -> str:
    """qlib.conv2d equals torch on ``engine`` and qlib.conv2d_kernel names the kernel oneDNN ran; returns it."""
    x, *_, stride, padding, dilation, groups, _ = args
    w, zw = args[3], args[5]
    with OneDNNLog() as log:
        expected = torch_conv2d(*args, engine=engine)
    symmetric = bool((torch.as_tensor(zw) == 0).all())
    kernel = qlib.conv2d_kernel(
        x.shape[1], w.shape[0], tuple(w.shape[2:]), stride, padding, dilation, groups, symmetric, engine=engine,
        input_size=tuple(x.shape[2:]), batch=x.shape[0],
    )  # fmt: skip
    ran = log.kernels("convolution")
    if ran:
        assert kernel == f"oneDNN {ran[-1]}", (kernel, ran, context)
    else:
        assert not kernel.startswith("oneDNN"), (kernel, "torch ran FBGEMM", context)
    assert_same_ints(qlib.conv2d(*args, engine=engine), expected, f"{context} {kernel}")
    return kernel


@settings(max_examples=examples(120))
@given(
    name=st.sampled_from(sorted(SHAPES)),
    kind=st.sampled_from(GENERATORS),
    per_channel=st.booleans(),
    with_bias=st.sampled_from([True, True, True, False]),
    relu=st.booleans(),
    batch=st.integers(1, 2),
    engine=st.sampled_from(["x86", "onednn"]),
    seed=st.integers(0, 2**31),
)
def test_conv2d_matches_torch_on_onednn(name, kind, per_channel, with_bias, relu, batch, engine, seed):
    args = conv_layer(name, kind, per_channel, with_bias, relu, batch, seed)
    kernel = check_conv(args, engine, f"{name} {kind} per_channel={per_channel} engine={engine}")
    assert kernel.startswith("oneDNN") == (engine == "onednn" or args[12] <= 100), kernel


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("kind", ["tie", "full"])
def test_every_shape_on_both_engines(kind, threads):
    """Each shape once per engine with one generator: the routing (101 groups: FBGEMM on x86) and each kernel, on
    one thread and on two (oneDNN's choice for tiny outputs follows the thread count)."""
    kernels = set()
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for i, name in enumerate(sorted(SHAPES)):
            args = conv_layer(name, kind, i % 2 == 0, i % 3 != 0, i % 4 == 1, 1 + i % 2, 1000 * i + len(kind))
            for engine in ("x86", "onednn"):
                kernels.add(check_conv(args, engine, f"{name} {kind} threads={threads}"))
    finally:
        torch.set_num_threads(before)
    fbgemm = {k for k in kernels if not k.startswith("oneDNN")}
    assert fbgemm == {"im2col"}, kernels  # 101 groups on the x86 engine, FBGEMM's im2col (101 is no multiple of 8)


def test_asymmetric_weights_go_to_fbgemm_on_x86_and_are_refused_on_onednn():
    args = list(conv_layer("3x3 s1", "wide", True, True, False, 1, 5))
    args[5] = torch.randint(-3, 4, (64,))
    args[5][0] = 1
    assert qlib.conv2d_kernel(64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, False, engine="x86") == "im2col"
    assert_same_ints(qlib.conv2d(*args, engine="x86"), torch_conv2d(*args, engine="x86"))
    with pytest.raises(RuntimeError, match="ONEDNN only supports symmetric quantization of weight"):
        torch_conv2d(*args, engine="onednn")
    with pytest.raises(ValueError, match="ONEDNN only supports symmetric quantization of weight"):
        qlib.conv2d(*args, engine="onednn")
    with pytest.raises(ValueError, match="ONEDNN only supports symmetric"):
        x, w = torch.zeros(1, 3, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.int8)
        qlib.linear(x, 0.1, 0, w, 0.1, 1, None, 0.1, 0, engine="onednn")


def test_onednn_rounds_otherwise_than_fbgemm_and_each_isa_otherwise():
    """The same symmetric layers, near ties: qlib's FBGEMM codes, and its other oneDNN ISAs', differ from torch's
    oneDNN codes somewhere (the test can fail), while qlib's oneDNN codes for this process equal them."""
    # 4 channels a group: jit_int8 on the AVX-512 families scales separately, jit_uni_int8 on the others combined
    other = "avx2_vnni" if onednn_isa() in ("avx512_core_vnni", "avx512_core") else "avx512_core_vnni"
    differ = {"fbgemm": 0, f"isa={other}": 0}
    for seed in range(12):
        kind = ["tie", "near", "nearsx"][seed % 3]
        args = conv_layer("3x3 s1", kind, seed % 2 == 0, True, False, 1, seed)
        expected = torch_conv2d(*args, engine="onednn")
        assert_same_ints(qlib.conv2d(*args, engine="onednn"), expected)
        differ["fbgemm"] += int((qlib.conv2d(*args, engine="fbgemm") != expected).sum())
        args = conv_layer("groups 32, 4 channels a group", kind, seed % 2 == 0, True, False, 1, seed)
        expected = torch_conv2d(*args, engine="onednn")
        assert_same_ints(qlib.conv2d(*args, engine="onednn"), expected)
        differ[f"isa={other}"] += int((qlib.conv2d(*args, engine="onednn", isa=other) != expected).sum())
    assert all(count > 0 for count in differ.values()), differ


def test_the_isa_argument():
    args = conv_layer("3x3 s1", "full", False, True, False, 1, 3)
    for isa, kernel in [
        ("avx512_core_vnni", "brg_conv_fwd:avx512_core_vnni"),
        ("avx512_core", "brg_conv_fwd:avx512_core"),
        ("avx2_vnni", "brg_conv_fwd:avx2_vnni"),
        ("avx2", "jit_uni_int8:avx2"),
        ("sse41", "jit_uni_int8:sse41"),
        ("amx", "brg_conv_fwd:avx10_1_512_amx"),
    ]:
        shape = (64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, True)
        assert qlib.conv2d_kernel(*shape, engine="onednn", isa=isa) == f"oneDNN {kernel}"
    saturated = qlib.conv2d(*args, engine="onednn", isa="avx2")
    assert torch.equal(saturated, qlib.conv2d(*args, engine="onednn", pairs_saturate=True))
    assert not torch.equal(saturated, qlib.conv2d(*args, engine="onednn", isa="avx512_core_vnni"))
    with pytest.raises(ValueError, match="isa must be None .* or one of oneDNN's int8 kernel families"):
        qlib.conv2d(*args, engine="onednn", isa="AVX2")
    with pytest.raises(ValueError, match="the fbgemm engine never runs oneDNN"):
        qlib.conv2d(*args, engine="fbgemm", isa="avx2")
    x, w = torch.zeros(1, 3, dtype=torch.uint8), torch.zeros(2, 3, dtype=torch.int8)
    with pytest.raises(ValueError, match="compute a Linear on the onednn engine only"):
        qlib.linear(x, 0.1, 0, w, 0.1, 0, None, 0.1, 0, engine="x86", isa="avx2")


def linear_layer(k, n, kind, per_channel, with_bias, relu, shape, seed):
    gen = torch.Generator().manual_seed(seed)
    sx, zx, sy, zy, sw, x_codes, w_codes = scales_and_codes(kind, n, k, per_channel, gen)
    if not per_channel and kind == "nearsy":
        sw = [sw[0] * (1 + 1e-9)] * n  # a float64 weight scale: packing's 1.0 / scale is a float64 division
    x, w = x_codes((*shape, k)), w_codes((n, k))
    bias = bias_for(kind, sx, sw, sy, gen) if with_bias else None
    w_scale = torch.tensor(sw, dtype=F64) if per_channel else sw[0]
    return (x, sx, zx, w, w_scale, torch.zeros(n, dtype=torch.long) if per_channel else 0, bias, sy, zy, relu)


LINEAR_SHAPES = [(512, 1000), (1280, 1000), (960, 1280), (576, 1024), (4096, 64), (2048, 17), (16, 10), (3, 7)]


@settings(max_examples=examples(60))
@given(
    k_n=st.sampled_from(LINEAR_SHAPES),
    kind=st.sampled_from(GENERATORS),
    per_channel=st.booleans(),
    with_bias=st.sampled_from([True, True, True, False]),
    relu=st.booleans(),
    shape=st.sampled_from([(1,), (2,), (5,), (2, 3)]),
    engine=st.sampled_from(["onednn", "onednn", "x86"]),
    seed=st.integers(0, 2**31),
)
def test_linear_matches_torch_on_onednn(k_n, kind, per_channel, with_bias, relu, shape, engine, seed):
    args = linear_layer(*k_n, kind, per_channel, with_bias, relu, shape, seed)
    with OneDNNLog() as log:
        expected = torch_linear(*args, engine=engine)
    ran = log.kernels("matmul")
    assert ran == ([onednn_linear_kernel(onednn_isa())] if engine == "onednn" else []), ran  # x86: FBGEMM
    assert_same_ints(qlib.linear(*args, engine=engine), expected, f"{k_n} {kind} per_channel={per_channel} {engine}")


def test_the_linear_weight_scale_goes_through_two_reciprocals():
    """Per tensor, a float64 weight scale: oneDNN multiplies by f32(1 / f32(1 / s)), not f32(s); per channel by
    f32(1 / (1.0f / f32(s))). Both differ from f32(s) for some scales, and qlib follows torch."""
    gen = torch.Generator().manual_seed(0)
    s = torch.rand(2000, generator=gen, dtype=F64) * 0.05 + 1e-3
    for per_channel in (False, True):
        assert (onednn_linear_weight_scales(s, per_channel) != s.float()).any()
    for seed in range(6):
        args = linear_layer(512, 1000, "nearsy", seed % 2 == 0, True, False, (2,), seed)
        assert_same_ints(qlib.linear(*args, engine="onednn"), torch_linear(*args, engine="onednn"))


COMPACT = [  # (shape, generator) pairs that exercise each kernel family's arithmetic under a cap
    ("3x3 s1", "full"),
    ("3x3 s2", "near"),
    ("1x1 s1", "tie"),
    ("depthwise 3x3 s1", "full"),
    ("groups 32, 4 channels a group", "nearsx"),
    ("groups 2, 8 channels a group, 1x1", "full"),
    ("groups 4, 3 channels a group, 1x1", "tie"),
    ("odd channels 5 -> 7", "full"),
    ("1 channel 3x3", "full"),
    ("1 channel 3x3, 4 wide", "full"),
    ("1 channel 1x5", "full"),
    ("long sums, 1x1 2048 -> 64", "bigk"),
    ("long sums, 3x3 512 -> 32", "bigk"),
    ("stem 7x7 s2, 3 channels", "clip"),
]


def compact_check() -> str:
    """Run in a fresh interpreter under an ONEDNN_MAX_CPU_ISA cap: the COMPACT layers on the onednn engine and a
    few Linears, each against torch and its kernel against oneDNN's; prints the elements compared and the kernels."""
    kernels = set()
    for i, (name, kind) in enumerate(COMPACT):
        args = conv_layer(name, kind, i % 2 == 0, True, i % 3 == 0, 1 + i % 2, 77 + i)
        kernel = check_conv(args, "onednn", f"{name} {kind} under {os.environ.get('ONEDNN_MAX_CPU_ISA')}")
        kernels.add(kernel.removeprefix("oneDNN "))
    for i, kind in enumerate(["full", "bigk", "nearsx", "tie"]):
        args = linear_layer(1024, 64, kind, i % 2 == 0, True, i == 1, (3,), 5 + i)
        with OneDNNLog() as log:
            expected = torch_linear(*args, engine="onednn")
        kernels.update(log.kernels("matmul"))
        assert log.kernels("matmul") == [onednn_linear_kernel(onednn_isa())]
        assert_same_ints(qlib.linear(*args, engine="onednn"), expected, kind)
    return f"{COMPARED['elements']} {' '.join(sorted(kernels))}"


@pytest.mark.parametrize(
    "cap, family, needs",
    [("AVX512_CORE", "avx512_core", None), ("AVX2_VNNI", "avx2_vnni", "avx_vnni")],
)
def test_other_isas_in_a_fresh_interpreter(cap, family, needs):
    if needs and not torch._C._cpu._get_cpu_capability().get(needs):
        pytest.skip(f"this CPU has no {needs}: oneDNN cannot run its {family} kernels here")
    code = f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); import test_onednn as t; "
    code += "print(t.onednn_isa()); print(t.compact_check())"
    isa, summary = run_with_kernels(code, {"ONEDNN_MAX_CPU_ISA": cap}).strip().splitlines()[-2:]
    compared, *kernels = summary.split()
    assert isa == family and all(k.endswith(family) or k in ("ref:any", "gemm:jit") for k in kernels), kernels
    COMPARED["elements"] += int(compared)


MODELS = ["resnet18", "mobilenet_v2"]


def quantized_model(name: str, engine: str) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(fused float model, quantized model) of torchvision's quantizable ``name``, converted on ``engine``."""
    models = pytest.importorskip("torchvision.models.quantization")
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(models, name)(weights=None, quantize=False).eval()
        model.fuse_model()
        fused = copy.deepcopy(model)
        model.qconfig = torch.ao.quantization.get_default_qconfig(engine)
        prepared = torch.ao.quantization.prepare(model)
        with torch.no_grad():
            for _ in range(2):
                prepared(torch.randn(1, 3, 64, 64))
        return fused, torch.ao.quantization.convert(prepared)


def is_layer(module: torch.nn.Module) -> bool:
    """A quantized Conv2d or Linear (fused or not)."""
    return isinstance(module, (torch.ao.nn.quantized.Conv2d, torch.ao.nn.quantized.Linear))


@pytest.fixture
def engine_set() -> Callable[[str], None]:
    before = torch.backends.quantized.engine

    def set_engine(engine: str) -> None:
        torch.backends.quantized.engine = engine

    yield set_engine
    torch.backends.quantized.engine = before


@pytest.mark.parametrize("engine", ["onednn"])  # the x86 engine's models: tests/test_torchvision_models.py
@pytest.mark.parametrize("name", MODELS)
def test_a_torchvision_model_runs_bit_for_bit(name, engine, engine_set):
    engine_set(engine)  # weights are packed for the engine set at convert
    fused, model = quantized_model(name, engine)
    packed = [getattr(m._packed_params, "_packed_params", m._packed_params) for m in model.modules() if is_layer(m)]
    backends = {packed_backend(p) for p in packed}
    assert backends == {"onednn"}, backends
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
    result = qlib.run(model, x)
    assert torch.equal(result.output.codes, expected), f"{name} on {engine}: qlib.run differs from torch"
    report = qlib.compare(fused, model, x)
    inexact = [
        f"{layer.name} ({layer.op}): {layer.mismatches} of {layer.numel}" for layer in report.layers if not layer.exact
    ]
    assert not inexact and not report.unmatched, (inexact, report.unmatched)
    COMPARED["elements"] += sum(layer.numel for layer in report.layers) + expected.numel()
