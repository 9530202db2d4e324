"""Find out which quantize arithmetic an installed torch uses, by running it on telling inputs.

Explained in the book chapter "Rounding" (``book/04_rounding``).

``probe()`` quantizes a fixed battery of inputs with the installed torch, on
four paths (``quantize_per_tensor`` to quint8, qint8 and qint32, and
``quantize_per_channel`` to quint8), and compares each path's integers with
every arithmetic in ``ARITHMETICS``. The battery sits where the candidates
part ways: exact ties with odd and even zero points (before or after
rounding), values within a few float32 steps of a tie at scales that are and
are not exact in float32 (reciprocal or division, float32 or float64 scale, one
or two roundings). It also records where the codes are clamped and what
happens to ``±inf``.

The arithmetics measured on this project's machines are torch 2.13's and
2.14's on x86 CPUs (qlib's ``release="2.13"`` and ``"2.14"``). The others are
read from source and have not been run here: CUDA's kernels
(``aten/src/ATen/native/quantized/cuda/AffineQuantizer.cu``: ``nearbyint(x /
scale) + zero_point`` with a float64 scale), PT2E's q/dq ops
(``torch/ao/quantization/fx/_decomposed.py``: a float32 reciprocal of the
float64 ``1 / scale``), FBGEMM's scalar fallback in torch 2.13 (x86 CPUs
without AVX2 or FMA, and aarch64 builds with FBGEMM: the zero point before
rounding, two roundings), and ARM builds without FBGEMM
(``quantize_tensor_arm`` in ``QuantizedOpKernels.cpp``: the zero point after
rounding, like 2.14 on x86). The textbook formula (division, then the zero
point) and round-half-away-from-zero complete the list.
"""

from __future__ import annotations

import platform
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from qlib.numerics import fma_float32
from qlib.releases import SUPPORTED_RELEASES

# Each candidate: (features, where it is found). Its codes come from candidate_codes() below.
ARITHMETICS: dict[str, tuple[str, str]] = {
    "fma_before": (
        "zero point before rounding; x * (1.0f/scale) + zero_point rounded once to float32 (FMA)",
        "torch 2.13, x86 with AVX2 and FMA, 8-bit per tensor (measured)",
    ),
    "two_roundings_before": (
        "zero point before rounding; float32(float32(x * (1.0f/scale)) + zero_point), two roundings",
        "torch 2.13, x86: qint32 and per channel (measured); 8-bit without AVX2/FMA (source)",
    ),
    "after": (
        "zero point after rounding; rint(float32(x * (1.0f/scale))) + zero_point",
        "torch 2.14, x86 (measured); ARM builds without FBGEMM (source)",
    ),
    "after_float64_reciprocal": (
        "zero point after rounding; x * float32(1.0/scale), the reciprocal taken in float64",
        "PT2E's quantized_decomposed q/dq ops (source)",
    ),
    "after_float64_division": (
        "zero point after rounding; rint(x / scale) in float64",
        "CUDA kernels (source)",
    ),
    "after_float32_division": (
        "zero point after rounding; rint(float32(x / float32(scale))): the textbook formula",
        "ONNX QuantizeLinear with a float32 scale; hand-written code",
    ),
    "before_float32_division": (
        "zero point before rounding; rint(float32(float32(x / float32(scale)) + zero_point))",
        "hand-written code",
    ),
    "after_half_away": (
        "zero point after rounding; ties rounded away from zero (std::round), float32 reciprocal",
        "hand-written code",
    ),
}

# The arithmetic of each probed path in each release qlib models.
PATHS = ("per tensor quint8", "per tensor qint8", "per tensor qint32", "per channel quint8")
MODELS: dict[str, dict[str, str]] = {
    "2.13": {
        "per tensor quint8": "fma_before",
        "per tensor qint8": "fma_before",
        "per tensor qint32": "two_roundings_before",
        "per channel quint8": "two_roundings_before",
    },
    "2.14": dict.fromkeys(PATHS, "after"),
}
assert set(MODELS) == set(SUPPORTED_RELEASES)

PATH_DTYPES = {
    "per tensor quint8": (torch.quint8, 0, 255),
    "per tensor qint8": (torch.qint8, -128, 127),
    "per tensor qint32": (torch.qint32, -(2**31), 2**31 - 1),
    "per channel quint8": (torch.quint8, 0, 255),
}
# Scales exact and inexact in float32, including FBGEMM's own example (0.00214854861) and the forum's.
SCALES = (1.0, 0.5, 0.1, 1 / 3, 0.00214854861, 0.1277553737, 0.01696838, 0.0180064, 0.0371, 2.7e-3, 0.37, 5.3)


@dataclass
class Probe:
    """What ``probe()`` found: for each path, the arithmetics that reproduce all of torch's integers.

    ``matches`` maps each path to the names in ``ARITHMETICS`` that agree with
    torch on every probe input (empty: none does); ``model`` is the qlib
    release whose arithmetic equals torch's on every path, or None; ``clamp``
    maps each path to the codes of values far below and above the range;
    ``infinities`` maps a description to torch's codes for ``[+inf, -inf]``.
    ``str(probe)`` is a report in words.

    Chapter: "Rounding" (book/04_rounding).

    >>> result = probe(release_only=True)
    >>> result.model in ("2.13", "2.14")
    True
    """

    torch_version: str
    device: str
    machine: str
    cpu_capability: str
    matches: dict[str, list[str]] = field(default_factory=dict)
    clamp: dict[str, tuple[int, int]] = field(default_factory=dict)
    infinities: dict[str, list[int]] = field(default_factory=dict)
    inputs: int = 0
    model: str | None = None

    def __str__(self) -> str:
        lines = [
            f"torch {self.torch_version} on {self.device} ({self.machine}, CPU capability {self.cpu_capability}); "
            f"{self.inputs:,} inputs per path"
        ]
        for path in PATHS:
            found = self.matches.get(path, [])
            if len(found) == 1:
                features, where = ARITHMETICS[found[0]]
                lines.append(f"{path}: {features} [as in {where}]")
            elif found:
                lines.append(f"{path}: the probe cannot tell apart {', '.join(found)}")
            else:
                lines.append(f"{path}: none of qlib's candidate arithmetics reproduces torch's integers")
            if path in self.clamp:
                low, high = self.clamp[path]
                lines.append(f"  values far outside the range become {low} and {high}")
        for what, codes in self.infinities.items():
            ends = [255, 0] if "quint8" in what else [127, -128]
            verdict = "saturated to the ends" if codes == ends else "not the ends: an int32 wraparound"
            lines.append(f"{what}: [+inf, -inf] -> {codes} ({verdict})")
        if self.model:
            lines.append(
                f"qlib model: release='{self.model}' reproduces every path (the default when this torch is "
                f"{self.model}.x on an x86 CPU)"
            )
        else:
            lines.append(
                "qlib model: none. qlib's functions reproduce torch "
                f"{' and '.join(SUPPORTED_RELEASES)} on x86 CPUs; the lines above say what this torch does instead"
            )
        return "\n".join(lines)

    __repr__ = __str__


def candidate_codes(name: str, x: torch.Tensor, scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """The int64 codes of float32 ``x`` under the arithmetic ``ARITHMETICS[name]``, clamped to [qmin, qmax].

    ``x`` must be finite and its codes well inside int64; ``scale`` is a float64 number.

    Chapter: "Rounding" (book/04_rounding).

    >>> x = torch.tensor([0.5, 1.5, 2.5])
    >>> candidate_codes("after", x, 1.0, 129, 0, 255), candidate_codes("fma_before", x, 1.0, 129, 0, 255)
    (tensor([129, 131, 131]), tensor([130, 130, 132]))
    """
    s32 = torch.tensor(scale, dtype=torch.float32)
    inv = (torch.tensor(1.0) / s32).item()  # 1.0f / (float)scale
    if name == "fma_before":
        q = torch.round(fma_float32(x, inv, zero_point)).double()
    elif name == "two_roundings_before":
        q = torch.round(x * inv + zero_point).double()
    elif name == "after":
        q = torch.round(x * inv).double() + zero_point
    elif name == "after_float64_reciprocal":
        q = torch.round(x * torch.tensor(1.0 / scale, dtype=torch.float32)).double() + zero_point
    elif name == "after_float64_division":
        q = torch.round(x.double() / scale) + zero_point
    elif name == "after_float32_division":
        q = torch.round(x / s32).double() + zero_point
    elif name == "before_float32_division":
        q = torch.round(x / s32 + zero_point).double()
    elif name == "after_half_away":
        p = (x * inv).double()
        q = torch.sign(p) * torch.floor(p.abs() + 0.5) + zero_point
    else:
        raise ValueError(f"unknown arithmetic {name!r}; known: {', '.join(ARITHMETICS)}")
    return q.clamp(qmin, qmax).long()


def probe_inputs(scale: float, zero_point: int, qmin: int, qmax: int) -> torch.Tensor:
    """float32 values at, and within three float32 steps of, every tie ``(k + 0.5) * scale`` whose code
    lies in [qmin, qmax] (at most 256 ties, evenly spread), plus exact halves of small integers.

    Chapter: "Rounding" (book/04_rounding).

    >>> x = probe_inputs(1.0, 0, 0, 3)  # the ties 0.5, 1.5, 2.5, each with 6 neighbours
    >>> len(x), x[0].item(), x[1].item() - 0.5
    (21, 0.5, 5.960464477539063e-08)
    """
    inv = (torch.tensor(1.0) / torch.tensor(scale, dtype=torch.float32)).double()
    low, high = max(qmin - zero_point, -(2**20)), min(qmax - zero_point - 1, 2**20)
    k = torch.linspace(low, high, min(high - low + 1, 256)).round().double()
    ties = ((k + 0.5) / inv).float()
    values = [ties]
    for direction in (float("inf"), float("-inf")):
        step = ties
        for _ in range(3):
            step = torch.nextafter(step, torch.tensor(direction))
            values.append(step)
    return torch.stack(values, dim=1).reshape(-1)


def probe(
    quantize_per_tensor: Callable | None = None,
    quantize_per_channel: Callable | None = None,
    device: str = "cpu",
    release_only: bool = False,
) -> Probe:
    """Run telling inputs through torch's quantize kernels and name the arithmetic each path uses.

    By default the functions probed are ``torch.quantize_per_tensor`` and
    ``torch.quantize_per_channel`` on ``device``; pass your own (same
    signatures, returning a quantized tensor or its integer codes) to probe
    something else. The result lists, per path, the arithmetics of
    ``ARITHMETICS`` that reproduce every integer, the clamp, what ``±inf``
    becomes, and the qlib release model that matches all paths, if any.
    ``release_only=True`` probes fewer scales, enough to tell qlib's two
    releases apart.

    Chapter: "Rounding" (book/04_rounding).

    >>> print(probe())  # doctest: +SKIP
    torch 2.14.1+cu130 on cpu (x86_64, CPU capability AVX512); 42,840 inputs per path
    per tensor quint8: zero point after rounding; rint(float32(x * (1.0f/scale))) + zero_point [...]
    ...
    """
    per_tensor = quantize_per_tensor or torch.quantize_per_tensor
    per_channel = quantize_per_channel or torch.quantize_per_channel
    scales = SCALES[:4] if release_only else SCALES
    result = Probe(
        torch_version=str(torch.__version__),
        device=device,
        machine=platform.machine(),
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates its quantized dtypes on every call

        def run(path: str, x: torch.Tensor, scale: float, zero_point: int) -> torch.Tensor:
            dtype = PATH_DTYPES[path][0]
            x = x.to(device)
            if path.startswith("per channel"):
                s = torch.tensor([scale], dtype=torch.float64, device=device)
                z = torch.tensor([zero_point], device=device)
                q = per_channel(x.reshape(1, -1), s, z, 0, dtype)
            else:
                q = per_tensor(x, scale, zero_point, dtype)
            codes = q.int_repr() if q.is_quantized else q
            return codes.reshape(-1).cpu().long()

        for path in PATHS:
            _, qmin, qmax = PATH_DTYPES[path]
            alive = list(ARITHMETICS)
            count = 0
            for i, scale in enumerate(scales):
                for zero_point in _zero_points(qmin, qmax, i):
                    x = probe_inputs(scale, zero_point, qmin, qmax)
                    codes = run(path, x, scale, zero_point)
                    count += len(x)
                    alive = [
                        a for a in alive if torch.equal(candidate_codes(a, x, scale, zero_point, qmin, qmax), codes)
                    ]
            result.matches[path] = alive
            result.inputs = count
            far = torch.tensor([-1e6, 1e6]) if qmax < 2**16 else torch.tensor([-1e12, 1e12])
            result.clamp[path] = tuple(run(path, far, 1.0, 0).tolist())
        infinities = torch.tensor([float("inf"), float("-inf")])
        for dtype, zero_point in ((torch.quint8, 200), (torch.qint8, -5)):
            name = str(dtype).replace("torch.", "")
            codes = per_tensor(infinities.to(device), 0.1, zero_point, dtype)
            codes = codes.int_repr() if codes.is_quantized else codes
            result.infinities[f"per tensor {name}, zero point {zero_point}"] = codes.cpu().tolist()
    for release, paths in MODELS.items():
        if all(name in result.matches[path] for path, name in paths.items()):
            result.model = release
    return result


def _zero_points(qmin: int, qmax: int, i: int) -> tuple[int, int]:
    """An odd and an even zero point inside the range, different for each scale."""
    odd = [z for z in (1, 3, 35, 129, 201, 255, -7, -101, 1001, 127) if qmin <= z <= qmax]
    even = [z for z in (0, 2, 34, 128, 200, 254, -8, -100, 1000, 126) if qmin <= z <= qmax]
    return odd[i % len(odd)], even[(i + 3) % len(even)]
