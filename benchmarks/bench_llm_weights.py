"""Time qlib's per-group weight quantization (qlib.llm_weights) against torchao's on a 4096 x 4096 weight,
in one run: the int8 per-group weight of Int8WeightOnlyConfig(granularity=PerGroup(128)), the int4 one of
IntxWeightOnlyConfig(torch.int4, PerGroup(128)), and PrototypeInt4WeightOnlyConfig(128)'s codes and packing,
each on float32 and bfloat16 weights. Each pair is checked equal bit for bit first.

Machines here are noisy, so only ratios measured in the same run are reported; each time is the best of
several repetitions. The goal: qlib within 2x of torchao.
"""

from __future__ import annotations

import argparse
import logging
import warnings

import torch
from timing import best_times

from qlib.llm_weights import int4_weight_cpu, int8_weight, intx_weight

warnings.filterwarnings("ignore")
logging.disable(logging.WARNING)


def same(ours: tuple[torch.Tensor, ...], theirs: tuple[torch.Tensor, ...]) -> bool:
    return all(
        a.dtype == b.dtype and torch.equal(a.view(torch.uint8), b.view(torch.uint8))
        for a, b in zip(ours, theirs, strict=True)
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--size", type=int, default=4096)
    parser.add_argument("--group", type=int, default=128)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from torchao.prototype.quantization.int4.int4_opaque_tensor import Int4OpaqueTensor
    from torchao.quantization import Int8Tensor, IntxUnpackedToInt8Tensor
    from torchao.quantization.granularity import PerGroup

    g = args.group
    print(
        f"{args.size} x {args.size} weight, group size {g}, torch {torch.__version__}, {torch.get_num_threads()} threads"
    )
    print(f"  {'':44s} {'qlib':>9s} {'torchao':>9s} {'qlib / torchao':>15s}  equal")
    for dtype in (torch.float32, torch.bfloat16):
        w = torch.randn(args.size, args.size, generator=torch.Generator().manual_seed(0)).to(dtype)
        cases = {
            "int8 per group (Int8Tensor)": (
                lambda w=w: int8_weight(w, g),
                lambda w=w: Int8Tensor.from_hp(w, PerGroup(g)),
                lambda t: (t.qdata, t.scale, t.zero_point),
            ),
            "int4 per group (IntxUnpackedToInt8Tensor)": (
                lambda w=w: intx_weight(w, g, 4),
                lambda w=w: IntxUnpackedToInt8Tensor.from_hp(w, (1, g), torch.int4),
                lambda t: (t.qdata, t.scale, t.zero_point),
            ),
            "int4 tinygemm + packing (Int4OpaqueTensor)": (
                lambda w=w: int4_weight_cpu(w, g),
                lambda w=w: Int4OpaqueTensor.from_hp(w, [1, g]),
                lambda t: (t.qdata, t.scale_and_zero),
            ),
        }
        print(str(dtype).replace("torch.", ""))
        for name, (ours, theirs, parts) in cases.items():
            equal = same(ours(), parts(theirs()))
            t_ours, t_theirs = best_times([ours, theirs], args.repeat)
            print(f"  {name:44s} {t_ours * 1e3:6.1f} ms {t_theirs * 1e3:6.1f} ms {t_ours / t_theirs:15.2f}  {equal}")


if __name__ == "__main__":
    main()
