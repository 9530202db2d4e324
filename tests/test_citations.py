"""Every PR, issue, commit and source file the book cites is a link, pinned to what the claim is about.

Checked in the prose of the chapters and the book's other pages (code cells are code): a mention
such as "PR #181067", "issue 83672" or `QuantizedOpKernels.cpp` must be the text of a markdown
link to GitHub, the link must name the same number or file, and links into a repository's files
must be pinned to a release tag or a commit, never to a branch that moves.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted((ROOT / "book").glob("*.md"))

LINK = re.compile(r"\[((?:[^\[\]]|\[[^\]]*\])*)\]\((https?://[^)\s]+)\)")
NUMBER = re.compile(r"(?:\bPRs?|\b[Ii]ssues?|\bpull request)\s+#?(\d{2,})|(?<![\w/#])#(\d{3,})\b")
SOURCE = re.compile(r"`([\w./-]*\.(?:cpp|cc|cu|h|cuh)|[\w-]+/[\w./-]+\.py)`")
PINNED = re.compile(r"https://github\.com/[\w.-]+/[\w.-]+/(?:blob|tree)/(v\d+\.\d+(?:\.\d+)?|[0-9a-f]{40})/")
# Fenced blocks whose content is code, not prose; other directives ({exercise}, {admonition}, ...) hold prose.
CODE_DIRECTIVES = ("{code-cell}", "{math}", "{eval-rst}")


def prose(page: Path) -> str:
    """The page's text without its YAML header, code cells, code blocks and math."""
    text = page.read_text()
    if text.startswith("---\n"):
        text = text[text.index("\n---\n", 4) + 5 :]
    kept, open_fences, skipping = [], [], None
    for line in text.splitlines():
        fence = re.match(r"^(`{3,}|:{3,})(.*)$", line.strip())
        if skipping is not None:
            if fence and fence.group(1) == skipping and not fence.group(2).strip():
                skipping = None
            continue
        if fence and open_fences and fence.group(1) == open_fences[-1] and not fence.group(2).strip():
            open_fences.pop()  # the end of a directive that holds prose
            continue
        if fence:
            name = fence.group(2).strip()
            if name.startswith("{") and not name.startswith(CODE_DIRECTIVES):
                open_fences.append(fence.group(1))
            else:
                skipping = fence.group(1)  # code: skip to its closing fence
            continue
        kept.append(line)
    return "\n".join(kept)


def problems(text: str) -> list[str]:
    found = []
    for match in LINK.finditer(text):
        label, url = match.groups()
        if "github.com" in url and ("/blob/" in url or "/tree/" in url) and not PINNED.match(url):
            found.append(f"link {url} is not pinned to a tag or a commit")
        for number in NUMBER.finditer(label):
            n = number.group(1) or number.group(2)
            if not re.search(rf"/(?:pull|issues|pulls)/{n}\b", url):
                found.append(f"[{label}] cites #{n} but links {url}")
        for source in SOURCE.finditer(label):
            name = source.group(1).split("/")[-1]
            if "github.com" not in url or name not in url:
                found.append(f"[{label}] names {name} but links {url}")
    rest = LINK.sub(" ", text)
    for number in NUMBER.finditer(rest):
        found.append(f"{number.group(0)!r} is not a link")
    for source in SOURCE.finditer(rest):
        found.append(f"{source.group(0)} is not a link")
    return found


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_citation_is_a_pinned_link(page):
    found = problems(prose(page))
    assert not found, f"{page.name}:\n" + "\n".join(found)


def test_prose_keeps_directive_text_and_drops_code(tmp_path):
    page = tmp_path / "page.md"
    page.write_text(
        "---\nkernelspec: {}\n---\nBefore PR #1\n```{code-cell} ipython3\nx = 1  # PR #2\n```\n"
        "```{exercise}\n:label: e\n\nSee PR #3.\n```\n```bash\nmake  # PR #4\n```\n"
        ":::{dropdown} History\nPR #5\n:::\nAfter PR #6\n"
    )
    assert re.findall(r"PR #(\d)", prose(page)) == ["1", "3", "5", "6"]


def test_the_checker_catches_what_it_should():
    assert problems("see PR #181067 and `src/QuantUtils.cc`") == [
        "'PR #181067' is not a link",
        "`src/QuantUtils.cc` is not a link",
    ]
    assert problems("[PR 181067](https://github.com/pytorch/pytorch/pull/181067)") == []
    assert problems("[PR 5624](https://github.com/pytorch/pytorch/pull/181067)")
    assert problems("[`a/b.cpp`](https://github.com/pytorch/pytorch/blob/main/a/b.cpp)") == [
        "link https://github.com/pytorch/pytorch/blob/main/a/b.cpp is not pinned to a tag or a commit"
    ]
    assert problems("[`a/b.cpp`](https://github.com/pytorch/pytorch/blob/v2.14.1/a/b.cpp)") == []
