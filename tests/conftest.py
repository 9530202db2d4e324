"""Shared test set-up: hypothesis profiles and a counter of elements compared with torch."""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
# make unit-old: the second release's run, a third of the examples (its arithmetic differs from the
# reference's in places that targeted tests pin down; the full run is the reference's)
settings.register_profile(
    "ci-old",
    max_examples=100,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.register_profile("dev", max_examples=50, deadline=None)
settings.register_profile(
    "soak", max_examples=5000, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

COMPARED = {"elements": 0}


def examples(n: int) -> int:
    """``n`` examples under the "ci" profile (300), scaled with the profile's own number for the others."""
    return max(1, n * settings().max_examples // 300)


def assert_same_ints(ours: torch.Tensor, theirs: torch.Tensor, context: str = "") -> None:
    """Integer tensors equal in dtype, shape and every value."""
    assert ours.dtype == theirs.dtype, f"dtype {ours.dtype} != {theirs.dtype} {context}"
    assert ours.shape == theirs.shape, f"shape {ours.shape} != {theirs.shape} {context}"
    diff = (ours.long() != theirs.long()).nonzero()
    COMPARED["elements"] += ours.numel()
    if len(diff):
        i = tuple(diff[0].tolist())
        raise AssertionError(
            f"{len(diff)} of {ours.numel()} codes differ; first at {i}: qlib {ours[i].item()} "
            f"torch {theirs[i].item()} {context}"
        )


def assert_same_bits(ours: torch.Tensor, theirs: torch.Tensor, context: str = "") -> None:
    """float32 tensors equal bit for bit (so -0.0 != 0.0, and NaN == NaN of the same payload)."""
    assert ours.dtype == theirs.dtype == torch.float32, f"{ours.dtype} / {theirs.dtype} {context}"
    assert ours.shape == theirs.shape, f"shape {ours.shape} != {theirs.shape} {context}"
    a, b = ours.contiguous().view(torch.int32), theirs.contiguous().view(torch.int32)
    diff = (a != b).nonzero()
    COMPARED["elements"] += ours.numel()
    if len(diff):
        i = tuple(diff[0].tolist())
        raise AssertionError(
            f"{len(diff)} of {ours.numel()} floats differ; first at {i}: qlib {ours[i].item()!r} "
            f"torch {theirs[i].item()!r} {context}"
        )


@pytest.fixture
def same_ints():
    return assert_same_ints


@pytest.fixture
def same_bits():
    return assert_same_bits


def pytest_terminal_summary(terminalreporter):
    if COMPARED["elements"]:
        terminalreporter.write_line(f"qlib: compared {COMPARED['elements']:,} elements against torch")


def quantized_weight(w: torch.Tensor, scale, zero_point) -> torch.Tensor:
    """torch's quantized weight from int8 codes: per channel along axis 0 when ``scale`` is a tensor."""
    if isinstance(scale, torch.Tensor):
        return torch._make_per_channel_quantized_tensor(w, scale.double(), zero_point.long(), 0)
    return torch._make_per_tensor_quantized_tensor(w, scale, zero_point)
