"""qlib.conv2d against torch's quantized Conv2d and ConvReLU2d on the x86 and fbgemm engines (oneDNN's own
layers in depth: tests/test_onednn.py)."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import qlib
import qlib.quantized_conv as qc
import qlib.quantized_linear as ql
from qlib.testing import assert_same_ints
from qlib.testing import torch_conv2d as torch_conv

# torch's integers here depend on the CPU kind: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = pytest.mark.cpu_kind

ENGINES = ["x86", "fbgemm"]
F32 = torch.float32
TWO_ROUNDINGS = qlib.torch_release() == "2.14"  # the depthwise kernel's per-tensor bias (see qlib.quantized_conv)


def pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def exact_raw(x, zx, w, zw, stride, padding, dilation, groups):
    """sum (x - x_zero_point)(w - w_zero_point) over each receptive field, no pair saturated: int64 [N, O, H, W]."""
    n, c = x.shape[:2]
    n_out, _, kh, kw = w.shape
    zwv = zw.long() if isinstance(zw, torch.Tensor) else torch.full((n_out,), zw)
    (sh, sw), (ph, pw), (dh, dw) = pair(stride), pair(padding), pair(dilation)
    xs = torch.nn.functional.pad(x.double() - zx, (pw, pw, ph, ph))  # the padding is the zero point: 0 here
    fields = xs.unfold(2, dh * (kh - 1) + 1, sh).unfold(3, dw * (kw - 1) + 1, sw)[..., ::dh, ::dw]
    fields = fields.reshape(n, groups, c // groups, *fields.shape[2:])  # [N, G, C/G, H_out, W_out, kh, kw]
    ws = (w.double() - zwv.double()[:, None, None, None]).view(groups, n_out // groups, -1, kh, kw)
    out = torch.einsum("ngcyxij,gocij->ngoyx", fields, ws)  # exact: every partial sum is below 2**53
    return out.reshape(n, n_out, *out.shape[3:]).round().long()


def near_tie_biases(raw, sx, sw, s, per_channel, gen):
    """float32 biases that put output position (0, 0) of image 0 within 3 ulps of a rounding tie, per channel."""
    n_out = raw.shape[1]
    swv = sw.float() if per_channel else torch.full((n_out,), sw, dtype=F32)
    ats = torch.tensor(sx, dtype=F32) * swv
    mult = ats / torch.tensor(s, dtype=F32)
    first = raw[0, :, 0, 0].float()
    bias = ((torch.round(first * mult) + 0.5) / mult - first) * ats
    return near(bias.float(), torch.randint(-3, 4, (n_out,), generator=gen))


def near(values, steps):
    """``values`` moved ``steps`` float32 ulps (-3..3) up or down."""
    for _ in range(3):
        values = torch.where(steps > 0, torch.nextafter(values, torch.tensor(float("inf"))), values)
        values = torch.where(steps < 0, torch.nextafter(values, torch.tensor(float("-inf"))), values)
        steps = steps - steps.sign()
    return values


def layer(shape, per_channel, symmetric, full_range, bias_kind, relu, seed):
    """Arguments of qlib.conv2d (without engine) for one layer: ``shape`` is
    (N, C, O, groups, (kh, kw), stride, padding, dilation, (H, W))."""
    n, c, n_out, groups, kernel, stride, padding, dilation, (h, w) = shape
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256 if full_range else 128, (n, c, h, w), generator=gen, dtype=torch.uint8)
    weight = torch.randint(-128, 128, (n_out, c // groups, *kernel), generator=gen).to(torch.int8)
    sx = float(torch.empty(1).uniform_(0.002, 0.05, generator=gen))
    zx = int(torch.randint(0, 256 if full_range else 128, (1,), generator=gen))  # the padding holds it too
    if per_channel:
        sw = torch.empty(n_out, dtype=torch.float64).uniform_(0.0005, 0.03, generator=gen).float()
        zw = torch.zeros(n_out, dtype=torch.long) if symmetric else torch.randint(-30, 31, (n_out,), generator=gen)
    else:
        sw = torch.tensor(float(torch.empty(1).uniform_(0.0005, 0.03, generator=gen)), dtype=F32).item()
        zw = 0 if symmetric else int(torch.randint(-30, 31, (1,), generator=gen))
    raw = exact_raw(x, zx, weight, zw, stride, padding, dilation, groups)
    swv = sw if per_channel else torch.full((n_out,), sw)
    # an output scale that spreads the codes over some tens of steps either side of the zero point
    s = float(raw.double().abs().mean() * sx * swv.double().mean() / 40) + 1e-6
    z = int(torch.randint(0, 256, (1,), generator=gen)) | 1  # odd output zero points
    if bias_kind == "none":
        bias = None
    elif bias_kind == "random":
        bias = torch.randn(n_out, generator=gen) * s * 20
    else:
        bias = near_tie_biases(raw, sx, sw, s, per_channel, gen)
    return (x, sx, zx, weight, sw, zw, bias, s, z, stride, padding, dilation, groups, relu)


def kernel_of(args, engine, pairs_saturate=None):
    x, _, _, w, _, zw, *_, stride, padding, dilation, groups, _ = args
    symmetric = bool((torch.as_tensor(zw) == 0).all())
    return qc.conv2d_kernel(
        x.shape[1], w.shape[0], tuple(w.shape[2:]), pair(stride), pair(padding), pair(dilation), groups, symmetric,
        engine=engine, pairs_saturate=pairs_saturate,
    )  # fmt: skip


def shapes(kind, choose, integer):
    """A Conv2d's shape of the kind given, its image just large enough for 1 to 7 outputs a side.

    ``choose(options)`` picks one of a list, ``integer(lo, hi)`` an int in [lo, hi]: hypothesis's draws in
    the tests."""
    stride = choose([1, 1, 2, 3, (1, 2), (2, 1)])
    dilation = choose([1, 1, 1, 2, (1, 2)])
    if kind == "groups=1":
        groups = 1
        c = choose([1, 3, 8, 16, 17]) if integer(0, 1) else integer(1, 24)
        n_out = c if integer(0, 1) else integer(1, 24)
        kernel = choose([(1, 1), (3, 3), (3, 3), (5, 5), (1, 3), (3, 1)])
        padding = choose([0, 1, 1, 2, (1, 0), (kernel[0] // 2, kernel[1] // 2)])
    elif kind == "depthwise":
        c = groups = choose([8, 16, 24, 32]) if integer(0, 2) else integer(1, 20)
        n_out = c * choose([1, 1, 2, 3])
        k = choose([3, 3, 5, 7])
        kernel = (k, k)
        padding = choose([(k - 1) // 2, (k - 1) // 2, (k - 1) // 2, 0, 1])
        stride = choose([1, 1, 2, (1, 2), 3])
        dilation = choose([1, 1, 1, 2])
    else:  # grouped: 1 < groups < channels
        groups = integer(2, 8)
        in_per_group = choose([2, 4, 8, 16, 2, 4, 3, 5])
        out_per_group = in_per_group if integer(0, 2) else integer(1, 6)
        c, n_out = groups * in_per_group, groups * out_per_group
        kernel = choose([(3, 3), (3, 3), (3, 3), (1, 1), (5, 5)])
        padding = choose([1, 1, 1, 0, 2])
        stride = choose([1, 1, 2, 3, (1, 2)])
        dilation = choose([1, 1, 1, 2])
    size = []
    for i in range(2):
        k, s_, p_, d_ = kernel[i], pair(stride)[i], pair(padding)[i], pair(dilation)[i]
        span = d_ * (k - 1) + 1 - 2 * p_
        size.append(max(1, span + s_ * integer(0, 6) + integer(0, s_ - 1)))
    return (choose([1, 1, 2]), c, n_out, groups, kernel, stride, padding, dilation, tuple(size))


def torch_gets_it_right(shape, kernel):
    """False for the two kinds of layer torch 2.13's and 2.14's oneDNN get wrong (see qlib.onednn): every output
    column in the padding (a segmentation fault at times), and brg_conv_fwd with more than one group of one input
    channel, stride_h 1 < stride_w and an output 1 wide (codes that change with the number of threads)."""
    n, c, n_out, groups, (kh, kw), stride, padding, dilation, (h, w) = shape
    (sh, sw), (_, pw), (_, dw) = pair(stride), pair(padding), pair(dilation)
    w_out = (w + 2 * pw - dw * (kw - 1) - 1) // sw + 1
    threads = groups > 1 and c == groups and sh == 1 < sw and w_out == 1 and kernel.startswith("oneDNN brg_conv")
    return reads_the_input(shape) and not threads


def reads_the_input(shape):
    """Whether some output reads the image along each dimension."""
    for i in range(2):
        k, s, p, d = shape[4][i], pair(shape[5])[i], pair(shape[6])[i], pair(shape[7])[i]
        length = shape[8][i]
        positions = (length + 2 * p - d * (k - 1) - 1) // s + 1
        if not any(0 <= o * s - p + j * d < length for o in range(positions) for j in range(k)):
            return False
    return True


@st.composite
def conv_layers(draw):
    kind = draw(st.sampled_from(["groups=1", "depthwise", "grouped"]))
    return kind, shapes(kind, lambda options: draw(st.sampled_from(options)), lambda lo, hi: draw(st.integers(lo, hi)))


@given(
    layer_shape=conv_layers(),
    per_channel=st.booleans(),
    symmetric=st.booleans(),
    full_range=st.booleans(),
    bias_kind=st.sampled_from(["none", "random", "near tie"]),
    relu=st.booleans(),
    engine=st.sampled_from(ENGINES),
    seed=st.integers(0, 2**31),
)
def test_conv2d_matches_torch(layer_shape, per_channel, symmetric, full_range, bias_kind, relu, engine, seed):
    kind, shape = layer_shape
    args = layer(shape, per_channel, symmetric, full_range, bias_kind, relu, seed)
    kernel = kernel_of(args, engine)
    if kernel.startswith("oneDNN"):  # torch's x86 engine runs it on oneDNN
        if torch_gets_it_right(shape, kernel):  # (torch's oneDNN crashes or varies on a few shapes: not compared)
            context = f"{kind} {shape} kernel={kernel} per_channel={per_channel} bias={bias_kind}"
            assert_same_ints(qc.conv2d(*args, engine=engine), torch_conv(*args, engine), context)
        engine = "fbgemm"  # and the same layer on FBGEMM
        kernel = kernel_of(args, engine)
    if kernel == "groupwise (broken)":  # torch itself fails there (wrong codes or a corrupted heap): never run it
        with pytest.raises(ValueError, match="groupwise kernel"):
            qc.conv2d(*args, engine=engine)
        return
    expected = torch_conv(*args, engine)
    context = f"{kind} {shape} kernel={kernel} engine={engine} per_channel={per_channel} bias={bias_kind}"
    assert_same_ints(qc.conv2d(*args, engine=engine), expected, context)


def reference_codes(args, saturate_pairs_of_taps):
    """The codes from exact sums, or (a depthwise 3x3 layer, stride 1) with its taps' products added in pairs
    (0, 1), (2, 3), (4, 5), (6, 7) saturated to int16 and tap 8 alone: a second, plainer model."""
    x, sx, zx, w, sw, zw, bias, s, z, stride, padding, dilation, groups, relu = args
    raw = exact_raw(x, zx, w, zw, stride, padding, dilation, groups)
    swv = sw.float() if isinstance(sw, torch.Tensor) else torch.full((w.shape[0],), sw, dtype=F32)
    if saturate_pairs_of_taps:
        ph, pw = pair(padding)
        xp = torch.nn.functional.pad(x.double(), (pw, pw, ph, ph), value=zx)
        taps = xp.unfold(2, 3, 1).unfold(3, 3, 1).flatten(4).flatten(2, 3).transpose(2, 3)  # [N, C, 9, L]
        taps = taps.repeat_interleave(w.shape[0] // x.shape[1], dim=1)  # output channel o reads channel o // mult
        products = taps * w.view(w.shape[0], 9).double()[None, :, :, None]
        pairs = torch.cat([products[:, :, :8].unflatten(2, (4, 2)).sum(3), products[:, :, 8:]], 2)
        acc = pairs.clamp(ql.INT16_MIN, ql.INT16_MAX).sum(2).long()
        zwv = torch.as_tensor(zw).long().expand(w.shape[0])
        acc = acc - zx * (w.long().view(w.shape[0], 9).sum(1) - 9 * zwv)[None, :, None]
        raw = (acc - taps.sum(2).long() * zwv[None, :, None]).view(raw.shape)
    rows = raw.permute(0, 2, 3, 1).reshape(-1, w.shape[0]).to(torch.int32)
    if saturate_pairs_of_taps and bias is not None and not isinstance(sw, torch.Tensor) and TWO_ROUNDINGS:
        ats = torch.tensor(sx, dtype=F32) * swv
        v = rows.float() + bias[None, :] * torch.tensor(1.0 / float(ats[0].double()), dtype=F32)
        codes = ql.round_to_codes(v, ats / torch.tensor(s, dtype=F32), z, relu)
    else:
        codes = ql.requantize(rows, sx, swv, bias, s, z, relu, isinstance(sw, torch.Tensor))
    return codes.view(raw.shape[0], raw.shape[2], raw.shape[3], -1).permute(0, 3, 1, 2)


# One layer of each kind FBGEMM runs: (name, (N, C, O, groups, kernel, stride, padding, dilation, (H, W)), kernel)
KERNEL_CASES = [
    ("3x3, padding 1", (2, 7, 9, 1, (3, 3), 1, 1, 1, (9, 9)), "im2col"),
    ("5x5, stride 2, dilation 2", (1, 5, 6, 1, (5, 5), 2, 2, 2, (13, 12)), "im2col"),
    ("3 channels, stride 2 (FBGEMM's im2col shortcut)", (2, 3, 8, 1, (3, 3), 2, 1, 1, (12, 11)), "im2col"),
    ("1x1", (2, 33, 8, 1, (1, 1), 1, 0, 1, (6, 7)), "pointwise"),
    ("groups=1, 16 channels in and out", (2, 16, 16, 1, (3, 3), 1, 1, 1, (7, 8)), "groupwise"),
    ("grouped, 4 channels a group", (1, 32, 32, 8, (3, 3), 2, 1, 1, (9, 8)), "groupwise"),
    ("grouped, 3 channels a group", (2, 6, 8, 2, (3, 3), 1, 1, 1, (8, 8)), "im2col"),
    ("depthwise 3x3", (2, 16, 16, 16, (3, 3), 1, 1, 1, (9, 9)), "depthwise"),
    ("depthwise 5x5, stride 2, 2 outputs a channel", (1, 16, 32, 16, (5, 5), 2, 2, 1, (11, 10)), "depthwise"),
    ("depthwise 7x7", (1, 8, 8, 8, (7, 7), 1, 3, 1, (9, 9)), "depthwise"),
    ("depthwise, 5 channels", (2, 5, 5, 5, (3, 3), 1, 1, 1, (8, 8)), "im2col"),
    ("depthwise, no padding", (2, 16, 16, 16, (3, 3), 1, 0, 1, (8, 8)), "im2col"),
    ("depthwise, 104 channels", (1, 104, 104, 104, (3, 3), 1, 1, 1, (6, 6)), "depthwise"),
]


@pytest.mark.parametrize("name, shape, kernel", KERNEL_CASES)
def test_each_kernel_and_where_its_pairs_saturate(name, shape, kernel):
    """Full-range codes and asymmetric weights on each FBGEMM kernel: qlib equals torch, and a plainer
    model tells where pairs saturated: the depthwise kernel's on every CPU, the others' only without VNNI."""
    fbgemm_saturates = ql.pairs_saturate_here() if kernel != "groupwise" else not torch.cpu._is_vnni_supported()
    differ = 0
    for seed in range(3):
        args = layer(shape, seed % 2 == 0, False, True, ["random", "near tie", "none"][seed], seed == 1, seed)
        assert kernel_of(args, "fbgemm") == kernel
        expected = torch_conv(*args, "fbgemm")
        assert_same_ints(qc.conv2d(*args, engine="fbgemm"), expected, name)
        if kernel == "depthwise" and shape[4] == (3, 3) and shape[5] == 1:
            assert_same_ints(reference_codes(args, saturate_pairs_of_taps=True), expected, name)
        differ += int((reference_codes(args, saturate_pairs_of_taps=False) != expected).sum())
    assert (differ > 0) == (kernel == "depthwise" or fbgemm_saturates), differ


def test_a_per_tensor_bias_is_added_with_one_rounding_or_two():
    """Near-tie biases: the GEMM kernels add ``bias * float32(1 / ats)`` with one rounding (an FMA), and so
    does the depthwise kernel in torch 2.13, with two in torch 2.14. qlib matches the installed torch, and
    each kernel's other rounding (qlib's other release, for the depthwise one) does not."""
    here = qlib.torch_release()
    other_release = {"2.13": "2.14", "2.14": "2.13"}[here]
    wrong = {"im2col": 0, "depthwise": 0, "depthwise, other release": 0}
    for seed in range(40):
        for kind, shape in [
            ("im2col", (1, 5, 7, 1, (3, 3), 1, 1, 1, (6, 6))),
            ("depthwise", (1, 16, 16, 16, (3, 3), 1, 1, 1, (6, 6))),
        ]:
            args = layer(shape, False, False, False, "near tie", False, seed)  # codes < 128: no pair saturates
            expected = torch_conv(*args, "fbgemm")
            assert kernel_of(args, "fbgemm") == kind
            assert_same_ints(qc.conv2d(*args, engine="fbgemm"), expected, kind)
            x, sx, zx, w, sw, zw, bias, s, z = args[:9]
            raw = exact_raw(x, zx, w, zw, 1, 1, 1, args[12]).permute(0, 2, 3, 1).reshape(-1, w.shape[0])
            ats = torch.tensor(sx, dtype=F32) * torch.full((w.shape[0],), sw, dtype=F32)
            rcp = torch.tensor(1.0 / float(ats[0].double()), dtype=F32)
            if kind == "depthwise" and here == "2.13":  # the other rounding: two
                v = raw.float() + bias[None, :] * rcp
            elif kind == "depthwise":  # the other rounding: one
                v = ql.fma_float32(bias[None, :].expand(raw.shape).contiguous(), rcp.item(), raw.float())
            else:  # the other rounding: two
                v = raw.float() + bias[None, :] * rcp
            other = ql.round_to_codes(v, ats / torch.tensor(s, dtype=F32), z, False)
            wrong[kind] += int((other.view(1, 6, 6, -1).permute(0, 3, 1, 2) != expected).sum())
            if kind == "depthwise":
                ours_other = qc.conv2d(*args, engine="fbgemm", release=other_release)
                wrong["depthwise, other release"] += int((ours_other != expected).sum())
    assert all(count > 0 for count in wrong.values()), wrong


def test_onednn_runs_the_x86_engine_on_vnni_cpus_with_symmetric_weights():
    """On such a CPU torch's x86 engine rounds near ties otherwise than FBGEMM, and qlib follows each."""
    shape = (1, 6, 8, 1, (3, 3), 1, 1, 1, (7, 7))
    if not (torch.cpu._is_vnni_supported() and sys.platform.startswith("linux")):
        args = layer(shape, True, True, True, "near tie", False, 0)
        assert kernel_of(args, "x86", pairs_saturate=False) == "oneDNN brg_conv_fwd:avx512_core_vnni"
        assert kernel_of(args, "x86") == "im2col"
        pytest.skip("this CPU has no AVX512-VNNI: torch's x86 engine runs FBGEMM here, never oneDNN")
    differ = 0
    for seed in range(30):
        args = layer(shape, seed % 2 == 0, True, True, "near tie", False, seed)
        assert kernel_of(args, "x86").startswith("oneDNN ") and kernel_of(args, "fbgemm") == "im2col"
        expected = torch_conv(*args, "fbgemm")
        assert_same_ints(qc.conv2d(*args, engine="fbgemm"), expected)
        on_onednn = torch_conv(*args, "x86")
        assert_same_ints(qc.conv2d(*args, engine="x86"), on_onednn)
        differ += int((on_onednn != expected).sum())
    assert differ > 0, "oneDNN gave FBGEMM's codes on every near tie"
    # more than 100 groups: FBGEMM again, on either engine
    args = layer((1, 104, 104, 104, (3, 3), 1, 1, 1, (5, 5)), False, True, True, "near tie", False, 1)
    assert kernel_of(args, "x86") == "depthwise"
    assert_same_ints(qc.conv2d(*args, engine="x86"), torch_conv(*args, "x86"))


def test_engine_none_reads_torch_and_the_releases_agree():
    args = layer((1, 4, 5, 1, (3, 3), 1, 1, 1, (6, 6)), False, False, True, "random", True, 3)
    before = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = "fbgemm"
        ours = qc.conv2d(*args)
        assert_same_ints(ours, torch_conv(*args, "fbgemm"))
        torch.backends.quantized.engine = "qnnpack"
        with pytest.raises(ValueError, match="engine must be one of 'x86', 'fbgemm'"):
            qc.conv2d(*args)
    finally:
        torch.backends.quantized.engine = before
    for release in ("2.13", "2.14"):
        assert torch.equal(qc.conv2d(*args, engine="fbgemm", release=release), ours)


def test_the_groupwise_kernel_s_wrong_group_counts_raise():
    # 9 groups of 2 channels: torch 2.13 and 2.14 abort ("double free or corruption") on AVX-512 CPUs
    x = torch.zeros(1, 18, 6, 6, dtype=torch.uint8)
    w = torch.zeros(18, 2, 3, 3, dtype=torch.int8)
    assert qc.conv2d_kernel(18, 18, (3, 3), (1, 1), (1, 1), (1, 1), 9, False, pairs_saturate=False) == (
        "groupwise (broken)"
    )
    with pytest.raises(ValueError, match="wrongly"):
        qc.conv2d(x, 0.1, 0, w, 0.1, 1, None, 0.1, 0, padding=1, groups=9, pairs_saturate=False, engine="fbgemm")
    # on an AVX2 CPU 4 groups of 2 channels go together, so 9 groups are wrong there too, and 3 of 4 channels
    assert qc.conv2d_kernel(12, 12, (3, 3), (1, 1), (1, 1), (1, 1), 3, False, pairs_saturate=True) == (
        "groupwise (broken)"
    )
    assert qc.conv2d_kernel(12, 12, (3, 3), (1, 1), (1, 1), (1, 1), 3, False, pairs_saturate=False) == "im2col"


GOOD = dict(
    x=torch.zeros(1, 4, 5, 5, dtype=torch.uint8),
    x_scale=0.1,
    x_zero_point=0,
    weight=torch.zeros(6, 2, 3, 3, dtype=torch.int8),
    weight_scale=0.1,
    weight_zero_point=1,
    bias=None,
    scale=0.1,
    zero_point=0,
    groups=2,
    engine="fbgemm",
)


@pytest.mark.parametrize(
    "change, error, pattern",
    [
        (dict(x=torch.zeros(1, 4, 5, 5)), TypeError, r"x must be a torch.uint8 tensor of codes .*got torch.float32"),
        (dict(weight=torch.zeros(6, 2, 3, 3, dtype=torch.uint8)), TypeError, "weight must be a torch.int8 tensor"),
        (dict(x=torch.zeros(4, 5, 5, dtype=torch.uint8)), ValueError, "x must have 4 dimensions"),
        (dict(weight=torch.zeros(6, 2, 3, dtype=torch.int8)), ValueError, "weight must have 4 dimensions"),
        (dict(x=torch.zeros(1, 5, 5, 5, dtype=torch.uint8)), ValueError, r"C = weight.shape\[1\] \* groups = 4"),
        (dict(groups=4), ValueError, r"groups=4 needs out channels a positive multiple of groups"),
        (dict(groups=0), ValueError, "groups must be a positive int"),
        (dict(stride=0), ValueError, r"stride must be an int >= 1"),
        (dict(padding=(1, 2, 3)), ValueError, r"padding must be an int >= 0 or a pair"),
        (dict(dilation=1.5), ValueError, r"dilation must be an int >= 1"),
        (dict(x=torch.zeros(1, 4, 2, 2, dtype=torch.uint8)), ValueError, "the output would have no positions"),
        (dict(x_scale=0.0), ValueError, "x_scale must be a finite positive number"),
        (dict(scale=float("nan")), ValueError, "scale must be a finite positive number"),
        (dict(x_zero_point=256), ValueError, r"x_zero_point must lie in \[0, 255\]"),
        (dict(weight_zero_point=128), ValueError, r"weight_zero_point must lie in \[-128, 127\]"),
        (dict(weight_scale=torch.ones(5)), ValueError, r"weight_scale must have one value per channel: shape \(6,\)"),
        (
            dict(weight_scale=torch.ones(6), weight_zero_point=torch.zeros(6)),
            TypeError,
            "weight_zero_point must be a 1-d integer tensor",
        ),
        (dict(bias=torch.zeros(4)), ValueError, r"bias must have shape \(6,\)"),
        (dict(bias=torch.zeros(6, dtype=torch.float64)), TypeError, "bias must have dtype torch.float32"),
        (dict(bias=torch.full((6,), float("nan"))), ValueError, "bias contains 6 NaN"),
        (dict(engine="qnnpack"), ValueError, r"engine must be one of 'x86', 'fbgemm'"),
        (dict(pairs_saturate=1), TypeError, "pairs_saturate must be None, True or False"),
        (dict(relu="yes"), TypeError, "relu must be True or False"),
        (dict(release="2.12"), ValueError, "qlib reproduces torch 2.13 and 2.14"),
    ],
)
def test_bad_input(change, error, pattern):
    with pytest.raises(error, match=pattern):
        qc.conv2d(**{**GOOD, **change})
