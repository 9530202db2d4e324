"""Loaded by the kernels nbval starts (the Makefile sets IPYTHONDIR): a cell that glues numbers into the
chapter's text keeps none of the names it binds.

The rendered page hides those cells, so a reader who runs the page's code never runs them; if a
shown cell used a name only a glue cell had bound, the reader would meet a NameError that a
notebook run would never show. Here the glue cell's bindings are rolled back once it has run, so
nbval's run of the notebook is also a run of exactly the code the page shows (tests/pages checks
that only glue cells, and the Colab cell, are hidden).
"""

from IPython import get_ipython

_shell = get_ipython()
_before: dict | None = None
_glue_names: dict = {}  # what glue cells bound, for later glue cells only


def _pre_run_cell(info) -> None:
    global _before
    code = info.raw_cell or ""
    if "glue(" not in code and not code.startswith("# check"):
        _before = None
        return
    _before = dict(_shell.user_ns)
    # earlier glue cells' names, where no shown cell has bound the name since
    _shell.user_ns.update({name: value for name, value in _glue_names.items() if name not in _before})


def _post_run_cell(result) -> None:
    global _before
    if _before is None:
        return
    namespace = _shell.user_ns
    for name in list(namespace):
        if name.startswith("_") or name in ("In", "Out", "exit", "quit", "get_ipython"):
            continue
        if name not in _before:
            _glue_names[name] = namespace.pop(name)
        elif namespace[name] is not _before[name]:
            _glue_names[name] = namespace[name]
            namespace[name] = _before[name]
    _before = None


if _shell is not None:
    _shell.events.register("pre_run_cell", _pre_run_cell)
    _shell.events.register("post_run_cell", _post_run_cell)
