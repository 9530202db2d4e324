"""Numbers in sentences and tables: counts with their nouns, and the tables of qlib's reports.

Explained on the book's API page (``book/api.md``).
"""

from __future__ import annotations

import html


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` with its noun, singular or plural, thousands separated: ``no pair``, ``1 pair``, ``1,234 pairs``.

    ``plural`` is the plural where it is not ``noun + "s"``.

    >>> count(0, "pair"), count(1, "pair"), count(1234, "pair"), count(2, "match", "matches")
    ('no pairs', '1 pair', '1,234 pairs', '2 matches')
    """
    many = plural if plural is not None else noun + "s"
    if n == 0:
        return f"no {many}"
    return f"1 {noun}" if n == 1 else f"{n:,} {many}"


def glue(**values: object) -> None:
    """Put each value into the page's text under its name (MyST-NB's ``glue``, shown nowhere in the cell).

    A chapter's hidden cells call it; ``{glue:text}`name``` in the prose then prints the value.
    Outside a notebook build it does nothing.

    >>> glue(steps=7)
    """
    try:
        from myst_nb import glue as glue_one
    except ImportError:  # a reader's plain Python: nothing to glue into
        return
    for name, value in values.items():
        glue_one(name, value, display=False)


def text_table(head: list[str], body: list[list[str]], note: str | None = None) -> str:
    """A plain-text table: columns padded to their widest cell, and ``note`` under it.

    >>> print(text_table(["layer", "exact"], [["fc", "yes"]]))
    layer  exact
    fc     yes
    """
    widths = [max(len(row[i]) for row in [head, *body]) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in [head, *body]]
    return "\n".join(lines + ([note] if note else []))


def html_table(head: list[str], body: list[list[str]], note: str | None = None) -> str:
    """The same table as HTML, as a notebook shows a report (class ``qlib-report``), ``note`` under it.

    >>> html_table(["layer"], [["fc"]])
    '<table class="qlib-report"><tr><th>layer</th></tr><tr><td>fc</td></tr></table>'
    """
    rows = ["<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"]
    rows += ["<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in body]
    note_html = f"<p>{html.escape(note)}</p>" if note else ""
    return '<table class="qlib-report">' + "".join(rows) + "</table>" + note_html
