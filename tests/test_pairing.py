"""Every chapter's .md (what authors edit) and .ipynb (what nbval runs and the book renders) agree."""

from __future__ import annotations

from pathlib import Path

import jupytext
import pytest
import yaml

BOOK = Path(__file__).resolve().parent.parent / "book"
CHAPTERS = sorted(BOOK.glob("[0-9][0-9]_*.md"))


def cells(path: Path) -> list[tuple[str, str]]:
    notebook = jupytext.read(path)
    return [(cell.cell_type, cell.source.strip()) for cell in notebook.cells]


def test_there_are_chapters():
    assert CHAPTERS, "no book/NN_*.md chapters found"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_md_and_ipynb_hold_the_same_cells(md):
    ipynb = md.with_suffix(".ipynb")
    assert ipynb.exists(), f"{ipynb.name} is missing: run `make chapter NB=book/{md.name}`"
    text, stored = cells(md), cells(ipynb)
    assert len(text) == len(stored), f"{md.name} has {len(text)} cells, {ipynb.name} {len(stored)}"
    for i, (a, b) in enumerate(zip(text, stored, strict=True)):
        assert a == b, f"cell {i} differs between {md.name} and {ipynb.name}: run `make chapter NB=book/{md.name}`"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.name)
def test_every_code_cell_has_stored_outputs(md):
    notebook = jupytext.read(md.with_suffix(".ipynb"))
    unexecuted = [i for i, c in enumerate(notebook.cells) if c.cell_type == "code" and c.execution_count is None]
    assert not unexecuted, f"cells {unexecuted} of {md.stem}.ipynb were never executed"


def test_no_orphan_notebooks_and_every_chapter_in_the_toc():
    orphans = [nb.name for nb in BOOK.glob("[0-9][0-9]_*.ipynb") if not nb.with_suffix(".md").exists()]
    assert not orphans, f"notebooks without a .md source: {orphans}"
    toc = yaml.safe_load((BOOK.parent / "_toc.yml").read_text())
    files = {ch["file"] for part in toc["parts"] for ch in part["chapters"]}
    missing = [md.stem for md in CHAPTERS if f"book/{md.stem}" not in files]
    assert not missing, f"chapters missing from _toc.yml: {missing}"
