"""qlib.compare_xnnpack and qlib.explain_xnnpack against ExecuTorch 1.5.1's XNNPACK delegate and the PT2E reference graph.

Every claim of a report is checked against the real libraries, not against qlib's own numbers: the reference's
codes are torch running the converted graph; a ``carried`` difference must vanish when torch runs the step on the
delegate's input codes (this file's own interpreter feeds them); a ``tie`` must have the reference's value (computed
here from torch's float result) and XNNPACK's within the stated distance of the same ``.5``, each on the side of its
observed code (the reference's, the delegate's); the delegate's codes must be qlib's. Models: the chapter's small
CNN, lowered with one delegate per op (each op's int8 output read through ETDump), and ``test_xnnpack``'s per-channel
net (convolutions, depthwise, adds, max pool, means, Linears), calibrated and set on ties.
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
from test_xnnpack import SHAPE, converted, lower, method, on_ties, ties_input  # noqa: E402
from torch import nn  # noqa: E402
from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e  # noqa: E402

import qlib  # noqa: E402
from qlib.testing import assert_same_ints  # noqa: E402

Q = torch.ops.quantized_decomposed
CNN_SHAPE = (64, 1, 11, 11)


class SmallCNN(nn.Module):
    """The chapter's (book/15_edge): a conv with a fused ReLU, a global average pool and a Linear."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(4, 3)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv(x)))
        return self.fc(x.flatten(1))


@pytest.fixture(scope="module")
def cnn():
    """The chapter's CNN, per channel, and the path of its program lowered with one delegate per op."""
    torch.manual_seed(2)
    model = SmallCNN().eval()
    gen = torch.Generator().manual_seed(2)
    calibration = torch.randn(CNN_SHAPE, generator=gen)
    graph = torch.export.export(model, (calibration,)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(graph, quantizer)
    prepared(calibration)
    graph = convert_pt2e(prepared)
    program = to_edge_transform_and_lower(
        torch.export.export(graph, (calibration,)), partitioner=[XnnpackPartitioner(per_op_mode=True)]
    )
    folder = tempfile.mkdtemp()
    path = os.path.join(folder, "cnn_per_op.pte")
    with open(path, "wb") as f:
        f.write(program.to_executorch().buffer)
    return graph, path, torch.randn(CNN_SHAPE, generator=gen)


def per_op_outputs(path: str, x: torch.Tensor) -> list[torch.Tensor]:
    """Each delegate call's output, read through ETDump and its debug buffer (int8 codes; the last, floats)."""
    from executorch.devtools import Inspector

    program = Runtime.get().load_program(path, enable_etdump=True, debug_buffer_size=1 << 22)
    program.load_method("forward").execute([x])
    folder = os.path.dirname(path)
    etdump, buffer = os.path.join(folder, "run.etdp"), os.path.join(folder, "run.bin")
    program.write_etdump_result_to_file(etdump, buffer)
    inspector = Inspector(etdump_path=etdump, debug_buffer_path=buffer)
    return [e.debug_data[-1] for b in inspector.event_blocks for e in b.events if e.name == "DELEGATE_CALL"]


class Torch(torch.fx.Interpreter):
    """torch running the converted graph; each activation quantize node's float input and codes are kept, and with
    ``fed`` (codes by step, in graph order) the node hands those codes on in place of its own."""

    def __init__(self, graph, fed=None):
        super().__init__(graph)
        self.fed, self.kept = fed, []

    def run_node(self, n):
        out = super().run_node(n)
        if n.target == Q.quantize_per_tensor.default and n.args[0].op != "get_attr":
            self.kept.append((self.env[n.args[0]], out, float(n.args[1]), int(n.args[2])))
            if self.fed is not None:
                return self.fed[len(self.kept) - 1].reshape(out.shape)
        return out


def xnnpack_rounding(op: str, v: float, z: int) -> int:
    """XNNPACK's code for a value on a tie (module docstring of qlib.xnnpack): the add rounds half up, the mean
    adds the zero point before rounding half to even, the GEMMs round half to even and add it after."""
    if op.startswith("add"):
        return math.floor(v + 0.5) + z
    if op in ("mean", "adaptive_avg_pool2d"):
        return round(v + z)
    return round(v) + z


def check_report(graph, x, report, xnnpack_codes, tie_within=0.05):
    """Every count, code and cause of ``report`` against torch running ``graph`` (alone, and fed ``xnnpack_codes``,
    the delegate's or, where they are shown equal to the delegate's, qlib's)."""
    reference, local = Torch(graph), Torch(graph, xnnpack_codes)
    with torch.no_grad():
        reference.run(x)
        local.run(x)
    assert len(report.steps) == len(reference.kept) == len(xnnpack_codes)
    counts = {"tie": 0, "carried": 0}
    for step, (_, ref, _, _), (y, local_code, s, z), xnn in zip(
        report.steps, reference.kept, local.kept, xnnpack_codes, strict=True
    ):
        xnn = xnn.reshape(ref.shape)
        assert_same_ints(step.reference_codes, ref, f"{step.name}: the reference's codes")
        assert_same_ints(step.xnnpack_codes, xnn, f"{step.name}: XNNPACK's codes")
        differ = ref != xnn
        assert step.differ == int(differ.sum()) == sum(step.causes.values()), step
        assert step.max_difference == (int((ref.long() - xnn.long()).abs().max()) if step.differ else 0)
        ref_v = (y.float() * torch.tensor(1.0 / s, dtype=torch.float32)).double()  # PT2E's quantize, before rint
        for i, cause in enumerate(step.cause):
            at = tuple(step.where[i].tolist())
            assert differ[at]
            theirs, ours = int(local_code[at]), int(xnn[at])  # the reference on XNNPACK's inputs; XNNPACK
            if cause == "carried":
                assert theirs == ours, f"{step.name} {at}: carried, yet torch on the same inputs gives {theirs}"
                counts["carried"] += 1
                continue
            assert cause.startswith("tie: "), f"{step.name} {at}: {cause}"
            counts["tie"] += 1
            assert abs(theirs - ours) == 1
            tie = min(theirs, ours) - z + 0.5
            v, xv = float(ref_v[at]), float(step.xnnpack_value[i])
            assert v == float(step.reference_value[i])
            assert max(abs(v - tie), abs(xv - tie)) <= step.tie_distance <= tie_within, (step.name, at, v, xv, tie)
            assert round(v) + z == theirs  # the reference's side of the tie (round: half to even, as torch's)
            # XNNPACK's side: beyond the tie, or on it, where its rounding rule takes it to the delegate's code
            assert (xv > tie) == (ours > theirs) or (xv == tie and xnnpack_rounding(step.op, xv, z) == ours)
        if step.delegate_differ is not None:
            assert step.delegate_differ == 0
    return counts


def test_chapter_cnn_per_op(cnn):
    """The chapter's CNN: every delegate call's codes are qlib's, and every difference from the reference has its cause."""
    graph, path, images = cnn
    calls = per_op_outputs(path, images)
    report = qlib.compare_xnnpack(graph, images, calls)
    codes = [c for c in calls if c.dtype == torch.int8]
    assert len(codes) == len(report.steps) == 5 and report.output_differ == 0
    assert all(step.delegate_differ == 0 for step in report.steps)
    counts = check_report(graph, images, report, codes)
    assert counts == {"tie": 18, "carried": 3}, counts  # the chapter's numbers (book/15_edge)
    assert report.steps[1].causes == {"tie: bias": 18}


@settings(max_examples=examples(6), deadline=None)
@given(seed=st.integers(0, 2**31 - 1), spread=st.sampled_from([0.25, 1.0, 3.0, 40.0]))
def test_cnn_per_op_on_many_inputs(cnn, seed, spread):
    """Inputs inside and far past the calibrated range, on the per-op program."""
    graph, path, _ = cnn
    x = torch.randn(CNN_SHAPE, generator=torch.Generator().manual_seed(seed)) * spread
    calls = per_op_outputs(path, x)
    report = qlib.compare_xnnpack(graph, x, calls)
    check_report(graph, x, report, [c for c in calls if c.dtype == torch.int8])
    assert "other" not in str(report)


@pytest.fixture(scope="module")
def nets():
    """test_xnnpack's net per channel: calibrated (seed 1), and on ties (power-of-two scales, odd zero points)."""
    calibrated, ties = converted(True, 1), on_ties(converted(True, 2))
    return {"calibrated": (calibrated, method(lower(calibrated))), "ties": (ties, method(lower(ties)))}


def returned_codes(graph, outputs) -> dict[str, torch.Tensor]:
    """The delegate's codes of the steps the program returns, from its dequantized floats: ``round(y / s) + z``."""
    names = {}
    nodes = [n for n in graph.graph.nodes if n.target == Q.quantize_per_tensor.default and n.args[0].op != "get_attr"]
    output = next(n for n in graph.graph.nodes if n.op == "output")
    for dq, y in zip(output.args[0], outputs, strict=True):
        q = dq.args[0]
        names[nodes.index(q)] = (torch.round(y / float(dq.args[1])) + int(dq.args[2])).to(torch.int8)
    return names


@pytest.mark.parametrize("name", ["calibrated", "ties"])
def test_net(nets, name):
    """Convolutions, depthwise, adds, max pool, means and Linears: the delegate's returned values and codes are
    qlib's, and each difference from the reference has its cause (on ties: the add's half up, the mean's zero point)."""
    graph, program = nets[name]
    gen = torch.Generator().manual_seed(7)
    x = ties_input(gen, 2.0**-4) if name == "ties" else torch.randn(SHAPE, generator=gen) * 3
    outputs = list(program.execute([x]))
    report = qlib.compare_xnnpack(graph, x, outputs)
    assert report.output_differ == 0
    by_index = returned_codes(graph, outputs)
    names = [step.name for step in report.steps]
    with_codes = qlib.compare_xnnpack(graph, x, {names[i]: codes for i, codes in by_index.items()})
    assert sorted(i for i, s in enumerate(with_codes.steps) if s.delegate_differ == 0) == sorted(by_index)
    counts = check_report(graph, x, report, [s.xnnpack_codes for s in report.steps])
    assert counts["tie"] > 10 and counts["carried"] > 10, counts
    if name == "ties":
        causes = {c for s in report.steps for c in s.causes}
        assert {"tie: half up", "tie: zero point", "tie: bias"} <= causes, causes


def test_explain_each_tie_of_the_chapter(cnn):
    """explain_xnnpack on each convolution code that differs: the reference's code (torch's, on the delegate's
    input codes) and the delegate's, each value on its side of the tie, and the same cause as compare_xnnpack's."""
    graph, path, images = cnn
    calls = per_op_outputs(path, images)
    report = qlib.compare_xnnpack(graph, images, calls)
    conv = report.steps[1]
    local = Torch(graph, [c for c in calls if c.dtype == torch.int8])
    with torch.no_grad():
        local.run(images)
    (s_x, z_x), (s_y, z_y) = [(float(s), int(z)) for _, _, s, z in local.kept[:2]]
    dq = next(n for n in graph.graph.nodes if n.target == Q.dequantize_per_channel.default)
    q_w, s_w = (getattr(graph, a.target) for a in dq.args[:2])
    bias = graph.get_parameter(
        next(n for n in graph.graph.nodes if n.target == torch.ops.aten.conv2d.default).args[2].target
    )
    for i, where in enumerate(conv.where.tolist()):
        e = qlib.explain_xnnpack(calls[0], s_x, z_x, q_w, s_w, bias.detach(), s_y, z_y, tuple(where), output_min=0.0)
        assert e.reference_code == int(local.kept[1][1][tuple(where)])
        assert e.xnnpack_code == int(calls[1][tuple(where)])
        assert e.cause == conv.cause[i] == "tie: bias"
        tie = min(e.reference_code, e.xnnpack_code) - z_y + 0.5
        assert (e.reference_value - tie) * (e.xnnpack_value - tie) < 0
        assert "moved across by: the bias rounded to int32" in str(e)
    same = qlib.explain_xnnpack(calls[0], s_x, z_x, q_w, s_w, bias.detach(), s_y, z_y, (0, 0, 0, 0), output_min=0.0)
    assert same.cause == "same" and same.reference_code == same.xnnpack_code == int(calls[1][0, 0, 0, 0])


def test_errors(cnn):
    graph, _, images = cnn
    with pytest.raises(TypeError, match="GraphModule"):
        qlib.compare_xnnpack(SmallCNN(), images)
    with pytest.raises(ValueError, match="tie_within"):
        qlib.compare_xnnpack(graph, images, tie_within=0.5)
    with pytest.raises(ValueError, match="names steps the graph does not have"):
        qlib.compare_xnnpack(graph, images, {"nothing": torch.zeros(1, dtype=torch.int8)})
    with pytest.raises(ValueError, match="codes of step x must be int8 with 7744 codes"):
        qlib.compare_xnnpack(graph, images, [torch.zeros(3, dtype=torch.int8)])
    with pytest.raises(ValueError, match="codes of step conv must be int8"):
        qlib.compare_xnnpack(graph, images, {"conv": torch.zeros(64, 4, 9, 9)})
    x = torch.tensor([[1]], dtype=torch.int8)
    with pytest.raises(ValueError, match="index must name one output"):
        qlib.explain_xnnpack(x, 0.5, 0, x, 0.5, None, 1.0, 0, (0, 1))
    assert math.isnan(qlib.compare_xnnpack(graph, images).steps[0].tie_distance)
