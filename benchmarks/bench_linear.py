"""Time qlib.linear against torch's quantized Linear (M = 256, K = N = 1024) in one run.

Three cases, each qlib's model against the torch engine it reproduces:

(a) activation codes <= 127, so no pair of products can saturate, with ``pairs_saturate=False``
    (the exact integer matmul), against the x86 engine;
(b) full-range activation codes with ``pairs_saturate=True``, the saturating path that models
    CPUs without AVX512-VNNI, against the x86 engine (which on this CPU may run either kernel);
(c) the qnnpack engine, against torch's qnnpack engine.

Machines here are noisy, so only ratios measured in the same run are reported; each time is the
best of several repetitions, torch's and qlib's taken in turn. The goal is (a) within 10x of torch.
Run with `make bench`; ``--threads 1`` compares single-threaded times, steadier on a busy machine.
"""

from __future__ import annotations

import argparse
import warnings
from functools import partial

import torch
from timing import best_times
from torch.ao.nn.quantized import Linear

import qlib

warnings.filterwarnings("ignore")


def torch_layer(w, w_scale, bias, scale, zero_point, engine):
    """torch's quantized Linear with int8 weight codes ``w``, packed for ``engine``."""
    previous = torch.backends.quantized.engine
    torch.backends.quantized.engine = engine
    try:
        n, k = w.shape
        layer = Linear(k, n)
        layer.set_weight_bias(torch._make_per_tensor_quantized_tensor(w, w_scale, 0), bias)
        layer.scale, layer.zero_point = scale, zero_point
        return layer
    finally:
        torch.backends.quantized.engine = previous


def on_engine(engine, fn):
    """Run ``fn`` with ``engine`` as torch's quantized engine (a layer runs on the engine it was packed for)."""

    def run():
        previous = torch.backends.quantized.engine
        torch.backends.quantized.engine = engine
        try:
            return fn()
        finally:
            torch.backends.quantized.engine = previous

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--k", type=int, default=1024)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    gen = torch.Generator().manual_seed(0)
    x7 = torch.randint(0, 128, (args.m, args.k), generator=gen, dtype=torch.uint8)
    x8 = torch.randint(0, 256, (args.m, args.k), generator=gen, dtype=torch.uint8)
    w = torch.randint(-128, 128, (args.n, args.k), generator=gen).to(torch.int8)
    bias = torch.randn(args.n, generator=gen)
    x_scale, x_zero_point, w_scale, scale, zero_point = 0.02, 30, 0.002, 0.5, 100
    layer_args = (w, w_scale, 0, bias, scale, zero_point)

    cases = {  # name: (activation codes, torch engine, qlib keywords)
        "(a) codes <= 127, pairs_saturate=False": (x7, "x86", {"pairs_saturate": False}),
        "(b) codes 0..255, pairs_saturate=True": (x8, "x86", {"pairs_saturate": True}),
        "(c) qnnpack engine, codes 0..255": (x8, "qnnpack", {"engine": "qnnpack"}),
    }
    print(
        f"M = {args.m}, K = {args.k}, N = {args.n}; torch {torch.__version__}, {torch.get_num_threads()} threads; "
        f"this CPU: pairs saturate = {qlib.pairs_saturate_here()}"
    )
    print(f"  {'case':40s} {'torch':>9s} {'qlib':>10s} {'qlib/torch':>11s}  equal")
    for name, (x, engine, keywords) in cases.items():
        layer = torch_layer(w, w_scale, bias, scale, zero_point, engine)
        qx = torch._make_per_tensor_quantized_tensor(x, x_scale, x_zero_point)
        run_torch = on_engine(engine, lambda layer=layer, qx=qx: layer(qx))
        ours = qlib.linear(x, x_scale, x_zero_point, *layer_args, **keywords)
        theirs = run_torch().int_repr()
        # (b) models a CPU without VNNI: compare with torch only where this CPU is one
        comparable = keywords.get("pairs_saturate", qlib.pairs_saturate_here()) == qlib.pairs_saturate_here()
        equal = str(torch.equal(ours, theirs)) if engine == "qnnpack" or comparable else "n/a (other CPU)"
        run_qlib = partial(qlib.linear, x, x_scale, x_zero_point, *layer_args, **keywords)
        repeat = 3 if keywords.get("pairs_saturate") else args.repeat  # the saturating path is slow
        t_torch, t_qlib = best_times([run_torch, run_qlib], repeat)
        print(f"  {name:40s} {t_torch * 1e3:6.1f} ms {t_qlib * 1e3:7.1f} ms {t_qlib / t_torch:10.1f}x  {equal}")


if __name__ == "__main__":
    main()
