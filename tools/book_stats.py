"""Measure the built book as a reader meets it: per chapter, its rendered text, its shown code and its checks.

    python3 tools/book_stats.py [_build/html]

Prints, for each chapter page: kilobytes of rendered text (the page's main column, code and outputs
included), shown code cells and the median lines in one, shown lines wider than 80 characters,
`assert` lines in shown cells, and how often "2.13" appears. tests/pages/test_book_stats.py holds
the book to its limits with the same functions.
"""

from __future__ import annotations

import statistics
import sys
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


class _Page(HTMLParser):
    """The text of a page's main column, and the text of each shown code cell."""

    def __init__(self) -> None:
        super().__init__()
        self.skip = 0
        self.text: list[str] = []
        self.cells: list[str] = []
        self.depth = 0  # nesting inside a cell_input div
        self.in_pre = False
        self.pre: list[str] = []

    def handle_starttag(self, tag, attrs):
        classes = (dict(attrs).get("class") or "").split()
        if tag in ("script", "style"):
            self.skip += 1
        if tag == "div" and self.depth:
            self.depth += 1
        elif tag == "div" and "cell_input" in classes:
            self.depth = 1
        elif tag == "pre" and self.depth:
            self.in_pre, self.pre = True, []

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self.skip -= 1
        if tag == "pre" and self.in_pre:
            self.in_pre = False
            self.cells.append("".join(self.pre))
        elif tag == "div" and self.depth:
            self.depth -= 1

    def handle_data(self, data):
        if not self.skip:
            self.text.append(data)
        if self.in_pre:
            self.pre.append(data)


def measure(page: Path) -> dict[str, float]:
    html = page.read_text()
    main = html[html.find("<main") : html.find("</main>")]
    parser = _Page()
    parser.feed(main)
    text = " ".join(" ".join(parser.text).split())
    lines = [line for cell in parser.cells for line in cell.splitlines()]
    sizes = [len([line for line in cell.splitlines() if line.strip()]) for cell in parser.cells]
    return {
        "kb": len(text.encode()) / 1000,
        "cells": len(parser.cells),
        "median_lines": statistics.median(sizes) if sizes else 0,
        "wide_lines": sum(len(line) > 80 for line in lines),
        "asserts": sum(line.lstrip().startswith("assert ") for line in lines),
        "mentions_2_13": text.count("2.13"),
    }


def chapters(html: Path) -> list[Path]:
    return sorted((html / "book").glob("[0-9][0-9]_*.html"))


def main(argv: list[str]) -> int:
    html = Path(argv[0]) if argv else ROOT / "_build" / "html"
    rows = [(page.stem, measure(page)) for page in chapters(html)]
    print(f"{'chapter':16}{'KB':>7}{'cells':>7}{'median':>8}{'wide':>6}{'asserts':>9}{'2.13':>6}")
    for name, m in rows:
        print(
            f"{name:16}{m['kb']:7.1f}{m['cells']:7d}{m['median_lines']:8.1f}{m['wide_lines']:6d}"
            f"{m['asserts']:9d}{m['mentions_2_13']:6d}"
        )
    kbs = [m["kb"] for _, m in rows]
    print(f"{'mean':16}{statistics.mean(kbs):7.1f}   shown asserts in all: {sum(m['asserts'] for _, m in rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
