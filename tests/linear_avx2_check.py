"""Run by tests/test_linear.py with FBGEMM_ENABLE_INSTRUCTIONS=AVX2: qlib.linear against torch on
FBGEMM's saturating kernels, on a few hundred random layers; prints the number of mismatches."""

from __future__ import annotations

import torch
from test_linear import torch_linear

import qlib.quantized_linear as ql

gen = torch.Generator().manual_seed(11)
mismatches = compared = 0
for case in range(200):
    m, k, n = (int(torch.randint(1, hi, (1,), generator=gen)) for hi in (9, 700, 24))
    x = torch.randint(0, 256, (m, k), generator=gen, dtype=torch.uint8)
    w = torch.randint(-128, 128, (n, k), generator=gen).to(torch.int8)
    per_channel = case % 2 == 0
    sw = torch.empty(n).uniform_(0.001, 0.02, generator=gen) if per_channel else 0.01
    zw = torch.randint(-20, 21, (n,), generator=gen) if per_channel else 3
    bias = torch.randn(n, generator=gen) if case % 3 else None
    args = (x, 0.02, 130, w, sw, zw, bias, 0.05, 77, case % 5 == 0)
    expected = torch_linear(*args, engine="x86" if case % 4 else "fbgemm")
    mismatches += int((ql.linear(*args) != expected).sum())
    compared += expected.numel()
print(f"saturating pairs: {ql.pairs_saturate_here()}; compared: {compared}; mismatches: {mismatches}")
