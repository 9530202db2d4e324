"""Two small fixes to the book's HTML pages, as a local Sphinx extension (see _config.yml).

1. A ".md" entry in each chapter's download menu. The book renders each chapter from its committed
   .ipynb (which holds the verified outputs), so sphinx-book-theme offers only that file. The paired
   MyST-markdown file (the one authors edit; jupytext opens it as a notebook) is copied next to it
   in ``_build/html/_sources/`` and linked from the menu.
2. Each script once. sphinx-thebe 0.3.1 and sphinx-togglebutton add their inline set-up scripts
   twice per page (at two priorities), and the second copy of thebe's throws "Identifier 'THEBE_JS_URL' has already been declared" in every browser
   (tests/browser catches JavaScript errors).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from sphinx.application import Sphinx


def add_md_download(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Runs after sphinx-book-theme has filled ``header_buttons`` (its handlers have priority 501)."""
    paired_md = Path(app.srcdir, pagename).with_suffix(".md")
    if context.get("page_source_suffix") != ".ipynb" or not paired_md.is_file():
        return
    target = Path(app.outdir, "_sources", pagename).with_suffix(".md")
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(paired_md, target)
    for group in context.get("header_buttons", []):
        if group.get("label") == "download-buttons":
            group["buttons"].insert(
                1,
                {
                    "type": "link",
                    "url": f"{context['pathto']('_sources', 1)}/{pagename}.md",
                    "text": ".md",
                    "tooltip": "Download the MyST-markdown source (opens as a notebook with jupytext)",
                    "icon": "fas fa-file-lines",
                    "label": "download-md-button",
                },
            )


def each_script_once(app: Sphinx, pagename: str, templatename: str, context: dict[str, Any], doctree: Any) -> None:
    """Drop repeated scripts (same file, or same inline body, and same attributes), keeping the first."""
    scripts = context.get("script_files")
    if not scripts:
        return
    first: dict[tuple, Any] = {}
    for script in sorted(scripts, key=lambda js: getattr(js, "priority", 500)):
        # an inline script has filename None or "" depending on who added it
        key = (getattr(script, "filename", script) or "", tuple(sorted(getattr(script, "attributes", {}).items())))
        first.setdefault(key, script)
    kept = set(map(id, first.values()))
    scripts[:] = [script for script in scripts if id(script) in kept]


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("html-page-context", add_md_download, priority=502)
    app.connect("html-page-context", each_script_once, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
