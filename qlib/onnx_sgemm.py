"""ONNX Runtime's float32 matrix products (MLAS's SGEMM) on one thread, addition by addition.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``), where a PT2E model's
last ``Gemm`` and its ``FusedConv`` stay in float after ORT's fusions.

A float ``Gemm``, ``MatMul`` or ``Conv`` (unfolded by ``MlasConv``) in ORT's CPU provider is one
``C = A @ B (+ C)`` of MLAS (``sgemm.cpp``:
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/mlas/lib/sgemm.cpp). Three
kernels sum in three orders, each measured against onnxruntime 1.32.0 (``tests/test_onnx_model.py``):

* The blocked kernels (``SgemmKernelFma3.S``, ``SgemmKernelAvx512F.S``): each output sums its
  products one after another with fused multiply-adds, from 0, in passes of ``stride_k`` products
  (``MLAS_SGEMM_STRIDEK`` = 128, doubled each time the column stride of 128 halves towards a narrow
  output, down to 16 columns; 256 for a weight packed ahead, a constant ``B``); each pass's sum is
  added to what the output holds (the ``Gemm``'s bias, a ``FusedConv``'s ``Sum``), rounded once.
* One row (``M = 1``, ``SgemmKernelM1Avx.S``), when ``B`` was not packed: products rounded, added
  four at a time left to right, each group's sum then added to the output.
* One column (``N = 1``) or one row times a transposed ``B`` (``SgemmKernelM1TransposeBAvx.S``):
  eight lanes, lane ``j`` summing the rounded products ``k = j mod 8`` in order, then the lanes
  reduced in an order that depends on where the output falls in blocks of 4, 2 and 1 rows.

More than 65,536 multiply-adds (``M * N * K``) are split across ORT's threads, each part with a
pass length of its own: qlib models one thread.
"""

from __future__ import annotations

import torch

from qlib.numerics import fma_float32


def stride_k(n: int, packed: bool) -> int:
    """How many products MLAS's blocked SGEMM sums in one pass, for ``n`` output columns.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> stride_k(200, False), stride_k(40, False), stride_k(3, False), stride_k(3, True)
    (128, 256, 1024, 256)
    """
    if packed:
        return 256
    stride_n, stride = 128, 128
    while stride_n > 16 and stride_n // 2 >= n:
        stride_n, stride = stride_n // 2, stride * 2
    return stride


def _blocked(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor | None, packed: bool) -> torch.Tensor:
    out = start
    stride = stride_k(b.shape[-1], packed)
    shape = (*a.shape[:-1], b.shape[-1])
    for first in range(0, a.shape[-1], stride):
        acc = torch.zeros(shape, dtype=torch.float32)
        for k in range(first, min(first + stride, a.shape[-1])):
            acc = fma_float32(a[..., k : k + 1].expand(shape).contiguous(), b[..., k : k + 1, :], acc)
        out = acc if out is None else out + acc
    return torch.zeros(shape) if out is None else out


def _one_row(a: torch.Tensor, b: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
    """``a`` ``[K]`` times ``b`` ``[K, N]``: groups of 4, then 2, then 1 rounded products, each added to the output."""
    out = torch.zeros(b.shape[-1]) if start is None else start  # zeroing mode adds +0
    k, first = a.shape[0], 0
    for size in [4] * (k // 4) + ([2] if k % 4 >= 2 else []) + ([1] if k % 2 else []):
        group = a[first] * b[first]
        for i in range(first + 1, first + size):
            group = group + a[i] * b[i]
        out, first = group + out, first + size
    return out


def _rows_dot(vector: torch.Tensor, rows: torch.Tensor, start: torch.Tensor | None) -> torch.Tensor:
    """Each of ``rows`` ``[R, K]`` dotted with ``vector`` ``[K]`` in eight lanes, reduced as the row's block does."""
    r, k = rows.shape
    products = torch.nn.functional.pad(rows * vector, (0, (-k) % 8)).view(r, -1, 8)
    lanes = torch.zeros(r, 8)
    for i in range(products.shape[1]):
        lanes = lanes + products[:, i]
    x = [lanes[:, j] for j in range(8)]
    four = (((x[0] + x[1]) + x[2]) + x[3]) + (((x[4] + x[5]) + x[6]) + x[7])
    two = ((x[0] + x[2]) + (x[4] + x[6])) + ((x[1] + x[3]) + (x[5] + x[7]))
    one = ((x[0] + x[1]) + (x[2] + x[3])) + ((x[4] + x[5]) + (x[6] + x[7]))
    blocks = torch.full((r,), 1)
    blocks[: r - r % 4] = 4
    blocks[r - r % 4 : r - r % 2] = 2
    total = torch.where(blocks == 4, four, torch.where(blocks == 2, two, one))
    return total + (torch.zeros(r) if start is None else start)


def sgemm(
    a: torch.Tensor,
    b: torch.Tensor,
    start: torch.Tensor | None = None,
    *,
    packed: bool = False,
    b_transposed: bool = False,
) -> torch.Tensor:
    """MLAS's float32 ``a @ b + start`` on one thread: ``a`` ``[M, K]``, ``b`` ``[K, N]``, ``start`` ``[M, N]`` or None.

    ``packed``: ``b`` was packed ahead (a constant weight of ``Gemm`` or
    ``MatMul``); ``b_transposed``: ``b`` is stored as ``[N, K]`` (a ``Gemm``
    with ``transB``), which picks another one-row kernel. The module docstring
    gives each kernel's order of additions.

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> a = torch.tensor([[0.1, 0.1, 0.7, 0.1]])
    >>> b = torch.tensor([[0.3, 0.3], [0.7, 0.7], [0.9, 0.9], [1 / 3, 1 / 3]])
    >>> sgemm(a, b)[0, 0].item(), sgemm(a, b, packed=True)[0, 0].item()  # rounded products in fours; fused
    (0.7633333802223206, 0.7633333206176758)
    """
    m, n = a.shape[0], b.shape[1]
    if not packed and m == 1:
        rows = _rows_dot(a[0], b.t(), None if start is None else start[0]) if b_transposed else None
        return (
            rows.view(1, n) if rows is not None else _one_row(a[0], b, None if start is None else start[0]).view(1, n)
        )
    if not packed and n == 1 and (not b_transposed or a.shape[1] == 1):
        return _rows_dot(b[:, 0], a, None if start is None else start[:, 0]).view(m, 1)
    return _blocked(a, b, start, packed)
