"""qlib.linear against torch's quantized Linear and LinearReLU on the x86 and fbgemm engines."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples

import qlib.quantized_linear as ql
from qlib.testing import assert_same_ints, torch_linear

# torch's integers here depend on the CPU kind: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = pytest.mark.cpu_kind

ENGINES = ["x86", "fbgemm"]


def near_tie_biases(x, sx, zx, w, sw, zw, s, per_channel, gen):
    """float32 biases that put some outputs within a few ulps of a rounding tie after scaling."""
    n, k = w.shape
    rows = x.reshape(-1, k)
    swv = sw.float() if per_channel else torch.full((n,), sw, dtype=torch.float32)
    zwv = zw.long() if per_channel else torch.full((n,), zw)
    raw = (rows.long() @ w.long().T) - zx * (w.long().sum(1) - zwv * k) - rows.long().sum(1)[:, None] * zwv
    ats = torch.tensor(sx, dtype=torch.float32) * swv
    mult = ats / torch.tensor(s, dtype=torch.float32)
    target = torch.round(raw[0].float() * mult) + 0.5  # a tie for the first row
    bias = ((target / mult - raw[0].float()) * ats).float()
    steps = torch.randint(-3, 4, (n,), generator=gen)
    for _ in range(3):
        bias = torch.where(steps > 0, torch.nextafter(bias, torch.tensor(float("inf"))), bias)
        bias = torch.where(steps < 0, torch.nextafter(bias, torch.tensor(float("-inf"))), bias)
        steps = steps - steps.sign()
    return bias


@given(
    m=st.one_of(st.just(1), st.integers(1, 48)),
    k=st.one_of(st.sampled_from([1, 2, 3, 511, 512, 513, 1030]), st.integers(1, 80)),
    n=st.integers(1, 64),
    per_channel=st.booleans(),
    symmetric=st.booleans(),
    full_range=st.booleans(),
    bias_kind=st.sampled_from(["none", "random", "near tie"]),
    relu=st.booleans(),
    engine=st.sampled_from(ENGINES),
    three_d=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_linear_matches_torch(m, k, n, per_channel, symmetric, full_range, bias_kind, relu, engine, three_d, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (2, m, k) if three_d else (m, k)
    x = torch.randint(0, 256 if full_range else 128, shape, generator=gen, dtype=torch.uint8)
    w = torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8)
    sx = float(torch.empty(1).uniform_(0.002, 0.05, generator=gen))
    zx = int(torch.randint(0, 256, (1,), generator=gen))
    if per_channel:
        sw = torch.empty(n, dtype=torch.float64).uniform_(0.0005, 0.03, generator=gen).float()
        zw = torch.zeros(n, dtype=torch.long) if symmetric else torch.randint(-30, 31, (n,), generator=gen)
    else:
        sw = float(torch.tensor(float(torch.empty(1).uniform_(0.0005, 0.03, generator=gen)), dtype=torch.float32))
        zw = 0 if symmetric else int(torch.randint(-30, 31, (1,), generator=gen))
    s = float(torch.empty(1).uniform_(0.005, 0.3, generator=gen))
    z = int(torch.randint(0, 256, (1,), generator=gen)) | 1  # odd output zero points
    if bias_kind == "none":
        bias = None
    elif bias_kind == "random":
        bias = torch.randn(n, generator=gen) * 2
    else:
        bias = near_tie_biases(x, sx, zx, w, sw, zw, s, per_channel, gen)
    expected = torch_linear(x, sx, zx, w, sw, zw, bias, s, z, relu, engine)
    ours = ql.linear(x, sx, zx, w, sw, zw, bias, s, z, relu)
    assert_same_ints(ours, expected, f"{engine} per_channel={per_channel} pairs saturate={ql.pairs_saturate_here()}")


@pytest.mark.parametrize("k", [1, 2, 513, 514, 515, 1030, 4099])
def test_int_matmul_is_exact_at_the_extremes(k):
    """Sums past 2**24 with odd products: a float32 matmul over too long a piece of K would round them."""
    gen = torch.Generator().manual_seed(k)
    x = torch.full((4, k), 255, dtype=torch.uint8)
    x[1] = torch.randint(250, 256, (k,), generator=gen).to(torch.uint8)
    x[2] = 0
    x[3, ::2] = 1
    w = torch.full((5, k), -127, dtype=torch.int8)
    w[1] = 127
    w[2] = torch.randint(-128, -120, (k,), generator=gen).to(torch.int8)
    w[3, ::3] = 0
    w[4] = torch.randint(-128, 128, (k,), generator=gen).to(torch.int8)
    assert torch.equal(ql.int_matmul(x, w, pairs_saturate=False), x.long() @ w.long().T)


def test_saturating_pairs_match_a_direct_sum():
    """Rows whose only large pair sits at the edge of int16 (codes summing to 250..262), odd K included."""
    gen = torch.Generator().manual_seed(5)
    for k in (2, 7, 64):
        x = torch.zeros(13 * 4, k, dtype=torch.uint8)
        for row, total in enumerate(range(250, 263)):
            for j in range(4):  # one pair (at an even position) holds the two codes, the rest are small
                r, start = 4 * row + j, 2 * int(torch.randint(0, k // 2 or 1, (1,), generator=gen))
                x[r] = torch.randint(0, 3, (k,), generator=gen).to(torch.uint8)
                first = min(255, total - j)
                x[r, start] = first
                if start + 1 < k:
                    x[r, start + 1] = total - first
        w = torch.where(torch.rand(9, k, generator=gen) < 0.5, -128, 127).to(torch.int8)
        w[0], w[1] = -128, 127
        pad = k % 2
        xp = torch.nn.functional.pad(x.long(), (0, pad)).view(len(x), -1, 2)
        wp = torch.nn.functional.pad(w.long(), (0, pad)).view(len(w), -1, 2)
        pairs = torch.einsum("mpi,npi->mnp", xp, wp).clamp(-(2**15), 2**15 - 1)
        assert torch.equal(ql.int_matmul(x, w, pairs_saturate=True), pairs.sum(-1)), k


def test_the_two_kinds_of_cpu_differ_where_pairs_saturate():
    """Full-range activations times extreme weights: the pair sum leaves int16 on one kind of CPU only."""
    x = torch.full((1, 4), 255, dtype=torch.uint8)
    w = torch.full((1, 4), -128, dtype=torch.int8)
    exact = ql.linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128, pairs_saturate=False)
    saturated = ql.linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128, pairs_saturate=True)
    # by hand: exact sum 4 * 255 * -128 = -130560; each pair saturates to -32768, two pairs -65536
    # -130560 * 0.01 * 0.01 / 20 = -0.6528 -> -1 -> 127; -65536 * 1e-4 / 20 = -0.32768 -> 0 -> 128
    assert (exact.item(), saturated.item()) == (127, 128)
    assert ql.int_matmul(x, w, True).item() == -65536 and ql.int_matmul(x, w, False).item() == -130560
    expected = torch_linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128, False, "x86")
    assert_same_ints(ql.linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128), expected)


def qnnpack_case(kind, m, k, n, per_channel, relu, seed):
    """Arguments of qlib.linear for one qnnpack case; ``kind`` chooses inputs near one rounding or another.

    "bias ties": biases within 3 ulps of (j + 0.5) * x_scale * weight_scale, read out with a
    multiplier near 1 (row 0 is all zero points), so a bias rounded the other way changes the code;
    "requant ties": accumulators (set through the bias) on which float32 multipliers computed in other
    orders (ats / scale, a float64 product) give other codes; "large acc": |accumulator| > 2**24,
    where its conversion to float32 rounds; "random": plain random layers.
    """
    gen = torch.Generator().manual_seed(seed)
    f32 = torch.float32
    if kind == "large acc":  # codes and weights mostly at their extremes, K large
        k = max(k, 1000)
        zx = 0
        x = torch.where(torch.rand(m, k, generator=gen) < 0.8, 255, torch.randint(0, 256, (m, k), generator=gen))
        w = torch.where(torch.rand(n, k, generator=gen) < 0.8, -128, torch.randint(-128, 128, (n, k), generator=gen))
        x, w = x.to(torch.uint8), w.to(torch.int8)
    else:
        zx = int(torch.randint(0, 256, (1,), generator=gen))
        x = torch.randint(0, 256, (m, k), generator=gen, dtype=torch.uint8)
        w = torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8)
    sx = float(torch.empty(1).uniform_(0.002, 0.05, generator=gen))
    if per_channel:
        sw64 = torch.empty(n, dtype=torch.float64).uniform_(0.0005, 0.03, generator=gen)
        zw = torch.randint(-30, 31, (n,), generator=gen)
        sw, zw_arg = sw64, zw
    else:
        sw = float(torch.empty(1).uniform_(0.0005, 0.03, generator=gen))
        sw64, zw_arg = torch.full((n,), sw, dtype=torch.float64), int(torch.randint(-30, 31, (1,), generator=gen))
        zw = torch.full((n,), zw_arg)
    s = float(torch.empty(1).uniform_(0.005, 0.3, generator=gen))
    z = int(torch.randint(0, 256, (1,), generator=gen))
    bias = torch.randn(n, generator=gen) * 2 if seed % 4 else None
    ats = torch.tensor(sx, dtype=f32) * sw64.float()
    if kind == "bias ties":
        s = float(ats.min())  # multipliers in [1, 60]: each unit of the int32 bias shows in the code
        x[0] = zx
        target = (torch.randint(-60, 60, (n,), generator=gen).double() + 0.5) * sw64 * sx
        bias = near(target.float(), torch.randint(-3, 4, (n,), generator=gen))
    elif kind in ("requant ties", "large acc"):
        acc0 = (x[0].long() - zx) @ (w.long() - zw[:, None]).T
        if kind == "large acc":  # a scale that puts row 0's codes around +-100
            s = float(acc0.double().abs().mean() * ats.double().mean() / 100)
        rcp = 1 / torch.tensor(s, dtype=f32)
        totals = acc0[:, None] + torch.arange(-(2**13), 2**13)[None, :]  # candidate accumulators [N, 2**14]
        ours = torch.round(totals.float() * (ats * rcp)[:, None])
        others = [
            torch.round(totals.float() * (ats / torch.tensor(s, dtype=f32))[:, None]),
            torch.round((totals.double() * (sw64 * sx / s)[:, None]).float()),
            torch.round((totals.double() * (ats * rcp).double()[:, None]).float()),
        ]
        differ = torch.stack([ours != other for other in others]).any(0)
        pick = torch.where(differ.any(1), differ.float().argmax(1), torch.randint(0, 2**14, (n,), generator=gen))
        qbias = totals[torch.arange(n), pick] - acc0
        bias = (qbias.double() * sw64 * sx).float()
    return (x, sx, zx, w, sw, zw_arg, bias, s, z, relu)


def near(values, steps):
    """``values`` moved ``steps`` float32 ulps (-3..3) up or down."""
    for _ in range(3):
        values = torch.where(steps > 0, torch.nextafter(values, torch.tensor(float("inf"))), values)
        values = torch.where(steps < 0, torch.nextafter(values, torch.tensor(float("-inf"))), values)
        steps = steps - steps.sign()
    return values


@settings(max_examples=examples(100))  # each example packs a qnnpack Linear (a few times per example)
@given(
    kind=st.sampled_from(["random", "bias ties", "requant ties", "large acc"]),
    m=st.one_of(st.just(1), st.integers(1, 12)),
    k=st.one_of(st.sampled_from([1, 2, 3, 7, 8, 9, 513]), st.integers(1, 64)),
    n=st.one_of(st.integers(1, 9), st.integers(1, 24)),
    per_channel=st.booleans(),
    relu=st.booleans(),
    three_d=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_qnnpack_matches_torch(kind, m, k, n, per_channel, relu, three_d, seed):
    args = qnnpack_case(kind, m, k, n, per_channel, relu, seed)
    if three_d:
        args = (args[0][None].expand(2, -1, -1).contiguous(), *args[1:])
    expected = torch_linear(*args, engine="qnnpack")
    assert_same_ints(ql.linear(*args, engine="qnnpack"), expected, f"qnnpack {kind} per_channel={per_channel}")


def qnnpack_variant(x, sx, zx, w, sw, zw, bias, s, z, relu, variant):
    """The qnnpack model with one step done another plausible way (to show the near-tie inputs tell them apart)."""
    f32 = torch.float32
    n, k = w.shape
    sw64 = sw.double() if isinstance(sw, torch.Tensor) else torch.full((n,), sw, dtype=torch.float64)
    zwv = zw if isinstance(zw, torch.Tensor) else torch.full((n,), zw)
    ats = torch.tensor(sx, dtype=f32) * sw64.float()
    acc = (x.long() - zx) @ (w.long() - zwv[:, None]).T
    if bias is not None:
        bias_scale = ats if variant == "bias scale float32(x_scale) * w_scale" else (sw64 * sx).float()
        acc = acc + torch.round(bias * (1 / bias_scale)).long()
    if variant == "multiplier ats / scale":
        mult = ats / torch.tensor(s, dtype=f32)
    else:
        mult = ats * (1 / torch.tensor(s, dtype=f32))
    if variant == "accumulator not rounded to float32":
        y = torch.round((acc.double() * mult.double()).float())
    else:
        y = torch.round(acc.float() * mult)
    q = (y + z).clamp(z if relu else 0, 255)
    return q.to(torch.uint8)


def test_qnnpack_near_ties_rule_out_the_alternatives():
    """On near-tie layers the qnnpack model matches torch, and each plausible variant of it does not."""
    variants = ["bias scale float32(x_scale) * w_scale", "multiplier ats / scale", "accumulator not rounded to float32"]
    wrong = dict.fromkeys([*variants, "x86 engine"], 0)
    for seed in range(45):
        kind = ("bias ties", "requant ties", "large acc")[seed % 3]
        args = qnnpack_case(kind, 2, 16, 16, seed % 2 == 0, False, seed)
        expected = torch_linear(*args, engine="qnnpack")
        assert_same_ints(ql.linear(*args, engine="qnnpack"), expected, kind)
        assert_same_ints(qnnpack_variant(*args, variant="none"), expected, kind)  # the variants' common base
        for variant in variants:
            wrong[variant] += int((qnnpack_variant(*args, variant=variant) != expected).sum())
        wrong["x86 engine"] += int((torch_linear(*args, engine="x86") != expected).sum())
    assert all(count > 0 for count in wrong.values()), wrong


def test_qnnpack_refuses_a_subnormal_multiplier_as_torch_does():
    args = (torch.ones(1, 4, dtype=torch.uint8), 1e-20, 0, torch.ones(2, 4, dtype=torch.int8), 1e-20, 0, None, 1.0, 0)
    with pytest.raises(RuntimeError, match="requantization scale"):
        torch_linear(*args, relu=False, engine="qnnpack")
    with pytest.raises(ValueError, match="not a normal positive float32"):
        ql.linear(*args, engine="qnnpack")


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (
            lambda: ql.linear(torch.zeros(2, 3), 0.1, 0, torch.zeros(4, 3, dtype=torch.int8), 0.1, 0, None, 0.1, 0),
            TypeError,
            r"x must be a torch.uint8 tensor of codes \(quint8 activations\); got torch.float32",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8), 0.1, 0, torch.zeros(4, 3, dtype=torch.uint8), 0.1, 0, None, 0.1, 0
            ),
            TypeError,
            "weight must be a torch.int8 tensor of codes",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8), 0.1, 0, torch.zeros(4, 5, dtype=torch.int8), 0.1, 0, None, 0.1, 0
            ),
            ValueError,
            r"weight must have shape \[N, K\] with K = x.shape\[-1\] = 3; got \(4, 5\)",
        ),
        (
            lambda: ql.linear(
                torch.zeros(3, dtype=torch.uint8), 0.1, 0, torch.zeros(4, 3, dtype=torch.int8), 0.1, 0, None, 0.1, 0
            ),
            ValueError,
            "x must have at least 2 dimensions",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                torch.ones(3),
                torch.zeros(3, dtype=torch.long),
                None,
                0.1,
                0,
            ),
            ValueError,
            r"weight_scale must have one value per channel: shape \(4,\)",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                float("nan"),
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                0.1,
                0,
            ),
            ValueError,
            "x_scale must be a finite positive number",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                300,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                0.1,
                0,
            ),
            ValueError,
            r"x_zero_point must lie in \[0, 255\]",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                torch.zeros(3),
                0.1,
                0,
            ),
            ValueError,
            r"bias must have shape \(4,\)",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                float("inf"),
                0,
            ),
            ValueError,
            "scale must be a finite positive number",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                0.1,
                0,
                engine="mkldnn",
            ),
            ValueError,
            r"engine must be one of 'x86', 'fbgemm', 'qnnpack', 'onednn' \(the quantized engines qlib reproduces\); "
            "got 'mkldnn'",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                0.1,
                0,
                pairs_saturate=True,
                engine="qnnpack",
            ),
            ValueError,
            "the qnnpack engine never saturates pairs",
        ),
    ],
)
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_pairs_saturate_here_follows_fbgemms_instruction_set():
    """Under make unit-avx2 (FBGEMM_ENABLE_INSTRUCTIONS=AVX2) FBGEMM saturates pairs on every CPU, and qlib says so."""
    if os.environ.get("FBGEMM_ENABLE_INSTRUCTIONS") == "AVX2":
        assert ql.pairs_saturate_here()
    else:
        assert ql.pairs_saturate_here() == (not torch.cpu._is_vnni_supported())
