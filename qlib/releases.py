"""Which torch release's arithmetic a qlib function reproduces.

Explained in the book chapter "Rounding" (``book/04_rounding``), which shows
what changed between the releases.

qlib models torch's CPU kernels on x86-64 with FBGEMM (a CPU with AVX2 and
FMA) for the releases in ``SUPPORTED_RELEASES``, each measured against that
release on every test run. Every function that reproduces a kernel takes
``release=None``: the installed torch's release, or one named explicitly to
see what another release computes.
"""

from __future__ import annotations

import json
import platform
import re
from importlib import resources
from typing import Any

import torch

#: The torch releases whose arithmetic qlib reproduces on x86 CPUs, each tested on every change.
SUPPORTED_RELEASES = ("2.13", "2.14")
# torch.backends.cpu.get_cpu_capability() on a CPU whose kernels qlib models (AVX2 implies FMA there)
X86_CAPABILITIES = ("AVX2", "AVX512")


def torch_release(release: str | None = None) -> str:
    """The release (``"2.13"`` or ``"2.14"``) whose arithmetic to reproduce.

    ``release=None`` means the installed torch; it must be a supported release
    on an x86-64 CPU with AVX2, where torch runs the FBGEMM kernels qlib
    models. A release can be given as ``"2.14"``, ``"2.14.1"`` or a full
    version string such as ``"2.14.1+cpu"``; naming one explicitly always
    works, on any machine, because qlib's models are plain tensor arithmetic.
    Anything else raises ``ValueError`` saying what is supported and how to
    find out what your torch does (``qlib.probe()``).

    Chapter: "Rounding" (book/04_rounding).

    >>> torch_release("2.14.1+cpu")
    '2.14'
    >>> torch_release("2.13")
    '2.13'
    """
    if release is None:
        found = _major_minor(torch.__version__)
        if found not in SUPPORTED_RELEASES:
            raise ValueError(
                f"qlib reproduces torch {' and '.join(SUPPORTED_RELEASES)}; the installed torch is "
                f"{torch.__version__}. Run qlib.probe() to see which arithmetic it uses, or pass "
                f"release='2.14' (or '2.13') to reproduce that release"
            )
        machine, capability = platform.machine(), torch.backends.cpu.get_cpu_capability()
        if machine.lower() not in ("x86_64", "amd64") or capability not in X86_CAPABILITIES:
            raise ValueError(
                f"qlib reproduces torch's x86-64 CPU kernels (FBGEMM, AVX2 and FMA); this machine is "
                f"{machine} with CPU capability {capability}, where torch may round differently. Run "
                f"qlib.probe() to see which arithmetic it uses, or pass release='{found}' to reproduce "
                "an x86 CPU's integers anyway"
            )
        return found
    if not isinstance(release, str):
        raise TypeError(f"release must be a string such as '2.14', or None; got {type(release).__name__}")
    found = _major_minor(release)
    if found not in SUPPORTED_RELEASES:
        raise ValueError(
            f"qlib reproduces torch {' and '.join(SUPPORTED_RELEASES)} (x86-64 CPU); got release={release!r}. "
            "qlib.probe() tells which arithmetic an installed torch uses"
        )
    return found


def _major_minor(version: str) -> str | None:
    match = re.match(r"\s*(\d+)\.(\d+)(\.\d+)?([+.\w-]*)$", version)
    if match is None or "a0" in version or "dev" in version:
        return None  # not a release (e.g. a nightly "2.15.0.dev20260601" or a source build "2.15.0a0+git...")
    return f"{match[1]}.{match[2]}"


def history() -> dict[str, Any]:
    """What every torch release from 1.13.1 to 2.14.1 computes, as measured by installing each one.

    qlib ships the measurements (``qlib/data/torch_releases.json``, written by the repository's
    ``history/`` scripts: ``make history``): ``"releases"`` lists one entry per release with
    its ``"torch"`` version and what each quantize path did on inputs built to tell the
    arithmetics apart; ``"machine"`` is the CPU they ran on.

    Chapter: "Rounding" (book/04_rounding).

    >>> [entry["torch"].split("+")[0] for entry in history()["releases"]][-2:]
    ['2.13.0', '2.14.1']
    """
    return json.loads(resources.files("qlib").joinpath("data/torch_releases.json").read_text())
