"""qlib.run on ONNX models against real ONNX Runtime (1.32.0, default SessionOptions, CPU provider), node by node.

The models: the forum's Linear(4, 3) and a small CNN (conv+relu, maxpool, conv, add, flatten, linear), each
(a) PT2E-quantized with X86InductorQuantizer and exported with torch.onnx.export(dynamo=True), (b) eager
torch.ao-quantized and exported with dynamo=False, (c) exported in float and quantized by
onnxruntime.quantization.quantize_static, QDQ and QOperator, per tensor and per channel; and, through (c) only,
a CNN with average pools and one whose sigmoid and plain branches are concatenated; and, through (a) only,
chapter 14's CNN with a global average pool (a float ReduceMean in ORT's graph) and a CNN whose average pool
and convolution stay float (AveragePool, FusedConv). ORT's integers for every
node come from the graph ORT optimized, with every node's output made a graph output and run as it is.
"""

from __future__ import annotations

import copy
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

ort = pytest.importorskip("onnxruntime")
onnx = pytest.importorskip("onnx")

from emulated import run_on_haswell  # noqa: E402
from inputs import examples  # noqa: E402

import qlib  # noqa: E402
from qlib.onnx_model import optimized_model, run_onnx, supported_ops  # noqa: E402
from qlib.testing import assert_same_bits, assert_same_ints  # noqa: E402

# chapter 1's input: the forum thread's tensor
FORUM = torch.tensor(
    [
        [0.954667032, -0.136212718, 0.752538919, 1.57104063],
        [0.972508848, -0.670044482, -0.580473483, 1.30683446],
        [-0.134239793, 0.163919583, -0.716884553, 0.0584610961],
        [1.07569838, -0.0635147542, -0.194696382, -0.0943061784],
    ]
).reshape(1, 1, 4, 4)
CNN_SHAPE = (2, 3, 8, 8)


class Forum(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(4, 3)

    def forward(self, x):
        return self.fc(x)


class SmallCNN(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.MaxPool2d(2)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.skip = torch.ao.nn.quantized.FloatFunctional()  # an add, for the eager flow
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        p = self.pool(self.relu(self.conv1(x)))
        return self.fc(torch.flatten(self.skip.add(self.conv2(p), p), 1))


class PoolCNN(torch.nn.Module):
    """Average pooling, which quantize_static turns into com.microsoft.QLinearAveragePool."""

    def __init__(self):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AvgPool2d(2)
        self.conv2 = torch.nn.Conv2d(8, 8, 3, padding=1)
        self.whole = torch.nn.AvgPool2d(4)  # a kernel as large as the input: ORT's global path
        self.fc = torch.nn.Linear(8, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.whole(self.conv2(self.pool(self.relu(self.conv1(x))))), 1))


class CatCNN(torch.nn.Module):
    """Two branches concatenated, one through a sigmoid: quantize_static's QLinearConcat and QLinearSigmoid."""

    def __init__(self):
        super().__init__()
        self.left = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.right = torch.nn.Conv2d(3, 4, 1)
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(8 * 4 * 4, 10)

    def forward(self, x):
        return self.fc(torch.flatten(self.pool(torch.cat([torch.sigmoid(self.left(x)), self.right(x)], 1)), 1))


class GapCNN(torch.nn.Module):
    """Chapter 14's small CNN: its global average pool leaves PT2E's export as a float ReduceMean, which stays
    between a DequantizeLinear and a QuantizeLinear in ORT's graph; 7 x 7 rows start at every alignment."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 2)
        self.relu = torch.nn.ReLU()
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))


class FloatPoolCNN(torch.nn.Module):
    """An average pool that PT2E's export keeps in float, after a convolution ORT runs in float too (FusedConv)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3)
        self.pool = torch.nn.AvgPool2d(2)
        self.fc = torch.nn.Linear(8 * 3 * 3, 4)

    def forward(self, x):
        return self.fc(self.pool(torch.relu(self.conv(x))).flatten(1))


class Eager(torch.nn.Module):
    def __init__(self, inner):
        super().__init__()
        self.quant, self.m, self.dequant = torch.ao.quantization.QuantStub(), inner, torch.ao.quantization.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.m(self.quant(x)))


def calibration(shape, seed: int) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=gen) for _ in range(4)]


def pt2e(model, shape, path: Path) -> Path:
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e
    from torchao.quantization.pt2e.quantizer.x86_inductor_quantizer import (
        X86InductorQuantizer,
        get_default_x86_inductor_quantization_config,
    )

    batches = calibration(shape, 1)
    quantizer = X86InductorQuantizer().set_global(get_default_x86_inductor_quantization_config())
    prepared = prepare_pt2e(torch.export.export(model, (batches[0],)).module(), quantizer)
    for batch in batches:
        prepared(batch)
    torch.onnx.export(convert_pt2e(prepared), (batches[0],), path, dynamo=True, verbose=False)
    return path


def eager(model, shape, path: Path) -> Path:
    tq = torch.ao.quantization
    wrapped = Eager(copy.deepcopy(model)).eval()
    if isinstance(model, SmallCNN):
        wrapped.m = tq.fuse_modules(wrapped.m, [["conv1", "relu"]])
    wrapped.qconfig = tq.get_default_qconfig("x86")
    prepared = tq.prepare(wrapped)
    for batch in calibration(shape, 2):
        prepared(batch)
    torch.onnx.export(tq.convert(prepared), (torch.zeros(shape),), path, dynamo=False, opset_version=17)
    return path


def static(model, shape, path: Path, quant_format: str, per_channel: bool) -> Path:
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    float_path = path.with_name(path.stem.split("_")[0] + "_float.onnx")  # one float export per model
    if not float_path.exists():
        torch.onnx.export(model, (torch.zeros(shape),), float_path, dynamo=True, input_names=["x"], verbose=False)

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"x": b.numpy()} for b in calibration(shape, 3)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(
        float_path, path, Reader(), quant_format=getattr(QuantFormat, quant_format),
        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=per_channel,
    )  # fmt: skip
    return path


MODELS = [
    "forum_pt2e", "forum_eager", "forum_QDQ_channel", "forum_QOperator_tensor",
    "cnn_pt2e", "cnn_eager", "cnn_QDQ_tensor", "cnn_QDQ_channel", "cnn_QOperator_tensor", "cnn_QOperator_channel",
    "pool_QDQ_channel", "pool_QOperator_tensor", "cat_QDQ_channel", "gap_pt2e", "avg_pt2e",
]  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> dict[str, Path]:
    """Every model of MODELS, written once (about 7 s on one core: the seven dynamo exports take most)."""
    folder = tmp_path_factory.mktemp("onnx_models")
    torch.manual_seed(0)
    floats = {
        "forum": (Forum().eval(), FORUM.shape), "cnn": (SmallCNN().eval(), CNN_SHAPE), "pool": (PoolCNN().eval(), CNN_SHAPE),
        "cat": (CatCNN().eval(), CNN_SHAPE), "gap": (GapCNN().eval(), CNN_SHAPE),
        "avg": (FloatPoolCNN().eval(), CNN_SHAPE),
    }  # fmt: skip
    paths = {}
    logging.getLogger("root").setLevel(logging.ERROR)  # quantize_static suggests pre-processing on every call
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name in MODELS:
            base, flow, *rest = name.split("_")
            model, shape = floats[base]
            path = folder / f"{name}.onnx"
            if flow == "pt2e":
                paths[name] = pt2e(model, shape, path)
            elif flow == "eager":
                paths[name] = eager(model, shape, path)
            else:
                paths[name] = static(model, shape, path, flow, rest[0] == "channel")
    return paths


def exposed(graph_model):
    """The graph with every node's output made a graph output (ORT runs it as it is, optimizations off)."""
    model = copy.deepcopy(graph_model)
    have = {o.name for o in model.graph.output}
    names = [o for n in model.graph.node if n.op_type != "Constant" for o in n.output if o and o not in have]
    model.graph.output.extend([onnx.ValueInfoProto(name=name) for name in names])
    return model


def ort_nodes(graph_model, feed: dict) -> dict[str, np.ndarray]:
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(
        exposed(graph_model).SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    return dict(zip([o.name for o in session.get_outputs()], session.run(None, feed), strict=True))


def compare_nodes(result, theirs: dict[str, np.ndarray], default: np.ndarray, note: str) -> int:
    """Every node's result and the model's output against ORT's; returns how many elements were compared."""
    compared = 0
    for name, activation in result.activations.items():
        ort_value = torch.from_numpy(np.ascontiguousarray(theirs[name]))
        if activation.codes.is_floating_point():
            assert_same_bits(activation.codes, ort_value, f"{note}: node output {name} ({activation.op})")
        else:
            assert activation.codes.dtype == ort_value.dtype, f"{note}: {name}"
            assert_same_ints(activation.codes, ort_value, f"{note}: node output {name} ({activation.op})")
        compared += activation.codes.numel()
    assert_same_bits(result.returned.codes, torch.from_numpy(default), f"{note}: the output of a default session")
    return compared


@pytest.fixture(scope="module")
def ort_side(models):
    """Per model: ORT's optimized graph, a session on it with every node exposed, and a default session."""
    sides = {}
    for name, path in models.items():
        graph_model = optimized_model(path)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        nodes = ort.InferenceSession(
            exposed(graph_model).SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        default = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        sides[name] = (graph_model, nodes, default)
    return sides


@pytest.mark.parametrize("name", MODELS)
@settings(max_examples=examples(12), deadline=None)
@given(spread=st.sampled_from([0.3, 1.0, 1.0, 2.5, 8.0]), seed=st.integers(0, 2**31 - 1))
def test_models_node_by_node(models, ort_side, name, spread, seed):
    """Every node's integers (and float bits) and the output equal ORT's, on inputs from well inside to far past
    the calibrated range."""
    graph_model, nodes, default = ort_side[name]
    shape = FORUM.shape if name.startswith("forum") else CNN_SHAPE
    x = torch.randn(*shape, generator=torch.Generator().manual_seed(seed)) * spread
    feed = {default.get_inputs()[0].name: x.numpy()}
    theirs = dict(zip([o.name for o in nodes.get_outputs()], nodes.run(None, feed), strict=True))
    result = qlib.run(models[name], x)
    assert [a.op for a in result.activations.values()] == [n.op_type for n in graph_model.graph.node]
    compare_nodes(result, theirs, default.run(None, feed)[0], name)


@pytest.mark.parametrize("name", [m for m in MODELS if m.startswith("forum")])
def test_forum_input(models, ort_side, name):
    """The forum thread's tensor itself, as a dict by input name, the model given as a ModelProto."""
    graph_model, nodes, default = ort_side[name]
    feed = {default.get_inputs()[0].name: FORUM.numpy()}
    theirs = dict(zip([o.name for o in nodes.get_outputs()], nodes.run(None, feed), strict=True))
    result = qlib.run(onnx.load(models[name]), {default.get_inputs()[0].name: FORUM})
    compare_nodes(result, theirs, default.run(None, feed)[0], name)
    first = next(iter(result.activations.values()))
    assert first.op in ("QuantizeLinear", "DequantizeLinear") and first.codes.numel() in (12, 16)


def test_activations_carry_scale_and_zero_point(models):
    """The integer nodes' codes come with their scale and zero point, so that they dequantize to ORT's values."""
    result = qlib.run(models["cnn_QOperator_channel"], torch.randn(*CNN_SHAPE))
    ops = {a.op: a for a in result.activations.values()}
    for op in ("QuantizeLinear", "QLinearConv", "NhwcMaxPool", "QLinearAdd", "QGemm", "Transpose"):
        assert ops[op].scale is not None and ops[op].zero_point is not None, op
    assert ops["DequantizeLinear"].scale is None
    assert_same_bits(ops["QGemm"].dequantized(), result.returned.codes)


def test_errors(models, tmp_path):
    with pytest.raises(ValueError, match="Sigmoid.*it runs QuantizeLinear"):
        graph = onnx.helper.make_graph(
            [onnx.helper.make_node("Sigmoid", ["x"], ["y"])], "g",
            [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
            [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])],
        )  # fmt: skip
        qlib.run(onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 17)]), torch.zeros(2))
    with pytest.raises(ValueError, match="no value for the model's input"):
        qlib.run(models["forum_eager"], {"y": FORUM})
    assert "com.microsoft.QLinearAdd" in supported_ops()
    weight = np.ones((4, 3, 3, 3), np.float32)
    model, feed = one_node("Conv", [("x", np.ones((1, 3, 5, 5), np.float32), False), ("w", weight, True)])
    with pytest.raises(ValueError, match="com.microsoft.nchwc.Conv"):  # ORT's blocked layout, not modelled
        qlib.run(model, torch.from_numpy(feed["x"]))


def one_node(op: str, inputs: list, attrs: dict | None = None, domain: str = ""):
    """A one-node float model (``inputs``: (name, array, is an initializer)) and its feed."""
    helper, numpy_helper = onnx.helper, onnx.numpy_helper
    graph_inputs = [helper.make_tensor_value_info(n, onnx.TensorProto.FLOAT, a.shape) for n, a, c in inputs if not c]
    inits = [numpy_helper.from_array(a, n) for n, a, c in inputs if c]
    node = helper.make_node(op, [n for n, _, _ in inputs], ["y"], domain=domain, **(attrs or {}))
    out = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    opsets = [helper.make_opsetid("", 21)] + ([helper.make_opsetid(domain, 1)] if domain else [])
    graph = helper.make_graph([node], "one", graph_inputs, [out], inits)
    model = helper.make_model(graph, opset_imports=opsets, ir_version=10)
    return model, {n: a for n, a, c in inputs if not c}


@settings(max_examples=examples(100), deadline=None)
@given(
    op=st.sampled_from(["Gemm", "MatMul", "Conv", "FusedConv"]),
    k=st.sampled_from([1, 7, 64, 128, 129, 256, 257, 520, 1100]),
    n=st.sampled_from([1, 3, 16, 17, 40, 130]),
    m=st.sampled_from([1, 2, 3, 4, 7]),
    constant=st.booleans(),
    trans_b=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_float_nodes(op, k, n, m, constant, trans_b, seed):
    """Float Gemm, MatMul and convolutions (FusedConv with its Sum input and a ReLU) in float32 as MLAS sums them:
    passes of 128 to 1024 sequential fused multiply-adds, packed weights or not. On one ORT thread: MLAS splits a
    product of more than 65,536 multiply-adds across threads, each with passes of its own length."""
    rng = np.random.default_rng(seed)
    f32 = np.float32
    if op in ("Gemm", "MatMul"):
        a, b = rng.standard_normal((m, k)).astype(f32), rng.standard_normal((k, n)).astype(f32)
        trans_b = trans_b and op == "Gemm"
        inputs = [("a", a, False), ("b", np.ascontiguousarray(b.T) if trans_b else b, constant)]
        if op == "Gemm":
            inputs.append(("c", rng.standard_normal(n).astype(f32), True))
        model, feed = one_node(op, inputs, {"transB": 1} if trans_b else None)
    else:
        channels = max(1, min(k // 9, 40))
        x = rng.standard_normal((1, channels, 5, 4)).astype(f32)
        w = rng.standard_normal((min(n, m), channels, 3, 3)).astype(f32)
        # a constant float weight makes ORT's NCHWc layout (com.microsoft.nchwc.Conv): qlib refuses those; a
        # weight that a DequantizeLinear computes (a PT2E model's) stays in the plain Conv
        inputs = [("x", x, False), ("w", w, False), ("b", rng.standard_normal(w.shape[0]).astype(f32), True)]
        attrs = {"pads": [1, 0, 1, 1], "strides": [1, 2], "kernel_shape": [3, 3]}
        if op == "FusedConv":
            inputs.append(("z", rng.standard_normal((1, w.shape[0], 5, 2)).astype(f32), False))
            attrs["activation"] = "Relu"
        model, feed = one_node(op, inputs, attrs, "com.microsoft" if op == "FusedConv" else "")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    theirs = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"]).run(
        None, feed
    )
    x_in = {name: torch.from_numpy(value) for name, value in feed.items()}
    assert_same_bits(
        qlib.run(model, x_in).returned.codes, torch.from_numpy(theirs[0]), f"{op} m={m} k={k} n={n} transB={trans_b}"
    )


@pytest.mark.parametrize("misalignment", [0, 4, 8, 12])
def test_reduce_mean_of_a_graph_input(misalignment):
    """A ReduceMean reading the graph input: ORT sums from the caller's buffer, uncopied, so where its rows start
    past a 16-byte boundary decides the order of additions; qlib.run reads it from the tensor or array passed."""
    from test_onnx_reduce import nasty, placed, reduce_mean_model

    x = placed(nasty(np.random.default_rng(misalignment), [3, 5, 7], False), misalignment)
    model = reduce_mean_model([3, 5, 7], [1, 2], True)
    theirs = torch.from_numpy(ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0])  # fmt: skip
    assert_same_bits(qlib.run(model, torch.from_numpy(x)).returned.codes, theirs, "a tensor sharing the buffer")
    assert_same_bits(qlib.run(model, {"x": x}).returned.codes, theirs, "the array by name")


def test_reduce_mean_forms():
    """ReduceMean's axes as an attribute (before opset 18) or absent (every axis), and noop_with_empty_axes."""
    helper = onnx.helper
    x = np.random.default_rng(1).standard_normal((2, 3, 5)).astype(np.float32) * 1e4
    x_info = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2, 3, 5])
    y_info = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)
    forms = [
        (13, {"axes": [-1], "keepdims": 0}),
        (13, {}),
        (20, {"keepdims": 0}),
        (20, {"noop_with_empty_axes": 1}),
    ]
    for opset, attrs in forms:
        node = helper.make_node("ReduceMean", ["x"], ["y"], **attrs)
        graph = helper.make_graph([node], "mean", [x_info], [y_info])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
        session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        theirs = torch.from_numpy(session.run(None, {"x": x})[0])
        assert_same_bits(qlib.run(model, torch.from_numpy(x)).returned.codes, theirs, f"opset {opset} {attrs}")


# An AVX2-only CPU, emulated: the graph ORT optimizes there, its node outputs and its output, against qlib's run of
# that graph with pairs_saturate=True

# not avg_pt2e: on an AVX2-only CPU ORT moves its float AveragePool to NCHWc blocks of 8 channels
# (com.microsoft.nchwc.AveragePool between nchwc.ReorderInput and ReorderOutput), which qlib does not run
QEMU_MODELS = [
    "forum_eager", "cnn_eager", "cnn_QDQ_channel", "cnn_QOperator_tensor", "cnn_pt2e", "cat_QDQ_channel", "gap_pt2e",
]  # fmt: skip
QEMU_SCRIPT = """
import os, pickle, sys, tempfile
import onnx, onnxruntime as ort
cases = pickle.load(open(sys.argv[1], "rb"))
outs = []
for data, feeds in cases:
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "optimized.onnx")
        options = ort.SessionOptions()
        options.optimized_model_filepath = path
        options.log_severity_level = 3
        default = ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])
        graph = onnx.load(path)
    exposed = onnx.load_from_string(graph.SerializeToString())
    have = {o.name for o in exposed.graph.output}
    names = [o for n in exposed.graph.node if n.op_type != "Constant" for o in n.output if o and o not in have]
    exposed.graph.output.extend([onnx.ValueInfoProto(name=name) for name in names])
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    nodes = ort.InferenceSession(exposed.SerializeToString(), options, providers=["CPUExecutionProvider"])
    runs = [(default.run(None, feed)[0], dict(zip([o.name for o in nodes.get_outputs()], nodes.run(None, feed))))
            for feed in feeds]
    outs.append((graph.SerializeToString(), runs))
pickle.dump(outs, open(sys.argv[2], "wb"))
"""


def test_avx2_emulated_models(models, tmp_path: Path):
    """ORT under qemu-x86_64 -cpu Haswell (AVX2 without VNNI: u8 x s8 pairs saturate) on seven of the models, two
    inputs each, one far past the calibrated range: every node against qlib with pairs_saturate=True."""
    gen = torch.Generator().manual_seed(29)
    cases, inputs = [], []
    for name in QEMU_MODELS:
        model = onnx.load(models[name])
        shape = FORUM.shape if name.startswith("forum") else CNN_SHAPE
        xs = [torch.randn(*shape, generator=gen), torch.randn(*shape, generator=gen) * 6]
        inputs.append(xs)
        cases.append((model.SerializeToString(), [{model.graph.input[0].name: x.numpy()} for x in xs]))
    outs = run_on_haswell(QEMU_SCRIPT, cases, tmp_path)
    differ_from_vnni = 0
    for name, xs, (graph, runs) in zip(QEMU_MODELS, inputs, outs, strict=True):
        graph_model = onnx.load_from_string(graph)
        for x, (default, theirs) in zip(xs, runs, strict=True):
            result = run_onnx(graph_model, x, pairs_saturate=True, optimize=False)
            compare_nodes(result, theirs, default, f"{name} under qemu -cpu Haswell")
            exact = run_onnx(graph_model, x, pairs_saturate=False, optimize=False).returned.codes
            differ_from_vnni += int((exact != result.returned.codes).sum())
    assert differ_from_vnni > 0  # the emulated CPU saturated: the test tells the two CPU kinds apart
