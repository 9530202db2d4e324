"""A PT2E graph quantized for XNNPACK, run node by node with XNNPACK's integer operators (``qlib.xnnpack``).

``qlib.run(model, x, backend="xnnpack")`` calls ``run_graph``. ExecuTorch's ``XnnpackPartitioner``
turns each ``dequantize -> op (-> relu / hardtanh) -> quantize`` pattern of a ``convert_pt2e`` graph
into one XNNPACK operator on int8 codes, the activation fused into its output bounds; this module
reads the graph the same way:

* a ``quantize_per_tensor`` of a float tensor is XNNPACK's Convert (``xnnpack_quantize``);
* a ``dequantize`` passes its codes on, with their scale and zero point, to the ops that use them;
* ``linear``, ``conv2d``, ``add``, ``mean`` / ``adaptive_avg_pool2d`` to 1x1, ``max_pool2d``, and the
  ops that only move codes (``flatten``, ``view``, ``reshape``, ``permute``...) wait for the
  ``quantize`` after them, which gives their output scale and zero point; a ``relu`` or ``hardtanh``
  in between becomes their output bounds, and one after a ``dequantize`` a clamp of the codes;
* a ``dequantize`` the graph returns is XNNPACK's Convert to float32 (``xnnpack_dequantize``).

Any other op on dequantized values raises a ValueError naming it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import torch

from qlib.xnnpack import (
    output_bounds,
    xnnpack_add,
    xnnpack_conv2d,
    xnnpack_dequantize,
    xnnpack_linear,
    xnnpack_max_pool2d,
    xnnpack_mean,
    xnnpack_quantize,
)

_QD = "quantized_decomposed."
# ops that only move codes: they keep the scale and zero point
# float ops whose result depends on the kernel's order of additions
_FLOAT_REFUSED = ("linear", "conv2d", "mean", "adaptive_avg_pool2d", "avg_pool2d", "matmul", "addmm", "sum")
_MOVES = (
    "flatten",
    "view",
    "reshape",
    "permute",
    "transpose",
    "squeeze",
    "unsqueeze",
    "contiguous",
    "clone",
    "dropout",
)


@dataclass
class Codes:
    """int8 codes with their scale (a number, or per-channel scales) and zero point."""

    codes: torch.Tensor
    scale: Any  # a float per tensor, float32 scales per channel (weights)
    zero_point: int


@dataclass
class Pending:
    """An XNNPACK op waiting for its output's scale and zero point (from the next quantize node)."""

    compute: Callable[[float, int, float, float], torch.Tensor]
    output_min: float = -math.inf
    output_max: float = math.inf

    def bounded(self, low: float, high: float) -> Pending:
        return Pending(self.compute, max(self.output_min, low), min(self.output_max, high))


def _short(node: torch.fx.Node) -> str:
    if node.op != "call_function":
        return node.op
    packet = getattr(node.target, "overloadpacket", None)  # aten.conv2d.default -> conv2d
    return packet.__name__ if packet is not None else getattr(node.target, "__name__", str(node.target))


def _activation_bounds(node: torch.fx.Node) -> tuple[float, float] | None:
    name = _short(node)
    if name in ("relu", "relu_"):
        return 0.0, math.inf
    if name in ("hardtanh", "hardtanh_"):
        low = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
        high = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
        return float(cast(float, low)), float(cast(float, high))
    return None


def _arg(node: torch.fx.Node, args: Any, index: int, name: str, default: Any) -> Any:
    if len(args) > index:
        return args[index]
    return node.kwargs.get(name, default)


class _XnnpackRunner(torch.fx.Interpreter):
    def __init__(self, model: torch.fx.GraphModule) -> None:
        super().__init__(model)
        self.steps: list[tuple[torch.fx.Node, Codes]] = []

    def run_node(self, n: torch.fx.Node) -> object:
        if n.op != "call_function":
            return super().run_node(n)
        args, kwargs = self.fetch_args_kwargs_from_env(n)
        target = str(n.target)
        if target.startswith(_QD + "quantize_per_tensor"):
            return self._quantize(n, args)
        if target.startswith(_QD + "dequantize_per_tensor"):
            if isinstance(args[0], Codes):
                return Codes(args[0].codes, args[0].scale, args[0].zero_point)
            return Codes(args[0], args[1], args[2])  # a weight stored as codes
        if target.startswith(_QD + "dequantize_per_channel"):
            if args[3] != 0:
                raise ValueError(f"{n.name}: XNNPACK's weights are per output channel (axis 0); got axis {args[3]}")
            return Codes(args[0], args[1].float(), 0)
        leaves = [a for a in (*args, *kwargs.values()) if isinstance(a, (Codes, Pending))]
        if not leaves and _short(n) in _FLOAT_REFUSED:
            raise ValueError(
                f"{n.name}: {n.target} on float values (the quantizer left it in float): XNNPACK runs it with its "
                "float32 kernels, whose order of additions qlib does not model"
            )
        if not leaves:
            return super().run_node(n)  # float arithmetic that rounds once per element: torch's is XNNPACK's
        return self._op(n, args)

    def _quantize(self, n: torch.fx.Node, args: tuple) -> Codes:
        value, scale, zero_point, quant_min, quant_max, dtype = args[:6]
        if dtype != torch.int8 or (quant_min, quant_max) != (-128, 127):
            raise ValueError(
                f"{n.name}: XNNPACK's qs8 needs int8 codes in [-128, 127]; got {dtype} [{quant_min}, {quant_max}]"
            )
        if isinstance(value, Pending):
            codes = value.compute(scale, zero_point, value.output_min, value.output_max)
        elif isinstance(value, torch.Tensor) and value.is_floating_point():
            codes = xnnpack_quantize(value.float(), scale, zero_point)
        else:
            raise ValueError(f"{n.name}: quantize of {type(value).__name__}: not an XNNPACK pattern")
        result = Codes(codes, scale, zero_point)
        self.steps.append((n, result))
        return result

    def _op(self, n: torch.fx.Node, args: tuple) -> Pending:
        name, bounds = _short(n), _activation_bounds(n)
        if bounds is not None and isinstance(args[0], Pending):
            return args[0].bounded(*bounds)  # fused into the op before it
        if any(isinstance(a, Pending) for a in args):
            raise ValueError(
                f"{n.name} ({n.target}) follows a quantized op before its quantize: not an XNNPACK pattern"
            )
        if bounds is not None:
            x = args[0]
            return Pending(lambda s, z, lo, hi: _same(x, s, z, n, _bounded(x.codes, s, z, lo, hi)), *bounds)
        build = _BUILDERS.get(name)
        if build is None and name in _MOVES:
            build = _moves
        if build is None:
            raise ValueError(
                f"{n.name}: qlib's XNNPACK backend does not model {n.target} on quantized values; it models "
                f"{', '.join(_BUILDERS)}, relu, hardtanh and {', '.join(_MOVES)}"
            )
        return build(n, args)


def _linear(n: torch.fx.Node, args: Any) -> Pending:
    x, w, b = args[0], args[1], _arg(n, args, 2, "bias", None)
    return Pending(lambda s, z, lo, hi: xnnpack_linear(
        x.codes, x.scale, x.zero_point, w.codes, w.scale, b, s, z, output_min=lo, output_max=hi))  # fmt: skip


def _conv2d(n: torch.fx.Node, args: Any) -> Pending:
    x, w, b = args[0], args[1], _arg(n, args, 2, "bias", None)
    stride, padding = _arg(n, args, 3, "stride", 1), _arg(n, args, 4, "padding", 0)
    dilation, groups = _arg(n, args, 5, "dilation", 1), _arg(n, args, 6, "groups", 1)
    return Pending(lambda s, z, lo, hi: xnnpack_conv2d(
        x.codes, x.scale, x.zero_point, w.codes, w.scale, b, s, z, stride=stride, padding=padding,
        dilation=dilation, groups=groups, output_min=lo, output_max=hi))  # fmt: skip


def _add(n: torch.fx.Node, args: Any) -> Pending:
    x, y = args[0], args[1]
    if not isinstance(y, Codes) or _arg(n, args, 2, "alpha", 1) != 1:
        raise ValueError(f"{n.name}: XNNPACK's add takes two quantized tensors and alpha 1")
    return Pending(lambda s, z, lo, hi: xnnpack_add(
        x.codes, x.scale, x.zero_point, y.codes, y.scale, y.zero_point, s, z, output_min=lo, output_max=hi))  # fmt: skip


def _mean(n: torch.fx.Node, args: Any) -> Pending:
    x = args[0]
    if _short(n) == "mean":
        if sorted(d % 4 for d in args[1]) != [2, 3] or not _arg(n, args, 2, "keepdim", False):
            raise ValueError(f"{n.name}: XNNPACK's mean is over the last two of 4 dimensions, kept; got {args[1:]}")
    elif list(args[1]) != [1, 1]:
        raise ValueError(f"{n.name}: XNNPACK runs adaptive_avg_pool2d to 1x1 only (a mean); got {args[1]}")
    return Pending(lambda s, z, lo, hi: _bounded(xnnpack_mean(x.codes, x.scale, x.zero_point, s, z), s, z, lo, hi))


def _max_pool2d(n: torch.fx.Node, args: Any) -> Pending:
    x, pool = args[0], args[1:]
    return Pending(lambda s, z, lo, hi: _same(x, s, z, n, _bounded(xnnpack_max_pool2d(x.codes, *pool), s, z, lo, hi)))


def _moves(n: torch.fx.Node, args: Any) -> Pending:
    x, rest, op = args[0], args[1:], cast(Callable[..., torch.Tensor], n.target)
    return Pending(lambda s, z, lo, hi: _same(x, s, z, n, _bounded(op(x.codes, *rest), s, z, lo, hi)))


_BUILDERS: dict[str, Callable[[torch.fx.Node, Any], Pending]] = {
    "linear": _linear,
    "conv2d": _conv2d,
    "add": _add,
    "mean": _mean,
    "adaptive_avg_pool2d": _mean,
    "max_pool2d": _max_pool2d,
}


def _bounded(codes: torch.Tensor, scale: float, zero_point: int, low: float, high: float) -> torch.Tensor:
    lo, hi = output_bounds(low, high, scale, zero_point)
    return codes.clamp(lo, hi)


def _same(x: Codes, scale: float, zero_point: int, n: torch.fx.Node, codes: torch.Tensor) -> torch.Tensor:
    if (float(x.scale), x.zero_point) != (float(scale), zero_point):
        raise ValueError(f"{n.name}: {n.target} must keep its input's scale and zero point (the quantizer shares them)")
    return codes


def run_graph(
    model: torch.fx.GraphModule, x: torch.Tensor | tuple[torch.Tensor, ...]
) -> tuple[list[tuple[torch.fx.Node, Codes]], object]:
    """Run a ``convert_pt2e`` graph on float32 ``x`` (a tuple: one tensor per input) as the XNNPACK delegate does.

    Returns each quantize node with its codes, in graph order, and what the
    graph returns (a dequantized output as float32, as XNNPACK converts it).
    """
    if not isinstance(model, torch.fx.GraphModule):
        raise TypeError(
            f"the xnnpack backend runs a convert_pt2e graph (a torch.fx.GraphModule); got {type(model).__name__}"
        )
    runner = _XnnpackRunner(model)
    with torch.no_grad():
        returned = runner.run(*(x if isinstance(x, tuple) else (x,)))
    return runner.steps, _to_float(returned)


def _to_float(value: object) -> object:
    if isinstance(value, Codes):
        return xnnpack_dequantize(value.codes, value.scale, value.zero_point)
    if isinstance(value, (list, tuple)):
        return type(value)(_to_float(v) for v in value)
    if isinstance(value, Pending):
        raise ValueError("the graph returns a quantized op's result before its quantize: not an XNNPACK pattern")
    return value
