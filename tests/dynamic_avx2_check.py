"""Run by tests/test_dynamic.py with FBGEMM_ENABLE_INSTRUCTIONS=AVX2: qlib.linear_dynamic with
full-range activations (reduce_range=False, where pairs can saturate) against torch."""

from __future__ import annotations

import torch
from test_dynamic import torch_dynamic

import qlib.dynamic as qd
from qlib.quantized_linear import pairs_saturate_here

gen = torch.Generator().manual_seed(12)
mismatches = compared = 0
for case in range(120):
    m, k, n = (int(torch.randint(1, hi, (1,), generator=gen)) for hi in (9, 600, 24))
    x = torch.randn(m, k, generator=gen).abs() * 3  # positive: codes reach 255
    w = torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8)
    bias = torch.randn(n, generator=gen) if case % 2 else None
    expected = torch_dynamic(x, w, 0.01, 0, bias, False, case % 3 == 0)
    ours = qd.linear_dynamic(x, w, 0.01, 0, bias, False, case % 3 == 0)
    mismatches += int((ours.view(torch.int32) != expected.view(torch.int32)).sum())
    compared += expected.numel()
print(f"saturating pairs: {pairs_saturate_here()}; compared: {compared}; mismatches: {mismatches}")
