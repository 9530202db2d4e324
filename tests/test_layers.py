"""qlib's modules keep to the layer map in qlib/__init__.py's docstring (no torch needed)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

QLIB = Path(__file__).resolve().parent.parent / "qlib"


def layer_map() -> dict[str, int]:
    """Module name -> layer number, read from the map in qlib/__init__.py's docstring."""
    doc = ast.get_docstring(ast.parse((QLIB / "__init__.py").read_text()))
    layers = {}
    for number, modules in re.findall(r"^\s+(\d) \w+\s+(.+)$", doc, flags=re.MULTILINE):
        for module in modules.split():
            layers[module] = int(number)
    return layers


def imports(module: str) -> list[tuple[str, str, int]]:
    """(qlib module, name or "", line) of every import of qlib in ``module``."""
    found = []
    for node in ast.walk(ast.parse((QLIB / f"{module}.py").read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qlib":
            if node.module == "qlib":  # from qlib import checks
                found += [(alias.name, "", node.lineno) for alias in node.names]
            else:
                found += [(node.module.removeprefix("qlib."), alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.Import):
            found += [
                (a.name.removeprefix("qlib.") or "qlib", "", node.lineno)
                for a in node.names
                if a.name.startswith("qlib")
            ]
    return found


MODULES = sorted(p.stem for p in QLIB.glob("*.py") if p.stem != "__init__")


def test_the_map_names_every_module_once():
    layers = layer_map()
    assert sorted(layers) == MODULES, "qlib/__init__.py's layer map and the files in qlib/ differ"


@pytest.mark.parametrize("module", MODULES)
def test_no_import_from_a_higher_layer_or_of_a_private_name(module):
    layers = layer_map()
    top = max(layers.values())
    for target, name, line in imports(module):
        where = f"qlib/{module}.py:{line} imports {target}{'.' + name if name else ''}"
        if target == "qlib":  # the package itself: only the top layer may read it
            assert layers[module] == top, f"{where}: only layer {top} may import the package"
            continue
        assert target in layers, f"{where}: {target} is not a qlib module"
        assert layers[target] <= layers[module], (
            f"{where}: layer {layers[target]} is above {module}'s layer {layers[module]}"
        )
        assert not name.startswith("_"), f"{where}: a private name of another module"


def test_the_check_can_fail(tmp_path, monkeypatch):
    """A module of layer 0 importing one of layer 4 is caught (the check above is not vacuous)."""
    fake = tmp_path / "qlib"
    fake.mkdir()
    for path in QLIB.glob("*.py"):
        (fake / path.name).write_text(path.read_text())
    (fake / "numerics.py").write_text("from qlib.integer_model import run\nfrom qlib.quant import _private\n")
    monkeypatch.setattr(__import__(__name__), "QLIB", fake)
    with pytest.raises(AssertionError, match="is above"):
        test_no_import_from_a_higher_layer_or_of_a_private_name("numerics")
