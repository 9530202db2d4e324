"""torchvision's quantizable models, run integer by integer: qlib.run gives torch's output bit for bit, and
qlib.compare finds every step of the converted model exact.

Each model is built with random weights (``weights=None``), fused, prepared with FBGEMM's default
qconfig, calibrated on two small random batches and converted, as torchvision's quantization recipe
does; inputs are as small as each model takes.
"""

from __future__ import annotations

import copy
import time
import warnings

import pytest
import torch

torchvision_models = pytest.importorskip("torchvision.models.quantization")

import qlib  # noqa: E402

# the convolutions' integers depend on the CPU kind: make unit-avx2 runs these again under the AVX2 kernels
pytestmark = pytest.mark.cpu_kind

# 32x32 inputs but where a model needs more: inception_v3 runs from 75x75 on, and shufflenet_v2 from 33x33 (at
# 32x32 torch's own quantized mean of its last, 1x1 activation fails: "required rank 4 tensor to use channels_last")
SIZES = {"inception_v3": 75, "shufflenet_v2_x1_0": 33}
MODELS = [
    "resnet18",
    "resnet50",
    "resnext101_32x8d",  # about 8 s on one thread, the slowest
    "mobilenet_v2",
    "mobilenet_v3_large",
    "shufflenet_v2_x1_0",
    "googlenet",
    "inception_v3",
]


def converted(name: str, size: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    """(the fused float model, the quantized one) for torchvision's quantizable ``name``."""
    torch.manual_seed(0)
    extra = {"init_weights": True} if name in ("googlenet", "inception_v3") else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = getattr(torchvision_models, name)(weights=None, quantize=False, **extra).eval()
        model.fuse_model()
        fused = copy.deepcopy(model)
        model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
        prepared = torch.ao.quantization.prepare(model)
        with torch.no_grad():
            for _ in range(2):
                prepared(torch.randn(2, 3, size, size))
        return fused, torch.ao.quantization.convert(prepared)


@pytest.fixture
def fbgemm():
    """The fbgemm engine, on one thread: the suite's workers share the cores, and torch's threads, spinning while
    they wait for a busy core, make a model tens of times slower there (run and compare follow the thread count)."""
    engine, threads = torch.backends.quantized.engine, torch.get_num_threads()
    torch.backends.quantized.engine = "fbgemm"
    torch.set_num_threads(1)
    yield
    torch.backends.quantized.engine = engine
    torch.set_num_threads(threads)


@pytest.mark.parametrize("name", MODELS)
def test_a_torchvision_model_runs_bit_for_bit(name, fbgemm):
    """qlib.run, on qlib's own integers, gives torch's output, and compare finds each step exact (computed from
    torch's own inputs; run's steps after a convolution can differ: test_run_keeps_a_convolutions_layout)."""
    size = SIZES.get(name, 32)
    fused, quantized = converted(name, size)
    x = torch.randn(1, 3, size, size)
    start = time.perf_counter()
    with torch.no_grad():
        expected = quantized(x)
    result = qlib.run(quantized, x)
    assert torch.equal(result.output.codes, expected), f"{name}: qlib.run differs from torch"
    report = qlib.compare(fused, quantized, x)
    inexact = [
        f"{layer.name} ({layer.op}): {layer.mismatches} of {layer.numel}" for layer in report.layers if not layer.exact
    ]
    assert not inexact, f"{name}: {inexact}"
    assert not report.unmatched, report.unmatched
    print(f"{name} at {size}x{size}: {len(report.layers)} steps exact, {time.perf_counter() - start:.1f} s")


@pytest.mark.xfail(
    strict=True,
    reason="qlib.quantized_conv's handler returns contiguous codes where torch's quantized Conv2d returns channels-last "
    "ones, so in qlib.run the kernels after a convolution that pick their path by layout (NHWC poolings, cat, the "
    "element-wise ops' scalar tail) can take another path than in torch (shufflenet_v2's mean at 64x64, "
    "mobilenet_v3_large's squeeze-excitation poolings at 224x224). Remove this mark once the handler returns "
    "channels-last codes",
)
def test_run_keeps_a_convolutions_layout(fbgemm):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.ao.quantization.QuantStub(), torch.nn.Conv2d(3, 8, 3)).eval()
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    prepared = torch.ao.quantization.prepare(model)
    prepared(torch.randn(2, 3, 8, 8))
    quantized = torch.ao.quantization.convert(prepared)
    with torch.no_grad():
        expected = quantized(torch.randn(1, 3, 8, 8))
    assert expected.is_contiguous(memory_format=torch.channels_last)
    assert qlib.run(quantized, torch.randn(1, 3, 8, 8)).activations["1"].codes.stride() == expected.stride()
