"""qlib.onnx_reduce.reduce_mean against ONNX Runtime 1.32.0's float ReduceMean (CPU provider), bit for bit.

Each input row mixes values of very different magnitudes (so that float32 sums in different orders differ) and
is fed from a buffer placed 0, 4, 8 or 12 bytes past a 16-byte boundary: ORT runs a graph input from the NumPy
array it is given, and Eigen's packets start at the row's first aligned element.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from inputs import examples  # noqa: E402

from qlib.onnx_reduce import reduce_mean  # noqa: E402
from qlib.testing import assert_same_bits  # noqa: E402


def reduce_mean_model(shape: list[int], axes: list[int], keepdims: bool):
    helper = onnx.helper
    node = helper.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=int(keepdims))
    graph = helper.make_graph(
        [node], "mean", [helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        [helper.make_tensor("axes", onnx.TensorProto.INT64, [len(axes)], axes)],
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)], ir_version=10)


def placed(values: np.ndarray, misalignment: int) -> np.ndarray:
    """``values`` copied into a buffer whose first element lies ``misalignment`` bytes past a 16-byte boundary."""
    buffer = np.empty(values.size + 8, np.float32)
    first = (-(buffer.ctypes.data // 4)) % 4 + misalignment // 4
    out = buffer[first : first + values.size].reshape(values.shape)
    out[...] = values
    assert out.ctypes.data % 16 == misalignment
    return out


def nasty(rng: np.random.Generator, shape: list[int], special: bool) -> np.ndarray:
    """Normal values scaled by 2^-14 .. 2^14, so that their float32 sums depend on the order; NaN, infinities and
    float32's largest values (whose sums overflow) where ``special``."""
    x = (rng.standard_normal(shape) * 2.0 ** rng.integers(-14, 15, shape)).astype(np.float32)
    if special:
        flat = x.reshape(-1)
        picks = rng.integers(0, flat.size, max(1, flat.size // 16))
        flat[picks] = rng.choice(np.array([np.nan, np.inf, -np.inf, 3.4e38, -3.4e38], np.float32), picks.size)
    return x


@settings(max_examples=examples(300), deadline=None)
@given(
    kept=st.lists(st.integers(1, 6), min_size=0, max_size=2),
    reduced=st.lists(st.sampled_from([1, 2, 3, 4, 5, 7, 8, 9, 14, 16, 17]), min_size=1, max_size=2),
    keepdims=st.booleans(),
    misalignment=st.sampled_from([0, 4, 8, 12]),
    special=st.sampled_from([False, False, False, True]),
    seed=st.integers(0, 2**31 - 1),
)
def test_reduce_mean_matches_ort(kept, reduced, keepdims, misalignment, special, seed):
    """Trailing axes, with and without keepdims, rows of 1 to 289 elements from every alignment."""
    shape = kept + reduced
    axes = list(range(len(kept), len(shape)))
    if seed % 2:
        axes = [a - len(shape) for a in axes]  # negative axes
    x = placed(nasty(np.random.default_rng(seed), shape, special), misalignment)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1 + seed % 2  # the rows' split over threads changes nothing
    session = ort.InferenceSession(
        reduce_mean_model(shape, axes, keepdims).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    theirs = torch.from_numpy(session.run(None, {"x": x})[0])
    ours = reduce_mean(torch.from_numpy(x.copy()), axes, keepdims, misalignment=misalignment)
    assert ours.shape == theirs.shape
    # where the sum is NaN, its sign and payload follow the compiler's choice of operand order: not modelled
    assert torch.equal(ours.isnan(), theirs.isnan())
    nan = torch.tensor(float("nan"))
    ours, theirs = torch.where(ours.isnan(), nan, ours), torch.where(theirs.isnan(), nan, theirs)
    assert_same_bits(ours, theirs, f"ReduceMean {shape} over {axes}, {misalignment} bytes past a boundary")


def test_other_orders_differ():
    """The order found is the only one of its neighbours that matches: a sum from element 0 regardless of the
    address, and a sum left to right, each differ from ORT on these rows."""
    rng = np.random.default_rng(0)
    shape, axes = [64, 1, 14, 14], [2, 3]
    x = placed(nasty(rng, shape, False), 4)
    session = ort.InferenceSession(
        reduce_mean_model(shape, axes, True).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    theirs = torch.from_numpy(session.run(None, {"x": x})[0])
    t = torch.from_numpy(x.copy())
    assert_same_bits(reduce_mean(t, axes, misalignment=4), theirs)
    assert not torch.equal(reduce_mean(t, axes, misalignment=0), theirs)
    left_to_right = t.reshape(64, -1)[:, 0]
    for i in range(1, 196):
        left_to_right = left_to_right + t.reshape(64, -1)[:, i]
    assert not torch.equal((left_to_right.double() / 196).float().reshape(theirs.shape), theirs)


def test_bad_arguments():
    x = torch.zeros(2, 3, 4, 4)
    with pytest.raises(ValueError, match="last axes"):
        reduce_mean(x, [1, 2])
    with pytest.raises(ValueError, match="last axes"):
        reduce_mean(x, [4])
    with pytest.raises(ValueError, match="16-byte boundary"):
        reduce_mean(x, [3], misalignment=2)
    with pytest.raises(TypeError, match="float32"):
        reduce_mean(x.double(), [3])
    with pytest.raises(ValueError, match="non-empty"):
        reduce_mean(torch.zeros(2, 0), [1])
