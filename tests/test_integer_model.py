"""qlib.run and qlib.compare on small eager-mode quantized models, against torch's own forward."""

from __future__ import annotations

import copy
import warnings

import pytest
import torch
import torch.ao.quantization as tq
from conftest import assert_same_ints
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import qlib
from qlib.integer_model import Activation


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


def test_a_module_run_does_not_model_is_named():
    model = nn.Sequential(tq.QuantStub(), nn.Upsample(scale_factor=2), tq.DeQuantStub())
    model.eval()
    model.qconfig = tq.get_default_qconfig("fbgemm")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prepared = tq.prepare(model)
        prepared(torch.randn(1, 1, 2, 2))
        q = tq.convert(prepared)
    with pytest.raises(ValueError, match=r"does not model the module 1 \(torch.nn.modules.upsampling.Upsample\)"):
        qlib.run(q, torch.randn(1, 1, 2, 2))


def test_untraceable_models_are_refused_clearly():
    class Branchy(nn.Module):
        def forward(self, x):
            return x if x.sum() > 0 else -x

    with pytest.raises(ValueError, match="traces the model's forward with torch.fx"):
        qlib.run(Branchy(), torch.randn(3))


def test_activation_dequantizes_with_its_parameters():
    step = Activation("fc", "Linear", torch.tensor([0, 10, 255], dtype=torch.uint8), 0.5, 10)
    assert step.dequantized().tolist() == [-5.0, 0.0, 122.5]
