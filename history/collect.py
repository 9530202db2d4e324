"""Collect history/results/torch-*.json into qlib/data/torch_releases.json (read by qlib.releases.history()).

Standard library only. Sorts the releases by version, writes the data file the
book's chapters read, and prints a plain-text table of the results.

Usage: python3 history/collect.py
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results"
OUT = HERE.parent / "qlib" / "data" / "torch_releases.json"

ZP_PATHS = (
    ("per_tensor_quint8", "quint8"),
    ("per_tensor_qint8", "qint8"),
    ("per_tensor_qint32", "qint32"),
    ("per_channel_quint8", "per ch"),
    ("fake_quantize_per_tensor", "fake"),
)


def version_key(version: str) -> tuple:
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", version)
    if match is None:
        return (float("inf"), version)
    return tuple(int(g or 0) for g in match.groups()) + (version,)


def load() -> list[dict]:
    releases = []
    for path in RESULTS.glob("torch-*.json"):
        with path.open() as fh:
            data = json.load(fh)
        data.setdefault("requested", path.stem.removeprefix("torch-"))
        releases.append(data)
    releases.sort(key=lambda r: version_key(r.get("requested") or r.get("torch", "")))
    return releases


def get(data, *keys, default="-"):
    for key in keys:
        if not isinstance(data, dict) or key not in data:
            return default
        data = data[key]
    return data


def short(value) -> str:
    if isinstance(value, dict) and "error" in value:
        return "error"
    return str(value)


def wrong_zero_points(r: dict, dtype: str) -> str:
    """The zero points at which +-inf and +-3e38 do not saturate, e.g. "128..255"."""
    scan = get(r, "extremes", f"{dtype}_every_zero_point")
    if not isinstance(scan, dict):
        return "?"
    if "error" in scan:
        return "error"
    spans = sorted(span for spans in scan["wrong"].values() for span in spans)
    return ",".join(f"{lo}..{hi}" if lo != hi else str(lo) for lo, hi in spans) or "none"


def row(r: dict) -> list[str]:
    if "error" in r and "ties" not in r:
        return [r.get("requested") or r["torch"], "not measured: " + r["error"][:70]]
    zps = get(r, "ties", "zero_point", default={})
    zp_text = " ".join(short(zps.get(key, "-")) for key, _ in ZP_PATHS)
    inf = get(r, "extremes", "quint8_zp200")
    inf_text = short(inf[0]) if isinstance(inf, list) else short(inf)
    ninf_text = f"{wrong_zero_points(r, 'quint8')}; {wrong_zero_points(r, 'qint8')}"
    hist = get(r, "forum", "histogram", default={})
    mm = get(r, "forum", "minmax", default={})
    if "error" in hist:
        hist_text = "error"
    else:
        hist_text = (
            f"{hist.get('scale', float('nan')):.7g} {hist.get('zero_point', '-')} {hist.get('histogram_total', '-'):g}"
        )
    mm_text = "error" if "error" in mm else f"{mm.get('scale', float('nan')):.7g} {mm.get('zero_point', '-')}"
    return [
        r["torch"],
        zp_text,
        short(get(r, "fma", "verdict")),
        inf_text,
        ninf_text,
        hist_text,
        mm_text,
    ]


HEADER = [
    "release",
    "zero point (" + ", ".join(name for _, name in ZP_PATHS) + ")",
    "fma",
    "+inf quint8 zp200",
    "no saturation at zp (quint8; qint8)",
    "hist scale zp total",
    "minmax scale zp",
]


def table(releases: list[dict]) -> str:
    rows = [HEADER] + [row(r) for r in releases]
    widths = [max(len(r[i]) for r in rows if len(r) > i and len(r) == len(HEADER)) for i in range(len(HEADER))]
    lines = []
    for i, r in enumerate(rows):
        if len(r) == len(HEADER):
            lines.append(" | ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        else:
            lines.append(" | ".join(r))
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)


def main() -> int:
    releases = load()
    if not releases:
        print(f"no results in {RESULTS}: run history/sweep.sh first", file=sys.stderr)
        return 1
    dates = [r["measured_at"] for r in releases if r.get("measured_at")]
    machine: dict = {}
    for r in releases:  # the CPU as the newest measured release reports it
        if isinstance(r.get("cpu"), dict) and "error" not in r["cpu"]:
            machine = dict(r["cpu"])
            machine["cpu_capability"] = r.get("cpu_capability")
            machine["python"] = r.get("python")
    data = {
        "measured_on": max(dates)[:10] if dates else None,
        "machine": machine,
        "releases": releases,
    }
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(data, indent=1) + "\n")
    print(f"wrote {OUT.relative_to(HERE.parent)}: {len(releases)} releases, measured on {data['measured_on']}")
    print(f"machine: {machine.get('model')} ({machine.get('machine')}, {machine.get('cpu_capability')})")
    print(table(releases))
    return 0


if __name__ == "__main__":
    sys.exit(main())
