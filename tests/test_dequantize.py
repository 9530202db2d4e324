"""qlib.dequantize against torch's Tensor.dequantize()."""

from __future__ import annotations

import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import scales, zero_points

import qlib
from qlib.ranges import DTYPE_RANGES
from qlib.testing import assert_same_bits

CODES = {torch.quint8: torch.uint8, torch.qint8: torch.int8, torch.qint32: torch.int32}


def random_codes(dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    qmin, qmax = DTYPE_RANGES[dtype]
    gen = torch.Generator().manual_seed(seed)
    q = torch.randint(qmin, qmax + 1, (n,), generator=gen, dtype=torch.int64)
    ends = torch.tensor([qmin, qmax, qmin + 1, qmax - 1, 0])
    return torch.cat([ends, q]).to(CODES[dtype])


@given(dtype=st.sampled_from(list(CODES)), scale=scales, data=st.data(), seed=st.integers(0, 2**31))
def test_per_tensor_matches_torch(dtype, scale, data, seed):
    z = data.draw(zero_points(*DTYPE_RANGES[dtype]))
    q = random_codes(dtype, 300, seed)
    qt = torch._make_per_tensor_quantized_tensor(q, scale, z)
    assert_same_bits(qlib.dequantize(q, scale, z), qt.dequantize(), f"scale={scale!r} zp={z}")


@given(dtype=st.sampled_from(list(CODES)), data=st.data(), seed=st.integers(0, 2**31), rows=st.integers(1, 5))
def test_per_channel_matches_torch(dtype, data, seed, rows):
    qmin, qmax = DTYPE_RANGES[dtype]
    channels = data.draw(st.integers(1, 6))
    axis = data.draw(st.sampled_from([0, 1, -1]))
    scale = torch.tensor(data.draw(st.lists(scales, min_size=channels, max_size=channels)), dtype=torch.float64)
    zp = torch.tensor(data.draw(st.lists(zero_points(qmin, qmax), min_size=channels, max_size=channels)))
    q = random_codes(dtype, rows * channels * 40, seed)[: rows * channels * 40].reshape(rows, 40, channels)
    q = q.movedim(-1, axis).contiguous()
    qt = torch._make_per_channel_quantized_tensor(q, scale, zp, axis % 3)
    assert_same_bits(qlib.dequantize(q, scale, zp, axis=axis), qt.dequantize(), f"axis={axis}")


def test_qint32_difference_wraps_like_torch():
    """torch subtracts the zero point in int32, so extreme qint32 codes wrap around."""
    q = torch.tensor([-(2**31), 2**31 - 1, 0], dtype=torch.int32)
    qt = torch._make_per_tensor_quantized_tensor(q, 0.5, 1000)
    ours = qlib.dequantize(q, 0.5, 1000)
    assert_same_bits(ours, qt.dequantize())
    assert ours[0] > 0  # -2**31 - 1000 wrapped to a large positive number


def test_sub_byte_codes_dequantize_like_torch():
    x = torch.linspace(-1, 5, 41)
    for dtype, _bits in [(torch.quint4x2, 4), (torch.quint2x4, 2)]:
        for scale, z in [(0.3, 3), (0.1277553737, 1), (1.0 / 3, 0)]:
            qt = torch.quantize_per_tensor(x, scale, z, dtype)
            codes = qlib.quantize(x, scale, z, dtype)
            assert_same_bits(qlib.dequantize(codes, scale, z), qt.dequantize(), f"{dtype} {scale}")


def test_round_trip_error_is_at_most_half_a_step_inside_the_range():
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(10_000, generator=gen) * 2 - 0.7
    scale, zp = qlib.choose_qparams(x.min(), x.max())
    xr = qlib.dequantize(qlib.quantize(x, scale, zp, torch.quint8), scale, zp)
    assert (xr - x).abs().max() <= scale / 2 * (1 + 1e-5)
