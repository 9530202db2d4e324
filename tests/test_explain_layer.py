"""qlib.explain_layer: hand computations of a Linear, Conv2d and add, each difference from torch named.

The references are torch's own outputs (the module run on this CPU), or qlib's where the setting
is another CPU kind (``pairs_saturate=True`` on a CPU with VNNI) or the other release, which qlib
reproduces exactly (tests/test_linear.py, test_conv.py, test_add.py). The manual integers are
computed the way a reader computes them: float64 with the scales read from the layer, an int32
bias, FBGEMM's formula copied without its FMA, and so on; each constructed case first checks that
it has the difference its cause names, so that a test can fail.
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from torch.ao.nn.intrinsic.quantized import ConvReLU2d, LinearReLU
from torch.ao.nn.quantized import Conv2d, Linear, QFunctional

import qlib
from qlib.layer_mismatch import LAYER_CAUSES, LAYER_SHOWN_ROWS, LayerReport
from qlib.numerics import fma_float32
from qlib.onednn import onednn_isa
from qlib.quantized_linear import bias_int32, int_matmul, pairs_saturate_here, round_to_codes, weight_of
from qlib.testing import quantized_tensor, quantized_weight

# the references are torch's integers on this CPU: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = pytest.mark.cpu_kind

F32, F64 = torch.float32, torch.float64
RELEASE = qlib.torch_release()
OTHER = "2.13" if RELEASE == "2.14" else "2.14"
CHOICE_CAUSES = LAYER_CAUSES[4:-1]


@contextmanager
def engine(name: str):
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch 2.14 deprecates the quantized dtypes
        try:
            yield
        finally:
            torch.backends.quantized.engine = before


def linear_layer(w, sw, zw, bias, scale, zp, relu=False, engine_name="fbgemm"):
    with engine(engine_name):
        n, k = w.shape
        layer = (LinearReLU if relu else Linear)(k, n)
        layer.set_weight_bias(quantized_weight(w, sw, zw), bias)
        layer.scale, layer.zero_point = scale, zp
    return layer


def conv_layer(w, sw, zw, bias, scale, zp, stride=1, padding=0, dilation=1, groups=1, relu=False, engine_name="fbgemm"):
    with engine(engine_name):
        out_channels, in_per_group, kh, kw = w.shape
        layer = (ConvReLU2d if relu else Conv2d)(
            in_per_group * groups, out_channels, (kh, kw), stride, padding, dilation, groups, bias is not None
        )
        layer.set_weight_bias(quantized_weight(w, sw, zw), bias)
        layer.scale, layer.zero_point = scale, zp
    return layer


def adder(scale, zp):
    qf = QFunctional()
    qf.scale, qf.zero_point = scale, zp
    return qf


def run(layer, x):
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        return layer(x).int_repr()


def weight_params(layer):
    """(codes, float64 scales [N], zero points [N]) of the layer's weight, as a reader reads them."""
    w = layer.weight()
    n = w.shape[0]
    if w.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        return w.int_repr(), w.q_per_channel_scales().double(), w.q_per_channel_zero_points().long()
    return w.int_repr(), torch.full((n,), w.q_scale(), dtype=F64), torch.full((n,), w.q_zero_point())


def hand_linear(layer, x, zp_first=False, int_bias=False):
    """A reader's float64 Linear: y = sum (x - zx)(w - zw) * x_scale * w_scale + bias; round(y / s) + zp, no clamp.
    ``zp_first``: round(y / s + zp); ``int_bias``: the bias rounded first, round(bias / (x_scale * w_scale))."""
    w, sw, zw = weight_params(layer)
    acc = (x.int_repr().double() - x.q_zero_point()) @ (w.double() - zw[:, None]).T  # whole numbers: exact
    ats = x.q_scale() * sw
    bias = layer.bias()
    if bias is not None and int_bias:
        y = (acc + torch.round(bias.double() / ats)) * ats
    else:
        y = acc * ats + (0.0 if bias is None else bias.double())
    if zp_first:
        return torch.round(y / layer.scale + layer.zero_point)
    return torch.round(y / layer.scale) + layer.zero_point


def hand_conv(layer, x):
    """The same for a Conv2d, with torch's float64 convolution of the centred integers (exact)."""
    w, sw, zw = weight_params(layer)
    centred = x.int_repr().double() - x.q_zero_point()
    acc = torch.nn.functional.conv2d(
        centred, w.double() - zw.view(-1, 1, 1, 1), None, layer.stride, layer.padding, layer.dilation, layer.groups
    )
    y = acc * (x.q_scale() * sw).view(1, -1, 1, 1)
    if layer.bias() is not None:
        y = y + layer.bias().double().view(1, -1, 1, 1)
    return torch.round(y / layer.scale) + layer.zero_point


def hand_add(qf, a, b, zp_first=False):
    """A reader's float64 addition: round((sa (a - za) + sb (b - zb)) / s) + zp (or round(... + zp)), no clamp."""
    c = a.q_scale() * (a.int_repr().double() - a.q_zero_point())
    c = c + b.q_scale() * (b.int_repr().double() - b.q_zero_point())
    if zp_first:
        return torch.round(c / qf.scale + qf.zero_point)
    return torch.round(c / qf.scale) + qf.zero_point


def check_rows(report: LayerReport, manual, reference):
    """The rows are exactly the differing elements, in order, each with consistent fields."""
    manual, reference = torch.as_tensor(manual).long(), reference.long()
    differ = manual != reference
    assert [row.index for row in report.rows] == [tuple(i) for i in differ.nonzero().tolist()]
    assert sum(report.counts.values()) == len(report.rows) == int(differ.sum())
    assert report.numel == reference.numel()
    for row in report.rows:
        assert (row.manual, row.reference) == (int(manual[row.index]), int(reference[row.index]))
        assert row.cause == row.hypotheses[0] and len(set(row.hypotheses)) == len(row.hypotheses)
        assert list(row.hypotheses) == sorted(row.hypotheses, key=LAYER_CAUSES.index)


def causes(report: LayerReport) -> set[str]:
    return {row.cause for row in report.rows}


# --- a Linear near ties: bias, precision, FMA ----------------------------------------------------


def near_tie_linear(gen, n=256, k=24, per_channel=False, steps=3, engine_name="fbgemm", zp=101):
    """A one-row Linear whose every output sits within ``steps`` float32 ulps of a rounding tie in FBGEMM's
    arithmetic: each channel's bias is chosen for it. Returns the layer and its input."""
    x = torch.randint(0, 256, (1, k), generator=gen, dtype=torch.uint8)
    w = torch.randint(-64, 65, (n, k), generator=gen).to(torch.int8)  # |x0 w0 + x1 w1| < 2**15: no pair saturates
    sx, zx, s = 0.0173, 119, 0.0931
    sw = torch.empty(n).uniform_(0.002, 0.02, generator=gen) if per_channel else 0.0087
    zw = torch.zeros(n, dtype=torch.long) if per_channel else 0
    raw = ((x.long() - zx) @ w.long().T)[0].double()
    ats = (torch.tensor(sx, dtype=F32) * (sw if per_channel else torch.tensor(sw, dtype=F32))).double()
    ats = ats.expand(n)
    mult = ats.float() / torch.tensor(s, dtype=F32)
    target = (torch.randint(-100, 100, (n,), generator=gen).double() + 0.5) / mult.double()
    bias = ((target - raw) * ats).float()
    wiggle = torch.randint(-steps, steps + 1, (n,), generator=gen)
    for _ in range(steps):  # move each bias up to `steps` ulps
        bias = torch.where(wiggle > 0, torch.nextafter(bias, torch.tensor(1e30)), bias)
        bias = torch.where(wiggle < 0, torch.nextafter(bias, torch.tensor(-1e30)), bias)
        wiggle = wiggle - wiggle.sign()
    layer = linear_layer(w, sw, zw, bias, s, zp, engine_name=engine_name)
    return layer, quantized_tensor(x, sx, zx)


def fbgemm_parts(layer, x):
    """(raw int64 [M, N], ats, mult, rcp) of FBGEMM's per-tensor requantization, as a reader copies them."""
    w, sw, zw = weight_params(layer)
    raw = (x.int_repr().long() - x.q_zero_point()) @ (w.long() - zw[:, None]).T
    ats = torch.tensor(x.q_scale(), dtype=F32) * sw.float()
    mult = ats / torch.tensor(layer.scale, dtype=F32)
    rcp = (1.0 / ats.double()).float()
    return raw, ats, mult, rcp


def fma_sensitive_biases(raw: torch.Tensor, ats: float, s: float, zp: int, gen) -> torch.Tensor:
    """float32 biases, one per element of ``raw`` (a float64 sum per output channel), with which FBGEMM's
    per-tensor bias gives one code when ``bias * rcp + raw`` is one FMA and another when it is rounded twice:
    found by walking a bias up from 32 ulps below a tie. The two differ only where ``bias * rcp`` has finer
    ulps than the sum, so the ties are put at about 1.3 times ``raw``."""
    ats32 = torch.tensor(ats, dtype=F32)
    mult = (ats32 / torch.tensor(s, dtype=F32)).view(1)
    rcp = (1.0 / ats32.double()).float().item()
    target = (torch.floor(raw * 1.3 * mult.double()) + 0.5) / mult.double()
    bias = ((target - raw) * ats32.double()).float()
    for _ in range(32):
        bias = torch.nextafter(bias, torch.tensor(-1e30))
    found = torch.full_like(bias, float("nan"))
    for _ in range(64):
        fused = round_to_codes(fma_float32(bias, rcp, raw.float()).view(1, -1), mult, zp, False)
        two = round_to_codes((raw.float() + bias * rcp).view(1, -1), mult, zp, False)
        hit = (fused != two).view(-1) & found.isnan()
        found[hit] = bias[hit]
        bias = torch.nextafter(bias, torch.tensor(1e30))
    assert found.isnan().float().mean() < 0.75, "too few biases found"
    return torch.where(found.isnan(), bias, found)


def test_float64_reader_near_ties_is_scale_precision():
    layer, x = near_tie_linear(torch.Generator().manual_seed(1))
    reference = run(layer, x)
    manual = hand_linear(layer, x)
    report = qlib.explain_layer(layer, x, manual)
    check_rows(report, manual, reference)
    assert len(report.rows) >= 20, "the near ties should move many codes"
    assert report.counts == {"scale_precision": len(report.rows)}
    row = report.rows[0]
    assert row.manual_rule.endswith("float64, zp after rounding") and row.proof.count("rint(") == 2
    assert report.reference_not_recomputed == 0


def test_multiplier_from_float64_is_scale_precision():
    layer, x = near_tie_linear(torch.Generator().manual_seed(2))
    raw, _, _, _ = fbgemm_parts(layer, x)
    _, sw, _ = weight_params(layer)
    product = x.q_scale() * sw  # float64, narrowed once below
    mult, rcp = (product / layer.scale).float(), (1.0 / product).float()
    v = fma_float32(layer.bias().expand(1, -1).contiguous(), rcp, raw.float())
    manual = round_to_codes(v, mult, layer.zero_point, False)
    report = qlib.explain_layer(layer, x, manual)
    check_rows(report, manual, run(layer, x))
    assert report.rows and causes(report) == {"scale_precision"}
    assert all("multiplier and rcp from float64" in row.manual_rule for row in report.rows)


def test_two_roundings_for_the_per_tensor_bias_is_fused_multiply_add():
    gen = torch.Generator().manual_seed(3)
    layer, x = near_tie_linear(gen, steps=0)
    raw, ats, mult, rcp = fbgemm_parts(layer, x)
    bias = fma_sensitive_biases(raw[0].double(), ats[0].item(), layer.scale, layer.zero_point, gen)
    w, sw, _ = weight_params(layer)
    layer = linear_layer(w, sw[0].item(), 0, bias, layer.scale, layer.zero_point)
    v = raw.float() + layer.bias() * rcp  # FBGEMM's formula, rounded twice
    manual = round_to_codes(v, mult, layer.zero_point, False)
    assert not torch.equal(v, fma_float32(layer.bias().expand(1, -1).contiguous(), rcp[0].item(), raw.float()))
    report = qlib.explain_layer(layer, x, manual)
    check_rows(report, manual, run(layer, x))
    assert len(report.rows) >= 64 and report.counts == {"fused_multiply_add": len(report.rows)}
    assert "in one FMA" in report.rows[0].proof and "bias * rcp added" in report.rows[0].proof


def test_fbgemm_bias_reciprocal_is_the_float32_one():
    """float32(1 / double(ats)) equals 1.0f / ats for every float32 ats (double rounding of a quotient is
    innocuous with 53 >= 2 * 24 + 2 bits): which the reader takes is no cause. Checked on 2**22 values."""
    start = torch.tensor(0.004, dtype=F32).view(torch.int32).item()
    ats = torch.arange(start, start + 2**22, dtype=torch.int32).view(F32)
    assert torch.equal(1.0 / ats, (1.0 / ats.double()).float())


def test_int32_bias_on_an_fbgemm_layer():
    """Biases a fraction of an accumulator unit off an integer, and an output scale near ats: rounding the
    bias first moves many codes."""
    gen = torch.Generator().manual_seed(5)
    n, k = 64, 16
    x = quantized_tensor(torch.randint(120, 137, (8, k), generator=gen, dtype=torch.uint8), 0.02, 128)
    w = torch.randint(-10, 11, (n, k), generator=gen).to(torch.int8)
    sw = torch.empty(n).uniform_(0.002, 0.004, generator=gen)
    ats = torch.tensor(0.02, dtype=F32) * sw
    bias = (torch.randint(-50, 50, (n,), generator=gen) + torch.empty(n).uniform_(0.2, 0.8, generator=gen)) * ats
    layer = linear_layer(w, sw, torch.zeros(n, dtype=torch.long), bias, 0.02 * 0.003 * 2.3, 128)
    reference = run(layer, x)
    raw, ats, mult, _ = fbgemm_parts(layer, x)
    for rounded_bias in (
        torch.round(bias / ats).long(),  # the book's reader: a float32 division
        bias_int32(bias, 0.02, weight_params(layer)[1], True),  # qnnpack's QuantizeBias (nearly always the same)
    ):
        manual = round_to_codes((raw + rounded_bias).float(), mult, 128, False)
        report = qlib.explain_layer(layer, x, manual)
        check_rows(report, manual, reference)
        assert len(report.rows) >= 20 and report.counts == {"int32_bias": len(report.rows)}
        assert all("int32 bias" in row.manual_rule and "float32" in row.manual_rule for row in report.rows)
        row = report.rows[0]
        assert f"bias {layer.bias()[row.index[1]].item()!r} = {int(rounded_bias[row.index[1]])} in int32; " in row.proof
    hand = hand_linear(layer, x)  # the float64 reader, with the bias rounded in float64
    _, sw64, _ = weight_params(layer)
    rounded64 = torch.round(bias.double() / (0.02 * sw64))
    acc = (x.int_repr().double() - 128) @ w.double().T
    manual = (torch.round((acc + rounded64) * (0.02 * sw64) / layer.scale) + 128).clamp(0, 255)
    report = qlib.explain_layer(layer, x, manual)
    check_rows(report, manual, reference)
    assert report.rows and causes(report) == {"int32_bias"}
    assert all("int32 bias" in row.manual_rule for row in report.rows)
    assert not torch.equal(manual, hand.clamp(0, 255))


def test_float_bias_on_a_qnnpack_layer_is_int32_bias():
    """The other direction: qnnpack rounds the bias to int32; a reader copying FBGEMM adds it in float."""
    gen = torch.Generator().manual_seed(6)
    n, k = 64, 16
    x = quantized_tensor(torch.randint(120, 137, (8, k), generator=gen, dtype=torch.uint8), 0.02, 128)
    w = torch.randint(-10, 11, (n, k), generator=gen).to(torch.int8)
    sw = 0.003
    ats = torch.tensor(0.02, dtype=F32) * torch.tensor(sw, dtype=F32)
    # qnnpack multiplies by float32(1 / float32(s)), FBGEMM divides: take an output scale where the two agree
    s = next(s for s in (0.02 * 0.003 * (2.3 + i * 1e-4) for i in range(100)) if torch.equal(
        ats / torch.tensor(s, dtype=F32), ats * (1 / torch.tensor(s, dtype=F32))
    ))  # fmt: skip
    bias = (torch.randint(-50, 50, (n,), generator=gen) + torch.empty(n).uniform_(0.2, 0.8, generator=gen)) * ats
    layer = linear_layer(w, sw, 0, bias, s, 128, engine_name="qnnpack")
    reference = run(layer, x)
    assert torch.equal(reference, qlib.linear(x.int_repr(), 0.02, 128, w, sw, 0, bias, s, 128, engine="qnnpack"))
    manual = qlib.linear(x.int_repr(), 0.02, 128, w, sw, 0, bias, s, 128, pairs_saturate=False, engine="fbgemm")
    report = qlib.explain_layer(layer, x, manual)
    check_rows(report, manual, reference)
    assert len(report.rows) >= 20 and report.counts == {"int32_bias": len(report.rows)}
    assert "packed by qnnpack" in report.setting
    row = report.rows[0]
    assert "bias * rcp + v in one FMA" in row.manual_rule and "int32 bias (QuantizeBias)" in row.reference_rule


# --- pairs, zero point, clamps ---------------------------------------------------------------------


def test_exact_sum_against_saturating_pairs():
    """pairs_saturate=True: the codes of a CPU without AVX512-VNNI (qlib's, exact with torch there)."""
    gen = torch.Generator().manual_seed(7)
    n, k = 16, 40
    codes = torch.randint(200, 256, (6, k), generator=gen, dtype=torch.uint8)
    w = torch.randint(100, 128, (n, k), generator=gen).to(torch.int8) * torch.tensor([1, -1] * (n // 2)).view(-1, 1)
    w = w.to(torch.int8)
    layer = linear_layer(w, 0.001, 0, torch.randn(n, generator=gen), 3.0, 128)
    x = quantized_tensor(codes, 0.01, 10)
    saturated = qlib.linear(
        codes, 0.01, 10, w, layer.weight().q_scale(), 0, layer.bias(), 3.0, 128, pairs_saturate=True
    )
    exact = qlib.linear(codes, 0.01, 10, w, layer.weight().q_scale(), 0, layer.bias(), 3.0, 128, pairs_saturate=False)
    assert not torch.equal(int_matmul(codes, w, True), int_matmul(codes, w, False))
    report = qlib.explain_layer(layer, x, exact, saturated, pairs_saturate=True)
    check_rows(report, exact, saturated)
    assert len(report.rows) >= 20 and report.counts == {"pair_saturation": len(report.rows)}
    assert "sums in saturating int16 pairs" in report.setting
    proof = report.rows[0].proof
    assert (
        proof.startswith("sum ")
        and " in saturating int16 pairs, " in proof
        and "torch: saturating int16 pairs" in proof
    )
    # the float64 reader on the same layer: the sums are what differs
    hand = hand_linear(layer, x)
    report = qlib.explain_layer(layer, x, hand, saturated, pairs_saturate=True)
    check_rows(report, hand, saturated)
    assert report.counts["pair_saturation"] >= 20 and "unexplained" not in report.counts
    # and against this CPU's own torch
    report = qlib.explain_layer(layer, x, exact)
    expected = {"pair_saturation"} if pairs_saturate_here() else set()
    assert causes(report) == expected


def test_two_causes_together_are_named_with_also():
    """No clamp and an exact sum: past 0 only because the pairs did not saturate, so neither alone explains."""
    gen = torch.Generator().manual_seed(20)
    codes = (255 - torch.randint(0, 20, (6, 40), generator=gen)).to(torch.uint8)
    w = (-128 + torch.randint(0, 20, (3, 40), generator=gen)).to(torch.int8)
    layer = linear_layer(w, 0.001, 0, None, 0.04, 250)
    x = quantized_tensor(codes, 0.01, 0)
    saturated = qlib.linear(codes, 0.01, 0, w, layer.weight().q_scale(), 0, None, 0.04, 250, pairs_saturate=True)
    hand = hand_linear(layer, x)
    assert (hand < 0).all() and (saturated > 0).all()
    report = qlib.explain_layer(layer, x, hand, saturated, pairs_saturate=True)
    check_rows(report, hand, saturated)
    assert len(report.rows) == 18 and report.counts == {"clamp_low": 18}
    assert all(row.hypotheses == ("clamp_low",) and row.also == ("pair_saturation",) for row in report.rows)
    assert "18 rows need two or more causes together" in " ".join(str(report).split())
    proof = report.rows[0].proof
    assert proof.startswith("clamp_low and pair_saturation together: sum ") and "in saturating int16 pairs" in proof


def test_depthwise_conv_saturates_on_every_cpu():
    gen = torch.Generator().manual_seed(8)
    c = 16
    codes = torch.randint(180, 256, (1, c, 6, 6), generator=gen, dtype=torch.uint8)
    w = (torch.randint(90, 128, (c, 1, 3, 3), generator=gen) * torch.tensor([1, -1] * (c // 2)).view(-1, 1, 1, 1)).to(
        torch.int8
    )
    layer = conv_layer(w, 0.002, 0, torch.randn(c, generator=gen), 1.5, 128, padding=1, groups=c)
    x = quantized_tensor(codes, 0.01, 0)
    assert qlib.conv2d_kernel(c, c, (3, 3), (1, 1), (1, 1), (1, 1), c, True, engine="fbgemm") == "depthwise"
    reference = run(layer, x)
    manual = hand_conv(layer, x)
    report = qlib.explain_layer(layer, x, manual)
    check_rows(report, manual, reference)
    assert len(report.rows) >= 20 and report.counts == {"pair_saturation": len(report.rows)}
    assert report.layer == "Conv2d" and report.reference_not_recomputed == 0


def test_depthwise_bias_rounding_follows_the_release():
    """FBGEMM's depthwise kernel adds a per-tensor bias with one FMA in torch 2.13, two roundings in 2.14: a
    reader doing the other is fused_multiply_add, on either release."""
    gen = torch.Generator().manual_seed(9)
    c = 256
    codes = torch.randint(0, 256, (1, c, 1, 1), generator=gen, dtype=torch.uint8)
    w = (torch.randint(60, 128, (c, 1, 3, 3), generator=gen) * (1 - 2 * torch.randint(0, 2, (c, 1, 1, 1)))).to(
        torch.int8
    )
    sx, sw, s, zp = 0.0173, 0.0087, 0.0931, 101
    raw = ((codes.long().view(c) - 7) * w.long()[:, 0, 1, 1]).double()  # 1x1 input: only the centre tap
    ats = (torch.tensor(sx, dtype=F32) * torch.tensor(sw, dtype=F32)).double()
    bias = fma_sensitive_biases(raw, ats.item(), s, zp, gen)
    rcp = (1.0 / ats).float().item()
    results = {}
    for release in ("2.13", "2.14"):
        layer = conv_layer(w, sw, 0, bias, s, zp, padding=1, groups=c)
        x = quantized_tensor(codes, sx, 7)
        reference = run(layer, x) if release == RELEASE else qlib.conv2d(
            codes, sx, 7, w, sw, 0, bias, s, zp, padding=1, groups=c, engine="fbgemm", release=release
        )  # fmt: skip
        v_fused = fma_float32(bias, rcp, raw.float())
        v_two = raw.float() + bias * rcp
        other = v_two if release == "2.13" else v_fused
        manual = round_to_codes(other.view(1, c), (ats.float() / torch.tensor(s, dtype=F32)).view(1), zp, False)
        manual = manual.view(1, c, 1, 1)
        report = qlib.explain_layer(layer, x, manual, reference, release=release)
        check_rows(report, manual, reference)
        results[release] = report
        assert len(report.rows) >= 64 and report.counts == {"fused_multiply_add": len(report.rows)}, str(report)
    assert "one FMA" in results["2.13"].rows[0].reference_rule
    assert "bias * rcp added" in results["2.14"].rows[0].reference_rule


def test_zero_point_before_rounding():
    """Powers of two put v * mult exactly on ties; with an odd zero point the two orders round apart."""
    gen = torch.Generator().manual_seed(10)
    x = quantized_tensor(torch.randint(123, 132, (6, 8), generator=gen, dtype=torch.uint8), 0.5, 127)
    w = torch.randint(-8, 9, (5, 8), generator=gen).to(torch.int8)
    layer = linear_layer(w, 0.5, 0, None, 1.0, 131)
    reference = run(layer, x)
    w_, sw, _ = weight_params(layer)
    acc = (x.int_repr().double() - 127) @ w_.double().T
    manual = torch.round(acc * (0.5 * sw) / 1.0 + 131)  # the zero point before rounding, float64
    assert manual.min() >= 0 and manual.max() <= 255
    report = qlib.explain_layer(layer, x, manual)
    check_rows(report, manual, reference)
    assert len(report.rows) >= 5 and report.counts == {"zero_point_order": len(report.rows)}
    proof = report.rows[0].proof
    assert "zp before rounding" in proof and "torch: float32, zp after rounding" in proof


def clamp_layer(gen, relu=False):
    """A Linear whose outputs spread past both ends of 0..255 (and no pair saturates), and its input."""
    x = quantized_tensor(torch.randint(0, 256, (10, 12), generator=gen, dtype=torch.uint8), 0.05, 128)
    w = torch.randint(-64, 65, (9, 12), generator=gen).to(torch.int8)
    layer = linear_layer(w, 0.01, 0, torch.randn(9, generator=gen), 0.02, 100, relu=relu)
    return layer, x


def test_clamps_and_wraparound():
    layer, x = clamp_layer(torch.Generator().manual_seed(11))
    reference = run(layer, x)
    hand = hand_linear(layer, x)
    assert (hand < 0).any() and (hand > 255).any() and ((hand > 127) & (hand <= 255)).any()
    expected = {
        "clamp_low": hand < 0,
        "clamp_high": hand > 255,
    }
    report = qlib.explain_layer(layer, x, hand)  # no clamp at all
    check_rows(report, hand, reference)
    for row in report.rows:
        cause = next(c for c, where in expected.items() if where[row.index])
        assert row.cause == cause and row.unclamped == int(hand[row.index]), row.proof
        assert "(no clamp)" in row.proof
    wrapped = hand.long().to(torch.uint8)  # cast without a clamp: -5 is 251
    report = qlib.explain_layer(layer, x, wrapped)
    check_rows(report, wrapped, reference)
    outside = (hand < 0) | (hand > 255)
    assert report.counts == {"wraparound": int((wrapped.long() != reference.long()).sum())}
    assert all(outside[row.index] for row in report.rows)
    assert "cast to uint8 without clamp wraps (mod 256)" in report.rows[0].proof
    observer = hand.clamp(0, 127)  # the observer's range, reduce_range's 0..127
    report = qlib.explain_layer(layer, x, observer)
    check_rows(report, observer, reference)
    assert report.counts == {"clamp_range": len(report.rows)} and len(report.rows) >= 5
    assert all(row.manual == 127 for row in report.rows)
    assert "clamped: the observer's range 0..127: 127" in report.rows[0].proof
    narrow = hand.clamp(3, 200)
    report = qlib.explain_layer(layer, x, narrow, quant_range=(3, 200))
    check_rows(report, narrow, reference)
    assert report.rows and causes(report) == {"clamp_range"}
    assert causes(qlib.explain_layer(layer, x, narrow)) == {"unexplained"}  # not 0..127: no cause reproduces it


def test_a_forgotten_relu_is_clamp_low():
    layer, x = clamp_layer(torch.Generator().manual_seed(12), relu=True)
    reference = run(layer, x)
    hand = hand_linear(layer, x).clamp(0, 255)  # clamped to the dtype, no ReLU
    report = qlib.explain_layer(layer, x, hand)
    check_rows(report, hand, reference)
    assert report.rows and report.counts == {"clamp_low": len(report.rows)}
    assert all(row.reference == 100 and row.manual < 100 for row in report.rows)
    below = [row for row in report.rows if row.manual == 0 and row.unclamped < 0]
    assert below and all("clamped: the dtype's range 0..255: 0" in row.proof for row in below)
    assert all("(no clamp)" in row.proof for row in report.rows if row.manual > 0)
    assert "LinearReLU" in report.setting and "codes 100..255" in report.setting


# --- add: vector body and scalar tail ------------------------------------------------------------


def test_one_formula_for_every_element_of_an_add():
    """The scalar tail's formula (qlib.add with no vector body) applied to every element of a sum torch
    computes partly with its vector body."""
    a, b = torch.full((70,), 1, dtype=torch.uint8), torch.full((70,), 6, dtype=torch.uint8)
    qa, qb = quantized_tensor(a, 0.1, 3), quantized_tensor(b, 0.1, 3)
    qf = adder(0.2, 0)
    reference = run(lambda pair: qf.add(*pair), (qa, qb))
    for release in (RELEASE, OTHER):
        ref = reference if release == RELEASE else qlib.add(a, 0.1, 3, b, 0.1, 3, 0.2, 0, release=release)
        scalar = qlib.add(a, 0.1, 3, b, 0.1, 3, 0.2, 0, release=release, vector_width=1000)  # all scalar tail
        report = qlib.explain_layer(qf, (qa, qb), scalar, ref, release=release)
        check_rows(report, scalar, ref)
        assert report.rows and report.counts == {"vector_vs_scalar": len(report.rows)}
        assert all(row.index[0] < 64 for row in report.rows)  # the vector body's elements
        row = report.rows[0]
        assert row.manual_rule.startswith("scalar tail") and row.reference_rule.startswith("vector body")
        assert row.proof.startswith("a 1, b 6; ") and "64 elements in the vector body, 6 in the scalar tail" in (
            report.setting
        )


def test_add_ties_in_torch_2_13_name_the_path_first():
    """torch 2.13's scalar tail adds the zero point before rounding: on a tie its code differs from the vector
    body's; the body's formula applied to the tail is reproduced by both the path and the zero point's order."""
    ties = torch.full((70,), 1, dtype=torch.uint8)
    qa, qb = quantized_tensor(ties, 0.5, 0), quantized_tensor(ties, 1.0, 1)
    qf = adder(1.0, 1)
    reference = qlib.add(ties, 0.5, 0, ties, 1.0, 1, 1.0, 1, release="2.13")
    assert reference[:64].unique().tolist() == [1] and reference[64:].unique().tolist() == [2]
    manual = torch.ones(70, dtype=torch.long)  # the body's code everywhere
    report = qlib.explain_layer(qf, (qa, qb), manual, reference, release="2.13")
    check_rows(report, manual, reference)
    assert [row.index for row in report.rows] == [(i,) for i in range(64, 70)]
    assert all(row.hypotheses == ("vector_vs_scalar", "zero_point_order") for row in report.rows)
    assert "6 rows have more than one explanation; each names the first" in " ".join(str(report).split())
    in_2_14 = qlib.add(ties, 0.5, 0, ties, 1.0, 1, 1.0, 1, release="2.14")  # zero point after rounding everywhere
    assert qlib.explain_layer(qf, (qa, qb), manual, in_2_14, release="2.14").rows == []


def test_add_relu_and_fma_dequantization():
    gen = torch.Generator().manual_seed(14)
    a = torch.randint(0, 256, (4, 96), generator=gen, dtype=torch.uint8)
    b = torch.randint(0, 256, (4, 96), generator=gen, dtype=torch.uint8)
    qa, qb = quantized_tensor(a, 0.0173, 131), quantized_tensor(b, 0.0291, 77)
    qf = adder(0.0301, 120)
    reference = run(lambda pair: qf.add_relu(*pair), (qa, qb))
    hand = hand_add(qf, qa, qb)
    report = qlib.explain_layer(qf.add_relu, (qa, qb), hand)
    check_rows(report, hand, reference)
    assert report.counts["clamp_low"] == int(((hand < 120) & (reference == 120)).sum()) > 0
    assert set(report.counts) <= {"clamp_low", "clamp_high", "scale_precision"}
    assert "add_relu" in report.setting


# --- unexplained, errors, the report --------------------------------------------------------------


def test_a_wrong_input_scale_is_unexplained_and_says_so():
    layer, x = clamp_layer(torch.Generator().manual_seed(15))
    reference = run(layer, x)  # torch, on the input's own scale
    wrong = (x.int_repr(), x.q_scale() * 1.1, x.q_zero_point())  # the reader's note of the scale is off
    hand = hand_linear(layer, quantized_tensor(*wrong)).clamp(0, 255)  # and they computed with it
    report = qlib.explain_layer(layer, wrong, hand, reference)
    check_rows(report, hand, reference)
    assert report.reference_not_recomputed > 0 and report.counts["unexplained"] > 0
    assert all(row.recomputed != row.reference for row in report.rows if row.cause == "unexplained")
    text = str(report)
    assert "Warning: reference differs at" in text and "check that they are the ones torch ran" in text
    row = next(r for r in report.rows if r.cause == "unexplained" and r.recomputed != r.reference)
    assert f"that is {row.recomputed}, not reference {row.reference}" in row.proof
    # the right scale: everything explained
    right = qlib.explain_layer(layer, x, hand, reference)  # the right input, the hand computation off
    assert right.reference_not_recomputed == 0 and right.counts["unexplained"] > 0 and "Warning" not in str(right)


def test_the_report_prints_as_a_table():
    layer, x = clamp_layer(torch.Generator().manual_seed(16))
    hand = hand_linear(layer, x)
    report = qlib.explain_layer(layer, x, hand)
    lines = str(report).splitlines()
    assert lines[0].startswith(f"{len(report.rows)} of 90 elements differ: ")
    assert max(map(len, lines)) <= 100 and repr(report) == str(report)
    assert lines[lines.index("") + 1].split() == ["index", "manual", "reference", "cause"]
    page = report._repr_html_()
    assert page.count('<tr class="proof">') == min(len(report.rows), LAYER_SHOWN_ROWS) > 0
    same = qlib.explain_layer(layer, x, run(layer, x))
    assert same.rows == [] and str(same).startswith("manual and reference agree at all 90 elements")
    many = -torch.ones(LAYER_SHOWN_ROWS + 20, 9)
    big = quantized_tensor(torch.zeros(LAYER_SHOWN_ROWS + 20, 12, dtype=torch.uint8), 0.05, 128)
    report = qlib.explain_layer(layer, big, many)
    assert len(report.rows) == (LAYER_SHOWN_ROWS + 20) * 9 and str(report).endswith("more rows in .rows")


def test_numpy_and_codes_inputs():
    layer, x = clamp_layer(torch.Generator().manual_seed(17))
    hand = hand_linear(layer, x)
    by_codes = qlib.explain_layer(layer, (x.int_repr(), x.q_scale(), x.q_zero_point()), hand.numpy())
    assert by_codes.counts == qlib.explain_layer(layer, x, hand).counts


def test_bad_arguments():
    layer, x = clamp_layer(torch.Generator().manual_seed(18))
    hand = hand_linear(layer, x)
    with pytest.raises(ValueError, match="output's shape"):
        qlib.explain_layer(layer, x, hand[:3])
    with pytest.raises(ValueError, match="whole numbers"):
        qlib.explain_layer(layer, x, hand + 0.5)
    with pytest.raises(TypeError, match="integer tensor"):
        qlib.explain_layer(layer, x, hand, run(layer, x).float())
    with pytest.raises(TypeError, match="quantized tensor or a tuple"):
        qlib.explain_layer(layer, x.dequantize(), hand)
    with pytest.raises(TypeError, match="layer must be"):
        qlib.explain_layer(torch.nn.Linear(2, 2), x, hand)
    with pytest.raises(ValueError, match="not this layer's output"):
        qlib.explain_layer(layer, x, hand, quantized_tensor(run(layer, x), 0.5, 100))
    with pytest.raises(ValueError, match="quantized::add sums no pairs"):
        qlib.explain_layer(adder(0.1, 0), (x, x), hand_linear(layer, x), pairs_saturate=True)
    with pytest.raises(TypeError, match="dynamic Linear"):
        qlib.explain_layer(torch.ao.nn.quantized.dynamic.Linear(2, 2), x, hand)


ONEDNN_PAIRS_SATURATE = onednn_isa() in ("avx512_core", "avx2", "sse41")  # this process's oneDNN kernels


def test_onednn_adds_the_zero_point_before_rounding():
    """A reader who adds the zero point after rounding differs from oneDNN exactly at the ties of odd zero points."""
    gen = torch.Generator().manual_seed(19)
    w = torch.randint(-6, 7, (16, 8, 3, 3), generator=gen).to(torch.int8)
    conv = conv_layer(w, 0.5, 0, None, 0.5, 61, padding=1, engine_name="onednn")
    x = quantized_tensor(torch.randint(0, 40, (2, 8, 10, 10), generator=gen, dtype=torch.uint8), 0.5, 3)
    after = hand_conv(conv, x).clamp(0, 255)  # round(y / s) + zp: y / s = acc / 2 ties at every odd sum
    if ONEDNN_PAIRS_SATURATE:
        with pytest.raises(ValueError, match="pairs of products saturate.*exact int32 sums only"):
            qlib.explain_layer(conv, x, after)
        return
    report = qlib.explain_layer(conv, x, after)
    centred = torch.nn.functional.conv2d(x.int_repr().double() - 3, w.double(), padding=1)
    ties = centred % 2 == 1  # rint(t + 0.5) + 61 and rint(t + 61.5) round to different sides for every whole t
    differ = after != run(conv, x)
    inside = (after > 0) & (after < 255)
    assert torch.equal(differ & inside, ties & inside) and int(differ.sum()) > 100
    assert dict(report.counts) == {"zero_point_order": int(differ.sum())}
    assert "oneDNN" in str(report) and "zp before rounding" in report.rows[0].reference_rule
    fc = linear_layer(w.view(16, 72)[:, :40], 0.5, 0, None, 0.5, 61, engine_name="onednn")
    xs = quantized_tensor(torch.randint(0, 40, (30, 40), generator=gen, dtype=torch.uint8), 0.5, 3)
    assert qlib.explain_layer(fc, xs, hand_linear(fc, xs)).counts["zero_point_order"] > 0


# --- properties: a float64 hand computation on random layers ---------------------------------------

SCALES = st.one_of(st.floats(1e-3, 0.1), st.sampled_from([0.5, 0.25, 0.1, 1 / 3, 0.0173, 0.02]))
# How the reader finished: no clamp, the dtype's range, the observer's 0..127, or a cast that wraps.
FINISHES = ["none", "dtype", "observer", "wrap"]


def finish(hand: torch.Tensor, how: str, relu_floor: int | None, qmin: int, qmax: int, storage: torch.dtype):
    if relu_floor is not None:
        hand = hand.clamp(min=relu_floor)  # the ReLU, in float before rounding: the same
    if how == "dtype":
        return hand.clamp(qmin, qmax)
    if how == "observer":
        return hand.clamp(*qlib.qrange({torch.uint8: torch.quint8, torch.int8: torch.qint8}[storage], True))
    if how == "wrap":
        return hand.long().to(storage)
    return hand


def output_qparams(hand_float: torch.Tensor, spread: float, zp: int) -> float:
    """An output scale that puts the layer's real outputs over about ``spread`` times 255 steps."""
    span = float(hand_float.abs().max()) if hand_float.numel() else 1.0
    return max(span, 1e-3) * 2 / (255 * spread)


def assert_explained(report: LayerReport, manual, reference):
    check_rows(report, manual, reference)
    assert report.reference_not_recomputed == 0
    for row in report.rows:
        assert row.cause != "unexplained", row.proof


@settings(max_examples=examples(100))  # each example packs a Linear and runs it in torch and qlib
@given(
    engine_name=st.sampled_from(["fbgemm", "qnnpack"]),
    per_channel=st.booleans(),
    relu=st.booleans(),
    has_bias=st.booleans(),
    saturate=st.sampled_from([None, True]),
    shape=st.tuples(st.integers(1, 6), st.integers(1, 70), st.integers(1, 12)),
    sx=SCALES,
    sw=SCALES,
    spread=st.floats(0.3, 3.0),
    zp=st.integers(0, 255),
    how=st.sampled_from(FINISHES),
    apply_relu=st.booleans(),
    zp_first=st.booleans(),
    int_bias=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_every_difference_of_a_float64_linear_is_explained(
    engine_name,
    per_channel,
    relu,
    has_bias,
    saturate,
    shape,
    sx,
    sw,
    spread,
    zp,
    how,
    apply_relu,
    zp_first,
    int_bias,
    seed,
):
    """Float64 hand computations, with the zero point before rounding or the bias rounded to int32 too."""
    gen = torch.Generator().manual_seed(seed)
    m, k, n = shape
    codes = torch.randint(0, 256, (m, k), generator=gen, dtype=torch.uint8)
    zx = int(torch.randint(0, 256, (1,), generator=gen))
    w = torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8)
    scales = (torch.empty(n).uniform_(0.5, 2.0, generator=gen) * sw).float() if per_channel else sw
    zw = torch.randint(-3, 4, (n,), generator=gen) if per_channel else int(torch.randint(-3, 4, (1,), generator=gen))
    real = (codes.double() - zx) @ (
        w.double() * (torch.as_tensor(scales).double().view(-1, 1) if per_channel else sw)
    ).T
    bias = (torch.randn(n, generator=gen) * real.std().nan_to_num(1.0) * sx).float() if has_bias else None
    s = output_qparams(real * sx, spread, zp)
    layer = linear_layer(w, scales, zw, bias, s, zp, relu=relu, engine_name=engine_name)
    x = quantized_tensor(codes, sx, zx)
    pairs = None  # this CPU's torch; True: a CPU without AVX512-VNNI, whose codes qlib gives
    if engine_name != "qnnpack" and saturate and not pairs_saturate_here():
        wq, wsc, wzp, b = weight_of(layer._packed_params._packed_params)
        pairs, reference = True, qlib.linear(codes, sx, zx, wq, wsc, wzp, b, s, zp, relu, pairs_saturate=True)
    else:
        reference = run(layer, x)
    hand = hand_linear(layer, x, zp_first, int_bias)
    manual = finish(hand, how, zp if relu and apply_relu else None, 0, 255, torch.uint8)
    report = qlib.explain_layer(layer, x, manual, reference, pairs_saturate=pairs)
    assert_explained(report, manual, reference)


CONVS = [  # (in, out, groups, kernel, stride, padding, dilation): im2col, depthwise, groupwise, pointwise, grouped
    (3, 5, 1, (3, 3), 1, 1, 1),
    (16, 16, 16, (3, 3), 1, 1, 1),
    (16, 32, 16, (3, 3), 2, 1, 1),
    (16, 16, 4, (3, 3), 1, 1, 1),
    (9, 5, 1, (1, 1), 1, 0, 1),
    (6, 8, 2, (3, 2), 2, 2, 2),
]


@settings(max_examples=examples(40))  # each example runs two convolutions in torch and qlib
@given(
    conv=st.sampled_from(CONVS),
    per_channel=st.booleans(),
    relu=st.booleans(),
    has_bias=st.booleans(),
    saturate=st.sampled_from([None, True]),
    release=st.sampled_from([RELEASE, OTHER]),
    sx=SCALES,
    sw=SCALES,
    spread=st.floats(0.3, 3.0),
    zp=st.integers(0, 255),
    how=st.sampled_from(FINISHES),
    seed=st.integers(0, 2**31),
)
def test_every_difference_of_a_float64_conv_is_explained(
    conv, per_channel, relu, has_bias, saturate, release, sx, sw, spread, zp, how, seed
):
    gen = torch.Generator().manual_seed(seed)
    c, n_out, groups, kernel, stride, padding, dilation = conv
    codes = torch.randint(0, 256, (2, c, 7, 6), generator=gen, dtype=torch.uint8)
    zx = int(torch.randint(0, 256, (1,), generator=gen))
    w = torch.randint(-128, 128, (n_out, c // groups, *kernel), generator=gen).to(torch.int8)
    scales = (torch.empty(n_out).uniform_(0.5, 2.0, generator=gen) * sw).float() if per_channel else sw
    zw = torch.randint(-3, 4, (n_out,), generator=gen) if per_channel else 1  # asymmetric: FBGEMM, not oneDNN
    bias = (torch.randn(n_out, generator=gen) * sx * sw * 3000).float() if has_bias else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    layer = conv_layer(w, scales, zw, bias, 1.0, zp, relu=relu, **geometry)
    x = quantized_tensor(codes, sx, zx)
    real = (hand_conv(layer, x) - zp) * sx  # on output scale 1: the real outputs, rounded to sx steps
    layer.scale = output_qparams(real, spread, zp)
    pairs = (
        saturate if saturate and not pairs_saturate_here() else None
    )  # None: this CPU's torch, or qlib's model of it
    if pairs or release != RELEASE:
        wq, wsc, wzp, b = weight_of(layer._packed_params)
        reference = qlib.conv2d(
            codes, sx, zx, wq, wsc, wzp, b, layer.scale, zp, relu=relu, pairs_saturate=pairs, engine="fbgemm",
            release=release, **geometry,
        )  # fmt: skip
    else:
        reference = run(layer, x)
    manual = finish(hand_conv(layer, x), how, zp if relu else None, 0, 255, torch.uint8)
    report = qlib.explain_layer(layer, x, manual, reference, release=release, pairs_saturate=pairs)
    assert_explained(report, manual, reference)


@settings(max_examples=examples(100))  # each example runs two convolutions in torch and qlib
@given(
    conv=st.sampled_from(CONVS),
    per_channel=st.booleans(),
    relu=st.booleans(),
    has_bias=st.booleans(),
    sx=SCALES,
    sw=SCALES,
    spread=st.floats(0.3, 3.0),
    zp=st.integers(0, 255),
    how=st.sampled_from(FINISHES),
    seed=st.integers(0, 2**31),
)
def test_every_difference_of_a_float64_onednn_conv_is_explained(
    conv, per_channel, relu, has_bias, sx, sw, spread, zp, how, seed
):
    """Convolutions the onednn engine runs (symmetric weights), where this CPU's oneDNN kernels sum exactly."""
    if ONEDNN_PAIRS_SATURATE:
        pytest.skip("this process's oneDNN kernels saturate pairs: explain_layer refuses them (the test above)")
    gen = torch.Generator().manual_seed(seed)
    c, n_out, groups, kernel, stride, padding, dilation = conv
    codes = torch.randint(0, 256, (2, c, 7, 6), generator=gen, dtype=torch.uint8)
    zx = int(torch.randint(0, 256, (1,), generator=gen))
    w = torch.randint(-128, 128, (n_out, c // groups, *kernel), generator=gen).to(torch.int8)
    scales = (torch.empty(n_out).uniform_(0.5, 2.0, generator=gen) * sw).float() if per_channel else sw
    bias = (torch.randn(n_out, generator=gen) * sx * sw * 3000).float() if has_bias else None
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups)
    zw = torch.zeros(n_out, dtype=torch.long) if per_channel else 0  # symmetric: the onednn engine's only kind
    layer = conv_layer(w, scales, zw, bias, 1.0, zp, relu=relu, engine_name="onednn", **geometry)
    x = quantized_tensor(codes, sx, zx)
    real = (hand_conv(layer, x) - zp) * sx
    layer.scale = output_qparams(real, spread, zp)
    reference = run(layer, x)
    manual = finish(hand_conv(layer, x), how, zp if relu else None, 0, 255, torch.uint8)
    assert_explained(qlib.explain_layer(layer, x, manual, reference), manual, reference)


ADD_CODES = {
    torch.uint8: (0, 256, torch.quint8),
    torch.int8: (-128, 128, torch.qint8),
    torch.int32: (-5000, 5000, torch.qint32),
}


@given(
    storage=st.sampled_from(sorted(ADD_CODES, key=str)),
    shape=st.sampled_from([(70,), (3, 65), (2, 3, 40), (1,), (130,)]),
    broadcast=st.booleans(),
    relu=st.booleans(),
    release=st.sampled_from([RELEASE, OTHER]),
    sa=SCALES,
    sb=SCALES,
    spread=st.floats(0.3, 3.0),
    how=st.sampled_from(FINISHES),
    zp_first=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_every_difference_of_a_float64_add_is_explained(
    storage, shape, broadcast, relu, release, sa, sb, spread, how, zp_first, seed
):
    gen = torch.Generator().manual_seed(seed)
    lo, hi, dtype = ADD_CODES[storage]
    qmin, qmax = qlib.qrange(dtype)
    a = torch.randint(lo, hi, shape, generator=gen).to(storage)
    b = torch.randint(lo, hi, shape[:-1] + (1,) if broadcast else shape, generator=gen).to(storage)
    za, zb, z = (int(torch.randint(max(qmin, -300), min(qmax, 300) + 1, (1,), generator=gen)) for _ in range(3))
    qa, qb = quantized_tensor(a, sa, za), quantized_tensor(b, sb, zb)
    real = sa * (a.double() - za) + sb * (b.double() - zb)
    span = max(float(real.abs().max()), 1e-3)
    s = span * 2 / (min(qmax - qmin, 255) * spread)
    qf = adder(s, z)
    op = qf.add_relu if relu else qf.add
    if release == RELEASE:
        reference = run(lambda pair: op(*pair), (qa, qb))
    else:
        reference = qlib.add(a, sa, za, b, sb, zb, s, z, relu, release=release)
    how = "dtype" if how in ("observer", "wrap") and storage == torch.int32 else how
    manual = finish(hand_add(qf, qa, qb, zp_first), how, z if relu else None, qmin, qmax, storage)
    report = qlib.explain_layer(op, (qa, qb), manual, reference, release=release)
    assert_explained(report, manual, reference)
