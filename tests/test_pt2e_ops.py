"""qlib.pt2e_ops against torch's quantized_decomposed ops (the PT2E q/dq ops), and the observers of
torchao's X86InductorQuantizer against qlib's.

The ops are defined by torch (torch/ao/quantization/fx/_decomposed.py, the same in 2.13 and 2.14);
torchao 0.18 uses them and registers none of its own, which the first test checks.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import pytest
import torch
import torch.ao.quantization.fx._decomposed  # noqa: F401  (registers torch.ops.quantized_decomposed)
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples, mixed_values, nudge, scales

import qlib
from qlib.pt2e_ops import dequantize_pt2e, quantize_pt2e, reciprocal
from qlib.ranges import DTYPE_RANGES
from qlib.ranges import PLAIN_DTYPES as PT2E_DTYPES
from qlib.testing import assert_same_bits, assert_same_ints

OPS = torch.ops.quantized_decomposed
F32 = torch.float32


def pt2e_near_ties(scale: float, n: int, k_range: int, gen: torch.Generator) -> torch.Tensor:
    """Values whose x * float32(1/scale) (the PT2E op's factor) is at, or a few ulps around, some k + 0.5."""
    inv = reciprocal(scale)
    k = torch.randint(-k_range, k_range, (n,), generator=gen).double()
    return nudge(((k + 0.5) / inv).float(), torch.randint(-3, 4, (n,), generator=gen))


def values_for(scale: float, dtype: torch.dtype, n: int, seed: int) -> torch.Tensor:
    lo, hi = DTYPE_RANGES[dtype]
    k_range = min(hi - lo, 10**6) + 20
    gen = torch.Generator().manual_seed(seed)
    return torch.cat([pt2e_near_ties(scale, n, k_range, gen), mixed_values(scale, n // 2 + 1, k_range, seed)])


@st.composite
def quant_ranges(draw, dtype: torch.dtype) -> tuple[int, int]:
    lo, hi = DTYPE_RANGES[dtype]
    kind = draw(st.sampled_from(["full", "reduced", "any"]))
    if kind == "full":
        return lo, hi
    if kind == "reduced":  # what a quantizer asks for with reduce_range
        return lo // 2, hi // 2
    a = draw(st.integers(lo, hi))
    b = draw(st.integers(lo, hi))
    return min(a, b), max(a, b)


def test_torchao_uses_torchs_ops_and_registers_none():
    """The ops convert_pt2e writes are torch's: torchao 0.18 defines no quantized_decomposed library."""
    torchao = pytest.importorskip("torchao")
    sources = [path.read_text() for path in Path(torchao.__file__).parent.rglob("*.py")]
    assert not [s for s in sources if re.search(r"""Library\(\s*["']quantized_decomposed""", s)]
    assert any("torch.ops.quantized_decomposed.quantize_per_tensor" in s for s in sources)  # it uses them
    defined = Path(torch.ao.quantization.fx._decomposed.__file__).read_text()
    assert 'Library("quantized_decomposed", "DEF")' in defined


@given(
    dtype=st.sampled_from(PT2E_DTYPES), scale=scales, data=st.data(), seed=st.integers(0, 2**31), n=st.integers(1, 300)
)
def test_quantize_per_tensor_matches_torch(dtype, scale, data, seed, n):
    lo, hi = DTYPE_RANGES[dtype]
    quant_min, quant_max = data.draw(quant_ranges(dtype))
    zero_point = data.draw(st.one_of(st.integers(lo, hi), st.sampled_from([0, quant_min, quant_max])))
    x = values_for(scale, dtype, n, seed)
    expected = OPS.quantize_per_tensor(x, scale, zero_point, quant_min, quant_max, dtype)
    ours = quantize_pt2e(x, scale, zero_point, quant_min, quant_max, dtype)
    assert_same_ints(ours, expected, f"scale={scale!r} zp={zero_point} [{quant_min}, {quant_max}] {dtype}")


@given(
    dtype=st.sampled_from(PT2E_DTYPES),
    scale_dtype=st.sampled_from([torch.float32, torch.float64]),
    data=st.data(),
    seed=st.integers(0, 2**31),
    shape=st.lists(st.integers(1, 5), min_size=1, max_size=4),
)
def test_quantize_per_channel_matches_torch(dtype, scale_dtype, data, seed, shape):
    lo, hi = DTYPE_RANGES[dtype]
    axis = data.draw(st.integers(0, len(shape) - 1))
    channels = shape[axis]
    quant_min, quant_max = data.draw(quant_ranges(dtype))
    scale_list = data.draw(st.lists(scales, min_size=channels, max_size=channels))
    zero_points = torch.tensor(data.draw(st.lists(st.integers(lo, hi), min_size=channels, max_size=channels)))
    per_channel = 1
    for size in shape:
        per_channel *= size
    per_channel //= channels
    rows = [values_for(s, dtype, per_channel, seed + c)[:per_channel] for c, s in enumerate(scale_list)]
    rest = [size for i, size in enumerate(shape) if i != axis]
    x = torch.stack(rows).reshape(channels, *rest).movedim(0, axis).contiguous()
    s = torch.tensor(scale_list, dtype=scale_dtype)
    if not torch.isfinite(1.0 / s).all():
        return  # a float32 reciprocal that overflows: no usable scale
    expected = OPS.quantize_per_channel(x, s, zero_points, axis, quant_min, quant_max, dtype)
    ours = quantize_pt2e(x, s, zero_points, quant_min, quant_max, dtype, axis=axis)
    assert_same_ints(ours, expected, f"axis={axis} {scale_dtype} {dtype}")


@given(dtype=st.sampled_from(PT2E_DTYPES), scale=scales, data=st.data())
def test_dequantize_per_tensor_matches_torch(dtype, scale, data):
    lo, hi = DTYPE_RANGES[dtype]
    zero_point = data.draw(st.integers(lo, hi))
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    q = torch.randint(lo, hi + 1, (200,), generator=gen, dtype=torch.int64).to(dtype)
    q[:2] = torch.tensor([lo, hi]).to(dtype)
    expected = OPS.dequantize_per_tensor(q, scale, zero_point, lo, hi, dtype)
    assert_same_bits(dequantize_pt2e(q, scale, zero_point), expected, f"scale={scale!r} zp={zero_point}")


@given(
    dtype=st.sampled_from(PT2E_DTYPES),
    scale_dtype=st.sampled_from([torch.float32, torch.float64]),
    symmetric=st.booleans(),
    data=st.data(),
)
def test_dequantize_per_channel_matches_torch(dtype, scale_dtype, symmetric, data):
    lo, hi = DTYPE_RANGES[dtype]
    channels, axis = data.draw(st.integers(1, 6)), data.draw(st.integers(0, 2))
    shape = [3, 4, 5]
    shape[axis] = channels
    s = torch.tensor(data.draw(st.lists(scales, min_size=channels, max_size=channels)), dtype=scale_dtype)
    z = (
        None
        if symmetric
        else torch.tensor(data.draw(st.lists(st.integers(lo, hi), min_size=channels, max_size=channels)))
    )
    gen = torch.Generator().manual_seed(data.draw(st.integers(0, 2**31)))
    q = torch.randint(lo, hi + 1, shape, generator=gen, dtype=torch.int64).to(dtype)
    expected = OPS.dequantize_per_channel(q, s, z, axis, lo, hi, dtype)
    assert_same_bits(dequantize_pt2e(q, s, z, axis=axis), expected, f"axis={axis} {scale_dtype}")


@pytest.mark.parametrize("dtype", PT2E_DTYPES)
def test_near_tie_sweep(dtype):
    """About 60,000 values at and beside ties per dtype, past both ends, with scales of every kind."""
    gen = torch.Generator().manual_seed(2014)
    lo, hi = DTYPE_RANGES[dtype]
    for trial in range(30):
        scale = 10.0 ** float(torch.empty(1, dtype=torch.float64).uniform_(-4, 0, generator=gen))
        if trial % 2:
            scale = torch.tensor(scale, dtype=F32).item()  # the float32 scales convert_pt2e writes
        zero_point = int(torch.randint(max(lo, -1000), min(hi, 1000) + 1, (1,), generator=gen))
        quant_min, quant_max = (lo // 2, hi // 2) if trial % 3 == 0 else (lo, hi)
        x = values_for(scale, dtype, 1400, trial)
        expected = OPS.quantize_per_tensor(x, scale, zero_point, quant_min, quant_max, dtype)
        assert_same_ints(quantize_pt2e(x, scale, zero_point, quant_min, quant_max, dtype), expected, f"trial {trial}")


def test_int32_top_of_the_range_wraps_to_the_bottom():
    """The float32 clamp makes 2**31 - 1 into 2**31, which int32 cannot hold: x86 gives -2**31."""
    x = torch.tensor([float("inf"), 3e38, 2.2e9, 2147483520.0, -3e38, float("-inf"), 0.0])
    lo, hi = DTYPE_RANGES[torch.int32]
    expected = OPS.quantize_per_tensor(x, 1.0, 0, lo, hi, torch.int32)
    ours = quantize_pt2e(x, 1.0, 0, lo, hi, torch.int32)
    assert_same_ints(ours, expected)
    assert ours[0] == ours[4] == lo and ours[3] == 2147483520


def test_the_reciprocal_is_float64_narrowed_where_aten_divides_in_float32():
    """0.0180064, the current torch's forum scale as printed, has different reciprocals in the two kernels."""
    scale, zero_point = 0.0180064, 40
    assert reciprocal(scale) != qlib.float32_reciprocal(scale)
    gen = torch.Generator().manual_seed(5)
    x = pt2e_near_ties(scale, 20000, 120, gen)
    ours = quantize_pt2e(x, scale, zero_point, 0, 255, torch.uint8)
    assert_same_ints(ours, OPS.quantize_per_tensor(x, scale, zero_point, 0, 255, torch.uint8))
    aten = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8).int_repr()
    assert (ours != aten).any(), "the two reciprocals should give different codes somewhere near these ties"
    # with the release's own arithmetic, torch.quantize_per_tensor is qlib.quantize, not the PT2E op
    assert_same_ints(qlib.quantize(x, scale, zero_point, torch.quint8), aten)


def test_float32_scales_give_the_same_reciprocal():
    """Every scale convert_pt2e writes is a float32: there 1/double(s) rounds as 1.0f/s (checked on 10**5)."""
    gen = torch.Generator().manual_seed(6)
    for s in (torch.rand(10**5, generator=gen) * 10 + 1e-4).tolist():
        assert reciprocal(s) == qlib.float32_reciprocal(s), s


def test_clamp_is_to_quant_min_and_quant_max_not_the_dtype():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0])
    ours = quantize_pt2e(x, 0.01, 60, 0, 127, torch.uint8)
    assert_same_ints(ours, OPS.quantize_per_tensor(x, 0.01, 60, 0, 127, torch.uint8))
    assert ours.tolist() == [0, 0, 60, 127, 127]
    assert torch.quantize_per_tensor(x, 0.01, 60, torch.quint8).int_repr().tolist() == [0, 0, 60, 160, 255]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: quantize_pt2e(torch.zeros(2), 0.1, 0, 0, 255, torch.quint8), TypeError, "plain dtypes"),
        (lambda: quantize_pt2e(torch.zeros(2), 0.1, 0, 0, 256, torch.uint8), ValueError, "quant_max=256"),
        (lambda: quantize_pt2e(torch.zeros(2), 0.1, 0, 10, 5, torch.uint8), ValueError, "quant_min <= quant_max"),
        (lambda: quantize_pt2e(torch.tensor([float("nan")]), 0.1, 0, 0, 255, torch.uint8), ValueError, "NaN"),
        (lambda: quantize_pt2e(torch.zeros(2, dtype=torch.float64), 0.1, 0, 0, 255, torch.uint8), TypeError, "float32"),
        (
            lambda: quantize_pt2e(torch.zeros(2, 3), [0.1, 0.2], torch.zeros(2), 0, 255, torch.uint8, 0),
            TypeError,
            "1-d",
        ),
        (
            lambda: quantize_pt2e(torch.zeros(2, 3), torch.ones(3), torch.zeros(2), 0, 255, torch.uint8, 0),
            ValueError,
            "one value per channel",
        ),
        (lambda: dequantize_pt2e(torch.zeros(2), 0.1, 0), TypeError, "integer tensor"),
        (lambda: dequantize_pt2e(torch.zeros(2, dtype=torch.uint8), 0.1, None), ValueError, "None"),
    ],
)
def test_errors_say_what_is_allowed(call, error, message):
    with pytest.raises(error, match=message):
        call()


# --- the observers of torchao's X86InductorQuantizer -------------------------------------------------


def batches(seed: int, count: int, n: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(count):
        scale = float(torch.empty(1).uniform_(-4, 3, generator=gen).exp())
        kind = int(torch.randint(0, 4, (1,), generator=gen))
        x = torch.randn(n, generator=gen) * scale
        if kind == 1:
            x = x.abs()  # a ReLU's output
        elif kind == 2:
            x = torch.empty(n).cauchy_(generator=gen) * scale
        elif kind == 3:
            x = torch.full((n,), scale)  # a single value: the branch torchao PR 2418 fixed
        out.append(x)
    return out


@settings(max_examples=examples(60))
@given(seed=st.integers(0, 2**31), count=st.integers(1, 4), n=st.integers(1, 2000), reduce_range=st.booleans())
def test_x86_inductor_quantizers_histogram_observer_is_qlibs(seed, count, n, reduce_range):
    """torchao's HistogramObserver with the quantizer's arguments (uint8, quant range, eps 2**-12) is qlib's."""
    observer_module = pytest.importorskip("torchao.quantization.pt2e")
    kwargs = {"dtype": torch.uint8, "quant_min": 0, "quant_max": 127 if reduce_range else 255, "eps": 2**-12}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = observer_module.HistogramObserver(**kwargs)
    ours = qlib.HistogramObserver(**kwargs)
    for x in batches(seed, count, n):
        theirs(x)
        ours(x)
        assert_same_bits(ours.histogram, theirs.histogram)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scale, zero_point = theirs.calculate_qparams()
    assert_same_bits(ours.calculate_qparams()[0], scale)
    assert_same_ints(ours.calculate_qparams()[1], zero_point)


@settings(max_examples=examples(60))
@given(seed=st.integers(0, 2**31), channels=st.integers(1, 8), tiny=st.booleans())
def test_x86_inductor_quantizers_weight_observer_is_qlibs(seed, channels, tiny):
    """Per-channel symmetric int8 weights, eps 2**-12: the floor matters for channels of tiny weights."""
    observer_module = pytest.importorskip("torchao.quantization.pt2e")
    kwargs = {
        "dtype": torch.int8,
        "quant_min": -128,
        "quant_max": 127,
        "qscheme": torch.per_channel_symmetric,
        "ch_axis": 0,
        "eps": 2**-12,
    }
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(channels, 3, 3, 3, generator=gen) * (1e-4 if tiny else 0.1)
    theirs = observer_module.PerChannelMinMaxObserver(**kwargs)
    ours = qlib.PerChannelMinMaxObserver(**kwargs)
    theirs(w)
    ours(w)
    scale, zero_point = theirs.calculate_qparams()
    assert_same_bits(ours.calculate_qparams()[0], scale)
    assert_same_ints(ours.calculate_qparams()[1], zero_point)
    if tiny:
        assert (scale == 2**-12).all()
