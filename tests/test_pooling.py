"""qlib.max_pool2d, avg_pool2d, adaptive_avg_pool2d and mean against torch's quantized kernels.

The inputs come in every layout torch picks a kernel by (channels-last, contiguous, strided views,
(N, C, 1, 1) tensors that are both), with channel counts around the vector widths, windows whose
sums land on .5 ties with odd zero points, and codes at the ends of the range.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from quantized_inputs import (
    OTHER,
    RELEASE,
    assert_like_torch,
    engine,
    in_layout,
    quantized,
    quantized_4d,
    run_and_compare,
    threads,
)

import qlib
from qlib.elementwise_kernels import strided_codes
from qlib.testing import assert_same_ints

# avg_pool2d's channels-last kernel is the one quantized kernel with an AVX-512 version of its own
pytestmark = pytest.mark.cpu_kind


def same(ours: torch.Tensor, theirs: torch.Tensor, q: torch.Tensor, context: str = "") -> None:
    """qlib's codes equal torch's result's, with its layout; the scale and zero point are the input's."""
    assert (theirs.q_scale(), theirs.q_zero_point()) == (q.q_scale(), q.q_zero_point())
    assert_same_ints(ours, theirs.int_repr(), context)
    assert_like_torch(ours, theirs)


@settings(max_examples=examples(300))
@given(
    t=quantized_4d(),
    kernel=st.integers(1, 4),
    stride=st.sampled_from([None, 1, 2, 3]),
    dilation=st.integers(1, 2),
    ceil_mode=st.booleans(),
    data=st.data(),
)
def test_max_pool2d_matches_torch(t, kernel, stride, dilation, ceil_mode, data):
    q, x, _, _ = t
    padding = data.draw(st.integers(0, kernel // 2))
    reach = dilation * (kernel - 1) + 1
    if min(x.shape[2:]) + 2 * padding < reach:
        return
    ours = qlib.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
    same(ours, F.max_pool2d(q, kernel, stride, padding, dilation, ceil_mode), q)


@settings(max_examples=examples(300))
@given(
    t=quantized_4d(),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    stride=st.sampled_from([None, 1, 2, 3]),
    ceil_mode=st.booleans(),
    count_include_pad=st.booleans(),
    divisor=st.sampled_from([None, None, 1, 3, 7, -2]),
    data=st.data(),
)
def test_avg_pool2d_matches_torch(t, kernel, stride, ceil_mode, count_include_pad, divisor, data):
    q, x, scale, zero_point = t
    padding = (data.draw(st.integers(0, kernel[0] // 2)), data.draw(st.integers(0, kernel[1] // 2)))
    if x.shape[2] + 2 * padding[0] < kernel[0] or x.shape[3] + 2 * padding[1] < kernel[1]:
        return
    args = (kernel, stride, padding, ceil_mode, count_include_pad, divisor)
    ours = qlib.avg_pool2d(x, scale, zero_point, *args, release=RELEASE)
    same(ours, F.avg_pool2d(q, *args), q)


@settings(max_examples=examples(300))
@given(t=quantized_4d(spatial=(1, 16)), data=st.data())
def test_adaptive_avg_pool2d_matches_torch(t, data):
    q, x, scale, zero_point = t
    h, w = x.shape[2:]
    size = data.draw(st.one_of(st.just(1), st.tuples(st.integers(1, h + 2), st.integers(1, w + 2))))
    ours = qlib.adaptive_avg_pool2d(x, scale, zero_point, size, release=RELEASE)
    same(ours, F.adaptive_avg_pool2d(q, size), q)
    same(ours, torch.nn.AdaptiveAvgPool2d(size)(q), q)


@settings(max_examples=examples(300))
@given(
    t=quantized_4d(spatial=(1, 20)),
    dim=st.sampled_from([[2, 3], [2, 3], [3], [2], [1], [1, 2, 3], [-1, -2], [0], [0, 1, 2, 3], [3, 1]]),
    keepdim=st.booleans(),
)
def test_mean_matches_torch(t, dim, keepdim):
    q, x, scale, zero_point = t
    ours = qlib.mean(x, scale, zero_point, dim, keepdim, release=RELEASE)
    same(ours, torch.mean(q, dim, keepdim=keepdim), q, f"dim={dim} keepdim={keepdim} strides={x.stride()}")


@settings(max_examples=examples(100))
@given(t=quantized_4d(spatial=(1, 9)), kernel=st.integers(1, 3), data=st.data())
def test_three_dimensional_inputs_match_torch(t, kernel, data):
    """(C, H, W) inputs take the contiguous kernels, whatever their strides."""
    q, x, scale, zero_point = t
    q, x = q[0], x[0]
    padding = data.draw(st.integers(0, kernel // 2))
    if min(x.shape[1:]) + 2 * padding < kernel:
        return
    same(qlib.max_pool2d(x, kernel, 1, padding), F.max_pool2d(q, kernel, 1, padding), q)
    same(qlib.avg_pool2d(x, scale, zero_point, kernel, 1, padding), F.avg_pool2d(q, kernel, 1, padding), q)
    same(qlib.adaptive_avg_pool2d(x, scale, zero_point, (2, 3)), F.adaptive_avg_pool2d(q, (2, 3)), q)
    same(qlib.mean(x, scale, zero_point, [1, 2]), torch.mean(q, [1, 2]), q)


def test_window_sums_on_ties():
    """Window sums at .5 exactly (even windows, odd zero points), on every channel count of the tails, both
    layouts: torch 2.13 rounds the NHWC kernels' scalar channels (and the adaptive pooling's vector ones)
    otherwise than 2.14, and qlib's other release gives other codes."""
    differ = {"avg_pool2d": 0, "adaptive_avg_pool2d": 0, "mean": 0}
    for channels in (5, 8, 13, 16, 24, 31, 40, 70):
        for zero_point in (1, 3, 127, 129, 255):
            gen = torch.Generator().manual_seed(channels * 1000 + zero_point)
            codes = torch.randint(0, 256, (2, channels, 6, 6), generator=gen, dtype=torch.uint8)
            for layout in ("contiguous", "channels_last"):
                for scale in (0.5, 1.0, 0.1, 1 / 3):
                    q, x = in_layout(codes, scale, zero_point, layout)
                    calls = [
                        ("avg_pool2d", F.avg_pool2d(q, 2), (2,)),
                        ("avg_pool2d", F.avg_pool2d(q, 3, 1, 1, count_include_pad=False), (3, 1, 1, False, False)),
                        ("adaptive_avg_pool2d", F.adaptive_avg_pool2d(q, (3, 2)), ((3, 2),)),
                        ("adaptive_avg_pool2d", F.adaptive_avg_pool2d(q, 1), (1,)),
                        ("mean", torch.mean(q.transpose(2, 3), (2, 3)), None),
                    ]
                    for name, theirs, args in calls:
                        function = getattr(qlib, name)
                        if args is None:  # mean of a transposed tensor: dequantize, at::mean, quantize
                            xt = strided_codes(q.transpose(2, 3))
                            ours, other = (function(xt, scale, zero_point, (2, 3), release=r) for r in (RELEASE, OTHER))
                        else:
                            ours, other = (function(x, scale, zero_point, *args, release=r) for r in (RELEASE, OTHER))
                        assert_same_ints(ours, theirs.int_repr(), f"{name}{args} {layout} zp={zero_point}")
                        differ[name] += int((other != ours).sum())
    assert all(count > 0 for count in differ.values()), differ


def test_avg_pool2d_channels_last_follows_the_cpu_in_torch_2_13():
    """The NHWC average pooling splits its channels at C // 16 * 16 on AVX-512 kernels, C // 8 * 8 on AVX2
    ones; in torch 2.13 the split moves codes, in 2.14 it moves none."""
    codes = torch.randint(0, 256, (2, 24, 6, 6), generator=torch.Generator().manual_seed(3), dtype=torch.uint8)
    q, x = in_layout(codes, 0.5, 3, "channels_last")
    here = torch.backends.cpu.get_cpu_capability()
    assert_same_ints(qlib.avg_pool2d(x, 0.5, 3, 2, capability=here), F.avg_pool2d(q, 2).int_repr())
    avx2, avx512 = (qlib.avg_pool2d(x, 0.5, 3, 2, release="2.13", capability=c) for c in ("AVX2", "avx512"))
    assert (avx2 != avx512).sum() > 0 and torch.equal(avx2[:, :8], avx512[:, :8])  # channels 8-15 differ
    avx2, avx512 = (qlib.avg_pool2d(x, 0.5, 3, 2, release="2.14", capability=c) for c in ("AVX2", "AVX512"))
    assert torch.equal(avx2, avx512)


@pytest.mark.parametrize("size", [(1, 2), (2, 2), (3, 1)])
@pytest.mark.parametrize("channels", [3, 16, 9])
def test_an_nchw_one_by_one_tensor_takes_the_nhwc_kernels(size, channels):
    """(N, C, 1, 1) with contiguous strides is channels-last contiguous too: the NHWC kernels write its pooled
    codes in channels-last order into a contiguous tensor. Channels-last strides keep them in order."""
    codes = torch.randint(0, 256, (2, channels, 1, 1), generator=torch.Generator().manual_seed(channels)).to(
        torch.uint8
    )
    for q in (quantized(codes, 0.1, 7), F.adaptive_avg_pool2d(quantized(codes.repeat(1, 1, 2, 2), 0.1, 7), 1)):
        x = strided_codes(q)
        same(qlib.adaptive_avg_pool2d(x, 0.1, 7, size), F.adaptive_avg_pool2d(q, size), q)
        same(qlib.max_pool2d(x, 2, 1, 1), F.max_pool2d(q, 2, 1, 1), q)
        same(qlib.avg_pool2d(x, 0.1, 7, 2, 1, 1), F.avg_pool2d(q, 2, 1, 1), q)


@pytest.mark.parametrize("scale", [8e37, 1e-30, 3e-38])
def test_extreme_scales_match_torch(scale):
    """Scales near float32's ends: mean's dequantized values and their sums overflow to infinities."""
    codes = torch.arange(256, dtype=torch.uint8).repeat(3)[:600].view(2, 20, 3, 5)
    for zero_point in (0, 128, 255):
        for layout in ("channels_last", "contiguous", "transposed"):
            q, x = in_layout(codes, scale, zero_point, layout)
            for dim in ((2, 3), (1,), (3,)):
                same(qlib.mean(x, scale, zero_point, dim), torch.mean(q, dim), q)
            same(qlib.avg_pool2d(x, scale, zero_point, 2), F.avg_pool2d(q, 2), q)
            same(qlib.adaptive_avg_pool2d(x, scale, zero_point, 2), F.adaptive_avg_pool2d(q, 2), q)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_mean_of_large_channels_last_tensors_over_threads(n):
    """Large tensors: torch splits the channels between threads (at multiples of 32), each channel's sum alike."""
    gen = torch.Generator().manual_seed(n)
    with threads(n):
        for shape in ((1, 240, 28, 28), (1, 33, 41, 29), (2, 7, 30, 30)):
            codes = torch.randint(0, 256, shape, generator=gen, dtype=torch.uint8)
            for layout in ("channels_last", "contiguous"):
                q, x = in_layout(codes, 0.0173, 129, layout)
                same(qlib.mean(x, 0.0173, 129, (2, 3)), torch.mean(q, (2, 3)), q)
                same(qlib.adaptive_avg_pool2d(x, 0.0173, 129, 1), F.adaptive_avg_pool2d(q, 1), q)


def test_the_qnnpack_engine():
    """QNNPACK's poolings (quint8 codes, 4-d, no ceil_mode) are modelled but its dilated max pooling, which
    qlib refuses; QNNPACK's refusals are qlib's too. qint8 codes take the other engines' kernels."""
    gen = torch.Generator().manual_seed(7)
    codes = torch.randint(0, 256, (2, 24, 12, 9), generator=gen, dtype=torch.uint8)
    for layout in ("channels_last", "contiguous", "transposed"):
        for scale, zero_point in ((0.0473, 117), (1 / 3, 0), (0.5, 255)):
            q, x = in_layout(codes, scale, zero_point, layout)
            with engine("qnnpack"):
                same(qlib.max_pool2d(x, 3, 2, 1), F.max_pool2d(q, 3, 2, 1), q)
                for args in ((3, 1, 1, False, False), (2, 2, 1, False, True, 5), ((2, 3), 1, (1, 0)), ((3, 4),)):
                    same(qlib.avg_pool2d(x, scale, zero_point, *args), F.avg_pool2d(q, *args), q)
                for size in (1, 3, (4, 3), (12, 1), (2, 4), (5, 9)):  # windows of (H / OH, W / OW) where they divide
                    same(qlib.adaptive_avg_pool2d(x, scale, zero_point, size), F.adaptive_avg_pool2d(q, size), q)
                for dim, keepdim in (((2, 3), False), ((2, 3), True), ((3, 2), False), ((-2, -1), True)):
                    same(qlib.mean(x, scale, zero_point, dim, keepdim), torch.mean(q, dim, keepdim=keepdim), q)
                with pytest.raises(NotImplementedError, match="dilation above 1"):
                    qlib.max_pool2d(x, 2, 1, 0, 2)
                for pool in (F.max_pool2d, F.avg_pool2d):
                    with pytest.raises(RuntimeError):
                        pool(q, 1)
                    with pytest.raises(RuntimeError):
                        pool(q[0], 2)
                with pytest.raises(ValueError, match="refuses a 1x1 window"):
                    qlib.max_pool2d(x, 1)
                with pytest.raises(ValueError, match="4-d input only"):
                    qlib.avg_pool2d(x[0], scale, zero_point, 2)
            qi, xi = in_layout(codes.to(torch.int8), scale, -3, layout)
            with engine("qnnpack"):
                same(qlib.mean(xi, scale, -3, (2, 3)), torch.mean(qi, (2, 3)), qi)
                same(qlib.avg_pool2d(xi, scale, -3, 2), F.avg_pool2d(qi, 2), qi)
                same(qlib.adaptive_avg_pool2d(xi, scale, -3, 3), F.adaptive_avg_pool2d(qi, 3), qi)


@pytest.mark.parametrize("memory_format", [torch.channels_last, torch.contiguous_format])
def test_run_computes_the_poolings_of_a_model(memory_format):
    """qlib.run puts its poolings in torch's place, through the operator table, in either layout (which
    picks their kernels), and gets torch's output; compare finds every step exact."""

    class Pools(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.pool = torch.nn.MaxPool2d(3, 2, 1, ceil_mode=True)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            x = self.pool(self.quant(x).contiguous(memory_format=memory_format))
            x = F.adaptive_avg_pool2d(F.avg_pool2d(x, 2, 1, count_include_pad=False), (3, 2))
            return self.dequant(x.mean((2, 3)))

    torch.manual_seed(0)
    _, result, _ = run_and_compare(Pools().eval(), torch.randn(4, 20, 12, 12), torch.randn(2, 20, 12, 12))
    assert [step.op for step in result.activations.values()][1:5] == [
        "MaxPool2d", "avg_pool2d", "_adaptive_avg_pool2d", "mean",
    ]  # fmt: skip


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4), 2), TypeError, r"x must be a tensor of 8-bit codes.*float32"),
        (
            lambda: qlib.max_pool2d(quantized(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0), 2),
            TypeError,
            "a quantized tensor",
        ),
        (lambda: qlib.max_pool2d(torch.zeros(4, 4, dtype=torch.uint8), 2), ValueError, "3-d .* or 4-d"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 0, 4, 4, dtype=torch.uint8), 2), ValueError, "above 0"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0), ValueError, "kernel_size must be"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), (2, 2, 2)), ValueError, "pair"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2, 0), ValueError, "stride must be"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2, 1, 2), ValueError, "at most half"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 5), ValueError, "too small"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2, ceil_mode=1), TypeError, "ceil_mode"),
        (lambda: qlib.max_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 2, engine="cpu"), ValueError, "engine"),
        (lambda: qlib.avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.0, 0, 2), ValueError, "scale must"),
        (lambda: qlib.avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 256, 2), ValueError, r"\[0, 255\]"),
        (
            lambda: qlib.avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0, 2, divisor_override=0),
            ValueError,
            "divisor_override",
        ),
        (
            lambda: qlib.avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0, 2, capability="NEON"),
            ValueError,
            "capability must be one of 'AVX2', 'AVX512'",
        ),
        (
            lambda: qlib.avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0, 2, release="2.12"),
            ValueError,
            "qlib reproduces torch 2.13 and 2.14",
        ),
        (
            lambda: qlib.adaptive_avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.int32), 0.1, 0, 2),
            TypeError,
            "torch.uint8 .* or torch.int8",
        ),
        (
            lambda: qlib.adaptive_avg_pool2d(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0, 0),
            ValueError,
            "output_size must be",
        ),
        (lambda: qlib.mean(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0, 4), ValueError, r"\[-4, 3\]"),
        (lambda: qlib.mean(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0, [1, -3]), ValueError, "once"),
        (lambda: qlib.mean(torch.zeros(1, 1, 4, 4, dtype=torch.uint8), 0.1, 0, 1.0), TypeError, "dim must be"),
    ],
)
def test_bad_arguments_get_clear_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
