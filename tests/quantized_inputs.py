"""Input builders for the operator tests: codes on the edges, in the memory layouts torch's kernels choose by."""

from __future__ import annotations

import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import torch
from hypothesis import strategies as st

import qlib
from qlib.elementwise_kernels import strided_codes
from qlib.numerics import float32
from qlib.releases import torch_release

RELEASE = torch_release()  # the installed torch's; each test gives it explicitly, and OTHER where it must differ
OTHER = "2.13" if RELEASE == "2.14" else "2.14"

QUANTIZED = {torch.uint8: torch.quint8, torch.int8: torch.qint8}
RANGES = {torch.uint8: (0, 255), torch.int8: (-128, 127)}
# powers of two (exact ties), float32 values, doubles that are not float32 values, tiny and large ones
SCALES = [1.0, 0.5, 0.25, 2.0**-7, 2.0**-10, 0.1, 0.05, 1 / 3, 0.0173, 0.3, 3.7e-5, 2.0**-23, 7.0, 100.0]
scales = st.one_of(st.sampled_from(SCALES), st.floats(1e-5, 10.0).map(float32), st.floats(1e-4, 10.0))
# channel counts around the vector widths (8, 16, 32) and their tails
CHANNELS = [1, 3, 7, 8, 9, 15, 16, 17, 24, 31, 32, 33, 40, 63, 64, 65, 72, 100]
FILLS = ["random", "random", "random", "zeros", "max", "arange", "near_zero_point", "extremes"]
LAYOUTS = ["contiguous", "channels_last", "channels_last", "transposed", "sliced"]


def zero_points(dtype: torch.dtype) -> st.SearchStrategy[int]:
    """Any zero point of ``dtype``'s range, the ends and the odd ones next to the middle more often."""
    lo, hi = RANGES[dtype]
    edges = [z for z in (lo, hi, 0, 1, 3, 37, 127, 128, 129, 254, -1, -127) if lo <= z <= hi]
    return st.one_of(st.sampled_from(edges), st.integers(lo, hi))


def filled(seed: int, shape: tuple[int, ...], fill: str, dtype: torch.dtype, zero_point: int) -> torch.Tensor:
    """Contiguous codes of ``shape``: random, all lowest or all highest, a ramp, near the zero point, or the ends."""
    lo, hi = RANGES[dtype]
    gen = torch.Generator().manual_seed(seed)
    n = math.prod(shape)
    if fill == "random":
        flat = torch.randint(lo, hi + 1, (n,), generator=gen)
    elif fill == "zeros":
        flat = torch.full((n,), lo)
    elif fill == "max":
        flat = torch.full((n,), hi)
    elif fill == "arange":
        flat = torch.arange(n) % (hi - lo + 1) + lo
    elif fill == "near_zero_point":
        flat = (zero_point + torch.randint(-4, 5, (n,), generator=gen)).clamp(lo, hi)
    else:
        flat = torch.where(torch.randint(0, 2, (n,), generator=gen) == 1, hi, lo)
    return flat.to(dtype).view(shape)


def quantized(codes: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
    """torch's quantized tensor holding ``codes`` (channels-last codes stay channels-last)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return torch._make_per_tensor_quantized_tensor(codes, scale, zero_point)


def in_layout(codes: torch.Tensor, scale: float, zero_point: int, layout: str) -> tuple[torch.Tensor, torch.Tensor]:
    """A quantized tensor holding ``codes`` in ``layout``, and its codes with its strides.

    torch makes strided codes contiguous when it wraps them, so strided layouts are views of a
    quantized tensor: "transposed" swaps the last two dimensions in memory, "sliced" takes every
    other element of a tensor twice as wide.
    """
    if layout == "channels_last" and codes.dim() == 4:
        q = quantized(codes.contiguous(memory_format=torch.channels_last), scale, zero_point)
    elif layout == "transposed" and codes.dim() >= 2:
        q = quantized(codes.transpose(-1, -2).contiguous(), scale, zero_point).transpose(-1, -2)
    elif layout == "sliced" and codes.dim() >= 1:
        wide = torch.zeros((*codes.shape[:-1], codes.shape[-1] * 2), dtype=codes.dtype)
        wide[..., ::2] = codes
        q = quantized(wide, scale, zero_point)[..., ::2]
    else:
        q = quantized(codes.contiguous(), scale, zero_point)
    seen = strided_codes(q)
    assert torch.equal(seen, codes) and seen.stride() == q.stride()
    return q, seen


@st.composite
def quantized_4d(draw, channels=None, spatial=(1, 12), batch=(1, 3), dtypes=(torch.uint8, torch.uint8, torch.int8)):
    """(quantized tensor, its codes with its strides, scale, zero point) of shape (N, C, H, W)."""
    dtype = draw(st.sampled_from(dtypes))
    shape = (
        draw(st.integers(*batch)),
        draw(st.sampled_from(channels or CHANNELS)),
        draw(st.integers(*spatial)),
        draw(st.integers(*spatial)),
    )
    scale, zero_point = draw(scales), draw(zero_points(dtype))
    codes = filled(draw(st.integers(0, 2**31 - 1)), shape, draw(st.sampled_from(FILLS)), dtype, zero_point)
    q, seen = in_layout(codes, scale, zero_point, draw(st.sampled_from(LAYOUTS)))
    return q, seen, scale, zero_point


def assert_like_torch(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    """qlib's codes laid out as torch's quantized result: the same shape and strides (values: assert_same_ints)."""
    assert ours.shape == theirs.shape and ours.stride() == theirs.stride(), (
        f"layout: qlib {tuple(ours.shape)} {ours.stride()}, torch {tuple(theirs.shape)} {theirs.stride()}"
    )


@contextmanager
def engine(name: str) -> Iterator[None]:
    """torch's quantized engine set to ``name`` inside the block."""
    before = torch.backends.quantized.engine
    torch.backends.quantized.engine = name
    try:
        yield
    finally:
        torch.backends.quantized.engine = before


@contextmanager
def threads(n: int) -> Iterator[None]:
    """torch running ``n`` threads inside the block."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run_and_compare(
    model: torch.nn.Module, calibration: torch.Tensor, x: torch.Tensor, compare: bool = True
) -> tuple[torch.nn.Module, qlib.Run, qlib.Comparison | None]:
    """``model`` quantized as eager mode does (FBGEMM's default qconfig, ``calibration``, convert), then run
    on ``x`` by qlib.run, which must give torch's output, and by qlib.compare (unless ``compare`` is
    False), which must find every step exact. Returns the converted model, run's result and compare's report."""
    model.qconfig = torch.ao.quantization.get_default_qconfig("fbgemm")
    with engine("fbgemm"):
        prepared = torch.ao.quantization.prepare(model)
        prepared(calibration)
        converted = torch.ao.quantization.convert(prepared)
        with torch.no_grad():
            expected = converted(x)
        result = qlib.run(converted, x)
        report = qlib.compare(model, converted, x) if compare else None
    assert torch.equal(result.output.codes, expected), "qlib.run's output differs from torch's"
    assert report is None or all(layer.exact for layer in report.layers), str(report)
    return converted, result, report
