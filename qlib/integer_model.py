"""A whole quantized model, run integer by integer with qlib's operators.

Explained in the book chapter "A whole model, integer by integer" (``book/10_model``).

``run(model, x)`` runs the model's own ``forward`` in torch and watches every op torch calls
(a ``TorchDispatchMode``: below the modules, where torch picks its kernels). At each op of
``qlib.registry.OPERATORS`` (quantize, quantized Conv2d and Linear, add, ReLU, ...) qlib computes
the result and hands it on in place of torch's, so every later op works on qlib's integers. Ops
that only move codes (``view``, ``transpose``...) and ops on float tensors run in torch as they
are; any other op on a quantized tensor raises an error that names it, its module and the table.
Each call is a step of its own, in call order: a module called twice gives two steps
(``relu`` and ``relu#2``). Steps are named by module path; an op of a ``FloatFunctional`` by the
``FloatFunctional``'s name. A model after torchao's ``quantize_`` is watched one level higher too:
its weights compute ``F.linear`` in their ``__torch_function__``, so ``run`` meets each Linear there
(a ``TorchFunctionMode``) and computes it with ``qlib.llm_weights``; the float ops between the
Linears (norms, attention, SiLU) run in torch.

``compare(float_model, quantized_model, x)`` runs the quantized model once in torch, keeps
torch's integers at every step and computes qlib's beside them from torch's own inputs, and
puts each step beside the same module of the float model: the signal-to-quantization-noise
ratio of torch's result against the float one, the largest error, and how many integers differ.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import cast

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode, _disable_current_modes
from torch.utils._pytree import tree_flatten

# the operator modules register their ops when imported
from qlib import (  # noqa: F401
    activations,
    batchnorm,
    dynamic,
    functional,
    pooling,
    pt2e_ops,
    quant,
    quantized_add,
    quantized_conv,
    quantized_linear,
)
from qlib.dequant import dequantize
from qlib.llm_weights import torchao_linear_op
from qlib.prose import html_table, text_table
from qlib.registry import LAYOUT_OPS, OPERATORS, Operator, Settings, op_name, supported
from qlib.xnnpack_graph import run_graph

QUANTIZED_NAMESPACES = ("quantized", "quantized_decomposed")


@dataclass
class Activation:
    """One step of a quantized model: the integer ``codes`` it produced, with ``scale`` and
    ``zero_point`` (None for a float result, such as ``DeQuantize``'s, whose values are in ``codes``).

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
        """The float32 values the codes stand for (the values themselves for a float result)."""
        if self.scale is None:
            return self.codes
        # zero_point comes with scale (None with it only for a float result); dequantize checks it
        return dequantize(self.codes, self.scale, cast(int, self.zero_point))


@dataclass
class Run:
    """What ``run`` computed: ``activations`` by step name, in call order, and ``output``, what the
    model returned (computed on qlib's integers).

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> result = Run({"fc": Activation("fc", "Linear", torch.tensor([3], dtype=torch.uint8), 0.1, 0)})
    >>> result.output.name, result.output.dequantized()
    ('fc', tensor([0.3000]))
    """

    activations: dict[str, Activation] = field(default_factory=dict)
    returned: Activation | None = None

    @property
    def output(self) -> Activation:
        return self.returned if self.returned is not None else list(self.activations.values())[-1]


@dataclass
class _Step:
    name: str
    op: str  # the module's class name, or the torch op's
    module: str  # the module path the op ran in ("" for the model's own forward)
    ours: object
    theirs: object = None
    owned: bool = False  # named after a module (or a FloatFunctional), not after the op
    qparams: tuple[float, int] | None = None  # the scale and zero point of plain integer codes (PT2E)

    def result(self) -> object:
        return self.theirs if self.theirs is not None else self.ours


class _Namer:
    """Names each step by the module it ran in, from forward hooks on every module of the model.

    A step is first named after its op inside the module it ran in (``block.add``); when that
    module returns its result, the step takes the module's name (``fc1``); when a
    FloatFunctional's ``activation_post_process`` passes it on, the FloatFunctional's
    (``block.skip``). A name met again gets ``#2``, ``#3``, ... in call order.
    """

    def __init__(self, model: torch.nn.Module) -> None:
        self.stack: list[tuple[str, torch.nn.Module]] = []
        self.steps: list[_Step] = []
        self.node: torch.fx.Node | None = None  # the graph node running, in a PT2E model
        self.hooks = []
        for path, module in model.named_modules():
            self.hooks.append(module.register_forward_pre_hook(lambda m, i, path=path: self.stack.append((path, m))))
            self.hooks.append(module.register_forward_hook(lambda m, i, o, path=path: self._leave(path, m, o)))

    def _leave(self, path: str, module: torch.nn.Module, output: object) -> None:
        self.stack.pop()
        step = self.steps[-1] if self.steps else None
        if step is None or step.owned or step.result() is not output:
            return
        if path.endswith(".activation_post_process"):  # FloatFunctional.add(x, y): the op, then this
            step.name, step.owned = path.removesuffix(".activation_post_process"), True
        elif step.module == path and path:
            step.name, step.op, step.owned = path, type(module).__name__, True

    def add(self, op: str, ours: object, theirs: object = None) -> _Step:
        if self.node is not None:
            name, owned = _node_step_name(self.node)
            step = _Step(name, op, name if owned else "", ours, theirs, owned)
            self.steps.append(step)
            return step
        path = self.stack[-1][0] if self.stack else ""
        step = _Step(f"{path}.{op}" if path else op, op, path, ours, theirs)
        self.steps.append(step)
        return step

    def finish(self) -> list[_Step]:
        for hook in self.hooks:
            hook.remove()
        return self.finish_steps(self.steps)

    @staticmethod
    def finish_steps(steps: list[_Step]) -> list[_Step]:
        """A name met again gets ``#2``, ``#3``, ... in call order."""
        seen: Counter[str] = Counter()
        for step in steps:
            seen[step.name] += 1
            if seen[step.name] > 1:
                step.name = f"{step.name}#{seen[step.name]}"
        return steps


def _module_path(node: torch.fx.Node) -> str:
    """The module a PT2E graph node came from (torch.export records it), or ""."""
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _node_step_name(node: torch.fx.Node) -> tuple[str, bool]:
    """A PT2E q/dq node's step name, and whether it names a module: a quantize node is named after the
    module whose output it quantizes (``conv``), a weight's dequantize after its user (``conv.weight``)."""
    source = node.args[0] if node.args else None
    if not isinstance(source, torch.fx.Node):
        return node.name, False
    if "dequantize" not in str(node.target):
        if source.op == "placeholder":
            return source.name, True
        path = _module_path(source)
        return (path, True) if path else (node.name, False)
    if source.op == "get_attr":
        users = [_module_path(user) for user in node.users]
        return (f"{users[0]}.weight", False) if users and users[0] else (node.name, False)
    return node.name, False


class _GraphRunner(torch.fx.Interpreter):
    """Runs a GraphModule node by node, telling the namer which node is running."""

    def __init__(self, model: torch.fx.GraphModule, namer: _Namer) -> None:
        super().__init__(model)
        self.namer = namer

    def run_node(self, n: torch.fx.Node) -> object:
        self.namer.node = n
        try:
            return super().run_node(n)
        finally:
            self.namer.node = None


class _Watch(TorchDispatchMode):
    """Computes every registered op with qlib (``keep_torch``: beside torch's result, else in its place)."""

    def __init__(self, namer: _Namer, settings: Settings, keep_torch: bool) -> None:
        super().__init__()
        self.namer, self.settings, self.keep_torch = namer, settings, keep_torch
        self.modelled = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = op_name(func)
        row = OPERATORS.get(name)
        if row is not None and not row.on_float and not _holds_quantized((args, kwargs)):
            row = None  # a float ReLU, say: torch's
        if row is None:
            result = None
            if name not in LAYOUT_OPS:
                _refuse_unmodelled(name, self.namer, _holds_quantized((args, kwargs)))
                result = func(*args, **kwargs)
                _refuse_unmodelled(name, self.namer, _holds_quantized(result))
                return result
            return func(*args, **kwargs)
        return self.model(name, row, func, args, kwargs)

    def model(self, name: str, row: Operator, func, args: tuple, kwargs: dict):
        """qlib's result of one call of a registered op, recorded as a step (and torch's beside it)."""
        self.modelled += 1
        short = name.split("::")[1]
        try:
            ours = row.compute(args, kwargs, self.settings)
        except Exception as error:
            where = _where(self.namer)
            raise type(error)(f"qlib.run: {where}, torch op {name} ({row.function}): {error}") from error
        qparams = row.qparams(args) if row.qparams is not None else None
        if self.keep_torch:
            theirs = func(*args, **kwargs)
            self.namer.add(short, ours, theirs).qparams = qparams
            return theirs
        if name.endswith("_") and isinstance(args[0], torch.Tensor):  # in place, as torch's relu_
            args[0].copy_(ours)
            ours = args[0]
        self.namer.add(short, ours).qparams = qparams
        return ours


# Functions that compute with their weight: on a torchao weight qlib does not model, run refuses them.
TORCHAO_COMPUTE = frozenset(("linear", "embedding", "conv1d", "conv2d", "conv3d", "matmul", "mm", "bmm", "addmm"))


class _WatchTorchao(TorchFunctionMode):
    """``F.linear`` on a torchao weight (``quantize_``): computed by qlib, as ``_Watch`` does at the dispatcher.

    torchao's weight subclasses compute ``F.linear`` in their ``__torch_function__``, so below it the
    dispatcher sees only float ops on plain tensors (``aten::mm``, ``aten::_int_mm``...). This mode meets
    the call above them, where the weight still says what it is (``qlib.llm_weights.torchao_linear_op``).
    Any other compute op on a torchao weight (an embedding, a convolution) is refused.
    """

    def __init__(self, watch: _Watch) -> None:
        super().__init__()
        self.watch = watch

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        weight = None
        if func is torch.nn.functional.linear:
            weight = args[1] if len(args) > 1 else kwargs.get("weight")
            name = torchao_linear_op(weight)
            if name is not None:
                with _disable_current_modes():  # below this call there are only float ops: no need to watch them
                    return self.watch.model(name, OPERATORS[name], func, args, kwargs)
        if getattr(func, "__name__", "") in TORCHAO_COMPUTE:
            weight = next((leaf for leaf in tree_flatten((args, kwargs))[0] if _is_torchao(leaf)), None)
        if _is_torchao(weight):
            raise ValueError(
                f"qlib.run does not model {getattr(func, '__name__', func)} on torchao's {type(weight).__name__}, "
                f"called {_where(self.watch.namer)}. qlib models F.linear on the weights of torchao's CPU configs: "
                "Int8Tensor, IntxUnpackedToInt8Tensor, Int4OpaqueTensor (see qlib.llm_weights)"
            )
        return func(*args, **kwargs)


def _is_torchao(value: object) -> bool:
    return isinstance(value, torch.Tensor) and type(value).__module__.startswith("torchao.")


def _holds_quantized(tree: object) -> bool:
    leaves, _ = tree_flatten(tree)
    return any(isinstance(leaf, torch.Tensor) and leaf.is_quantized for leaf in leaves)


def _where(namer: _Namer) -> str:
    if not namer.stack or not namer.stack[-1][0]:
        return "in the model's forward"
    path, module = namer.stack[-1]
    return f"in {path} ({type(module).__module__}.{type(module).__name__})"


def _refuse_unmodelled(name: str, namer: _Namer, quantized: bool) -> None:
    if quantized or name.split("::")[0] in QUANTIZED_NAMESPACES:
        raise ValueError(
            f"qlib.run does not model the torch op {name} on quantized tensors, called {_where(namer)}. "
            f"qlib models {'; '.join(supported())}; ops that only move codes (qlib.registry.LAYOUT_OPS: view, "
            "transpose, ...) and ops on float tensors run in torch"
        )


def _activation(step: _Step, value: object) -> Activation:
    if isinstance(value, torch.Tensor) and value.is_quantized:
        return Activation(step.name, step.op, value.int_repr(), value.q_scale(), value.q_zero_point())
    if step.qparams is not None and isinstance(value, torch.Tensor) and not value.is_floating_point():
        return Activation(step.name, step.op, value, *step.qparams)
    return Activation(step.name, step.op, cast(torch.Tensor, value), None, None)  # a float result


def _check_converted(model: torch.nn.Module) -> None:
    for path, module in model.named_modules():
        if callable(getattr(module, "calculate_qparams", None)):
            raise ValueError(
                f"this model is prepared but not converted: {path or 'the model'} "
                f"({type(module).__name__}) still observes. Calibrate it, then call "
                "torch.ao.quantization.convert (eager mode) or convert_pt2e (PT2E) and pass the result"
            )


def _watch(model, x, settings: Settings, keep_torch: bool) -> tuple[list[_Step], object]:
    _check_converted(model)
    namer = _Namer(model)
    watch = _Watch(namer, settings, keep_torch)
    graph = isinstance(model, torch.fx.GraphModule)
    torchao = any(_is_torchao(p) for p in model.parameters())
    try:
        with torch.no_grad(), watch, _WatchTorchao(watch) if torchao else contextlib.nullcontext():
            returned = _GraphRunner(model, namer).run(x) if graph else model(x)
    except AttributeError as error:
        if "'function' object has no attribute" in str(error) and "mha" not in str(error):
            raise ValueError(
                f"the model's own forward failed in torch ({error}): torch's Transformer fast path reads "
                "each Linear's .weight, a method on dynamically quantized Linear modules. Call "
                "torch.backends.mha.set_fastpath_enabled(False) first (torch fails the same way without qlib)"
            ) from error
        raise
    finally:
        steps = namer.finish()
    if watch.modelled == 0:
        raise ValueError(
            "this is a float model: torch called none of the quantized ops qlib models. Quantize it first "
            "(eager mode: prepare, calibrate, convert; or quantize_dynamic; or PT2E's convert_pt2e; or torchao's "
            "quantize_ with a CPU config of qlib.llm_weights)"
        )
    return steps, returned


def _is_onnx(model: object) -> bool:
    """An ``onnx.ModelProto`` (onnx is imported if one exists) or a path, which only an ONNX model can be."""
    onnx = sys.modules.get("onnx")
    return isinstance(model, (str, os.PathLike)) or (onnx is not None and isinstance(model, onnx.ModelProto))


def run(
    model: torch.nn.Module,
    x: torch.Tensor,
    *,
    pairs_saturate: bool | None = None,
    release: str | None = None,
    backend: str | None = None,
) -> Run:
    """Run a quantized model on float32 ``x`` with qlib's operators.

    ``model`` may also be an ONNX model (an ``onnx.ModelProto`` or a path): then
    qlib runs the graph ONNX Runtime runs, node by node (``qlib.onnx_model``),
    ``x`` is one tensor or a dict by input name, and ``release`` does not apply.

    Every step's integers equal torch's bit for bit where qlib models the
    kernel torch runs (see each operator's docstring: ``qlib.linear``,
    ``qlib.conv2d``, ``qlib.add``). ``pairs_saturate`` and ``release`` are
    passed to the operators (None: the CPU and torch at hand). Each Conv and
    Linear follows the backend its weight was packed for.

    A model after torchao's ``quantize_`` (the CPU configs of
    ``qlib.llm_weights``) runs too: each Linear's output is the function of
    ``qlib.llm_weights`` for its weight, named by module path, and the float
    ops between the Linears run in torch. The int4 kernel and the dynamic
    int8 ``_int_mm`` path are modelled to the last bit; on the weight-only
    int8 and intx paths qlib computes the matmul's operands bit for bit and
    calls torch's own float matmul on them, as torchao does (qlib does not
    model MKL's or oneDNN's float accumulation order).

    ``backend="xnnpack"``: ``model`` is a ``convert_pt2e`` graph quantized with
    ExecuTorch's ``XNNPACKQuantizer``, run as the XNNPACK delegate runs it once
    lowered, each ``dequantize -> op -> quantize`` one integer operator of
    ``qlib.xnnpack`` (``qlib.xnnpack_graph``); a step per quantize node, and
    ``output`` the first returned tensor, converted to float32 as XNNPACK does.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> model = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.ReLU()).eval()
    >>> model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    >>> prepared = torch.ao.quantization.prepare(model)
    >>> _ = prepared(torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> result = run(torch.ao.quantization.convert(prepared), torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> [(name, step.codes.tolist()) for name, step in result.activations.items()]
    [('0', [[0, 63, 127]]), ('1', [[42, 63, 127]])]
    """
    if _is_onnx(model):  # its nodes as ONNX Runtime runs them (qlib.onnx_model: the package, not a one-file copy)
        from qlib.onnx_model import run_onnx

        return run_onnx(model, x, pairs_saturate=pairs_saturate)
    if backend == "xnnpack":
        return _run_xnnpack(model, x)
    if backend is not None:
        raise ValueError(f"backend must be None (torch's own kernels) or 'xnnpack'; got {backend!r}")
    steps, returned = _watch(model, x, Settings(pairs_saturate, release), keep_torch=False)
    result = Run({step.name: _activation(step, step.ours) for step in steps})
    if isinstance(returned, torch.Tensor):
        last = steps[-1]
        result.returned = _activation(last if last.ours is returned else _Step("output", "output", "", None), returned)
    return result


def _run_xnnpack(model: torch.nn.Module, x: torch.Tensor) -> Run:
    _check_converted(model)
    quantized, returned = run_graph(model, x)  # type: ignore[arg-type]
    steps = []
    for node, codes in quantized:
        name, owned = _node_step_name(node)
        source = cast(torch.fx.Node, node.args[0])
        op = "convert" if source.op == "placeholder" else str(source.target).removeprefix("aten.").split(".")[0]
        qparams = (float(codes.scale), codes.zero_point)
        steps.append(_Step(name, op, name if owned else "", codes.codes, owned=owned, qparams=qparams))
    steps = _Namer.finish_steps(steps)
    result = Run({step.name: _activation(step, step.ours) for step in steps})
    first = returned[0] if isinstance(returned, (list, tuple)) else returned
    if isinstance(first, torch.Tensor):
        result.returned = Activation("output", "output", first, None, None)
    return result


@dataclass
class LayerComparison:
    """One step in ``compare``'s report.

    ``sqnr_db``: ``10 log10(sum f**2 / sum (f - q)**2)`` of torch's dequantized
    activation ``q`` against the float model's ``f`` (``inf`` when equal; NaN
    where the float model has no module to compare with); ``max_error``:
    ``max |f - q|``; ``exact``: whether torch's integers equal qlib's
    computation of the step from torch's own inputs; ``mismatches``: how many
    do not, of ``numel``. ``torch_codes`` and ``qlib_codes`` are the two.

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
    torch_codes: torch.Tensor | None = field(default=None, repr=False)
    qlib_codes: torch.Tensor | None = field(default=None, repr=False)


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
                _db(layer.sqnr_db),
                "-" if math.isnan(layer.max_error) else f"{layer.max_error:.3g}",
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
        return text_table(*self._rows(), self._note())

    __repr__ = __str__

    def _repr_html_(self) -> str:
        return html_table(*self._rows(), self._note())

    def plot(self, ax=None):
        """A bar chart of SQNR (dB) by layer; returns the matplotlib Axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(7, 3))
        finite = [0.0 if math.isnan(layer.sqnr_db) else min(layer.sqnr_db, 99.0) for layer in self.layers]
        ax.bar(range(len(finite)), finite, color=["C0" if layer.exact else "C3" for layer in self.layers])
        ax.set_xticks(range(len(finite)), [layer.name for layer in self.layers], rotation=30, ha="right")
        ax.set_ylabel("SQNR against the float model (dB)")
        return ax


def _db(value: float) -> str:
    if math.isnan(value):
        return "-"
    return "inf" if math.isinf(value) else f"{value:.1f}"


def compare(
    float_model: torch.nn.Module,
    quantized_model: torch.nn.Module,
    x: torch.Tensor,
    *,
    pairs_saturate: bool | None = None,
    release: str | None = None,
) -> Comparison:
    """Each step of ``quantized_model`` against the same module of ``float_model``, on ``x``.

    ``float_model`` is the float model as it was fused, before ``prepare``
    (so that ``conv1`` holds the conv and its ReLU, as in the quantized
    model); steps are matched by module name and call, an add by its
    ``FloatFunctional``'s name. Every step is also recomputed by qlib from
    torch's own inputs, which says whether torch's integers are exactly that
    step's arithmetic. After torchao's ``quantize_``, the steps are the
    Linears (float outputs, compared bit for bit; see ``run``), and
    ``float_model`` is the model before ``quantize_``.

    Chapter: "A whole model, integer by integer" (book/10_model).

    >>> float_model = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.ReLU()).eval()
    >>> float_model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    >>> prepared = torch.ao.quantization.prepare(float_model)
    >>> _ = prepared(torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> report = compare(float_model, torch.ao.quantization.convert(prepared), torch.tensor([[-1.0, 0.5, 2.0]]))
    >>> [(layer.name, layer.exact) for layer in report.layers]
    [('0', True), ('1', True)]
    """
    if not isinstance(quantized_model, torch.fx.GraphModule):
        _check_float_twin(float_model, quantized_model)
    steps, _ = _watch(quantized_model, x, Settings(pairs_saturate, release), keep_torch=True)
    float_out = _capture(float_model, x)
    if isinstance(quantized_model, torch.fx.GraphModule):  # PT2E: the input's quantize against the input
        inputs = [node.name for node in quantized_model.graph.nodes if node.op == "placeholder"]
        float_out.update({name: [x] for name in inputs[:1]})
    layers, unmatched = [], []
    for step in steps:
        ours, theirs = _activation(step, step.ours), _activation(step, step.theirs)
        reference = _reference(float_out, step)
        mismatches = _differ(ours, theirs)
        if step.op.startswith("dequantize_per") and mismatches == 0:
            continue  # PT2E's many dequantize nodes: shown only where they differ
        sqnr, max_error = math.nan, math.nan
        if reference is None and step.owned:  # a module with no twin in the float model
            unmatched.append(step.name)
            continue
        if reference is not None:
            error = (reference.float() - theirs.dequantized()).double()
            noise, signal = error.pow(2).sum().item(), reference.double().pow(2).sum().item()
            sqnr = math.inf if noise == 0 else (10 * math.log10(signal / noise) if signal > 0 else -math.inf)
            max_error = error.abs().max().item()
        layers.append(
            LayerComparison(
                step.name, step.op, sqnr, max_error, mismatches == 0, mismatches, ours.codes.numel(),
                theirs.codes, ours.codes,
            )
        )  # fmt: skip
    return Comparison(layers, unmatched)


def _check_float_twin(float_model: torch.nn.Module, quantized_model: torch.nn.Module) -> None:
    """Refuse a float model that is not the one the quantized model came from: not fused alike, or
    with other weights (each float weight within half a step of the quantized one)."""
    if float_model is quantized_model:
        raise ValueError("compare needs the float model and the quantized one, in that order; got one model twice")
    floats = dict(float_model.named_modules())
    quantized_there = [
        path
        for path, m in floats.items()
        if getattr(m, "_packed_params", None) is not None or _is_torchao(getattr(m, "weight", None))
    ]
    if quantized_there:
        raise ValueError(
            f"compare's first argument must be the float model; its {quantized_there[0]} is a quantized "
            f"{type(floats[quantized_there[0]]).__name__}: pass (float_model, quantized_model)"
        )
    for path, module in quantized_model.named_modules():
        if _is_torchao(getattr(module, "weight", None)):
            _check_torchao_twin(path, module.weight, floats.get(path))
            continue
        packed = getattr(module, "_packed_params", None)
        weight = getattr(module, "weight", None)
        if packed is None or not callable(weight) or path not in floats:
            continue
        twin = floats[path]
        relu_q = type(module).__name__.endswith("ReLU2d") or type(module).__name__ == "LinearReLU"
        relu_f = any(isinstance(child, torch.nn.ReLU) for child in twin.modules())
        if relu_q and not relu_f:
            raise ValueError(
                f"the float model is not fused as the quantized one: {path} is {type(twin).__name__} in the "
                f"float model and {type(module).__name__} in the quantized one, so their outputs are taken "
                "before and after a ReLU. Pass the float model as fused (what fuse_modules returned, before prepare)"
            )
        float_weight = _float_weight(twin)
        q = weight()
        if float_weight is None or float_weight.shape != q.shape:
            raise ValueError(
                f"the float model's {path} ({type(twin).__name__}) has no weight of the quantized one's shape "
                f"{tuple(q.shape)}: pass the float model the quantized one was converted from"
            )
        if q.qscheme() in (torch.per_channel_affine, torch.per_channel_symmetric):
            step = q.q_per_channel_scales().float().view(-1, *[1] * (q.dim() - 1))
        else:
            step = torch.tensor(q.q_scale(), dtype=torch.float32)
        beyond = (float_weight.detach() - q.dequantize()).abs() / step
        inside = (q.int_repr().long() > -128) & (q.int_repr().long() < 127)  # clamped codes may lie further
        if (beyond[inside] > 0.5 + 1e-3).any():
            raise ValueError(
                f"the float model's weights at {path} are not the quantized model's: they differ by up to "
                f"{float(beyond[inside].max()):.3g} quantization steps (at most half a step when they are). Pass "
                "the float model the quantized one was converted from, as fused, before prepare"
            )


def _check_torchao_twin(path: str, weight: torch.Tensor, twin: torch.nn.Module | None) -> None:
    """Refuse a float model whose ``path`` has no float weight of the torchao weight's shape and dtype."""
    float_weight = getattr(twin, "weight", None)
    if not isinstance(float_weight, torch.Tensor) or (float_weight.shape, float_weight.dtype) != (
        weight.shape,
        weight.dtype,
    ):
        got = (
            "no weight"
            if not isinstance(float_weight, torch.Tensor)
            else f"{tuple(float_weight.shape)}, {float_weight.dtype}"
        )
        raise ValueError(
            f"the float model's {path or 'model'} has {got}; the quantized one's weight is {tuple(weight.shape)}, "
            f"{weight.dtype}: pass the float model that quantize_ was given (a copy made before quantize_)"
        )


def _float_weight(module: torch.nn.Module) -> torch.Tensor | None:
    """The weight a float (possibly fused) module computes with: its own, or its first child's."""
    for candidate in module.modules():
        weight = getattr(candidate, "weight", None)
        if isinstance(weight, torch.Tensor) and not isinstance(candidate, torch.nn.modules.batchnorm._BatchNorm):
            return weight
    return None


def _differ(ours: Activation, theirs: Activation) -> int:
    """How many of two steps' results differ: codes (all, if the scale or zero point does), or float32 bits."""
    if ours.scale is None:  # a float result (DeQuantize, a dynamic Linear): bit for bit
        if ours.codes.dtype != theirs.codes.dtype or ours.codes.shape != theirs.codes.shape:
            return theirs.codes.numel()
        as_bits = {torch.float32: torch.int32, torch.bfloat16: torch.int16}.get(ours.codes.dtype, ours.codes.dtype)
        return int((ours.codes.contiguous().view(as_bits) != theirs.codes.contiguous().view(as_bits)).sum())
    if (ours.scale, ours.zero_point) != (theirs.scale, theirs.zero_point):
        return ours.codes.numel()
    return int((ours.codes != theirs.codes).sum())


def _reference(float_out: dict[str, list[torch.Tensor]], step: _Step) -> torch.Tensor | None:
    """The float model's output for ``step``: the same module (or FloatFunctional), the same call."""
    base, _, call = step.name.partition("#")
    index = int(call) - 1 if call else 0
    for key in (base, f"{base}.activation_post_process"):
        outputs = float_out.get(key, [])
        if index < len(outputs) and isinstance(outputs[index], torch.Tensor):
            return outputs[index]
    return None


def _capture(model: torch.nn.Module, x: torch.Tensor) -> dict[str, list[torch.Tensor]]:
    """Every submodule's outputs on ``x``, by module name, one per call."""
    out: dict[str, list[torch.Tensor]] = {}
    hooks = [
        module.register_forward_hook(lambda m, i, o, name=name: out.setdefault(name, []).append(o))
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
