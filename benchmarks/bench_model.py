"""Time qlib.run on a small CNN (every kind of FBGEMM convolution and the add) against torch's quantized forward, in one run.

The model is the one of "A whole model, integer by integer" (book/10_model): a conv-ReLU, a
residual block (depthwise conv-ReLU, 1x1 conv, quantized add), flatten and a Linear, calibrated
and converted in eager mode on the ``fbgemm`` engine. ``qlib.run`` traces it with torch.fx and
recomputes every step with qlib's operators (the model of this CPU, ``pairs_saturate=None``), so
the ratio covers the whole model: im2col, depthwise and pointwise convolutions, the add's body
and tail split, the Linear.

Then the same for torchvision's resnet18 (random weights, 1x3x224x224) converted in eager mode on
the default ``x86`` engine, whose convolutions run on oneDNN on a Linux CPU with AVX512-VNNI and
on FBGEMM elsewhere, its Linear on FBGEMM (``--no-resnet18`` leaves it out; it needs torchvision).

Machines here are noisy, so only the ratio measured in the same run is reported; each time is the
best of several repetitions, torch's and qlib's taken in turn. The goal is qlib within 20x of
torch. Run with `make bench`; ``--threads 1`` compares single-threaded times, steadier on a busy
machine, and ``--profile`` prints where qlib.run spends its time.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import pstats
import warnings
from collections import Counter

import torch
import torch.ao.quantization as tq
from timing import best_times
from torch import nn

import qlib

warnings.filterwarnings("ignore")


class SmallCNN(nn.Module):
    """conv-ReLU; a residual block: depthwise conv-ReLU, 1x1 conv, add; flatten; Linear."""

    def __init__(self, size: int):
        super().__init__()
        self.quant = tq.QuantStub()
        self.conv1 = nn.Conv2d(3, 16, 3, stride=2, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.relu2 = nn.ReLU()
        self.conv3 = nn.Conv2d(16, 16, 1)
        self.skip = torch.ao.nn.quantized.FloatFunctional()
        self.fc = nn.Linear(16 * (size // 2) ** 2, 10)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        x = self.relu1(self.conv1(self.quant(x)))
        y = self.conv3(self.relu2(self.conv2(x)))
        x = self.skip.add(y, x)
        return self.dequant(self.fc(torch.flatten(x, 1)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16, help="images per batch (the chapter's: 16)")
    parser.add_argument("--size", type=int, default=16, help="image height and width (the chapter's: 16)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    parser.add_argument("--profile", action="store_true", help="print qlib.run's profile")
    parser.add_argument("--no-resnet18", action="store_true", help="time the small CNN only")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.backends.quantized.engine = "fbgemm"  # FBGEMM on every x86 CPU, the engine qlib models

    torch.manual_seed(0)
    model = SmallCNN(args.size).eval()
    gen = torch.Generator().manual_seed(10)
    calibration = torch.randn(64, 3, args.size, args.size, generator=gen)
    x = torch.randn(args.batch, 3, args.size, args.size, generator=gen)
    model.qconfig = tq.get_default_qconfig("fbgemm")
    fused = tq.fuse_modules(model, [["conv1", "relu1"], ["conv2", "relu2"]])
    prepared = tq.prepare(copy.deepcopy(fused))
    with torch.no_grad():
        prepared(calibration)
    quantized = tq.convert(prepared)

    def run_torch():
        with torch.no_grad():
            return quantized(x)

    def run_qlib():
        return qlib.run(quantized, x)

    equal = torch.equal(run_qlib().output.codes, run_torch())
    t_torch, t_qlib = best_times([run_torch, run_qlib], args.repeat)
    threads = torch.get_num_threads()
    print(
        f"small CNN, batch {args.batch} of 3x{args.size}x{args.size}; torch {torch.__version__}, "
        f"{threads} thread{'' if threads == 1 else 's'}; this CPU: pairs saturate = {qlib.pairs_saturate_here()}"
    )
    print(f"  {'':24s} {'torch':>9s} {'qlib.run':>10s} {'qlib/torch':>11s}  equal")
    print(f"  {'whole model':24s} {t_torch * 1e3:6.1f} ms {t_qlib * 1e3:7.1f} ms {t_qlib / t_torch:10.1f}x  {equal}")
    if args.profile:
        profile = cProfile.Profile()
        profile.runcall(run_qlib)
        pstats.Stats(profile).sort_stats("cumulative").print_stats(25)
    if not args.no_resnet18:
        resnet18(args.repeat, args.profile)


def resnet18(repeat: int, profile: bool) -> None:
    """qlib.run against torch on torchvision's resnet18, quantized in eager mode on the x86 engine."""
    try:
        from torchvision.models.quantization import resnet18 as build
    except ImportError:
        print("resnet18: torchvision is not installed, skipped")
        return
    torch.backends.quantized.engine = "x86"
    torch.manual_seed(0)
    model = build(weights=None, quantize=False).eval()
    model.fuse_model()
    model.qconfig = tq.get_default_qconfig("x86")
    prepared = tq.prepare(model)
    gen = torch.Generator().manual_seed(11)
    with torch.no_grad():
        for _ in range(2):
            prepared(torch.randn(1, 3, 224, 224, generator=gen))
    quantized = tq.convert(prepared)
    x = torch.randn(1, 3, 224, 224, generator=gen)

    def run_torch():
        with torch.no_grad():
            return quantized(x)

    def run_qlib():
        return qlib.run(quantized, x)

    equal = torch.equal(run_qlib().output.codes, run_torch())
    t_torch, t_qlib = best_times([run_torch, run_qlib], repeat)
    kernels = Counter(
        qlib.conv2d_kernel(
            m.in_channels, m.out_channels, m.kernel_size, m.stride, m.padding, m.dilation, m.groups, True
        ).split(":")[0]
        for m in quantized.modules()
        if isinstance(m, torch.ao.nn.quantized.Conv2d)
    )
    print(
        f"resnet18, 1x3x224x224, x86 engine; convolutions: {', '.join(f'{k} {n}' for k, n in sorted(kernels.items()))}"
    )
    print(f"  {'':24s} {'torch':>9s} {'qlib.run':>10s} {'qlib/torch':>11s}  equal")
    print(f"  {'whole model':24s} {t_torch * 1e3:6.1f} ms {t_qlib * 1e3:7.1f} ms {t_qlib / t_torch:10.1f}x  {equal}")
    if profile:
        stats = cProfile.Profile()
        stats.runcall(run_qlib)
        pstats.Stats(stats).sort_stats("tottime").print_stats(15)


if __name__ == "__main__":
    main()
