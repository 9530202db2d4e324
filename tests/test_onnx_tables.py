"""qlib.onnx_tables against real ONNX Runtime (onnxruntime 1.32.0, CPU provider): QLinearConcat, QLinearSigmoid."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from inputs import examples  # noqa: E402
from onnx_graphs import const, run  # noqa: E402

from qlib.numerics import float32  # noqa: E402
from qlib.onnx_tables import qlinear_concat, qlinear_sigmoid  # noqa: E402
from qlib.ranges import DTYPE_RANGES  # noqa: E402
from qlib.testing import assert_same_ints  # noqa: E402

NP = {torch.uint8: np.uint8, torch.int8: np.int8}


@settings(max_examples=examples(150), deadline=None)
@given(
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    count=st.integers(1, 3),
    axis=st.integers(-3, 2),
    kinds=st.lists(st.sampled_from(["same", "ulp", "half", "third", "random", "tiny"]), min_size=3, max_size=3),
    constant=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_qlinear_concat(dtype, count, axis, kinds, constant, seed):
    """Inputs with the output's parameters (copied), one ulp of scale away, exact halves (ties), and random."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = DTYPE_RANGES[dtype]
    sy, zy = float32(float(torch.rand((), generator=gen)) * 0.1 + 1e-3), int(torch.randint(lo, hi + 1, ()))
    wrap = const if constant else (lambda a: a)
    parts, inputs = [], [("sy", wrap(np.float32(sy))), ("zy", wrap(NP[dtype](zy)))]
    for i in range(count):
        shape = [2, 3, 4]
        shape[axis % 3] = 1 + i
        codes = torch.randint(lo, hi + 1, shape, generator=gen).to(dtype)
        zx = zy if kinds[i] in ("same", "ulp") else int(torch.randint(lo, hi + 1, (), generator=gen))
        sx = {
            "same": sy, "ulp": float(np.nextafter(np.float32(sy), np.float32(1))), "half": sy / 2, "third": sy / 3,
            "random": float(torch.rand((), generator=gen)) * 0.2 + 1e-3, "tiny": sy * 1e-6,
        }[kinds[i]]  # fmt: skip
        parts.append((codes, float32(sx), zx))
        inputs += [(f"x{i}", codes.numpy()), (f"s{i}", wrap(np.float32(sx))), (f"z{i}", wrap(NP[dtype](zx)))]
    theirs = run("QLinearConcat", inputs, "uint8" if dtype == torch.uint8 else "int8", {"axis": axis}, "com.microsoft")
    assert_same_ints(qlinear_concat(parts, sy, zy, axis), torch.from_numpy(theirs), f"{kinds[:count]} sy={sy} zy={zy}")


@settings(max_examples=examples(150), deadline=None)
@given(
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    x_scale=st.sampled_from([1e-4, 0.01, 0.05, 0.1, 0.3, 1.0, 7.0]),
    y_scale=st.sampled_from([1 / 256, 1 / 255, 0.001, 0.0039, 0.02, 1e-6]),
    seed=st.integers(0, 2**31 - 1),
)
def test_qlinear_sigmoid(dtype, x_scale, y_scale, seed):
    """Every code, for inputs from well inside to far past the logistic's clamp at 18, and outputs on and off
    1/256 (where ties and the top code fall)."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = DTYPE_RANGES[dtype]
    x = torch.arange(lo, hi + 1).to(dtype)
    sx = float32(x_scale * float(torch.rand((), generator=gen) * 0.5 + 0.75))
    zx, zy = (int(torch.randint(lo, hi + 1, (), generator=gen)) for _ in range(2))
    if dtype == torch.uint8 and seed % 2:
        zy = 0  # sigmoid's range starts at 0: quantize_static's usual choice
    inputs = [("x", x.numpy()), ("sx", np.float32(sx)), ("zx", NP[dtype](zx)), ("sy", np.float32(y_scale))]
    inputs += [("zy", NP[dtype](zy))]
    theirs = run("QLinearSigmoid", inputs, "uint8" if dtype == torch.uint8 else "int8", domain="com.microsoft")
    assert_same_ints(qlinear_sigmoid(x, sx, zx, y_scale, zy), torch.from_numpy(theirs), f"sx={sx} zx={zx} zy={zy}")


def test_qlinear_sigmoid_is_mlas_polynomial():
    """Scales (found by a search) where the logistic without fused multiply-adds, or the exact sigmoid, would
    give other codes than MLAS's polynomial with them: ORT's codes are the polynomial's."""
    from qlib.onnx_qdq import dequantize_linear, quantize_linear
    from qlib.onnx_tables import LOGISTIC_ALPHA, LOGISTIC_BETA, mlas_logistic

    def unfused(v):
        v = v.clamp(-18.0, 18.0)
        v2 = v * v
        p, q = v2 * float32(LOGISTIC_ALPHA[0]) + float32(LOGISTIC_ALPHA[1]), v2 * float32(LOGISTIC_BETA[0])
        q = q + float32(LOGISTIC_BETA[1])
        for alpha in LOGISTIC_ALPHA[2:]:
            p = p * v2 + float32(alpha)
        for beta in LOGISTIC_BETA[2:]:
            q = q * v2 + float32(beta)
        return torch.clamp_min((v * p) / q + 0.5, 0.0)

    alternatives = {"unfused": unfused, "exact": lambda v: torch.sigmoid(v.double()).float()}
    x = torch.arange(0, 256).to(torch.uint8)
    rng = np.random.default_rng(0)
    differ = dict.fromkeys(alternatives, 0)
    while min(differ.values()) == 0:
        sx, zx = float32(rng.uniform(0.005, 0.3)), int(rng.integers(0, 256))
        sy = float32(rng.choice([1 / 256, 1 / 255, 0.0039, 0.001]))
        values = dequantize_linear(x, sx, zx)
        ours = quantize_linear(mlas_logistic(values), sy, 0)
        others = {name: quantize_linear(f(values), sy, 0) for name, f in alternatives.items()}
        if all(torch.equal(ours, other) for other in others.values()):
            continue
        inputs = [("x", x.numpy()), ("sx", np.float32(sx)), ("zx", np.uint8(zx)), ("sy", np.float32(sy))]
        theirs = torch.from_numpy(
            run("QLinearSigmoid", inputs + [("zy", np.uint8(0))], "uint8", domain="com.microsoft")
        )
        assert_same_ints(qlinear_sigmoid(x, sx, zx, sy, 0), theirs, f"sx={sx} zx={zx} sy={sy}")
        for name, other in others.items():
            differ[name] += int((other != theirs).sum())
