"""qlib.run and qlib.compare on small eager-mode quantized models, against torch's own forward."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import qlib
from qlib.integer_model import Activation
from qlib.registry import packed_backend
from qlib.testing import assert_same_ints

# torch's integers here depend on the CPU kind: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = pytest.mark.cpu_kind


class Block(nn.Module):
    """conv (+ ReLU) -> conv, a residual add, ReLU; optionally depthwise."""

    def __init__(self, channels: int, kernel: int, depthwise: bool):
        super().__init__()
        groups = channels if depthwise else 1
        self.conv1 = nn.Conv2d(channels, channels, kernel, padding=kernel // 2, groups=groups)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)
        self.skip = nn.quantized.FloatFunctional()
        self.relu2 = nn.ReLU()

    def forward(self, x):
        y = self.relu1(self.conv1(x))
        return self.relu2(self.skip.add(self.conv2(y), x))


class SmallCNN(nn.Module):
    def __init__(self, channels: int, kernel: int, depthwise: bool, hidden: int, with_relu_fc: bool):
        super().__init__()
        self.quant = tq.QuantStub()
        self.stem = nn.Conv2d(3, channels, 3, stride=2, padding=1)
        self.stem_relu = nn.ReLU()
        self.block = Block(channels, kernel, depthwise)
        self.fc1 = nn.Linear(channels * 4 * 4, hidden)
        self.fc1_relu = nn.ReLU() if with_relu_fc else nn.Identity()
        self.fc2 = nn.Linear(hidden, 5)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.stem_relu(self.stem(self.quant(x)))
        x = self.block(x)
        x = torch.flatten(x, 1)
        return self.dequant(self.fc2(self.fc1_relu(self.fc1(x))))


def quantized(model: nn.Module, calibration: torch.Tensor, fuse_fc: bool) -> tuple[nn.Module, nn.Module]:
    """(the fused float model, the model calibrated and converted) on the fbgemm engine."""
    model.eval()
    model.qconfig = tq.get_default_qconfig("fbgemm")
    groups = [["stem", "stem_relu"], ["block.conv1", "block.relu1"]] + ([["fc1", "fc1_relu"]] if fuse_fc else [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fused = tq.fuse_modules(model, groups)
        prepared = tq.prepare(copy.deepcopy(fused))
        prepared(calibration)
        return fused, tq.convert(prepared)


def torch_steps(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    out: dict[str, torch.Tensor] = {}
    hooks = [m.register_forward_hook(lambda _, i, o, n=n: out.__setitem__(n, o)) for n, m in model.named_modules() if n]
    try:
        with torch.no_grad():
            y = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return y, out


@pytest.fixture(autouse=True)
def fbgemm_engine():
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = "fbgemm"  # the engine qlib models on every x86 CPU
    yield
    torch.backends.quantized.engine = before


@settings(max_examples=settings().max_examples // 10, deadline=None)
@given(
    channels=st.sampled_from([8, 16]),
    kernel=st.sampled_from([1, 3, 5]),
    depthwise=st.booleans(),
    hidden=st.integers(3, 40),
    with_relu_fc=st.booleans(),
    batch=st.integers(1, 6),
    seed=st.integers(0, 2**31),
)
def test_run_equals_torch_at_every_step(channels, kernel, depthwise, hidden, with_relu_fc, batch, seed):
    torch.manual_seed(seed)
    if depthwise and kernel == 1:
        kernel = 3
    model = SmallCNN(channels, kernel, depthwise, hidden, with_relu_fc)
    _, q = quantized(model, torch.randn(16, 3, 8, 8) * 2, with_relu_fc)
    x = torch.randn(batch, 3, 8, 8) * 2
    y, steps = torch_steps(q, x)
    result = qlib.run(q, x)
    checked = 0
    for name, activation in result.activations.items():
        theirs = steps.get(name, steps.get(f"{name}.activation_post_process"))
        if isinstance(theirs, torch.Tensor) and theirs.is_quantized:
            assert (activation.scale, activation.zero_point) == (theirs.q_scale(), theirs.q_zero_point()), name
            assert_same_ints(activation.codes, theirs.int_repr(), name)
            checked += 1
    assert checked >= 7  # quant, stem, block.conv1, block.conv2, block.skip, fc1, fc2
    assert torch.equal(result.output.codes, y)


def test_compare_finds_the_layer_whose_calibration_is_broken():
    torch.manual_seed(3)
    model = SmallCNN(8, 3, False, 16, True)
    fused, q = quantized(model, torch.randn(32, 3, 8, 8), True)
    x = torch.randn(8, 3, 8, 8)
    healthy = qlib.compare(fused, q, x)
    assert all(layer.exact for layer in healthy.layers)
    assert healthy.first_departure(15.0) is None, str(healthy)
    # the second conv's output range taken from the wrong data: far too narrow
    q.block.conv2.scale = q.block.conv2.scale / 20
    broken = qlib.compare(fused, q, x)
    first = broken.first_departure(15.0)
    assert first is not None and first.name == "block.conv2", str(broken)
    assert all(layer.exact for layer in broken.layers)  # torch still computes what the layer says
    assert "block.conv2" in str(broken) and "<table" in broken._repr_html_()


def test_compare_says_which_layers_have_no_float_reference():
    torch.manual_seed(4)
    model = SmallCNN(8, 3, False, 16, True)
    fused, q = quantized(model, torch.randn(16, 3, 8, 8), True)

    class Wrapped(nn.Module):  # the same float model, every layer's name now starts with "inner."
        def __init__(self):
            super().__init__()
            self.inner = fused

        def forward(self, x):
            return self.inner(x)

    report = qlib.compare(Wrapped(), q, torch.randn(4, 3, 8, 8))
    assert report.layers == [] and report.unmatched[:3] == ["quant", "stem", "block.conv1"], report.unmatched
    assert "not compared, no layer of that name in the float model: quant, stem" in str(report)
    assert qlib.compare(fused, q, torch.randn(4, 3, 8, 8)).unmatched == []


def convert(model: nn.Module, calibration: torch.Tensor, engine: str = "fbgemm") -> nn.Module:
    torch.backends.quantized.engine = engine  # weights are packed for the engine set at convert
    model.eval()
    model.qconfig = tq.get_default_qconfig(engine)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tq.prepare(model)
        prepared(calibration)
        return tq.convert(prepared)


def test_an_op_run_does_not_model_is_named_with_its_module():
    model = nn.Sequential(tq.QuantStub(), nn.Upsample(scale_factor=2), tq.DeQuantStub())
    q = convert(model, torch.randn(1, 1, 2, 2))
    pattern = r"does not model the torch op aten::upsample_nearest2d .* in 1 \(torch.nn.modules.upsampling.Upsample\)"
    with pytest.raises(ValueError, match=pattern):
        qlib.run(q, torch.randn(1, 1, 2, 2))


def test_a_prepared_model_is_told_to_convert_and_a_float_model_to_quantize():
    model = nn.Sequential(tq.QuantStub(), nn.Linear(3, 2), tq.DeQuantStub()).eval()
    model.qconfig = tq.get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tq.prepare(copy.deepcopy(model))
    with pytest.raises(ValueError, match="prepared but not converted.*convert"):
        qlib.run(prepared, torch.randn(2, 3))
    with pytest.raises(ValueError, match="this is a float model"):
        qlib.run(nn.Linear(3, 2), torch.randn(2, 3))


class Twice(nn.Module):
    """One ReLU module called after two layers, and a branch on the data, as hand-written models have."""

    def __init__(self):
        super().__init__()
        self.quant = tq.QuantStub()
        self.fc1 = nn.Linear(6, 6)
        self.fc2 = nn.Linear(6, 4)
        self.relu = nn.ReLU()
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.relu(self.fc1(self.quant(x)))
        x = self.relu(self.fc2(x))
        y = self.dequant(x)
        return y if y.sum() >= 0 else -y


def test_a_module_called_twice_is_two_steps_each_against_its_own_float_output():
    torch.manual_seed(5)
    float_model = Twice().eval()
    q = convert(copy.deepcopy(float_model), torch.randn(32, 6))
    x = torch.randn(8, 6)
    result = qlib.run(q, x)
    assert list(result.activations) == ["quant", "fc1", "relu", "fc2", "relu#2", "dequant"]
    torch_relus = []
    hook = q.relu.register_forward_hook(lambda m, i, o: torch_relus.append(o.int_repr()))
    with torch.no_grad():
        expected = q(x)
    hook.remove()
    assert_same_ints(result.activations["relu"].codes, torch_relus[0])
    assert_same_ints(result.activations["relu#2"].codes, torch_relus[1])
    assert torch.equal(result.output.codes, expected)
    report = qlib.compare(float_model, q, x)
    relus = [layer for layer in report.layers if layer.op == "ReLU"]
    assert [layer.name for layer in relus] == ["relu", "relu#2"]
    assert all(layer.sqnr_db > 15 and layer.exact for layer in relus), str(report)


def test_an_engine_changed_after_convert_is_followed():
    """Weights packed under one engine run on it in torch whatever the engine is later; qlib follows them."""
    torch.manual_seed(6)
    model = nn.Sequential(tq.QuantStub(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3), tq.DeQuantStub())
    q = convert(model, torch.randn(64, 8) * 3, engine="qnnpack")
    torch.backends.quantized.engine = "fbgemm"  # after convert: torch still runs qnnpack's kernels
    x = torch.randn(16, 8) * 3
    with torch.no_grad():
        expected = q(x)
    assert torch.equal(qlib.run(q, x).output.codes, expected)
    assert packed_backend(q[1]._packed_params._packed_params) == "qnnpack"
    report = qlib.compare(copy.deepcopy(model), q, x)
    assert all(layer.exact for layer in report.layers), str(report)


def test_activation_dequantizes_with_its_parameters():
    step = Activation("fc", "Linear", torch.tensor([0, 10, 255], dtype=torch.uint8), 0.5, 10)
    assert step.dequantized().tolist() == [-5.0, 0.0, 122.5]


@settings(max_examples=max(2, settings().max_examples // 30), deadline=None)
@given(seed=st.integers(0, 2**31), batch=st.integers(1, 9), per_channel=st.booleans())
def test_a_dynamically_quantized_mlp_runs_bit_for_bit(seed, batch, per_channel):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(12, 24), nn.ReLU(), nn.LayerNorm(24), nn.Linear(24, 6)).eval()
    qconfig = tq.per_channel_dynamic_qconfig if per_channel else tq.default_dynamic_qconfig
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = tq.quantize_dynamic(copy.deepcopy(model), {nn.Linear: qconfig})
    x = torch.randn(batch, 12) * 3
    with torch.no_grad():
        expected = q(x)
    result = qlib.run(q, x)
    assert list(result.activations) == ["0", "3"]
    assert torch.equal(result.output.codes, expected)  # LayerNorm and ReLU in torch, on qlib's floats
    report = qlib.compare(model, q, x)
    assert [layer.name for layer in report.layers] == ["0", "3"] and all(layer.exact for layer in report.layers)


def test_a_dynamically_quantized_transformer_encoder_runs_bit_for_bit():
    torch.manual_seed(7)
    encoder = nn.TransformerEncoder(nn.TransformerEncoderLayer(16, 2, 32, batch_first=True), 2).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = tq.quantize_dynamic(copy.deepcopy(encoder), {nn.Linear})
    x = torch.randn(2, 5, 16)
    before = torch.backends.mha.get_fastpath_enabled()
    try:
        # torch 2.13 and 2.14's fast path reads each Linear's .weight, a method on dynamic Linear modules, and
        # fails on some shapes (qlib.run then says to do this)
        torch.backends.mha.set_fastpath_enabled(False)
        with torch.no_grad():
            expected = q(x)
        result = qlib.run(q, x)
    finally:
        torch.backends.mha.set_fastpath_enabled(before)
    assert len(result.activations) == 4  # linear1 and linear2 of each layer (out_proj stays float in torch)
    assert torch.equal(result.output.codes, expected)


def test_a_pt2e_reference_graph_runs_bit_for_bit():
    pt2e = pytest.importorskip("torchao.quantization.pt2e.quantize_pt2e")
    x86 = pytest.importorskip("torchao.quantization.pt2e.quantizer.x86_inductor_quantizer")

    class Small(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 8, 3)
            self.relu = nn.ReLU()
            self.pool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(8, 4)

        def forward(self, x):
            return self.fc(self.pool(self.relu(self.conv(x))).flatten(1))

    torch.manual_seed(8)
    model, x = Small().eval(), torch.randn(4, 3, 10, 10)
    quantizer = x86.X86InductorQuantizer().set_global(x86.get_default_x86_inductor_quantization_config())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = pt2e.prepare_pt2e(torch.export.export(model, (x,)).module(), quantizer)
        prepared(x)
        converted = pt2e.convert_pt2e(prepared)
    with torch.no_grad():
        expected = converted(x * 2)
    result = qlib.run(converted, x * 2)  # beyond the calibrated range too
    assert torch.equal(result.output.codes, expected)
    assert [name for name in result.activations if "dequantize" not in name][:3] == ["conv.weight", "fc.weight", "x"]
    report = qlib.compare(model, converted, x)
    assert [layer.name for layer in report.layers][:3] == ["x", "relu", "pool"], str(report)
    assert all(layer.exact for layer in report.layers) and report.layers[1].sqnr_db > 20, str(report)


def test_compare_refuses_a_float_model_that_is_not_the_quantized_ones_twin():
    torch.manual_seed(9)
    model = SmallCNN(8, 3, False, 16, True)
    unfused = copy.deepcopy(model).eval()
    fused, q = quantized(model, torch.randn(16, 3, 8, 8), True)
    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(ValueError, match="not fused as the quantized one: stem is Conv2d"):
        qlib.compare(unfused, q, x)
    other = copy.deepcopy(fused)
    with torch.no_grad():
        other.fc2.weight.mul_(1.5)
    with pytest.raises(ValueError, match="weights at fc2 are not the quantized model's"):
        qlib.compare(other, q, x)
    with pytest.raises(ValueError, match="first argument must be the float model"):
        qlib.compare(q, fused, x)
    assert all(layer.exact for layer in qlib.compare(fused, q, x).layers)
