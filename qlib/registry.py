"""The table of what qlib reproduces: each torch op that computes on quantized tensors, and the qlib
function that gives its integers.

``qlib.run`` and ``qlib.compare`` run a model in torch and watch every op it calls (below the
modules, where torch dispatches to its kernels). At an op of this table, ``run`` puts qlib's
result in place of torch's, so every later op computes on qlib's integers; ``compare`` keeps
torch's and computes qlib's beside it. An op that only moves codes (``view``, ``transpose``,
``cat`` of one scale...) is in ``LAYOUT_OPS`` and runs in torch unchanged: it computes nothing.

Each operator module registers its own ops (``@register``), so adding an operator touches that
module, its test and its entry on the API page (CONTRIBUTING.md, "Adding an operator").

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from qlib.ranges import CODE_DTYPES


@dataclass(frozen=True)
class Settings:
    """What every operator is asked to follow: the CPU kind (``pairs_saturate``, None: this one) and
    the torch release (None: the installed one)."""

    pairs_saturate: bool | None = None
    release: str | None = None


Compute = Callable[[tuple, dict, Settings], torch.Tensor]


@dataclass(frozen=True)
class Operator:
    """One row of the table: torch's ``op`` (as the dispatcher names it, ``quantized::conv2d``; a Linear whose
    weight is a torchao subclass, met at ``F.linear``, as ``torchao::`` and its qlib function), the
    qlib ``function`` that reproduces it, the ``modules`` (or calls) that reach it, and ``compute``,
    which takes the op's arguments as torch receives them and returns what torch's op returns. An op
    with ``on_float`` False (ReLU, say) is qlib's only on quantized tensors: on float ones torch runs it.
    An op that returns plain integer codes (PT2E's quantize) gives ``qparams``: their scale and zero
    point, read from its arguments."""

    op: str
    function: str
    modules: tuple[str, ...]
    compute: Compute
    on_float: bool = False  # the op takes float tensors (quantize, dynamic Linear); else only quantized ones
    qparams: Callable[[tuple], tuple[float, int]] | None = None  # an op returning plain codes: their scale, zp


OPERATORS: dict[str, Operator] = {}

# Ops that only rearrange, select or relabel codes: torch runs them, on qlib's codes, unchanged.
LAYOUT_OPS = frozenset(
    "aten::" + name
    for name in (
        "view",
        "_unsafe_view",
        "reshape",
        "_reshape_alias",
        "flatten",
        "transpose",
        "permute",
        "t",
        "clone",
        "contiguous",
        "split",
        "split_with_sizes",
        "chunk",
        "unbind",
        "select",
        "slice",
        "narrow",
        "squeeze",
        "unsqueeze",
        "expand",
        "detach",
        "alias",
    )
)


def register(
    *ops: str,
    function: str,
    modules: tuple[str, ...] = (),
    on_float: bool = False,
    qparams: Callable[[tuple], tuple[float, int]] | None = None,
) -> Callable[[Compute], Compute]:
    """Record ``compute`` as qlib's way to compute each of ``ops`` (``"quantized::add"``, ...).

    >>> @register("example::double", function="qlib.example")
    ... def _double(args, kwargs, settings):
    ...     return args[0] * 2
    >>> OPERATORS["example::double"].compute((3,), {}, Settings())
    6
    >>> del OPERATORS["example::double"]
    """

    def record(compute: Compute) -> Compute:
        for op in ops:
            if op in OPERATORS:
                raise ValueError(f"{op} is registered twice: {OPERATORS[op].function} and {function}")
            OPERATORS[op] = Operator(op, function, modules, compute, on_float, qparams)
        return compute

    return record


def op_name(func: object) -> str:
    """The name the table uses for a torch op: ``quantized::conv2d`` for ``torch.ops.quantized.conv2d.new``."""
    schema = getattr(func, "_schema", None)
    return schema.name if schema is not None else getattr(func, "__name__", type(func).__name__)


def quantized(codes: torch.Tensor, scale: float, zero_point: int, dtype: torch.dtype) -> torch.Tensor:
    """A torch quantized tensor (per tensor) holding qlib's ``codes``, so that torch can go on computing."""
    storage = CODE_DTYPES[dtype]
    return torch._make_per_tensor_quantized_tensor(codes.to(storage), float(scale), int(zero_point))


def supported() -> list[str]:
    """Every registered op with its qlib function, one string each (for error messages and the API page)."""
    return [f"{row.op} ({row.function})" for row in sorted(OPERATORS.values(), key=lambda row: row.op)]


def packed_backend(packed: Any) -> str:
    """The engine a quantized Conv's or Linear's packed weight was packed for: ``"fbgemm"``, ``"onednn"`` or
    ``"qnnpack"``.

    torch runs the op on the backend that packed the weight, whatever ``torch.backends.quantized.engine``
    says by then (the ``x86`` engine packs a Conv for oneDNN or FBGEMM, a Linear for FBGEMM). The packed
    object does not say which, but each backend refuses a qint8 activation in words of its own
    (``apply_impl`` in ``aten/src/ATen/native/quantized/cpu/qconv.cpp`` and ``qlinear.cpp``), and
    oneDNN's Linear accepts one; qlib asks with a small qint8 tensor.
    """
    weight = packed.unpack()[0]
    if weight.dim() == 2:  # Linear
        probe = torch.quantize_per_tensor(torch.zeros(1, weight.shape[1]), 1.0, 0, torch.qint8)
        try:
            torch.ops.quantized.linear(probe, packed, 1.0, 0)
        except RuntimeError as error:
            return "qnnpack" if "(qnnpack)" in str(error) else "fbgemm"
        return "onednn"
    size = max(16, *(k * d for k, d in zip(weight.shape[2:], packed.dilation(), strict=True)))
    channels = weight.shape[1] * packed.groups()
    probe = torch.quantize_per_tensor(torch.zeros(1, channels, size, size), 1.0, 0, torch.qint8)
    try:
        torch.ops.quantized.conv2d.new(probe, packed, 1.0, 0)
    except RuntimeError as error:
        for backend in ("ONEDNN", "FBGEMM", "qnnpack"):
            if f"({backend})" in str(error):
                return backend.lower()
        raise ValueError(f"qlib cannot tell which backend packed this Conv's weight: {error}") from error
    raise ValueError("qlib cannot tell which backend packed this Conv's weight: it accepted a qint8 activation")
