"""qlib follows the installed torch release, and says clearly when it cannot."""

from __future__ import annotations

import os
import platform

import pytest
import torch

import qlib
from qlib.releases import torch_release


def test_the_suite_runs_on_the_torch_make_asked_for():
    """make test runs this suite once per supported release and sets QLIB_EXPECT_TORCH for each run."""
    expected = os.environ.get("QLIB_EXPECT_TORCH")
    if expected is None:
        pytest.skip("QLIB_EXPECT_TORCH is not set (set by make unit / make unit-2.13)")
    assert torch.__version__.startswith(expected), f"expected torch {expected}, found {torch.__version__}"
    assert torch_release() == ".".join(expected.split(".")[:2])


@pytest.mark.parametrize(
    "given, found",
    [("2.13", "2.13"), ("2.13.0", "2.13"), ("2.14.1+cu130", "2.14"), ("2.14.1+cpu", "2.14"), ("2.14.0rc2", "2.14")],
)
def test_release_names(given, found):
    assert torch_release(given) == found


@pytest.mark.parametrize(
    "given", ["2.12", "2.15.0", "2.15.0.dev20260601+cpu", "2.14.0a0+gitabc", "1.13.1", "latest", ""]
)
def test_unsupported_releases_are_refused(given):
    with pytest.raises(ValueError, match=r"qlib reproduces torch 2\.13 and 2\.14.*qlib\.probe\(\)"):
        torch_release(given)
    with pytest.raises(ValueError, match="qlib reproduces torch"):
        qlib.quantize(torch.tensor([1.0]), 0.1, 0, torch.quint8, release=given)


def test_release_must_be_a_string():
    with pytest.raises(TypeError, match="release must be a string"):
        torch_release(2.14)


def test_an_unsupported_installed_torch_is_refused(monkeypatch):
    monkeypatch.setattr(torch, "__version__", "2.15.0+cpu")
    with pytest.raises(ValueError, match=r"the installed torch is 2\.15\.0\+cpu.*qlib\.probe\(\).*release="):
        qlib.quantize(torch.tensor([1.0]), 0.1, 0, torch.quint8)
    # naming a release still works: qlib's models are plain tensor arithmetic
    assert qlib.quantize(torch.tensor([1.0]), 0.1, 0, torch.quint8, release="2.14").tolist() == [10]


@pytest.mark.parametrize("machine, capability", [("arm64", "DEFAULT"), ("aarch64", "SVE256"), ("x86_64", "DEFAULT")])
def test_a_cpu_qlib_does_not_model_is_refused(monkeypatch, machine, capability):
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)
    with pytest.raises(ValueError, match=f"this machine is {machine} with CPU capability {capability}"):
        qlib.dequantize(torch.tensor([1], dtype=torch.uint8), 0.1, 0)
    assert qlib.dequantize(torch.tensor([1], dtype=torch.uint8), 0.1, 0, release="2.13").tolist() == [
        pytest.approx(0.1)
    ]


@pytest.mark.parametrize("function", ["quantize", "dequantize", "fake_quantize", "explain"])
def test_every_kernel_function_takes_a_release(function):
    import inspect

    parameter = inspect.signature(getattr(qlib, function)).parameters["release"]
    assert parameter.kind is inspect.Parameter.KEYWORD_ONLY and parameter.default is None
