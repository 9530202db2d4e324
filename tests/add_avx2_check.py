"""Run by tests/test_add.py with ATEN_CPU_CAPABILITY=avx2: qlib.add against torch's AVX2 kernels (as on an
AVX2-only CPU), on lengths around the vector widths and on large tensors with 1 and 2 threads; prints the
number of mismatches, and those of the AVX512 kernel's width (64), which must not be 0."""

from __future__ import annotations

import torch
from test_add import codes, torch_add

import qlib.quantized_add as qa

mismatches = compared = wide = 0
for case in range(240):
    dtype = (torch.uint8, torch.int8, torch.int32)[case % 3]
    n = case % 200 + 1 if case < 200 else 32 * (case % 9 + 1) + case % 5 - 2
    a, b, p = codes(dtype, n, ("ties", "near ties", "random")[case % 3 - 1], case)
    relu = case % 4 == 0
    expected = torch_add(a, *p[:2], b, *p[2:], relu)
    mismatches += int((qa.add(a, *p[:2], b, *p[2:], relu) != expected).sum())
    wide += int((qa.add(a, *p[:2], b, *p[2:], relu, vector_width=64 if dtype != torch.int32 else 16) != expected).sum())
    compared += n
for threads in (1, 2):
    torch.set_num_threads(threads)
    for dtype in (torch.uint8, torch.int32):
        a, b, p = codes(dtype, 2**16 + 5, "near ties", threads)
        expected = torch_add(a, *p[:2], b, *p[2:], False)
        mismatches += int((qa.add(a, *p[:2], b, *p[2:]) != expected).sum())
        compared += expected.numel()
capability = torch.backends.cpu.get_cpu_capability()
print(f"capability: {capability}; compared: {compared}; mismatches: {mismatches}; with width 64: {wide};")
