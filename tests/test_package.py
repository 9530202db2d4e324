"""The package a user installs by name: qlib and its data, nothing of the book, working without a clone.

Run by `make package` after `python -m build` has put an sdist and a wheel in dist/.
"""

from __future__ import annotations

import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DIST = ROOT / "dist"
QLIB_FILES = {
    f"qlib/{p.relative_to(ROOT / 'qlib')}" for p in (ROOT / "qlib").rglob("*") if p.suffix in (".py", ".typed", ".json")
}


def built(pattern: str) -> Path:
    found = sorted(DIST.glob(pattern))
    if not found:
        pytest.skip(f"no {pattern} in dist/: run make package")
    return found[-1]


def test_the_wheel_holds_qlib_and_nothing_of_the_book():
    names = set(zipfile.ZipFile(built("*.whl")).namelist())
    package = {name for name in names if not name.split("/")[0].endswith(".dist-info")}
    assert package == QLIB_FILES, f"extra: {sorted(package - QLIB_FILES)}; missing: {sorted(QLIB_FILES - package)}"
    assert "qlib/py.typed" in package, "the wheel must carry py.typed, so that type checkers read qlib's hints"


def test_the_sdist_holds_qlib_and_no_chapter():
    with tarfile.open(built("*.tar.gz")) as archive:
        names = archive.getnames()
    top = names[0].split("/")[0]
    inside = {name.removeprefix(top + "/") for name in names}
    assert inside >= QLIB_FILES
    assert not any(name.startswith(("book/", "_build/", "binder/")) for name in inside), sorted(inside)[:20]


def test_the_wheel_installs_and_imports_in_a_fresh_environment(tmp_path):
    """pip installs the wheel into a new venv, which sees torch (this one's, through a path file) but not the checkout."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], capture_output=True, text=True
    ).stdout.strip()
    # torch and its dependencies, without this venv's editable qlib (a path added by a .pth is not a site
    # directory: its own .pth files, the editable install's among them, are not read)
    (Path(site) / "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    wheel = built("*.whl")
    install = [python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)]
    subprocess.run(install, check=True, capture_output=True)
    check = (
        "import qlib, torch, pathlib, doctest;"
        f"assert pathlib.Path(qlib.__file__).is_relative_to({site!r}), qlib.__file__;"
        "q = qlib.quantize(torch.tensor([0.5, 1.5, 300.0]), 1.0, 129, torch.quint8);"
        "assert q.tolist() == torch.quantize_per_tensor(torch.tensor([0.5, 1.5, 300.0]), 1.0, 129, torch.quint8)"
        ".int_repr().tolist(), q;"
        "print(qlib.__version__, q.tolist())"
    )
    run = subprocess.run([python, "-W", "ignore", "-c", check], capture_output=True, text=True, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split()[0] in wheel.name
