"""The PT2E reference graph, XNNPACK and the delegate side by side, step by step, with the cause of each difference.

Explained in the book chapter "Off to the edge" (``book/15_edge``).

``compare_xnnpack(converted, x)`` runs a ``convert_pt2e`` graph quantized with ExecuTorch's
``XNNPACKQuantizer`` three ways: in torch, as ExecuTorch's reference (*reference*); with qlib's model
of XNNPACK's integer operators (*XNNPACK*, ``qlib.run(..., backend="xnnpack")``); and once more in
torch with each step fed XNNPACK's codes instead of its own (*local*). At every quantize node (a step)
it counts the codes where the reference and XNNPACK differ, and names a cause for each:

* ``carried``: the local run gives XNNPACK's code, so the step's own arithmetic agrees once its
  inputs do; the difference came from an earlier step;
* ``tie``: the step made it. The reference's value before rounding (``y * float32(1 / s_y)``) and
  XNNPACK's (``float32(acc) * M`` for a Linear or convolution, ``acc = sum (q_x - z_x) q_w + b_q``)
  lie on either side of the same ``k + 0.5``, each within ``tie_within`` codes of it. Its part says
  which ingredient of XNNPACK's arithmetic alone moves the value across: ``bias`` (with the float
  bias in place of the int32 ``b_q`` XNNPACK gives the reference's code), ``multiplier`` (with
  ``s_x * s_w / s_y`` exact in place of the float32 ``M``), or ``accumulation`` (the exact sum, which
  XNNPACK has, rounds to XNNPACK's code: the reference's float32 sums moved it); ``combined`` when
  none does alone. For a mean: ``zero point`` (XNNPACK's own value, rounded with the zero point
  after, as PT2E does, gives the reference's code), ``scale`` (the exact mean, rounded as XNNPACK
  rounds, gives it: its float32 scale moved it) or ``accumulation``; for an add: ``half up`` (its
  value rounded half to even gives the reference's code), ``fixed point`` (its multipliers) or
  ``accumulation``;
* ``other``: neither (not seen on the book's models; shown, never hidden).

A delegate's own codes, when given, are compared with qlib's XNNPACK codes at every step.
``explain_xnnpack`` takes one output code of a Linear or convolution apart.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import torch

from qlib import checks
from qlib.numerics import float32
from qlib.prose import html_table, text_table
from qlib.pt2e_ops import dequantize_pt2e
from qlib.xnnpack import add_parameters, output_bounds, xnnpack_bias, xnnpack_conv2d, xnnpack_linear
from qlib.xnnpack_graph import run_graph

_ACTIVATIONS = ("relu", "relu_", "hardtanh", "hardtanh_")


def _target_name(node: torch.fx.Node) -> str:
    packet = getattr(node.target, "overloadpacket", None)
    return packet.__name__ if packet is not None else getattr(node.target, "__name__", str(node.target))


def _is_quantize(node: torch.fx.Node) -> bool:
    return node.op == "call_function" and str(node.target).startswith("quantized_decomposed.quantize_per_tensor")


class _Torch(torch.fx.Interpreter):
    """Runs the graph in torch, keeping each quantize node's float input and codes; with ``feed``, each
    quantize node then hands on ``feed[node]`` (XNNPACK's codes) in place of its own."""

    def __init__(self, model: torch.fx.GraphModule, feed: Mapping[torch.fx.Node, torch.Tensor] | None = None):
        super().__init__(model, garbage_collect_values=False)
        self.feed = feed
        self.kept: dict[torch.fx.Node, tuple[torch.Tensor, object]] = {}

    def run_node(self, n: torch.fx.Node) -> object:
        out = super().run_node(n)
        if _is_quantize(n) and isinstance(self.env[cast(torch.fx.Node, n.args[0])], torch.Tensor):
            self.kept[n] = (self.env[cast(torch.fx.Node, n.args[0])], out)
            if self.feed is not None and n in self.feed:
                return self.feed[n]
        return out


def _rint(v: torch.Tensor) -> torch.Tensor:
    return torch.round(v)  # half to even, as cvtps2dq and PT2E's torch.round


@dataclass
class XnnpackStep:
    """One step (quantize node) in ``compare_xnnpack``'s report.

    ``differ`` codes of ``numel`` differ between the reference and XNNPACK, by
    at most ``max_difference``; ``causes`` counts them by cause (``"carried"``,
    ``"tie: bias"``, ...); ``tie_distance`` is the farthest a tie's two values
    lie from their ``.5`` (NaN without ties); ``delegate_differ`` counts
    the delegate's codes that differ from qlib's (None: no delegate codes).
    ``where`` indexes the differing codes; ``reference_value`` and
    ``xnnpack_value`` are the two values before rounding there (NaN where the
    step has no such value), ``cause`` names each one's cause.

    Chapter: "Off to the edge" (book/15_edge).

    >>> XnnpackStep("conv", "conv2d+relu", 100, 1, 1, {"tie: bias": 1}, 0.004).differ
    1
    """

    name: str
    op: str
    numel: int
    differ: int
    max_difference: int
    causes: dict[str, int]
    tie_distance: float
    delegate_differ: int | None = None
    reference_codes: torch.Tensor | None = field(default=None, repr=False)
    xnnpack_codes: torch.Tensor | None = field(default=None, repr=False)
    delegate_codes: torch.Tensor | None = field(default=None, repr=False)
    where: torch.Tensor | None = field(default=None, repr=False)
    reference_value: torch.Tensor | None = field(default=None, repr=False)
    xnnpack_value: torch.Tensor | None = field(default=None, repr=False)
    cause: list[str] = field(default_factory=list, repr=False)


@dataclass
class XnnpackComparison:
    """``compare_xnnpack``'s report: ``steps`` in graph order, and ``output_differ``, how many of the
    delegate's returned floats differ from qlib's in their bits (None: no delegate output given).

    ``str(report)`` is a plain-text table; a notebook shows it as HTML.

    Chapter: "Off to the edge" (book/15_edge).

    >>> print(XnnpackComparison([XnnpackStep("conv", "conv2d", 100, 2, 1, {"tie: bias": 2}, 0.004, 0)]))
    step  op      codes  differ  max  causes       tie within  delegate = qlib
    conv  conv2d  100    2       1    2 tie: bias  0.004       yes
    """

    steps: list[XnnpackStep]
    output_differ: int | None = None

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["step", "op", "codes", "differ", "max", "causes", "tie within", "delegate = qlib"]
        body = []
        for s in self.steps:
            causes = ", ".join(f"{n} {c}" for c, n in sorted(s.causes.items(), key=lambda item: -item[1])) or "-"
            within = "-" if math.isnan(s.tie_distance) else f"{math.ceil(s.tie_distance * 1000) / 1000:g}"
            delegate = (
                "-"
                if s.delegate_differ is None
                else ("yes" if s.delegate_differ == 0 else f"no: {s.delegate_differ:,}")
            )
            body.append(
                [s.name, s.op, f"{s.numel:,}", f"{s.differ:,}", str(s.max_difference), causes, within, delegate]
            )
        return head, body

    def _note(self) -> str | None:
        if self.output_differ is None:
            return None
        return "the delegate's output is qlib's: " + (
            "yes" if self.output_differ == 0 else f"no, {self.output_differ:,} differ"
        )

    def __str__(self) -> str:
        return text_table(*self._rows(), self._note())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_table(*self._rows(), self._note())


def _op_of(node: torch.fx.Node) -> tuple[torch.fx.Node | None, str]:
    """The op a quantize node quantizes the result of (through a fused ReLU or clamp), and its label."""
    source = node.args[0]
    if not isinstance(source, torch.fx.Node) or source.op != "call_function":
        return None, "convert"
    if _target_name(source) in _ACTIVATIONS and isinstance(source.args[0], torch.fx.Node):
        inner = source.args[0]
        if inner.op == "call_function" and "dequantize" not in str(inner.target):
            return inner, f"{_target_name(inner)}+{_target_name(source).rstrip('_')}"
    return source, _target_name(source)


def _step_names(nodes: list[torch.fx.Node]) -> list[str]:
    """A step is named after the module its op ran in (``conv``), else the op's node (``flatten``), else the
    input it converts (``x``); a name met again gets ``#2``, ``#3``..."""
    names: list[str] = []
    seen: Counter[str] = Counter()
    for node in nodes:
        op, _ = _op_of(node)
        source: Any = op if op is not None else node.args[0]
        stack = source.meta.get("nn_module_stack") or {}
        path = list(stack.values())[-1][0] if stack else ""
        name = path or source.name
        seen[name] += 1
        names.append(name if seen[name] == 1 else f"{name}#{seen[name]}")
    return names


def _gemm_parts(op: Any, env: dict, scale: float) -> dict[str, torch.Tensor]:
    """XNNPACK's value before rounding, and the three counterfactual ones, for every output of a Linear or conv."""
    dq_x, dq_w = op.args[0], op.args[1]
    value = lambda a: env[a] if isinstance(a, torch.fx.Node) else a  # noqa: E731
    x, s_x, z_x = value(dq_x.args[0]), float32(value(dq_x.args[1])), int(value(dq_x.args[2]))
    w, s_w = value(dq_w.args[0]), value(dq_w.args[1])
    bias = value(op.args[2]) if len(op.args) > 2 else op.kwargs.get("bias")
    conv = _target_name(op) == "conv2d"
    extra = [value(a) for a in op.args[3:7]] if conv else []
    return _gemm_values(x, s_x, z_x, w, s_w, bias, scale, conv_args=extra if conv else None)


def _gemm_values(x, s_x, z_x, w, s_w, bias, scale, conv_args=None) -> dict[str, torch.Tensor]:
    """For every output of XNNPACK's Linear (``conv_args`` None) or convolution: ``acc`` (the exact
    sum, no bias), ``bias_q``, ``bias_steps`` (the float bias in accumulator steps), ``multiplier``,
    ``xnnpack`` (``float32(acc + bias_q) * M``, before rounding and the zero point), and the values
    with one ingredient changed: ``bias`` (the float bias), ``multiplier_exact`` (``M`` in float64)
    and ``exact`` (all in float64: the real value both sides approximate)."""
    s_x = float32(s_x)
    per_channel = isinstance(s_w, torch.Tensor) and s_w.dim() == 1
    n = w.shape[0]
    scales = s_w.float() if per_channel else torch.full((n,), float32(s_w), dtype=torch.float32)
    shape = [1, n, 1, 1] if conv_args is not None else [n]
    if conv_args is not None:
        acc = torch.nn.functional.conv2d(x.double() - z_x, w.double(), None, *conv_args)
    else:
        acc = (x.double() - z_x) @ w.double().T
    steps = torch.zeros(n, dtype=torch.float64) if bias is None else bias.double() / (s_x * scales.double())
    bias_q = torch.zeros(n, dtype=torch.int32) if bias is None else xnnpack_bias(bias.float(), s_x, s_w)
    m = (torch.tensor(s_x) * scales) / torch.tensor(float32(scale))  # float32, as XNNPACK computes it
    m_exact = s_x * scales.double() / float32(scale)
    total = acc + bias_q.double().view(shape)
    return {
        "acc": acc,
        "bias_q": bias_q,
        "bias_steps": steps,
        "multiplier": m,
        "xnnpack": total.float() * m.view(shape),
        "bias": (acc + steps.view(shape)).float() * m.view(shape),
        "multiplier_exact": total * m_exact.view(shape),
        "exact": (acc + steps.view(shape)) * m_exact.view(shape),
    }


def _mean_parts(op: Any, env: dict, scale: float, zero_point: int) -> dict[str, torch.Tensor]:
    dq = op.args[0]
    x, s_x, z_x = env[dq.args[0]], float32(dq.args[1]), int(dq.args[2])
    n = x.shape[2] * x.shape[3]
    s = float32(float32(s_x / float32(scale)) * float32(1.0 / n))
    z = float32(zero_point - float32(float32(n * z_x) * s))
    total = x.long().sum(dim=(2, 3), keepdim=True)
    xnn = (total.float() * torch.tensor(s)) + torch.tensor(z)
    exact = (total.double() - n * z_x) * s_x / (n * float32(scale))
    return {"xnnpack": xnn.double() - zero_point, "exact": exact}  # before the zero point, as the others


def _add_parts(op: Any, env: dict, scale: float) -> dict[str, torch.Tensor]:
    a_dq, b_dq = op.args[0], op.args[1]
    a, s_a, z_a = env[a_dq.args[0]], float32(a_dq.args[1]), int(a_dq.args[2])
    b, s_b, z_b = env[b_dq.args[0]], float32(b_dq.args[1]), int(b_dq.args[2])
    m_a, m_b, shift = add_parameters(s_a, s_b, scale)
    fixed = ((a.long() - z_a) * m_a + (b.long() - z_b) * m_b).double() / 2.0**shift
    exact = (s_a * (a.double() - z_a) + s_b * (b.double() - z_b)) / float32(scale)
    return {"xnnpack": fixed, "exact": exact}


def _round(v: torch.Tensor, z: int, how: str) -> torch.Tensor:
    """A code before the clamp: ``rint(v) + z`` (PT2E, XNNPACK's GEMMs), ``rint(v + z)`` (XNNPACK's mean,
    the zero point first) or ``floor(v + 0.5) + z`` (XNNPACK's add, half up)."""
    v = v.double()
    if how == "zero point first":
        return _rint(v + z)
    return (torch.floor(v + 0.5) if how == "half up" else _rint(v)) + z


# per kind of op: how XNNPACK rounds, and each part that can move a value across a tie, tried in order:
# (part, the value with that ingredient changed, how it is rounded, whose code it must then give)
ROUNDING = {"gemm": "rint", "mean": "zero point first", "add": "half up"}
PARTS = {
    "gemm": [("bias", "bias", "rint", "reference"), ("multiplier", "multiplier_exact", "rint", "reference"),
             ("accumulation", "exact", "rint", "xnnpack")],
    "mean": [("zero point", "xnnpack", "rint", "reference"), ("scale", "exact", "zero point first", "reference"),
             ("accumulation", "exact", "rint", "xnnpack")],
    "add": [("half up", "xnnpack", "rint", "reference"), ("fixed point", "exact", "half up", "reference"),
            ("accumulation", "exact", "rint", "xnnpack")],
}  # fmt: skip


def _classify(kind, parts, where, ref_v, z, ref_code, xnn_code, tie_within) -> tuple[list[str], torch.Tensor]:
    """The cause of each code the step made differ, and each tie's distance (NaN for 'other')."""
    causes, distances = [], torch.full_like(ref_v, math.nan, dtype=torch.float64)
    if not parts:
        return ["other"] * ref_v.numel(), distances
    xnn_v = parts["xnnpack"][where].double()
    tie = torch.minimum(ref_code, xnn_code).double() - z + 0.5
    distance = torch.maximum((ref_v - tie).abs(), (xnn_v - tie).abs())
    rounds = (_round(ref_v, z, "rint") == ref_code) & (_round(xnn_v, z, ROUNDING[kind]) == xnn_code)
    for i in range(ref_v.numel()):
        if not ((ref_code[i] - xnn_code[i]).abs() == 1 and rounds[i] and distance[i] <= tie_within):
            causes.append("other")
            continue
        distances[i] = distance[i]
        part = "combined"
        for name, key, how, whose in PARTS[kind]:
            target = ref_code[i] if whose == "reference" else xnn_code[i]
            if _round(parts[key][where][i], z, how) == target:
                part = name
                break
        causes.append(f"tie: {part}")
    return causes, distances


def compare_xnnpack(
    converted: torch.fx.GraphModule,
    x: torch.Tensor,
    delegate: Mapping[str, torch.Tensor] | Sequence[torch.Tensor] | None = None,
    *,
    tie_within: float = 0.05,
) -> XnnpackComparison:
    """Each step of a ``convert_pt2e`` graph: the reference's codes, XNNPACK's (qlib's), the delegate's.

    ``converted`` is quantized with ExecuTorch's ``XNNPACKQuantizer``; ``x``
    its float32 input. Every code where the reference (torch running the
    graph) and XNNPACK differ gets a cause: ``carried``, ``tie: <part>`` or
    ``other`` (the module docstring); a tie's two values lie within
    ``tie_within`` codes of the same ``.5``. ``delegate``, optional: the
    delegate's own results, a dict by step name (the report's) or a
    sequence in the order the steps run (each int8 tensor a step's codes, as
    per-op delegates read through ETDump give them; each float tensor one of
    the program's returned values).

    Chapter: "Off to the edge" (book/15_edge).

    >>> import torch.ao.quantization.fx._decomposed  # PT2E's q/dq ops
    >>> Q = torch.ops.quantized_decomposed
    >>> class Graph(torch.nn.Module):  # a Linear as convert_pt2e writes it
    ...     def __init__(self):
    ...         super().__init__()
    ...         self.w = torch.nn.Parameter(torch.tensor([[2, 4], [-1, 1]], dtype=torch.int8), False)
    ...     def forward(self, x):
    ...         q = Q.dequantize_per_tensor(Q.quantize_per_tensor(x, 0.1, 1, -128, 127, torch.int8), 0.1, 1, -128, 127, torch.int8)
    ...         w = Q.dequantize_per_tensor(self.w, 0.01, 0, -127, 127, torch.int8)
    ...         return Q.quantize_per_tensor(torch.nn.functional.linear(q, w), 0.0037, 0, -128, 127, torch.int8)
    >>> report = compare_xnnpack(torch.fx.symbolic_trace(Graph()), torch.tensor([[0.9, -0.4]]))
    >>> [(step.op, step.differ, step.causes) for step in report.steps]
    [('convert', 0, {}), ('linear', 0, {})]
    """
    if not isinstance(converted, torch.fx.GraphModule):
        raise TypeError(
            f"compare_xnnpack takes a convert_pt2e graph (a torch.fx.GraphModule); got {type(converted).__name__}"
        )
    checks.float32_tensor(x, "x")
    if not (0 < tie_within < 0.5):
        raise ValueError(f"tie_within is a distance in codes, in (0, 0.5); got {tie_within}")
    quantized, returned = run_graph(converted, x)
    names = _step_names([node for node, _ in quantized])
    with torch.no_grad():
        reference = _Torch(converted)
        reference.run(x)
        local = _Torch(converted, {node: codes.codes for node, codes in quantized})
        local.run(x)
    theirs, outputs = _delegate_codes(delegate, names, [c.codes for _, c in quantized])
    steps = []
    for name, (node, codes) in zip(names, quantized, strict=True):
        steps.append(_step(name, node, codes, reference.kept, local, theirs.get(name), tie_within))
    returned = list(returned) if isinstance(returned, (list, tuple)) else [returned]
    output_differ = None
    if outputs:
        if len(outputs) != len(returned):
            raise ValueError(f"delegate gives {len(outputs)} float outputs; the graph returns {len(returned)}")
        output_differ = sum(_bits_differ(o, r) for o, r in zip(outputs, returned, strict=True))
    return XnnpackComparison(steps, output_differ)


def _bits_differ(a: torch.Tensor, b: torch.Tensor) -> int:
    if a.shape != b.shape or a.dtype != b.dtype:
        return max(a.numel(), b.numel())
    return int((a.contiguous().view(torch.int32) != b.contiguous().view(torch.int32)).sum())


def _delegate_codes(delegate, names, codes) -> tuple[dict[str, torch.Tensor], list[torch.Tensor]]:
    """The delegate's codes by step name, and its float outputs, each checked against the steps."""
    if delegate is None:
        return {}, []
    if isinstance(delegate, torch.Tensor):
        delegate = [delegate]
    if isinstance(delegate, Mapping):
        unknown = [k for k in delegate if k not in names and k != "output"]
        if unknown:
            raise ValueError(f"delegate names steps the graph does not have: {unknown}; its steps are {names}")
        out = delegate.get("output")
        outputs = [] if out is None else (list(out) if isinstance(out, (list, tuple)) else [out])
        by_name = {k: v for k, v in delegate.items() if k != "output"}
    else:
        items = list(delegate)
        if not all(isinstance(t, torch.Tensor) for t in items):
            raise TypeError("delegate must be a dict of tensors by step name, or a sequence of tensors")
        ints = [t for t in items if not t.is_floating_point()]
        if len(ints) > len(names):
            raise ValueError(f"delegate gives {len(ints)} int8 tensors; the graph has {len(names)} steps")
        by_name, outputs = dict(zip(names, ints, strict=False)), [t for t in items if t.is_floating_point()]
    ours = dict(zip(names, codes, strict=True))
    for name, t in by_name.items():
        if not isinstance(t, torch.Tensor) or t.dtype != torch.int8 or t.numel() != ours[name].numel():
            got = f"{t.dtype} {tuple(t.shape)}" if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(
                f"the delegate's codes of step {name} must be int8 with {ours[name].numel()} codes; got {got}"
            )
    return by_name, outputs


def _step(name, node, codes, kept, local, delegate, tie_within) -> XnnpackStep:
    x = codes.codes
    ref = kept[node][1]
    local_input, local_code = local.kept[node]
    differ = ref != x
    where = differ.nonzero()
    ref_d, x_d, local_d = ref[differ].long(), x[differ].long(), local_code[differ].long()
    carried = local_d == x_d
    op, label = _op_of(node)
    scale, zero_point = float(node.args[1]), int(node.args[2])
    kind = None if op is None else {"linear": "gemm", "conv2d": "gemm", "mean": "mean", "adaptive_avg_pool2d": "mean",
                                    "add": "add"}.get(_target_name(op))  # fmt: skip
    parts = {}
    if kind == "gemm":
        parts = _gemm_parts(op, local.env, scale)
    elif kind == "mean":
        parts = _mean_parts(op, local.env, scale, zero_point)
    elif kind == "add":
        parts = _add_parts(op, local.env, scale)
    if parts:
        parts = {k: v.reshape(x.shape) if v.numel() == x.numel() else v for k, v in parts.items()}
    inv = torch.tensor(1.0 / scale, dtype=torch.float32)  # PT2E's quantize, before rounding:
    ref_v = (local_input.float() * inv).double()[differ]  # on XNNPACK's inputs where the step made it,
    ref_v[carried] = (kept[node][0].float() * inv).double()[differ][carried]  # end to end where carried
    made = ~carried
    causes = ["carried"] * int(differ.sum())
    distances = torch.full((len(causes),), math.nan, dtype=torch.float64)
    if made.any():
        made_where = tuple(where[made].T)
        made_causes, made_distances = _classify(
            kind, parts, made_where, ref_v[made], zero_point, local_d[made], x_d[made], tie_within
        )
        for i, c in zip(made.nonzero().flatten().tolist(), made_causes, strict=True):
            causes[i] = c
        distances[made] = made_distances
    xnn_v = parts["xnnpack"][tuple(where.T)].double() if parts else torch.full_like(ref_v, math.nan)
    delegate_differ = None
    if delegate is not None:
        delegate = delegate.reshape(x.shape)
        delegate_differ = int((delegate != x).sum())
    finite = distances[~distances.isnan()]
    return XnnpackStep(
        name, label, x.numel(), int(differ.sum()), int((ref_d - x_d).abs().max()) if differ.any() else 0,
        dict(Counter(causes)), float(finite.max()) if finite.numel() else math.nan, delegate_differ,
        ref, x, delegate, where, ref_v, xnn_v, causes,
    )  # fmt: skip


@dataclass
class XnnpackExplanation:
    """``explain_xnnpack``'s answer for one output code: the reference's value before rounding and
    code, XNNPACK's ingredients (``acc`` without the bias, ``bias_q`` for the float bias's
    ``bias_steps`` accumulator steps, the float32 ``multiplier``), its value and code, and the
    ``cause``: ``"same"`` where the codes agree, else as ``compare_xnnpack`` names it.

    Chapter: "Off to the edge" (book/15_edge).
    """

    index: tuple[int, ...]
    reference_value: float
    reference_code: int
    acc: int
    bias_q: int
    bias_steps: float
    multiplier: float
    xnnpack_value: float
    xnnpack_code: int
    zero_point: int
    cause: str

    def __str__(self) -> str:
        sign = "-" if self.bias_q < 0 else "+"
        xnnpack = f"({self.acc} {sign} {abs(self.bias_q)}) * {self.multiplier:.6g}"  # its last bits follow s_y's
        width = max(len(xnnpack), len("y * (1 / s_y)"))
        lines = [
            f"reference  {'y * (1 / s_y)':{width}} = {self.reference_value:.5f} -> code {self.reference_code}",
            f"XNNPACK    {xnnpack:{width}} = {self.xnnpack_value:.5f} -> code {self.xnnpack_code}",
        ]
        if self.cause.startswith("tie"):
            tie = min(self.reference_code, self.xnnpack_code) - self.zero_point + 0.5
            lines.append(
                f"a tie at {tie:g} (zero point {self.zero_point}): reference {self.reference_value - tie:+.5f}, "
                f"XNNPACK {self.xnnpack_value - tie:+.5f}"
            )
            part = self.cause.removeprefix("tie: ")
            detail = f" ({self.bias_q} for {self.bias_steps:.4f} accumulator steps)" if part == "bias" else ""
            lines.append(f"moved across by: {_PART_WORDS[part]}{detail}")
        else:
            lines.append(f"cause: {self.cause}")
        return "\n".join(lines)

    __repr__ = __str__


_PART_WORDS = {
    "bias": "the bias rounded to int32",
    "multiplier": "the float32 multiplier",
    "accumulation": "the reference's float32 sums (XNNPACK's int32 sum is exact)",
    "combined": "no one ingredient alone",
}


def explain_xnnpack(
    x: torch.Tensor,
    x_scale: float,
    x_zero_point: int,
    weight: torch.Tensor,
    weight_scale: float | torch.Tensor,
    bias: torch.Tensor | None,
    scale: float,
    zero_point: int,
    index: tuple[int, ...],
    *,
    stride: int | tuple[int, int] = 1,
    padding: int | tuple[int, int] = 0,
    dilation: int | tuple[int, int] = 1,
    groups: int = 1,
    output_min: float = -math.inf,
    output_max: float = math.inf,
) -> XnnpackExplanation:
    """One output code of XNNPACK's Linear (``weight`` 2-d) or convolution (4-d) beside the PT2E reference's.

    The arguments are ``xnnpack_linear``'s and ``xnnpack_conv2d``'s, and
    ``index``, the output's position. The reference computes as torch runs
    the converted graph: the dequantized input and weight (float32), the
    float32 Linear or convolution plus the float bias, the fused activation's
    clamp, then PT2E's quantize, ``rint(float32(y * float32(1 / s_y))) + z_y``.
    The cause of a difference: the module docstring.

    Chapter: "Off to the edge" (book/15_edge).

    >>> x, w = torch.tensor([[1]], dtype=torch.int8), torch.tensor([[1]], dtype=torch.int8)
    >>> print(explain_xnnpack(x, 0.5, 0, w, 0.5, torch.tensor([0.3]), 1.0, 0, (0, 0)))
    reference  y * (1 / s_y)  = 0.55000 -> code 1
    XNNPACK    (1 + 1) * 0.25 = 0.50000 -> code 0
    a tie at 0.5 (zero point 0): reference +0.05000, XNNPACK +0.00000
    moved across by: the bias rounded to int32 (1 for 1.2000 accumulator steps)
    """
    conv = isinstance(weight, torch.Tensor) and weight.dim() == 4
    kwargs = {"output_min": output_min, "output_max": output_max}
    if conv:
        conv_args: list[Any] | None = [stride, padding, dilation, groups]
        codes = xnnpack_conv2d(x, x_scale, x_zero_point, weight, weight_scale, bias, scale, zero_point,
                               stride=stride, padding=padding, dilation=dilation, groups=groups, **kwargs)  # fmt: skip
    else:
        conv_args = None
        codes = xnnpack_linear(x, x_scale, x_zero_point, weight, weight_scale, bias, scale, zero_point, **kwargs)
    index = tuple(index)
    if len(index) != codes.dim() or any(not -n <= i < n for i, n in zip(index, codes.shape, strict=True)):
        raise ValueError(f"index must name one output of shape {tuple(codes.shape)}; got {index}")
    parts = _gemm_values(x, x_scale, x_zero_point, weight, weight_scale, bias, scale, conv_args)
    per_channel = isinstance(weight_scale, torch.Tensor) and weight_scale.dim() == 1
    x_dq = dequantize_pt2e(x, x_scale, x_zero_point)
    w_dq = (
        dequantize_pt2e(weight, weight_scale, None, axis=0) if per_channel else dequantize_pt2e(weight, weight_scale, 0)
    )
    b = None if bias is None else bias.float()
    if conv_args is not None:
        y = torch.nn.functional.conv2d(x_dq, w_dq, b, *conv_args)
    else:
        y = torch.nn.functional.linear(x_dq, w_dq, b)
    y = y.clamp(output_min, output_max)
    v_ref = float((y * torch.tensor(1.0 / scale, dtype=torch.float32))[index])
    ref_code = int(min(max(round(v_ref) + zero_point, -128), 127))  # round: half to even, as torch.round
    lo, hi = output_bounds(output_min, output_max, float32(scale), zero_point)
    ref_code = min(max(ref_code, lo), hi)
    channel = index[1] if conv else index[-1]
    xnn_code = int(codes[index])
    cause = "same"
    if xnn_code != ref_code:
        where = tuple(torch.tensor([i]) for i in index)
        ref_t, z = torch.tensor([v_ref], dtype=torch.float64), zero_point
        causes, _ = _classify("gemm", parts, where, ref_t, z, torch.tensor([ref_code]), torch.tensor([xnn_code]), 0.5)
        cause = causes[0]
    return XnnpackExplanation(
        index, v_ref, ref_code, int(parts["acc"][index]), int(parts["bias_q"][channel]),
        float(parts["bias_steps"][channel]), float(parts["multiplier"][channel]),
        float(parts["xnnpack"][index]), xnn_code, zero_point, cause,
    )  # fmt: skip
