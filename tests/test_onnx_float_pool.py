"""qlib.onnx_float_pool.average_pool against ONNX Runtime 1.32.0's float AveragePool (CPU provider), bit for bit.

Inputs mix magnitudes from 2^-14 to 2^14 so that float32 sums in different orders differ; windows with and
without padding, asymmetric pads, strides from 1 to 3, both count_include_pad settings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from inputs import examples  # noqa: E402

from qlib.onnx_float_pool import average_pool  # noqa: E402
from qlib.testing import assert_same_bits  # noqa: E402


def average_pool_model(shape, kernel, strides, pads, count_include_pad):
    helper = onnx.helper
    node = helper.make_node(
        "AveragePool", ["x"], ["y"], kernel_shape=kernel, strides=strides, pads=pads,
        count_include_pad=int(count_include_pad),
    )  # fmt: skip
    graph = helper.make_graph(
        [node], "pool", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=10)


@settings(max_examples=examples(300), deadline=None)
@given(
    size=st.tuples(st.integers(1, 9), st.integers(1, 9)),
    kernel=st.tuples(st.integers(1, 4), st.integers(1, 4)),
    strides=st.tuples(st.integers(1, 3), st.integers(1, 3)),
    pads=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    count_include_pad=st.booleans(),
    special=st.sampled_from([False, False, False, True]),
    seed=st.integers(0, 2**31 - 1),
)
def test_average_pool_matches_ort(size, kernel, strides, pads, count_include_pad, special, seed):
    assume(all(p < k for p, k in zip(pads, kernel * 2, strict=True)))  # ONNX: a pad smaller than the kernel
    assume(size[0] + pads[0] + pads[2] >= kernel[0] and size[1] + pads[1] + pads[3] >= kernel[1])
    rng = np.random.default_rng(seed)
    shape = [2, 3, *size]
    x = (rng.standard_normal(shape) * 2.0 ** rng.integers(-14, 15, shape)).astype(np.float32)
    if special:
        flat = x.reshape(-1)
        picks = rng.integers(0, flat.size, max(1, flat.size // 8))
        flat[picks] = rng.choice(np.array([np.inf, -np.inf, 3.4e38, -3.4e38, -0.0], np.float32), picks.size)
    model = average_pool_model(shape, list(kernel), list(strides), list(pads), count_include_pad)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1 + seed % 2
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    theirs = torch.from_numpy(session.run(None, {"x": x})[0])
    ours = average_pool(torch.from_numpy(x), list(kernel), list(strides), list(pads), count_include_pad)
    assert torch.equal(ours.isnan(), theirs.isnan())  # inf - inf: NaN, its sign not modelled
    nan = torch.tensor(float("nan"))
    ours, theirs = torch.where(ours.isnan(), nan, ours), torch.where(theirs.isnan(), nan, theirs)
    assert_same_bits(ours, theirs, f"AveragePool {shape} kernel {kernel} strides {strides} pads {pads}")


def test_bad_arguments():
    with pytest.raises(TypeError, match="float32"):
        average_pool(torch.zeros(1, 1, 4, 4, dtype=torch.float64), [2, 2])
    with pytest.raises(ValueError, match="2-d kernel"):
        average_pool(torch.zeros(1, 1, 4, 4), [2])
    with pytest.raises(ValueError, match="larger than the padded input"):
        average_pool(torch.zeros(1, 1, 4, 4), [5, 5])
