"""qlib.choose_qparams and qlib.qrange against torch.ao.quantization's observers."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import assume, given
from hypothesis import strategies as st
from torch.ao.quantization.observer import MinMaxObserver, PerChannelMinMaxObserver

import qlib
from qlib.testing import COMPARED

OBSERVER_DTYPES = [
    torch.quint8,
    torch.qint8,
    torch.qint32,
    torch.quint4x2,
    torch.uint8,
    torch.int8,
    torch.int16,
    torch.int32,
]
EIGHT_BIT = [torch.quint8, torch.qint8, torch.uint8, torch.int8]

finite32 = st.floats(width=32, allow_nan=False, allow_infinity=False)
ends = st.one_of(
    finite32,
    st.floats(-2.0, 2.0, width=32),
    st.floats(-1e-6, 1e-6).map(lambda v: torch.tensor(v).item()),
    st.sampled_from([0.0, -0.0, 1e-38, -1e-38, 1.57104063, -0.71688455]),
)


def torch_qparams(observer_cls, min_val, max_val, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = observer_cls(**kwargs)
    obs.min_val = min_val
    obs.max_val = max_val
    return obs.calculate_qparams()


def settings_for(data, dtype):
    symmetric = data.draw(st.booleans())
    reduce_range = dtype in EIGHT_BIT and data.draw(st.booleans())
    if symmetric and reduce_range and dtype == torch.quint8:
        reduce_range = False  # torch's MinMaxObserver refuses this combination
    custom = data.draw(st.booleans())
    qmin, qmax = qlib.qrange(dtype)
    if custom:
        quant_min = data.draw(st.integers(qmin, 0))
        quant_max = data.draw(st.integers(max(quant_min + 1, 0), qmax).filter(lambda v: v > quant_min))
        assume(not reduce_range or quant_min // 2 < quant_max // 2)  # else qlib refuses, see test_errors
        return symmetric, reduce_range, quant_min, quant_max
    return symmetric, reduce_range, None, None


@given(dtype=st.sampled_from(OBSERVER_DTYPES), a=ends, b=ends, data=st.data())
def test_per_tensor_matches_min_max_observer(dtype, a, b, data):
    lo, hi = min(a, b), max(a, b)
    symmetric, reduce_range, quant_min, quant_max = settings_for(data, dtype)
    qscheme = torch.per_tensor_symmetric if symmetric else torch.per_tensor_affine
    kwargs = dict(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min, quant_max=quant_max)
    t_scale, t_zp = torch_qparams(MinMaxObserver, torch.tensor(lo), torch.tensor(hi), **kwargs)
    if not torch.isfinite(t_scale).all():  # torch overflows to an unusable scale; qlib refuses
        with pytest.raises(ValueError, match="scale overflows float32"):
            qlib.choose_qparams(lo, hi, dtype, symmetric, reduce_range, quant_min, quant_max)
        return
    scale, zp = qlib.choose_qparams(lo, hi, dtype, symmetric, reduce_range, quant_min, quant_max)
    COMPARED["elements"] += 2
    assert scale.dtype == torch.float32 and zp.dtype == torch.int64
    assert scale.view(torch.int32).item() == t_scale.view(torch.int32).item(), (scale.item(), t_scale.item())
    assert zp.item() == t_zp.item()


@given(dtype=st.sampled_from(OBSERVER_DTYPES), data=st.data(), channels=st.integers(1, 8))
def test_per_channel_matches_per_channel_observer(dtype, data, channels):
    pairs = [sorted(data.draw(st.tuples(ends, ends))) for _ in range(channels)]
    lo = torch.tensor([p[0] for p in pairs])
    hi = torch.tensor([p[1] for p in pairs])
    symmetric, reduce_range, quant_min, quant_max = settings_for(data, dtype)
    qscheme = torch.per_channel_symmetric if symmetric else torch.per_channel_affine
    kwargs = dict(dtype=dtype, qscheme=qscheme, reduce_range=reduce_range, quant_min=quant_min, quant_max=quant_max)
    t_scale, t_zp = torch_qparams(PerChannelMinMaxObserver, lo, hi, **kwargs)
    if not torch.isfinite(t_scale).all():  # torch overflows to an unusable scale; qlib refuses
        with pytest.raises(ValueError, match="scale overflows float32"):
            qlib.choose_qparams(lo, hi, dtype, symmetric, reduce_range, quant_min, quant_max)
        return
    scale, zp = qlib.choose_qparams(lo, hi, dtype, symmetric, reduce_range, quant_min, quant_max)
    COMPARED["elements"] += 2 * channels
    assert torch.equal(scale.view(torch.int32), t_scale.view(torch.int32)), (scale, t_scale)
    assert torch.equal(zp, t_zp.long())


def test_eps_floor_and_custom_eps():
    for eps in [torch.finfo(torch.float32).eps, 1e-3]:
        t_scale, t_zp = torch_qparams(MinMaxObserver, torch.tensor(0.0), torch.tensor(0.0), eps=eps)
        scale, zp = qlib.choose_qparams(0.0, 0.0, eps=eps)
        assert scale.item() == t_scale.item() and zp.item() == t_zp.item()


def test_symmetric_divides_by_127_5_and_centres_quint8_at_128():
    scale, zp = qlib.choose_qparams(-1.0, 2.0, torch.quint8, symmetric=True)
    assert scale.item() == torch.tensor(2.0 / 127.5, dtype=torch.float32).item()
    assert zp.item() == 128


@pytest.mark.parametrize(
    "dtype, reduce_range",
    [(d, False) for d in OBSERVER_DTYPES] + [(d, True) for d in EIGHT_BIT],
)
def test_qrange_matches_observer_range(dtype, reduce_range):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        obs = MinMaxObserver(dtype=dtype, reduce_range=reduce_range)
    assert qlib.qrange(dtype, reduce_range) == (obs.quant_min, obs.quant_max)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.int8, torch.int16, torch.int32])
def test_qrange_of_plain_dtypes_is_iinfo(dtype):
    info = torch.iinfo(dtype)
    assert qlib.qrange(dtype) == (info.min, info.max)


def test_qrange_of_sub_byte_dtypes_matches_what_torch_stores():
    x = torch.tensor([-1e9, 1e9])
    assert qlib.quantize(x, 1.0, 0, torch.quint4x2).tolist() == list(qlib.qrange(torch.quint4x2))
    assert qlib.qrange(torch.quint2x4) == (0, 3)
    packed = torch.quantize_per_tensor(torch.tensor([-1e9, 1e9, 1e9, 1e9]), 1.0, 0, torch.quint2x4).int_repr()
    assert packed.item() == 0b11111100  # codes 0, 3, 3, 3, two bits each, lowest first


def test_int32_zero_point_overflow_is_reproduced_and_warned():
    t_scale, t_zp = torch_qparams(MinMaxObserver, torch.tensor(-257.0), torch.tensor(0.0), dtype=torch.qint32)
    with pytest.warns(RuntimeWarning, match="exact zero point .* is 8388608"):
        scale, zp = qlib.choose_qparams(-257.0, 0.0, torch.qint32)
    assert (scale.item(), zp.item()) == (t_scale.item(), t_zp.item())
