"""The API page's downloads: each public qlib name as one self-contained file, made at build time.

On every build, ``python -m qlib.standalone NAME`` is run for each of qlib's public names and the
file written to ``book/_standalone/NAME.py`` (not committed; .gitignore), which the API page offers
with MyST's ``{download}`` role. The page also reads qlib's version and supported releases from
here (``{{ qlib_version }}``, ``{{ qlib_releases }}``), so that it never states them by hand.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sphinx.application import Sphinx


def write_files(app: Sphinx, config: Any) -> None:
    import qlib
    from qlib.standalone import generate

    folder = Path(app.srcdir) / "book" / "_standalone"
    folder.mkdir(parents=True, exist_ok=True)
    for name in qlib.__all__:
        target = folder / f"{name}.py"
        text = generate([name])
        if not target.exists() or target.read_text() != text:  # unchanged files keep their time stamps
            target.write_text(text)
    substitutions = dict(config.myst_substitutions or {})
    substitutions["qlib_version"] = qlib.__version__
    substitutions["qlib_releases"] = " and ".join(qlib.SUPPORTED_RELEASES)
    config.myst_substitutions = substitutions


def setup(app: Sphinx) -> dict[str, Any]:
    app.connect("config-inited", write_files)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
