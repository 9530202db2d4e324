"""Run by tests/test_conv.py with FBGEMM_ENABLE_INSTRUCTIONS=AVX2: qlib.conv2d against torch on FBGEMM's
saturating kernels, on a few hundred random layers of every kind; prints the number of mismatches.

It runs unchanged on a CPU without AVX512-VNNI (or under ``qemu-x86_64 -cpu Haswell``), where torch's
x86 engine never runs oneDNN and the groupwise kernel saturates pairs too."""

from __future__ import annotations

from collections import Counter

import torch
from test_conv import KERNEL_CASES, kernel_of, layer, shapes, torch_conv

import qlib.quantized_conv as qc
import qlib.quantized_linear as ql

torch.set_num_threads(1)  # the codes do not depend on it (the tests in the main process use the default)
gen = torch.Generator().manual_seed(5)


def choose(options):
    return options[int(torch.randint(0, len(options), (1,), generator=gen))]


def integer(lo, hi):
    return int(torch.randint(lo, hi + 1, (1,), generator=gen))


mismatches = compared = 0
kernels: Counter = Counter()
cases = [shapes(["groups=1", "depthwise", "grouped"][case % 3], choose, integer) for case in range(200)]
cases += [shape for _, shape, _ in KERNEL_CASES for _ in range(4)]  # every FBGEMM kernel, on both engines
for case, shape in enumerate(cases):
    per_channel, symmetric, full_range = case % 5 < 2, case % 4 == 0, case % 7 != 0
    bias_kind = ["none", "random", "near tie"][case // 3 % 3]
    args = layer(shape, per_channel, symmetric, full_range, bias_kind, case % 6 == 0, case)
    engine = ["x86", "fbgemm"][case // 2 % 2]
    kernel = kernel_of(args, engine)
    kernels[kernel] += 1
    if kernel == "groupwise (broken)":  # torch computes wrong codes there, or corrupts the heap: never run it
        continue
    if kernel == "oneDNN":  # qlib must refuse
        try:
            qc.conv2d(*args, engine=engine)
            mismatches += 1
        except ValueError:
            pass
        continue
    expected = torch_conv(*args, engine)
    mismatches += int((qc.conv2d(*args, engine=engine) != expected).sum())
    compared += expected.numel()
print(
    f"saturating pairs: {ql.pairs_saturate_here()}; compared: {compared}; mismatches: {mismatches}; kernels: {dict(kernels)}"
)
