"""qlib.probe names the arithmetic of the installed torch, and says so when none of its models fits."""

from __future__ import annotations

import itertools

import pytest
import torch

import qlib
from qlib.probing import ARITHMETICS, MODELS, PATH_DTYPES, PATHS, SCALES, candidate_codes, probe_inputs


def test_probe_identifies_the_installed_release():
    result = qlib.probe()
    installed = qlib.torch_release()
    assert result.model == installed
    for path in PATHS:
        assert result.matches[path] == [MODELS[installed][path]], path  # exactly one candidate fits
    assert result.clamp == {
        "per tensor quint8": (0, 255),
        "per tensor qint8": (-128, 127),
        "per tensor qint32": (-(2**31), 2**31 - 1),
        "per channel quint8": (0, 255),
    }
    text = str(result)
    assert f"qlib model: release='{installed}'" in text and torch.__version__ in text


def test_probe_reports_the_infinities_as_torch_quantizes_them():
    result = qlib.probe(release_only=True)
    inf = torch.tensor([float("inf"), float("-inf")])
    expected = torch.quantize_per_tensor(inf, 0.1, 200, torch.quint8).int_repr().tolist()
    assert result.infinities["per tensor quint8, zero point 200"] == expected
    wraps = qlib.torch_release() == "2.14"
    assert ("int32 wraparound" in str(result)) == wraps


def textbook_per_tensor(x, scale, zero_point, dtype):
    _, qmin, qmax = next(v for v in PATH_DTYPES.values() if v[0] == dtype)
    return (torch.round(x / torch.tensor(scale, dtype=torch.float32)) + zero_point).clamp(qmin, qmax).long()


def textbook_per_channel(x, scales, zero_points, axis, dtype):
    return textbook_per_tensor(x, scales.item(), zero_points.item(), dtype)


def test_a_build_no_qlib_model_matches_is_named_as_such():
    result = qlib.probe(textbook_per_tensor, textbook_per_channel, release_only=True)
    assert result.model is None
    assert all(result.matches[path] == ["after_float32_division"] for path in PATHS)
    assert "qlib model: none" in str(result) and "textbook formula" in str(result)


def test_an_arithmetic_no_candidate_matches_is_named_as_such():
    def floor_per_tensor(x, scale, zero_point, dtype):
        _, qmin, qmax = next(v for v in PATH_DTYPES.values() if v[0] == dtype)
        return (torch.floor(x / scale) + zero_point).clamp(qmin, qmax).long()

    def floor_per_channel(x, scales, zero_points, axis, dtype):
        return floor_per_tensor(x, scales.item(), zero_points.item(), dtype)

    result = qlib.probe(floor_per_tensor, floor_per_channel, release_only=True)
    assert result.model is None and all(result.matches[path] == [] for path in PATHS)
    assert "none of qlib's candidate arithmetics reproduces torch's integers" in str(result)


@pytest.mark.parametrize("a, b", list(itertools.combinations(ARITHMETICS, 2)))
def test_the_probe_inputs_tell_every_two_arithmetics_apart(a, b):
    for path in PATHS:
        _, qmin, qmax = PATH_DTYPES[path]
        told = False
        for scale, zero_point in itertools.product(SCALES, (0, 1, 35, 129, -7, 1001)):
            if not qmin <= zero_point <= qmax:
                continue
            x = probe_inputs(scale, zero_point, qmin, qmax)
            if not torch.equal(*(candidate_codes(c, x, scale, zero_point, qmin, qmax) for c in (a, b))):
                told = True
                break
        assert told, f"{a} and {b} agree on every probe input of {path}"


@pytest.mark.parametrize("release", sorted(MODELS))
def test_the_release_models_are_qlibs_own_arithmetic(release):
    """The probe's candidates for a release compute what qlib.quantize computes for it."""
    for path in PATHS:
        dtype, qmin, qmax = PATH_DTYPES[path]
        for scale, zero_point in itertools.product(SCALES, (1, 126)):
            x = probe_inputs(scale, zero_point, qmin, qmax)
            expected = candidate_codes(MODELS[release][path], x, scale, zero_point, qmin, qmax)
            if path.startswith("per channel"):
                s, z = torch.tensor([scale], dtype=torch.float64), torch.tensor([zero_point])
                ours = qlib.quantize(x[None], s, z, dtype, axis=0, release=release)[0]
            else:
                ours = qlib.quantize(x, scale, zero_point, dtype, release=release)
            assert torch.equal(ours.long(), expected), (path, scale, zero_point)


def test_unknown_arithmetic_name():
    with pytest.raises(ValueError, match="unknown arithmetic 'nope'; known: fma_before"):
        candidate_codes("nope", torch.tensor([1.0]), 1.0, 0, 0, 255)
