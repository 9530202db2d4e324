"""The one timing rule of the benchmarks: the best of several rounds, functions interleaved.

These machines are noisy, so a benchmark reports ratios between times taken in the same run;
interleaving the functions within each round makes a burst of load hit all of them alike.
"""

from __future__ import annotations

import time
from collections.abc import Callable


def best_times(fns: list[Callable[[], object]], repeat: int) -> list[float]:
    """The best time of each function over ``repeat`` rounds; each round runs the functions in turn."""
    for fn in fns:
        fn()  # warm-up
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - start)
    return best
