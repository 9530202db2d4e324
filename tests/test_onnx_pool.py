"""qlib.onnx_pool against real ONNX Runtime (onnxruntime 1.32.0, CPU provider): QLinearAveragePool and
QLinearGlobalAveragePool."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")

from inputs import examples  # noqa: E402
from onnx_graphs import run  # noqa: E402

from qlib.numerics import float32  # noqa: E402
from qlib.onnx_pool import qlinear_average_pool, qlinear_global_average_pool  # noqa: E402
from qlib.ranges import DTYPE_RANGES  # noqa: E402
from qlib.testing import assert_same_ints  # noqa: E402

NP = {torch.uint8: np.uint8, torch.int8: np.int8}
NAME = {torch.uint8: "uint8", torch.int8: "int8"}


def codes(gen, dtype, shape):
    lo, hi = DTYPE_RANGES[dtype]
    return torch.randint(lo, hi + 1, shape, generator=gen).to(dtype)


def qparams(gen, dtype, ratio):
    """x and y scales (y's ``ratio`` times x's: 1 and 0.5 make ties) and odd or random zero points."""
    sx = float32(float(torch.rand((), generator=gen)) * 0.1 + 1e-3)
    return sx, int(codes(gen, dtype, ())), float32(sx * ratio), int(codes(gen, dtype, ()))


@settings(max_examples=examples(150), deadline=None)
@given(
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    rank=st.sampled_from([1, 2, 2]),
    kernel=st.integers(1, 3),
    stride=st.integers(1, 3),
    pad=st.integers(0, 1),
    count_include_pad=st.booleans(),
    ceil_mode=st.booleans(),
    ratio=st.sampled_from([1.0, 0.5, 0.25, 1 / 3, 0.7, 3.0, 1e-9]),
    seed=st.integers(0, 2**31 - 1),
)
def test_qlinear_average_pool(dtype, rank, kernel, stride, pad, count_include_pad, ceil_mode, ratio, seed):
    gen = torch.Generator().manual_seed(seed)
    pad = min(pad, kernel // 2)
    spatial = (5, 6)[:rank] if rank == 2 else (7,)
    x = codes(gen, dtype, (2, 3, *spatial))
    sx, zx, sy, zy = qparams(gen, dtype, ratio)
    attrs = {
        "kernel_shape": [kernel] * rank, "strides": [stride] * rank, "pads": [pad] * (2 * rank),
        "count_include_pad": int(count_include_pad), "ceil_mode": int(ceil_mode),
    }  # fmt: skip
    inputs = [("x", x.numpy()), ("sx", np.float32(sx)), ("zx", NP[dtype](zx)), ("sy", np.float32(sy))]
    inputs += [("zy", NP[dtype](zy))]
    theirs = run("QLinearAveragePool", inputs, NAME[dtype], attrs, domain="com.microsoft")
    ours = qlinear_average_pool(
        x, sx, zx, sy, zy, attrs["kernel_shape"], strides=attrs["strides"], pads=attrs["pads"],
        count_include_pad=count_include_pad, ceil_mode=ceil_mode,
    )  # fmt: skip
    assert_same_ints(ours, torch.from_numpy(theirs), f"{attrs} sx={sx} sy={sy} zx={zx} zy={zy}")


@settings(max_examples=examples(100), deadline=None)
@given(
    dtype=st.sampled_from([torch.uint8, torch.int8]),
    spatial=st.sampled_from([(1, 1), (2, 2), (3, 5), (7, 7), (16, 16)]),
    ratio=st.sampled_from([1.0, 0.5, 1 / 3, 0.7, 3.0, 1.0 / 49]),
    through_average_pool=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_qlinear_global_average_pool(dtype, spatial, ratio, through_average_pool, seed):
    """Both ops, and QLinearAveragePool with a whole-input kernel, which takes the same integer path."""
    gen = torch.Generator().manual_seed(seed)
    x = codes(gen, dtype, (2, 5, *spatial))
    sx, zx, sy, zy = qparams(gen, dtype, ratio)
    inputs = [("x", x.numpy()), ("sx", np.float32(sx)), ("zx", NP[dtype](zx)), ("sy", np.float32(sy))]
    inputs += [("zy", NP[dtype](zy))]
    if through_average_pool:
        attrs = {"kernel_shape": list(spatial)}
        theirs = run("QLinearAveragePool", inputs, NAME[dtype], attrs, domain="com.microsoft")
        ours = qlinear_average_pool(x, sx, zx, sy, zy, list(spatial))
    else:
        theirs = run("QLinearGlobalAveragePool", inputs, NAME[dtype], domain="com.microsoft")
        ours = qlinear_global_average_pool(x, sx, zx, sy, zy)
    assert_same_ints(ours, torch.from_numpy(theirs), f"sx={sx} sy={sy} zx={zx} zy={zy}")
