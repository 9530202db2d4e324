"""ONNX Runtime's float32 ``AveragePool``, addition by addition.

Explained in the book chapter "Leaving PyTorch through ONNX" (``book/14_onnx``): a PT2E model's
average pool can stay in float after ORT's fusions (after a float ``FusedConv``, or on the input).

ORT's CPU provider averages a 2-d window with its own loops (``AveragePool2DTask`` in
https://github.com/microsoft/onnxruntime/blob/v1.32.0/onnxruntime/core/providers/cpu/nn/pool_functors.h),
not MLAS's vectorized pooling: each output starts from 0 and adds the window's elements inside the
input one by one, row by row, then is divided (a true division) by the window's size with padding
(``count_include_pad``) or by how many elements it added. Measured against onnxruntime 1.32.0 in
``tests/test_onnx_float_pool.py``; one output is summed by one thread, so the thread count changes
nothing. Where ORT moves the pool to its blocked channel layout (``com.microsoft.nchwc.AveragePool``:
16 channels or more on an AVX-512 CPU, 8 or more on an AVX2 one), the sums measured the same on
an AVX-512 CPU, but ``qlib.run`` does not run that layout.
"""

from __future__ import annotations

import torch


def average_pool(
    x: torch.Tensor,
    kernel: list[int],
    strides: list[int] | None = None,
    pads: list[int] | None = None,
    count_include_pad: bool = False,
) -> torch.Tensor:
    """ORT's float32 ``AveragePool`` of ``x`` ``[N, C, H, W]`` (``pads``: top, left, bottom, right; floor mode).

    Chapter: "Leaving PyTorch through ONNX" (book/14_onnx).

    >>> x = torch.tensor([[[[1e8, 1.0], [-1e8, 1.0]]]])
    >>> average_pool(x, [2, 2])  # ((0 + 1e8) + 1) - 1e8 + 1, over 4
    tensor([[[[0.2500]]]])
    """
    if not isinstance(x, torch.Tensor) or x.dtype != torch.float32 or x.dim() != 4:
        raise TypeError(f"average_pool takes a float32 [N, C, H, W] tensor; got {getattr(x, 'dtype', type(x))}")
    strides = strides or [1, 1]
    pads = pads or [0, 0, 0, 0]
    if len(kernel) != 2 or len(strides) != 2 or len(pads) != 4 or min(*kernel, *strides) < 1 or min(pads) < 0:
        raise ValueError(f"average_pool takes a 2-d kernel, strides and 4 pads; got {kernel}, {strides}, {pads}")
    (kh, kw), (sh, sw), (top, left, bottom, right) = kernel, strides, pads
    height, width = x.shape[2] + top + bottom, x.shape[3] + left + right
    if kh > height or kw > width:
        raise ValueError(f"the kernel {kernel} is larger than the padded input {[height, width]}")
    out_h, out_w = (height - kh) // sh + 1, (width - kw) // sw + 1
    padded = torch.nn.functional.pad(x, (left, right, top, bottom))  # zeros: adding +0.0 changes no sum
    total = torch.zeros(*x.shape[:2], out_h, out_w)
    for i in range(kh):
        for j in range(kw):
            total = total + padded[:, :, i : i + sh * (out_h - 1) + 1 : sh, j : j + sw * (out_w - 1) + 1 : sw]
    if count_include_pad:
        count = torch.full((out_h, out_w), float(kh * kw))
    else:
        inside = torch.nn.functional.pad(torch.ones(1, 1, *x.shape[2:]), (left, right, top, bottom))
        count = torch.nn.functional.avg_pool2d(inside.double(), (kh, kw), (sh, sw), divisor_override=1)[0, 0]
    means = (total.double() / count.double()).float()  # one float32 division, correctly rounded
    return torch.where(count > 0, means, total)  # a window of padding only stays 0
