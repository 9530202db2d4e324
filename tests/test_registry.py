"""The operator table: what run and compare dispatch through, and how qlib tells which backend packed a weight."""

from __future__ import annotations

import sys

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import qlib
from qlib import registry
from qlib.testing import assert_same_ints, quantized_tensor, quantized_weight


def test_every_operator_names_a_public_qlib_function():
    import qlib.integer_model  # noqa: F401  (imports every operator module)

    assert registry.OPERATORS, "the table is empty"
    for row in registry.OPERATORS.values():
        name = row.function.removeprefix("qlib.")
        assert row.function.startswith("qlib.") and name in qlib.__all__, row
        assert "::" in row.op and row.modules, row


def test_an_op_is_registered_once():
    with pytest.raises(ValueError, match="registered twice"):
        registry.register("quantized::add", function="qlib.other")(lambda args, kwargs, settings: None)


@given(codes=st.lists(st.integers(0, 255), min_size=1, max_size=300), zero_point=st.integers(0, 255))
def test_relu_on_quint8_codes_equals_torch(codes, zero_point):
    q = torch.tensor(codes, dtype=torch.uint8)
    assert_same_ints(qlib.relu(q, zero_point), torch.relu(quantized_tensor(q, 0.1, zero_point)).int_repr())


@given(codes=st.lists(st.integers(-128, 127), min_size=1, max_size=300), zero_point=st.integers(-128, 127))
def test_relu_on_qint8_codes_equals_torch(codes, zero_point):
    q = torch.tensor(codes, dtype=torch.int8)
    assert_same_ints(qlib.relu(q, zero_point), torch.relu(quantized_tensor(q, 0.1, zero_point)).int_repr())


ENGINES = [
    engine for engine in ("fbgemm", "qnnpack", "onednn", "x86") if engine in torch.backends.quantized.supported_engines
]


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize("symmetric", [True, False])
def test_packed_backend_names_the_engine_that_packed_the_weight(engine, symmetric):
    """Packed under one engine, asked under another: the answer is the packing's, as torch runs it."""
    before = torch.backends.quantized.engine
    try:
        torch.backends.quantized.engine = engine
        zero_point = 0 if symmetric else 3
        w = quantized_weight(torch.ones(4, 3, 3, 3, dtype=torch.int8), 0.1, zero_point)
        if engine == "onednn" and not symmetric:
            with pytest.raises(RuntimeError, match="symmetric"):
                torch.ops.quantized.conv2d_prepack(w, None, [1, 1], [0, 0], [1, 1], 1)
            return
        conv = torch.ops.quantized.conv2d_prepack(w, None, [1, 1], [0, 0], [1, 1], 1)
        linear = torch.ops.quantized.linear_prepack(
            quantized_weight(torch.ones(4, 3, dtype=torch.int8), 0.1, zero_point), None
        )
        torch.backends.quantized.engine = "qnnpack" if engine != "qnnpack" else "fbgemm"
        oneDNN_conv = engine == "onednn" or (
            engine == "x86" and symmetric and torch.cpu._is_vnni_supported() and sys.platform.startswith("linux")
        )
        expected_conv = "onednn" if oneDNN_conv else ("qnnpack" if engine == "qnnpack" else "fbgemm")
        expected_linear = {"onednn": "onednn", "qnnpack": "qnnpack"}.get(engine, "fbgemm")
        assert registry.packed_backend(conv) == expected_conv
        assert registry.packed_backend(linear) == expected_linear
    finally:
        torch.backends.quantized.engine = before
