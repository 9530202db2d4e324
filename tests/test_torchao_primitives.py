"""qlib.torchao_primitives against torchao 0.18's choose_qparams_affine, quantize_affine and
dequantize_affine: per tensor, per row, per channel and per group; symmetric and asymmetric."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from inputs import nudge

from qlib.ranges import DTYPE_RANGES
from qlib.ranges import PLAIN_DTYPES as AFFINE_DTYPES
from qlib.testing import assert_same_bits, assert_same_ints
from qlib.torchao_primitives import (
    block_shape,
    choose_qparams_affine,
    dequantize_affine,
    quantize_affine,
)

primitives = pytest.importorskip("torchao.quantization.quant_primitives")
MappingType = primitives.MappingType
F32 = torch.float32


@st.composite
def layouts(draw):
    """A shape and a block size: per tensor, per row (last dimension), per channel (axis 0) or per group."""
    shape = draw(st.lists(st.integers(1, 6), min_size=1, max_size=4))
    kind = draw(st.sampled_from(["tensor", "row", "channel", "group"]))
    if kind == "tensor":
        block = list(shape)
    elif kind == "row":
        block = [1] * (len(shape) - 1) + [shape[-1]]
    elif kind == "channel":
        block = [1] + shape[1:]
    else:
        shape[-1] *= 2
        block = [1] * (len(shape) - 1) + [shape[-1] // 2]
    if all(b == 1 for b in block):
        # torchao reduces over no dimension as over all of them: one scale, which quantize_affine
        # (expecting one per element) refuses; qlib follows both. Use per tensor instead.
        block = list(shape)
    return tuple(shape), tuple(block)


@st.composite
def ranges(draw, dtype):
    lo, hi = DTYPE_RANGES[dtype]
    if draw(st.booleans()):
        return None, None
    return lo // 2, hi // 2  # what reduce_range asks for


def random_input(shape, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    kind = seed % 5
    x = torch.randn(shape, generator=gen) * float(torch.empty(1).uniform_(-6, 4, generator=gen).exp())
    if kind == 1:
        x = x.abs()
    elif kind == 2:
        x = -x.abs()
    elif kind == 3:
        x = torch.zeros(shape)  # scale floored at eps
    elif kind == 4:
        x = x.round()  # exact ties of simple scales
    return x


def near_ties(x: torch.Tensor, block: tuple, scale: torch.Tensor, seed: int) -> torch.Tensor:
    """Values at and beside k + 0.5 steps of each block's own scale, past both ends of the range."""
    gen = torch.Generator().manual_seed(seed)
    blocks, reduced = block_shape(x.shape, block)
    per_block = [1 if i in reduced else size for i, size in enumerate(blocks)]
    inv = (1.0 / scale.float()).reshape(per_block)  # torchao's 1.0f / scale
    k = torch.randint(-300, 300, blocks, generator=gen).float()
    y = ((k + 0.5) / inv).reshape(x.shape)
    y = torch.where(torch.isfinite(y), y, 0.0)
    return nudge(y, torch.randint(-2, 3, x.shape, generator=gen))


@given(
    layout=layouts(),
    dtype=st.sampled_from(AFFINE_DTYPES),
    symmetric=st.booleans(),
    data=st.data(),
    seed=st.integers(0, 2**31),
)
def test_choose_quantize_dequantize_match_torchao(layout, dtype, symmetric, data, seed):
    shape, block = layout
    quant_min, quant_max = data.draw(ranges(dtype))
    eps = data.draw(st.sampled_from([None, torch.finfo(F32).eps, 2**-12]))
    zero_point_dtype = data.draw(
        st.sampled_from([torch.int32, torch.int64] + ([dtype] if dtype != torch.uint8 else []))
    )
    keepdim = data.draw(st.booleans())
    mapping = MappingType.SYMMETRIC if symmetric else MappingType.ASYMMETRIC
    x = random_input(shape, seed)
    args = (block, dtype, quant_min, quant_max, eps, F32, zero_point_dtype, keepdim)
    scale, zero_point = primitives.choose_qparams_affine(x, mapping, *args)
    ours_scale, ours_zero_point = choose_qparams_affine(x, "symmetric" if symmetric else "asymmetric", *args)
    assert_same_bits(ours_scale, scale, f"scale {shape} {block}")
    assert_same_ints(ours_zero_point, zero_point, f"zero point {shape} {block}")

    for values in (x, near_ties(x, block, scale, seed)):
        codes = primitives.quantize_affine(values, block, scale, zero_point, dtype, quant_min, quant_max)
        ours = quantize_affine(values, block, scale, zero_point, dtype, quant_min, quant_max)
        assert_same_ints(ours, codes, f"codes {shape} {block} {dtype}")
        back = primitives.dequantize_affine(codes, block, scale, zero_point, dtype, quant_min, quant_max)
        assert_same_bits(dequantize_affine(codes, block, scale, zero_point, dtype, quant_min, quant_max), back)


@given(
    dtype=st.sampled_from(AFFINE_DTYPES),
    scale_dtype=st.sampled_from([torch.float32, torch.float64]),
    zero_point_kind=st.sampled_from(["int8", "int32", "float32"]),
    seed=st.integers(0, 2**31),
)
def test_quantize_affine_with_given_qparams(dtype, scale_dtype, zero_point_kind, seed):
    """Scales as a static config passes them (float32 or float64), zero points of several dtypes."""
    gen = torch.Generator().manual_seed(seed)
    lo, hi = DTYPE_RANGES[dtype]
    x = torch.randn(8, 16, generator=gen) * 3
    x[0, :4] = torch.tensor([float("inf"), float("-inf"), 3e38, -3e38])
    scale = (torch.rand(8, 1, generator=gen) * 0.1 + 1e-3).to(scale_dtype)
    zlo, zhi = (max(lo, -128), min(hi, 127)) if zero_point_kind == "int8" else (lo, min(hi, 2**24))
    zero_point = torch.randint(zlo, zhi + 1, (8, 1), generator=gen)
    zero_point = zero_point.to({"int8": torch.int8, "int32": torch.int32, "float32": F32}[zero_point_kind])
    x = torch.cat([x, near_ties(x, (1, 16), scale, seed)])
    scale, zero_point = torch.cat([scale, scale]), torch.cat([zero_point, zero_point])
    codes = primitives.quantize_affine(x, (1, 16), scale, zero_point, dtype)
    assert_same_ints(quantize_affine(x, (1, 16), scale, zero_point, dtype), codes, f"{scale_dtype} {zero_point_kind}")


@pytest.mark.parametrize("dtype", AFFINE_DTYPES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_per_row_sweep(dtype, symmetric):
    """Per-row (per-token) qparams of 256 rows, then 25,600 values at and beside their ties, per case."""
    mapping = MappingType.SYMMETRIC if symmetric else MappingType.ASYMMETRIC
    for trial in range(4):
        x = random_input((256, 100), 100 * trial + 7)
        if trial == 3:
            x = torch.randn(256, 100, generator=torch.Generator().manual_seed(trial))
        scale, zero_point = primitives.choose_qparams_affine(
            x, mapping, (1, 100), dtype, eps=torch.finfo(F32).eps, scale_dtype=F32, zero_point_dtype=torch.int32
        )
        name = "symmetric" if symmetric else "asymmetric"
        ours = choose_qparams_affine(x, name, (1, 100), dtype, eps=torch.finfo(F32).eps, zero_point_dtype=torch.int32)
        assert_same_bits(ours[0], scale)
        assert_same_ints(ours[1], zero_point)
        y = near_ties(x, (1, 100), scale, trial)
        codes = primitives.quantize_affine(y, (1, 100), scale, zero_point, dtype)
        assert_same_ints(quantize_affine(y, (1, 100), scale, zero_point, dtype), codes, f"trial {trial}")


def test_symmetric_row_maximum_is_often_clamped_from_128():
    """A row's positive maximum times 1/scale is 127.5 up to float32 rounding: at or above it, it rounds to
    128 and is clamped to 127; below it, it rounds to 127 (on random rows, both happen)."""
    x = torch.rand(1000, 16, generator=torch.Generator().manual_seed(3)) + 0.01
    scale, zero_point = choose_qparams_affine(x, "symmetric", (1, 16), torch.int8)
    codes = quantize_affine(x, (1, 16), scale, zero_point, torch.int8)
    assert_same_ints(codes, primitives.quantize_affine(x, (1, 16), scale, zero_point, torch.int8))
    top = (torch.round(x * (1.0 / scale.view(-1, 1))) + zero_point.view(-1, 1)).amax(dim=1)
    assert set(top.tolist()) == {127.0, 128.0}
    assert (codes.amax(dim=1) == 127).all()


def test_int32_top_of_the_range_wraps_to_the_bottom():
    x = torch.tensor([[float("inf"), 3e38, 2147483520.0, -3e38]])
    scale, zero_point = torch.ones(1), torch.zeros(1, dtype=torch.int32)
    codes = quantize_affine(x, (1, 4), scale, zero_point, torch.int32)
    assert_same_ints(codes, primitives.quantize_affine(x, (1, 4), scale, zero_point, torch.int32))
    assert codes.tolist() == [[-(2**31), -(2**31), 2147483520, -(2**31)]]


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: choose_qparams_affine(torch.zeros(2, 3), "float", (1, 3), torch.int8), ValueError, "mapping_type"),
        (lambda: choose_qparams_affine(torch.zeros(2, 3), "symmetric", (1, 2), torch.int8), ValueError, "divisor"),
        (lambda: choose_qparams_affine(torch.zeros(2, 3), "symmetric", (3,), torch.int8), ValueError, "one entry"),
        (lambda: choose_qparams_affine(torch.zeros(2, 3), "symmetric", (1, 3), torch.qint8), TypeError, "dtype"),
        (lambda: choose_qparams_affine(torch.zeros(2, 3), "symmetric", (1, 3), torch.int8, eps=0.0), ValueError, "eps"),
        (lambda: quantize_affine(torch.zeros(2, 3), (1, 3), torch.ones(2), None, torch.int8), TypeError, "None"),
        (
            lambda: quantize_affine(torch.zeros(2, 3), (1, 3), torch.ones(3), torch.zeros(2), torch.int8),
            ValueError,
            "per block",
        ),
        (
            lambda: quantize_affine(torch.zeros(2, 3), (1, 3), torch.ones(2), torch.zeros(2), torch.int8, 5, 4),
            ValueError,
            "quant_min",
        ),
        (
            lambda: dequantize_affine(torch.zeros(2, 3, dtype=torch.int8), (1, 3), torch.ones(2), None, torch.uint8),
            TypeError,
            "dtype",
        ),
    ],
)
def test_errors_say_what_is_allowed(call, error, message):
    with pytest.raises(error, match=message):
        call()
