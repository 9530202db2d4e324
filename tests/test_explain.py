"""qlib.explain: constructed mismatches of every cause, with PyTorch's integers from real torch.

Every reference here comes from torch.quantize_per_tensor / quantize_per_channel. The manual
integers are built the way a reader would build them (round(x / scale) + zero_point without a
clamp, a cast to uint8, ...), and each test first checks with plain torch arithmetic that the
construction really has the property its cause names, so that a test can fail.
"""

from __future__ import annotations

import itertools

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import mixed_values

import qlib
from qlib.mismatch import CAUSES, SHOWN_ROWS, Report, explain
from qlib.ranges import DTYPE_RANGES

RELEASE = qlib.torch_release()  # the installed torch, whose integers the references are

F32 = torch.float32
TWINS = {torch.uint8: torch.quint8, torch.int8: torch.qint8, torch.int32: torch.qint32}
BITS = {torch.quint4x2: 4, torch.quint2x4: 2}
STORAGE = {
    torch.quint8: torch.uint8,
    torch.qint8: torch.int8,
    torch.qint32: torch.int32,
    torch.quint4x2: torch.uint8,
    torch.quint2x4: torch.uint8,
}
DTYPES = [torch.quint8, torch.qint8, torch.qint32, torch.quint4x2, torch.quint2x4, torch.uint8, torch.int8, torch.int32]
# An odd zero point inside each range: at exact ties it flips the parity that round-half-even sees.
ODD_ZP = {torch.quint8: 35, torch.qint8: -7, torch.qint32: 1001, torch.quint4x2: 5, torch.quint2x4: 1}

# The forum thread (../shared/seed/forum-thread.txt): input, the reader's integers
# (input_quant_manual) and PyTorch's int_repr(), with scale 0.01696838 and zero point 34.
FORUM_X = torch.tensor(
    [
        [
            [
                [0.95466703176498413086, -0.136212718486785888672, 0.75253891944885253906, 1.57104063034057617188],
                [0.97250884771347045898, -0.67004448175430297852, -0.58047348260879516602, 1.30683445930480957031],
                [-0.13423979282379150391, 0.16391958296298980713, -0.71688455343246459961, 0.05846109613776206970],
                [1.07569837570190429688, -0.06351475417613983154, -0.19469638168811798096, -0.09430617839097976685],
            ]
        ]
    ]
)
FORUM_MANUAL = torch.tensor(
    [[[[90.0, 26.0, 78.0, 127.0], [91.0, -5.0, 0.0, 111.0], [26.0, 44.0, -8.0, 37.0], [97.0, 30.0, 23.0, 28.0]]]]
)
FORUM_INT_REPR = torch.tensor(
    [[[[90, 26, 78, 127], [91, 0, 0, 111], [26, 44, 0, 37], [97, 30, 23, 28]]]], dtype=torch.uint8
)
FORUM_SCALE, FORUM_ZP = 0.01696838, 34

# FBGEMM's comment in QuantUtils.h (Quantize): x * (1/scale) is 127.5, x / scale is 127.499992.
FBGEMM_X, FBGEMM_SCALE = 0.273939937, 0.00214854861


def quantized_dtype(dtype: torch.dtype) -> torch.dtype:
    return TWINS.get(dtype, dtype)


def unpack(packed: torch.Tensor, bits: int, n: int) -> torch.Tensor:
    """Codes from torch's packed sub-byte int_repr (lowest bits first)."""
    parts = [(packed >> (bits * i)) & ((1 << bits) - 1) for i in range(8 // bits)]
    return torch.stack(parts, dim=-1).reshape(-1)[:n]


def torch_codes(x: torch.Tensor, scale: float, zp: int, dtype: torch.dtype) -> torch.Tensor:
    """PyTorch's integer codes, one per element, from torch.quantize_per_tensor."""
    q = torch.quantize_per_tensor(x, scale, zp, quantized_dtype(dtype))
    if q.dtype in BITS:
        return unpack(q.int_repr(), BITS[q.dtype], x.numel()).view(x.shape)
    return q.int_repr()


def explain_both_ways(x, manual, scale, zp, dtype) -> list[Report]:
    """explain() with the quantized tensor as reference (quantized dtypes only) and with plain codes."""
    reports = [explain(x, manual, torch_codes(x, scale, zp, dtype), scale, zp, dtype)]
    if dtype not in TWINS:
        reports.append(explain(x, manual, torch.quantize_per_tensor(x, scale, zp, dtype)))
    return reports


def reader(x: torch.Tensor, scale: float, zp: int, dtype: torch.dtype) -> torch.Tensor:
    """round(x / scale) + zero_point without a clamp; in float64 for 32-bit ranges, where float32 is too coarse."""
    if DTYPE_RANGES[dtype][1] > 2**16:
        return torch.round(x.double() / scale) + zp
    return torch.round(x / scale) + zp


def causes_at(report: Report) -> dict[tuple[int, ...], str]:
    return {row.index: row.cause for row in report.rows}


def out_of_range_inputs(dtype: torch.dtype, scale: float, zp: int) -> torch.Tensor:
    """x whose round(x / scale) + zp lies a little below qmin, a little above qmax, and inside.

    A little: 3, or about 3000 for 32-bit ranges, where float32 inputs are 256 apart.
    """
    qmin, qmax = DTYPE_RANGES[dtype]
    step = 3000 if qmax > 2**16 else 3
    return torch.tensor([(qmin - zp - step + 0.2) * scale, (qmax - zp + step + 0.2) * scale, scale], dtype=F32)


# --- the forum thread --------------------------------------------------------------------------


def test_forum_thread_is_reproduced_by_torch():
    q = torch.quantize_per_tensor(FORUM_X, FORUM_SCALE, FORUM_ZP, torch.quint8)
    assert torch.equal(q.int_repr(), FORUM_INT_REPR)
    assert torch.equal(torch.round(FORUM_X / FORUM_SCALE) + FORUM_ZP, FORUM_MANUAL)


@pytest.mark.parametrize("as_int_repr", [False, True])
def test_forum_thread_reports_exactly_two_clamp_low(as_int_repr):
    q = torch.quantize_per_tensor(FORUM_X, FORUM_SCALE, FORUM_ZP, torch.quint8)
    if as_int_repr:
        report = explain(FORUM_X, FORUM_MANUAL, q.int_repr(), FORUM_SCALE, FORUM_ZP, torch.quint8)
    else:
        report = explain(FORUM_X, FORUM_MANUAL, q)
    assert report.counts == {"clamp_low": 2}
    assert causes_at(report) == {(0, 0, 1, 1): "clamp_low", (0, 0, 2, 2): "clamp_low"}
    assert [(r.manual, r.reference, r.unclamped) for r in report.rows] == [(-5, 0, -5), (-8, 0, -8)]
    assert [r.x for r in report.rows] == [FORUM_X[0, 0, 1, 1].item(), FORUM_X[0, 0, 2, 2].item()]
    assert report.reference_not_recomputed == 0


def test_forum_thread_cast_to_uint8_is_wraparound():
    manual = FORUM_MANUAL.to(torch.uint8)  # what .to(torch.uint8) does to -5 and -8 without a clamp
    assert manual[0, 0, 1, 1] == 251 and manual[0, 0, 2, 2] == 248
    report = explain(FORUM_X, manual, torch.quantize_per_tensor(FORUM_X, FORUM_SCALE, FORUM_ZP, torch.quint8))
    assert causes_at(report) == {(0, 0, 1, 1): "wraparound", (0, 0, 2, 2): "wraparound"}
    assert [r.unclamped for r in report.rows] == [-5, -8]


# --- one cause at a time, every dtype ----------------------------------------------------------


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_clamp_low_and_high(dtype):
    qmin, qmax = DTYPE_RANGES[dtype]
    scale, zp = 0.5, ODD_ZP[quantized_dtype(dtype)]
    x = out_of_range_inputs(dtype, scale, zp)
    manual = reader(x, scale, zp, dtype)
    assert manual[0] < qmin and manual[1] > qmax and qmin <= manual[2] <= qmax
    for report in explain_both_ways(x, manual, scale, zp, dtype):
        assert causes_at(report) == {(0,): "clamp_low", (1,): "clamp_high"}
        assert [(r.reference, r.unclamped) for r in report.rows] == [(qmin, manual[0]), (qmax, manual[1])]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_wraparound_of_a_cast_to_the_storage_dtype(dtype):
    qmin, qmax = DTYPE_RANGES[dtype]
    scale, zp = 0.5, ODD_ZP[quantized_dtype(dtype)]
    x = out_of_range_inputs(dtype, scale, zp)
    unclamped = reader(x, scale, zp, dtype)
    manual = unclamped.long().to(STORAGE.get(dtype, dtype))
    expected = {(0,): "wraparound", (1,): "wraparound"}
    if quantized_dtype(dtype) in BITS:  # 4- and 2-bit codes live in uint8: 18 fits and does not wrap
        assert manual[1] == unclamped[1] > qmax
        expected[(1,)] = "clamp_high"
    else:
        assert manual[1] != unclamped[1]  # it wrapped
    assert manual[0] != unclamped[0]
    for report in explain_both_ways(x, manual, scale, zp, dtype):
        assert causes_at(report) == expected
        assert [r.unclamped for r in report.rows] == unclamped[:2].tolist()


@pytest.mark.parametrize("dtype", list(BITS), ids=str)
def test_wraparound_to_the_low_bits(dtype):
    scale, zp = 0.5, ODD_ZP[dtype]
    x = out_of_range_inputs(dtype, scale, zp)
    manual = reader(x, scale, zp, dtype).long() & ((1 << BITS[dtype]) - 1)  # kept to a nibble / 2 bits
    for report in explain_both_ways(x, manual, scale, zp, dtype):
        assert causes_at(report) == {(0,): "wraparound", (1,): "wraparound"}
        assert "bits" in report.rows[0].proof


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
def test_zero_point_order_at_exact_ties(dtype):
    qmin, qmax = DTYPE_RANGES[dtype]
    scale, zp = 0.5, ODD_ZP[quantized_dtype(dtype)]
    ks = [-3, 0, 4, 1000] if qmax > 2**16 else [qmin - zp, qmax - zp - 1, 0]
    x = torch.tensor([(k + 0.5) * scale for k in ks], dtype=F32)
    assert torch.equal(x / scale, torch.tensor(ks, dtype=F32) + 0.5)  # exact ties
    # torch 2.13 adds the zero point before rounding, except for 4- and 2-bit dtypes; torch 2.14
    # adds it after everywhere. The reader does the opposite.
    torch_adds_before = RELEASE == "2.13" and quantized_dtype(dtype) not in BITS
    manual = torch.round(x / scale) + zp if torch_adds_before else torch.round(x / scale + zp)
    assert (manual != torch_codes(x, scale, zp, dtype).long()).all()
    for report in explain_both_ways(x, manual, scale, zp, dtype):
        assert report.counts == {"zero_point_order": len(ks)}
        row = report.rows[0]
        assert row.manual_input != row.reference_input  # k + 0.5 against k + 0.5 + zp
        assert {row.manual_input, row.reference_input} == {ks[0] + 0.5, ks[0] + 0.5 + zp}


@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint32, torch.uint8, torch.int32], ids=str)
def test_division_vs_reciprocal_fbgemm_example(dtype):
    x = torch.tensor([FBGEMM_X])
    s32 = torch.tensor(FBGEMM_SCALE, dtype=F32)
    assert (x * (torch.tensor(1.0) / s32)).item() == 127.5 and (x / s32).item() < 127.5
    manual = torch.round(x / FBGEMM_SCALE)
    for report in explain_both_ways(x, manual, FBGEMM_SCALE, 0, dtype):
        assert causes_at(report) == {(0,): "division_vs_reciprocal"}
        row = report.rows[0]
        assert (row.manual, row.reference) == (127, 128)
        assert (row.manual_input, row.reference_input) == ((x / s32).item(), 127.5)
        assert "127.5" in row.proof and repr((x / s32).item()) in row.proof


@pytest.mark.parametrize("dtype", [torch.quint8, torch.qint32, torch.uint8], ids=str)
def test_scale_precision_float64_scale(dtype):
    scale = 0.1
    x = torch.tensor([6.050000190734863, 6.349999904632568])
    manual = torch.round(x.double() / scale)  # the reader's arithmetic in float64 (numpy-style)
    reference = torch_codes(x, scale, 0, dtype)
    assert (manual != reference.double()).all()
    assert torch.equal(torch.round(x / scale), reference.float())  # float32 division agrees with torch
    for report in explain_both_ways(x, manual, scale, 0, dtype):
        assert report.counts == {"scale_precision": 2}
        assert all("float64" in r.manual_rule and "float32" in r.reference_rule for r in report.rows)


def test_precedence_division_before_scale_precision():
    # In float64, FBGEMM's example is reproduced both by dividing (in float32) and by a float64
    # scale (with the reciprocal): two causes prove the pair, and the earlier one in CAUSES wins.
    x = torch.tensor([FBGEMM_X])
    manual = torch.round(x.double() / FBGEMM_SCALE)
    assert manual.item() == 127
    assert torch.round(x / FBGEMM_SCALE).item() == 127  # division alone
    assert torch.round(x.double() * (1 / FBGEMM_SCALE)).item() == 127  # float64 scale alone
    report = explain(x, manual, torch.quantize_per_tensor(x, FBGEMM_SCALE, 0, torch.quint8))
    assert report.counts == {"division_vs_reciprocal": 1}
    assert CAUSES.index("division_vs_reciprocal") < CAUSES.index("scale_precision")
    assert report.rows[0].hypotheses == ("division_vs_reciprocal", "scale_precision")
    assert "1 row has more than one explanation" in str(report)


def test_precedence_order_is_the_documented_one():
    assert CAUSES == (
        "clamp_low",
        "clamp_high",
        "wraparound",
        "zero_point_order",
        "division_vs_reciprocal",
        "scale_precision",
        "unexplained",
    )


# --- several causes, per channel, unexplained ---------------------------------------------------


def test_several_causes_in_one_tensor():
    scale = FBGEMM_SCALE
    x = torch.tensor([FBGEMM_X, -0.01, 0.6, 0.1, 0.2])
    manual = torch.round(x / scale)  # zero point 0, no clamp
    manual[4] += 50  # a slip of the reader's: nothing explains it
    assert manual[1] < 0 and manual[2] > 255
    report = explain(x, manual, torch.quantize_per_tensor(x, scale, 0, torch.quint8))
    assert causes_at(report) == {
        (0,): "division_vs_reciprocal",
        (1,): "clamp_low",
        (2,): "clamp_high",
        (4,): "unexplained",
    }
    assert report.counts == {"division_vs_reciprocal": 1, "clamp_low": 1, "clamp_high": 1, "unexplained": 1}
    assert list(report.counts) == ["clamp_low", "clamp_high", "division_vs_reciprocal", "unexplained"]
    assert report.rows[3].manual_rule is None and "no cause reproduces both" in report.rows[3].proof


@pytest.mark.parametrize("transpose", [False, True])
def test_per_channel_several_causes(transpose):
    scales = torch.tensor([FBGEMM_SCALE, 0.5], dtype=F32)  # the reader keeps float32 scales
    zps = torch.tensor([0, 3])
    x = torch.tensor([[FBGEMM_X, -0.01, 0.6, 0.1], [0.25, 1.25, -3.0, 200.0]])
    manual = torch.round(x / scales[:, None]) + zps[:, None]
    if RELEASE != "2.13":  # torch adds the zero point after rounding too: this reader adds it before
        manual[1] = torch.round(x[1] / scales[1] + zps[1])
    expected = {
        (0, 0): "division_vs_reciprocal",
        (0, 1): "clamp_low",
        (0, 2): "clamp_high",
        (1, 0): "zero_point_order",
        (1, 1): "zero_point_order",
        (1, 2): "clamp_low",
        (1, 3): "clamp_high",
    }
    axis = 0
    if transpose:
        x, manual, axis = x.T.contiguous(), manual.T.contiguous(), 1
        expected = {(j, i): c for (i, j), c in expected.items()}
    q = torch.quantize_per_channel(x, scales.double(), zps, axis, torch.quint8)
    for report in [
        explain(x, manual, q),
        explain(x, manual, q.int_repr(), scales, zps, torch.quint8, axis=axis),
        explain(x, manual, q.int_repr(), scales, zps, torch.uint8, axis=axis - 2),
    ]:
        assert causes_at(report) == expected
        assert "per channel" in str(report)
        row = next(r for r in report.rows if r.cause == "zero_point_order")
        assert (row.scale, row.zero_point) == (0.5, 3)


@pytest.mark.parametrize("dtype", [torch.qint8, torch.qint32], ids=str)
def test_per_channel_signed(dtype):
    scales, zps = torch.tensor([0.5, 0.25]), torch.tensor([-3, 5])
    x = torch.tensor([[-70.0, 0.25, 80.0], [-40.0, 1.125, 3e9]])
    manual = torch.round(x.double() / scales[:, None].double()) + zps[:, None]
    q = torch.quantize_per_channel(x, scales.double(), zps, 0, dtype)
    report = explain(x, manual, q)
    qmin, qmax = DTYPE_RANGES[dtype]
    expected = {}
    for i, j in itertools.product(range(2), range(3)):
        m, r = int(manual[i, j]), int(q.int_repr()[i, j])
        if m != r:
            expected[(i, j)] = "clamp_low" if m < qmin else "clamp_high" if m > qmax else "zero_point_order"
    assert expected  # the construction has mismatches
    assert causes_at(report) == expected


def test_unexplained_when_reference_is_not_torchs_for_the_given_scale():
    x = torch.tensor([0.35, 1.0])
    reference = torch.quantize_per_tensor(x, 0.1, 0, torch.quint8).int_repr()  # [4, 10]
    manual = torch.tensor([3, 10])
    report = explain(x, manual, reference, 0.2, 0, torch.quint8)  # not the scale torch used
    assert report.counts == {"unexplained": 1}
    assert report.reference_not_recomputed == 2
    row = report.rows[0]
    assert (row.reference, row.recomputed) == (4, 2)
    assert "not reference 4" in row.proof
    assert "Warning: reference differs at 2 elements from torch" in str(report)


def test_unfused_textbook_formula_is_unexplained_but_shown():
    # torch 2.13 rounds x * inv + zp once (FMA); the textbook float32 formula rounds twice.
    # No cause in the vocabulary names that; the row says so and shows the numbers. torch 2.14
    # adds the zero point after rounding, so there the same manual value is an order difference.
    x = torch.tensor([0.9756817817687988])
    inv = torch.tensor(1.0) / torch.tensor(FORUM_SCALE, dtype=F32)
    manual = torch.round(x * inv + FORUM_ZP)
    installed = torch.quantize_per_tensor(x, FORUM_SCALE, FORUM_ZP, torch.quint8).int_repr()
    expected = {"2.13": "unexplained", "2.14": "zero_point_order"}
    for release, cause in expected.items():
        reference = qlib.quantize(x, FORUM_SCALE, FORUM_ZP, torch.quint8, release=release)
        if release == RELEASE:
            assert torch.equal(reference, installed)
        assert manual.item() != reference.item()
        report = explain(x, manual, reference, FORUM_SCALE, FORUM_ZP, torch.quint8, release=release)
        assert report.counts == {cause: 1}
        assert ("without FMA" in report.rows[0].proof) == (release == "2.13")


def test_no_fma_hint_when_the_reference_is_not_torchs_for_the_given_scale():
    # With a wrong scale the two roundings are not what separates manual from reference.
    x = torch.tensor([0.35, 1.0])
    reference = torch.quantize_per_tensor(x, 0.1, 0, torch.quint8).int_repr()
    inv = torch.tensor(1.0) / torch.tensor(0.2, dtype=F32)
    manual = torch.round(x * inv + 0)  # the unfused formula at the wrong scale
    report = explain(x, manual, reference, 0.2, 0, torch.quint8)
    assert report.rows and all(row.cause == "unexplained" for row in report.rows)
    assert all("without FMA" not in row.proof for row in report.rows)


# --- the report ------------------------------------------------------------------------------


def test_nothing_differs():
    q = torch.quantize_per_tensor(FORUM_X, FORUM_SCALE, FORUM_ZP, torch.quint8)
    report = explain(FORUM_X, q.int_repr(), q)
    assert report.rows == [] and report.counts == {} and report.counts["clamp_low"] == 0
    assert str(report).startswith("manual and reference agree at all 16 elements")
    one = explain(
        FORUM_X[..., :1, :1], q.int_repr()[..., :1, :1], q.int_repr()[..., :1, :1], FORUM_SCALE, FORUM_ZP, torch.quint8
    )
    assert str(one).startswith("manual and reference agree at the only element")
    assert "nothing differs" in str(report) and "nothing differs" in report._repr_html_()
    assert "<table>" not in report._repr_html_()


def test_str_and_html_tables():
    report = explain(FORUM_X, FORUM_MANUAL, torch.quantize_per_tensor(FORUM_X, FORUM_SCALE, FORUM_ZP, torch.quint8))
    text = str(report)
    lines = text.splitlines()
    assert lines[:2] == [
        "2 of 16 elements differ: 2 clamp_low.",
        f"(torch {RELEASE}, quint8, scale 0.01696838, zero point 34, codes 0..255)",
    ]
    lines = lines[1:]  # the rows as before the summary took two lines
    assert max(map(len, lines)) <= 100
    assert lines[2].split() == ["index", "x", "manual", "reference", "cause"]
    assert lines[3].startswith("(0, 0, 1, 1)") and lines[3].split()[-1] == "clamp_low"
    assert lines[4] == "    unclamped -5 < qmin 0; torch clamps to 0"
    x = FORUM_X[0, 0, 2, 2].item()
    assert f"{x:.9g}" in lines[5] and " -8 " in lines[5]
    assert torch.tensor(float(f"{x:.9g}"), dtype=F32).item() == x  # 9 digits name a float32 exactly
    assert repr(report) == text
    page = report._repr_html_()
    assert '<table class="qlib-report">' in page and page.count("<tr>") == 3 and page.count('<tr class="proof">') == 2
    assert "<th>cause</th>" in page and page.count("<td>clamp_low</td>") == 2
    assert "unclamped -5 &lt; qmin 0" in page and "-5 < qmin" not in page


def test_long_reports_are_cut_in_print_not_in_rows():
    x = -torch.arange(1, SHOWN_ROWS + 11, dtype=F32)
    report = explain(x, torch.round(x / 0.5), torch.quantize_per_tensor(x, 0.5, 0, torch.quint8))
    assert len(report.rows) == SHOWN_ROWS + 10 and report.counts == {"clamp_low": SHOWN_ROWS + 10}
    assert str(report).endswith("... 10 more rows in .rows")
    assert "10 more rows" in report._repr_html_()
    long_proof = max(len(row.proof) for row in report.rows)
    assert max(map(len, str(report).splitlines())) <= 100 < long_proof + 4 or long_proof + 4 <= 100


# --- properties, against torch ----------------------------------------------------------------

# Readers whose arithmetic is one of the combinations explain models (no clamp).
READERS = {
    "round(x / s) + zp": lambda x, s, z: torch.round(x / s) + z,
    "round(x / s + zp)": lambda x, s, z: torch.round(x / s + z),
    "round(x64 / s) + zp": lambda x, s, z: torch.round(x.double() / s) + z,
    "round(x64 * (1 / s) + zp)": lambda x, s, z: torch.round(x.double() * (1 / s) + z),
}
PROPERTY_DTYPES = [torch.quint8, torch.qint8, torch.quint4x2, torch.quint2x4, torch.qint32]


@given(
    dtype=st.sampled_from(PROPERTY_DTYPES),
    reader_name=st.sampled_from(sorted(READERS)),
    scale=st.one_of(st.floats(1e-3, 10.0), st.sampled_from([FORUM_SCALE, FBGEMM_SCALE, 0.1, 1 / 3, 0.5])),
    data=st.data(),
    seed=st.integers(0, 2**31),
    wrap=st.booleans(),
)
def test_every_mismatch_of_a_modelled_reader_is_explained(dtype, reader_name, scale, data, seed, wrap):
    qmin, qmax = DTYPE_RANGES[dtype]
    k_range = 1000 if qmax > 2**16 else qmax - qmin + 8
    zp = data.draw(st.integers(max(qmin, -1000), min(qmax, 1000)))
    x = mixed_values(scale, 60, k_range, seed, extremes=False)
    unclamped = READERS[reader_name](x, scale, zp)
    manual = unclamped.long().to(STORAGE[dtype]) if wrap else unclamped
    q = torch.quantize_per_tensor(x, scale, zp, dtype)
    report = explain(x, manual, q)

    reference = torch_codes(x, scale, zp, dtype).long()
    differ = manual.long() != reference
    assert sum(report.counts.values()) == len(report.rows) == int(differ.sum())
    assert [r.index for r in report.rows] == [tuple(i) for i in differ.nonzero().tolist()]
    assert report.reference_not_recomputed == 0
    outside = (unclamped < qmin) | (unclamped > qmax)
    for row in report.rows:
        i = row.index
        assert (row.manual, row.reference, row.x) == (int(manual[i]), int(reference[i]), x[i].item())
        assert row.cause != "unexplained", row.proof
        assert row.cause == row.hypotheses[0] and len(set(row.hypotheses)) == len(row.hypotheses)
        if outside[i] and manual[i] == unclamped[i]:
            assert row.cause == ("clamp_low" if unclamped[i] < qmin else "clamp_high"), row.proof
        elif outside[i]:
            assert row.cause == "wraparound", row.proof
        else:
            assert row.cause in ("zero_point_order", "division_vs_reciprocal", "scale_precision"), row.proof


# --- the PT2E op and torchao's quantize_affine as the reference ---------------------------------


def pt2e_reference(x, scale, zp, qmin, qmax, dtype):
    import torchao.quantization.pt2e  # noqa: F401  (registers nothing, but loads torch's quantized_decomposed ops)

    return torch.ops.quantized_decomposed.quantize_per_tensor(x, scale, zp, qmin, qmax, dtype)


def affine_reference(x, scale, zp, qmin, qmax, dtype):
    from torchao.quantization.quant_primitives import quantize_affine

    s, z = torch.tensor([scale], dtype=F32), torch.tensor([zp], dtype=torch.int32)
    return quantize_affine(x, tuple(x.shape), s, z, dtype, qmin, qmax)


@given(
    kernel=st.sampled_from(["pt2e", "affine"]),
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    narrow=st.booleans(),
    reader_name=st.sampled_from(sorted(READERS)),
    scale=st.one_of(st.floats(1e-3, 10.0), st.sampled_from([FORUM_SCALE, FBGEMM_SCALE, 0.1, 1 / 3, 0.5])),
    data=st.data(),
    seed=st.integers(0, 2**31),
)
def test_every_mismatch_against_pt2e_and_quantize_affine_is_explained(
    kernel, dtype, narrow, reader_name, scale, data, seed
):
    """A reader's integers against torch's PT2E op or torchao's quantize_affine, clamped to a quantizer's range."""
    lo, hi = DTYPE_RANGES[dtype]
    qmin, qmax = (lo, (lo + hi) // 2) if narrow else (lo, hi)  # narrow: reduce_range's 0..127 / -128..-1
    zp = data.draw(st.integers(qmin, qmax))
    x = mixed_values(scale, 60, hi - lo + 8, seed, extremes=False)
    unclamped = READERS[reader_name](x, scale, zp)
    make = pt2e_reference if kernel == "pt2e" else affine_reference
    reference = make(x, scale, zp, qmin, qmax, dtype)
    report = explain(x, unclamped, reference, scale, zp, dtype, kernel=kernel, quant_min=qmin, quant_max=qmax)

    differ = unclamped != reference.long()
    assert report.reference_not_recomputed == 0
    assert sum(report.counts.values()) == len(report.rows) == int(differ.sum())
    outside = (unclamped < qmin) | (unclamped > qmax)
    for row in report.rows:
        i = row.index
        assert row.cause != "unexplained", row.proof
        if outside[i]:
            assert row.cause == ("clamp_low" if unclamped[i] < qmin else "clamp_high"), row.proof
        else:
            assert row.cause in ("zero_point_order", "division_vs_reciprocal", "scale_precision"), row.proof


def test_pt2e_reciprocal_in_float64_is_named_scale_precision():
    """For a scale that is not a float32, the PT2E op's float64 reciprocal and ATen's float32 one differ."""
    scale, zp = 0.13522987986828883, 0
    inv64 = torch.tensor(1.0 / scale, dtype=F32)  # float32(1 / double(scale))
    inv32 = 1.0 / torch.tensor(scale, dtype=F32)
    assert inv64 != inv32
    k = torch.arange(1, 101, dtype=torch.float64)
    x = ((k + 0.5) * scale).float()  # near ties of the grid
    reference = pt2e_reference(x, scale, zp, 0, 255, torch.uint8)
    aten_reader = torch.round(x * inv32) + zp  # what torch.quantize_per_tensor's arithmetic gives
    assert (aten_reader != reference.long()).any()
    report = explain(x, aten_reader, reference, scale, zp, torch.uint8, kernel="pt2e")
    assert report.reference_not_recomputed == 0 and len(report.rows) == int((aten_reader != reference.long()).sum())
    # a float32 division can give the same integers, and division_vs_reciprocal comes first in precedence
    assert all("scale_precision" in row.hypotheses for row in report.rows)
    assert report.counts["scale_precision"] > 0


def test_kernel_arguments_are_checked():
    x = torch.tensor([0.5])
    with pytest.raises(ValueError, match="kernel must be one of"):
        explain(x, torch.tensor([1]), torch.tensor([1], dtype=torch.uint8), 0.5, 0, torch.uint8, kernel="inductor")
    with pytest.raises(ValueError, match="quant_min and quant_max apply to"):
        explain(x, torch.tensor([1]), torch.tensor([1], dtype=torch.uint8), 0.5, 0, torch.uint8, quant_max=127)
    with pytest.raises(TypeError, match="plain dtypes"):
        explain(x, torch.tensor([1]), torch.tensor([1], dtype=torch.uint8), 0.5, 0, torch.quint8, kernel="pt2e")
    with pytest.raises(ValueError, match="quant_min < quant_max"):
        explain(
            x,
            torch.tensor([1]),
            torch.tensor([1], dtype=torch.uint8),
            0.5,
            0,
            torch.uint8,
            kernel="pt2e",
            quant_min=10,
            quant_max=5,
        )


# --- bad input --------------------------------------------------------------------------------

X = torch.tensor([0.5, -1.0, 2.0])
M = torch.tensor([5.0, -10.0, 20.0])
Q = torch.quantize_per_tensor(X, 0.1, 0, torch.quint8)
R = Q.int_repr()


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: explain([0.5], M, Q), TypeError, "x must be a torch.Tensor"),
        (lambda: explain(X.double(), M, Q), TypeError, "x must have dtype torch.float32.*float64"),
        (lambda: explain(torch.tensor([0.5, float("nan"), 1.0]), M, Q), ValueError, "x contains 1 NaN"),
        (lambda: explain(X, [5, -10, 20], Q), TypeError, "manual must be a tensor of your integers.*got list"),
        (lambda: explain(X, M.bool(), Q), TypeError, "manual must be .*got torch.bool"),
        (lambda: explain(X, Q, Q), TypeError, "manual must be .*got torch.quint8"),
        (lambda: explain(X, M[:2], Q), ValueError, r"manual must have the shape of x, \(3,\); got shape \(2,\)"),
        (
            lambda: explain(X, torch.tensor([5.0, 1.5, 20.0]), Q),
            ValueError,
            r"manual must hold whole numbers.*1 element\(s\).*index \(1,\) is 1.5",
        ),
        (lambda: explain(X, torch.tensor([5.0, float("inf"), 20.0]), Q), ValueError, "whole numbers.*is inf"),
        (lambda: explain(X, M, Q.dequantize()), TypeError, "reference must be PyTorch's integers.*float32"),
        (lambda: explain(X, M, [5, 0, 20], 0.1, 0, torch.quint8), TypeError, "reference must be an integer tensor"),
        (lambda: explain(X, M, R[:2], 0.1, 0, torch.quint8), ValueError, r"reference must have the shape of x"),
        (
            lambda: explain(X, M, torch.tensor([5, 300, 20]), 0.1, 0, torch.quint8),
            ValueError,
            r"reference must hold codes in \[0, 255\] for dtype torch.quint8.*is 300",
        ),
        (
            lambda: explain(X, M, torch.tensor([5, -1, 20]), 0.1, 0, torch.quint4x2),
            ValueError,
            r"codes in \[0, 15\].*is -1",
        ),
        (lambda: explain(X, M, R), ValueError, "scale is required when reference is an integer tensor.*got None"),
        (lambda: explain(X, M, R, 0.1), ValueError, "zero_point is required .*got None"),
        (lambda: explain(X, M, R, 0.1, 0), ValueError, "dtype is required .*got None"),
        (lambda: explain(X, M, R, 0.1, 0, torch.int16), TypeError, "dtype must be one of .*got torch.int16"),
        (lambda: explain(X, M, R, 0.1, 0, torch.float32), TypeError, "dtype must be one of .*got torch.float32"),
        (lambda: explain(X, M, R, 0.1, 0, "quint8"), TypeError, "dtype must be one of .*got 'quint8'"),
        (lambda: explain(X, M, R, 0.0, 0, torch.quint8), ValueError, "scale must be a finite positive.*got 0.0"),
        (lambda: explain(X, M, R, 0.1, 256, torch.quint8), ValueError, r"zero_point must lie in \[0, 255\].*256"),
        (lambda: explain(X, M, R, 0.1, 0.5, torch.quint8), ValueError, "zero_point must be a whole number"),
        (
            lambda: explain(X, M, Q, scale=0.2),
            ValueError,
            r"scale=0.2 disagrees with the quantized reference's own scale 0.1",
        ),
        (lambda: explain(X, M, Q, zero_point=3), ValueError, "zero_point=3 disagrees .* 0"),
        (lambda: explain(X, M, Q, dtype=torch.qint8), ValueError, "dtype=torch.qint8 disagrees .*torch.quint8"),
        (lambda: explain(X, M, Q, axis=0), ValueError, "axis=0 disagrees .*None"),
        (
            lambda: explain(X, M, R, torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), torch.quint8, axis=0),
            ValueError,
            r"scale must have one value per channel: shape \(3,\)",
        ),
        (
            lambda: explain(X, M, R, torch.tensor([0.1, 0.2]), 0, torch.quint8),
            ValueError,
            "scale must be a single number .*axis=None",
        ),
        (
            lambda: explain(
                X, M, R // 2, torch.full((3,), 0.1), torch.zeros(3, dtype=torch.long), torch.quint4x2, axis=0
            ),
            TypeError,
            "per tensor only",
        ),
        (
            lambda: explain(
                X, M, torch.quantize_per_tensor(X, 0.1, 0, torch.quint4x2).int_repr(), 0.1, 0, torch.quint4x2
            ),
            ValueError,
            r"shape of x.*packed",
        ),
        (
            lambda: explain(
                X[None],
                M[None],
                torch.quantize_per_channel(X[None], torch.tensor([0.1]), torch.tensor([0.5]), 0, torch.quint8),
            ),
            TypeError,
            "per_tensor_affine or per_channel_affine; got torch.per_channel_affine_float_qparams",
        ),
    ],
)
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
