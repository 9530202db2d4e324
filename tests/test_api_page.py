"""The API page documents every public qlib name once, as it is imported, with its one-file download."""

from __future__ import annotations

import re
from pathlib import Path

import qlib

API = (Path(__file__).resolve().parent.parent / "book" / "api.md").read_text()


def test_every_public_name_is_documented_once_with_its_download():
    for name in qlib.__all__:
        headings = re.findall(rf"^### `qlib\.{name}`$", API, flags=re.M)
        assert len(headings) == 1, f"qlib.{name} has {len(headings)} headings on the API page"
        assert f"{{download}}`{name}.py <_standalone/{name}.py>`" in API, f"no download for qlib.{name}"


def test_the_page_documents_nothing_that_is_not_public():
    """Before "Building blocks" (the module helpers chapters call), every heading is a public name."""
    names = API.split("## Building blocks")[0]
    documented = set(re.findall(r"^### `qlib\.(\w+)`$", names, flags=re.M))
    assert documented <= set(qlib.__all__), documented - set(qlib.__all__)
