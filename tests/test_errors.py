"""Every bad input gets a clear error naming the argument, the value and what is allowed."""

from __future__ import annotations

import pytest
import torch

import qlib

X = torch.tensor([0.5, -1.0, 2.0])
Q = torch.tensor([1, 2, 3], dtype=torch.uint8)
NAN = float("nan")
INF = float("inf")


@pytest.mark.parametrize(
    "call, error, pattern",
    [
        (lambda: qlib.quantize(X, 0.0, 0, torch.quint8), ValueError, "scale must be a finite positive.*got 0.0"),
        (lambda: qlib.quantize(X, -0.1, 0, torch.quint8), ValueError, "scale .*got -0.1"),
        (lambda: qlib.quantize(X, NAN, 0, torch.quint8), ValueError, "scale .*got nan"),
        (lambda: qlib.quantize(X, INF, 0, torch.quint8), ValueError, "scale .*got inf"),
        (lambda: qlib.quantize(X, 1e-45, 0, torch.quint8), ValueError, "scale .*between"),
        (lambda: qlib.quantize(X, "0.1", 0, torch.quint8), TypeError, "scale must be a number"),
        (lambda: qlib.quantize(X, 0.1, 256, torch.quint8), ValueError, r"zero_point must lie in \[0, 255\].*got 256"),
        (lambda: qlib.quantize(X, 0.1, -129, torch.qint8), ValueError, r"\[-128, 127\].*got -129"),
        (lambda: qlib.quantize(X, 0.1, 1.5, torch.quint8), ValueError, "zero_point must be a whole number; got 1.5"),
        (lambda: qlib.quantize(X, 0.1, 0, torch.float16), TypeError, "dtype must be one of .*got torch.float16"),
        (lambda: qlib.quantize(X, 0.1, 0, torch.int16), TypeError, "dtype must be one of"),
        (
            lambda: qlib.quantize(X.double(), 0.1, 0, torch.quint8),
            TypeError,
            "x must have dtype torch.float32.*float64",
        ),
        (lambda: qlib.quantize(Q, 0.1, 0, torch.quint8), TypeError, "x must have dtype torch.float32.*uint8"),
        (lambda: qlib.quantize([0.5], 0.1, 0, torch.quint8), TypeError, "x must be a torch.Tensor"),
        (lambda: qlib.quantize(torch.tensor([1.0, NAN]), 0.1, 0, torch.quint8), ValueError, "x contains 1 NaN"),
        (lambda: qlib.quantize(X, torch.tensor([0.1, 0.2]), 0, torch.quint8), ValueError, "single number .*axis=None"),
        (
            lambda: qlib.quantize(X[None], torch.tensor([0.1]), torch.tensor([0]), torch.quint8, axis=2),
            ValueError,
            r"axis must be in \[-2, 1\].*got 2",
        ),
        (
            lambda: qlib.quantize(X[None], torch.tensor([0.1]), torch.tensor([0]), torch.quint8, axis=1),
            ValueError,
            r"one value per channel: shape \(3,\).*got shape \(1,\)",
        ),
        (
            lambda: qlib.quantize(X[None], torch.tensor([0.1]), torch.tensor([0, 1]), torch.quint8, axis=0),
            ValueError,
            r"zero_point must have one value per channel",
        ),
        (
            lambda: qlib.quantize(X[None], torch.tensor([-0.1]), torch.tensor([0]), torch.quint8, axis=0),
            ValueError,
            r"scale\[0\] is -0.1",
        ),
        (
            lambda: qlib.quantize(X[None], torch.tensor([0.1]), torch.tensor([300]), torch.quint8, axis=0),
            ValueError,
            r"zero_point\[0\] is 300",
        ),
        (
            lambda: qlib.quantize(X[None], torch.tensor([0.1]), torch.tensor([0.5]), torch.quint8, axis=0),
            TypeError,
            "integer tensor",
        ),
        (
            lambda: qlib.quantize(X[None], torch.tensor([0.1]), torch.tensor([0]), torch.quint4x2, axis=0),
            TypeError,
            "per tensor only",
        ),
        (
            lambda: qlib.quantize(X[None], torch.tensor([0.1]), torch.tensor([0]), torch.quint8, axis=0.0),
            TypeError,
            "axis must be an int",
        ),
        (lambda: qlib.dequantize(X, 0.1, 0), TypeError, "q must be an integer tensor.*got torch.float32"),
        (
            lambda: qlib.dequantize(torch.quantize_per_tensor(X, 0.1, 0, torch.quint8), 0.1, 0),
            TypeError,
            r"int_repr\(\)",
        ),
        (lambda: qlib.dequantize(Q, 0.1, 256), ValueError, r"\[0, 255\].*got 256"),
        (lambda: qlib.dequantize(Q, 0.0, 0), ValueError, "scale must be a finite positive"),
        (
            lambda: qlib.dequantize(Q[None], torch.tensor([0.1, 0.2]), torch.tensor([0, 0]), axis=0),
            ValueError,
            "one value per channel",
        ),
        (lambda: qlib.dequantize(torch.tensor([2**40]), 0.1, 0), ValueError, "outside the int32 range"),
        (
            lambda: qlib.fake_quantize(X, 0.1, 0, 10, 5),
            ValueError,
            "quant_min <= quant_max <= 2147483647; got quant_min=10, quant_max=5",
        ),
        (lambda: qlib.fake_quantize(X, 0.1, 20, 0, 15), ValueError, r"\[0, 15\].*got 20"),
        (
            lambda: qlib.fake_quantize(X, 0.1, 0, 0, 2**31),
            ValueError,
            "quant_max <= 2147483647; got quant_min=0, quant_max=2147483648",
        ),
        (lambda: qlib.fake_quantize(X, 0.1, 0, 0.0, 255), TypeError, "quant_min must be an int"),
        (lambda: qlib.fake_quantize(torch.tensor([NAN]), 0.1, 0, 0, 255), ValueError, "NaN"),
        (lambda: qlib.choose_qparams(2.0, 1.0), ValueError, "min_val must not exceed max_val.*2.0 > 1.0"),
        (
            lambda: qlib.choose_qparams(torch.tensor([0.0, 3.0]), torch.tensor([1.0, 2.0])),
            ValueError,
            r"at index \[1\]: 3.0 > 2.0",
        ),
        (lambda: qlib.choose_qparams(INF, -INF), ValueError, "min_val must be finite.*seen no data"),
        (lambda: qlib.choose_qparams(NAN, 1.0), ValueError, "min_val must be finite"),
        (lambda: qlib.choose_qparams(torch.tensor([0.0]), torch.tensor([1.0, 2.0])), ValueError, "same shape"),
        (lambda: qlib.choose_qparams(0, 1, dtype=torch.float32), TypeError, "dtype must be one of"),
        (lambda: qlib.choose_qparams(-1.0, 1.0, quant_min=-5), ValueError, "both quant_min and quant_max"),
        (lambda: qlib.choose_qparams(-1.0, 1.0, quant_min=1, quant_max=10), ValueError, "quant_min <= 0 <= quant_max"),
        (lambda: qlib.choose_qparams(-1.0, 1.0, quant_min=0, quant_max=300), ValueError, "quant_max <= 255"),
        (lambda: qlib.choose_qparams(-1.0, 1.0, eps=0.0), ValueError, "eps must be a finite positive"),
        (
            lambda: qlib.choose_qparams(-1.0, 1.0, dtype=torch.qint32, reduce_range=True),
            ValueError,
            "reduce_range=True applies only to 8-bit",
        ),
        (lambda: qlib.choose_qparams(-3e38, 3e38), ValueError, "too wide: its scale overflows float32"),
        (
            lambda: qlib.choose_qparams(-1.0, 1.0, reduce_range=True, quant_min=0, quant_max=1),
            ValueError,
            r"halves \[0, 1\] to \[0, 0\]",
        ),
        (lambda: qlib.qrange(torch.float32), TypeError, "dtype must be one of .*got torch.float32"),
        (lambda: qlib.qrange("quint8"), TypeError, "dtype must be one of"),
        (lambda: qlib.qrange(torch.int16, reduce_range=True), ValueError, "only to 8-bit dtypes"),
        (lambda: qlib.qrange(torch.quint8, reduce_range=1), TypeError, "reduce_range must be True or False"),
    ],
)
def test_bad_input_is_rejected_clearly(call, error, pattern):
    with pytest.raises(error, match=pattern):
        call()


def test_what_torch_itself_does_with_non_finite_values():
    """Recorded so the docstrings stay true: ±inf saturates, NaN is kernel-dependent."""
    x = torch.tensor([INF, -INF, NAN])
    per_tensor = torch.quantize_per_tensor(x, 0.1, 5, torch.quint8).int_repr().tolist()
    per_channel = torch.quantize_per_channel(x[None], torch.tensor([0.1]), torch.tensor([5]), 0, torch.quint8)
    qint32 = torch.quantize_per_tensor(x, 0.1, 5, torch.qint32).int_repr().tolist()
    assert per_tensor == [255, 0, 255]
    assert per_channel.int_repr()[0].tolist() == [255, 0, 0]
    assert qint32 == [2**31 - 1, -(2**31), -(2**31)]
    # qlib saturates ±inf the same way and refuses NaN
    assert qlib.quantize(x[:2], 0.1, 5, torch.quint8).tolist() == per_tensor[:2]
    assert qlib.quantize(x[:2], 0.1, 5, torch.qint32).tolist() == qint32[:2]


def test_torch_accepts_scales_qlib_refuses():
    """torch quantizes silently with a zero, negative or NaN scale; qlib does not."""
    for scale in [0.0, -1.0, NAN]:
        torch.quantize_per_tensor(X, scale, 0, torch.quint8)  # no error from torch
        with pytest.raises(ValueError):
            qlib.quantize(X, scale, 0, torch.quint8)
