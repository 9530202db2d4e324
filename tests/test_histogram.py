"""qlib.histogram against torch 2.13's HistogramObserver, bit for bit, and the forum thread's numbers."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from torch.ao.quantization import observer as tobs

import qlib.histogram as qh
import qlib.observers as qobs
from qlib.testing import assert_same_bits, assert_same_ints

# The forum thread's input (/work/shared/seed/forum-thread.txt), as the user printed it.
FORUM_INPUT = [
    [0.95466703176498413086, -0.136212718486785888672, 0.75253891944885253906, 1.57104063034057617188],
    [0.97250884771347045898, -0.67004448175430297852, -0.58047348260879516602, 1.30683445930480957031],
    [-0.13423979282379150391, 0.16391958296298980713, -0.71688455343246459961, 0.05846109613776206970],
    [1.07569837570190429688, -0.06351475417613983154, -0.19469638168811798096, -0.09430617839097976685],
]
# What the thread's QuantStub printed: int_repr() and the dequantized output.
FORUM_CODES = [[90, 26, 78, 127], [91, 0, 0, 111], [26, 44, 0, 37], [97, 30, 23, 28]]
FORUM_OUTPUT = [
    [0.950229287147521972656250, -0.135747045278549194335937500, 0.746608734130859375, 1.578059434890747070312500],
    [0.967197716236114501953125, -0.576924920082092285156250, -0.576924920082092285156250, 1.306565284729003906250],
    [
        -0.135747045278549194335937500,
        0.169683814048767089843750,
        -0.576924920082092285156250,
        0.050905141979455947875976562500,
    ],
    [
        1.069007992744445800781250,
        -0.067873522639274597167968750,
        -0.186652183532714843750,
        -0.101810283958911895751953125,
    ],
]
FORUM_SCALE, FORUM_ZERO_POINT = 0.01696838, 34  # as the thread reports them (float32 scale)


def f32(value: float) -> float:
    return torch.tensor(value, dtype=torch.float32).item()


def make_batch(kind: str, n: int, gen: torch.Generator) -> torch.Tensor:
    scale = float(torch.empty(1).uniform_(-3, 3, generator=gen).exp())
    shift = float(torch.randn(1, generator=gen)) * scale
    x = torch.randn(n, generator=gen) * scale + shift
    if kind == "heavy":
        x = torch.empty(n).cauchy_(generator=gen) * scale
    elif kind == "positive":
        x = x.abs() + abs(shift)
    elif kind == "negative":
        x = -x.abs() - abs(shift)
    elif kind == "constant":
        x = torch.full((n,), shift)
    elif kind == "few":  # a handful of distinct values, repeated
        x = torch.randn(3, generator=gen)[torch.randint(0, 3, (n,), generator=gen)] * scale
    elif kind == "tiny":
        x = x * 1e-38
    elif kind == "huge":
        x = x * 1e30
    return x.float()


KINDS = ("normal", "heavy", "positive", "negative", "constant", "few")
# values near 1e-38 or 1e30 make the float32 error estimate underflow or overflow (inf/nan), so the search
# never stops early and runs all ~10**5 steps, in torch as in qlib: too slow for many examples
EXTREME_KINDS = ("tiny", "huge")


@st.composite
def streams(draw, min_size: int = 20, max_size: int = 400):
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    n_batches = draw(st.integers(1, 4))
    return [
        make_batch(draw(st.sampled_from(KINDS)), draw(st.integers(min_size, max_size)), gen) for _ in range(n_batches)
    ]


@st.composite
def histogram_settings(draw):
    dtype = draw(st.sampled_from(qobs.OBSERVER_DTYPES))
    qscheme = draw(st.sampled_from(qobs.PER_TENSOR_QSCHEMES))
    kwargs = {"dtype": dtype, "qscheme": qscheme}
    lo, hi = qobs.observer_range(dtype)
    if draw(st.integers(0, 3)) == 0:
        kwargs["quant_min"] = draw(st.integers(max(lo, -(2**40)), 0))
        kwargs["quant_max"] = draw(st.integers(max(0, kwargs["quant_min"] + 1), hi))
        if dtype == torch.qint8 and kwargs["quant_max"] - kwargs["quant_min"] + 1 > 256:
            kwargs.pop("quant_min"), kwargs.pop("quant_max")
    eight_bit = dtype in (torch.quint8, torch.qint8, torch.uint8, torch.int8)
    reduce = draw(st.booleans()) and (eight_bit or "quant_min" in kwargs)
    if "quant_min" in kwargs and reduce and kwargs["quant_min"] // 2 == kwargs["quant_max"] // 2:
        reduce = False
    if reduce and qscheme == torch.per_tensor_symmetric and dtype in (torch.quint8, torch.uint8):
        reduce = "quant_min" in kwargs  # default range: refused by qlib (zero point 128 > 127), tested below
    kwargs["reduce_range"] = reduce
    return kwargs


def torch_observer(**kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return tobs.HistogramObserver(**kwargs)


def assert_same_state(ours, theirs, context=""):
    assert_same_bits(ours.histogram, theirs.histogram, f"histogram {context}")
    assert_same_bits(ours.min_val, theirs.min_val, f"min_val {context}")
    assert_same_bits(ours.max_val, theirs.max_val, f"max_val {context}")


def compare_qparams(ours, theirs, context=""):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        expected = theirs.calculate_qparams()
    if not torch.isfinite(expected[0]).all():
        with pytest.raises(ValueError, match="too wide"):
            ours.calculate_qparams()
        return
    scale, zero_point = ours.calculate_qparams()
    assert_same_bits(scale, expected[0], f"scale {context}")
    assert_same_ints(zero_point, expected[1], f"zero_point {context}")


@settings(max_examples=examples(100))
@given(batches=streams(), kwargs=histogram_settings())
def test_histogram_observer_matches_torch(batches, kwargs):
    ours, theirs = qh.HistogramObserver(**kwargs), torch_observer(**kwargs)
    for x in batches:
        assert ours(x) is x
        theirs(x)
        assert_same_state(ours, theirs, str(kwargs))
    compare_qparams(ours, theirs, str(kwargs))


@settings(max_examples=examples(20))
@given(batches=streams(min_size=10**4, max_size=3 * 10**4))
def test_histogram_observer_matches_torch_on_larger_batches(batches):
    ours, theirs = qh.HistogramObserver(reduce_range=True), torch_observer(reduce_range=True)
    for x in batches:
        ours(x)
        theirs(x)
    assert_same_state(ours, theirs)
    compare_qparams(ours, theirs)


@settings(max_examples=examples(4))
@given(seed=st.integers(0, 2**32 - 1), kind=st.sampled_from(EXTREME_KINDS), n=st.integers(20, 200))
def test_histogram_observer_matches_torch_on_extreme_scales(seed, kind, n):
    x = make_batch(kind, n, torch.Generator().manual_seed(seed))
    ours, theirs = qh.HistogramObserver(), torch_observer()
    ours(x)
    theirs(x)
    assert_same_state(ours, theirs)
    compare_qparams(ours, theirs)


# --- each pure step against the torch method it reproduces ---


@st.composite
def histograms(draw, max_bins: int = 300):
    """(histogram, min_val, max_val): sparse or dense counts, whole or fractional, on a random range."""
    gen = torch.Generator().manual_seed(draw(st.integers(0, 2**32 - 1)))
    bins = draw(st.integers(1, max_bins))
    counts = torch.randint(0, 50, (bins,), generator=gen).float()
    counts = counts * (torch.rand(bins, generator=gen) < draw(st.sampled_from([0.05, 0.5, 1.0])))
    if draw(st.booleans()):
        counts = counts / 16 * torch.rand(bins, generator=gen)
    lo = float(torch.randn(1, generator=gen)) * draw(st.sampled_from([1e-3, 1.0, 1e4]))
    width = float(torch.rand(1, generator=gen)) * draw(st.sampled_from([1e-6, 1.0, 1e3])) + 1e-30
    return counts, torch.tensor(lo), torch.tensor(lo + width)


def torch_with_state(histogram, min_val, max_val, **kwargs):
    obs = torch_observer(bins=histogram.numel(), **kwargs)
    obs.histogram, obs.min_val, obs.max_val = histogram.clone(), min_val.clone(), max_val.clone()
    return obs


@settings(max_examples=examples(60))
@given(hist=histograms(), dtype=st.sampled_from([torch.quint8, torch.qint32, torch.int16]))
def test_search_range_matches_torch(hist, dtype):
    histogram, lo, hi = hist
    theirs = torch_with_state(histogram, lo, hi, dtype=dtype)
    expected = theirs._non_linear_param_search()
    got = qh.search_range(histogram, lo, hi, 2 ** torch.iinfo(dtype).bits)
    assert_same_bits(got[0], expected[0], "new_min")
    assert_same_bits(got[1], expected[1], "new_max")


@given(hist=histograms(), data=st.data())
def test_quantization_error_matches_torch(hist, data):
    histogram, lo, hi = hist
    bins = histogram.numel()
    start = data.draw(st.integers(0, bins - 1))
    end = data.draw(st.integers(start, bins - 1))
    theirs = torch_with_state(histogram, lo, hi)
    bin_width = (hi.item() - lo.item()) / bins
    expected = theirs._compute_quantization_error(start, end)
    got = qh.quantization_error(histogram, bin_width, start, end, 256)
    assert_same_bits(torch.tensor(got, dtype=torch.float64).float(), torch.tensor(expected).float())
    assert got == expected or (math.isnan(got) and math.isnan(expected))


@given(hist=histograms(), grow=st.tuples(st.floats(0, 10), st.floats(0, 10)))
def test_upscale_histogram_matches_torch(hist, grow):
    histogram, lo, hi = hist
    width = (hi - lo).item()
    new_lo, new_hi = torch.tensor(lo.item() - grow[0] * width), torch.tensor(hi.item() + grow[1] * width)
    new_lo, new_hi = torch.min(new_lo, lo), torch.max(new_hi, hi)
    theirs = torch_with_state(histogram, lo, hi)
    expected = theirs._upscale_histogram(histogram, lo, hi, new_lo, new_hi)
    assert_same_bits(qh.upscale_histogram(histogram, lo, hi, new_lo, new_hi), expected)


# --- the forum thread ---


def test_forum_numbers_in_legacy_mode():
    """PyTorch 1.13.1 gives the thread's scale 0.01696838 and zero point 34 (measured in history/); so does legacy=True."""
    obs = qh.HistogramObserver(reduce_range=True, legacy=True)
    obs(torch.tensor(FORUM_INPUT).reshape(1, 1, 4, 4))
    scale, zero_point = obs.calculate_qparams()
    assert scale.dtype == torch.float32 and scale.item() == f32(FORUM_SCALE)
    assert zero_point.tolist() == [FORUM_ZERO_POINT]
    # and with those qparams torch's quantize reproduces every code and output value the thread printed
    q = torch.quantize_per_tensor(torch.tensor(FORUM_INPUT), scale.item(), zero_point.item(), torch.quint8)
    assert q.int_repr().tolist() == FORUM_CODES
    assert_same_bits(q.dequantize(), torch.tensor(FORUM_OUTPUT))


def test_forum_input_in_normal_mode_equals_torch_eager_flow():
    """torch 2.13's eager flow (QuantStub, fbgemm qconfig, prepare, calibrate, convert) equals qlib's normal mode."""

    class QuantDequant(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.quant = torch.ao.quantization.QuantStub()
            self.dequant = torch.ao.quantization.DeQuantStub()

        def forward(self, x):
            return self.dequant(self.quant(x))

    x = torch.tensor(FORUM_INPUT).reshape(1, 1, 4, 4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = QuantDequant().eval()
        model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
        prepared = torch.ao.quantization.prepare(model)
        prepared(x)
        converted = torch.ao.quantization.convert(prepared)
    torch_scale, torch_zero_point = converted.quant.scale, converted.quant.zero_point

    obs = qh.HistogramObserver(reduce_range=True)  # the fbgemm qconfig's activation observer
    obs(x)
    scale, zero_point = obs.calculate_qparams()
    assert_same_bits(scale, torch_scale.reshape(1).float())
    assert zero_point.item() == torch_zero_point.item()
    assert (round(scale.item(), 4), zero_point.item()) == (0.0180, 40)  # the numbers torch 2.13 gives today
    legacy = qh.HistogramObserver(reduce_range=True, legacy=True)
    legacy(x)
    assert legacy.calculate_qparams()[1].item() != zero_point.item()


@settings(max_examples=examples(15))
@given(seed=st.integers(0, 2**32 - 1), spread=st.sampled_from([1.5, 3.0, 20.0]), n=st.integers(200, 2000))
def test_legacy_first_batch_equals_torch_with_the_int_range_histogram(seed, spread, n):
    """legacy=True is torch 2.13 with the first histogram built by histc over int(min)..int(max)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, generator=gen) * spread + float(torch.randn(1, generator=gen))
    theirs = torch_observer(reduce_range=True)
    theirs(x)
    theirs.histogram.copy_(torch.histc(x, theirs.bins, min=int(theirs.min_val), max=int(theirs.max_val)))
    ours = qh.HistogramObserver(reduce_range=True, legacy=True)
    ours(x)
    assert_same_state(ours, theirs)
    compare_qparams(ours, theirs)


def test_legacy_refuses_a_second_batch():
    obs = qh.HistogramObserver(legacy=True)
    obs(torch.tensor([0.5, 2.5]))
    with pytest.raises(ValueError, match="only the first batch"):
        obs(torch.tensor([1.0]))


def test_legacy_int_range_must_fit_int64():
    with pytest.raises(ValueError, match="int64"):
        qh.HistogramObserver(legacy=True)(torch.tensor([-1e30, 1.0]))


# --- edge cases ---


def test_uninitialized_returns_torch_default():
    ours, theirs = qh.HistogramObserver(), torch_observer()
    with pytest.warns(UserWarning, match="must run observer"):
        expected = theirs.calculate_qparams()
    with pytest.warns(UserWarning, match="must run observer"):
        got = ours.calculate_qparams()
    assert_same_bits(got[0], expected[0])
    assert_same_ints(got[1], expected[1])
    assert_same_state(ours, theirs)


def test_empty_batch_changes_nothing():
    ours, theirs = qh.HistogramObserver(), torch_observer()
    for x in [torch.tensor([]), torch.randn(100), torch.zeros(0, 3), torch.randn(50)]:
        ours(x)
        theirs(x)
        assert_same_state(ours, theirs)
    compare_qparams(ours, theirs)


@pytest.mark.parametrize("first", [True, False])
def test_nan_raises_where_torch_fails_in_histc(first):
    x = torch.tensor([1.0, math.nan, 3.0])
    ours, theirs = qh.HistogramObserver(), torch_observer()
    if not first:
        ours(torch.tensor([0.0, 2.0]))
        theirs(torch.tensor([0.0, 2.0]))
    with pytest.raises(RuntimeError, match="not finite"):
        theirs(x)
    before = ours.histogram.clone(), ours.min_val.clone(), ours.max_val.clone()
    with pytest.raises(ValueError, match="1 NaN"):
        ours(x)
    assert all(torch.equal(a, b) for a, b in zip(before, (ours.histogram, ours.min_val, ours.max_val), strict=True))
    if first:
        assert torch.isnan(theirs.min_val)  # torch stored NaN as the range before histc raised


def test_infinities_are_dropped_with_a_warning_like_torch():
    ours, theirs = qh.HistogramObserver(), torch_observer()
    for x in [
        torch.tensor([math.inf, -math.inf]),
        torch.tensor([1.0, -math.inf, 2.0, 4.0]),
        torch.tensor([math.inf, 0.5]),
    ]:
        with pytest.warns(UserWarning, match="torch.inf detected"):
            theirs(x)
        with pytest.warns(UserWarning, match="torch.inf detected"):
            ours(x)
        assert_same_state(ours, theirs)
    compare_qparams(ours, theirs)


@pytest.mark.parametrize(
    "batches",
    [
        [[3.0, 3.0, 3.0]],
        [[0.0, -0.0]],
        [[-2.5] * 4, [-2.5]],
        [[1.0] * 3, [1.0, 4.0]],
        [[1.0, 4.0], [2.0] * 5],
        [[2.0] * 3, [-1.0] * 2],
        [[1e-45, 0.0]],
    ],
)
def test_all_equal_values_match_torch(batches):
    ours, theirs = qh.HistogramObserver(), torch_observer()
    for b in batches:
        ours(torch.tensor(b))
        theirs(torch.tensor(b))
        assert_same_state(ours, theirs)
    compare_qparams(ours, theirs)


def test_range_too_wide_raises_where_torch_returns_nan():
    x = torch.tensor([-3e38, 3e38])
    ours, theirs = qh.HistogramObserver(), torch_observer()
    ours(x)
    theirs(x)
    assert torch.isnan(theirs.calculate_qparams()[0]).all()
    with pytest.raises(ValueError, match="too wide"):
        ours.calculate_qparams()


def test_symmetric_reduce_range_on_quint8_is_refused():
    theirs = torch_observer(qscheme=torch.per_tensor_symmetric, reduce_range=True)
    theirs(torch.tensor([-1.0, 1.0]))
    assert theirs.calculate_qparams()[1].item() == 128 > theirs.quant_max
    with pytest.raises(ValueError, match="zero point is 128"):
        qh.HistogramObserver(qscheme=torch.per_tensor_symmetric, reduce_range=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"bins": 0}, ValueError, "bins must be a positive int"),
        ({"bins": 2048.0}, ValueError, "bins must be a positive int"),
        ({"qscheme": torch.per_channel_affine}, ValueError, "qscheme must be"),
        ({"legacy": 1}, TypeError, "legacy must be True or False"),
        ({"dtype": torch.uint16}, TypeError, "dtype must be one of"),
        ({"dtype": torch.qint32, "reduce_range": True}, ValueError, "8-bit"),
        ({"eps": -1.0}, ValueError, "eps"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        qh.HistogramObserver(**kwargs)


@pytest.mark.parametrize("x", [torch.tensor([1.0, 2.0], dtype=torch.float64), torch.tensor([1, 2]), [1.0]])
def test_non_float32_batches_raise(x):
    with pytest.raises(TypeError, match="float32"):
        qh.HistogramObserver()(x)


def test_negative_counts_are_refused():
    with pytest.raises(ValueError, match="negative counts"):
        qh.search_range(torch.tensor([1.0, -1.0, 2.0]), torch.tensor(0.0), torch.tensor(1.0))
