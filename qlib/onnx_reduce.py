"""ONNX Runtime's float32 ``ReduceMean`` over trailing axes, addition by addition.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``), where the pool of a
PT2E model (``nn.AdaptiveAvgPool2d(1)``, exported as ``ReduceMean`` over the last two axes) stays in
float after ORT's fusions.

ORT's CPU provider reduces trailing axes row by row (``FastReduceKR``): each row of the input seen as
``[kept, reduced]`` is summed by Eigen's ``sum()`` and then divided by the row's length, a true
division (``ReduceAggregatorMean`` in
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/providers/cpu/reduction/reduction_ops.h).
Eigen's vectorized sum (``redux_impl`` for ``LinearVectorizedTraversal`` in
https://gitlab.com/libeigen/eigen/-/blob/3.4.0/Eigen/src/Core/Redux.h) runs in ORT's x86-64 wheel
on SSE packets of 4 floats, on every CPU (measured: the same sums on an AVX-512 CPU and under
``qemu-x86_64 -cpu Haswell``; packets of 8 or 16 do not match). It starts at the row's first
element on a 16-byte boundary, keeps two packets, adds the row's packets to them alternately, adds
the two, and one packet more if one is left; it reduces the 4 lanes as ``(l0 + l2) + (l1 + l3)``
(``predux<Packet4f>`` in
https://gitlab.com/libeigen/eigen/-/blob/3.4.0/Eigen/src/Core/arch/SSE/PacketMath.h), then adds
the elements before the boundary, then those after the last whole packet, one by one. A row too
short for one packet is summed left to right. Measured against onnxruntime 1.32.0 in
``tests/test_onnx_reduce.py``; rows are summed on different threads but each by one, so the thread
count changes nothing.

Where a row starts depends on memory: ORT's own buffers (a node's output) start on a 16-byte
boundary, but a graph input runs from the caller's buffer (a NumPy array is not copied), which
``misalignment`` describes.
"""

from __future__ import annotations

import torch


def _lanes_sum(lanes: torch.Tensor) -> torch.Tensor:
    """SSE's horizontal sum of ``[rows, 4]`` lanes: ``(l0 + l2) + (l1 + l3)``."""
    return (lanes[:, 0] + lanes[:, 2]) + (lanes[:, 1] + lanes[:, 3])


def _eigen_sum(rows: torch.Tensor, start: int) -> torch.Tensor:
    """Eigen's float32 ``sum()`` of each row of ``rows`` ``[R, n]``, its packets from element ``start`` on."""
    n = rows.shape[1]
    start = min(start, n)
    whole = (n - start) // 4 * 4
    pairs = (n - start) // 8 * 8
    if whole == 0:
        total = rows[:, 0]
        for i in range(1, n):
            total = total + rows[:, i]
        return total
    first = rows[:, start : start + 4]
    if whole > 4:
        second = rows[:, start + 4 : start + 8]
        for i in range(start + 8, start + pairs, 8):
            first, second = first + rows[:, i : i + 4], second + rows[:, i + 4 : i + 8]
        first = first + second
        if whole > pairs:
            first = first + rows[:, start + pairs : start + pairs + 4]
    total = _lanes_sum(first)
    for i in [*range(start), *range(start + whole, n)]:
        total = total + rows[:, i]
    return total


def reduce_mean(x: torch.Tensor, axes: list[int], keepdims: bool = True, *, misalignment: int = 0) -> torch.Tensor:
    """ORT's float32 ``ReduceMean`` of ``x`` over ``axes``, the last axes of ``x`` (a pool's ``(2, 3)``, say).

    ``misalignment``: how many bytes past a 16-byte boundary ``x``'s first
    element lies (0, 4, 8 or 12): 0 for a node's output; for a graph input,
    its buffer's address modulo 16. The module docstring gives the order of
    additions.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> x = torch.tensor([[1.0, 1e8, 1.0, -1e8, 1.0]])
    >>> reduce_mean(x, [1]), reduce_mean(x, [1], misalignment=4)  # a packet of four, or left to right
    (tensor([[0.6000]]), tensor([[0.2000]]))
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32:
        raise TypeError(f"reduce_mean takes a float32 tensor; got {getattr(x, 'dtype', type(x).__name__)}")
    if misalignment not in (0, 4, 8, 12):
        raise ValueError(
            f"misalignment is a float's byte offset from a 16-byte boundary: 0, 4, 8 or 12; got {misalignment}"
        )
    rank = x.dim()
    reduced = sorted({int(a) % rank for a in axes}) if rank else []
    if not reduced or any(a < -rank or a >= rank for a in axes) or reduced != list(range(rank - len(reduced), rank)):
        raise ValueError(
            f"qlib models ORT's ReduceMean over the last axes of the input (a pool's (2, 3)); got axes {list(axes)} "
            f"for a {rank}-d input"
        )
    kept_shape = x.shape[: rank - len(reduced)]
    n = 1
    for a in reduced:
        n *= x.shape[a]
    if x.numel() == 0:
        raise ValueError(f"qlib models ReduceMean over non-empty rows only; got shape {list(x.shape)}")
    rows = x.contiguous().reshape(-1, n)
    # row r starts (misalignment / 4 + r * n) floats past a boundary: its packets start where that reaches 4
    starts = torch.tensor([(-(misalignment // 4 + r * n)) % 4 for r in range(rows.shape[0])])
    sums = torch.empty(rows.shape[0], dtype=torch.float32)
    for start in starts.unique().tolist():
        where = starts == start
        sums[where] = _eigen_sum(rows[where], start)
    means = (sums.double() / n).float()  # one float32 division, correctly rounded
    return means.reshape([*kept_shape, *([1] * len(reduced) if keepdims else [])])
