"""Fixtures for the browser test: the built book served on localhost, and Debian's Chromium.

Run by `make browser` (part of `make test`) after the strict book build. Without Chromium the
tests are skipped, unless REQUIRE_BROWSER=1 (set by .ci/run), when they fail instead.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
SCREENSHOTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As the machine's own probe starts it: no GPU, no sandbox (CI runs as root), and none of the
# background connections to Google's hosts that a closed network refuses.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORTS = {"laptop": {"width": 1366, "height": 800}, "phone": {"width": 390, "height": 844}}


def _unavailable(reason: str) -> None:
    if os.environ.get("REQUIRE_BROWSER") == "1":
        pytest.fail(f"REQUIRE_BROWSER=1 but {reason}", pytrace=False)
    pytest.skip(reason)


@dataclass(frozen=True)
class Page:
    """A page of the book, as the table of contents lists it."""

    docname: str  # "book/02_affine_map"
    source: Path  # the file the page is built from (.ipynb when there is one, else .md)
    numbered: bool  # in a part with `numbered: true`
    level: int = 0  # 0 for a chapter, 1 for its sections, ...

    @property
    def html(self) -> str:
        return f"{self.docname}.html"

    @property
    def is_chapter(self) -> bool:
        return self.source.suffix == ".ipynb"


def _source(docname: str) -> Path:
    for suffix in (".ipynb", ".md"):
        path = ROOT / f"{docname}{suffix}"
        if path.exists():
            return path
    raise FileNotFoundError(f"_toc.yml lists {docname}, which has neither .ipynb nor .md")


def _entries(items: list[dict], numbered: bool, level: int = 0) -> Iterator[Page]:
    for item in items:
        yield Page(item["file"], _source(item["file"]), numbered, level)
        yield from _entries(item.get("sections", []), numbered, level + 1)


def book_pages() -> list[Page]:
    """Every page of the book, in reading order, from _toc.yml (the only place the order lives)."""
    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    pages = [Page(toc["root"], _source(toc["root"]), False)]
    for part in toc.get("parts", []):
        pages.extend(_entries(part["chapters"], bool(part.get("numbered", False))))
    return pages


def book_config() -> dict:
    return yaml.safe_load((ROOT / "_config.yml").read_text())


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format, *args):  # noqa: A002  (the base class's signature)
        pass


@pytest.fixture(scope="session")
def site() -> Iterator[str]:
    """Base URL of _build/html, served by a plain http.server on a free localhost port."""
    if not (HTML / "index.html").exists():
        pytest.fail("_build/html/index.html is missing: build the book first (make book)", pytrace=False)
    handler = functools.partial(_QuietHandler, directory=str(HTML))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/"
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture(scope="session")
def browser():
    if not os.access(CHROMIUM, os.X_OK):
        _unavailable(f"no Chromium at {CHROMIUM} (apt-get install -y chromium)")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _unavailable("the playwright package is not installed (pip install -r requirements.txt)")
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="session")
def screenshots() -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    return SCREENSHOTS
