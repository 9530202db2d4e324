"""qlib.onnx_qdq and qlib.onnx_runtime against real ONNX Runtime (onnxruntime 1.32.0, CPU provider)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from emulated import run_on_haswell  # noqa: E402
from inputs import examples, mixed_values, scales, zero_points  # noqa: E402
from onnx_graphs import QEMU_SCRIPT, const, model, run  # noqa: E402

from qlib.numerics import float32  # noqa: E402
from qlib.onnx_qdq import dequantize_linear, quantize_linear  # noqa: E402
from qlib.onnx_runtime import (  # noqa: E402
    matmul_integer,
    ort_pairs_saturate_here,
    qgemm,
    qlinear_matmul,
)
from qlib.ranges import DTYPE_RANGES  # noqa: E402
from qlib.testing import assert_same_bits, assert_same_ints  # noqa: E402

NP = {torch.uint8: np.uint8, torch.int8: np.int8, torch.int16: np.int16, torch.int32: np.int32}
NAME = {torch.uint8: "uint8", torch.int8: "int8", torch.int16: "int16", torch.int32: "int32"}


def ort_ints(out: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(out))


def codes(gen: torch.Generator, dtype: torch.dtype, shape: tuple[int, ...], extremes: float = 0.3) -> torch.Tensor:
    """Random codes of ``dtype``, a fraction ``extremes`` of them at the ends of the range."""
    lo, hi = DTYPE_RANGES[dtype]
    q = torch.randint(lo, hi + 1, shape, generator=gen)
    ends = torch.where(torch.rand(shape, generator=gen) < 0.5, lo, hi)
    q = torch.where(torch.rand(shape, generator=gen) < extremes, ends, q)
    return q.to(dtype)


# QuantizeLinear / DequantizeLinear: the same arithmetic on every CPU


@settings(max_examples=examples(300))
@given(
    scale=scales,
    dtype=st.sampled_from([torch.uint8, torch.int8, torch.int16]),
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    n=st.integers(1, 300),
)
def test_quantize_linear_per_tensor(scale, dtype, data, seed, n):
    qmin, qmax = DTYPE_RANGES[dtype]
    zp = data.draw(zero_points(qmin, qmax))
    k_range = 300 if dtype != torch.int16 else 40000
    x = mixed_values(float32(scale), n, k_range, seed)
    x = torch.cat([x, torch.tensor([float("nan"), -float("nan")])])
    s = np.float32(scale)
    theirs = run("QuantizeLinear", [("x", x.numpy()), ("s", s), ("z", NP[dtype](zp))], NAME[dtype])
    assert_same_ints(quantize_linear(x, scale, zp, dtype), ort_ints(theirs), f"scale={scale!r} zp={zp}")


def test_quantize_linear_ties_sweep():
    """Every x with x / scale at, or one ulp around, k + 0.5, for scales exact and inexact in float32."""
    compared = 0
    for scale in (1.0, 0.5, 2.0**-7, 0.1, 1 / 3, 0.0123, 3.7e-5, 1e-30, 1e20):
        for dtype, zp in ((torch.uint8, 0), (torch.uint8, 129), (torch.int8, -3), (torch.int8, 0)):
            s32 = float32(scale)
            k = torch.arange(-1000, 1000, dtype=torch.float64) + 0.5
            base = (k * s32).float()
            x = torch.cat(
                [base, torch.nextafter(base, torch.tensor(np.inf)), torch.nextafter(base, torch.tensor(-np.inf))]
            )
            theirs = run(
                "QuantizeLinear", [("x", x.numpy()), ("s", np.float32(s32)), ("z", NP[dtype](zp))], NAME[dtype]
            )
            assert_same_ints(quantize_linear(x, s32, zp, dtype), ort_ints(theirs), f"scale={scale} zp={zp}")
            compared += x.numel()
    assert compared >= 200_000


def test_quantize_linear_divides():
    """Values near ties where x / scale and torch's x * (1 / scale) round to different codes."""
    found = []
    for scale in (0.1, 0.3, 0.7, 1 / 3, 0.06, 0.018006444, 0.00214854861, 0.1277553737):
        s = float32(scale)
        inv = float32(1 / np.float32(s))
        k = (torch.arange(-128, 127, dtype=torch.float64) + 0.5) * s
        xs = torch.cat(
            [
                k.float(),
                torch.nextafter(k.float(), torch.tensor(np.inf)),
                torch.nextafter(k.float(), torch.tensor(-np.inf)),
            ]
        )
        div = torch.round(xs / torch.tensor(s))
        mul = torch.round(xs * torch.tensor(inv))
        found.append((xs[div != mul], s))
    assert sum(len(f) for f, _ in found) > 20
    for xs, s in found:
        if not len(xs):
            continue
        theirs = ort_ints(
            run("QuantizeLinear", [("x", xs.numpy()), ("s", np.float32(s)), ("z", np.uint8(128))], "uint8")
        )
        assert_same_ints(quantize_linear(xs, s, 128), theirs)
        reciprocal = (torch.round(xs * float32(1 / np.float32(s))) + 128).clamp(0, 255).to(torch.uint8)
        assert (reciprocal != theirs).all()  # torch's way would miss every one of them


@settings(max_examples=examples(150))
@given(
    dtype=st.sampled_from([torch.uint8, torch.int8, torch.int16]),
    shape=st.lists(st.integers(1, 6), min_size=1, max_size=4),
    axis_pick=st.integers(0, 3),
    seed=st.integers(0, 2**31 - 1),
)
def test_quantize_linear_per_axis(dtype, shape, axis_pick, seed):
    gen = torch.Generator().manual_seed(seed)
    axis = axis_pick % len(shape)
    n = shape[axis]
    qmin, qmax = DTYPE_RANGES[dtype]
    scale = (torch.rand(n, generator=gen) * 0.2 + 1e-3).float()
    zp = torch.randint(qmin, qmax + 1, (n,), generator=gen)
    x = torch.randn(shape, generator=gen) * 40
    specials = torch.tensor([float("inf"), float("-inf"), float("nan"), 1e38, -0.0])
    x.view(-1)[: min(5, x.numel())] = specials[: min(5, x.numel())]
    theirs = run(
        "QuantizeLinear",
        [("x", x.numpy()), ("s", scale.numpy()), ("z", zp.numpy().astype(NP[dtype]))],
        NAME[dtype],
        attrs={"axis": axis},
    )
    assert_same_ints(quantize_linear(x, scale, zp.to(dtype), dtype, axis=axis), ort_ints(theirs))


@settings(max_examples=examples(150))
@given(
    dtype=st.sampled_from([torch.uint8, torch.int8, torch.int16, torch.int32]),
    scale=scales,
    data=st.data(),
    seed=st.integers(0, 2**31 - 1),
    per_axis=st.booleans(),
)
def test_dequantize_linear(dtype, scale, data, seed, per_axis):
    gen = torch.Generator().manual_seed(seed)
    qmin, qmax = DTYPE_RANGES[dtype]
    q = codes(gen, dtype, (4, 33))
    if per_axis:
        s = (torch.rand(33, generator=gen) * float32(scale) + 1e-6).float()
        z = codes(gen, dtype, (33,))
        theirs = run("DequantizeLinear", [("q", q.numpy()), ("s", s.numpy()), ("z", z.numpy())], "float32", {"axis": 1})
        assert_same_bits(dequantize_linear(q, s, z, axis=1), torch.from_numpy(theirs))
        return
    zp = data.draw(zero_points(qmin, qmax))
    theirs = run("DequantizeLinear", [("q", q.numpy()), ("s", np.float32(scale)), ("z", NP[dtype](zp))], "float32")
    assert_same_bits(dequantize_linear(q, scale, zp), torch.from_numpy(theirs), f"scale={scale!r} zp={zp}")


# The integer products: the pairs saturate on CPUs without VNNI


def test_pairs_saturate_here_matches_ort():
    """The CPU flags qlib reads predict what ORT's u8 x s8 kernel does on this CPU (the note's worst case)."""
    a, b = np.full((1, 64), 255, np.uint8), np.full((64, 1), 127, np.int8)
    out = run("MatMulInteger", [("a", a), ("b", b)], "int32").item()
    assert out in (2_072_640, 1_048_544)
    assert ort_pairs_saturate_here() == (out == 1_048_544)


def gemm_case(gen: torch.Generator, a_type: torch.dtype, b_type: torch.dtype, m: int, k: int, n: int):
    a, b = codes(gen, a_type, (m, k), 0.6), codes(gen, b_type, (k, n), 0.6)
    za, zb = codes(gen, a_type, ()), codes(gen, b_type, (n,))
    return a, b, za, zb


TYPES = st.sampled_from([(torch.uint8, torch.int8), (torch.uint8, torch.uint8), (torch.int8, torch.int8)])


@settings(max_examples=examples(150))
@given(types=TYPES, m=st.integers(1, 9), k=st.integers(1, 90), n=st.integers(1, 40), seed=st.integers(0, 2**31 - 1))
def test_matmul_integer(types, m, k, n, seed):
    gen = torch.Generator().manual_seed(seed)
    a, b, za, zb = gemm_case(gen, *types, m, k, n)
    zb_scalar = zb[0]
    theirs = run(
        "MatMulInteger", [("a", a.numpy()), ("b", b.numpy()), ("za", za.numpy()), ("zb", zb_scalar.numpy())], "int32"
    )
    assert_same_ints(matmul_integer(a, b, int(za), int(zb_scalar)), ort_ints(theirs))


@settings(max_examples=examples(200))
@given(
    types=TYPES,
    m=st.integers(1, 9),
    k=st.integers(1, 90),
    n=st.integers(1, 40),
    per_column=st.booleans(),
    b_const=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
    y_scale=st.floats(0.05, 5000.0),
)
def test_qlinear_matmul(types, m, k, n, per_column, b_const, seed, y_scale):
    gen = torch.Generator().manual_seed(seed)
    a, b, za, zb = gemm_case(gen, *types, m, k, n)
    sa = float32(float(torch.rand((), generator=gen)) * 0.1 + 1e-4)
    sb = (torch.rand(n, generator=gen) * 0.1 + 1e-4).float()
    if not per_column:
        sb, zb = sb[:1], zb[:1]
    zy = codes(gen, a.dtype, ())
    sy = float32(sa * float(sb[0]) * y_scale)
    b_in = const(b.numpy()) if b_const else b.numpy()
    inputs = [("a", a.numpy()), ("sa", np.float32(sa)), ("za", za.numpy()), ("b", b_in)]
    inputs += [("sb", sb.numpy() if per_column else sb.numpy()[0]), ("zb", zb.numpy() if per_column else zb.numpy()[0])]
    inputs += [("sy", np.float32(sy)), ("zy", zy.numpy())]
    theirs = ort_ints(run("QLinearMatMul", inputs, NAME[a.dtype]))
    ours = qlinear_matmul(
        a, sa, int(za), b, sb if per_column else float(sb[0]), zb if per_column else int(zb[0]), sy, int(zy)
    )
    assert_same_ints(ours, theirs, f"per_column={per_column} b_const={b_const}")


def test_qlinear_matmul_multiplier_is_divided():
    """Scales and sums where (a_scale * b_scale) / y_scale, a_scale * (b_scale / y_scale) and the reciprocal differ."""
    rng = np.random.default_rng(5)
    f32 = np.float32
    checked = 0
    while checked < 60:
        sa, sb = f32(rng.uniform(1e-3, 0.1)), f32(rng.uniform(1e-3, 0.1))
        sy = f32(sa * sb * rng.uniform(20, 200))
        forms = {f32(f32(sa * sb) / sy), f32(sa * f32(sb / sy)), f32(f32(sa * sb) * f32(f32(1) / sy))}
        if len(forms) == 1:
            continue
        accs = np.arange(-16320, 16321).astype(np.float32)
        rounded = [np.rint(accs * m) for m in forms]
        split = np.nonzero(np.any([r != rounded[0] for r in rounded], axis=0))[0]
        if not len(split):
            continue
        target = int(accs[split[0]])
        za = 0 if target >= 0 else 255
        row = np.zeros(64, np.int64)
        full, rest = divmod(abs(target), 255)
        row[:full], row[full] = 255, rest
        a = torch.from_numpy((row if target >= 0 else 255 - row).astype(np.uint8)[None])
        b = torch.ones(64, 1, dtype=torch.int8)
        inputs = [("a", a.numpy()), ("sa", sa), ("za", np.uint8(za)), ("b", b.numpy()), ("sb", sb), ("zb", np.int8(0))]
        theirs = ort_ints(run("QLinearMatMul", inputs + [("sy", sy), ("zy", np.uint8(128))], "uint8"))
        assert_same_ints(qlinear_matmul(a, float(sa), za, b, float(sb), 0, float(sy), 128), theirs, f"acc={target}")
        checked += 1


@settings(max_examples=examples(200))
@given(
    types=TYPES,
    m=st.integers(1, 9),
    k=st.integers(1, 90),
    n=st.integers(1, 40),
    per_column=st.booleans(),
    b_const=st.booleans(),
    bias=st.sampled_from(["none", "row", "full", "huge"]),
    alpha=st.sampled_from([1.0, 0.5, 0.3, 3.0]),
    trans_a=st.booleans(),
    trans_b=st.booleans(),
    float_out=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_qgemm(types, m, k, n, per_column, b_const, bias, alpha, trans_a, trans_b, float_out, seed):
    gen = torch.Generator().manual_seed(seed)
    a, b, za, zb = gemm_case(gen, *types, m, k, n)
    sa = float32(float(torch.rand((), generator=gen)) * 0.1 + 1e-4)
    sb = (torch.rand(n, generator=gen) * 0.1 + 1e-4).float()
    if not per_column:
        sb, zb = sb[:1], zb[:1]
    c = None
    if bias == "row":
        c = torch.randint(-(2**16), 2**16, (n,), generator=gen, dtype=torch.int32)
    elif bias in ("full", "huge"):
        span = 2**16 if bias == "full" else 2**30
        c = torch.randint(-span, span, (m, n), generator=gen, dtype=torch.int32)
    zy = codes(gen, a.dtype, ())
    sy = float32(sa * float(sb[0]) * float(torch.rand((), generator=gen)) * 3000 + 1e-3)
    a_in = a.t().contiguous() if trans_a else a
    b_in = b.t().contiguous() if trans_b else b
    inputs = [("a", a_in.numpy()), ("sa", np.float32(sa)), ("za", za.numpy())]
    inputs += [("b", const(b_in.numpy()) if b_const else b_in.numpy())]
    inputs += [("sb", sb.numpy() if per_column else sb.numpy()[0]), ("zb", zb.numpy() if per_column else zb.numpy()[0])]
    inputs += [("c", None if c is None else c.numpy())]
    inputs += [] if float_out else [("sy", np.float32(sy)), ("zy", zy.numpy())]
    attrs = {"alpha": alpha, "transA": int(trans_a), "transB": int(trans_b)}
    out_type = "float32" if float_out else NAME[a.dtype]
    theirs = ort_ints(run("QGemm", inputs, out_type, attrs, domain="com.microsoft"))
    ours = qgemm(
        a_in, sa, int(za), b_in, sb if per_column else float(sb[0]), zb if per_column else int(zb[0]), c,
        None if float_out else sy, None if float_out else int(zy), alpha=alpha, trans_a=trans_a, trans_b=trans_b,
    )  # fmt: skip
    if float_out:
        assert_same_bits(ours, theirs)
    else:
        assert_same_ints(ours, theirs)


def test_sums_past_2_24():
    """Accumulators beyond 2**24, where float32(acc) rounds before the multiplier."""
    gen = torch.Generator().manual_seed(0)
    k = 1200
    a = codes(gen, torch.uint8, (6, k), 0.9)
    b = codes(gen, torch.int8, (k, 20), 0.9)
    b[:, :10] = 127
    a[:3] = 255
    acc = matmul_integer(a, b, 0, 0)
    assert acc.abs().max() > 2**24
    for sy in (1.0, 3.0, 1e5, 5e5, 1.3e6):
        inputs = [("a", a.numpy()), ("sa", np.float32(1.0)), ("za", np.uint8(0)), ("b", b.numpy())]
        inputs += [("sb", np.float32(1.0)), ("zb", np.int8(0)), ("sy", np.float32(sy)), ("zy", np.uint8(7))]
        theirs = ort_ints(run("QLinearMatMul", inputs, "uint8"))
        assert_same_ints(qlinear_matmul(a, 1.0, 0, b, 1.0, 0, sy, 7), theirs, f"y_scale={sy}")


def test_accumulators_round_to_float32():
    """QGemm's bias sets the accumulator exactly: odd values past 2**24 land on ties once rounded to float32,
    and sums past 2**31 wrap around in int32."""
    k = torch.arange(-127, 127, dtype=torch.int64)
    near = (k * 2 + 1) * 2**18  # (k + 0.5) * 2**19, past 2**24 for |k| > 31
    c = torch.cat([near + d for d in (-5, -3, -1, 0, 1, 3, 5)] + [torch.tensor([2**31 - 5, -(2**31) + 5, 2**24 + 1])])
    c = c.to(torch.int32)[None, :]
    a = torch.tensor([[0, 0], [255, 255]], dtype=torch.uint8)  # row 0: the accumulator is c; row 1: c + 64,770
    b = torch.full((2, c.shape[1]), 127, dtype=torch.int8)
    b[:, -2] = -128
    for y_scale, y_zero_point in ((2.0**19, 128), (2.0**19 * 3, 100), (None, None)):
        inputs = [("a", a.numpy()), ("sa", np.float32(1.0)), ("za", np.uint8(0)), ("b", b.numpy())]
        inputs += [("sb", np.float32(1.0)), ("zb", np.int8(0)), ("c", c.numpy())]
        if y_scale is None:
            theirs = torch.from_numpy(run("QGemm", inputs, "float32", domain="com.microsoft"))
            assert_same_bits(qgemm(a, 1.0, 0, b, 1.0, 0, c), theirs)
            continue
        inputs += [("sy", np.float32(y_scale)), ("zy", np.uint8(y_zero_point))]
        theirs = ort_ints(run("QGemm", inputs, "uint8", domain="com.microsoft"))
        assert_same_ints(qgemm(a, 1.0, 0, b, 1.0, 0, c, y_scale, y_zero_point, pairs_saturate=False), theirs)


def test_errors():
    with pytest.raises(TypeError, match="dtype"):
        quantize_linear(torch.tensor([1.0]), 1.0, 0, torch.int32)
    with pytest.raises(ValueError, match="zero_point"):
        quantize_linear(torch.tensor([1.0]), 1.0, 300)
    with pytest.raises(TypeError, match="uint8 or int8"):
        matmul_integer(torch.ones(2, 2, dtype=torch.int32), torch.ones(2, 2, dtype=torch.int8))
    with pytest.raises(ValueError, match="last dimension"):
        matmul_integer(torch.ones(2, 3, dtype=torch.uint8), torch.ones(2, 2, dtype=torch.int8))
    with pytest.raises(ValueError, match="together"):
        qgemm(torch.ones(1, 2, dtype=torch.uint8), 1.0, 0, torch.ones(2, 2, dtype=torch.int8), 1.0, 0, y_scale=1.0)


# An AVX2-only CPU, emulated: qemu-x86_64 -cpu Haswell hides AVX-512 and VNNI from ONNX Runtime


def avx2_cases(gen: torch.Generator) -> tuple[list, list]:
    """Tiny models for the emulated run, with qlib's expectations (computed here, with pairs_saturate=True)."""
    cases, expected = [], []
    worst_a, worst_b = torch.full((2, 64), 255, dtype=torch.uint8), torch.full((64, 4), 127, dtype=torch.int8)
    worst_b[:, 1] = -128
    for a, b, za, zb in [(worst_a, worst_b, 0, 0)] + [
        gemm_case(gen, ta, tb, m, k, n)[:2] + (int(codes(gen, ta, ())), int(codes(gen, tb, ())))
        for ta, tb in [(torch.uint8, torch.int8)] * 4 + [(torch.uint8, torch.uint8), (torch.int8, torch.int8)]
        for m, k, n in [(1, 37, 5), (3, 64, 17), (2, 301, 33), (5, 3, 70), (8, 129, 4)]
    ]:
        cases.append(
            model(
                "MatMulInteger",
                [("a", a.numpy()), ("b", b.numpy()), ("za", NP[a.dtype](za)), ("zb", NP[b.dtype](zb))],
                "int32",
            )
        )
        expected.append(
            (
                "MatMulInteger",
                matmul_integer(a, b, za, zb, pairs_saturate=True),
                matmul_integer(a, b, za, zb, pairs_saturate=False),
            )
        )
    shapes = [(1, 33, 7), (4, 64, 16), (3, 50, 9), (2, 257, 40), (6, 17, 3), (1, 128, 64)]
    for (m, k, n), per_column, b_const in zip(shapes * 2, [False, True, True] * 4, [True, False] * 6, strict=True):
        a, b, za, zb = gemm_case(gen, torch.uint8, torch.int8, m, k, n)
        sa, sb = 0.02, (torch.rand(n, generator=gen) * 0.01 + 1e-3).float()
        sb_arg, zb_arg = (sb, zb) if per_column else (float32(float(sb[0])), int(zb[0]))
        sy, zy = float32(0.02 * float(sb[0]) * 40), int(codes(gen, torch.uint8, ()))
        b_in = const(b.numpy()) if b_const else b.numpy()
        inputs = [("a", a.numpy()), ("sa", np.float32(sa)), ("za", za.numpy()), ("b", b_in)]
        inputs += [
            ("sb", sb.numpy() if per_column else np.float32(sb_arg)),
            ("zb", zb.numpy() if per_column else np.int8(zb_arg)),
        ]
        cases.append(model("QLinearMatMul", inputs + [("sy", np.float32(sy)), ("zy", np.uint8(zy))], "uint8"))
        args = (a, sa, int(za), b, sb_arg, zb_arg, sy, zy)
        expected.append(
            ("QLinearMatMul", qlinear_matmul(*args, pairs_saturate=True), qlinear_matmul(*args, pairs_saturate=False))
        )
        c = torch.randint(-5000, 5000, (n,), generator=gen, dtype=torch.int32)
        cases.append(
            model(
                "QGemm",
                inputs + [("c", c.numpy()), ("sy", np.float32(sy)), ("zy", np.uint8(zy))],
                "uint8",
                domain="com.microsoft",
            )
        )
        expected.append(
            (
                "QGemm",
                qgemm(*args[:6], c, sy, zy, pairs_saturate=True),
                qgemm(*args[:6], c, sy, zy, pairs_saturate=False),
            )
        )
    x = mixed_values(0.1, 200, 300, 1)
    cases.append(model("QuantizeLinear", [("x", x.numpy()), ("s", np.float32(0.1)), ("z", np.uint8(129))], "uint8"))
    expected.append(("QuantizeLinear", quantize_linear(x, 0.1, 129), quantize_linear(x, 0.1, 129)))
    return cases, expected


def test_avx2_emulated(tmp_path: Path):
    """ORT under qemu-x86_64 -cpu Haswell (AVX2, no AVX-512, no VNNI) against qlib with pairs_saturate=True."""
    cases, expected = avx2_cases(torch.Generator().manual_seed(23))
    outs = run_on_haswell(QEMU_SCRIPT, cases, tmp_path)
    saturated = 0
    for (op, ours, exact), theirs in zip(expected, outs, strict=True):
        assert_same_ints(ours, ort_ints(theirs), f"{op} under qemu -cpu Haswell")
        saturated += int((ours != exact).sum())
    assert outs[0][0, :2].tolist() == [
        1_048_544,
        -1_048_576,
    ]  # the feasibility note's number; the exact sum is 2,072,640
    assert saturated > 0  # the emulated CPU did saturate: the test could tell the two kinds apart
