"""qlib.llm_weights against torchao 0.18's quantize_ on CPU: the weights each config stores (Int8Tensor,
IntxUnpackedToInt8Tensor, Int4OpaqueTensor), the Linear outputs, the errors, and torch.save/torch.load.

Every expected value comes from torchao: a torch.nn.Linear quantized by quantize_ with the config, its weight
subclass's tensors and its forward. The int4 bytes and the int4 kernel's rounding follow the CPU's kernels
(AVX512 or AVX2), hence the cpu_kind mark.
"""

from __future__ import annotations

import io
import logging
import warnings

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from inputs import examples, nudge

from qlib.llm_weights import (
    dequantize_activation_per_token,
    dequantize_per_group,
    int4_weight_cpu,
    int8_weight,
    intx_weight,
    linear_int4_cpu,
    linear_int8_dynamic,
    linear_int8_weight_only,
    linear_intx,
    pack_int4_for_cpu,
    quantize_int4_tinygemm,
    quantize_per_group,
)
from qlib.testing import assert_same_bits, assert_same_ints

pytestmark = pytest.mark.cpu_kind

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # torchao warns on import about optional kernels this wheel lacks
    ao = pytest.importorskip("torchao.quantization")
    granularity = pytest.importorskip("torchao.quantization.granularity")
    prototype_int4 = pytest.importorskip("torchao.prototype.quantization.int4.inference_workflow")
logging.getLogger("torchao").setLevel(logging.ERROR)

BF16, F32 = torch.bfloat16, torch.float32
GROUP_SIZES = (32, 64, 128, 256)
INT4_GROUP_SIZES = (32, 64, 128)
KINDS = ("normal", "positive", "equal", "zeros", "ties", "huge", "tiny")


def int8_weight_only(group_size):
    gran = granularity.PerRow() if group_size is None else granularity.PerGroup(group_size)
    return ao.Int8WeightOnlyConfig(granularity=gran, set_inductor_config=False)


def int8_dynamic(_group_size=None):
    return ao.Int8DynamicActivationInt8WeightConfig(set_inductor_config=False)


def intx_weight_only(group_size, bits=4, symmetric=True):
    gran = granularity.PerAxis(0) if group_size is None else granularity.PerGroup(group_size)
    mapping = ao.MappingType.SYMMETRIC if symmetric else ao.MappingType.ASYMMETRIC
    return ao.IntxWeightOnlyConfig(weight_dtype=getattr(torch, f"int{bits}"), granularity=gran, mapping_type=mapping)


def int8_dynamic_intx(group_size, bits=4, symmetric=True):
    gran = granularity.PerAxis(0) if group_size is None else granularity.PerGroup(group_size)
    mapping = ao.MappingType.SYMMETRIC if symmetric else ao.MappingType.ASYMMETRIC
    return ao.Int8DynamicActivationIntxWeightConfig(
        weight_dtype=getattr(torch, f"int{bits}"), weight_granularity=gran, weight_mapping_type=mapping
    )


def int4_cpu(group_size):
    return prototype_int4.PrototypeInt4WeightOnlyConfig(group_size=group_size, set_inductor_config=False)


def quantized_linear(weight: torch.Tensor, config, bias: torch.Tensor | None = None) -> torch.nn.Linear:
    """A torch Linear holding ``weight`` (and ``bias``), after torchao's quantize_ with ``config``."""
    n, k = weight.shape
    layer = torch.nn.Linear(k, n, bias=bias is not None, dtype=weight.dtype)
    with torch.no_grad():
        layer.weight.copy_(weight)
        if bias is not None:
            layer.bias.copy_(bias)
    ao.quantize_(layer, config)
    return layer


def values(shape, group: int, dtype: torch.dtype, seed: int, kind: str, bits: int = 8) -> torch.Tensor:
    """Weights (or activations) whose groups sit on torchao's edges: ties, equal groups, zero groups,
    magnitudes near float32's largest and smallest, one sign only."""
    gen = torch.Generator().manual_seed(seed)
    n, k = shape
    magnitude = float(torch.empty(1).uniform_(-8, 4, generator=gen).exp())
    x = torch.randn(n, k, generator=gen) * magnitude
    groups = x.view(n, k // group, group)
    if kind == "positive":
        x = x.abs() if seed % 2 else -x.abs()
    elif kind == "equal":  # every element of a group equal (a group of zeros among them)
        groups.copy_(groups[..., :1].expand_as(groups))
        groups[0, 0] = 0.0
    elif kind == "zeros":
        mask = torch.rand(n, k // group, 1, generator=gen) < 0.5
        groups.masked_fill_(mask, 0.0)
    elif kind == "ties":
        # The group's range is (2**bits - 1) * step, so scale = step: values at j + 0.5 steps tie in
        # torchao's affine rounding, values at j steps in tinygemm's (its codes count from the group's minimum).
        step = 2.0 ** int(torch.randint(-12, 4, (1,), generator=gen))
        half = (2**bits - 1) / 2
        j = torch.randint(-int(half), int(half), (n, k // group, group), generator=gen).float()
        groups.copy_((j + 0.5 * (torch.rand(j.shape, generator=gen) < 0.5)) * step)
        groups[..., 0], groups[..., 1] = -half * step, half * step
    elif kind == "huge":
        x = torch.randn(n, k, generator=gen).sign() * torch.empty(n, k).uniform_(1e30, 3e38, generator=gen)
        x[0, 0] = 3.3e38 if dtype == BF16 else 3.4e38
    elif kind == "tiny":
        x = torch.randn(n, k, generator=gen) * 1e-39
        x[0, :2] = torch.tensor([1e-45, -1e-45])
    if kind in ("normal", "ties"):
        x = nudge(x, torch.randint(-2, 3, x.shape, generator=gen) * (torch.rand(x.shape, generator=gen) < 0.2))
    return x.to(dtype)


def assert_same_floats(ours: torch.Tensor, theirs: torch.Tensor, context: str = "") -> None:
    """float32 tensors bit for bit; bfloat16 ones by their 16-bit patterns."""
    assert ours.dtype == theirs.dtype, f"{ours.dtype} != {theirs.dtype} {context}"
    if ours.dtype == BF16:
        assert_same_ints(ours.contiguous().view(torch.int16), theirs.contiguous().view(torch.int16), context)
    else:
        assert_same_bits(ours, theirs, context)


shapes = st.tuples(
    st.sampled_from(GROUP_SIZES),
    st.sampled_from([1, 2, 3]),  # K = group, 2 * group, 3 * group
    st.sampled_from([1, 2, 5, 16]),  # N
)


@settings(max_examples=examples(200))
@given(
    shape=shapes,
    per_row=st.booleans(),
    dynamic=st.booleans(),
    dtype=st.sampled_from([F32, BF16]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31),
)
def test_int8_weight_matches_int8_tensor(shape, per_row, dynamic, dtype, kind, seed):
    group, blocks, n = shape
    w = values((n, group * blocks), group, dtype, seed, kind)
    group_size = None if per_row or dynamic else group
    config = int8_dynamic() if dynamic else int8_weight_only(group_size)
    stored = quantized_linear(w, config).weight
    qdata, scale, zero_point = int8_weight(w, group_size)
    context = f"{type(config).__name__} {group_size} {dtype} {kind}"
    assert_same_ints(qdata, stored.qdata, context)
    assert_same_floats(scale, stored.scale, context)
    assert_same_ints(zero_point, stored.zero_point, context)


@settings(max_examples=examples(200))
@given(
    shape=shapes,
    per_axis=st.booleans(),
    bits=st.sampled_from([4, 4, 2, 8]),
    symmetric=st.booleans(),
    dynamic=st.booleans(),
    dtype=st.sampled_from([F32, BF16]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31),
)
def test_intx_weight_matches_intx_unpacked_to_int8_tensor(shape, per_axis, bits, symmetric, dynamic, dtype, kind, seed):
    group, blocks, n = shape
    w = values((n, group * blocks), group, dtype, seed, kind, bits)
    group_size = None if per_axis else group
    config = (int8_dynamic_intx if dynamic else intx_weight_only)(group_size, bits, symmetric)
    stored = quantized_linear(w, config).weight
    qdata, scale, zero_point = intx_weight(w, group_size, bits, symmetric)
    context = f"{type(config).__name__} int{bits} {group_size} {symmetric} {dtype} {kind}"
    assert_same_ints(qdata, stored.qdata, context)
    assert_same_floats(scale, stored.scale, context)
    assert_same_ints(zero_point, stored.zero_point, context)
    assert_same_floats(dequantize_per_group(qdata, scale, zero_point, dtype), stored.dequantize(), context)


@settings(max_examples=examples(120))
@given(
    group=st.sampled_from(INT4_GROUP_SIZES),
    blocks=st.sampled_from([1, 2, 3]),
    n=st.sampled_from([16, 32, 48, 64, 80, 112, 128]),  # whole and partial blocks of 64 and 32 rows
    dtype=st.sampled_from([F32, BF16]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31),
)
def test_int4_weight_cpu_matches_int4_opaque_tensor(group, blocks, n, dtype, kind, seed):
    w = values((n, group * blocks), group, dtype, seed, kind, bits=4)
    stored = quantized_linear(w, int4_cpu(group)).weight
    if torch.isinf(stored.scale_and_zero).any():  # a group's max - min overflowed: its codes come from NaN
        with pytest.raises(ValueError, match="overflows"):
            int4_weight_cpu(w, group)
        return
    qdata, scale_and_zero = int4_weight_cpu(w, group)
    assert_same_ints(qdata, stored.qdata, f"{group} {n} {dtype} {kind}")
    assert_same_floats(scale_and_zero, stored.scale_and_zero, f"{group} {n} {dtype} {kind}")


@settings(max_examples=examples(30))
@given(n=st.sampled_from([16, 32, 48, 64, 80, 96, 112, 144]), half_k=st.integers(1, 40), seed=st.integers(0, 2**31))
def test_pack_int4_for_cpu_matches_torch(n, half_k, seed):
    codes = torch.randint(0, 16, (n, 2 * half_k), dtype=torch.int32, generator=torch.Generator().manual_seed(seed))
    assert_same_ints(pack_int4_for_cpu(codes), torch.ops.aten._convert_weight_to_int4pack_for_cpu(codes, 1))


def activations(m: int, k: int, dtype: torch.dtype, seed: int, kind: str) -> torch.Tensor:
    x = values((m, k), k, F32, seed, kind)
    if kind == "huge":
        x = x * 1e-30  # huge activations overflow any matmul; keep their other properties
    return x.to(dtype)


@settings(max_examples=examples(120))
@given(
    shape=shapes,
    m=st.sampled_from([1, 3, 4, 7]),
    three_d=st.booleans(),
    per_row=st.booleans(),
    with_bias=st.booleans(),
    dtype=st.sampled_from([F32, BF16]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31),
)
def test_int8_linear_outputs_match(shape, m, three_d, per_row, with_bias, dtype, kind, seed):
    """Int8DynamicActivationInt8WeightConfig (the _int_mm path, modelled) and Int8WeightOnlyConfig (torch's
    float matmul on qlib's operands)."""
    group, blocks, n = shape
    k = group * blocks
    w = values((n, k), group, dtype, seed, "normal")
    bias = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype) if with_bias else None
    x = activations(m, k, dtype, seed + 1, kind)
    if three_d:
        x = x.reshape(1, m, k)
    group_size = None if per_row else group
    with torch.no_grad():
        dynamic = quantized_linear(w, int8_dynamic(), bias)(x)
        weight_only = quantized_linear(w, int8_weight_only(group_size), bias)(x)
    qdata, scale, zero_point = int8_weight(w)
    assert_same_floats(linear_int8_dynamic(x, qdata, scale, bias), dynamic, f"dynamic {dtype} {kind}")
    qdata, scale, zero_point = int8_weight(w, group_size)
    ours = linear_int8_weight_only(x, qdata, scale, zero_point, bias)
    assert_same_floats(ours, weight_only, f"weight-only {group_size} {dtype} {kind}")


@settings(max_examples=examples(120))
@given(
    shape=shapes,
    m=st.sampled_from([1, 4, 5]),
    dynamic=st.booleans(),
    with_bias=st.booleans(),
    dtype=st.sampled_from([F32, BF16]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31),
)
def test_intx_linear_outputs_match(shape, m, dynamic, with_bias, dtype, kind, seed):
    """IntxWeightOnlyConfig and Int8DynamicActivationIntxWeightConfig: torch's F.linear on qlib's operands."""
    group, blocks, n = shape
    k = group * blocks
    w = values((n, k), group, dtype, seed, "normal", bits=4)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype) if with_bias else None
    x = activations(m, k, dtype, seed + 1, kind)
    config = (int8_dynamic_intx if dynamic else intx_weight_only)(group)
    with torch.no_grad():
        theirs = quantized_linear(w, config, bias)(x)
    qdata, scale, zero_point = intx_weight(w, group)
    ours = linear_intx(x, qdata, scale, zero_point, bias, dynamic_activation=dynamic)
    assert_same_floats(ours, theirs, f"{type(config).__name__} {dtype} {kind}")


def test_per_token_activation_matches_torchao():
    intx = pytest.importorskip("torchao.quantization.quantize_.workflows.intx.intx_unpacked_to_int8_tensor")
    for dtype in (F32, BF16):
        for seed, kind in enumerate(KINDS):
            x = activations(6, 96, dtype, seed, kind).reshape(2, 3, 96)
            theirs = intx._apply_int8_act_asym_per_token_quant_dequant(x)
            assert_same_floats(dequantize_activation_per_token(x), theirs, f"{dtype} {kind}")


@settings(max_examples=examples(80))
@given(
    group=st.sampled_from(INT4_GROUP_SIZES),
    blocks=st.sampled_from([1, 2]),
    n=st.sampled_from([16, 48, 64, 80]),
    m=st.sampled_from([1, 3, 5]),
    with_bias=st.booleans(),
    dtype=st.sampled_from([F32, BF16]),
    kind=st.sampled_from(KINDS),
    seed=st.integers(0, 2**31),
)
def test_int4_linear_output_matches_weight_int4pack_mm(group, blocks, n, m, with_bias, dtype, kind, seed):
    """PrototypeInt4WeightOnlyConfig: _weight_int4pack_mm_for_cpu, modelled (no torch matmul in qlib's result)."""
    k = group * blocks
    w = values((n, k), group, dtype, seed, "normal", bits=4)
    bias = torch.randn(n, generator=torch.Generator().manual_seed(seed)).to(dtype) if with_bias else None
    x = activations(m, k, dtype, seed + 1, kind)
    with torch.no_grad():
        theirs = quantized_linear(w, int4_cpu(group), bias)(x)
    qdata, scale_and_zero = int4_weight_cpu(w, group)
    assert_same_floats(linear_int4_cpu(x, qdata, scale_and_zero, group, bias), theirs, f"{group} {n} {dtype} {kind}")


def test_int4_kernel_accumulates_in_order_with_fused_multiply_adds():
    """Sums whose rounding tells a sequential FMA chain from a plain multiply-add: qlib and torch agree."""
    gen = torch.Generator().manual_seed(5)
    w = torch.randn(64, 256, generator=gen)
    qdata, scale_and_zero = int4_weight_cpu(w, 32)
    x = torch.randn(4, 256, generator=gen) * torch.logspace(-6, 6, 256)  # magnitudes that cancel unevenly
    theirs = torch.ops.aten._weight_int4pack_mm_for_cpu(x, qdata, 32, scale_and_zero)
    assert_same_floats(linear_int4_cpu(x, qdata, scale_and_zero, 32), theirs)


CONFIGS = {
    "Int8WeightOnlyConfig": lambda: int8_weight_only(None),
    "Int8WeightOnlyConfig(PerGroup(64))": lambda: int8_weight_only(64),
    "Int8DynamicActivationInt8WeightConfig": int8_dynamic,
    "IntxWeightOnlyConfig(int4, PerGroup(32))": lambda: intx_weight_only(32),
    "Int8DynamicActivationIntxWeightConfig(int4, PerGroup(32))": lambda: int8_dynamic_intx(32),
    "PrototypeInt4WeightOnlyConfig(128)": lambda: int4_cpu(128),
}


@pytest.mark.parametrize("dtype", [F32, BF16])
@pytest.mark.parametrize("name", CONFIGS)
def test_save_and_load_keep_the_codes(name, dtype):
    """torch.save, then torch.load(weights_only=True): the loaded subclass holds qlib's codes and scales."""
    w = values((32, 256), 32, dtype, 11, "normal")
    layer = quantized_linear(w, CONFIGS[name]())
    buffer = io.BytesIO()
    torch.save(layer.state_dict(), buffer)
    buffer.seek(0)
    loaded = torch.load(buffer, weights_only=True)["weight"]
    assert type(loaded) is type(layer.weight)
    if name.startswith("Prototype"):
        qdata, scale_and_zero = int4_weight_cpu(w, 128)
        assert_same_ints(qdata, loaded.qdata)
        assert_same_floats(scale_and_zero, loaded.scale_and_zero)
        return
    if name.startswith("Int8") and "Intx" not in name:
        qdata, scale, zero_point = int8_weight(w, 64 if "PerGroup" in name else None)
    else:
        qdata, scale, zero_point = intx_weight(w, 32)
    assert_same_ints(qdata, loaded.qdata)
    assert_same_floats(scale, loaded.scale)
    assert_same_ints(zero_point, loaded.zero_point)


@pytest.mark.parametrize("group", GROUP_SIZES)
def test_a_row_not_a_multiple_of_the_group_raises(group):
    w = torch.randn(16, group + 16)
    for config in (int8_weight_only(group), intx_weight_only(group), int8_dynamic_intx(group)):
        with pytest.raises(AssertionError, match="divisible"):
            quantized_linear(w, config)
    with pytest.raises(ValueError, match=f"row length {group + 16} is not a multiple of group_size {group}"):
        int8_weight(w, group)
    with pytest.raises(ValueError, match="not a multiple"):
        intx_weight(w, group)
    if group in INT4_GROUP_SIZES:  # torchao leaves the layer in float, and says so only in a log message
        assert type(quantized_linear(w, int4_cpu(group)).weight) is torch.nn.Parameter
        with pytest.raises(ValueError, match="leaves the layer unquantized"):
            int4_weight_cpu(w, group)


def test_int4_refusals_match_torchao():
    w = torch.randn(16, 256)
    with pytest.raises(AssertionError, match="32/64/128"):
        quantized_linear(w, int4_cpu(256))
    with pytest.raises(ValueError, match=r"group_size must be one of \(32, 64, 128\)"):
        int4_weight_cpu(w, 256)
    with pytest.raises(RuntimeError, match="N to be dividable by 16"):
        quantized_linear(torch.randn(1, 64), int4_cpu(32))
    with pytest.raises(ValueError, match="N a multiple of 16"):
        int4_weight_cpu(torch.randn(1, 64), 32)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_nan_and_inf_raise(bad):
    w = torch.randn(4, 64)
    w[1, 3] = bad
    for call in (
        lambda: int8_weight(w),
        lambda: intx_weight(w, 32),
        lambda: int4_weight_cpu(w.repeat(4, 1), 32),
        lambda: quantize_per_group(w, 32),
        lambda: quantize_int4_tinygemm(w, 32),
    ):
        with pytest.raises(ValueError, match="NaN|infinite"):
            call()


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda: quantize_per_group(torch.zeros(2, 4, dtype=torch.float16), 2), TypeError, "float32 or bfloat16"),
        (lambda: quantize_per_group(torch.zeros(2, 4), 2, bits=9), ValueError, "bits"),
        (lambda: quantize_per_group(torch.zeros(2, 4), 0), TypeError, "group_size"),
        (lambda: quantize_per_group(torch.zeros(2, 4), 2, scale_dtype=torch.float64), TypeError, "scale_dtype"),
        (lambda: pack_int4_for_cpu(torch.full((16, 2), 16, dtype=torch.int32)), ValueError, r"\[0, 15\]"),
        (lambda: pack_int4_for_cpu(torch.zeros(16, 2, dtype=torch.int32), "NEON"), ValueError, "capability"),
        (lambda: pack_int4_for_cpu(torch.zeros(16, 2, dtype=torch.uint8)), TypeError, "int32"),
        (
            lambda: dequantize_per_group(torch.zeros(2, 4, dtype=torch.int8), torch.ones(2, 3), torch.zeros(2, 3), F32),
            ValueError,
            "one value per group",
        ),
    ],
)
def test_errors_say_what_is_allowed(call, error, message):
    with pytest.raises(error, match=message):
        call()


def test_int_mm_saturates_pairs_only_without_vnni():
    """Codes near ±127 make (x + 128) * w pairs pass the int16 range: torchao's output follows qlib's choice
    for this process, and the other choice gives other numbers."""
    w = torch.ones(4, 64)
    w[1:, ::3] = -1.0
    x = torch.ones(2, 64)
    x[1, ::2] = -0.5
    with torch.no_grad():
        theirs = quantized_linear(w, int8_dynamic())(x)
    qdata, scale, _ = int8_weight(w)
    assert_same_floats(linear_int8_dynamic(x, qdata, scale), theirs)
    exact = linear_int8_dynamic(x, qdata, scale, pairs_saturate=False)
    saturated = linear_int8_dynamic(x, qdata, scale, pairs_saturate=True)
    assert not torch.equal(exact, saturated)
