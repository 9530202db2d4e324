"""qlib.onnx_conv against real ONNX Runtime (onnxruntime 1.32.0, CPU provider): QLinearConv, ConvInteger, QLinearAdd."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from emulated import run_on_haswell  # noqa: E402
from inputs import examples  # noqa: E402
from onnx_graphs import QEMU_SCRIPT, const, model, run  # noqa: E402

from qlib.numerics import float32, fma_float32  # noqa: E402
from qlib.onnx_conv import conv_integer, qlinear_add, qlinear_conv  # noqa: E402
from qlib.ranges import DTYPE_RANGES  # noqa: E402
from qlib.testing import assert_same_ints  # noqa: E402

NP = {torch.uint8: np.uint8, torch.int8: np.int8, torch.int32: np.int32}
NAME = {torch.uint8: "uint8", torch.int8: "int8", torch.int32: "int32"}
COMPARED = {"ints": 0}


def codes(gen: torch.Generator, dtype: torch.dtype, shape: tuple[int, ...], extremes: float = 0.3) -> torch.Tensor:
    """Random codes of ``dtype``, a fraction ``extremes`` of them at the ends of the range."""
    lo, hi = DTYPE_RANGES[dtype]
    q = torch.randint(lo, hi + 1, shape, generator=gen)
    ends = torch.where(torch.rand(shape, generator=gen) < 0.5, lo, hi)
    q = torch.where(torch.rand(shape, generator=gen) < extremes, ends, q)
    return q.to(dtype)


def check(ours: torch.Tensor, theirs: np.ndarray, note: str = "") -> None:
    assert_same_ints(ours, torch.from_numpy(np.ascontiguousarray(theirs)), note)
    COMPARED["ints"] += ours.numel()


@st.composite
def conv_cases(draw, types=None):
    """A convolution's shapes and attributes: plain, grouped, depthwise, and shapes that reach MLAS's ConvSym."""
    x_type, w_type = types or draw(
        st.sampled_from([(torch.uint8, torch.int8), (torch.uint8, torch.uint8), (torch.int8, torch.int8)])
    )
    rank = draw(st.sampled_from([1, 2, 2]))
    kind = draw(st.sampled_from(["plain", "sym", "grouped", "depthwise", "depthwise16"]))
    if kind == "depthwise":
        group = cg = 1
        group = draw(st.integers(1, 20))
        mg = 1
    elif kind == "depthwise16":
        group, cg, mg = 16 * draw(st.integers(1, 2)), 1, 1
    elif kind == "grouped":
        group, cg, mg = draw(st.integers(2, 3)), draw(st.integers(1, 5)), draw(st.integers(1, 4))
    elif kind == "sym":
        group, cg, mg = 1, 4 * draw(st.integers(1, 5)), 8 * draw(st.integers(2, 3))
    else:
        group, cg, mg = 1, draw(st.integers(1, 40)), draw(st.integers(1, 20))
    kernel = [draw(st.integers(1, 3)) for _ in range(rank)]
    strides = [draw(st.integers(1, 2)) for _ in range(rank)]
    dilations = [draw(st.integers(1, 2)) for _ in range(rank)]
    pads = [draw(st.integers(0, 2)) for _ in range(2 * rank)]
    spatial = [
        draw(st.integers(max(1, dilations[i] * (kernel[i] - 1) + 1 - pads[i] - pads[rank + i]), 7)) for i in range(rank)
    ]
    n = draw(st.integers(1, 2))
    return x_type, w_type, n, group, cg, mg, kernel, strides, pads, dilations, spatial


def conv_attrs(group, kernel, strides, pads, dilations) -> dict:
    return {"group": group, "kernel_shape": kernel, "strides": strides, "pads": pads, "dilations": dilations}


@settings(max_examples=examples(150), deadline=None)
@given(
    case=conv_cases(),
    per_channel=st.booleans(),
    symmetric=st.booleans(),
    bias=st.sampled_from(["none", "small", "huge"]),
    constant=st.booleans(),
    y_ratio=st.floats(0.02, 2000.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_qlinear_conv(case, per_channel, symmetric, bias, constant, y_ratio, seed):
    x_type, w_type, n, group, cg, mg, kernel, strides, pads, dilations, spatial = case
    gen = torch.Generator().manual_seed(seed)
    m = group * mg
    x = codes(gen, x_type, (n, group * cg, *spatial), 0.5)
    w = codes(gen, w_type, (m, cg, *kernel), 0.5)
    zx = int(codes(gen, x_type, ()))
    zy = int(codes(gen, x_type, ()))
    zw = 0 if symmetric and w_type == torch.int8 else int(codes(gen, w_type, ()))
    sx = float32(float(torch.rand((), generator=gen)) * 0.1 + 1e-4)
    ws = (torch.rand(m if per_channel else 1, generator=gen) * 0.05 + 1e-4).float()
    sy = float32(sx * float(ws[0]) * y_ratio * cg * kernel[0])
    b = None
    if bias != "none":
        span = 2**12 if bias == "small" else 2**30
        b = torch.randint(-span, span, (m,), generator=gen, dtype=torch.int32)
    wrap = const if constant else (lambda a: a)
    zw_arr = np.full(m, zw, NP[w_type]) if per_channel else NP[w_type](zw)
    inputs = [("x", x.numpy()), ("sx", wrap(np.float32(sx))), ("zx", wrap(NP[x_type](zx))), ("w", wrap(w.numpy()))]
    inputs += [("sw", wrap(ws.numpy() if per_channel else np.float32(ws[0]))), ("zw", wrap(zw_arr))]
    inputs += [("sy", wrap(np.float32(sy))), ("zy", wrap(NP[x_type](zy)))]
    inputs += [("b", None if b is None else wrap(b.numpy()))]
    attrs = conv_attrs(group, kernel, strides, pads, dilations)
    theirs = run("QLinearConv", inputs, NAME[x_type], attrs)
    ws_arg = ws if per_channel else float(ws[0])
    ours = qlinear_conv(
        x, sx, zx, w, ws_arg, torch.tensor(zw_arr) if per_channel else zw, sy, zy, b,
        strides=strides, pads=pads, dilations=dilations, group=group,
    )  # fmt: skip
    check(ours, theirs, f"{case} per_channel={per_channel} zw={zw} const={constant}")


def pixels_summing_to(targets: list[int]) -> tuple[torch.Tensor, int]:
    """uint8 codes ``[1, 64, 1, len(targets)]`` whose 64 channels sum, less the zero point returned, to each target
    (all of one sign)."""
    zx = 0 if targets[0] >= 0 else 255
    x = np.zeros((64, len(targets)), np.int64)
    for i, target in enumerate(targets):
        full, rest = divmod(abs(target), 255)
        x[:full, i], x[full, i] = 255, rest
    x = x if zx == 0 else 255 - x
    return torch.from_numpy(x.astype(np.uint8)).view(1, 64, 1, len(targets)), zx


@pytest.mark.parametrize("channels", [1, 16])
def test_qlinear_conv_multiplier_and_ties(channels):
    """Accumulators built to land where float32(x_scale * w_scale) / y_scale, x_scale * (w_scale / y_scale) and the
    reciprocal's product round to different codes, and on ties (a multiplier of 0.5, odd accumulators, odd zero
    points): ORT divides, rounds half to even and adds the zero point after. 16 output channels with int8 weights
    of zero point 0 run MLAS's ConvSym kernel, one its GEMM."""
    rng = np.random.default_rng(5)
    f32 = np.float32
    accs = np.arange(-16320, 16321).astype(np.float32)
    cases = [
        ([*range(1, 256, 2)], (f32(1.0), f32(1.0), f32(2.0))),
        ([*range(-255, 0, 2)], (f32(1.0), f32(1.0), f32(2.0))),
    ]
    while len(cases) < 22:
        sx, sw = f32(rng.uniform(1e-3, 0.1)), f32(rng.uniform(1e-3, 0.1))
        sy = f32(sx * sw * rng.uniform(20, 200))
        forms = [f32(f32(sx * sw) / sy), f32(sx * f32(sw / sy)), f32(f32(sx * sw) * f32(f32(1) / sy))]
        rounded = [np.rint(accs * m) for m in forms]
        split = accs[(rounded[0] != rounded[1]) | (rounded[0] != rounded[2])].astype(int)
        for part in (split[split >= 0][:8], split[split < 0][:8]):
            if len(part):
                cases.append(([int(t) for t in part], (sx, sw, sy)))
    for targets, (sx, sw, sy) in cases:
        x, zx = pixels_summing_to(targets)
        w = torch.ones(channels, 64, 1, 1, dtype=torch.int8)
        inputs = [("x", x.numpy()), ("sx", const(sx)), ("zx", const(np.uint8(zx))), ("w", const(w.numpy()))]
        inputs += [("sw", const(sw)), ("zw", const(np.int8(0))), ("sy", const(sy)), ("zy", const(np.uint8(129)))]
        theirs = run("QLinearConv", inputs, "uint8")
        check(qlinear_conv(x, float(sx), zx, w, float(sw), 0, float(sy), 129), theirs, f"accs={targets}")
        if (sx, sw, sy) == (1.0, 1.0, 2.0):  # half away from zero would differ on every other tie
            assert theirs[0, 0, 0].astype(int).tolist() == [min(255, 129 + int(np.rint(t / 2))) for t in targets]


@settings(max_examples=examples(100), deadline=None)
@given(
    case=conv_cases(),
    x_type=st.sampled_from([torch.uint8, torch.int8]),
    w_type=st.sampled_from([torch.uint8, torch.int8]),
    constant=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_conv_integer(case, x_type, w_type, constant, seed):
    _, _, n, group, cg, mg, kernel, strides, pads, dilations, spatial = case
    gen = torch.Generator().manual_seed(seed)
    x = codes(gen, x_type, (n, group * cg, *spatial), 0.5)
    w = codes(gen, w_type, (group * mg, cg, *kernel), 0.5)
    zx, zw = int(codes(gen, x_type, ())), int(codes(gen, w_type, ()))
    wrap = const if constant else (lambda a: a)
    inputs = [("x", x.numpy()), ("w", wrap(w.numpy())), ("zx", NP[x_type](zx)), ("zw", wrap(NP[w_type](zw)))]
    theirs = run("ConvInteger", inputs, "int32", conv_attrs(group, kernel, strides, pads, dilations))
    ours = conv_integer(x, w, zx, zw, strides=strides, pads=pads, dilations=dilations, group=group)
    check(ours, theirs, f"{case} {x_type} {w_type}")


def add_inputs(a, sa, za, b, sb, zb, sc, zc) -> list:
    t = a.dtype
    return [
        ("a", a.numpy()), ("sa", np.float32(sa)), ("za", NP[t](za)), ("b", b.numpy()),
        ("sb", np.float32(sb)), ("zb", NP[t](zb)), ("sc", np.float32(sc)), ("zc", NP[t](zc)),
    ]  # fmt: skip


SHAPE_PAIRS = [
    ((3, 70), (3, 70)),
    ((1, 8, 5, 5), (1, 8, 5, 5)),
    ((2, 8, 3, 3), (1, 8, 1, 1)),
    ((1, 8, 1, 1), (2, 8, 3, 3)),
    ((37,), ()),
    ((), (37,)),
    ((1,), (1,)),
    ((4, 1), (1, 33)),
    ((5, 33), (33,)),
]


@settings(max_examples=examples(300), deadline=None)
@given(
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    shapes=st.sampled_from(SHAPE_PAIRS),
    ratio=st.sampled_from([1.0, 0.5, 3.0, 1 / 3, 0.1, 7.7, 1e-3, 1e3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_qlinear_add(dtype, shapes, ratio, seed):
    gen = torch.Generator().manual_seed(seed)
    a, b = codes(gen, dtype, shapes[0], 0.4), codes(gen, dtype, shapes[1], 0.4)
    za, zb, zc = (int(codes(gen, dtype, ())) for _ in range(3))
    sa = float32(float(torch.rand((), generator=gen)) * 0.2 + 1e-3)
    sb = float32(sa * ratio * float(torch.rand((), generator=gen) * 2 + 0.01))
    sc = float32((sa + sb) * float(torch.rand((), generator=gen) * 2 + 0.05))
    args = (a, sa, za, b, sb, zb, sc, zc)
    theirs = run("QLinearAdd", add_inputs(*args), NAME[dtype], domain="com.microsoft")
    check(qlinear_add(*args), theirs, f"{shapes} za={za} zb={zb} zc={zc} sa={sa} sb={sb} sc={sc}")


def test_qlinear_add_ties_and_overflow():
    """Every pair of codes where the sum lands on .5 (exact halves of the scales, odd zero points), and ratios so
    large that the float sum leaves the int32 range, where cvtps2dq gives INT_MIN and the code is the lowest."""
    for dtype in (torch.uint8, torch.int8):
        lo, hi = DTYPE_RANGES[dtype]
        grid = torch.arange(lo, hi + 1)
        a = grid.repeat_interleave(len(grid)).to(dtype)
        b = grid.repeat(len(grid)).to(dtype)
        for sa, sb, sc, za, zb, zc in [
            (0.1, 0.1, 0.2, lo + 3, lo + 100, lo + 7),
            (0.5, 0.25, 1.0, lo + 1, hi - 1, lo + 128),
            (0.3, 0.1, 0.4, lo + 77, lo + 51, lo + 129),
            (1e-3, 3e4, 1e-5, lo + 128, lo + 128, lo + 128),
            (2.0, 2.0, 1e-9, lo + 5, lo + 200, lo + 9),
        ]:
            args = (a, sa, za, b, sb, zb, sc, zc)
            theirs = run("QLinearAdd", add_inputs(*args), NAME[dtype], domain="com.microsoft")
            check(qlinear_add(*args), theirs, f"{dtype} {sa} {sb} {sc}")
            scalar = (a, sa, za, b[:1].reshape(()), sb, zb, sc, zc)
            theirs = run("QLinearAdd", add_inputs(*scalar), NAME[dtype], domain="com.microsoft")
            check(qlinear_add(*scalar), theirs, f"scalar b {dtype} {sa} {sb} {sc}")


# Scales and zero points (found by a search over random ones) on which each other order of QLinearAdd's float
# operations gives other codes than qlib's, for two full-range inputs, a repeated a and a repeated b
ADD_EDGES = {
    "both": [
        ("uint8", 0.16410571336746216, 223, 0.13697409629821777, 49, 0.36828866600990295, 142, 205),
        ("uint8", 0.002411274006590247, 105, 0.1294984519481659, 213, 0.14983390271663666, 255, 72),
        ("uint8", 0.12699882686138153, 129, 0.07670442759990692, 167, 0.23280881345272064, 40, 110),
        ("int8", 0.13903094828128815, -92, 0.10478349775075912, -27, 0.14669306576251984, 50, 112),
    ],
    "a": [
        ("uint8", 0.11440572887659073, 22, 0.09514773637056351, 188, 0.05099506303668022, 118, 202),
        ("int8", 0.16660542786121368, 112, 0.18298602104187012, 45, 0.23823367059230804, -88, 122),
        ("int8", 0.08288978785276413, -6, 0.06663104891777039, 123, 0.03310195356607437, -122, 13),
        ("uint8", 0.010674279183149338, 69, 0.1233179122209549, 144, 0.1998773068189621, 226, 195),
    ],
    "b": [
        ("int8", 0.03491967171430588, 107, 0.043093495070934296, -18, 0.07738092541694641, 13, 123),
        ("uint8", 0.0987878143787384, 117, 0.10121766477823257, 246, 0.1482129693031311, 107, 113),
        ("int8", 0.13568627834320068, 99, 0.010550745762884617, -24, 0.14536282420158386, 57, 52),
        ("uint8", 0.0012285534758120775, 125, 0.1357010304927826, 14, 0.19805151224136353, 70, 245),
    ],
}


def add_candidate(a, sa, za, b, sb, zb, sc, zc, inner: str, first: str, fused: bool) -> torch.Tensor:
    """One order of QLinearAdd's float32 operations: which product the constant's sum fuses (``inner``), which
    input's term joins the constant first, and whether that first step is fused."""
    sct = torch.tensor(float32(sc))
    ra, rb = torch.tensor(float32(sa)) / sct, torch.tensor(float32(sb)) / sct
    if inner == "ra":
        k = torch.tensor(float(zc)) - fma_float32(ra.view(1), float(za), rb * zb)[0]
    elif inner == "rb":
        k = torch.tensor(float(zc)) - fma_float32(rb.view(1), float(zb), ra * za)[0]
    else:
        k = torch.tensor(float(zc)) - (ra * za + rb * zb)
    shape = torch.broadcast_shapes(a.shape, b.shape)
    af, bf = a.float().expand(shape), b.float().expand(shape)
    (x1, r1), (x2, r2) = ((af, ra), (bf, rb)) if first == "a" else ((bf, rb), (af, ra))
    v = fma_float32(x2, r2, fma_float32(x1, r1, k) if fused else k + x1 * r1)
    lo, hi = DTYPE_RANGES[a.dtype]
    return torch.round(v).clamp(lo, hi).to(a.dtype)


@pytest.mark.parametrize("case", ["both", "a", "b"])
def test_qlinear_add_order_of_operations(case):
    """ORT's codes equal qlib's, and each of the 11 other orders (fused or not, a or b first, either product
    fused into the constant) gives other codes on at least one of these inputs: the measurement decides."""
    wrong = {}
    for name, sa, za, sb, zb, sc, zc, s in ADD_EDGES[case]:
        dtype = getattr(torch, name)
        lo, hi = DTYPE_RANGES[dtype]
        grid = torch.arange(lo, hi + 1)
        if case == "both":
            a, b = grid.repeat_interleave(len(grid)).to(dtype), grid.repeat(len(grid)).to(dtype)
        else:
            one = torch.tensor(s).to(dtype)
            a, b = (one, grid.to(dtype)) if case == "a" else (grid.to(dtype), one)
        args = (a, sa, za, b, sb, zb, sc, zc)
        theirs = run("QLinearAdd", add_inputs(*args), name, domain="com.microsoft")
        check(qlinear_add(*args), theirs, f"{case}: {args[1:]}")
        for order in itertools.product(("ra", "rb", "none"), ("a", "b"), (True, False)):
            differ = int((add_candidate(*args, *order) != torch.from_numpy(theirs)).sum())
            wrong[order] = wrong.get(order, 0) + differ
    right = [order for order, differ in wrong.items() if differ == 0]
    assert right == [("rb", "a", True) if case == "a" else ("ra", "b", True)], wrong


# An AVX2-only CPU, emulated: qemu-x86_64 -cpu Haswell hides AVX-512 and VNNI from ONNX Runtime


def avx2_conv_cases(gen: torch.Generator) -> tuple[list, list]:
    """Tiny QLinearConv, ConvInteger and QLinearAdd models with full-range codes, and qlib's answers for both CPU
    kinds: the GEMM path with an odd channel count (pairs that straddle kernel positions), MLAS's ConvSym path
    (int8 weights with zero point 0, channels a multiple of 4, 16 output channels), and depthwise kernels."""
    cases, expected = [], []
    shapes = [  # x type, w type, group, cg, mg, kernel, zw, constant
        (torch.uint8, torch.int8, 1, 3, 5, [3, 3], 0, True),
        (torch.uint8, torch.int8, 1, 8, 16, [3, 3], 0, True),
        (torch.uint8, torch.int8, 1, 8, 16, [1, 1], 0, True),
        (torch.uint8, torch.int8, 2, 5, 3, [2, 2], 3, False),
        (torch.uint8, torch.int8, 16, 1, 1, [3, 3], 0, True),
        (torch.uint8, torch.int8, 5, 1, 1, [3, 3], -7, True),
        (torch.uint8, torch.uint8, 1, 6, 4, [3, 3], 131, True),
        (torch.int8, torch.int8, 1, 7, 4, [3, 3], 0, True),
    ]
    for x_type, w_type, group, cg, mg, kernel, zw, constant in shapes:
        m = group * mg
        x = codes(gen, x_type, (1, group * cg, 5, 5), 0.8)
        w = codes(gen, w_type, (m, cg, *kernel), 0.8)
        zx, zy = int(codes(gen, x_type, ())), int(codes(gen, x_type, ()))
        sx, ws = 0.02, (torch.rand(m, generator=gen) * 0.01 + 1e-3).float()
        sy = float32(0.02 * float(ws[0]) * 30 * cg)
        b = torch.randint(-5000, 5000, (m,), generator=gen, dtype=torch.int32)
        wrap = const if constant else (lambda a: a)
        inputs = [("x", x.numpy()), ("sx", wrap(np.float32(sx))), ("zx", wrap(NP[x_type](zx))), ("w", wrap(w.numpy()))]
        inputs += [("sw", wrap(ws.numpy())), ("zw", wrap(np.full(m, zw, NP[w_type]))), ("sy", wrap(np.float32(sy)))]
        inputs += [("zy", wrap(NP[x_type](zy))), ("b", wrap(b.numpy()))]
        attrs = conv_attrs(group, kernel, [1, 1], [1, 0, 1, 1], [1, 1])
        cases.append(model("QLinearConv", inputs, NAME[x_type], attrs))
        args = (x, sx, zx, w, ws, zw, sy, zy, b)
        kw = {"pads": [1, 0, 1, 1], "group": group}
        saturating = qlinear_conv(*args, **kw, pairs_saturate=True)
        exact = qlinear_conv(*args, **kw, pairs_saturate=False)
        expected.append((f"QLinearConv {x_type} {w_type} group={group} cg={cg} mg={mg}", saturating, exact))
        inputs = [("x", x.numpy()), ("w", wrap(w.numpy())), ("zx", NP[x_type](zx)), ("zw", wrap(NP[w_type](zw)))]
        cases.append(model("ConvInteger", inputs, "int32", attrs))
        ours = conv_integer(x, w, zx, zw, **kw)
        expected.append((f"ConvInteger {x_type} {w_type}", ours, ours))
    for dtype in (torch.uint8, torch.int8):
        a, b = codes(gen, dtype, (2, 8, 3, 3)), codes(gen, dtype, (1, 8, 1, 1))
        args = (a, 0.05, int(codes(gen, dtype, ())), b, 0.03, 7, 0.07, int(codes(gen, dtype, ())))
        cases.append(model("QLinearAdd", add_inputs(*args), NAME[dtype], domain="com.microsoft"))
        expected.append(("QLinearAdd", qlinear_add(*args), qlinear_add(*args)))
    return cases, expected


def test_avx2_emulated(tmp_path: Path):
    """ORT under qemu-x86_64 -cpu Haswell (AVX2, no AVX-512, no VNNI) against qlib with pairs_saturate=True."""
    cases, expected = avx2_conv_cases(torch.Generator().manual_seed(23))
    outs = run_on_haswell(QEMU_SCRIPT, cases, tmp_path)
    saturated = {}
    for (op, ours, exact), theirs in zip(expected, outs, strict=True):
        check(ours, theirs, f"{op} under qemu -cpu Haswell")
        saturated[op] = int((ours != exact).sum())
    # the GEMM and ConvSym paths saturated (the test tells the CPU kinds apart); depthwise kernels never do
    assert saturated["QLinearConv torch.uint8 torch.int8 group=1 cg=3 mg=5"] > 0
    assert saturated["QLinearConv torch.uint8 torch.int8 group=1 cg=8 mg=16"] > 0
    assert saturated["QLinearConv torch.uint8 torch.int8 group=16 cg=1 mg=1"] == 0
