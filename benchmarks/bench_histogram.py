"""Time qlib.HistogramObserver against torch.ao.quantization's HistogramObserver, in one run.

Each measurement observes 10 batches of 10**6 float32 values with a fresh
observer, then calls calculate_qparams(); on normal and on heavy-tailed
(Cauchy) data. Machines here are noisy, so only the ratio qlib / torch measured
in the same run is reported, each time the best of several repetitions, and the
two observers are timed alternately. The script also checks that both give the
same histogram and qparams bit for bit. Run with
``python benchmarks/bench_histogram.py``.
"""

from __future__ import annotations

import argparse
import time
import warnings

import torch
from torch.ao.quantization.observer import HistogramObserver as TorchHistogramObserver

from qlib.histogram import HistogramObserver

warnings.filterwarnings("ignore")


def observe(make_observer, batches):
    obs = make_observer()
    for x in batches:
        obs(x)
    return obs, obs.calculate_qparams()


def timed(make_observer, batches) -> float:
    start = time.perf_counter()
    observe(make_observer, batches)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--numel", type=int, default=10**6)
    parser.add_argument("--batches", type=int, default=10)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    gen = torch.Generator().manual_seed(0)
    data = {
        "normal": [torch.randn(args.numel, generator=gen) for _ in range(args.batches)],
        "heavy-tailed (Cauchy)": [torch.empty(args.numel).cauchy_(generator=gen) for _ in range(args.batches)],
    }
    print(
        f"{args.batches} batches of {args.numel:,} float32 values, then calculate_qparams; "
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, best of {args.repeat}"
    )
    for name, batches in data.items():
        ours, (q_scale, q_zp) = observe(HistogramObserver, batches)
        theirs, (t_scale, t_zp) = observe(TorchHistogramObserver, batches)
        exact = (
            torch.equal(ours.histogram, theirs.histogram)
            and torch.equal(ours.min_val, theirs.min_val)
            and torch.equal(ours.max_val, theirs.max_val)
            and torch.equal(q_scale, t_scale)
            and torch.equal(q_zp, t_zp)
        )
        qlib_times, torch_times = [], []
        for _ in range(args.repeat):
            qlib_times.append(timed(HistogramObserver, batches))
            torch_times.append(timed(TorchHistogramObserver, batches))
        q, t = min(qlib_times), min(torch_times)
        print(
            f"{name:22s} qlib {q * 1e3:7.1f} ms   torch {t * 1e3:7.1f} ms   qlib / torch = {q / t:4.2f}   "
            f"same histogram and qparams: {exact}"
        )


if __name__ == "__main__":
    main()
