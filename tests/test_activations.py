"""qlib.hardswish, hardsigmoid, sigmoid and clamp against torch's quantized activations.

torch computes some elements with its vector body and the others with its scalar tail, which
dequantize and quantize differently; the inputs here come in every layout (which moves the tail),
with lengths around multiples of 64, ties at .5 with odd zero points, codes at the ends of the
range, more than 32768 elements on several threads, and on the qnnpack engine's own kernels.
"""

from __future__ import annotations

import pytest
import torch
import torch.ao.nn.quantized as nnq
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from quantized_inputs import (
    FILLS,
    LAYOUTS,
    OTHER,
    RELEASE,
    assert_like_torch,
    engine,
    filled,
    in_layout,
    quantized,
    run_and_compare,
    scales,
    threads,
    zero_points,
)

import qlib
from qlib.elementwise_kernels import strided_codes
from qlib.testing import assert_same_ints

# the vector body and scalar tail modelled are those of ATen's AVX2 kernels, which AVX-512 CPUs run too
pytestmark = pytest.mark.cpu_kind

SHAPES = [(1, 70, 3, 3), (2, 16, 5, 5), (1, 960, 1, 1), (1, 1280), (3, 7, 2, 9), (1, 33, 8, 8), (70,), (63,), (64,),
          (129,), (1, 24, 16, 16), (2, 3, 65), (1, 72, 1, 1), (5, 13, 4, 4)]  # fmt: skip


@st.composite
def codes(draw, dtypes=(torch.uint8, torch.uint8, torch.int8)):
    """(quantized tensor, its codes with its strides, scale, zero point)."""
    dtype = draw(st.sampled_from(dtypes))
    scale, zero_point = draw(scales), draw(zero_points(dtype))
    shape = draw(st.sampled_from(SHAPES))
    x = filled(draw(st.integers(0, 2**31 - 1)), shape, draw(st.sampled_from(FILLS)), dtype, zero_point)
    q, seen = in_layout(x, scale, zero_point, draw(st.sampled_from(LAYOUTS)))
    return q, seen, scale, zero_point


def same(ours: torch.Tensor, theirs: torch.Tensor, qparams: tuple[float, int] | None = None, context: str = "") -> None:
    """qlib's codes equal torch's result's, laid out alike; its scale and zero point are ``qparams``."""
    if qparams is not None:
        assert (theirs.q_scale(), theirs.q_zero_point()) == qparams, context
    assert_same_ints(ours, strided_codes(theirs), context)
    assert_like_torch(ours, theirs)


@settings(max_examples=examples(300))
@given(t=codes(), scale=scales, data=st.data())
def test_hardswish_matches_torch(t, scale, data):
    q, x, x_scale, x_zero_point = t
    zero_point = data.draw(zero_points(x.dtype))
    ours = qlib.hardswish(x, x_scale, x_zero_point, scale, zero_point, release=RELEASE)
    same(ours, torch.ops.quantized.hardswish(q, scale, zero_point), (scale, zero_point))
    module = nnq.Hardswish(scale, zero_point)  # keeps its scale in a float32 tensor
    ours = qlib.hardswish(x, x_scale, x_zero_point, module.scale.item(), zero_point, release=RELEASE)
    same(ours, module(q), (module.scale.item(), zero_point))


@settings(max_examples=examples(300))
@given(t=codes())
def test_hardsigmoid_matches_torch(t):
    q, x, scale, zero_point = t
    ours, *qparams = qlib.hardsigmoid(x, scale, zero_point, release=RELEASE)
    same(ours, torch.nn.Hardsigmoid()(q), tuple(qparams))
    copy = q.clone()  # in place: the codes stay in the copy's layout
    ours = qlib.hardsigmoid(strided_codes(copy), scale, zero_point, release=RELEASE)[0]
    assert F.hardsigmoid(copy, inplace=True) is copy
    assert_same_ints(ours, strided_codes(copy))
    assert (copy.q_scale(), copy.q_zero_point()) == tuple(qparams)


@settings(max_examples=examples(300))
@given(t=codes(), explicit=st.booleans(), data=st.data())
def test_sigmoid_matches_torch(t, explicit, data):
    q, x, scale, zero_point = t
    if explicit:  # quantized::sigmoid, the output's scale and zero point given
        qparams = (data.draw(scales), data.draw(zero_points(x.dtype)))
        ours, *given_back = qlib.sigmoid(x, scale, zero_point, *qparams, release=RELEASE)
        assert tuple(given_back) == qparams
        same(ours, torch.ops.quantized.sigmoid(q, *qparams), qparams)
    else:
        ours, *qparams = qlib.sigmoid(x, scale, zero_point, release=RELEASE)
        same(ours, torch.sigmoid(q), tuple(qparams))


@settings(max_examples=examples(300))
@given(
    t=codes(),
    low=st.sampled_from([0.0, -1.0, 0.5, -0.05, 0.3, -float("inf"), float("nan"), None]),
    high=st.sampled_from([6.0, 1.0, 2.55, 0.05, 127.5, 3e38, None]),
)
def test_clamp_matches_torch(t, low, high):
    """torch.clamp (min above max too: every code is Q(max)), Hardtanh, ReLU6 (float modules and nnq.ReLU6)."""
    q, x, scale, zero_point = t
    if low is None and high is None:
        return
    ours = qlib.clamp(x, scale, zero_point, low, high, release=RELEASE)
    same(ours, torch.clamp(q, low, high), (scale, zero_point))
    if low is not None and high is not None and low <= high:  # F.hardtanh refuses low > high (and NaN)
        same(ours, F.hardtanh(q, low, high), (scale, zero_point))
    relu6 = qlib.clamp(x, scale, zero_point, 0.0, 6.0, release=RELEASE)
    for module in (torch.nn.ReLU6(), nnq.ReLU6(), torch.nn.Hardtanh(0.0, 6.0)):
        same(relu6, module(q), (scale, zero_point))
    copy = q.clone()  # in place: the codes stay in the copy's layout
    relu6 = qlib.clamp(strided_codes(copy), scale, zero_point, 0.0, 6.0, release=RELEASE)
    assert torch.nn.ReLU6(inplace=True)(copy) is copy
    assert_same_ints(relu6, strided_codes(copy))


def test_ties_and_the_other_release():
    """Power-of-two scales and odd zero points put requantized values on .5 exactly: torch 2.13's scalar tail
    rounds them otherwise than 2.14's, and qlib's other release gives other codes."""
    ramp = torch.arange(256, dtype=torch.uint8).repeat(3)[:700]
    xs = [ramp, ramp[:672].view(1, 42, 4, 4).contiguous(memory_format=torch.channels_last)]
    differ = {"hardswish": 0, "sigmoid": 0, "clamp": 0}
    for scale in (0.5, 0.25, 2.0**-6, 3 / 128, 6 / 512, 0.1):
        for zero_point in (0, 1, 3, 127, 128, 129, 255):
            for x in xs:
                q = quantized(x, scale, zero_point)
                for out_scale, out_zero_point in ((1.0, 1), (0.5, 3), (2.0**-6, 129), (0.375, 0)):
                    args = (x, scale, zero_point, out_scale, out_zero_point)
                    ours, other = (qlib.hardswish(*args, release=r) for r in (RELEASE, OTHER))
                    same(ours, torch.ops.quantized.hardswish(q, out_scale, out_zero_point))
                    differ["hardswish"] += int((ours != other).sum())
                    ours, other = (qlib.sigmoid(*args, release=r)[0] for r in (RELEASE, OTHER))
                    same(ours, torch.ops.quantized.sigmoid(q, out_scale, out_zero_point))
                    differ["sigmoid"] += int((ours != other).sum())
                same(qlib.hardsigmoid(x, scale, zero_point)[0], torch.nn.Hardsigmoid()(q))
                for low, high in ((-0.75, 2.5), (0.25 * scale, 2.5 * scale), (-1.5 * scale, 3.5 * scale)):
                    ours, other = (qlib.clamp(x, scale, zero_point, low, high, release=r) for r in (RELEASE, OTHER))
                    same(ours, F.hardtanh(q, low, high))
                    differ["clamp"] += int((ours != other).sum())
    assert all(count > 0 for count in differ.values()), differ


@pytest.mark.parametrize("scale", [8e37, 1e30, 1e-30, 3e-38])
def test_extreme_scales_match_torch(scale):
    """Scales near float32's ends: infinite values, NaN from inf * 0, outputs past int32 on both paths."""
    x = torch.arange(256, dtype=torch.uint8).repeat(2)[:300]
    for out_scale in (8e37, 1e-30, 1.0):
        for zero_point, out_zero_point in ((0, 0), (128, 255), (255, 1)):
            q = quantized(x, scale, zero_point)
            ours = qlib.hardswish(x, scale, zero_point, out_scale, out_zero_point)
            same(ours, torch.ops.quantized.hardswish(q, out_scale, out_zero_point))
            ours = qlib.sigmoid(x, scale, zero_point, out_scale, out_zero_point)[0]
            same(ours, torch.ops.quantized.sigmoid(q, out_scale, out_zero_point))
            same(qlib.hardsigmoid(x, scale, zero_point)[0], F.hardsigmoid(q))
            same(qlib.clamp(x, scale, zero_point, -1.0, 1.0), torch.clamp(q, -1.0, 1.0))


@pytest.mark.parametrize("n", [1, 2, 3])
def test_large_tensors_follow_the_thread_count(n):
    """Above 32768 elements torch cuts the loop into one chunk per thread, each with its own scalar tail."""
    gen = torch.Generator().manual_seed(n)
    with threads(n):
        for shape in ((1, 240, 28, 28), (1, 33, 41, 29), (70001,)):
            x = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
            for layout in ("channels_last", "contiguous"):
                q, x = in_layout(x, 0.0173, 129, layout)
                same(qlib.hardswish(x, 0.0173, 129, 0.011, 3), torch.ops.quantized.hardswish(q, 0.011, 3))
                same(qlib.hardsigmoid(x, 0.0173, 129)[0], F.hardsigmoid(q))
                same(qlib.sigmoid(x, 0.0173, 129)[0], torch.sigmoid(q))
    x = torch.full((2**16 + 5,), 131, dtype=torch.uint8)  # every element on a tie: the split shows
    one, two = (qlib.hardswish(x, 1.0, 128, 2.0, 1, release="2.13", threads=k) for k in (1, 2))
    assert not torch.equal(one, two)


def test_the_qnnpack_engine():
    """QNNPACK's Hardswish table and its clamp (a channels-last input comes back scrambled) are modelled; its
    Hardsigmoid and Sigmoid tables give the other engines' codes; it needs clamp's two bounds."""
    gen = torch.Generator().manual_seed(7)
    base = torch.randint(0, 256, (2, 24, 9, 9), generator=gen, dtype=torch.uint8)
    for layout in ("channels_last", "contiguous", "transposed"):
        for scale, zero_point in ((0.0473, 117), (0.5, 3), (1 / 3, 255)):
            q, x = in_layout(base, scale, zero_point, layout)
            with engine("qnnpack"):
                same(qlib.hardswish(x, scale, zero_point, 0.031, 9), torch.ops.quantized.hardswish(q, 0.031, 9))
                same(qlib.hardsigmoid(x, scale, zero_point)[0], F.hardsigmoid(q))
                same(qlib.sigmoid(x, scale, zero_point)[0], torch.sigmoid(q))
                with pytest.raises(RuntimeError, match="failed to create QNNPACK sigmoid"):
                    torch.ops.quantized.sigmoid(q, 0.02, 0)
                with pytest.raises(ValueError, match="scale of 1/256 and a zero point of 0 only"):
                    qlib.sigmoid(x, scale, zero_point, 0.02, 0)
                for low, high in ((0.0, 6.0), (-1.0, 1.0), (0.5 * scale, 2.5 * scale)):
                    same(qlib.clamp(x, scale, zero_point, low, high), torch.clamp(q, low, high))
                same(qlib.clamp(x, scale, zero_point, 0.0, 6.0), nnq.ReLU6()(q))
                with pytest.raises(RuntimeError, match="Both min and max"):
                    torch.clamp(q, min=0.0)
                with pytest.raises(ValueError, match="needs both min and max"):
                    qlib.clamp(x, scale, zero_point, 0.0)
                try:  # refused where QNNPACK finds Q(min) > Q(max), and only there
                    theirs = torch.clamp(q, 1.0, 0.0)
                except RuntimeError:
                    with pytest.raises(ValueError, match=r"Q\(min\) <= Q\(max\)"):
                        qlib.clamp(x, scale, zero_point, 1.0, 0.0)
                else:
                    same(qlib.clamp(x, scale, zero_point, 1.0, 0.0), theirs)
            qi, xi = in_layout(base.to(torch.int8), scale, -3, layout)
            with engine("qnnpack"):  # qint8 codes take the other engines' kernels
                same(qlib.hardswish(xi, scale, -3, 0.031, 9), torch.ops.quantized.hardswish(qi, 0.031, 9))
                same(qlib.clamp(xi, scale, -3, 0.0, 6.0), torch.clamp(qi, 0.0, 6.0))


@pytest.mark.parametrize("inplace", [False, True])
@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_run_computes_the_activations_of_a_model(memory_format, inplace):
    """qlib.run puts its activations in torch's place (in-place ones too) and gets torch's output; compare
    finds every step exact (without in-place ops, which change the results compare keeps of earlier steps)."""

    class Activations(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.hardswish = torch.nn.Hardswish()
            self.relu6 = torch.nn.ReLU6(inplace=inplace)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.hardswish(self.quant(x).contiguous(memory_format=memory_format))
            x = F.hardsigmoid(torch.clamp(self.relu6(x), -0.5, 2.0), inplace=inplace)
            return self.dequant(torch.sigmoid(F.hardtanh(x, 0.1, 0.9)))

    torch.manual_seed(0)
    calibration, x = torch.randn(4, 20, 9, 9) * 4, torch.randn(2, 20, 9, 9) * 4
    _, result, _ = run_and_compare(Activations().eval(), calibration, x, compare=not inplace)
    assert [step.op for step in result.activations.values()][1:7] == [
        "Hardswish", "ReLU6", "clamp", "hardsigmoid_" if inplace else "hardsigmoid", "hardtanh", "sigmoid",
    ]  # fmt: skip


U8 = torch.zeros(2, 3, dtype=torch.uint8)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: qlib.hardswish(U8.float(), 0.1, 0, 0.1, 0), TypeError, r"x must be a tensor of 8-bit codes.*float32"),
        (lambda: qlib.hardswish(quantized(U8, 0.1, 0), 0.1, 0, 0.1, 0), TypeError, "a quantized tensor"),
        (lambda: qlib.hardswish(U8.int(), 0.1, 0, 0.1, 0), TypeError, "torch.uint8 .* or torch.int8"),
        (lambda: qlib.hardswish(U8, 0.0, 0, 0.1, 0), ValueError, "x_scale must be a finite positive"),
        (lambda: qlib.hardswish(U8, 0.1, 0, 0.1, 256), ValueError, r"zero_point must lie in \[0, 255\]"),
        (lambda: qlib.hardswish(U8.to(torch.int8), 0.1, 0, 0.1, 200), ValueError, r"\[-128, 127\]"),
        (lambda: qlib.hardswish(U8, 0.1, 0, 0.1, 0, threads=0), ValueError, "threads must be a positive int"),
        (lambda: qlib.hardswish(U8, 0.1, 0, 0.1, 0, engine="arm"), ValueError, "engine must be one of"),
        (lambda: qlib.hardswish(U8, 0.1, 0, 0.1, 0, release="2.12"), ValueError, "qlib reproduces torch"),
        (lambda: qlib.hardsigmoid(U8, float("nan"), 0), ValueError, "x_scale must be a finite positive"),
        (lambda: qlib.sigmoid(U8, 0.1, 0, 0.1), ValueError, "give both scale and zero_point"),
        (lambda: qlib.clamp(U8, 0.1, 0), ValueError, "give min, max or both"),
        (lambda: qlib.clamp(U8, 0.1, 0, "0"), TypeError, "min must be a number or None"),
        (lambda: qlib.clamp(U8, 0.1, 0, 0.0, torch.tensor(1.0)), TypeError, "max must be a number or None"),
        (lambda: qlib.clamp(U8, 0.1, 0, -1e40), ValueError, "min must fit in float32"),
    ],
)
def test_bad_arguments_get_clear_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
