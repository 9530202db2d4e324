"""qlib.linear against torch's quantized Linear and LinearReLU on the x86 and fbgemm engines."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from conftest import COMPARED, assert_same_ints
from hypothesis import given
from hypothesis import strategies as st
from torch.ao.nn.intrinsic.quantized import LinearReLU
from torch.ao.nn.quantized import Linear

import qlib.quantized_linear as ql

ENGINES = ["x86", "fbgemm"]


def torch_linear(x, sx, zx, w, sw, zw, bias, s, z, relu, engine):
    """int_repr() of torch's quantized Linear (or LinearReLU) on the given engine."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            n, k = w.shape
            if isinstance(sw, torch.Tensor):
                qw = torch._make_per_channel_quantized_tensor(w, sw.double(), zw.long(), 0)
            else:
                qw = torch._make_per_tensor_quantized_tensor(w, sw, zw)
            module = (LinearReLU if relu else Linear)(k, n)
            module.set_weight_bias(qw, bias)
            module.scale, module.zero_point = s, z
            return module(torch._make_per_tensor_quantized_tensor(x, sx, zx)).int_repr()
    finally:
        torch.backends.quantized.engine = before


def near_tie_biases(x, sx, zx, w, sw, zw, s, per_channel, gen):
    """float32 biases that put some outputs within a few ulps of a rounding tie after scaling."""
    n, k = w.shape
    rows = x.reshape(-1, k)
    swv = sw.float() if per_channel else torch.full((n,), sw, dtype=torch.float32)
    zwv = zw.long() if per_channel else torch.full((n,), zw)
    raw = (rows.long() @ w.long().T) - zx * (w.long().sum(1) - zwv * k) - rows.long().sum(1)[:, None] * zwv
    ats = torch.tensor(sx, dtype=torch.float32) * swv
    mult = ats / torch.tensor(s, dtype=torch.float32)
    target = torch.round(raw[0].float() * mult) + 0.5  # a tie for the first row
    bias = ((target / mult - raw[0].float()) * ats).float()
    steps = torch.randint(-3, 4, (n,), generator=gen)
    for _ in range(3):
        bias = torch.where(steps > 0, torch.nextafter(bias, torch.tensor(float("inf"))), bias)
        bias = torch.where(steps < 0, torch.nextafter(bias, torch.tensor(float("-inf"))), bias)
        steps = steps - steps.sign()
    return bias


@given(
    m=st.one_of(st.just(1), st.integers(1, 48)),
    k=st.one_of(st.sampled_from([1, 2, 3, 511, 512, 513, 1030]), st.integers(1, 80)),
    n=st.integers(1, 64),
    per_channel=st.booleans(),
    symmetric=st.booleans(),
    full_range=st.booleans(),
    bias_kind=st.sampled_from(["none", "random", "near tie"]),
    relu=st.booleans(),
    engine=st.sampled_from(ENGINES),
    three_d=st.booleans(),
    seed=st.integers(0, 2**31),
)
def test_linear_matches_torch(m, k, n, per_channel, symmetric, full_range, bias_kind, relu, engine, three_d, seed):
    gen = torch.Generator().manual_seed(seed)
    shape = (2, m, k) if three_d else (m, k)
    x = torch.randint(0, 256 if full_range else 128, shape, generator=gen, dtype=torch.uint8)
    w = torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8)
    sx = float(torch.empty(1).uniform_(0.002, 0.05, generator=gen))
    zx = int(torch.randint(0, 256, (1,), generator=gen))
    if per_channel:
        sw = torch.empty(n, dtype=torch.float64).uniform_(0.0005, 0.03, generator=gen).float()
        zw = torch.zeros(n, dtype=torch.long) if symmetric else torch.randint(-30, 31, (n,), generator=gen)
    else:
        sw = float(torch.tensor(float(torch.empty(1).uniform_(0.0005, 0.03, generator=gen)), dtype=torch.float32))
        zw = 0 if symmetric else int(torch.randint(-30, 31, (1,), generator=gen))
    s = float(torch.empty(1).uniform_(0.005, 0.3, generator=gen))
    z = int(torch.randint(0, 256, (1,), generator=gen)) | 1  # odd output zero points
    if bias_kind == "none":
        bias = None
    elif bias_kind == "random":
        bias = torch.randn(n, generator=gen) * 2
    else:
        bias = near_tie_biases(x, sx, zx, w, sw, zw, s, per_channel, gen)
    expected = torch_linear(x, sx, zx, w, sw, zw, bias, s, z, relu, engine)
    ours = ql.linear(x, sx, zx, w, sw, zw, bias, s, z, relu)
    assert_same_ints(ours, expected, f"{engine} per_channel={per_channel} pairs saturate={ql.pairs_saturate_here()}")


def test_the_two_kinds_of_cpu_differ_where_pairs_saturate():
    """Full-range activations times extreme weights: the pair sum leaves int16 on one kind of CPU only."""
    x = torch.full((1, 4), 255, dtype=torch.uint8)
    w = torch.full((1, 4), -128, dtype=torch.int8)
    exact = ql.linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128, pairs_saturate=False)
    saturated = ql.linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128, pairs_saturate=True)
    # by hand: exact sum 4 * 255 * -128 = -130560; each pair saturates to -32768, two pairs -65536
    # -130560 * 0.01 * 0.01 / 20 = -0.6528 -> -1 -> 127; -65536 * 1e-4 / 20 = -0.32768 -> 0 -> 128
    assert (exact.item(), saturated.item()) == (127, 128)
    assert ql.int_matmul(x, w, True).item() == -65536 and ql.int_matmul(x, w, False).item() == -130560
    expected = torch_linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128, False, "x86")
    assert_same_ints(ql.linear(x, 0.01, 0, w, 0.01, 0, None, 20.0, 128), expected)


def test_the_other_kind_of_cpu_in_a_subprocess():
    """FBGEMM_ENABLE_INSTRUCTIONS=AVX2 makes FBGEMM run its saturating kernels on a VNNI CPU."""
    if not torch.cpu._is_vnni_supported():
        pytest.skip("this CPU has no AVX512-VNNI: FBGEMM cannot run its VNNI kernels here, only the AVX2 ones")
    script = Path(__file__).with_name("linear_avx2_check.py")
    env = {**os.environ, "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, cwd=script.parent)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert "saturating pairs: True" in run.stdout and "mismatches: 0" in run.stdout, run.stdout
    COMPARED["elements"] += int(run.stdout.split("compared: ")[1].split(";")[0])


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (
            lambda: ql.linear(torch.zeros(2, 3), 0.1, 0, torch.zeros(4, 3, dtype=torch.int8), 0.1, 0, None, 0.1, 0),
            TypeError,
            r"x must be a torch.uint8 tensor of codes \(quint8 activations\); got torch.float32",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8), 0.1, 0, torch.zeros(4, 3, dtype=torch.uint8), 0.1, 0, None, 0.1, 0
            ),
            TypeError,
            "weight must be a torch.int8 tensor of codes",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8), 0.1, 0, torch.zeros(4, 5, dtype=torch.int8), 0.1, 0, None, 0.1, 0
            ),
            ValueError,
            r"weight must have shape \[N, K\] with K = x.shape\[-1\] = 3; got \(4, 5\)",
        ),
        (
            lambda: ql.linear(
                torch.zeros(3, dtype=torch.uint8), 0.1, 0, torch.zeros(4, 3, dtype=torch.int8), 0.1, 0, None, 0.1, 0
            ),
            ValueError,
            "x must have at least 2 dimensions",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                torch.ones(3),
                torch.zeros(3, dtype=torch.long),
                None,
                0.1,
                0,
            ),
            ValueError,
            r"weight_scale must have one value per channel: shape \(4,\)",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                float("nan"),
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                0.1,
                0,
            ),
            ValueError,
            "x_scale must be a finite positive number",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                300,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                0.1,
                0,
            ),
            ValueError,
            r"x_zero_point must lie in \[0, 255\]",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                torch.zeros(3),
                0.1,
                0,
            ),
            ValueError,
            r"bias must have shape \(4,\)",
        ),
        (
            lambda: ql.linear(
                torch.zeros(2, 3, dtype=torch.uint8),
                0.1,
                0,
                torch.zeros(4, 3, dtype=torch.int8),
                0.1,
                0,
                None,
                float("inf"),
                0,
            ),
            ValueError,
            "scale must be a finite positive number",
        ),
    ],
)
def test_bad_input(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()
