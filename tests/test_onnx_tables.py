"""qlib.onnx_tables against real ONNX Runtime (onnxruntime 1.32.0, CPU provider): QLinearConcat."""

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
from qlib.onnx_tables import qlinear_concat  # noqa: E402
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
