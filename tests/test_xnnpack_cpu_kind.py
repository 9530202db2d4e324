"""ExecuTorch's XNNPACK delegate writes the same int8 codes on an AVX2-only CPU as on this one.

XNNPACK picks its x86 kernels by CPU when it starts (AVX512-VNNI, AVX-VNNI, AVX2, ...:
https://github.com/google/XNNPACK/blob/92a7ad501b9516f9fecae119e0146dd1f58e54c1/src/configs/gemm-config.c).
The edge chapter (book/15_edge.md) stores the delegate's codes, so they must not depend on that choice:
one per-op program (quantize, convolution with ReLU, mean, Linear, add, dequantize) runs here and under
`qemu-x86_64 -cpu Haswell` (AVX2, no AVX-512, no VNNI), and every delegate call's output is compared.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
from torch import nn

executorch = pytest.importorskip("executorch")

# The runtime's bare extension module: executorch.runtime would import executorch.exir too, which
# costs three times torch's own import under emulation.
RUN = """
import sys
import torch
from executorch.extension.pybindings import _C

pte, x, etdump, debug = sys.argv[1:5]
module = _C._load_for_executorch(pte, enable_etdump=True, debug_buffer_size=1 << 22)
module.forward([torch.load(x)])
module.write_etdump_result_to_file(etdump, debug)
"""


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 24)
        self.skip = nn.Linear(16, 24)

    def forward(self, x):
        h = self.pool(torch.relu(self.conv(x))).flatten(1)
        return self.fc(h) + self.skip(h)


def per_op_program(tmp_path: Path) -> tuple[Path, Path]:
    from executorch.backends.xnnpack.partition.xnnpack_partitioner import XnnpackPartitioner
    from executorch.backends.xnnpack.quantizer.xnnpack_quantizer import (
        XNNPACKQuantizer,
        get_symmetric_quantization_config,
    )
    from executorch.exir import to_edge_transform_and_lower
    from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

    torch.manual_seed(5)
    gen = torch.Generator().manual_seed(5)
    calibration, x = (torch.randn(16, 3, 12, 12, generator=gen) * 2 for _ in range(2))
    exported = torch.export.export(Net().eval(), (calibration,)).module()
    quantizer = XNNPACKQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True))
    prepared = prepare_pt2e(exported, quantizer)
    prepared(calibration)
    converted = convert_pt2e(prepared)
    partitioner = XnnpackPartitioner(per_op_mode=True)
    edge = to_edge_transform_and_lower(torch.export.export(converted, (x,)), partitioner=[partitioner])
    pte, inputs = tmp_path / "net.pte", tmp_path / "x.pt"
    pte.write_bytes(edge.to_executorch().buffer)
    torch.save(x, inputs)
    return pte, inputs


def delegate_outputs(etdump: Path, debug: Path) -> list[tuple[str, torch.Tensor]]:
    from executorch.devtools import Inspector

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.frombuffer on a read-only buffer
        inspector = Inspector(etdump_path=str(etdump), debug_buffer_path=str(debug))
    outputs, ops = [], []
    for block in inspector.event_blocks:
        for event in block.events:
            if event.name == "DELEGATE_CALL":
                outputs.append((" + ".join(ops), event.debug_data[-1].clone()))
                ops = []
            elif "#" in event.name:
                ops.append(event.name.split(" #")[0])
    return outputs


def run(command: list[str], tmp_path: Path, name: str) -> list[tuple[str, torch.Tensor]]:
    pte, x = tmp_path / "net.pte", tmp_path / "x.pt"
    etdump, debug = tmp_path / f"{name}.etdp", tmp_path / f"{name}.bin"
    done = subprocess.run(
        [*command, sys.executable, str(tmp_path / "run.py"), str(pte), str(x), str(etdump), str(debug)],
        capture_output=True, text=True, timeout=600, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return delegate_outputs(etdump, debug)


def test_same_codes_on_an_avx2_only_cpu(tmp_path: Path):
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (Debian: apt-get install qemu-user); the AVX2 emulation needs it")
    per_op_program(tmp_path)
    (tmp_path / "run.py").write_text(RUN)
    here = run([], tmp_path, "here")
    emulated = run([qemu, "-cpu", "Haswell"], tmp_path, "haswell")
    ops = [op for op, _ in here]
    for expected in ("Convert", "Convolution", "Mean", "Fully Connected", "Add"):
        assert any(expected in op for op in ops), f"no {expected} among the delegate calls {ops}"
    compared = 0
    for (op, ours), (_, theirs) in zip(here, emulated, strict=True):
        assert torch.equal(ours, theirs), f"{op}: {int((ours != theirs).sum())} codes differ on the AVX2-only CPU"
        compared += ours.numel()
    assert compared > 30_000
