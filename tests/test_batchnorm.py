"""qlib.batch_norm2d against torch's quantized BatchNorm2d (quantized::batch_norm2d and batch_norm2d_relu).

The statistics are random, and, in one test, built so that each channel's offset lands on a .5
tie of ``alpha * (q - zero_point)``: the vector lanes and the scalar channels (``C % 8``) must
both round once, as a fused multiply-add does.
"""

from __future__ import annotations

import random

import pytest
import torch
import torch.ao.nn.quantized as nnq
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from quantized_inputs import (
    RELEASE,
    assert_like_torch,
    quantized,
    quantized_4d,
    run_and_compare,
    scales,
    zero_points,
)

import qlib
from qlib.numerics import float32
from qlib.testing import assert_same_ints

# the AVX2 kernel, which AVX-512 CPUs run too, rounds each channel once (a fused multiply-add)
pytestmark = pytest.mark.cpu_kind


def statistics(channels: int, seed: int, affine: bool) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    weight = torch.randn(channels, generator=gen) if affine else torch.ones(channels)
    bias = torch.randn(channels, generator=gen) if affine else torch.zeros(channels)
    return weight, bias, torch.randn(channels, generator=gen), torch.rand(channels, generator=gen) * 3 + 1e-3


@settings(max_examples=examples(300))
@given(
    t=quantized_4d(spatial=(1, 6)),
    scale=scales,
    seed=st.integers(0, 2**31 - 1),
    relu=st.booleans(),
    eps=st.sampled_from([1e-5, 1e-3, 0.1, 0.0]),
    affine=st.booleans(),
    data=st.data(),
)
def test_batch_norm2d_matches_torch(t, scale, seed, relu, eps, affine, data):
    q, x, x_scale, x_zero_point = t
    zero_point = data.draw(zero_points(x.dtype))
    stats = statistics(x.shape[1], seed, affine)
    ours = qlib.batch_norm2d(x, x_scale, x_zero_point, *stats, eps, scale, zero_point, relu, release=RELEASE)
    op = torch.ops.quantized.batch_norm2d_relu if relu else torch.ops.quantized.batch_norm2d
    theirs = op(q, *stats, eps, scale, zero_point)
    assert (theirs.q_scale(), theirs.q_zero_point()) == (scale, zero_point)
    assert_same_ints(ours, theirs.int_repr())
    assert_like_torch(ours, theirs)
    if not relu:
        module = nnq.BatchNorm2d(x.shape[1], eps=eps)
        module.weight, module.bias = torch.nn.Parameter(stats[0]), torch.nn.Parameter(stats[1])
        module.running_mean, module.running_var = stats[2], stats[3]
        module.scale, module.zero_point = torch.tensor(scale), torch.tensor(zero_point)
        ours = qlib.batch_norm2d(x, x_scale, x_zero_point, *stats, eps, module.scale.item(), zero_point)
        assert_same_ints(ours, module(q).int_repr())


def test_every_channel_rounds_once():
    """alpha = weight and beta = bias exactly (scales 1, variance 1, eps 0, mean 0), the bias on a .5 tie of
    alpha * v: the vector lanes and the scalar channels both follow the fused multiply-add, where a
    product rounded first would move about half the codes."""
    rng = random.Random(1)
    channels, moved = 13, 0
    for _ in range(200):
        weight = torch.tensor([float32(rng.uniform(0.3, 3.0)) for _ in range(channels)])
        v, k = rng.randint(-120, 120), rng.randint(-20, 20)
        bias = torch.tensor([float32(k + 0.5 - float(w) * v) for w in weight])
        x = torch.full((1, channels, 1, 1), 128 + v, dtype=torch.uint8)
        stats = (weight, bias, torch.zeros(channels), torch.ones(channels))
        theirs = torch.ops.quantized.batch_norm2d(quantized(x, 1.0, 128), *stats, 0.0, 1.0, 128).int_repr()
        assert_same_ints(qlib.batch_norm2d(x, 1.0, 128, *stats, 0.0, 1.0, 128), theirs)
        unfused = torch.round((weight * v) + bias) + 128  # multiply, round, add, round
        moved += int((unfused.view(theirs.shape) != theirs).sum())
    assert moved > 500


@pytest.mark.parametrize("channels", [1, 8, 9, 13, 16])
def test_values_beyond_int32_wrap_in_the_vector_lanes_and_saturate_in_the_scalar_channels(channels):
    """2 * 172 at an output scale of 2**-23 is about 2.9e9: the vector lanes add the zero point to a value clipped
    at 2**31 - 128 in int32, which wraps to the lowest code; the scalar channels' lrintf keeps it and saturates."""
    x = torch.full((1, channels, 1, 1), 172, dtype=torch.uint8)
    stats = (torch.ones(channels), torch.zeros(channels), torch.zeros(channels), torch.ones(channels))
    theirs = torch.ops.quantized.batch_norm2d(quantized(x, 2.0, 0), *stats, 1e-5, 2.0**-23, 255).int_repr()
    ours = qlib.batch_norm2d(x, 2.0, 0, *stats, 1e-5, 2.0**-23, 255)
    assert_same_ints(ours, theirs)
    body = channels // 8 * 8
    assert ours.flatten().tolist() == [0] * body + [255] * (channels - body)


def test_run_computes_a_quantized_batch_norm():
    class Normalized(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.norm = torch.nn.BatchNorm2d(20)
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.norm(self.quant(x)))

    torch.manual_seed(0)
    model = Normalized()
    model(torch.randn(8, 20, 6, 6) * 3 + 1)  # running statistics
    converted, _, _ = run_and_compare(model.eval(), torch.randn(4, 20, 6, 6) * 3 + 1, torch.randn(2, 20, 6, 6) * 3 + 1)
    assert isinstance(converted.norm, nnq.BatchNorm2d)


X = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
STATS = (torch.ones(3), torch.zeros(3), torch.zeros(3), torch.ones(3))


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: qlib.batch_norm2d(X[0], 0.1, 0, *STATS, 1e-5, 0.1, 0), ValueError, "x must be 4-d"),
        (lambda: qlib.batch_norm2d(X.float(), 0.1, 0, *STATS, 1e-5, 0.1, 0), TypeError, "8-bit codes"),
        (lambda: qlib.batch_norm2d(X, 0.1, 0, None, *STATS[1:], 1e-5, 0.1, 0), TypeError, "weight must be a float32"),
        (
            lambda: qlib.batch_norm2d(X, 0.1, 0, *STATS[:3], torch.ones(4), 1e-5, 0.1, 0),
            TypeError,
            r"var must be a float32 tensor of shape \(3,\).*shape \(4,\)",
        ),
        (lambda: qlib.batch_norm2d(X, 0.1, 0, *STATS, -1.0, 0.1, 0), ValueError, "eps must be a non-negative"),
        (lambda: qlib.batch_norm2d(X, 0.1, 0, *STATS, 1e-5, 0.0, 0), ValueError, "scale must be a finite"),
        (lambda: qlib.batch_norm2d(X, 0.1, 0, *STATS, 1e-5, 0.1, 0, relu="yes"), TypeError, "relu must be True"),
    ],
)
def test_bad_arguments_get_clear_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
