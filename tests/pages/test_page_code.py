"""The code each rendered chapter shows runs as printed: top to bottom, in one fresh IPython shell.

A reader copies a page's code cells, collapsed ones included, into a fresh Python and expects them
to run. nbval cannot check that: it also runs the cells the page does not show (tagged
remove-cell or remove-input). This test reads the built HTML (`make book-strict` first), so it
sees exactly what the page shows, and runs it from book/ like a reader of a local checkout.
Only build plumbing may hide: the Colab install cell and cells that only glue numbers into the
text; a shown cell must not call glue().
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# the built book (make book-strict); QLIB_BOOK_HTML points elsewhere, e.g. a build made with --path-output
PAGES = Path(os.environ.get("QLIB_BOOK_HTML", ROOT / "_build" / "html")) / "book"
CHAPTERS = sorted((ROOT / "book").glob("[0-9][0-9]_*.md"))

# Runs in a fresh interpreter: each cell through IPython, as a notebook or a pasted session would.
RUNNER = r"""
import json, sys
from IPython.core.interactiveshell import InteractiveShell

cells = json.load(sys.stdin)
shell = InteractiveShell.instance()
for number, code in enumerate(cells, start=1):
    result = shell.run_cell(code, silent=True)
    error = result.error_before_exec or result.error_in_exec
    if error is not None:
        print(json.dumps({"cell": number, "error": f"{type(error).__name__}: {error}"}), file=sys.stderr)
        sys.exit(1)
"""


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


def test_the_book_is_built():
    assert PAGES.is_dir(), "build the book first: make book-strict"
    assert {md.stem for md in CHAPTERS} <= {page.stem for page in PAGES.glob("*.html")}


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_shown_code_runs_as_printed(md):
    page = PAGES / f"{md.stem}.html"
    if not page.exists():
        pytest.fail(f"{page} is missing: build the book first (make book-strict)")
    cells = shown_code(page)
    assert cells, f"{page.name} shows no code"
    plumbing = [i for i, code in enumerate(cells, start=1) if "glue(" in code or "myst_nb" in code]
    assert not plumbing, f"{md.stem}: shown cells {plumbing} call glue: keep it in cells tagged remove-cell"
    env = {**os.environ, "MPLBACKEND": "Agg", "PYTHONWARNINGS": "ignore"}
    run = subprocess.run(
        [sys.executable, "-c", RUNNER], input=json.dumps(cells), capture_output=True, text=True, cwd=md.parent, env=env
    )
    if run.returncode:
        failure = run.stderr.strip().splitlines()[-1]
        try:
            found = json.loads(failure)
        except json.JSONDecodeError:
            pytest.fail(f"{md.stem}: the shown code did not run: {run.stderr[-2000:]}")
        number = found["cell"]
        pytest.fail(
            f"{md.stem}: shown code cell {number} of {len(cells)} fails when the page's code is run as printed: "
            f"{found['error']}\n--- cell {number} ---\n{cells[number - 1]}"
        )
