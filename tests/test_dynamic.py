"""qlib.choose_qparams_dynamic and qlib.linear_dynamic against torch's dynamic quantization."""

from __future__ import annotations

import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import qlib.dynamic as qd
from qlib.testing import COMPARED, assert_same_bits
from qlib.testing import torch_linear_dynamic as torch_dynamic

# torch's integers here depend on the CPU kind: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = pytest.mark.cpu_kind

ends = st.one_of(
    st.floats(-10.0, 10.0, width=32),
    st.floats(-1e-4, 1e-4).map(lambda v: torch.tensor(v).item()),
    st.sampled_from([0.0, -0.0, 1e-30, -1e-30, 3e38, -3e38, 6.1e-5, 1.0, -1.0]),
)


@given(a=ends, b=ends, reduce_range=st.booleans())
def test_choose_qparams_dynamic_matches_torch(a, b, reduce_range):
    lo, hi = min(a, b), max(a, b)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = torch.quantize_per_tensor_dynamic(torch.tensor([lo, hi]), torch.quint8, reduce_range)
    assert qd.choose_qparams_dynamic(lo, hi, reduce_range) == (q.q_scale(), q.q_zero_point()), (lo, hi)
    COMPARED["elements"] += 2


@given(
    m=st.integers(1, 32),
    k=st.one_of(st.sampled_from([1, 2, 3, 513]), st.integers(1, 96)),
    n=st.integers(1, 64),
    per_channel=st.booleans(),
    has_bias=st.booleans(),
    reduce_range=st.booleans(),
    relu=st.booleans(),
    kind=st.sampled_from(["normal", "positive", "negative", "constant", "tiny", "near ties"]),
    three_d=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_linear_dynamic_matches_torch(m, k, n, per_channel, has_bias, reduce_range, relu, kind, three_d, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (2, m, k) if three_d else (m, k)
    x = torch.randn(shape, generator=gen) * float(torch.empty(1).uniform_(0.1, 4, generator=gen))
    if kind == "positive":
        x = x.abs()
    elif kind == "negative":
        x = -x.abs()
    elif kind == "constant":
        x = torch.full(shape, float(x.flatten()[0]))
    elif kind == "tiny":
        x = x * 1e-5
    elif kind == "near ties":  # values on ties of the scale the call will choose
        scale, _ = qd.choose_qparams_dynamic(float(x.min()), float(x.max()), reduce_range)
        x = ((torch.round(x / scale) + 0.5) * torch.tensor(scale, dtype=torch.float32)).clamp(x.min(), x.max())
    w = torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8)
    if per_channel:
        sw = torch.empty(n).uniform_(0.0005, 0.03, generator=gen)
        zw = torch.zeros(n, dtype=torch.long)
    else:
        sw = float(torch.tensor(float(torch.empty(1).uniform_(0.0005, 0.03, generator=gen)), dtype=torch.float32))
        zw = 0
    bias = torch.randn(n, generator=gen) if has_bias else None
    expected = torch_dynamic(x, w, sw, zw, bias, reduce_range, relu)
    ours = qd.linear_dynamic(x, w, sw, zw, bias, reduce_range, relu)
    assert_same_bits(ours, expected, f"{kind} reduce_range={reduce_range}")


def test_a_rows_output_depends_on_the_rest_of_the_batch():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(8, 32, generator=gen)
    x[5] *= 20  # one loud row widens the range of the whole call
    w = torch.randint(-128, 128, (4, 32), generator=gen).to(torch.int8)
    alone = qd.linear_dynamic(x[:1], w, 0.01, 0, None)
    in_batch = qd.linear_dynamic(x, w, 0.01, 0, None)[:1]
    assert not torch.equal(alone, in_batch)
    assert_same_bits(alone, torch_dynamic(x[:1], w, 0.01, 0, None, True, False))
    assert_same_bits(in_batch, torch_dynamic(x, w, 0.01, 0, None, True, False)[:1])


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: qd.choose_qparams_dynamic(1.0, -1.0), ValueError, r"min_val must not exceed max_val"),
        (lambda: qd.choose_qparams_dynamic(float("nan"), 1.0), ValueError, "min_val must be a finite number"),
        (
            lambda: qd.linear_dynamic(
                torch.tensor([[float("inf"), 1.0]]), torch.zeros(2, 2, dtype=torch.int8), 0.1, 0, None
            ),
            ValueError,
            "x must be finite",
        ),
        (
            lambda: qd.linear_dynamic(torch.zeros(2, 3), torch.zeros(2, 2, dtype=torch.int8), 0.1, 0, None),
            ValueError,
            r"weight must have shape \[N, K\]",
        ),
        (
            lambda: qd.linear_dynamic(torch.zeros(2, 2), torch.zeros(2, 2), 0.1, 0, None),
            TypeError,
            "weight must be a torch.int8",
        ),
    ],
)
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
