"""Run a Python script on an emulated AVX2-only CPU: `qemu-x86_64 -cpu Haswell` hides AVX-512 and VNNI.

The tests that need it skip, with the reason, where Debian's qemu-user is not installed (CI installs it).
"""

from __future__ import annotations

import os
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import pytest


def run_on_haswell(script: str, payload: object, tmp_path: Path, timeout: int = 600) -> object:
    """What ``script`` writes to the pickle file ``sys.argv[2]``, given ``payload`` pickled in ``sys.argv[1]``,
    run by this interpreter under ``qemu-x86_64 -cpu Haswell`` on one thread."""
    qemu = shutil.which("qemu-x86_64")
    if qemu is None:
        pytest.skip("qemu-x86_64 is not installed (Debian: apt-get install qemu-user); the AVX2 emulation needs it")
    source, given, out = tmp_path / "run.py", tmp_path / "in.pkl", tmp_path / "out.pkl"
    source.write_text(script)
    given.write_bytes(pickle.dumps(payload))
    done = subprocess.run(
        [qemu, "-cpu", "Haswell", sys.executable, str(source), str(given), str(out)],
        capture_output=True, text=True, timeout=timeout, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return pickle.loads(out.read_bytes())
