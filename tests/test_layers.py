"""The core (`turnout/`, but not `turnout/app/`) never imports the layers above it.

Layers point one way: the command line and the demo (`turnout/app/`) → flows → tasks → plugins →
core. The walk reads every core module with `ast`: `import x`, `from x import y` (relative ones
resolved), and module names passed as strings to `importlib.import_module`, `__import__` or
`runpy.run_module`, wherever they sit (inside functions too).

A second walk keeps every function in the four packages to at most five positional parameters;
past that, arguments go by name (issue 11: a call with six positional values is a swap waiting
to happen).
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from conftest import ROOT

CORE = ROOT / "turnout"
UPPER = ("flows", "tasks", "plugins", "turnout.flows", "turnout.tasks", "turnout.plugins", "turnout.app")
_BY_STRING = {"import_module", "__import__", "run_module"}


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_names(path: Path) -> list[tuple[int, str]]:
    """(line, module name) for every import in `path`, string-named ones included."""
    tree = ast.parse(path.read_text(), str(path))
    package = _module_name(path).rsplit(".", 1)[0] if path.name != "__init__.py" else _module_name(path)
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.append((node.lineno, mod))
            found += [(node.lineno, f"{mod}.{a.name}") for a in node.names]
        elif isinstance(node, ast.Call):
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else func.id if isinstance(func, ast.Name) else ""
            if (
                name in _BY_STRING
                and node.args
                and isinstance(node.args[0], ast.Constant)
                and isinstance(node.args[0].value, str)
            ):
                found.append((node.lineno, node.args[0].value))
    return found


def upward_imports(root: Path) -> list[str]:
    """Every import of a layer above the core, from a core module under `root`."""
    bad = []
    for path in sorted(root.rglob("*.py")):
        if "app" in path.relative_to(root).parts[:1]:
            continue
        for line, name in imported_names(path):
            if any(name == u or name.startswith(u + ".") for u in UPPER):
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {name}")
    return bad


def test_the_core_imports_no_flow_task_plugin_or_app():
    assert upward_imports(CORE) == []


def test_the_walk_sees_every_kind_of_import(tmp_path, monkeypatch):
    """The checker itself: each way of importing upward is caught (a test that cannot fail is a defect)."""
    core = tmp_path / "turnout"
    (core / "app").mkdir(parents=True)
    (core / "app" / "cli.py").write_text("import flows.blue_green\n")  # the outer layer may
    (core / "a.py").write_text("def f():\n    from flows import blue_green\n")
    (core / "b.py").write_text("import importlib\nimportlib.import_module('tasks.deploy')\n")
    (core / "c.py").write_text("__import__('plugins.nginx')\n")
    (core / "d.py").write_text("from .app import cli\n")
    (core / "e.py").write_text("from turnout.runtime import open_runtime\nimport json\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    bad = upward_imports(core)
    assert sorted({b.split(":")[0] for b in bad}) == ["turnout/a.py", "turnout/b.py", "turnout/c.py", "turnout/d.py"], (
        bad
    )


MAX_POSITIONAL = 5
PACKAGES = ("turnout", "flows", "tasks", "plugins")


def long_positional(root: Path) -> list[str]:
    """Every function under `root`'s packages taking more than five positional parameters (self/cls not counted)."""
    bad = []
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text(), str(path))):
                if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    continue
                names = [a.arg for a in node.args.posonlyargs + node.args.args]
                if names[:1] in (["self"], ["cls"]):
                    names = names[1:]
                if len(names) > MAX_POSITIONAL:
                    bad.append(f"{path.relative_to(root)}:{node.lineno} {node.name} takes {len(names)} positional")
    return bad


def test_no_function_takes_more_than_five_positional_parameters():
    assert long_positional(ROOT) == []


def test_the_parameter_walk_catches_a_long_signature(tmp_path):
    """The checker itself: six positional parameters fail, five plus keyword-only ones and self do not."""
    for package in PACKAGES:
        (tmp_path / package).mkdir()
    (tmp_path / "flows" / "a.py").write_text("async def f(a, b, c, d, e, g=1):\n    pass\n")
    (tmp_path / "tasks" / "b.py").write_text("def ok(a, b, c, d, e, *, g, h):\n    pass\n")
    (tmp_path / "plugins" / "c.py").write_text("class C:\n    def m(self, a, b, c, d, e):\n        pass\n")
    (tmp_path / "turnout" / "d.py").write_text("class D:\n    def m(self, a, b, c, d, e, g):\n        pass\n")
    bad = long_positional(tmp_path)
    assert [b.split(" ")[0] for b in bad] == ["turnout/d.py:2", "flows/a.py:1"], bad
