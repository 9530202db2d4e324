"""Input builders for the tests: scales and values that sit on PyTorch's edges."""

from __future__ import annotations

import torch
from hypothesis import settings
from hypothesis import strategies as st

from qlib.numerics import float32, float32_reciprocal

F32 = torch.float32


f32 = float32  # a Python float rounded to float32
reciprocal32 = float32_reciprocal  # 1.0f / (float)scale


# Scales by kind: float32-exact, arbitrary float64 (not exact in float32),
# powers of two (ties are exact), tiny and huge.
scales = st.one_of(
    st.floats(1e-4, 10.0).map(f32),
    st.floats(1e-4, 10.0),
    st.integers(-20, 10).map(lambda k: 2.0**k),
    st.floats(1e-30, 1e-20),
    st.floats(1e10, 1e30),
    st.sampled_from([0.01696838, 0.018006444, 0.00214854861, 0.1277553737, 1.0 / 3, 0.1]),
)


def nudge(x: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """Move each float32 element ``steps`` ulps (negative: downwards)."""
    x = x.clone()
    for k in range(1, int(steps.abs().max()) + 1 if steps.numel() else 1):
        up = steps >= k
        down = steps <= -k
        x[up] = torch.nextafter(x[up], torch.tensor(float("inf")))
        x[down] = torch.nextafter(x[down], torch.tensor(float("-inf")))
    return x


def near_ties(scale: float, n: int, k_range: int, gen: torch.Generator) -> torch.Tensor:
    """Values whose x * (1/scale) is at, or a few ulps around, some k + 0.5."""
    inv = reciprocal32(scale)
    k = torch.randint(-k_range, k_range, (n,), generator=gen).double()
    base = ((k + 0.5) / inv).float()
    steps = torch.randint(-3, 4, (n,), generator=gen)
    return nudge(base, steps)


def mixed_values(scale: float, n: int, k_range: int, seed: int, extremes: bool = True) -> torch.Tensor:
    """Near-ties, ordinary values, values far outside the range, zeros and ±inf."""
    gen = torch.Generator().manual_seed(seed)
    parts = [near_ties(scale, n, k_range, gen)]
    parts.append(torch.randn(n // 4 + 1, generator=gen) * scale * k_range)
    if extremes:
        parts.append(torch.tensor([0.0, -0.0, 1e-45, -1e-45, 3e38, -3e38, float("inf"), float("-inf")]))
        parts.append(torch.randn(8, generator=gen) * scale * 1e6)
    x = torch.cat(parts)
    return x[torch.randperm(len(x), generator=gen)]


def zero_points(qmin: int, qmax: int) -> st.SearchStrategy[int]:
    return st.one_of(
        st.integers(qmin, qmax),
        st.sampled_from([z for z in (qmin, qmax, 0, 1, 127, 128, 129) if qmin <= z <= qmax]),
    )


def examples(n: int) -> int:
    """``n`` examples under the "ci" profile (300), scaled with the profile's own number for the others."""
    return max(1, n * settings().max_examples // 300)
