"""Every public qlib function documents itself: a runnable example and the chapter that explains it."""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil

import pytest

import qlib

MODULES = [
    importlib.import_module(f"qlib.{info.name}")
    for info in pkgutil.iter_modules(qlib.__path__)
    if info.name != "checks"
]
# functions and classes (constants such as SUPPORTED_RELEASES are documented on the API page)
PUBLIC = [(name, getattr(qlib, name)) for name in qlib.__all__ if callable(getattr(qlib, name))]


@pytest.mark.parametrize("module", MODULES, ids=lambda m: m.__name__)
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0, f"{result.failed} docstring example(s) failed in {module.__name__}"


@pytest.mark.parametrize("name, obj", PUBLIC, ids=[name for name, _ in PUBLIC])
def test_public_api_has_example_and_chapter(name, obj):
    doc = inspect.getdoc(obj) or ""
    assert ">>>" in doc, f"qlib.{name} has no example in its docstring"
    assert "Chapter" in doc and "book/" in doc, f"qlib.{name} does not say which chapter explains it"


def test_no_module_has_the_name_of_a_public_name():
    """qlib.quantize must be the function: a module of that name would hide it (or be hidden)."""
    modules = {info.name for info in pkgutil.iter_modules(qlib.__path__)}
    assert not modules & set(qlib.__all__)
    assert all(not inspect.ismodule(getattr(qlib, name)) for name in qlib.__all__)
