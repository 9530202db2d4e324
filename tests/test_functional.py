"""qlib.mul, cat, add_scalar and mul_scalar against torch's quantized ops (QFunctional's methods).

mul's inputs broadcast ((1, C, 1, 1) times (1, C, H, W), as mobilenet_v3's squeeze-excitation
multiplies) in every layout; cat's come channels-last (its NHWC kernel, with a scalar tail of
``C % 8`` channels) or mixed (dequantize, concatenate, quantize), some with the output's scale
and zero point; scales and zero points put values on .5 ties.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from quantized_inputs import (
    CHANNELS,
    FILLS,
    OTHER,
    RELEASE,
    assert_like_torch,
    filled,
    in_layout,
    quantized,
    run_and_compare,
    scales,
    threads,
    zero_points,
)
from torch.ao.nn.quantized import QFunctional

import qlib
from qlib.elementwise_kernels import strided_codes
from qlib.testing import assert_same_ints

# mul's vector body and scalar tail, and cat's NHWC kernel, are ATen's AVX2 kernels, which AVX-512 CPUs run too
pytestmark = pytest.mark.cpu_kind

MUL_SHAPES = [((1, 72, 1, 1), (1, 72, 8, 8)), ((1, 72, 8, 8), (1, 72, 1, 1)), ((2, 16, 5, 5), (2, 16, 5, 5)),
              ((1, 960, 1, 1), (1, 960, 2, 2)), ((70,), (70,)), ((3, 7, 2, 9), (3, 7, 2, 9)),
              ((1, 33, 1, 1), (1, 33, 4, 4)), ((1, 1, 4, 4), (1, 24, 4, 4)), ((5, 130), (5, 130)), ((130,), (5, 1))]  # fmt: skip


def same(ours: torch.Tensor, theirs: torch.Tensor, qparams: tuple[float, int], context: str = "") -> None:
    assert (theirs.q_scale(), theirs.q_zero_point()) == qparams, context
    assert_same_ints(ours, strided_codes(theirs), context)
    assert_like_torch(ours, theirs)


@st.composite
def operand(draw, shape, dtype):
    scale, zero_point = draw(scales), draw(zero_points(dtype))
    x = filled(draw(st.integers(0, 2**31 - 1)), shape, draw(st.sampled_from(FILLS)), dtype, zero_point)
    q, seen = in_layout(x, scale, zero_point, draw(st.sampled_from(["contiguous", "channels_last", "transposed"])))
    return q, seen, scale, zero_point


@settings(max_examples=examples(300))
@given(
    shapes=st.sampled_from(MUL_SHAPES),
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    relu=st.booleans(),
    data=st.data(),
)
def test_mul_matches_torch(shapes, dtype, relu, data):
    qa, a, sa, za = data.draw(operand(shapes[0], dtype))
    qb, b, sb, zb = data.draw(operand(shapes[1], dtype))
    scale, zero_point = data.draw(scales), data.draw(zero_points(dtype))
    ours = qlib.mul(a, sa, za, b, sb, zb, scale, zero_point, relu, release=RELEASE)
    op = torch.ops.quantized.mul_relu if relu else torch.ops.quantized.mul
    same(ours, op(qa, qb, scale, zero_point), (scale, zero_point))


def test_mul_beyond_int32():
    """c * m beyond int32: the vector body gives -2**31 + zero_point (the lowest code), the scalar tail the far end."""
    for n in (64, 70, 100, 127, 128, 129):
        x = torch.full((n,), 255, dtype=torch.uint8)
        q = quantized(x, 100.0, 0)
        for zero_point in (0, 200):
            ours = qlib.mul(x, 100.0, 0, x, 100.0, 0, 1e-3, zero_point)
            same(ours, torch.ops.quantized.mul(q, q, 1e-3, zero_point), (1e-3, zero_point))
            body = n // 64 * 64  # the vector body's elements, then the scalar tail's
            assert ours.tolist() == [0] * body + [255] * (n - body)


@pytest.mark.parametrize("scale", [8e37, 1e30, 1e-30, 3e-38])
def test_extreme_scales_match_torch(scale):
    """Scales near float32's ends: mul's multiplier overflows to inf (products then inf, or NaN for 0 * inf), which
    the vector body turns into -2**31 and the scalar tail's lrintf into -2**63; cat's values overflow to inf."""
    x = torch.arange(256, dtype=torch.uint8).repeat(2)[:300]
    for out_scale in (8e37, 1e-30, 1.0):
        for zero_point, out_zero_point in ((0, 0), (128, 255), (255, 1)):
            q = quantized(x, scale, zero_point)
            qparams = (out_scale, out_zero_point)
            ours = qlib.mul(x, scale, zero_point, x, scale, zero_point, *qparams)
            same(ours, torch.ops.quantized.mul(q, q, *qparams), qparams)
            ours = qlib.cat([(x, scale, zero_point), (x, 1.0, 3)], 0, *qparams)
            same(ours, torch.ops.quantized.cat([q, quantized(x, 1.0, 3)], 0, *qparams), qparams)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_large_products_follow_the_thread_count(n):
    gen = torch.Generator().manual_seed(n)
    with threads(n):
        for shape in ((1, 240, 28, 28), (70001,)):
            x = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
            q, x = in_layout(x, 100.0, 3, "channels_last" if len(shape) == 4 else "contiguous")
            same(qlib.mul(x, 100.0, 3, x, 100.0, 3, 1e-3, 7), torch.ops.quantized.mul(q, q, 1e-3, 7), (1e-3, 7))


@settings(max_examples=examples(300))
@given(
    shape=st.sampled_from([(1, 70, 3, 3), (2, 16, 5, 5), (70,), (1, 72, 1, 1), (3, 7, 2, 9)]),
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    other=st.one_of(st.sampled_from([0.0, 1.0, -1.0, 0.5, 2.5, -0.7, 13.0, -100.0, 1e-3, 3]), st.floats(-50, 50)),
    relu=st.booleans(),
    data=st.data(),
)
def test_add_scalar_and_mul_scalar_match_torch(shape, dtype, other, relu, data):
    q, x, scale, zero_point = data.draw(operand(shape, dtype))
    ours, *qparams = qlib.add_scalar(x, scale, zero_point, other, relu)
    op = torch.ops.quantized.add_scalar_relu if relu else torch.ops.quantized.add_scalar
    same(ours, op(q, other), tuple(qparams))
    ours, *qparams = qlib.mul_scalar(x, scale, zero_point, other, relu)
    op = torch.ops.quantized.mul_scalar_relu if relu else torch.ops.quantized.mul_scalar
    same(ours, op(q, other), tuple(qparams))


@st.composite
def cat_inputs(draw):
    """2 to 4 inputs of one dtype, all channels-last or of mixed layouts, some with the output's qparams."""
    dtype = draw(st.sampled_from([torch.uint8, torch.uint8, torch.int8]))
    n, h, w = draw(st.integers(1, 2)), draw(st.integers(1, 6)), draw(st.integers(1, 6))
    scale, zero_point = draw(scales), draw(zero_points(dtype))
    all_channels_last = draw(st.booleans())
    inputs = []
    for _ in range(draw(st.integers(1, 4))):
        s, z = (scale, zero_point) if draw(st.integers(0, 3)) == 0 else (draw(scales), draw(zero_points(dtype)))
        x = filled(
            draw(st.integers(0, 2**31 - 1)),
            (n, draw(st.sampled_from(CHANNELS)), h, w),
            draw(st.sampled_from(FILLS)),
            dtype,
            z,
        )
        layout = (
            "channels_last"
            if all_channels_last
            else draw(st.sampled_from(["channels_last", "contiguous", "transposed"]))
        )
        inputs.append(in_layout(x, s, z, layout) + (s, z))
    return inputs, scale, zero_point


@pytest.mark.filterwarnings("ignore:All inputs of this cat operator must share")  # torch.cat warns, then cats
@settings(max_examples=examples(100))  # up to five cats of up to four tensors per example
@given(case=cat_inputs(), relu=st.booleans())
def test_cat_matches_torch(case, relu):
    inputs, scale, zero_point = case
    qs, codes = [q for q, *_ in inputs], [(x, s, z) for _, x, s, z in inputs]
    op = torch.ops.quantized.cat_relu if relu else torch.ops.quantized.cat
    same(
        qlib.cat(codes, 1, scale, zero_point, relu, release=RELEASE), op(qs, 1, scale, zero_point), (scale, zero_point)
    )
    qf = QFunctional()
    qf.scale, qf.zero_point = scale, zero_point
    same(qlib.cat(codes, -3, scale, zero_point, release=RELEASE), qf.cat(qs, -3), (scale, zero_point))
    first = codes[0][1:]
    same(qlib.cat(codes, 1, *first, release=RELEASE), torch.cat(qs, 1), first)
    if all(x.shape == codes[0][0].shape for x, _, _ in codes):
        for dim in (0, 2, 3):
            same(
                qlib.cat(codes, dim, scale, zero_point, relu, release=RELEASE),
                op(qs, dim, scale, zero_point),
                (scale, zero_point),
            )


def test_cat_ties_and_the_other_release():
    """Scale ratios of 1/2 and 1/4 with odd zero points: every requantized value is a .5 tie, which torch 2.13
    rounds otherwise than 2.14 in the NHWC kernel's scalar tail and on the generic path."""
    differ = 0
    for ca, cb in ((21, 13), (8, 40), (5, 3), (64, 7), (32, 33)):
        for za, zb, zo in ((3, 6, 7), (1, 2, 129), (128, 255, 1)):
            gen = torch.Generator().manual_seed(ca * cb + zo)
            xa = torch.randint(0, 256, (2, ca, 3, 3), generator=gen, dtype=torch.uint8)
            xb = torch.randint(0, 256, (2, cb, 3, 3), generator=gen, dtype=torch.uint8)
            for la, lb in (
                ("channels_last", "channels_last"),
                ("contiguous", "channels_last"),
                ("contiguous", "contiguous"),
            ):
                (qa, a), (qb, b) = in_layout(xa, 0.5, za, la), in_layout(xb, 0.25, zb, lb)
                codes = [(a, 0.5, za), (b, 0.25, zb)]
                ours, other = (qlib.cat(codes, 1, 1.0, zo, release=r) for r in (RELEASE, OTHER))
                same(ours, torch.ops.quantized.cat([qa, qb], 1, 1.0, zo), (1.0, zo))
                differ += int((ours != other).sum())
    assert differ > 0


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_run_computes_float_functional_ops(memory_format):
    """A model's FloatFunctional mul, cat, add_scalar and mul_scalar, converted, in qlib.run and compare."""

    class Functional(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.scale = torch.nn.AdaptiveAvgPool2d(1)
            self.mul, self.cat = torch.ao.nn.quantized.FloatFunctional(), torch.ao.nn.quantized.FloatFunctional()
            self.shift, self.flip = torch.ao.nn.quantized.FloatFunctional(), torch.ao.nn.quantized.FloatFunctional()
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.quant(x).contiguous(memory_format=memory_format)
            y = self.mul.mul(torch.nn.functional.hardsigmoid(self.scale(x)), x)
            y = self.cat.cat([y, x[:, :5].contiguous(memory_format=memory_format)], 1)
            return self.dequant(self.flip.mul_scalar(self.shift.add_scalar(y, 0.75), -1.5))

    torch.manual_seed(0)
    _, result, _ = run_and_compare(Functional().eval(), torch.randn(4, 20, 9, 9), torch.randn(2, 20, 9, 9))
    assert [step.op for step in result.activations.values()][3:7] == ["mul", "cat", "add_scalar", "mul_scalar"]


U8 = torch.zeros(2, 3, dtype=torch.uint8)


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: qlib.mul(U8, 0.1, 0, U8.to(torch.int8), 0.1, 0, 0.1, 0), TypeError, "one dtype"),
        (lambda: qlib.mul(U8, 0.1, 0, U8[:, :2], 0.1, 0, 0.1, 0), ValueError, r"broadcast.*\(2, 3\) and \(2, 2\)"),
        (lambda: qlib.mul(U8.float(), 0.1, 0, U8, 0.1, 0, 0.1, 0), TypeError, "a must be a tensor of 8-bit codes"),
        (lambda: qlib.mul(U8, 0.1, 0, U8, 0.1, 0, 0.1, 0, relu=1), TypeError, "relu must be True or False"),
        (lambda: qlib.mul(U8, 0.1, 0, U8, -1.0, 0, 0.1, 0), ValueError, "b_scale must be a finite positive"),
        (lambda: qlib.cat([], 0, 0.1, 0), TypeError, "non-empty list"),
        (lambda: qlib.cat([U8], 0, 0.1, 0), TypeError, r"tensors\[0\]'s codes must be a tensor of 8-bit codes"),
        (lambda: qlib.cat([(U8, 0.1, 0), (U8.to(torch.int8), 0.1, 0)], 0, 0.1, 0), TypeError, "one dtype"),
        (lambda: qlib.cat([(U8, 0.1, 0), (U8[:, :2], 0.1, 0)], 0, 0.1, 0), ValueError, "but along dim 0"),
        (lambda: qlib.cat([(U8, 0.1, 0)], 2, 0.1, 0), ValueError, r"dim must be an int in \[-2, 1\]"),
        (lambda: qlib.cat([(U8, 0.1, 300)], 0, 0.1, 0), ValueError, r"tensors\[0\]'s zero_point must lie in"),
        (lambda: qlib.add_scalar(U8, 0.1, 0, "1"), TypeError, "other must be a number"),
        (lambda: qlib.mul_scalar(U8, 0.1, 0, None), TypeError, "other must be a number"),
        (lambda: qlib.mul_scalar(U8, 0.1, 0, 2.0, relu=None), TypeError, "relu must be True or False"),
    ],
)
def test_bad_arguments_get_clear_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
