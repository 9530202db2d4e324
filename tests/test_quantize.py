"""qlib.quantize against torch.quantize_per_tensor / quantize_per_channel."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import mixed_values, near_ties, reciprocal32, scales, zero_points

import qlib
from qlib.numerics import fma_float32
from qlib.ranges import DTYPE_RANGES
from qlib.testing import assert_same_ints

PER_TENSOR = [torch.quint8, torch.qint8, torch.qint32]
SUB_BYTE_BITS = {torch.quint4x2: 4, torch.quint2x4: 2}
TWINS = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Codes from torch's packed sub-byte int_repr (lowest bits first)."""
    per_byte = 8 // bits
    mask = (1 << bits) - 1
    codes = torch.stack([(packed >> (bits * i)) & mask for i in range(per_byte)], dim=-1)
    return codes.reshape(-1)[:n]


def k_range_for(dtype: torch.dtype) -> int:
    qmin, qmax = DTYPE_RANGES[dtype]
    return min(qmax - qmin, 10**6) + 20


@given(
    dtype=st.sampled_from(PER_TENSOR),
    scale=scales,
    data=st.data(),
    seed=st.integers(0, 2**31),
    n=st.integers(1, 300),
)
def test_per_tensor_matches_torch(dtype, scale, data, seed, n):
    z = data.draw(zero_points(*DTYPE_RANGES[dtype]))
    x = mixed_values(scale, n, k_range_for(dtype), seed)
    expected = torch.quantize_per_tensor(x, scale, z, dtype).int_repr()
    assert_same_ints(qlib.quantize(x, scale, z, dtype), expected, f"scale={scale!r} zp={z}")


@given(
    dtype=st.sampled_from(list(SUB_BYTE_BITS)),
    scale=scales,
    data=st.data(),
    seed=st.integers(0, 2**31),
    n=st.integers(1, 200),
)
def test_sub_byte_matches_torch(dtype, scale, data, seed, n):
    bits = SUB_BYTE_BITS[dtype]
    z = data.draw(st.integers(0, 2**bits - 1))
    x = mixed_values(scale, n, 2**bits + 4, seed)
    expected = unpack(torch.quantize_per_tensor(x, scale, z, dtype).int_repr(), bits, len(x))
    assert_same_ints(qlib.quantize(x, scale, z, dtype), expected, f"scale={scale!r} zp={z}")


@given(plain=st.sampled_from(list(TWINS)), scale=scales, data=st.data(), seed=st.integers(0, 2**31))
def test_plain_dtypes_quantize_like_their_twins(plain, scale, data, seed):
    twin = TWINS[plain]
    z = data.draw(zero_points(*DTYPE_RANGES[twin]))
    x = mixed_values(scale, 64, k_range_for(twin), seed)
    expected = torch.quantize_per_tensor(x, scale, z, twin).int_repr()
    assert_same_ints(qlib.quantize(x, scale, z, plain), expected)


@given(
    dtype=st.sampled_from(PER_TENSOR),
    data=st.data(),
    seed=st.integers(0, 2**31),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
)
def test_per_channel_matches_torch(dtype, data, seed, shape):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    channels = shape[axis]
    qmin, qmax = DTYPE_RANGES[dtype]
    scale_list = data.draw(st.lists(scales, min_size=channels, max_size=channels))
    zp_list = data.draw(st.lists(zero_points(qmin, qmax), min_size=channels, max_size=channels))
    n = 1
    for size in shape:
        n *= size
    n //= channels  # values per channel
    # Each channel's values are near that channel's own ties.
    values = torch.stack(
        [mixed_values(s, n, k_range_for(dtype), seed + c, extremes=False)[:n] for c, s in enumerate(scale_list)]
    )
    x = values.reshape(channels, *[size for i, size in enumerate(shape) if i != axis % len(shape)])
    x = x.movedim(0, axis % len(shape)).contiguous()
    scale = torch.tensor(scale_list, dtype=torch.float64)
    zp = torch.tensor(zp_list)
    expected = torch.quantize_per_channel(x, scale, zp, axis % len(shape), dtype).int_repr()
    assert_same_ints(qlib.quantize(x, scale, zp, dtype, axis=axis), expected, f"axis={axis}")


@pytest.mark.parametrize("dtype", PER_TENSOR)
def test_per_channel_saturates_inf_like_torch(dtype):
    x = torch.tensor([[float("inf"), float("-inf"), 3e38, -3e38, 0.0]])
    scale, zp = torch.tensor([0.1], dtype=torch.float64), torch.tensor([0])
    expected = torch.quantize_per_channel(x, scale, zp, 0, dtype).int_repr()
    assert_same_ints(qlib.quantize(x, scale, zp, dtype, axis=0), expected)


@pytest.mark.parametrize("dtype", PER_TENSOR + list(SUB_BYTE_BITS))
def test_near_tie_sweep(dtype):
    """A deterministic sweep of about 40,000 near-tie values per dtype."""
    gen = torch.Generator().manual_seed(2013)
    qmin, qmax = DTYPE_RANGES[dtype]
    for trial in range(40):
        scale = 10.0 ** float(torch.empty(1, dtype=torch.float64).uniform_(-4, 0, generator=gen))
        z = int(torch.randint(max(qmin, -1000), min(qmax, 1000) + 1, (1,), generator=gen))
        x = near_ties(scale, 1000, k_range_for(dtype), gen)
        if dtype in SUB_BYTE_BITS:
            torch_codes = unpack(torch.quantize_per_tensor(x, scale, z, dtype).int_repr(), SUB_BYTE_BITS[dtype], len(x))
        else:
            torch_codes = torch.quantize_per_tensor(x, scale, z, dtype).int_repr()
        assert_same_ints(qlib.quantize(x, scale, z, dtype), torch_codes, f"trial {trial}")


def test_non_contiguous_input():
    x = torch.randn(7, 9, generator=torch.Generator().manual_seed(0)).t()
    assert not x.is_contiguous()
    expected = torch.quantize_per_tensor(x, 0.02, 131, torch.quint8).int_repr()
    assert_same_ints(qlib.quantize(x, 0.02, 131, torch.quint8), expected)


def test_examples_from_the_fbgemm_comment_and_the_research_notes():
    """Multiply by the float32 reciprocal, never divide: x / scale would round the other way."""
    for x, scale, zp in [(0.273939937, 0.00214854861, 0), (-5.6851144, 0.1277553737, 130)]:
        t = torch.tensor([x])
        by_division = torch.round(t / torch.tensor(scale, dtype=torch.float32)) + zp
        ours = qlib.quantize(t, scale, zp, torch.quint8)
        assert_same_ints(ours, torch.quantize_per_tensor(t, scale, zp, torch.quint8).int_repr())
        assert ours.item() != by_division.item()


def double_rounding_traps(zero_point: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(x, inv) pairs whose x*inv + zero_point lies just below a float32 midpoint
    next to zero_point + 0.5 by less than float64 can resolve."""
    j = torch.arange(1, 2**22, dtype=torch.float64)
    a = (1 + j * 2.0**-23).float().double()
    target = 0.5 - 2.0**-17  # a float32 midpoint once zero_point (128..255) is added
    b = (target / a).float().double()
    gap = target - a * b
    hit = (gap > 0) & (gap < 2.0**-46)
    return a[hit].float(), b[hit].float()


def test_fma_single_rounding_on_double_rounding_traps():
    """The float64 shortcut rounds twice; torch 2.13's FMA rounds once; qlib must agree with torch."""
    xs, invs = double_rounding_traps(129)
    checked = 0
    for x, inv in zip(xs, invs, strict=False):
        scale = 1.0 / inv.double().item()
        if reciprocal32(scale) != inv.item():
            continue  # no float scale has exactly this reciprocal
        t = x.reshape(1)
        twice = torch.round((t.double() * inv.item() + 129).float())
        fused = qlib.quantize(t, scale, 129, torch.quint8, release="2.13")
        assert fused.item() != twice.item(), "not a trap: the test builder is wrong"
        # the installed release: on 2.13 this checks the single rounding against torch
        assert_same_ints(
            qlib.quantize(t, scale, 129, torch.quint8),
            torch.quantize_per_tensor(t, scale, 129, torch.quint8).int_repr(),
        )
        checked += 1
    assert checked >= 2


def test_fma_float32_against_exact_rationals():
    from fractions import Fraction

    gen = torch.Generator().manual_seed(7)
    x = torch.randn(2000, generator=gen) * 3
    xs, invs = double_rounding_traps(129)
    for inv in [reciprocal32(0.0180064), float(invs[0])]:
        got = fma_float32(torch.cat([x, xs]), inv, 129)
        for xi, gi in zip(torch.cat([x, xs]).tolist(), got.tolist(), strict=False):
            exact = Fraction(xi) * Fraction(inv) + 129
            # correctly rounded float32: the float32 nearest to exact (ties to even)
            lo = torch.tensor(float(exact), dtype=torch.float64).float().item()
            candidates = {
                lo,
                torch.nextafter(torch.tensor(lo), torch.tensor(float("inf"))).item(),
                torch.nextafter(torch.tensor(lo), torch.tensor(float("-inf"))).item(),
            }
            best = min(candidates, key=lambda c: (abs(Fraction(c) - exact), int(torch.tensor(c).view(torch.int32)) & 1))
            assert gi == best, (xi, inv, gi, best)


@pytest.mark.parametrize("threads", [1, 2])
def test_thread_count_does_not_change_torchs_codes(threads):
    """FBGEMM splits the tensor across threads (pytorch#80501 once saw thread-dependent codes)."""
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(threads)
        gen = torch.Generator().manual_seed(80501)
        x = near_ties(0.0180064, 100_003, 300, gen)  # odd length: every thread gets a tail
        expected = torch.quantize_per_tensor(x, 0.0180064, 41, torch.quint8).int_repr()
    finally:
        torch.set_num_threads(before)
    assert_same_ints(qlib.quantize(x, 0.0180064, 41, torch.quint8), expected, f"{threads} thread(s)")


@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint8])
def test_every_zero_point_at_the_ends_of_float32(dtype):
    """Values far past the range, at every zero point: torch 2.14 adds the zero point in int32 and wraps."""
    x = torch.tensor([float("inf"), float("-inf"), 3e38, -3e38, 2147483520.0, -2147483648.0, 2147483392.0, 1e9] * 3)
    qmin, qmax = DTYPE_RANGES[dtype]
    for zp in range(qmin, qmax + 1):
        expected = torch.quantize_per_tensor(x, 1.0, zp, dtype).int_repr()
        assert_same_ints(qlib.quantize(x, 1.0, zp, dtype), expected, f"zero point {zp}")


@pytest.mark.parametrize("dtype", PER_TENSOR + list(SUB_BYTE_BITS))
def test_the_two_releases_at_exact_ties(dtype):
    """An oracle independent of qlib: Python's round() (half to even) on exact halves, with scale 1.

    torch 2.13 rounds x + zero_point (4- and 2-bit dtypes excepted); torch 2.14 rounds x, then
    adds the zero point.
    """
    qmin, qmax = DTYPE_RANGES[dtype]
    zp = 1 if qmin < 0 else 3
    halves = [k + 0.5 for k in range(-6, 6)]
    x = torch.tensor(halves)
    for release in ("2.13", "2.14"):
        before = release == "2.13" and dtype not in SUB_BYTE_BITS
        expected = [min(max(round(h + zp) if before else round(h) + zp, qmin), qmax) for h in halves]
        assert qlib.quantize(x, 1.0, zp, dtype, release=release).tolist() == expected, release
        codes = (
            torch.quantize_per_channel(x[None], torch.tensor([1.0], dtype=torch.float64), torch.tensor([zp]), 0, dtype)
            if dtype not in SUB_BYTE_BITS
            else None
        )
        if codes is not None:
            expected_pc = [min(max(round(h + zp) if release == "2.13" else round(h) + zp, qmin), qmax) for h in halves]
            ours = qlib.quantize(x[None], torch.tensor([1.0]), torch.tensor([zp]), dtype, axis=0, release=release)
            assert ours[0].tolist() == expected_pc, release


@pytest.mark.parametrize("zp", [41, 200])
def test_tensors_longer_than_one_piece(zp):
    """quantize works through long tensors piece by piece; the last piece is shorter."""
    from qlib.quant import CHUNK

    gen = torch.Generator().manual_seed(2 * CHUNK)
    x = near_ties(0.0180064, 2 * CHUNK + 7, 300, gen)
    x[-3:] = torch.tensor([float("inf"), float("-inf"), 3e38])
    expected = torch.quantize_per_tensor(x, 0.0180064, zp, torch.quint8).int_repr()
    assert_same_ints(qlib.quantize(x, 0.0180064, zp, torch.quint8), expected, f"zero point {zp}")


@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint8], ids=str)
@pytest.mark.parametrize("scale", [0.0180064, 1 / 3, 2.0**-7, 0.1277553737])
def test_fma_shortcut_equals_the_exact_fma_where_the_zero_point_cancels(dtype, scale):
    """torch 2.13's 8-bit per-tensor codes are computed in float32 and only elements near a tie are
    recomputed exactly (fma_float32). The worst case for that window: x * inv large and the zero point
    cancelling it, so the float32 product's rounding error is large next to the sum. Every element
    equals the exact single-rounding emulation, on either installed torch."""
    qmin, qmax = DTYPE_RANGES[dtype]
    inv = reciprocal32(scale)
    x, zps = [], []
    for zp in (qmin, qmin + 1, (qmin + qmax) // 2, qmax - 1, qmax):
        ties = torch.arange(qmin - 2, qmax + 3, dtype=torch.float64) + 0.5 - zp  # x * inv lands on k + 0.5 - zp
        centre = (ties / inv).float()
        steps = torch.arange(-40, 41, dtype=torch.float32)
        ulp = torch.nextafter(centre.abs(), torch.tensor(float("inf"))) - centre.abs()
        x.append((centre[:, None] + steps[None, :] * ulp[:, None]).reshape(-1))
        zps.append(zp)
    for values, zp in zip(x, zps, strict=True):
        exact = (
            fma_float32(values, inv, zp)
            .round_()
            .clamp_(qmin, qmax)
            .to(qlib.quantize(values[:1], scale, zp, dtype).dtype)
        )
        ours = qlib.quantize(values, scale, zp, dtype, release="2.13")
        assert_same_ints(ours, exact, f"zero point {zp}")
        if qlib.torch_release() == "2.13":
            assert_same_ints(ours, torch.quantize_per_tensor(values, scale, zp, dtype).int_repr(), f"torch, zp {zp}")
