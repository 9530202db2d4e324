"""Write qlib's functions and classes as one self-contained Python file to copy into a project.

Run ``python -m qlib.standalone NAME [NAME ...] [-o FILE]``: the file holds the named public
functions or classes and everything of qlib's they use (helpers, constants, argument checks),
copied from qlib's own source, comments included, so there is no second copy to keep in step.
It imports only torch and the standard library, and its header says which qlib version it came
from, which torch releases it is exact with, and its licence (MIT-0: copy it without ceremony).

Explained on the book's API page (``book/api.md``).
"""

from __future__ import annotations

import argparse
import ast
import functools
import pkgutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import qlib

REPOSITORY = "https://github.com/affine-qlib/affine-quantization-book"
LICENCE = """\
MIT No Attribution

Copyright 2026 The qlib authors

Permission is hereby granted, free of charge, to any person obtaining a copy of this
software and associated documentation files (the "Software"), to deal in the Software
without restriction, including without limitation the rights to use, copy, modify,
merge, publish, distribute, sublicense, and/or sell copies of the Software, and to
permit persons to whom the Software is furnished to do so.

THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR IMPLIED,
INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS FOR A
PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR COPYRIGHT
HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER IN AN ACTION
OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN CONNECTION WITH THE
SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE."""


@dataclass
class Definition:
    """One top-level statement of a qlib module that defines ``names``."""

    module: str
    order: int  # position of the module in import order, then of the statement in it
    names: tuple[str, ...]
    source: str  # its text, comments directly above it included, module prefixes removed
    uses: set[tuple[str, str]]  # (module, name) of the qlib definitions it refers to
    runs_at_import: set[tuple[str, str]]  # those needed when the file is imported, not only when called
    imports: set[str]  # names it takes from the standard library or torch
    registers: bool = False  # an operator's entry in qlib.registry (``@register(...)``)


def public_names() -> list[str]:
    """Every name ``qlib`` exports, as it is imported (``qlib.quantize``, ``qlib.HistogramObserver``, ...)."""
    return list(qlib.__all__)


def generate(names: list[str]) -> str:
    """The text of one Python file defining ``names`` (public qlib names) and all they use.

    >>> text = generate(["qrange"])
    >>> "def qrange(" in text and "DTYPE_RANGES" in text and "import qlib" not in text
    True
    """
    unknown = [name for name in names if name not in qlib.__all__]
    if unknown or not names:
        raise ValueError(
            f"unknown name(s) {unknown}: give one or more of qlib's public names: {', '.join(qlib.__all__)}"
        )
    definitions = _definitions()
    by_key = {(d.module, name): d for d in definitions for name in d.names}
    home = {name: module for module, name in by_key}  # first module defining each name, for public names
    for name in names:  # a public name lives where qlib/__init__.py imports it from
        home[name] = _home_module(name)
    needed: list[Definition] = []
    todo = [by_key[(home[name], name)] for name in names]
    while todo:
        definition = todo.pop()
        if definition in needed:
            continue
        needed.append(definition)
        todo.extend(by_key[key] for key in sorted(definition.uses))
        if "OPERATORS" in definition.names:  # the table is empty without every operator's entry
            todo.extend(d for d in definitions if d.registers)
    _check_no_clash(needed)
    ordered = _import_order(needed, by_key)
    imports = sorted(set().union(*(d.imports for d in ordered)))
    body = "\n\n\n".join(d.source for d in ordered)
    return _header(names) + "\n".join(_import_lines(imports)) + "\n\n\n" + body + "\n"


def _home_module(name: str) -> str:
    """The qlib module (without ``qlib.``) whose definition ``qlib.<name>`` is."""
    init = ast.parse(Path(qlib.__file__).read_text())
    for node in init.body:
        if isinstance(node, ast.ImportFrom) and any((a.asname or a.name) == name for a in node.names):
            assert node.module is not None  # qlib/__init__.py imports absolutely, from qlib.<module>
            return node.module.removeprefix("qlib.")
    raise ValueError(f"qlib/__init__.py does not import {name}")


def _definitions() -> list[Definition]:
    """Every top-level definition of every qlib module, in a stable order."""
    # parsed once per state of the sources: a test writes one file per public name (~100 of them)
    sources = tuple((name, _module_path(name).stat().st_mtime_ns) for name in _module_names())
    return list(_parsed_definitions(sources))


@functools.lru_cache(maxsize=1)
def _parsed_definitions(sources: tuple[tuple[str, int], ...]) -> tuple[Definition, ...]:
    found = []
    for rank, (module_name, _) in enumerate(sources):
        text = _module_path(module_name).read_text()
        tree = ast.parse(text)
        qlib_modules, qlib_names, outside = _module_imports(tree)
        lines = text.splitlines(keepends=True)
        top_level = _top_level_names(tree)
        for position, node in enumerate(tree.body):
            names = _defined(node)
            if not names:
                continue
            used = _used_names(node) | _example_names(node)
            keys = {(module_name, n) for n in used & top_level if n not in names}
            keys |= {qlib_names[n] for n in used if n in qlib_names}
            keys |= _module_attribute_uses(node, qlib_modules)
            runs = _import_time_names(node)
            found.append(
                Definition(
                    module=module_name,
                    order=rank * 10_000 + position,
                    names=names,
                    source=_source_with_comments(node, lines, set(qlib_modules)),
                    uses=keys,
                    runs_at_import={key for key in keys if key[1] in runs},
                    imports={outside[n] for n in used if n in outside},
                    registers=_registers(node),
                )
            )
    return tuple(found)


def _module_names() -> list[str]:
    return sorted(info.name for info in pkgutil.iter_modules(qlib.__path__) if info.name != "standalone")


def _module_path(name: str) -> Path:
    return Path(qlib.__file__).parent / f"{name}.py"


def _module_imports(tree: ast.Module) -> tuple[dict[str, str], dict[str, tuple[str, str]], dict[str, str]]:
    """qlib modules imported as modules (``from qlib import checks``), qlib names imported
    (alias -> (module, name)), and the statement importing each other name."""
    modules, names, outside = {}, {}, {}
    for node in tree.body:
        if isinstance(node, ast.ImportFrom) and node.module == "__future__":
            continue
        if isinstance(node, ast.ImportFrom) and node.module == "qlib":
            modules.update({alias.asname or alias.name: alias.name for alias in node.names})
        elif isinstance(node, ast.ImportFrom) and node.module is not None and node.module.startswith("qlib."):
            for alias in node.names:
                names[alias.asname or alias.name] = (node.module.removeprefix("qlib."), alias.name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                alias_text = f" as {alias.asname}" if alias.asname else ""
                outside[alias.asname or alias.name] = f"from {node.module} import {alias.name}{alias_text}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                alias_text = f" as {alias.asname}" if alias.asname else ""
                outside[alias.asname or alias.name] = f"import {alias.name}{alias_text}"
    return modules, names, outside


def _import_lines(statements: list[str]) -> list[str]:
    """``from __future__``, then the standard library's imports, then torch's, merged per module."""
    merged: dict[str, set[str]] = {}
    plain = set()
    for statement in statements:
        if statement.startswith("from "):
            _, module, _, name = statement.split(" ", 3)
            merged.setdefault(module, set()).add(name)
        else:
            plain.add(statement)
    lines = sorted(plain) + [f"from {m} import {', '.join(sorted(n))}" for m, n in sorted(merged.items())]
    is_torch = [line.split()[1].split(".")[0] == "torch" for line in lines]
    standard = [line for line, torchy in zip(lines, is_torch, strict=True) if not torchy]
    third = [line for line, torchy in zip(lines, is_torch, strict=True) if torchy]
    groups = [group for group in (["from __future__ import annotations"], standard, third) if group]
    return [line for group in groups for line in [*group, ""]][:-1]


def _defined(node: ast.stmt) -> tuple[str, ...]:
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return (node.name,)
    if isinstance(node, ast.Assign):
        names: list[str] = []
        for target in node.targets:
            elements = target.elts if isinstance(target, ast.Tuple) else [target]
            names.extend(e.id for e in elements if isinstance(e, ast.Name))
        return tuple(names)
    if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
        return (node.target.id,)
    return ()


def _registers(node: ast.stmt) -> bool:
    """Whether ``node`` is a function decorated with ``@register(...)``: an entry of qlib.registry's table."""
    return isinstance(node, ast.FunctionDef) and any(
        isinstance(d, ast.Call) and isinstance(d.func, ast.Name) and d.func.id == "register"
        for d in node.decorator_list
    )


def _top_level_names(tree: ast.Module) -> set[str]:
    return {name for node in tree.body for name in _defined(node)}


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _example_names(node: ast.stmt) -> set[str]:
    """Names the docstring's examples use (``>>>`` lines), so that the examples run in the file too."""
    if not isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        return set()
    lines = [
        line.strip()[4:]
        for line in (ast.get_docstring(node) or "").splitlines()
        if line.strip().startswith((">>> ", "... "))
    ]
    try:
        return _used_names(ast.parse("\n".join(lines)))
    except SyntaxError:
        return set()


def _module_attribute_uses(node: ast.AST, modules: dict[str, str]) -> set[tuple[str, str]]:
    """``checks.scale_value`` -> ``("checks", "scale_value")`` for qlib modules imported as modules."""
    return {
        (modules[n.value.id], n.attr)
        for n in ast.walk(node)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules
    }


def _import_time_names(node: ast.stmt) -> set[str]:
    """Names evaluated when the definition itself runs: decorators, defaults, bases, values."""
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
        parts: list[ast.AST] = list(node.decorator_list)
        if isinstance(node, ast.FunctionDef):
            parts += node.args.defaults + [d for d in node.args.kw_defaults if d is not None]
        else:
            parts += node.bases
            for item in node.body:  # class attributes and field defaults run at import
                if isinstance(item, (ast.Assign, ast.AnnAssign)) and item.value is not None:
                    parts.append(item.value)
        return set().union(*(_used_names(p) for p in parts)) if parts else set()
    return _used_names(node)


def _source_with_comments(node: ast.stmt, lines: list[str], modules: set[str]) -> str:
    """The statement's text with the comment lines right above it, ``module.`` prefixes removed."""
    first = node.lineno - 1
    if isinstance(node, (ast.FunctionDef, ast.ClassDef)) and node.decorator_list:
        first = node.decorator_list[0].lineno - 1
    while first > 0 and lines[first - 1].lstrip().startswith("#"):
        first -= 1
    end = node.end_lineno
    text_lines = lines[first:end]
    cuts = sorted(
        (  # ast.parse gives every node its end column (typeshed allows None for hand-made nodes)
            (n.value.lineno - 1 - first, n.value.col_offset, cast(int, n.value.end_col_offset) + 1)
            for n in ast.walk(node)
            if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in modules
        ),
        reverse=True,
    )
    for row, start, stop in cuts:  # right to left, so earlier offsets stay valid
        line = text_lines[row]
        text_lines[row] = line[:start] + line[stop:]
    return "".join(text_lines).rstrip()


def _check_no_clash(needed: list[Definition]) -> None:
    seen: dict[str, Definition] = {}
    for definition in needed:
        for name in definition.names:
            other = seen.get(name)
            if other is not None and other is not definition:
                raise RuntimeError(
                    f"qlib.{other.module} and qlib.{definition.module} both define {name}: "
                    "rename one so that a standalone file can hold both"
                )
            seen[name] = definition


def _import_order(needed: list[Definition], by_key: dict[tuple[str, str], Definition]) -> list[Definition]:
    """Source order, moved so that what a definition needs at import time comes before it."""
    ordered: list[Definition] = []
    visiting: set[int] = set()

    def place(definition: Definition, called: bool = False) -> None:
        if definition in ordered or id(definition) in visiting:
            return
        visiting.add(id(definition))
        for key in sorted(definition.runs_at_import):
            place(by_key[key], called=True)
        if called:  # it runs at import time (a decorator, say): what it uses must be there by then
            for key in sorted(definition.uses):
                place(by_key[key], called=True)
        ordered.append(definition)

    for definition in sorted(needed, key=lambda d: d.order):
        place(definition)
    return ordered


def _header(names: list[str]) -> str:
    releases = " and ".join(qlib.SUPPORTED_RELEASES)
    wrapped_names = ", ".join(names)
    return (
        f'"""{wrapped_names}: from qlib {qlib.__version__}, as one self-contained file.\n\n'
        f"Exact, bit for bit, with torch {releases} on x86 CPUs: functions that reproduce a kernel take\n"
        "release=None (the installed torch) or a release such as '2.14'; qlib.probe() in the full\n"
        "library tells which arithmetic another torch uses.\n"
        f"Generated by `python -m qlib.standalone {' '.join(names)}` from qlib's own source,\n"
        f"{REPOSITORY} (folder qlib/),\nwhere the book explains every function.\n"
        "Needs only torch and the standard library.\n\n"
        f"SPDX-License-Identifier: MIT-0\n\n{LICENCE}\n"
        '"""\n\n'
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m qlib.standalone",
        description="Write qlib's public functions and classes, with all they use, as one Python file.",
    )
    parser.add_argument("names", nargs="+", metavar="NAME", help=f"one or more of: {', '.join(qlib.__all__)}")
    parser.add_argument("-o", "--output", help="file to write (default: standard output)")
    args = parser.parse_args(argv)
    try:
        text = generate(args.names)
    except ValueError as error:
        parser.error(str(error))
    if args.output:
        Path(args.output).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
