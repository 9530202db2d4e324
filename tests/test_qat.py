"""qlib.qat against torch, bit for bit: the fused op's qparams, the straight-through gradient, FakeQuantize and
FusedMovingAvgObsFakeQuantize forward and backward over streams of batches, and LSQ's three gradients."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples, mixed_values, near_ties, reciprocal32, scales
from torch.ao.quantization import fake_quantize as tfq
from torch.ao.quantization import observer as tobs

import qlib
from qlib import qat
from qlib.testing import assert_same_bits, assert_same_ints

RANGES = st.sampled_from([(0, 255), (0, 127), (-128, 127), (-64, 63), (-127, 127), (0, 15), (-8, 7)])
INF = float("inf")


def quiet(make, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # reduce_range and deprecation warnings
        return make(*args, **kwargs)


def gradient_for(x: torch.Tensor, seed: int) -> torch.Tensor:
    """A gradient to send back: normal values, some negative zeros, infinities and exact zeros."""
    gen = torch.Generator().manual_seed(seed)
    dy = torch.randn(x.shape, generator=gen)
    pick = torch.rand(x.shape, generator=gen)
    dy = torch.where(pick < 0.02, INF, dy)
    dy = torch.where((pick >= 0.02) & (pick < 0.04), -0.0, dy)
    return torch.where((pick >= 0.04) & (pick < 0.06), 0.0, dy)


def torch_fused_qparams(lo, hi, qmin, qmax, symmetric):
    """The fused op's qparams: with its observer off it computes them from the running min and max it is given."""
    per_channel = lo.dim() == 1
    n = lo.numel() if per_channel else 1
    scale, zero_point = torch.ones(n), torch.zeros(n, dtype=torch.int32)
    x = torch.zeros(n, 1) if per_channel else torch.zeros(1)
    off, on = torch.tensor([0]), torch.tensor([1])
    lo, hi = lo.clone().float(), hi.clone().float()
    torch.fused_moving_avg_obs_fake_quant(
        x, off, on, lo, hi, scale, zero_point, 0.01, qmin, qmax, 0, per_channel, symmetric
    )
    return scale, zero_point


# --- choose_qparams_fused ---


@st.composite
def range_ends(draw):
    """(min, max) pairs: ordinary, one-signed, zero, equal, tiny (scale below 6.1e-5), huge, exactly symmetric."""
    kind = draw(st.sampled_from(["normal", "positive", "negative", "zero", "equal", "tiny", "huge", "symmetric"]))
    a = draw(st.floats(-1e3, 1e3, allow_nan=False, width=32))
    b = draw(st.floats(-1e3, 1e3, allow_nan=False, width=32))
    lo, hi = min(a, b), max(a, b)
    if kind == "positive":
        lo, hi = abs(lo), abs(lo) + abs(hi)
    elif kind == "negative":
        lo, hi = -abs(lo) - abs(hi), -abs(hi)
    elif kind == "zero":
        lo = hi = 0.0
    elif kind == "equal":
        hi = lo
    elif kind == "tiny":
        lo, hi = lo * draw(st.sampled_from([1e-6, 1e-9, 1e-30, 1e-40])), hi * 1e-6
        lo, hi = min(lo, hi), max(lo, hi)
    elif kind == "huge":
        lo, hi = lo * 1e33, hi * 1e33
    elif kind == "symmetric":
        lo, hi = -abs(a), abs(a)
    return lo, hi


@settings(max_examples=examples(600))
@given(ends=st.lists(range_ends(), min_size=1, max_size=8), rng=RANGES, symmetric=st.booleans(), vector=st.booleans())
def test_choose_qparams_fused_matches_torch(ends, rng, symmetric, vector):
    qmin, qmax = rng
    lo = torch.tensor([e[0] for e in ends], dtype=torch.float32)
    hi = torch.tensor([e[1] for e in ends], dtype=torch.float32)
    if not vector:
        lo, hi = lo[0], hi[0]
    ours = qat.choose_qparams_fused(lo, hi, qmin, qmax, symmetric)
    theirs = torch_fused_qparams(lo, hi, qmin, qmax, symmetric)
    assert_same_bits(ours[0], theirs[0], f"scale {ends} {rng} {symmetric}")
    assert_same_ints(ours[1], theirs[1], f"zero point {ends} {rng} {symmetric}")


def test_fused_symmetric_weights_use_another_scale_than_the_observer():
    """amax / 127 or |min| / 128 in training, amax / 127.5 after convert: the formula the chapter measures."""
    lo, hi = torch.tensor([-1.0, -0.5]), torch.tensor([0.5, 1.0])
    fused, _ = qat.choose_qparams_fused(lo, hi, -128, 127, symmetric=True)
    assert_same_bits(fused, torch_fused_qparams(lo, hi, -128, 127, True)[0])
    assert fused.tolist() == pytest.approx([1 / 128, 1 / 127])
    observer, _ = qlib.choose_qparams(lo, hi, torch.qint8, symmetric=True)
    assert observer.tolist() == pytest.approx([1 / 127.5, 1 / 127.5])


# --- the straight-through estimator ---


@given(rng=RANGES, scale=scales, data=st.data(), seed=st.integers(0, 2**31), n=st.integers(1, 300))
def test_fake_quantize_ste_per_tensor_matches_torch(rng, scale, data, seed, n):
    qmin, qmax = rng
    z = data.draw(st.integers(qmin, qmax))
    x = mixed_values(scale, n, min(qmax - qmin, 10**6) + 20, seed)
    dy = gradient_for(x, seed)
    ours_x, scalar_x, tensor_x = (x.clone().requires_grad_() for _ in range(3))
    ours = qat.fake_quantize_ste(ours_x, scale, z, qmin, qmax)
    ours.backward(dy)
    scalar = torch.fake_quantize_per_tensor_affine(scalar_x, scale, z, qmin, qmax)
    scalar.backward(dy)
    s32, z32 = torch.tensor([scale], dtype=torch.float32), torch.tensor([z], dtype=torch.int32)
    tensor = torch.fake_quantize_per_tensor_affine(tensor_x, s32, z32, qmin, qmax)  # FakeQuantize's overload
    tensor.backward(dy)
    context = f"s={scale!r} z={z} {rng}"
    assert_same_bits(ours, scalar, context)
    assert_same_bits(ours_x.grad, scalar_x.grad, f"grad {context}")
    assert_same_bits(tensor_x.grad, scalar_x.grad, f"torch's two overloads {context}")


@given(rng=RANGES, data=st.data(), seed=st.integers(0, 2**31))
def test_fake_quantize_ste_per_channel_matches_torch(rng, data, seed):
    qmin, qmax = rng
    channels = data.draw(st.integers(1, 5))
    axis = data.draw(st.sampled_from([0, 1, 2, -1]))
    scale_list = [
        reciprocal32(reciprocal32(s)) for s in data.draw(st.lists(scales, min_size=channels, max_size=channels))
    ]
    zps = data.draw(st.lists(st.integers(qmin, qmax), min_size=channels, max_size=channels))
    per = [mixed_values(s, 60, min(qmax - qmin, 10**6) + 20, seed + c)[:60] for c, s in enumerate(scale_list)]
    x = torch.stack(per).reshape(channels, 3, 20).movedim(0, axis).contiguous()
    scale = torch.tensor(scale_list, dtype=torch.float32)
    zp = torch.tensor(zps, dtype=torch.int32)
    dy = gradient_for(x, seed)
    ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
    ours = qat.fake_quantize_ste(ours_x, scale, zp, qmin, qmax, axis=axis)
    ours.backward(dy)
    theirs = torch.fake_quantize_per_channel_affine(theirs_x, scale, zp, axis % 3, qmin, qmax)
    theirs.backward(dy)
    assert_same_bits(ours, theirs, f"axis={axis}")
    assert_same_bits(ours_x.grad, theirs_x.grad, f"grad axis={axis}")


def test_gradient_is_the_mask_at_the_clamp():
    """Inside the range the gradient passes unchanged, at the clamp it stops, and a tie rounds to even first."""
    x = torch.tensor([-0.06, -0.05, -0.04, 0.0, 12.64, 12.65, 12.66, 12.75], requires_grad=True)
    qat.fake_quantize_ste(x, 0.1, 0, 0, 127).sum().backward()
    theirs = x.detach().clone().requires_grad_()
    torch.fake_quantize_per_tensor_affine(theirs, 0.1, 0, 0, 127).sum().backward()
    assert_same_bits(x.grad, theirs.grad)
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0, 0.0]


# --- FakeQuantize and FusedMovingAvgObsFakeQuantize over streams of batches ---

FUSED_SETTINGS = [  # (observer, quant_min, quant_max, observer kwargs): the qconfigs' and a few others
    ("MovingAverageMinMaxObserver", 0, 255, dict(reduce_range=True)),  # x86 and fbgemm QAT activations
    ("MovingAverageMinMaxObserver", 0, 255, dict()),
    ("MovingAverageMinMaxObserver", -128, 127, dict(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)),
    ("MovingAveragePerChannelMinMaxObserver", -128, 127, dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)),
    ("MovingAveragePerChannelMinMaxObserver", -127, 127, dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)),
    ("MovingAveragePerChannelMinMaxObserver", 0, 255, dict(qscheme=torch.per_channel_affine)),
    ("MovingAverageMinMaxObserver", 0, 15, dict()),
]
UNFUSED_SETTINGS = [
    ("MovingAverageMinMaxObserver", 0, 255, dict(reduce_range=True)),  # default_fake_quant
    ("MovingAverageMinMaxObserver", -128, 127, dict(dtype=torch.qint8, qscheme=torch.per_tensor_symmetric)),
    ("MinMaxObserver", None, None, dict()),
    ("PerChannelMinMaxObserver", None, None, dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)),
    ("MovingAveragePerChannelMinMaxObserver", -128, 127, dict(dtype=torch.qint8, qscheme=torch.per_channel_symmetric)),
    ("MovingAveragePerChannelMinMaxObserver", 0, 255, dict(qscheme=torch.per_channel_affine, reduce_range=True)),
]


@st.composite
def streams(draw, per_channel: bool, any_axis: bool):
    """Batches with on/off switches: (x, observer on, fake quant on) per step, the channel axis and a seed."""
    seed = draw(st.integers(0, 2**31))
    gen = torch.Generator().manual_seed(seed)
    ndim = draw(st.integers(2, 4)) if per_channel else draw(st.integers(1, 3))
    ch_axis = draw(st.integers(0, ndim - 1)) if any_axis else 0
    shape = [draw(st.integers(1, 6)) for _ in range(ndim)]
    shape[ch_axis] = draw(st.integers(1, 6))
    steps = []
    for i in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["normal", "relu", "shifted", "wide"]))
        x = torch.randn(shape, generator=gen) * float(torch.empty(1).uniform_(-3, 3, generator=gen).exp())
        if kind == "relu":
            x = x.relu()
        elif kind == "shifted":
            x = x + 3 * x.abs().max()
        elif kind == "wide":
            x = x * 10
        observer_on = i == 0 or draw(st.booleans())
        steps.append((x, observer_on, draw(st.booleans())))
    return steps, ch_axis, seed


def tie_batch(ours, shape, ch_axis, seed):
    """Values at and around the ties of the module's current grid, beyond its ends, and ±inf."""
    gen = torch.Generator().manual_seed(seed)
    scale, _ = (
        qat.choose_qparams_fused(ours.min_val, ours.max_val, ours.quant_min, ours.quant_max, ours.symmetric)
        if ours.fused
        else (ours.scale, ours.zero_point)
    )
    numel = math.prod(shape)
    if ours.is_per_channel:
        moved = [shape[ch_axis]] + [s for i, s in enumerate(shape) if i != ch_axis]
        rows = [
            near_ties(s, numel // shape[ch_axis], ours.quant_max - ours.quant_min + 10, gen) for s in scale.tolist()
        ]
        x = torch.stack(rows).reshape(moved).movedim(0, ch_axis).contiguous()
    else:
        x = near_ties(scale.item(), numel, ours.quant_max - ours.quant_min + 10, gen).reshape(shape)
    flat = x.view(-1)
    flat[:2] = torch.tensor([INF, -INF])[: flat.numel()]
    return x


def run_stream(ours, theirs, steps, ch_axis, seed):
    """Feed both modules every batch (then a batch of ties with the observers off); compare everything."""

    def compare(x, fake_quant_on, context):
        ours_x, theirs_x = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours_y, theirs_y = ours(ours_x), quiet(theirs, theirs_x)
        assert_same_bits(ours_y, theirs_y, f"output {context}")
        dy = gradient_for(x, seed)
        ours_y.backward(dy)
        theirs_y.backward(dy)
        assert_same_bits(ours_x.grad, theirs_x.grad, f"grad {context}")
        if fake_quant_on:
            assert_same_bits(ours.scale, theirs.scale, f"scale {context}")
            assert_same_ints(ours.zero_point, theirs.zero_point, f"zero point {context}")
        assert_same_bits(ours.min_val, theirs.activation_post_process.min_val, f"min_val {context}")
        assert_same_bits(ours.max_val, theirs.activation_post_process.max_val, f"max_val {context}")

    for i, (x, observer_on, fake_quant_on) in enumerate(steps):
        for module in (ours, theirs):
            module.enable_observer(observer_on)
            module.enable_fake_quant(fake_quant_on)
        compare(x, fake_quant_on, f"step {i}, shape {tuple(x.shape)}, observer {observer_on}, fq {fake_quant_on}")
    for module in (ours, theirs):
        module.disable_observer()
        module.enable_fake_quant()
    compare(tie_batch(ours, steps[0][0].shape, ch_axis, seed), True, "ties, observer off")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ours_qparams, theirs_qparams = ours.calculate_qparams(), theirs.calculate_qparams()
    assert_same_bits(ours_qparams[0].float(), theirs_qparams[0].float(), "calculate_qparams scale")
    assert_same_ints(ours_qparams[1].long(), theirs_qparams[1].long(), "calculate_qparams zero point")


@settings(max_examples=examples(150))
@given(setting=st.sampled_from(FUSED_SETTINGS), c=st.sampled_from([0.01, 0.3, 1.0]), data=st.data())
def test_fused_module_matches_torch(setting, c, data):
    name, qmin, qmax, kwargs = setting
    steps, ch_axis, seed = data.draw(streams(per_channel="PerChannel" in name, any_axis=False))
    kwargs = dict(kwargs, averaging_constant=c)
    theirs = quiet(tfq.FusedMovingAvgObsFakeQuantize, getattr(tobs, name), qmin, qmax, **kwargs)
    ours = qat.FakeQuantize(getattr(qlib, name), qmin, qmax, fused=True, **kwargs)
    run_stream(ours, theirs, steps, ch_axis, seed)


@settings(max_examples=examples(150))
@given(setting=st.sampled_from(UNFUSED_SETTINGS), data=st.data())
def test_unfused_module_matches_torch(setting, data):
    name, qmin, qmax, kwargs = setting
    per_channel = "PerChannel" in name
    steps, ch_axis, seed = data.draw(streams(per_channel=per_channel, any_axis=True))
    kwargs = dict(kwargs, ch_axis=ch_axis) if per_channel else kwargs
    theirs = quiet(tfq.FakeQuantize, getattr(tobs, name), qmin, qmax, **kwargs)
    ours = qat.FakeQuantize(getattr(qlib, name), qmin, qmax, **kwargs)
    run_stream(ours, theirs, steps, ch_axis, seed)


@pytest.mark.parametrize("engine", ["x86", "fbgemm"])
def test_from_torch_copies_the_qat_qconfig_modules_and_their_state(engine):
    qconfig = quiet(torch.ao.quantization.get_default_qat_qconfig, engine)
    gen = torch.Generator().manual_seed(12)
    for make, shape in ((qconfig.activation, (32, 10)), (qconfig.weight, (8, 5, 3))):
        theirs = quiet(make)
        quiet(theirs, torch.randn(shape, generator=gen))
        ours = qat.FakeQuantize.from_torch(theirs)
        assert ours.fused and (ours.quant_min, ours.quant_max) == (theirs.quant_min, theirs.quant_max)
        steps = [(torch.randn(shape, generator=gen) * 2, True, True), (torch.randn(shape, generator=gen), False, True)]
        run_stream(ours, theirs, steps, 0, 12)


# --- LSQ: torch._fake_quantize_learnable_per_tensor_affine ---


@given(
    rng=RANGES,
    scale=scales.filter(lambda s: 1e-10 < s < 1e10),
    data=st.data(),
    seed=st.integers(0, 2**31),
    n=st.integers(1, 200),
    extremes=st.booleans(),
)
def test_learnable_matches_torch(rng, scale, data, seed, n, extremes):
    qmin, qmax = rng
    z = data.draw(
        st.one_of(
            st.integers(qmin, qmax).map(float),
            st.integers(qmin, qmax - 1).map(lambda k: k + 0.5),  # forward and backward round it differently
            st.floats(qmin - 3, qmax + 3, width=32),
        )
    )
    grad_factor = data.draw(st.sampled_from([1.0, 1.0 / math.sqrt(n * max(qmax, 1)), 0.37]))
    x = mixed_values(scale, n, qmax - qmin + 20, seed, extremes)
    dy = torch.randn(x.shape, generator=torch.Generator().manual_seed(seed))
    results = []
    for function in (torch._fake_quantize_learnable_per_tensor_affine, qat.fake_quantize_learnable):
        xs = x.clone().requires_grad_()
        s = torch.tensor([scale], dtype=torch.float32, requires_grad=True)
        zp = torch.tensor([z], dtype=torch.float32, requires_grad=True)
        y = function(xs, s, zp, qmin, qmax, grad_factor)
        y.backward(dy)
        results.append((y, xs.grad, s.grad, zp.grad))
    context = f"s={scale!r} z={z!r} {rng} grad_factor={grad_factor}"
    for name, theirs, ours in zip(("output", "x grad", "scale grad", "zero point grad"), *results, strict=True):
        assert_same_bits(ours, theirs, f"{name} {context}")


def test_learnable_backward_adds_the_zero_point_before_rounding():
    """At a tie with an odd zero point the forward keeps the code inside the range and the backward does not."""
    results = []
    for function in (torch._fake_quantize_learnable_per_tensor_affine, qat.fake_quantize_learnable):
        x = torch.tensor([126.5, 125.5], requires_grad=True)  # forward: rint(126.5) + 129 = 255, inside
        s, z = torch.tensor([1.0], requires_grad=True), torch.tensor([129.0], requires_grad=True)
        y = function(x, s, z, 0, 255, 1.0)  # backward: rint(126.5 + 129) = 256, outside
        y.backward(torch.ones(2))
        results.append((y, x.grad, s.grad, z.grad))
    for theirs, ours in zip(*results, strict=True):
        assert_same_bits(ours, theirs)
    assert results[1][0].tolist() == [126.0, 126.0] and results[1][1].tolist() == [0.0, 1.0]


def test_learnable_without_fma_on_the_default_kernels():
    """torch's DEFAULT kernels round x * inv before adding the zero point; AVX2 and AVX-512 use one FMA."""
    code = """
import torch, qlib
from qlib import qat
from inputs import near_ties
assert torch.backends.cpu.get_cpu_capability() == "DEFAULT"
assert not qat.cpu_contracts_fma()
wrong = {True: 0, False: 0}
for seed in range(20):
    gen = torch.Generator().manual_seed(seed)
    scale, z = [0.0123456, 0.1277553737, 2.0**-5][seed % 3], 35.0 + seed % 2
    x = near_ties(scale, 2000, 200, gen)
    dy = torch.randn(x.shape, generator=gen)
    grads = []
    for function, kwargs in [(torch._fake_quantize_learnable_per_tensor_affine, {}),
                             (qat.fake_quantize_learnable, dict(release="2.14")),
                             (qat.fake_quantize_learnable, dict(release="2.14", fma=True))]:
        xs = x.clone().requires_grad_()
        s = torch.tensor([scale], requires_grad=True)
        function(xs, s, torch.tensor([z]), 0, 255, 1.0, **kwargs).backward(dy)
        grads.append((xs.grad.view(torch.int32), s.grad.view(torch.int32)))
    for fma, ours in ((False, grads[1]), (True, grads[2])):
        wrong[fma] += sum(int((a != b).sum()) for a, b in zip(ours, grads[0]))
print(wrong[False], wrong[True])
"""
    env = dict(os.environ, ATEN_CPU_CAPABILITY="default")
    tests = os.path.dirname(__file__)
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tests, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    without, with_fma = map(int, out.stdout.split())
    assert without == 0 and with_fma > 0, out.stdout


# --- errors ---


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (
            lambda: qat.choose_qparams_fused(torch.tensor(0.0), torch.tensor(1.0), 5, 1),
            ValueError,
            "quant_min <= quant_max.*got quant_min=5, quant_max=1",
        ),
        (
            lambda: qat.choose_qparams_fused(torch.tensor(0.0), torch.tensor(1.0), -(2**31), 2**31 - 1),
            ValueError,
            "below 2\\*\\*31",
        ),
        (
            lambda: qat.choose_qparams_fused(torch.tensor(-1.0), torch.tensor(1.0), 0, 1, symmetric=True),
            ValueError,
            "symmetric range needs",
        ),
        (lambda: qat.choose_qparams_fused(torch.tensor(math.nan), torch.tensor(1.0), 0, 255), ValueError, "NaN"),
        (lambda: qat.choose_qparams_fused(0.0, 1.0, 0, 255), TypeError, "floating-point tensor"),
        (lambda: qat.choose_qparams_fused(torch.zeros(2), torch.ones(3), 0, 255), ValueError, "same shape"),
        (lambda: qat.fake_quantize_ste(torch.ones(3), INF, 0, 0, 255), ValueError, "scale must be a finite"),
        (lambda: qat.fake_quantize_ste(torch.ones(3), 0.1, 0, 9, 3), ValueError, "got quant_min=9, quant_max=3"),
        (
            lambda: qat.fake_quantize_ste(torch.ones(2, 3), torch.ones(3), torch.zeros(3, dtype=torch.int32), 0, 9, 2),
            ValueError,
            "axis must be in",
        ),
        (
            lambda: qat.fake_quantize_learnable(torch.ones(3), torch.tensor([math.nan]), torch.tensor([0.0]), 0, 9),
            ValueError,
            "scale must be a finite",
        ),
        (
            lambda: qat.fake_quantize_learnable(torch.ones(3), torch.tensor([0.1]), torch.tensor([INF]), 0, 9),
            ValueError,
            "zero_point must be finite",
        ),
        (
            lambda: qat.fake_quantize_learnable(torch.ones(3), torch.tensor([0.1]), torch.tensor([0]), 0, 9),
            TypeError,
            "zero_point must be a one-element float32",
        ),
        (
            lambda: qat.fake_quantize_learnable(torch.ones(3), torch.tensor([0.1]), torch.tensor([0.0]), 1, 9),
            ValueError,
            "must include 0",
        ),
        (lambda: qat.FakeQuantize(qlib.MinMaxObserver, fused=True), ValueError, "fused=True needs"),
        (lambda: qat.FakeQuantize(tobs.MinMaxObserver), TypeError, "observer must be one of"),
        (lambda: qat.FakeQuantize(quant_min=0), ValueError, "both quant_min and quant_max"),
        (lambda: qat.FakeQuantize(quant_min=0, quant_max=300), ValueError, "quant_max"),
        (
            lambda: qat.FakeQuantize(qlib.MovingAveragePerChannelMinMaxObserver, fused=True, ch_axis=1),
            ValueError,
            "needs ch_axis=0",
        ),
        (
            lambda: qat.FakeQuantize(qlib.PerChannelMinMaxObserver, qscheme=torch.per_channel_affine_float_qparams),
            ValueError,
            "not modelled",
        ),
        (lambda: qat.FakeQuantize()(torch.tensor([1.0, math.nan])), ValueError, "NaN"),
        (lambda: qat.FakeQuantize(fused=True)(torch.tensor([1.0, INF])), ValueError, "inf"),
        (lambda: qat.FakeQuantize(fused=True)(torch.ones(3, dtype=torch.float64)), TypeError, "float32"),
        (
            lambda: qat.FakeQuantize(qlib.MovingAveragePerChannelMinMaxObserver, fused=True)(torch.ones(3)),
            ValueError,
            "at least 2 dimensions",
        ),
        (lambda: qat.FakeQuantize.from_torch(torch.nn.ReLU()), TypeError, "FusedMovingAvgObsFakeQuantize"),
    ],
)
def test_errors(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
