"""The rendered book, opened page by page in a real browser (Debian's Chromium, via Playwright).

For every page in _toc.yml, at a laptop width and at a phone width: the page title and chapter
heading (with its number in numbered parts); every image loaded; on chapter pages every code cell
and its stored outputs present; no JavaScript error, no failed request to the book's own files,
and no request to the internet other than the CDNs in BLOCKED (aborted on purpose, so the test
behaves the same with or without a network); nothing wider than the phone's screen. At the laptop
width also: every internal link answers 200 and its #fragment exists; the repository, launch
(Binder, Colab) and download (.ipynb, .md) buttons point at the chapter's files in the repository.
Search finds each chapter by its title and by a word of its text. A full-page screenshot of each
page goes to artifacts/screenshots/.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from urllib.parse import quote, urldefrag, urlsplit

import jupytext
import pytest

from .conftest import ROOT, VIEWPORTS, Page, book_config, book_pages

PAGES = book_pages()
CHAPTERS = [p for p in PAGES if p.is_chapter]
CONFIG = book_config()

# Requests to the internet that the book's pages make and that this test aborts, by URL prefix.
# Anything else outside localhost is reported as an unexpected request.
BLOCKED = {
    "https://cdn.jsdelivr.net/npm/mathjax@3/": "MathJax typesets the equations (offline, they show as TeX)",
    "https://unpkg.com/thebe@": "Thebe runs live code when a reader asks for it",
}


def _blocked(url: str) -> bool:
    return any(url.startswith(prefix) for prefix in BLOCKED)


# Whatever sticks out of the phone's screen without a scroll bar of its own (the page itself, or an
# image that is neither on screen nor inside a horizontally scrolling box that is).
NOT_ON_SCREEN = """() => {
  const fits = el => el.getBoundingClientRect().right <= window.innerWidth + 1;
  const bad = document.documentElement.scrollWidth > window.innerWidth ? ["the page"] : [];
  for (const img of document.querySelectorAll("article img")) {
    if (fits(img)) continue;
    let box = img.parentElement;
    while (box && !["auto", "scroll"].includes(getComputedStyle(box).overflowX)) box = box.parentElement;
    if (!box || !fits(box)) bad.push(img.src);
  }
  return bad;
}"""
# A figure narrower than this on a phone (and than its own natural width) has unreadable labels.
READABLE_PX = 500
SHRUNK_FIGURES = f"""() => Array.from(document.querySelectorAll("article figure img"))
  .filter(img => img.getBoundingClientRect().width + 1 < Math.min(img.naturalWidth, {READABLE_PX}))
  .map(img => img.src)"""


@contextmanager
def open_page(browser, url: str, viewport: str) -> Iterator[tuple[object, list[str]]]:
    """The loaded page and the list of problems seen while loading it."""
    context = browser.new_context(viewport=VIEWPORTS[viewport], service_workers="block")
    page = context.new_page()
    problems: list[str] = []
    local = url[: url.index("/", len("http://")) + 1]

    def route(request_route):
        target = request_route.request.url
        if target.startswith(local):
            request_route.continue_()
        elif _blocked(target):
            request_route.abort("internetdisconnected")
        else:
            problems.append(f"request to an unexpected external URL: {target}")
            request_route.abort("blockedbyclient")

    def console(message):
        if message.type != "error":
            return
        source = message.location.get("url", "")
        if message.text.startswith("Failed to load resource") and _blocked(source):
            return
        problems.append(f"console error: {message.text} (at {source})")

    page.route("**/*", route)
    page.on("pageerror", lambda error: problems.append(f"JavaScript error: {error}"))
    page.on("console", console)

    def response(answer):
        if answer.status >= 400:
            problems.append(f"HTTP {answer.status} for {answer.url}")

    def failed(request):
        if request.url.startswith(local):
            problems.append(f"request failed: {request.url} ({request.failure})")

    page.on("response", response)
    page.on("requestfailed", failed)
    try:
        page.goto(url, wait_until="load")
        page.wait_for_function("Array.from(document.images).every(img => img.complete)")
        yield page, problems
    finally:
        context.close()


@cache
def heading(page: Page) -> str:
    """The page's first level-1 heading in its source, as plain text."""
    for cell in jupytext.read(page.source).cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return re.sub(r"[`*_]", "", line[2:]).strip()
    raise AssertionError(f"{page.source.name} has no '# ' heading")


def chapter_number(page: Page) -> str:
    """'3. ' for the third chapter of the numbered parts (numbering runs on across parts), else ''."""
    if not page.numbered or page.level:
        return ""
    numbered = [p for p in PAGES if p.numbered and not p.level]
    return f"{numbered.index(page) + 1}. "


def code_cells(page: Page) -> list:
    """The chapter's code cells that the book shows (all but those tagged remove-cell)."""
    notebook = jupytext.read(page.source)
    return [c for c in notebook.cells if c.cell_type == "code" and "remove-cell" not in c.metadata.get("tags", [])]


@cache
def fetch(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as error:
        return error.code, b""


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
@pytest.mark.parametrize("book_page", PAGES, ids=lambda p: p.docname)
def test_page(browser, site, screenshots, book_page, viewport):
    with open_page(browser, site + book_page.html, viewport) as (page, problems):
        page.screenshot(path=screenshots / f"{book_page.docname.replace('/', '-')}-{viewport}.png", full_page=True)

        number, text = chapter_number(book_page), heading(book_page)
        assert page.title() == f"{number}{text} \u2014 {CONFIG['title']}"
        h1 = page.evaluate(
            """() => { const h = document.querySelector("article h1").cloneNode(true);
                       h.querySelectorAll(".headerlink").forEach(a => a.remove());
                       return h.textContent.trim(); }"""
        )
        assert h1 == f"{number}{text}".strip()

        not_loaded = page.evaluate(
            "Array.from(document.images).filter(i => !(i.complete && i.naturalWidth > 0)).map(i => i.src)"
        )
        assert not not_loaded, f"images that did not load: {not_loaded}"

        if book_page.is_chapter:
            cells = code_cells(book_page)
            shown = page.locator("article div.cell").count()
            assert shown == len(cells), f"{len(cells)} code cells in {book_page.source.name}, {shown} on the page"
            inputs = page.locator("article div.cell_input").all_text_contents()  # hide-input ones too
            assert all(code.strip() for code in inputs), "an empty code cell on the page"
            with_outputs = [c for c in cells if c.outputs and "remove-output" not in c.metadata.get("tags", [])]
            outputs = page.locator("article div.cell_output")
            assert outputs.count() == len(with_outputs), (
                f"{len(with_outputs)} cells with stored outputs in {book_page.source.name}, "
                f"{outputs.count()} outputs on the page"
            )
            for i in range(outputs.count()):
                output = outputs.nth(i)
                assert (output.text_content() or "").strip() or output.locator("img").count(), f"output {i} is empty"
            figures = sum("figure" in c.metadata.get("mystnb", {}) for c in cells)
            captions = page.locator("article figure figcaption .caption-number").all_inner_texts()
            assert len(captions) == figures, f"{figures} figures in the source, captions on the page: {captions}"

        if viewport == "phone":
            assert not page.evaluate(NOT_ON_SCREEN), f"wider than the phone's screen: {page.evaluate(NOT_ON_SCREEN)}"
            shrunk = page.evaluate(SHRUNK_FIGURES)
            assert not shrunk, f"figures shrunk below {READABLE_PX} px, their labels unreadable: {shrunk}"
        assert not problems, "\n".join(problems)


@cache
def page_links(browser, site: str, book_page: Page) -> tuple[list[str], list[str]]:
    """Every link of the page as the browser resolves it and as written: one visit for the two tests below."""
    with open_page(browser, site + book_page.html, "laptop") as (page, problems):
        links = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.href)")
        hrefs = page.evaluate("Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href'))")
        assert not problems, "\n".join(problems)
    return links, hrefs


@pytest.mark.parametrize("book_page", PAGES, ids=lambda p: p.docname)
def test_internal_links_answer(browser, site, book_page):
    links, _ = page_links(browser, site, book_page)
    internal = sorted({link for link in links if link.startswith(site)})
    assert internal, "no internal links at all"
    broken = []
    for link in internal:
        url, fragment = urldefrag(link)
        status, body = fetch(url)
        if status != 200:
            broken.append(f"{link}: HTTP {status}")
        elif fragment and url.endswith(".html") and f'id="{fragment}"'.encode() not in body:
            broken.append(f"{link}: no element with id {fragment!r}")
    assert not broken, f"broken links on {book_page.html}:\n" + "\n".join(broken)


@pytest.mark.parametrize("book_page", CHAPTERS, ids=lambda p: p.docname)
def test_repository_launch_and_download_buttons(browser, site, book_page):
    repository = CONFIG["repository"]["url"].rstrip("/")
    branch = CONFIG["repository"].get("branch", "main")
    org_repo = urlsplit(repository).path.strip("/")
    notebook = f"{book_page.docname}.ipynb"
    _, hrefs = page_links(browser, site, book_page)
    assert repository in hrefs, f"no repository button linking to {repository}"

    binder = [h for h in hrefs if h.startswith(CONFIG["launch_buttons"]["binderhub_url"])]
    colab = [h for h in hrefs if h.startswith(CONFIG["launch_buttons"]["colab_url"])]
    assert len(binder) == 1 and len(colab) == 1, f"launch buttons: Binder {binder}, Colab {colab}"
    binder_path = re.fullmatch(rf".*/v2/gh/{org_repo}/{branch}\?urlpath=(?:lab/)?tree/(.+)", binder[0])
    colab_path = re.fullmatch(rf".*/github/{org_repo}/blob/{branch}/(.+)", colab[0])
    assert binder_path and colab_path, f"launch buttons not for {org_repo}@{branch}: {binder[0]}, {colab[0]}"
    for launched in (binder_path[1], colab_path[1]):
        assert launched == quote(notebook), f"launches {launched}, not this chapter's {notebook}"
        assert (ROOT / launched).is_file(), f"launches {launched}, which is not in the repository"

    for suffix in (".ipynb", ".md"):
        download = [h for h in hrefs if h.endswith(f"_sources/{book_page.docname}{suffix}")]
        assert len(download) == 1, f"no download button for the chapter's {suffix}"
        status, body = fetch(site + f"_sources/{book_page.docname}{suffix}")
        assert status == 200
        assert body == (ROOT / f"{book_page.docname}{suffix}").read_bytes(), (
            f"download {suffix} is not the repository's"
        )


def _distinctive_word(chapter: Page) -> str:
    """The longest plain-prose word of the chapter that no other page's source contains."""

    def words(page: Page) -> set[str]:
        text = " ".join(c.source for c in jupytext.read(page.source).cells if c.cell_type == "markdown")
        text = re.sub(r"```.*?```|`[^`]*`|\{[^}]*\}|\$[^$]*\$|\([^)]*\)|\[[^\]]*\]", " ", text, flags=re.S)
        return {w.lower() for w in re.findall(r"(?<![\w-])[A-Za-z]{6,}(?![\w-])", text)}

    others = set().union(*(words(p) for p in PAGES if p != chapter))
    candidates = sorted(words(chapter) - others, key=lambda w: (-len(w), w))
    assert candidates, f"{chapter.source.name} has no word of its own to search for"
    return candidates[0]


@pytest.mark.parametrize("book_page", CHAPTERS, ids=lambda p: p.docname)
def test_search_finds_the_chapter(browser, site, book_page):
    for query in (heading(book_page), _distinctive_word(book_page)):
        with open_page(browser, site + "search.html?q=" + quote(query), "laptop") as (page, problems):
            hit = page.locator(f"#search-results ul.search li a[href*='{book_page.docname}.html']").first
            try:
                hit.wait_for(timeout=15_000)
            except Exception as error:  # playwright's TimeoutError
                summary = page.locator("#search-results").inner_text()
                raise AssertionError(f"searching {query!r} does not find {book_page.html}: {summary!r}") from error
            assert not problems, "\n".join(problems)


def test_the_front_door_opens_the_book(browser, site):
    with open_page(browser, site, "laptop") as (page, problems):
        page.wait_for_url(f"**/{PAGES[0].html}")
        assert page.title().startswith(heading(PAGES[0]))
        captions = page.locator("nav.bd-links p.caption").all_inner_texts()
        assert captions, "the sidebar shows no parts"
        assert not problems, "\n".join(problems)
