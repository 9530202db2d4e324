"""Measure how the installed torch release quantizes a few telling inputs.

Run inside one release's throwaway venv by history/sweep.sh; prints ONE JSON
object on stdout and everything else (torch's own warnings and prints) on
stderr. Pure torch + the standard library, so that it runs on every release
from torch 1.13.1 on whatever numpy is (or is not) installed. Every probe is
guarded: an exception records {"error": "..."} and the other probes go on.

Not part of the test suite: see history/README.md.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import struct
import sys
import time
import traceback
import warnings
from fractions import Fraction

warnings.filterwarnings("ignore")
os.environ.setdefault("PYTHONWARNINGS", "ignore")

# Anything written to file descriptor 1 (by Python or by C++ code inside torch)
# goes to stderr; the JSON is written to the saved original stdout at the end.
sys.stdout.flush()
_JSON_FD = os.dup(1)
os.dup2(2, 1)

_T0 = time.monotonic()
import torch  # noqa: E402

IMPORT_SECONDS = round(time.monotonic() - _T0, 2)
warnings.filterwarnings("ignore")

try:
    import torch.ao.quantization as tq

    QUANT_MODULE = "torch.ao.quantization"
except Exception:  # torch releases before the ao namespace
    import torch.quantization as tq

    QUANT_MODULE = "torch.quantization"


# ---------------------------------------------------------------- helpers


def guarded(fn):
    """Run a probe; on an exception return {"error": "..."} instead."""
    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - every failure is data here
        traceback.print_exc(file=sys.stderr)
        return {"error": f"{type(exc).__name__}: {exc}"}


def f32(v: float) -> float:
    """Round a Python float (float64) to the nearest float32."""
    return struct.unpack("f", struct.pack("f", v))[0]


def round_half_even(v) -> int:
    return round(v)  # Python's round() on float and Fraction is ties-to-even


def f32_exact(q: Fraction) -> Fraction:
    """Round an exact rational to the nearest float32, ties to even (normal range)."""
    if q == 0:
        return Fraction(0)
    sign = -1 if q < 0 else 1
    a = abs(q)
    e = a.numerator.bit_length() - a.denominator.bit_length()
    if Fraction(2) ** e > a:
        e -= 1
    ulp = Fraction(2) ** (e - 23)  # 24-bit significand
    return sign * round_half_even(a / ulp) * ulp


def codes(qt) -> list[int]:
    return [int(v) for v in qt.int_repr().flatten().tolist()]


def distinct(qt) -> list[int]:
    """The distinct codes of a tensor whose elements are all the same input."""
    return sorted(set(codes(qt)))


QRANGES = {"quint8": (0, 255), "qint8": (-128, 127), "qint32": (-(2**31), 2**31 - 1)}


def zp_verdict(got: list[int], x: list[float], scale: float, zp: int, dtype: str) -> str:
    lo, hi = QRANGES[dtype]

    def clamp(v: int) -> int:
        return min(max(v, lo), hi)

    after = [clamp(round_half_even(v / scale) + zp) for v in x]
    before = [clamp(round_half_even(v / scale + zp)) for v in x]
    if after == before:
        return "ambiguous"
    if got == after:
        return "after"
    if got == before:
        return "before"
    return "other"


def per_channel(x: torch.Tensor, scale: float, zp: int, dtype):
    return torch.quantize_per_channel(
        x.reshape(1, -1),
        torch.tensor([scale], dtype=torch.float64),
        torch.tensor([zp], dtype=torch.int64),
        0,
        dtype,
    )


# ---------------------------------------------------------------- environment


def cpu_info() -> dict:
    info = {"machine": platform.machine(), "model": None, "flags": None}
    try:
        with open("/proc/cpuinfo") as fh:
            text = fh.read()
        for line in text.splitlines():
            if line.startswith("model name") and info["model"] is None:
                info["model"] = line.split(":", 1)[1].strip()
            if line.startswith("flags") and info["flags"] is None:
                flags = set(line.split(":", 1)[1].split())
                wanted = ("fma", "avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_tile")
                info["flags"] = [f for f in wanted if f in flags]
    except OSError:
        pass
    info["cores"] = os.cpu_count()
    return info


def cpu_capability():
    fn = getattr(getattr(torch.backends, "cpu", None), "get_cpu_capability", None)
    return fn() if fn is not None else None


def fbgemm_header_legacy_default():
    path = os.path.join(os.path.dirname(torch.__file__), "include", "fbgemm", "QuantUtils.h")
    if not os.path.exists(path):
        return None
    with open(path, errors="replace") as fh:
        for line in fh:
            if "bool LEGACY" in line:
                return line.strip()
    return None


# ---------------------------------------------------------------- ties

TIES_X = [0.5, 1.5, 2.5, -0.5, 3.5]


def probe_ties() -> dict:
    x = torch.tensor(TIES_X, dtype=torch.float32)
    out: dict = {"x": TIES_X, "scale": 1.0}
    paths = {
        "per_tensor_quint8": ("quint8", 129, lambda: torch.quantize_per_tensor(x, 1.0, 129, torch.quint8)),
        "per_tensor_qint8": ("qint8", 1, lambda: torch.quantize_per_tensor(x, 1.0, 1, torch.qint8)),
        "per_tensor_qint32": ("qint32", 1, lambda: torch.quantize_per_tensor(x, 1.0, 1, torch.qint32)),
        "per_channel_quint8": ("quint8", 129, lambda: per_channel(x, 1.0, 129, torch.quint8)),
    }
    for name, (dtype, zp, fn) in paths.items():

        def one(dtype=dtype, zp=zp, fn=fn):
            got = codes(fn())
            return {"dtype": dtype, "zero_point": zp, "codes": got, "verdict": zp_verdict(got, TIES_X, 1.0, zp, dtype)}

        out[name] = guarded(one)

    def fake():
        y = torch.fake_quantize_per_tensor_affine(x, 1.0, 129, 0, 255)
        values = [float(v) for v in y.tolist()]
        got = [int(round(v / 1.0)) + 129 for v in values]  # dequantized (q - zp) * scale: exact for scale 1
        return {
            "dtype": "quint8 range (0, 255)",
            "zero_point": 129,
            "values": values,
            "codes": got,
            "verdict": zp_verdict(got, TIES_X, 1.0, 129, "quint8"),
        }

    out["fake_quantize_per_tensor"] = guarded(fake)
    out["zero_point"] = {k: v.get("verdict", "error") for k, v in out.items() if isinstance(v, dict)}
    return out


# ---------------------------------------------------------------- fma


def find_fma_input():
    """Float32 x and a scale whose x*inv + 129 lands just below a float32 midpoint.

    x * inv computed exactly is a*b; a*b + 129 rounded to float64 is exactly
    the float32 midpoint 129.5 - 2**-17, while the exact value lies below it.
    One float32 rounding (FMA) gives 129.5 - 2**-16 and then 129; two
    roundings (or a float64 sum narrowed to float32) give the tie 129.5 and
    then 130.
    """
    target = 0.5 - 2**-17
    for j in range(1, 2**22):
        a = f32(1 + j * 2**-23)
        b = f32(target / a)
        gap = target - a * b  # a*b is exact in float64 (24+24 bits)
        if not (0 < gap < 2**-46):
            continue
        scale = 1.0 / b
        inv = f32(f32(1.0) / f32(scale))
        if inv != b:
            continue
        return a, scale, b
    raise RuntimeError("no input found")


def probe_fma() -> dict:
    a, scale, inv = find_fma_input()
    zp = 129
    exact = Fraction(a) * Fraction(inv) + zp
    fused = round_half_even(f32_exact(exact))
    double = round_half_even(f32(a * inv + zp))
    after = round_half_even(Fraction(a) * Fraction(inv)) + zp
    out: dict = {
        "x": repr(a),
        "scale": repr(scale),
        "inv": repr(inv),
        "zero_point": zp,
        "exact_minus_midpoint": float(exact - (Fraction(259, 2) - Fraction(1, 2**17))),
        "fused": fused,
        "double": double,
        "zero_point_after": after,
    }
    x1 = torch.tensor([a], dtype=torch.float32)
    x64 = torch.full((64,), a, dtype=torch.float32)  # long enough for the vectorized kernel
    paths = {
        "per_tensor_quint8_len1": lambda: codes(torch.quantize_per_tensor(x1, scale, zp, torch.quint8)),
        "per_tensor_quint8_len64": lambda: distinct(torch.quantize_per_tensor(x64, scale, zp, torch.quint8)),
        "per_tensor_qint32_len64": lambda: distinct(torch.quantize_per_tensor(x64, scale, zp, torch.qint32)),
        "per_channel_quint8": lambda: codes(per_channel(x1, scale, zp, torch.quint8)),
    }
    results = {name: guarded(fn) for name, fn in paths.items()}
    out["codes"] = results

    def verdict(got) -> str:
        if isinstance(got, dict):
            return "error"
        values = set(got)
        if len(values) != 1:
            return "other"
        (code,) = values
        if code == double:
            return "two roundings"
        if code == fused:
            return "fused"  # may also be "zero point after": refined below from the ties probe
        return "other"

    out["verdicts"] = {name: verdict(got) for name, got in results.items()}
    main = out["verdicts"]["per_tensor_quint8_len64"]
    out["verdict"] = main
    return out


# ---------------------------------------------------------------- extremes


def probe_extremes() -> dict:
    x = torch.tensor([float("inf"), float("-inf"), 3e38, -3e38], dtype=torch.float32)
    out: dict = {"x": ["inf", "-inf", "3e38", "-3e38"], "scale": 0.1}
    for dtype, name in ((torch.quint8, "quint8"), (torch.qint8, "qint8")):
        zps = (200, 100) if name == "quint8" else (-5, 5)
        for zp in zps:
            out[f"{name}_zp{zp}"] = guarded(
                lambda dtype=dtype, zp=zp: codes(torch.quantize_per_tensor(x, 0.1, zp, dtype))
            )
    # the same on a long tensor (the vectorized path), first four codes
    x64 = x.repeat(16)
    for dtype, name, zp in ((torch.quint8, "quint8", 200), (torch.qint8, "qint8", -5)):
        out[f"{name}_zp{zp}_len64"] = guarded(
            lambda dtype=dtype, zp=zp: codes(torch.quantize_per_tensor(x64, 0.1, zp, dtype))[:4]
        )
    # Every zero point: which ones do not saturate (+inf to qmax, -inf to qmin)?
    for dtype, name, lo, hi in ((torch.quint8, "quint8", 0, 255), (torch.qint8, "qint8", -128, 127)):
        out[f"{name}_every_zero_point"] = guarded(lambda dtype=dtype, lo=lo, hi=hi: scan_zero_points(x, dtype, lo, hi))
    return out


def scan_zero_points(x: torch.Tensor, dtype, lo: int, hi: int) -> dict:
    expected = [hi, lo, hi, lo]
    wrong: dict[str, list[int]] = {}  # codes -> zero points that give them
    for zp in range(lo, hi + 1):
        got = codes(torch.quantize_per_tensor(x, 0.1, zp, dtype))
        if got != expected:
            wrong.setdefault(str(got), []).append(zp)
    return {
        "expected": expected,
        "wrong": {k: ranges(v) for k, v in wrong.items()},
    }


def ranges(values: list[int]) -> list[list[int]]:
    """[1, 2, 3, 7] -> [[1, 3], [7, 7]]."""
    out: list[list[int]] = []
    for v in values:
        if out and out[-1][1] == v - 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


# ---------------------------------------------------------------- forum

FORUM_X = [
    0.95466703, -0.13621272, 0.75253892, 1.57104063, 0.97250885, -0.67004448, -0.58047348, 1.30683446,
    -0.13423979, 0.16391958, -0.71688455, 0.05846110, 1.07569838, -0.06351475, -0.19469638, -0.09430618,
]  # fmt: skip


def observer_result(obs) -> dict:
    scale, zp = obs.calculate_qparams()
    scale_f = float(scale.reshape(-1)[0].item()) if hasattr(scale, "reshape") else float(scale)
    zp_i = int(zp.reshape(-1)[0].item()) if hasattr(zp, "reshape") else int(zp)
    out = {"scale": scale_f, "scale_repr": repr(scale_f), "zero_point": zp_i}
    for attr in ("min_val", "max_val"):
        if hasattr(obs, attr):
            out[attr] = float(getattr(obs, attr).item())
    return out


def probe_forum() -> dict:
    x = torch.tensor(FORUM_X, dtype=torch.float32)
    out: dict = {}

    def hist():
        obs = tq.HistogramObserver(reduce_range=True)
        obs(x)
        res = observer_result(obs)
        total = float(obs.histogram.sum().item())
        res["bins"] = int(obs.histogram.numel())
        res["histogram_total"] = total
        res["int_cast"] = total < 16
        return res

    out["histogram"] = guarded(hist)

    def minmax():
        obs = tq.MinMaxObserver(reduce_range=True)
        obs(x)
        return observer_result(obs)

    out["minmax"] = guarded(minmax)

    def codes_with_hist():
        h = out["histogram"]
        return codes(torch.quantize_per_tensor(x, h["scale"], h["zero_point"], torch.quint8))

    out["codes_histogram_qparams"] = guarded(codes_with_hist)
    return out


# ---------------------------------------------------------------- qconfig


def probe_default_qconfig() -> dict:
    fn = getattr(tq, "get_default_qconfig", None)
    if fn is None:
        return {"error": f"{QUANT_MODULE} has no get_default_qconfig"}
    engines = list(torch.backends.quantized.supported_engines)
    backend = "x86" if "x86" in engines else "fbgemm"
    try:
        qconfig = fn(backend)
    except Exception:  # 'x86' listed but not known to the qconfig helpers
        backend = "fbgemm"
        qconfig = fn(backend)
    act = qconfig.activation()
    out: dict = {"backend": backend, "class": type(act).__name__}
    for attr in ("dtype", "quant_min", "quant_max", "reduce_range", "qscheme", "bins"):
        if hasattr(act, attr):
            v = getattr(act, attr)
            out[attr] = v if isinstance(v, (int, float, bool, type(None))) else str(v)
    return out


# ---------------------------------------------------------------- main


def main() -> dict:
    result: dict = {
        "torch": torch.__version__,
        "requested": os.environ.get("HISTORY_RELEASE"),
        "python": platform.python_version(),
        "quantization_module": QUANT_MODULE,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "install_seconds": float(os.environ["HISTORY_INSTALL_SECONDS"])
        if os.environ.get("HISTORY_INSTALL_SECONDS")
        else None,
        "import_seconds": IMPORT_SECONDS,
    }
    result["cpu"] = guarded(cpu_info)
    result["cpu_capability"] = guarded(cpu_capability)
    result["engines"] = guarded(lambda: list(torch.backends.quantized.supported_engines))
    result["quantized_engine"] = guarded(lambda: torch.backends.quantized.engine)
    result["threads"] = guarded(torch.get_num_threads)
    result["fbgemm_header_legacy_default"] = guarded(fbgemm_header_legacy_default)
    result["ties"] = guarded(probe_ties)
    result["fma"] = guarded(probe_fma)
    # With the zero point added after rounding, the FMA input gives the fused
    # answer too: where the ties probe says "after", say that instead.
    ties_path = {
        "per_tensor_quint8_len1": "per_tensor_quint8",
        "per_tensor_quint8_len64": "per_tensor_quint8",
        "per_tensor_qint32_len64": "per_tensor_qint32",
        "per_channel_quint8": "per_channel_quint8",
    }
    try:
        verdicts = result["fma"]["verdicts"]
        for name, path in ties_path.items():
            if verdicts.get(name) == "fused" and result["ties"]["zero_point"].get(path) == "after":
                verdicts[name] = "zero point after"
        result["fma"]["verdict"] = verdicts["per_tensor_quint8_len64"]
    except (KeyError, TypeError, AttributeError):
        pass
    result["extremes"] = guarded(probe_extremes)
    result["forum"] = guarded(probe_forum)
    result["default_qconfig_x86"] = guarded(probe_default_qconfig)
    return result


if __name__ == "__main__":
    data = main()
    sys.stdout.flush()
    sys.stderr.flush()
    with os.fdopen(_JSON_FD, "w") as out:
        out.write(json.dumps(data, indent=1, sort_keys=False) + "\n")
