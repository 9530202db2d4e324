"""qlib.fake_quantize against torch.fake_quantize_per_tensor_affine / _per_channel_affine."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import f32, mixed_values, scales

import qlib
from qlib.testing import assert_same_bits

RANGES = st.sampled_from([(0, 255), (-128, 127), (0, 127), (-64, 63), (0, 15), (-8, 7), (0, 1), (-(2**31), 2**31 - 1)])


@given(rng=RANGES, scale=scales, data=st.data(), seed=st.integers(0, 2**31), n=st.integers(1, 300))
def test_per_tensor_matches_torch(rng, scale, data, seed, n):
    qmin, qmax = rng
    z = data.draw(st.integers(qmin, qmax))
    x = mixed_values(scale, n, min(qmax - qmin, 10**6) + 20, seed)
    expected = torch.fake_quantize_per_tensor_affine(x, scale, z, qmin, qmax)
    assert_same_bits(qlib.fake_quantize(x, scale, z, qmin, qmax), expected, f"s={scale!r} z={z} {rng}")


@given(rng=RANGES, data=st.data(), seed=st.integers(0, 2**31))
def test_per_channel_matches_torch(rng, data, seed):
    qmin, qmax = rng
    channels = data.draw(st.integers(1, 5))
    axis = data.draw(st.sampled_from([0, 1, 2, -1]))
    scale_list = [f32(s) for s in data.draw(st.lists(scales, min_size=channels, max_size=channels))]
    zps = data.draw(st.lists(st.integers(qmin, qmax), min_size=channels, max_size=channels))
    per = [mixed_values(s, 60, min(qmax - qmin, 10**6) + 20, seed + c)[:60] for c, s in enumerate(scale_list)]
    x = torch.stack(per).reshape(channels, 3, 20).movedim(0, axis).contiguous()
    scale = torch.tensor(scale_list, dtype=torch.float32)
    zp = torch.tensor(zps, dtype=torch.int32)
    expected = torch.fake_quantize_per_channel_affine(x, scale, zp, axis % 3, qmin, qmax)
    assert_same_bits(qlib.fake_quantize(x, scale, zp, qmin, qmax, axis=axis), expected, f"axis={axis}")


def test_fake_quantize_adds_zero_point_after_rounding_like_quantize_except_in_2_13():
    """At an exact tie with an odd zero point, torch 2.13's quantize and fake quantize disagree."""
    x = torch.tensor([0.5, 1.5, 2.5, 3.5])
    fake = qlib.fake_quantize(x, 1.0, 129, 0, 255)
    assert_same_bits(fake, torch.fake_quantize_per_tensor_affine(x, 1.0, 129, 0, 255))
    installed = torch.quantize_per_tensor(x, 1.0, 129, torch.quint8).int_repr()
    for release in ("2.13", "2.14"):
        codes = qlib.quantize(x, 1.0, 129, torch.quint8, release=release)
        if release == qlib.torch_release():
            assert torch.equal(codes, installed)
        real = qlib.dequantize(codes, 1.0, 129)
        assert (fake != real).all() if release == "2.13" else torch.equal(fake, real)
