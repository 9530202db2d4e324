"""qlib's min/max observers against torch 2.13's, bit for bit, on random streams of batches."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples
from torch.ao.quantization import observer as tobs

import qlib.observers as qobs
from qlib.testing import assert_same_bits, assert_same_ints

KINDS = ("normal", "heavy", "positive", "negative", "constant", "zeros", "tiny", "huge")


def make_batch(kind: str, shape: tuple[int, ...], gen: torch.Generator) -> torch.Tensor:
    """A float32 batch of one kind of data: normal, heavy-tailed, one-signed, constant, signed zeros, extreme scales."""
    scale = float(torch.empty(1).uniform_(-3, 3, generator=gen).exp())
    x = torch.randn(shape, generator=gen) * scale
    if kind == "heavy":
        x = torch.empty(shape).cauchy_(generator=gen) * scale
    elif kind == "positive":
        x = x.abs() + float(torch.rand(1, generator=gen)) * scale
    elif kind == "negative":
        x = -x.abs() - float(torch.rand(1, generator=gen)) * scale
    elif kind == "constant":
        x = torch.full(shape, float(torch.randn(1, generator=gen)) * scale)
    elif kind == "zeros":
        x = torch.where(torch.rand(shape, generator=gen) < 0.5, 0.0, -0.0)
    elif kind == "tiny":
        x = x * 1e-38
    elif kind == "huge":
        x = x * 1e30
    return x.float()


@st.composite
def streams(draw, channels: bool = False):
    """(list of batches, seed) with 1-5 batches of 1-64 rows; per channel, 2-d or 3-d with a fixed channel count."""
    seed = draw(st.integers(0, 2**32 - 1))
    gen = torch.Generator().manual_seed(seed)
    n_batches = draw(st.integers(1, 5))
    if channels:
        n_channels = draw(st.integers(1, 6))
        ndim = draw(st.sampled_from([2, 3]))
        ch_axis = draw(st.integers(-ndim, ndim - 1))
    batches = []
    for _ in range(n_batches):
        kind = draw(st.sampled_from(KINDS))
        if channels:
            shape = [draw(st.integers(1, 8)) for _ in range(ndim)]
            shape[ch_axis] = n_channels
            batches.append(make_batch(kind, tuple(shape), gen))
        else:
            batches.append(make_batch(kind, (draw(st.integers(1, 64)),), gen))
    return (batches, ch_axis) if channels else batches


def accepted_settings(per_channel: bool):
    """Observer keyword arguments that both torch 2.13 and qlib accept (qlib refuses a few more, tested below)."""
    qschemes = qobs.PER_CHANNEL_QSCHEMES if per_channel else qobs.PER_TENSOR_QSCHEMES

    @st.composite
    def settings(draw):
        dtype = draw(st.sampled_from(qobs.OBSERVER_DTYPES))
        qscheme = draw(st.sampled_from(qschemes))
        eight_bit = dtype in (torch.quint8, torch.qint8, torch.uint8, torch.int8)
        kwargs = {"dtype": dtype, "qscheme": qscheme, "eps": draw(st.sampled_from([qobs.FLOAT32_EPS, 1e-3, 1e-12]))}
        lo, hi = qobs.observer_range(dtype)
        if draw(st.booleans()):
            kwargs["quant_min"] = draw(st.integers(max(lo, -(2**40)), 0))
            kwargs["quant_max"] = draw(st.integers(max(1, kwargs["quant_min"] + 1), hi))
            kwargs["reduce_range"] = draw(st.booleans()) and kwargs["quant_min"] // 2 < kwargs["quant_max"] // 2
        else:
            kwargs["reduce_range"] = eight_bit and draw(st.booleans())
        symmetric = qscheme in qobs.SYMMETRIC_QSCHEMES
        if symmetric and kwargs["reduce_range"] and dtype in (torch.quint8, torch.uint8):
            kwargs["reduce_range"] = False  # refused by torch (quint8) or unusable (uint8, default range): tested below
        if dtype == torch.qint8 and "quant_min" in kwargs and kwargs["quant_max"] - kwargs["quant_min"] + 1 > 256:
            kwargs.pop("quant_min"), kwargs.pop("quant_max")
        return kwargs

    return settings()


def torch_twin(cls_name: str, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return getattr(tobs, cls_name)(**kwargs)


def compare_qparams(ours, theirs, context=""):
    qs, qz = ours
    ts, tz = theirs
    assert_same_bits(qs, ts, f"scale {context}")
    if tz.is_floating_point():
        assert_same_bits(qz, tz, f"zero_point {context}")
    else:
        assert_same_ints(qz, tz, f"zero_point {context}")


def run_both(cls_name, kwargs, batches, extra=None):
    extra = extra or {}
    ours = getattr(qobs, cls_name)(**kwargs, **extra)
    theirs = torch_twin(cls_name, **kwargs, **extra)
    for x in batches:
        assert ours(x) is x
        theirs(x)
        assert_same_bits(ours.min_val, theirs.min_val, f"min_val {cls_name} {kwargs}")
        assert_same_bits(ours.max_val, theirs.max_val, f"max_val {cls_name} {kwargs}")
    return ours, theirs


def qparams_or_error(ours, theirs):
    """Compare qparams; where qlib refuses (scale overflows float32), torch's scale must be non-finite."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            expected = theirs.calculate_qparams()
        except AssertionError as torch_error:  # moving averages can cross: min > max by rounding
            assert "should be less than max" in str(torch_error)
            with pytest.raises(ValueError, match="must not exceed max_val"):
                ours.calculate_qparams()
            return
    if not torch.isfinite(expected[0]).all():
        with pytest.raises(ValueError, match="too wide"):
            ours.calculate_qparams()
        return
    compare_qparams(ours.calculate_qparams(), expected)


@given(batches=streams(), kwargs=accepted_settings(per_channel=False))
def test_min_max_observer_matches_torch(batches, kwargs):
    qparams_or_error(*run_both("MinMaxObserver", kwargs, batches))


@given(batches=streams(), kwargs=accepted_settings(per_channel=False), c=st.sampled_from([0.01, 0.5, 1.0, 0.3, 0.0]))
def test_moving_average_observer_matches_torch(batches, kwargs, c):
    qparams_or_error(*run_both("MovingAverageMinMaxObserver", kwargs, batches, {"averaging_constant": c}))


# torch.aminmax along a dim costs milliseconds on a loaded 2-core machine even for tiny batches
@settings(max_examples=examples(150))
@given(stream=streams(channels=True), kwargs=accepted_settings(per_channel=True))
def test_per_channel_observer_matches_torch(stream, kwargs):
    batches, ch_axis = stream
    qparams_or_error(*run_both("PerChannelMinMaxObserver", kwargs, batches, {"ch_axis": ch_axis}))


@settings(max_examples=examples(150))
@given(stream=streams(channels=True), kwargs=accepted_settings(per_channel=True), c=st.sampled_from([0.01, 0.5, 1.0]))
def test_moving_average_per_channel_observer_matches_torch(stream, kwargs, c):
    batches, ch_axis = stream
    extra = {"ch_axis": ch_axis, "averaging_constant": c}
    qparams_or_error(*run_both("MovingAveragePerChannelMinMaxObserver", kwargs, batches, extra))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16, torch.bfloat16])
def test_other_float_dtypes_are_converted_like_torch(dtype):
    x = torch.tensor([1e-50, -3.0, 2.5e-8, 7.0], dtype=torch.float64).to(dtype)
    ours, theirs = run_both("MinMaxObserver", {}, [x])
    compare_qparams(ours.calculate_qparams(), theirs.calculate_qparams())


# --- edge cases: what torch does, and what qlib does about it ---

ALL = [
    "MinMaxObserver",
    "MovingAverageMinMaxObserver",
    "PerChannelMinMaxObserver",
    "MovingAveragePerChannelMinMaxObserver",
]


@pytest.mark.parametrize("cls_name", ALL)
def test_uninitialized_observer_returns_torch_default(cls_name):
    ours, theirs = getattr(qobs, cls_name)(), torch_twin(cls_name)
    with pytest.warns(UserWarning, match="must run observer"):
        theirs_qparams = theirs.calculate_qparams()
    with pytest.warns(UserWarning, match="must run observer"):
        ours_qparams = ours.calculate_qparams()
    compare_qparams(ours_qparams, theirs_qparams)
    assert_same_bits(ours.min_val, theirs.min_val)
    assert_same_bits(ours.max_val, theirs.max_val)


@pytest.mark.parametrize("cls_name", ALL)
def test_empty_batch_changes_nothing(cls_name):
    empty = torch.zeros(3, 0)
    ours, theirs = run_both(cls_name, {}, [empty])  # state stays "uninitialized" in both
    ours, theirs = run_both(cls_name, {}, [torch.randn(3, 4), empty, torch.zeros(0, 4)])
    compare_qparams(ours.calculate_qparams(), theirs.calculate_qparams())


@pytest.mark.parametrize("cls_name", ALL)
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_or_inf_raises_where_torch_records_it(cls_name, bad):
    x = torch.tensor([[1.0, bad], [2.0, 3.0]])
    theirs = torch_twin(cls_name)
    theirs(x)
    scale, _ = theirs.calculate_qparams()
    assert not torch.isfinite(scale).all()  # torch: scale nan or inf
    ours = getattr(qobs, cls_name)()
    ours(torch.tensor([[0.5, 0.5], [0.5, 0.5]]))
    before = ours.min_val.clone(), ours.max_val.clone()
    with pytest.raises(ValueError, match="NaN and .* infinite"):
        ours(x)
    assert torch.equal(ours.min_val, before[0]) and torch.equal(ours.max_val, before[1])


def test_float64_value_beyond_float32_is_infinite():
    with pytest.raises(ValueError, match="infinite"):
        qobs.MinMaxObserver()(torch.tensor([1e300], dtype=torch.float64))


@pytest.mark.parametrize("cls_name", ALL)
@pytest.mark.parametrize("value", [0.0, -0.0, 3.5, -1e-30, 1e30])
def test_all_equal_values_match_torch(cls_name, value):
    ours, theirs = run_both(cls_name, {}, [torch.full((2, 3), value), torch.full((2, 3), value)])
    compare_qparams(ours.calculate_qparams(), theirs.calculate_qparams())


def test_range_too_wide_for_float32_scale():
    x = torch.tensor([-3e38, 3e38])
    theirs = torch_twin("MinMaxObserver")
    theirs(x)
    assert torch.isinf(theirs.calculate_qparams()[0]).all()
    ours = qobs.MinMaxObserver()
    ours(x)
    with pytest.raises(ValueError, match="too wide"):
        ours.calculate_qparams()


def test_moving_average_overflow_matches_torch_state_then_raises():
    # the second update computes -3e38 + 0.5 * (3e38 - -3e38) = -3e38 + 0.5 * inf = inf
    batches = [torch.tensor([-3e38, 3e38]), torch.tensor([3e38])]
    ours, theirs = run_both("MovingAverageMinMaxObserver", {"averaging_constant": 0.5}, batches)
    assert ours.min_val == math.inf
    with pytest.raises(AssertionError, match="should be less than max"):
        theirs.calculate_qparams()
    with pytest.raises(ValueError, match="must be finite"):
        ours.calculate_qparams()


@pytest.mark.parametrize("cls_name", ALL[2:])
def test_per_channel_needs_two_dimensions(cls_name):
    with pytest.raises(IndexError):
        torch_twin(cls_name)(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        getattr(qobs, cls_name)()(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        getattr(qobs, cls_name)(ch_axis=2)(torch.ones(2, 2))


@pytest.mark.parametrize("cls_name", ALL[2:])
def test_per_channel_channel_count_must_not_change(cls_name):
    theirs = torch_twin(cls_name)
    theirs(torch.ones(3, 2))
    theirs(torch.zeros(1, 2))  # torch broadcasts the single channel over all three
    assert theirs.min_val.shape == (3,) and (theirs.min_val < 1).all()
    ours = getattr(qobs, cls_name)()
    ours(torch.ones(3, 2))
    with pytest.raises(ValueError, match="seen 3 channels"):
        ours(torch.zeros(1, 2))


@pytest.mark.parametrize("cls_name", ["MinMaxObserver", "PerChannelMinMaxObserver"])
def test_symmetric_reduce_range_on_quint8_is_refused_like_torch(cls_name):
    qscheme = torch.per_tensor_symmetric if cls_name == "MinMaxObserver" else torch.per_channel_symmetric
    with pytest.raises(NotImplementedError):
        torch_twin(cls_name, qscheme=qscheme, reduce_range=True)
    with pytest.raises(ValueError, match="reduce_range"):
        getattr(qobs, cls_name)(qscheme=qscheme, reduce_range=True)


def test_symmetric_reduce_range_on_uint8_is_refused_where_torch_leaves_the_range():
    theirs = torch_twin("MinMaxObserver", dtype=torch.uint8, qscheme=torch.per_tensor_symmetric, reduce_range=True)
    theirs(torch.tensor([-1.0, 1.0]))
    assert theirs.calculate_qparams()[1].item() == 128 > theirs.quant_max == 127
    with pytest.raises(ValueError, match="zero point is 128"):
        qobs.MinMaxObserver(dtype=torch.uint8, qscheme=torch.per_tensor_symmetric, reduce_range=True)


@pytest.mark.parametrize("dtype", [torch.qint32, torch.int32, torch.int16, torch.quint4x2])
def test_reduce_range_on_wide_dtypes_is_refused_where_torch_ignores_it(dtype):
    theirs = torch_twin("MinMaxObserver", dtype=dtype, reduce_range=True)
    assert (theirs.quant_min, theirs.quant_max) == qobs.observer_range(dtype)  # torch: full range, flag ignored
    with pytest.raises(ValueError, match="8-bit"):
        qobs.MinMaxObserver(dtype=dtype, reduce_range=True)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"dtype": torch.float32}, TypeError, "dtype must be one of"),
        ({"dtype": torch.uint16}, TypeError, "dtype must be one of"),
        ({"dtype": torch.quint2x4}, TypeError, "dtype must be one of"),
        ({"qscheme": torch.per_channel_affine}, ValueError, "qscheme must be one of"),
        ({"reduce_range": 1}, TypeError, "reduce_range must be True or False"),
        ({"eps": 0.0}, ValueError, "eps must be a finite positive"),
        ({"eps": math.nan}, ValueError, "eps must be a finite positive"),
        ({"quant_min": 0}, ValueError, "give both quant_min and quant_max"),
        ({"quant_min": 1, "quant_max": 10}, ValueError, "quant_min <= 0 <= quant_max"),
        ({"quant_min": 0, "quant_max": 300}, ValueError, "quant_min <= 0 <= quant_max"),
        ({"quant_min": 0, "quant_max": 1, "reduce_range": True}, ValueError, "single value"),
    ],
)
def test_bad_arguments_raise(kwargs, error, match):
    with pytest.raises(error, match=match):
        qobs.MinMaxObserver(**kwargs)


@pytest.mark.parametrize("value", [-0.1, 1.5, math.nan, True, "0.1"])
def test_bad_averaging_constant(value):
    for cls in (qobs.MovingAverageMinMaxObserver, qobs.MovingAveragePerChannelMinMaxObserver):
        with pytest.raises(ValueError, match="averaging_constant"):
            cls(averaging_constant=value)


def test_bad_per_channel_arguments():
    with pytest.raises(ValueError, match="qscheme must be one of"):
        qobs.PerChannelMinMaxObserver(qscheme=torch.per_tensor_affine)
    with pytest.raises(TypeError, match="ch_axis must be an int"):
        qobs.PerChannelMinMaxObserver(ch_axis=1.0)


@pytest.mark.parametrize("x", [[1.0, 2.0], torch.tensor([1, 2]), torch.tensor([True])])
def test_non_float_batches_raise(x):
    with pytest.raises(TypeError, match="floating-point tensor"):
        qobs.MinMaxObserver()(x)


def test_moving_averages_that_cross_raise_like_torch():
    # one-value batches: with averaging_constant=1 the two averages round differently
    batches = [torch.tensor([0.2026, 0.2639, 0.5385]), torch.tensor([-0.0692698061466217])]
    ours, theirs = run_both("MovingAverageMinMaxObserver", {"averaging_constant": 1.0}, batches)
    assert ours.min_val > ours.max_val
    with pytest.raises(AssertionError, match="should be less than max"):
        theirs.calculate_qparams()
    with pytest.raises(ValueError, match="must not exceed max_val"):
        ours.calculate_qparams()


def test_moving_average_reset_and_restart_match_torch():
    ours, theirs = run_both("MovingAverageMinMaxObserver", {}, [torch.randn(10), torch.randn(10)])
    ours.reset_min_max_vals()
    theirs.reset_min_max_vals()
    x = torch.randn(7)
    ours(x)
    theirs(x)
    assert_same_bits(ours.min_val, theirs.min_val)
    compare_qparams(ours.calculate_qparams(), theirs.calculate_qparams())
