"""Numbers in sentences: counts with their nouns, as qlib's reports and the book's text print them.

Explained on the book's API page (``book/api.md``).
"""

from __future__ import annotations


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
