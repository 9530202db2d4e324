"""Time qlib.quantize (each supported release's arithmetic) and qlib.dequantize against
torch's fused C++ kernels and torchao's pure-PyTorch quantize_affine / dequantize_affine,
in one run.

Machines here are noisy, so only ratios measured in the same run are reported;
each time is the best of several repetitions. Run with `make bench`.
"""

from __future__ import annotations

import argparse
import warnings

import torch
from timing import best_times

import qlib

warnings.filterwarnings("ignore")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numel", type=int, default=16 * 2**20)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    from torchao.quantization.quant_primitives import dequantize_affine, quantize_affine

    x = torch.randn(args.numel, generator=torch.Generator().manual_seed(0))
    scale, zero_point = 0.0180064, 40
    block = x.shape
    s_t, z_t = torch.tensor([scale]), torch.tensor([zero_point])

    installed = qlib.torch_release()
    q_torch = torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    q_ao = quantize_affine(x, block, s_t, z_t, torch.uint8, 0, 255)
    exact_vs_torch = torch.equal(qlib.quantize(x, scale, zero_point, torch.quint8), q_torch.int_repr())
    ao_vs_torch = int((q_ao != q_torch.int_repr()).sum())
    q_qlib = q_torch.int_repr()

    quantize = {
        f"qlib.quantize, torch {release}'s arithmetic": (
            lambda release=release: qlib.quantize(x, scale, zero_point, torch.quint8, release=release)
        )
        for release in qlib.SUPPORTED_RELEASES
    }
    quantize["torch.quantize_per_tensor"] = lambda: torch.quantize_per_tensor(x, scale, zero_point, torch.quint8)
    quantize["torchao quantize_affine"] = lambda: quantize_affine(x, block, s_t, z_t, torch.uint8, 0, 255)
    dequantize = {
        "qlib.dequantize": lambda: qlib.dequantize(q_qlib, scale, zero_point),
        "torch Tensor.dequantize": q_torch.dequantize,
        "torchao dequantize_affine": lambda: dequantize_affine(q_ao, block, s_t, z_t, torch.uint8),
    }
    timings = {
        op: dict(zip(fns, best_times(list(fns.values()), args.repeat), strict=True))
        for op, fns in (("quantize", quantize), ("dequantize", dequantize))
    }

    print(f"{args.numel:,} float32 elements, torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(
        f"qlib.quantize (torch {installed}'s arithmetic) equals torch.quantize_per_tensor bit for bit: {exact_vs_torch}"
    )
    print(f"torchao quantize_affine differs from torch.quantize_per_tensor on {ao_vs_torch:,} elements")
    for op, rows in timings.items():
        print(f"\n{op}")
        width = max(map(len, rows))
        baselines = [name for name in rows if not name.startswith("qlib")]
        print(
            f"  {'':{width}s} {'time':>9s}   "
            + "   ".join(f"{'/ ' + name.split()[0].split('.')[0]:>9s}" for name in baselines)
        )
        for name, seconds in rows.items():
            ratios = "   ".join(f"{seconds / rows[base]:9.2f}" for base in baselines)
            print(f"  {name:{width}s} {seconds * 1e3:6.1f} ms   {ratios}")


if __name__ == "__main__":
    main()
