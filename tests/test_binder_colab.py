"""Binder and Colab stay in step with the book.

- binder/ (what repo2docker builds for Binder) pins every package exactly as requirements.txt
  does, takes torch's CPU build, installs qlib, and provides every module a chapter imports.
- Every chapter starts with the same hidden Colab cell, which installs qlib (and the pins the
  chapters need) from the repository set in _config.yml only when `import qlib` fails: it does
  nothing and prints nothing where qlib is installed (a local checkout, CI, Binder).

To add a chapter, copy its Colab cell, unchanged, from book/02_affine_map.md: the first code
cell, tagged remove-cell, right after "What you need".
"""

from __future__ import annotations

import ast
import importlib.metadata
import os
import subprocess
import sys
from pathlib import Path

import jupytext
import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parent.parent
BINDER = ROOT / "binder"
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))
MODEL = ROOT / "book" / "02_affine_map.md"  # the chapter whose Colab cell the others copy
CONFIG = yaml.safe_load((ROOT / "_config.yml").read_text())
REPOSITORY = CONFIG["repository"]["url"].rstrip("/")
BRANCH = CONFIG["repository"].get("branch", "main")
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
# What Binder must provide for the chapters: the library's own dependencies and the chapters' glue.
BINDER_NEEDS = {"torch", "numpy", "matplotlib", "jupytext", "myst-nb"}
# Modules a chapter may import that repo2docker's Jupyter itself provides.
JUPYTER_PROVIDES = {"IPython", "ipykernel", "matplotlib_inline", "ipywidgets"}


def read_requirements(path: Path) -> tuple[dict[str, Requirement], list[str]]:
    """Requirements by canonical name, and the option lines (--extra-index-url ...)."""
    reqs, options = {}, []
    for raw in path.read_text().splitlines():
        line = raw.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("-r "):  # an included file
            included, _ = read_requirements(path.parent / line.removeprefix("-r ").strip())
            reqs.update(included)
            continue
        if line.startswith("-"):
            options.append(line)
            continue
        req = Requirement(line)
        assert canonicalize_name(req.name) not in reqs, f"{path.name} lists {req.name} twice"
        reqs[canonicalize_name(req.name)] = req
    return reqs, options


def exact_pin(req: Requirement, where: str) -> Version:
    specs = list(req.specifier)
    assert len(specs) == 1 and specs[0].operator == "==", f"{where}: {req} is not an exact == pin"
    return Version(specs[0].version)


def test_binder_pins_the_same_versions_as_requirements_txt():
    book, _ = read_requirements(ROOT / "requirements.txt")
    binder, options = read_requirements(BINDER / "requirements.txt")
    missing = BINDER_NEEDS - set(binder)
    assert not missing, f"binder/requirements.txt lacks {sorted(missing)}"
    for name, req in binder.items():
        assert name in book, f"binder/requirements.txt pins {name}, which requirements.txt does not: pin it there too"
        ours, theirs = exact_pin(req, "binder/requirements.txt"), exact_pin(book[name], "requirements.txt")
        assert ours.public == theirs.public, f"{name}: binder pins {ours}, requirements.txt {theirs}"
    torch = exact_pin(binder["torch"], "binder/requirements.txt")
    assert torch.local == "cpu", f"binder must take torch's CPU build ({torch.public}+cpu), not {torch}"
    assert f"--extra-index-url {CPU_INDEX}" in options, f"binder/requirements.txt needs --extra-index-url {CPU_INDEX}"


def test_binder_installs_qlib_and_uses_the_tested_python():
    post_build = BINDER / "postBuild"
    assert os.access(post_build, os.X_OK), "binder/postBuild must be executable"
    text = post_build.read_text()
    assert text.startswith("#!/bin/bash") and "set -euo pipefail" in text
    assert "pip install --no-cache-dir --no-deps -e ." in text, "postBuild must install qlib from the checkout"
    runtime = (BINDER / "runtime.txt").read_text().strip()
    tested = f"python-{sys.version_info.major}.{sys.version_info.minor}"
    assert runtime == tested, f"binder/runtime.txt asks for {runtime}; the book is tested on {tested}"


def imported_modules(md: Path) -> set[str]:
    names = set()
    for cell in jupytext.read(md).cells:
        if cell.cell_type != "code":
            continue
        code = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_binder_provides_every_module_the_chapter_imports(md):
    binder, _ = read_requirements(BINDER / "requirements.txt")
    distributions = importlib.metadata.packages_distributions()
    missing = []
    for module in sorted(imported_modules(md)):
        if module in sys.stdlib_module_names or module == "qlib" or module in JUPYTER_PROVIDES:
            continue
        provided_by = {canonicalize_name(d) for d in distributions.get(module, [])}
        if not provided_by & set(binder):
            missing.append(f"{module} (from {sorted(provided_by) or 'no installed package'})")
    assert not missing, (
        f"{md.name} imports modules Binder would not have: {missing}; pin their package in both "
        "requirements.txt and binder/requirements.txt"
    )


# --- the Colab cell ---------------------------------------------------------------------------


def colab_cell(md: Path):
    code = [cell for cell in jupytext.read(md).cells if cell.cell_type == "code"]
    assert code, f"{md.name} has no code cell"
    return code[0]


def test_every_chapter_has_the_same_colab_cell():
    model = colab_cell(MODEL).source
    differ = [md.name for md in CHAPTERS if colab_cell(md).source != model]
    assert not differ, f"the first code cell of {differ} is not the Colab cell: copy it from {MODEL.name}"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_colab_cell_is_hidden_and_has_no_stored_output(md):
    assert "remove-cell" in colab_cell(md).metadata.get("tags", []), f"{md.name}: tag the Colab cell remove-cell"
    stored = colab_cell(md.with_suffix(".ipynb"))
    assert stored.source == colab_cell(md).source
    assert stored.outputs == [], f"{md.stem}.ipynb: the Colab cell printed something: {stored.outputs}"


def colab_packages(source: str) -> list[str]:
    """The `packages = [...]` the cell installs, read without running it."""
    (node,) = ast.parse(source).body
    assert isinstance(node, ast.Try), "the Colab cell is one try: import qlib / except ImportError: install"
    assigns = [n for n in ast.walk(node) if isinstance(n, ast.Assign) and n.targets[0].id == "packages"]
    return ast.literal_eval(assigns[0].value)


def test_colab_cell_installs_from_this_repository_with_the_books_pins():
    book, _ = read_requirements(ROOT / "requirements.txt")
    packages = colab_packages(colab_cell(MODEL).source)
    assert packages[-1] == f"affine-qlib @ git+{REPOSITORY}@{BRANCH}", (
        f"the Colab cell installs {packages[-1]!r}; _config.yml's repository is {REPOSITORY} ({BRANCH})"
    )
    for spec in packages[:-1]:
        req = Requirement(spec)
        name = canonicalize_name(req.name)
        assert name in book and str(req.specifier) == str(book[name].specifier), f"Colab pins {spec}; {book.get(name)}"
    # Colab has numpy and matplotlib; it lacks the pinned torch, myst-nb's glue and torchao (chapters 11, 12), its
    # own torchvision is built for its own torch, not the pinned one (chapter 10), and its transformers is not the
    # pinned one (chapter 12); onnx, onnxruntime (chapters 14, 16) and executorch (chapters 15, 16) it lacks too,
    # and torch.onnx.export(dynamo=True) translates with onnxscript
    imported = set().union(*(imported_modules(md) for md in CHAPTERS))
    needed = {"torch", "myst-nb"} | {
        package
        for package in ("torchao", "torchvision", "transformers", "onnx", "onnxruntime", "executorch")
        if package in imported
    }
    if "onnx" in needed:
        needed.add("onnxscript")
    assert {canonicalize_name(Requirement(s).name) for s in packages[:-1]} == needed


def run_cell(source: str, monkeypatch, qlib_importable: bool) -> list:
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *args, **kwargs: calls.append((args, kwargs)))
    if not qlib_importable:
        monkeypatch.setitem(sys.modules, "qlib", None)  # makes `import qlib` raise ImportError
    exec(compile(source, "colab-cell", "exec"), {})
    return calls


def test_colab_cell_does_nothing_where_qlib_is_installed(monkeypatch, capsys):
    assert run_cell(colab_cell(MODEL).source, monkeypatch, qlib_importable=True) == []
    assert capsys.readouterr() == ("", "")


def test_colab_cell_installs_qlib_where_it_is_missing(monkeypatch):
    source = colab_cell(MODEL).source
    calls = run_cell(source, monkeypatch, qlib_importable=False)
    expected = [sys.executable, "-m", "pip", "install", "--quiet", *colab_packages(source)]
    assert calls == [((expected,), {"check": True})]


def test_readme_names_no_other_repository():
    text = (ROOT / "README.md").read_text()
    host = REPOSITORY.split("/")[2]
    others = {word.strip("()<>`'\".,") for word in text.split() if host in word} - {REPOSITORY}
    assert not {o for o in others if not o.startswith(REPOSITORY + "/")}, f"README links {others}, not {REPOSITORY}"
