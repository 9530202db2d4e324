"""The code each rendered chapter shows is the code that runs: nothing it needs hides.

A reader copies a page's code cells, collapsed ones included, into a fresh Python and expects them
to run. nbval runs every cell of the notebook, the hidden ones too, so on its own it cannot prove
that. Two things together do:

- this test reads the built HTML (`make book-strict` first) and checks that the page shows exactly
  the notebook's code cells except the Colab install cell, cells that glue numbers into the text and
  cells that check the chapter against torch (first line `# check`), and that no shown cell glues;
- nbval's kernels (the Makefile's IPython profile, tools/ipython) drop every name such a hidden cell
  binds once it has run, so a shown cell that used one fails under nbval.

So nbval's one run of each notebook is also a run of exactly the code the page shows, in order.
"""

from __future__ import annotations

import json
import os
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the built book (make book-strict); QLIB_BOOK_HTML points elsewhere, e.g. a build made with --path-output
PAGES = Path(os.environ.get("QLIB_BOOK_HTML", ROOT / "_build" / "html")) / "book"
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))
HIDING = {"remove-cell", "remove-input"}


class CodeCells(HTMLParser):
    """The text of every <pre> inside a MyST-NB cell_input div, in page order."""

    def __init__(self) -> None:
        super().__init__()
        self.cells: list[str] = []
        self.depth = 0  # nesting depth of <div> inside the current cell_input, 0 outside
        self.in_pre = False
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        classes = dict(attrs).get("class", "") or ""
        if tag == "div" and self.depth:
            self.depth += 1
        elif tag == "div" and "cell_input" in classes.split():
            self.depth = 1
        elif tag == "pre" and self.depth:
            self.in_pre, self.text = True, []

    def handle_endtag(self, tag):
        if tag == "pre" and self.in_pre:
            self.in_pre = False
            self.cells.append("".join(self.text))
        elif tag == "div" and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if self.in_pre:
            self.text.append(data)


def shown_code(page: Path) -> list[str]:
    parser = CodeCells()
    parser.feed(page.read_text())
    return parser.cells


def notebook_cells(md: Path) -> list[tuple[str, set[str]]]:
    """(source, tags) of every code cell of the chapter's notebook, in order."""
    notebook = json.loads(md.with_suffix(".ipynb").read_text())
    return [
        ("".join(cell["source"]), set(cell.get("metadata", {}).get("tags", [])))
        for cell in notebook["cells"]
        if cell["cell_type"] == "code"
    ]


def test_the_book_is_built():
    assert PAGES.is_dir(), "build the book first: make book-strict"
    assert {md.stem for md in CHAPTERS} <= {page.stem for page in PAGES.glob("*.html")}


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_only_the_colab_cell_and_glue_cells_hide(md):
    cells = notebook_cells(md)
    for number, (source, tags) in enumerate(cells, start=1):
        hidden = bool(tags & HIDING)
        colab = number == 1 and "import qlib" in source
        if hidden and not colab:
            assert "glue(" in source or source.startswith("# check"), (
                f"{md.stem}: code cell {number} is hidden ({', '.join(sorted(tags & HIDING))}) but neither glues "
                "numbers into the text nor starts with '# check' (a check against torch): show it (hide-input "
                f"collapses it), or move what it does into a shown cell\n{source}"
            )
        if not hidden:
            assert "glue(" not in source and "myst_nb" not in source, (
                f"{md.stem}: shown code cell {number} calls glue: keep glue in cells tagged remove-cell"
            )


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_the_page_shows_the_notebooks_shown_cells(md):
    page = PAGES / f"{md.stem}.html"
    if not page.exists():
        pytest.fail(f"{page} is missing: build the book first (make book-strict)")
    expected = [source.strip() for source, tags in notebook_cells(md) if not tags & HIDING]
    shown = [code.strip() for code in shown_code(page)]
    assert shown == expected, f"{md.stem}: the page's code cells are not the notebook's shown cells"
