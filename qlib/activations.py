"""Quantized activation functions on codes.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).
"""

from __future__ import annotations

import torch

from qlib import checks
from qlib.registry import Settings, quantized, register


def relu(q: torch.Tensor, zero_point: int) -> torch.Tensor:
    """The codes of ``torch.relu`` on a quantized tensor: ``max(q, zero_point)``, exact.

    A code below the zero point stands for a negative value; ReLU raises it to the
    zero point, which stands for 0. The scale and zero point stay the input's.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> relu(torch.tensor([3, 10, 200], dtype=torch.uint8), 10)
    tensor([ 10,  10, 200], dtype=torch.uint8)
    """
    checks.integer_tensor(q, "q")
    return torch.maximum(q, torch.tensor(zero_point, dtype=q.dtype))


@register("aten::relu", "aten::relu_", function="qlib.relu", modules=("torch.nn.ReLU", "torch.relu"))
def _relu_op(args: tuple, kwargs: dict, settings: Settings) -> torch.Tensor:
    x = args[0]
    return quantized(relu(x.int_repr(), x.q_zero_point()), x.q_scale(), x.q_zero_point(), x.dtype)
