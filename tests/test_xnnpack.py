"""qlib.xnnpack and qlib.run(..., backend="xnnpack") against ExecuTorch 1.5.1's XNNPACK delegate on this CPU.

Each program is quantized with ExecuTorch's XNNPACKQuantizer (PT2E, torchao's prepare/convert), lowered
with XnnpackPartitioner and run by executorch.runtime; qlib runs the same converted graph
(``qlib.xnnpack_graph``). Lowering is the slow part (the first program about 6 s, cold: imports and
the first trace; each next one 2-4 s), so each program returns the output of every op (163,024 codes
an input) and runs on many inputs. Two programs have their scales set to powers of two and their zero
points to odd numbers, so that GEMM, add and mean results land exactly on rounding ties, and their
inputs sit on and beside the input's ties and far past the calibrated range. The file takes about 35 s
of CPU (one thread).
"""

from __future__ import annotations

import math
import os
import tempfile

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip(
    "executorch", reason="executorch (1.5.1) is not installed in this environment: the XNNPACK tests need its runtime"
)

from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner  # noqa: E402
from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (  # noqa: E402
    XNNPACKQuantizer,
    get_symmetric_quantization_config,
)
from executorch.exir import to_edge_transform_and_lower  # noqa: E402
from executorch.runtime import Runtime  # noqa: E402
from inputs import examples  # noqa: E402
from torch import nn  # noqa: E402
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: E402

import qlib  # noqa: E402
from qlib.testing import assert_same_bits, assert_same_ints  # noqa: E402
from qlib.xnnpack import add_parameters, output_bounds, xnnpack_add, xnnpack_mean  # noqa: E402
from qlib.xnnpack_graph import run_graph  # noqa: E402

SHAPE = (8, 3, 16, 16)


class Net(nn.Module):
    """Every op the XNNPACK quantizer's default config gives a small CNN, each one's output returned."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        self.conv_a = nn.Conv2d(3, width, 3, padding=1)
        self.conv_b = nn.Conv2d(3, width, 3, padding=1)
        self.strided = nn.Conv2d(width, width, 3, stride=2, padding=1)
        self.depthwise = nn.Conv2d(width, width, 3, groups=width)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width * 7 * 7, 32)
        self.head = nn.Linear(width, 10)
        self.gap = nn.AdaptiveAvgPool2d(1)

    def forward(self, x):
        a = torch.relu(self.conv_a(x))  # conv + fused ReLU
        b = self.conv_b(x)  # conv, no activation
        s = torch.relu(a + b)  # add + fused ReLU
        t = a + b  # add
        d = nn.functional.hardtanh(self.depthwise(s), 0.0, 6.0)  # depthwise conv, then a clamp
        p = self.pool(d)
        m = self.strided(t).mean([-1, -2], keepdim=True)  # global average pooling, 64 values
        n = p.mean([-1, -2], keepdim=True)  # 49 values: 1 / 49 is not a float32 number
        f = self.fc(p.flatten(1))
        h = torch.relu(self.head(self.gap(s).flatten(1)))  # linear + fused ReLU
        return a, b, s, t, d, p, m, n, f, h


def converted(per_channel: bool, seed: int, per_tensor: tuple[str, ...] = ()) -> torch.fx.GraphModule:
    """Net quantized for XNNPACK, per channel or per tensor; the modules named in ``per_tensor`` get a config of
    their own (per tensor), which in executorch 1.5.1 leaves them in float."""
    torch.manual_seed(seed)
    model = Net().eval()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.bias.normal_(0, 0.3)
    example = (torch.randn(SHAPE),)
    graph = torch.export.export(model, example).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=per_channel))
    for name in per_tensor:
        quantizer.set_module_name(name, get_symmetric_quantization_config(is_per_channel=False))
    graph = prepare_pt2e(graph, quantizer)
    for _ in range(3):
        graph(torch.randn(SHAPE) * 1.5)
    return convert_pt2e(graph)


def lower(graph: torch.fx.GraphModule, per_op: bool = False) -> bytes:
    program = torch.export.export(graph, (torch.randn(SHAPE),))
    lowered = to_edge_transform_and_lower(program, partitioner=[XnnpackPartitioner(per_op_mode=per_op)])
    return lowered.to_executorch().buffer


def method(buffer: bytes):
    path = os.path.join(tempfile.mkdtemp(), "model.pte")
    with open(path, "wb") as f:
        f.write(buffer)
    return Runtime.get().load_program(path).load_method("forward")


def quantize_nodes(graph: torch.fx.GraphModule) -> list[torch.fx.Node]:
    return [
        n for n in graph.graph.nodes if "quantize_per_tensor" in str(n.target) and "dequantize" not in str(n.target)
    ]


def set_qparams(graph: torch.fx.GraphModule, node: torch.fx.Node, scale: float, zero_point: int) -> None:
    """Give a quantize node, and every dequantize of its codes, another scale and zero point."""
    for target in (node, *[u for u in node.users if "dequantize" in str(u.target)]):
        target.update_arg(1, scale)
        target.update_arg(2, zero_point)


SHARED = ("relu", "hardtanh", "max_pool2d", "flatten")  # the means get scales of their own


def on_ties(graph: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """Power-of-two scales, odd zero points, biases on half-integers: the GEMMs, adds and means meet ties.

    Ops that share their input's scale and zero point (max pool, a standalone clamp, ...) keep them."""
    plan = iter([(2.0**-4, 3), (2.0**-3, -5), (2.0**-2, 7), (2.0**-2, 1), (2.0**-1, -9), (2.0**-3, 11), (2.0**-2, -1)])
    for node in quantize_nodes(graph):
        source = node.args[0]
        shared = source.op == "call_function" and any(s == str(source.target).split(".")[1] for s in SHARED)
        upstream = source.args[0] if shared else None
        if shared and "dequantize" in str(upstream.target):
            producer = upstream.args[0]
            set_qparams(graph, node, producer.args[1], producer.args[2])
        else:
            set_qparams(graph, node, *next(plan, (2.0**-2, 5)))
    for node in graph.graph.nodes:
        if "dequantize_per_channel" in str(node.target):  # weight scales 2**-6 and 2**-5, alternating
            scales = graph.get_buffer(node.args[1].target)
            scales.copy_(torch.tensor([2.0**-6 if i % 2 == 0 else 2.0**-5 for i in range(scales.numel())]))
        if "dequantize_per_tensor" in str(node.target) and node.args[0].op == "get_attr":  # a per-tensor weight
            node.update_arg(1, 2.0**-6)
        if node.op == "get_attr" and node.target.endswith("bias"):
            bias = graph.get_parameter(node.target)
            with torch.no_grad():  # half-integers of s_x * s_w for the first conv's input scale
                bias.copy_((torch.arange(bias.numel()) - bias.numel() / 2 + 0.5) * 2.0**-10)
    graph.recompile()
    return graph


def ties_input(gen: torch.Generator, scale: float) -> torch.Tensor:
    """Values on the input's ties (j + 1/2) * scale, one float32 step beside them, and far past the range."""
    j = torch.randint(-150, 150, SHAPE, generator=gen).float()
    tie = (j + 0.5) * scale
    pick = torch.randint(0, 4, SHAPE, generator=gen)
    x = torch.where(pick == 1, torch.nextafter(tie, torch.tensor(math.inf)), tie)
    x = torch.where(pick == 2, torch.nextafter(tie, torch.tensor(-math.inf)), x)
    return torch.where(pick == 3, torch.randn(SHAPE, generator=gen) * 30, x)


@pytest.fixture(scope="module")
def programs():
    """Four converted graphs and their lowered programs: per tensor and per channel, calibrated and on ties."""
    built = {}
    plan = (("per_tensor", False, 0), ("per_channel", True, 1), ("ties", True, 2), ("ties_per_tensor", False, 3))
    for name, per_channel, seed in plan:
        graph = converted(per_channel, seed)
        if name.startswith("ties"):
            graph = on_ties(graph)
        built[name] = (graph, method(lower(graph)))
    return built


def compare_outputs(graph, program, x: torch.Tensor, context: str) -> None:
    theirs = program.execute([x])
    _, ours = run_graph(graph, x)
    for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        assert_same_bits(o, t, f"{context}, output {i}")


@settings(max_examples=examples(8), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.sampled_from([0.5, 1.0, 4.0, 32.0]))
def test_programs_bit_for_bit(programs, seed, spread):
    """Every op's output (163,024 codes a program) equals the delegate's, inside and far past the calibrated range."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(SHAPE, generator=gen) * spread
    for name in ("per_tensor", "per_channel"):
        graph, program = programs[name]
        compare_outputs(graph, program, x, f"{name}, spread {spread}")


@settings(max_examples=examples(8), deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_ties_bit_for_bit(programs, seed):
    """Power-of-two scales and odd zero points: exact ties in every GEMM, add and mean, and at the input."""
    x = ties_input(torch.Generator().manual_seed(seed), 2.0**-4)
    for name in ("ties", "ties_per_tensor"):
        graph, program = programs[name]
        compare_outputs(graph, program, x, name)


def test_ties_are_met_and_the_reference_differs(programs):
    """The ties program does put results on ties, and there the PT2E reference graph in torch is not XNNPACK."""
    graph, program = programs["ties"]
    x = ties_input(torch.Generator().manual_seed(0), 2.0**-4)
    theirs = program.execute([x])
    reference = graph(x)
    differ = sum(int((r != t).sum()) for r, t in zip(reference, theirs, strict=True))
    assert differ > 1000, differ
    steps = dict(run_graph(graph, x)[0])
    add_node = next(n for n in graph.graph.nodes if n.name == "add_1")  # t = a + b, no ReLU
    add = steps[next(u for u in add_node.users if u in steps)]
    a, b = steps[add_node.args[0].args[0]], steps[add_node.args[1].args[0]]
    # on these scales the add's exact result is a half-integer for every odd code of a: half up, not half to even
    ma, mb, shift = add_parameters(a.scale, b.scale, add.scale)
    exact = (a.codes.long() * ma + b.codes.long() * mb - ma * a.zero_point - mb * b.zero_point) / 2.0**shift
    half = exact - exact.floor() == 0.5
    assert half.sum() > 1000
    assert_same_ints(add.codes[half].long(), (exact[half] + 0.5 + add.zero_point).clamp(-128, 127).long())
    # and the first convolution's results (its int32 accumulator times a power of two) land on half-integers
    conv = next(n for n in graph.graph.nodes if n.name == "conv2d")
    source, weight, bias = conv.args[0].args[0], conv.args[1], graph.get_parameter(conv.args[2].target)
    x_codes, w_codes = steps[source], graph.get_buffer(weight.args[0].target)
    w_scales = graph.get_buffer(weight.args[1].target).double()
    out = steps[next(iter(next(iter(conv.users)).users))]  # conv -> relu -> quantize
    acc = nn.functional.conv2d(x_codes.codes.double() - x_codes.zero_point, w_codes.double(), None, 1, 1)
    acc += torch.round(bias.double() / (x_codes.scale * w_scales)).view(1, -1, 1, 1)  # half-integers: to even
    exact = acc * x_codes.scale * w_scales.view(1, -1, 1, 1) / out.scale
    assert int((exact - exact.floor() == 0.5).sum()) > 200  # 393 of 32,768: one in 2**7 or 2**6


def test_per_op_delegates(programs):
    """One delegate per op, each one's int8 output read from ETDump's debug buffer: every step of qlib.run's."""
    from executorch.devtools import Inspector
    from executorch.extension.pybindings.portable_lib import _load_for_executorch

    graph, _ = programs["per_channel"]
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "per_op.pte")
    with open(path, "wb") as f:
        f.write(lower(graph, per_op=True))
    module = _load_for_executorch(path, enable_etdump=True, debug_buffer_size=1 << 24)
    x = torch.randn(SHAPE, generator=torch.Generator().manual_seed(5)) * 3
    module.forward([x])
    module.write_etdump_result_to_file(os.path.join(folder, "run.etdp"), os.path.join(folder, "debug.bin"))
    inspector = Inspector(
        etdump_path=os.path.join(folder, "run.etdp"), debug_buffer_path=os.path.join(folder, "debug.bin")
    )
    outputs = [
        event.debug_data[-1]
        for block in inspector.event_blocks
        for event in block.events
        if event.name == "DELEGATE_CALL" and event.debug_data[-1].dtype == torch.int8
    ]
    result = qlib.run(graph, x, backend="xnnpack")
    steps = [step.codes for step in result.activations.values()]
    unmatched = list(range(len(steps)))
    for codes in outputs:  # delegates run in a topological order of their own: match each by its codes
        same = [i for i in unmatched if steps[i].shape == codes.shape and torch.equal(steps[i], codes)]
        assert same, f"a delegate's int8 output {tuple(codes.shape)} equals no step of qlib.run"
        assert_same_ints(steps[same[0]], codes, "per-op delegate")
        unmatched.remove(same[0])
    assert not unmatched, [list(result.activations)[i] for i in unmatched]


def test_output_bounds_are_xnnpack_quantize():
    """A fused ReLU clamps at the zero point; hardtanh's 6 rounds half to even from 6 / scale + zero point."""
    assert output_bounds(0.0, math.inf, 0.1, -7) == (-7, 127)
    assert output_bounds(-math.inf, 6.0, 0.8, 0) == (-128, 8)  # 7.5 -> 8
    assert output_bounds(-math.inf, 6.0, 0.48, 0) == (-128, 12)  # 12.5 -> 12
    with pytest.raises(ValueError, match="ordered"):
        output_bounds(1.0, 0.0, 0.1, 0)


def test_errors():
    q = torch.zeros(1, 1, 2, 2, dtype=torch.int8)
    with pytest.raises(TypeError, match="int8"):
        xnnpack_mean(q.to(torch.uint8), 0.1, 0, 0.1, 0)
    with pytest.raises(ValueError, match="scale ratios"):
        xnnpack_add(q, 1.0, 0, q, 1.0, 0, 2.0**-12, 0)
    with pytest.raises(ValueError, match="backend"):
        qlib.run(nn.Identity(), torch.zeros(1), backend="tflite")


QD = torch.ops.quantized_decomposed


def qdq(x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    q = QD.quantize_per_tensor.default(x, scale, zero_point, -128, 127, torch.int8)
    return QD.dequantize_per_tensor.default(q, scale, zero_point, -128, 127, torch.int8)


# (s_x, zp_x, s_y, zp_y) where a fused multiply-add in the mean's last step would change a few codes
MEAN_SETS = [
    (0.09658323228359222, -55, 0.04332615062594414, -106),
    (0.043122172355651855, -17, 0.04936998710036278, 24),
    (0.014634973369538784, -106, 0.0056682792492210865, -41),
]
MEAN_SHAPE = (4, 32, 8, 8)


class Means(nn.Module):
    """Three means, with their quantize and dequantize nodes written by hand (a mean alone is not annotated)."""

    def forward(self, x1, x2, x3):
        return tuple(
            qdq(qdq(x, s_x, zp_x).mean([-1, -2], keepdim=True), s_y, zp_y)
            for x, (s_x, zp_x, s_y, zp_y) in zip((x1, x2, x3), MEAN_SETS, strict=True)
        )


def fused_mean_differs(s_x: float, zp_x: int, s_y: float, zp_y: int) -> torch.Tensor:
    """The sums of 64 codes whose mean a fused multiply-add (``fmaf(sum, s, z)``) would round otherwise."""
    f32 = torch.float32
    s = (torch.tensor(s_x, dtype=f32) / torch.tensor(s_y, dtype=f32)) * (1 / torch.tensor(64.0, dtype=f32))
    z = torch.tensor(float(zp_y), dtype=f32) - torch.tensor(float(64 * zp_x), dtype=f32) * s
    sums = torch.arange(-128 * 64, 127 * 64 + 1)
    plain = torch.round(sums.to(f32) * s + z)
    fused = torch.round((sums.double() * s.double() + z.double()).to(f32))
    return sums[plain != fused]


def test_mean_has_no_fused_multiply_add_on_x86():
    """The mean's convert ``float(sum) * s + z`` is two float32 roundings here (XNNPACK's C++ reference loop,
    which an AArch64 compiler may contract into one fused multiply-add: not measured)."""
    gen = torch.Generator().manual_seed(3)
    inputs = []
    for s_x, zp_x, s_y, zp_y in MEAN_SETS:
        sums = fused_mean_differs(s_x, zp_x, s_y, zp_y)
        target = sums[torch.randint(0, len(sums), MEAN_SHAPE[:2], generator=gen)].unsqueeze(-1)
        codes = target.div(64, rounding_mode="floor") + (torch.arange(64) < target % 64).long()  # sums to target
        inputs.append((codes.view(MEAN_SHAPE) - zp_x).float() * torch.tensor(s_x, dtype=torch.float32))
    inputs = tuple(inputs)
    graph = torch.export.export(Means(), inputs).module()
    program = method(to_edge_transform_and_lower(
        torch.export.export(graph, inputs), partitioner=[XnnpackPartitioner()]).to_executorch().buffer)  # fmt: skip
    theirs = program.execute(list(inputs))
    steps, ours = run_graph(graph, inputs)
    for o, t in zip(ours, theirs, strict=True):
        assert_same_bits(o, t, "means")
    converts = [codes for node, codes in steps if node.args[0].op == "placeholder"]
    differ = 0
    for codes, (s_x, zp_x, s_y, zp_y) in zip(converts, MEAN_SETS, strict=True):
        differ += int(torch.isin(codes.codes.long().sum((2, 3)), fused_mean_differs(s_x, zp_x, s_y, zp_y)).sum())
    assert differ > 100, differ  # the inputs did land on sums where a fused multiply-add would differ


def test_float_layers_are_refused():
    """A layer the quantizer left in float runs in XNNPACK's float32 kernels, whose sums qlib does not model."""
    graph = converted(True, 4, ("conv_b",))  # set_module_name: conv_b stays float (its output is quantized)
    with pytest.raises(ValueError, match="float"):
        qlib.run(graph, torch.randn(SHAPE), backend="xnnpack")


def random_qparams(gen: torch.Generator, count: int) -> list[tuple[float, int]]:
    """Scales log-uniform over 2**-12 .. 2**2 (float32 numbers), zero points anywhere in int8."""
    scales = torch.exp2(torch.rand(count, generator=gen) * 14 - 12)
    zero_points = torch.randint(-128, 128, (count,), generator=gen)
    return [(float(s), int(z)) for s, z in zip(scales, zero_points, strict=True)]


class AddsAndMeans(nn.Module):
    """Adds of one tensor's two quantizations, and means of windows of H x W values, each with scales of its own
    (input / output ratios from 2**-9 to 2**7 for the adds), quantize and dequantize nodes written by hand."""

    WINDOWS = ((1, 1), (3, 5), (7, 7), (9, 1), (16, 16), (12, 10))

    def __init__(self, seed: int, adds: int = 8) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(seed)
        self.add_params = []
        for (s_y, z_y), (_, z_a), (_, z_b) in zip(*(random_qparams(gen, adds) for _ in range(3)), strict=True):
            ratios = torch.exp2(torch.rand(2, generator=gen) * 16 - 9).tolist()
            self.add_params.append((s_y * ratios[0], z_a, s_y * ratios[1], z_b, s_y, z_y))
        self.mean_params = [
            (*a, *b) for a, b in zip(*(random_qparams(gen, len(self.WINDOWS)) for _ in range(2)), strict=True)
        ]

    def forward(self, x):
        adds = [
            qdq(qdq(x, s_a, z_a) + qdq(x.flip(-1), s_b, z_b), s_y, z_y)
            for s_a, z_a, s_b, z_b, s_y, z_y in self.add_params
        ]
        means = [
            qdq(qdq(x[..., :h, :w].contiguous(), s_x, z_x).mean([-1, -2], keepdim=True), s_y, z_y)
            for (h, w), (s_x, z_x, s_y, z_y) in zip(self.WINDOWS, self.mean_params, strict=True)
        ]
        return (*adds, *means)


@pytest.fixture(scope="module")
def zoo():
    graph = torch.export.export(AddsAndMeans(seed=11), (torch.randn(4, 16, 16, 16),)).module()
    lowered = to_edge_transform_and_lower(
        torch.export.export(graph, (torch.randn(4, 16, 16, 16),)), partitioner=[XnnpackPartitioner()]
    )
    return graph, method(lowered.to_executorch().buffer)


@settings(max_examples=examples(4), deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_adds_and_means_on_random_scales(zoo, seed):
    """8 adds and 6 means (of 1 to 256 values), each with scales and zero points of its own: 131,456 codes an input."""
    graph, program = zoo
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(4, 16, 16, 16, generator=gen) * torch.exp2(torch.randint(-8, 4, (4, 16, 1, 1), generator=gen))
    theirs = program.execute([x])
    _, ours = run_graph(graph, x)
    for i, (o, t) in enumerate(zip(ours, theirs, strict=True)):
        assert_same_bits(o, t, f"output {i}")
