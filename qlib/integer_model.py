"""A whole eager-mode quantized model, run integer by integer with qlib's operators.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

``run(model, x)`` takes a model converted by ``torch.ao.quantization.convert`` (eager mode),
traces its ``forward`` with ``torch.fx`` and computes every step with qlib: ``Quantize``,
quantized ``Conv2d``/``ConvReLU2d``, ``Linear``/``LinearReLU``, ``ReLU``, the ``add`` of a
``QFunctional`` (``FloatFunctional`` after convert), ``flatten``/``reshape``/``view`` and
``DeQuantize``. It returns every intermediate tensor as integer codes with its scale and zero
point. A module it does not model raises an error that names it.

``compare(float_model, quantized_model, x)`` puts each layer of the quantized model beside the
same layer of the float model it came from (the model as fused, before ``prepare``): the
signal-to-quantization-noise ratio of torch's dequantized activation against the float one, the
largest error, and whether torch's integers are exactly what qlib computes for that layer from
torch's own inputs.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field

import torch

from qlib.dequant import dequantize
from qlib.quant import quantize
from qlib.quantized_add import add
from qlib.quantized_conv import conv2d
from qlib.quantized_linear import linear

# The modules and functions run() models, by their class or function name.
LAYOUT_FUNCTIONS = ("flatten", "reshape", "view", "contiguous")


@dataclass
class Activation:
    """One step of a quantized model: the integer ``codes`` it produced, with ``scale`` and
    ``zero_point`` (None for the float output of ``DeQuantize``, whose values are in ``codes``).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> Activation("fc", "Linear", torch.tensor([3], dtype=torch.uint8), 0.1, 0).dequantized()
    tensor([0.3000])
    """

    name: str
    op: str
    codes: torch.Tensor
    scale: float | None
    zero_point: int | None

    def dequantized(self) -> torch.Tensor:
        """The float32 values the codes stand for (the values themselves after ``DeQuantize``)."""
        if self.scale is None:
            return self.codes
        return dequantize(self.codes, self.scale, self.zero_point)


@dataclass
class Run:
    """What ``run`` computed: ``activations`` by step name, in the order the model runs them,
    and ``output``, the last one.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> result = Run({"fc": Activation("fc", "Linear", torch.tensor([3], dtype=torch.uint8), 0.1, 0)})
    >>> result.output.name, result.output.dequantized()
    ('fc', tensor([0.3000]))
    """

    activations: dict[str, Activation] = field(default_factory=dict)

    @property
    def output(self) -> Activation:
        return list(self.activations.values())[-1]


def run(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    pairs_saturate: bool | None = None,
    release: str | None = None,
) -> Run:
    """Run an eager-mode quantized model on float32 ``x`` with qlib's operators.

    Every step's integers equal torch's bit for bit where qlib models the
    kernel torch runs (see each operator's docstring: ``qlib.linear``,
    ``qlib.conv2d``, ``qlib.add``). ``pairs_saturate`` and ``release`` are
    passed to the operators (None: the CPU and torch at hand).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> model = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.ReLU()).eval()
    >>> model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    >>> prepared = torch.ao.quantization.prepare(model)
    >>> _ = prepared(torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> result = run(torch.ao.quantization.convert(prepared), torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> [(name, step.codes.tolist()) for name, step in result.activations.items()]
    [('0', [[0, 63, 127]]), ('1', [[42, 63, 127]])]
    """
    graph = _trace(model)
    names = _step_names(graph)
    values: dict[str, object] = {}
    result = Run()
    for node in graph.nodes:
        if node.op == "placeholder":
            values[node.name] = x
        elif node.op == "output":
            break
        else:
            inputs = [values[a.name] if hasattr(a, "name") else a for a in node.args]
            step = _step(model, node, inputs, pairs_saturate, release)
            values[node.name] = step
            _record(result.activations, names[node.name], step, inputs)
    return result


def _record(activations: dict[str, Activation], name: str, step: object, inputs: list) -> None:
    """Keep each new activation under its step's name (Identity steps add nothing new)."""
    if isinstance(step, Activation) and not any(step is value for value in inputs):
        step.name = name
        activations[name] = step


def _step_names(graph: torch.fx.Graph) -> dict[str, str]:
    """Each node's name in reports: a module's path, an add its FloatFunctional's, else the node's."""
    names = {}
    for node in graph.nodes:
        names[node.name] = str(node.target) if node.op == "call_module" else node.name
        users = list(node.users)
        if (
            node.op == "call_function"
            and str(node.target).startswith("quantized.add")
            and len(users) == 1
            and users[0].op == "call_module"
            and str(users[0].target).endswith(".activation_post_process")
        ):
            names[node.name] = str(users[0].target).removesuffix(".activation_post_process")
    return names


def _trace(model: torch.nn.Module) -> torch.fx.Graph:
    try:
        # the graph alone: symbolic_trace would also build and compile a GraphModule, which run() does not need
        return torch.fx.Tracer().trace(model)
    except Exception as error:  # fx raises many kinds of error for untraceable code
        raise ValueError(
            f"qlib.run traces the model's forward with torch.fx, which failed: {type(error).__name__}: {error}. "
            "Models with data-dependent control flow cannot be traced"
        ) from error


def _step_name(node: torch.fx.Node) -> str:
    if node.op == "call_module":
        return str(node.target)
    return node.name


def _step(model, node, inputs, pairs_saturate, release):
    """The result of one graph node: an Activation, or for layout functions the rearranged one."""
    if node.op == "call_module":
        module = model.get_submodule(node.target)
        return _module_step(str(node.target), module, inputs[0], pairs_saturate, release)
    name = getattr(node.target, "__name__", str(node.target))
    if node.op == "call_function" and node.target is getattr and inputs[1] in ("shape", "ndim"):
        return getattr(inputs[0].codes, inputs[1])  # shape arithmetic for a reshape
    if node.op == "call_function" and name == "getitem" and not isinstance(inputs[0], Activation):
        return inputs[0][inputs[1]]
    if node.op == "call_method" and name == "size" and isinstance(inputs[0], Activation):
        return inputs[0].codes.size(*inputs[1:])
    if node.op in ("call_function", "call_method") and name in LAYOUT_FUNCTIONS:
        source = inputs[0]
        codes = getattr(source.codes, name)(*inputs[1:], **node.kwargs)
        return Activation(node.name, name, codes, source.scale, source.zero_point)
    if node.op == "call_function" and str(node.target) in ("quantized.add", "quantized.add_relu"):
        a, b = inputs
        codes = add(
            a.codes, a.scale, a.zero_point, b.codes, b.scale, b.zero_point,
            node.kwargs["scale"], node.kwargs["zero_point"], relu=str(node.target).endswith("relu"), release=release,
        )  # fmt: skip
        return Activation(node.name, "add", codes, float(node.kwargs["scale"]), int(node.kwargs["zero_point"]))
    raise ValueError(f"qlib.run does not model {node.op} {node.target!r} (node {node.name})")


def _module_step(name, module, source, pairs_saturate, release):
    kind = type(module).__name__
    home = type(module).__module__
    quantized = "quantized" in home
    if kind == "Quantize":
        scale, zero_point = float(module.scale), int(module.zero_point)
        return Activation(
            name, kind, quantize(source, scale, zero_point, module.dtype, release=release), scale, zero_point
        )
    if kind == "DeQuantize":
        return Activation(name, kind, source.dequantized(), None, None)
    if kind in ("Identity",) or (kind == "Dropout" and not module.training):
        return source
    if kind == "Flatten":
        return Activation(
            name, kind, source.codes.flatten(module.start_dim, module.end_dim), source.scale, source.zero_point
        )
    if kind == "ReLU":
        codes = torch.maximum(source.codes, torch.tensor(source.zero_point, dtype=source.codes.dtype))
        return Activation(name, kind, codes, source.scale, source.zero_point)
    if quantized and kind in ("Linear", "LinearReLU"):
        weight_scale, weight_zero_point, weight = _weight(module.weight())
        codes = linear(
            source.codes, source.scale, source.zero_point, weight, weight_scale, weight_zero_point,
            module.bias(), module.scale, module.zero_point, relu=kind == "LinearReLU",
            pairs_saturate=pairs_saturate, release=release,
        )  # fmt: skip
        return Activation(name, kind, codes, float(module.scale), int(module.zero_point))
    if quantized and kind in ("Conv2d", "ConvReLU2d"):
        if module.padding_mode != "zeros":
            raise ValueError(f"qlib.run models zero padding only; {name} pads with {module.padding_mode!r}")
        weight_scale, weight_zero_point, weight = _weight(module.weight())
        codes = conv2d(
            source.codes, source.scale, source.zero_point, weight, weight_scale, weight_zero_point,
            module.bias(), module.scale, module.zero_point, stride=module.stride, padding=module.padding,
            dilation=module.dilation, groups=module.groups, relu=kind == "ConvReLU2d",
            pairs_saturate=pairs_saturate, release=release,
        )  # fmt: skip
        return Activation(name, kind, codes, float(module.scale), int(module.zero_point))
    raise ValueError(
        f"qlib.run does not model the module {name} ({home}.{kind}); it models Quantize, DeQuantize, quantized "
        "Linear, LinearReLU, Conv2d, ConvReLU2d, ReLU, Identity, Flatten, QFunctional.add and flatten/reshape/view"
    )


def _weight(weight: torch.Tensor) -> tuple:
    """(scale, zero point, int8 codes) of a quantized weight, per tensor or per output channel."""
    if weight.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
        if weight.q_per_channel_axis() != 0:
            raise ValueError(f"per-channel weights must be quantized along axis 0; got {weight.q_per_channel_axis()}")
        return weight.q_per_channel_scales().float(), weight.q_per_channel_zero_points(), weight.int_repr()
    return weight.q_scale(), weight.q_zero_point(), weight.int_repr()


@dataclass
class LayerComparison:
    """One layer in ``compare``'s report.

    ``sqnr_db``: ``10 log10(sum f**2 / sum (f - q)**2)`` of torch's dequantized
    activation ``q`` against the float model's ``f`` (``inf`` when equal);
    ``max_error``: ``max |f - q|``; ``exact``: whether torch's integers equal
    qlib's computation of the layer from torch's own inputs; ``mismatches``:
    how many do not.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> LayerComparison("fc", "Linear", 31.7, 0.0115, True, 0, 20).exact
    True
    """

    name: str
    op: str
    sqnr_db: float
    max_error: float
    exact: bool
    mismatches: int
    numel: int


@dataclass
class Comparison:
    """``compare``'s report: ``layers`` in the order the model runs them.

    ``str(report)`` is a plain-text table, a notebook shows an HTML table, and
    ``plot()`` draws SQNR by layer.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> print(Comparison([LayerComparison("fc", "Linear", 31.7, 0.0115, True, 0, 20)]))
    layer  op      SQNR dB  max error  torch = qlib
    fc     Linear  31.7     0.0115     yes
    """

    layers: list[LayerComparison]
    unmatched: list[str] = field(default_factory=list)

    def first_departure(self, threshold_db: float) -> LayerComparison | None:
        """The first layer whose SQNR falls below ``threshold_db``, or None."""
        return next((layer for layer in self.layers if layer.sqnr_db < threshold_db), None)

    def _rows(self) -> tuple[list[str], list[list[str]]]:
        head = ["layer", "op", "SQNR dB", "max error", "torch = qlib"]
        body = [
            [
                layer.name,
                layer.op,
                "inf" if math.isinf(layer.sqnr_db) else f"{layer.sqnr_db:.1f}",
                f"{layer.max_error:.3g}",
                "yes" if layer.exact else f"no: {layer.mismatches:,} of {layer.numel:,}",
            ]
            for layer in self.layers
        ]
        return head, body

    def _note(self) -> str | None:
        if not self.unmatched:
            return None
        return (
            f"not compared, no layer of that name in the float model: {', '.join(self.unmatched)} "
            "(pass the float model as fused, before prepare)"
        )

    def __str__(self) -> str:
        head, body = self._rows()
        widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
        lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
        return "\n".join(lines + ([self._note()] if self._note() else []))

    __repr__ = __str__

    def _repr_html_(self) -> str:
        head, body = self._rows()
        rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
        rows += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
        note = f"<p>{html.escape(self._note())}</p>" if self._note() else ""
        return '<table class="qlib-report">' + "".join(rows) + "</table>" + note

    def plot(self, ax=None):
        """A bar chart of SQNR (dB) by layer; returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3))
        finite = [min(layer.sqnr_db, 99.0) for layer in self.layers]
        ax.bar(range(len(finite)), finite, color=["C0" if layer.exact else "C3" for layer in self.layers])
        ax.set_xticks(range(len(finite)), [layer.name for layer in self.layers], rotation=30, ha="right")
        ax.set_ylabel("SQNR against the float model (dB)")
        return ax


def compare(
    float_model: torch.nn.Module,
    quantized_model: torch.nn.Module,
    x: torch.Tensor,
    *,
    pairs_saturate: bool | None = None,
    release: str | None = None,
) -> Comparison:
    """Each layer of ``quantized_model`` against the same layer of ``float_model``, on ``x``.

    ``float_model`` is the float model as it was fused, before ``prepare``
    (so that ``conv1`` holds the conv and its ReLU, as in the quantized
    model); layers are matched by module name, an add by its
    ``FloatFunctional``'s name. Every quantized layer is also recomputed by
    qlib from torch's own input codes, which says whether torch's integers
    are exactly that layer's arithmetic.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> float_model = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.ReLU()).eval()
    >>> float_model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    >>> prepared = torch.ao.quantization.prepare(float_model)
    >>> _ = prepared(torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> report = compare(float_model, torch.ao.quantization.convert(prepared), torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> [(layer.name, layer.exact) for layer in report.layers]
    [('0', True), ('1', True)]
    """
    graph = _trace(quantized_model)
    names = _step_names(graph)
    float_out = _capture(float_model, x)
    torch_values = _torch_values(quantized_model, graph, x)
    layers, unmatched = [], []
    for node in graph.nodes:
        if node.op in ("placeholder", "output"):
            continue
        inputs = [_as_activation(torch_values[a.name]) if isinstance(a, torch.fx.Node) else a for a in node.args]
        step = _step(quantized_model, node, inputs, pairs_saturate, release)
        theirs, name = torch_values[node.name], names[node.name]
        reference = float_out.get(name, float_out.get(f"{name}.activation_post_process"))
        new = isinstance(step, Activation) and not any(step is value for value in inputs)
        if not new or step.scale is None or step.op in LAYOUT_FUNCTIONS:
            continue
        if reference is None:
            unmatched.append(name)
            continue
        codes = theirs.int_repr()
        mismatches = int((codes != step.codes).sum())
        error = (reference - theirs.dequantize()).double()
        noise, signal = error.pow(2).sum().item(), reference.double().pow(2).sum().item()
        sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
        layers.append(
            LayerComparison(name, step.op, sqnr, error.abs().max().item(), mismatches == 0, mismatches, codes.numel())
        )
    return Comparison(layers, unmatched)


def _torch_values(model: torch.nn.Module, graph: torch.fx.Graph, x: torch.Tensor) -> dict[str, object]:
    """What torch computes at every node of the traced model."""
    values: dict[str, object] = {}

    class Recorder(torch.fx.Interpreter):
        def run_node(self, n):
            values[n.name] = super().run_node(n)
            return values[n.name]

    with torch.no_grad():
        Recorder(torch.fx.GraphModule(model, graph)).run(x)
    return values


def _as_activation(value: object) -> object:
    if isinstance(value, torch.Tensor) and value.is_quantized:
        return Activation("torch", "torch", value.int_repr(), value.q_scale(), value.q_zero_point())
    return value


def _capture(model: torch.nn.Module, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Every submodule's output on ``x``, by module name (the last call wins)."""
    out: dict[str, torch.Tensor] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: out.__setitem__(name, o))
        for name, module in model.named_modules()
        if name
    ]
    try:
        with torch.no_grad():
            model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return out
