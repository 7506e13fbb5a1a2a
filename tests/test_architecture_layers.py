"""The import layers of ``kd_plugin``: every import (module level and inside functions) read with ``ast``.

Layers, floor to top; a module may import only its own layer or lower ones:

* L0 ``errors``, ``registry``, ``validation``, ``runtime`` (and the root ``kd_plugin/__init__.py``)
* L1 ``families`` (where each architecture keeps its parts)
* L2 ``masking``, ``losses``, ``student``, ``data``, ``teacher_catalogue``, ``teacher_gguf``, ``optimization``,
  ``objectives``
* L3 ``config``
* L4 ``preparation``, ``evaluation``, ``tracking``, ``export``, ``ablation``
* L5 ``training``
* L6 ``downstream``

Also refused: an import cycle between modules, and a cycle between the packages of one layer (e.g. tracking <->
preparation). Each failure lists every violation as ``file:line: what``.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]
PACKAGE = "kd_plugin"

LAYERS: list[tuple[str, ...]] = [
    ("errors", "registry", "validation", "runtime"),
    ("families",),
    ("masking", "losses", "student", "data", "teacher_catalogue", "teacher_gguf", "optimization", "objectives"),
    ("config",),
    ("preparation", "evaluation", "tracking", "export", "ablation"),
    ("training",),
    ("downstream",),
]


@dataclass(frozen=True)
class Import:
    importer: str  # module name, e.g. kd_plugin.tracking.observers
    imported: str  # the kd_plugin module it names
    path: Path
    line: int

    def where(self, root: Path) -> str:
        return f"{self.path.relative_to(root)}:{self.line}"


def module_files(root: Path, package: str) -> dict[str, Path]:
    """``{module name: file}`` for every ``.py`` file of ``package`` under ``root`` (packages by __init__)."""
    modules = {}
    for path in sorted((root / package).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


def imports_of(module: str, path: Path, modules: dict[str, Path]) -> list[Import]:
    """Every import of ``modules`` that ``path`` makes, wherever it stands (module, function, ``if`` body)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = parts[: len(parts) - (node.level - 1)]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            # `from pkg import sub` names the module pkg.sub when there is one, else a name defined in pkg
            targets = [f"{source}.{a.name}" if f"{source}.{a.name}" in modules else source for a in node.names]
        for target in targets:  # a name that is no module of ours (another library, a missing file) is skipped
            if target in modules and target != module:
                found.append(Import(module, target, path, node.lineno))
    return list(dict.fromkeys(found))  # `from m import a, b` is one import of m


def all_imports(root: Path, package: str) -> tuple[dict[str, Path], list[Import]]:
    modules = module_files(root, package)
    return modules, [imp for module, path in modules.items() for imp in imports_of(module, path, modules)]


def unit_of(module: str, package: str) -> str:
    """The layered unit a module belongs to: ``kd_plugin.tracking.observers`` -> ``tracking``."""
    rest = module[len(package) + 1 :]
    return rest.split(".")[0] if rest else ""


def layer_of(module: str, package: str, layers: list[tuple[str, ...]]) -> int | None:
    unit = unit_of(module, package)
    if unit == "":
        return 0  # the root __init__: imported before anything else, so it may import only the floor
    return next((i for i, units in enumerate(layers) if unit in units), None)


def _cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for other in sorted(edges.get(node, ())):
            if other not in index:
                visit(other)
                low[node] = min(low[node], low[other])
            elif other in on_stack:
                low[node] = min(low[node], index[other])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return sorted(found)


def violations(root: Path, package: str, layers: list[tuple[str, ...]]) -> dict[str, list[str]]:
    """Every violation, by kind: ``unlayered``, ``upward``, ``module cycle``, ``package cycle``."""
    modules, imports = all_imports(root, package)
    out: dict[str, list[str]] = {"unlayered": [], "upward": [], "module cycle": [], "package cycle": []}
    for module, path in modules.items():
        if layer_of(module, package, layers) is None:
            out["unlayered"].append(f"{path.relative_to(root)}: {module} is in no layer (add its package to LAYERS)")
    for imp in imports:
        low, high = layer_of(imp.importer, package, layers), layer_of(imp.imported, package, layers)
        if low is not None and high is not None and high > low:
            out["upward"].append(
                f"{imp.where(root)}: {imp.importer} (L{low}) imports {imp.imported} (L{high}): upward")

    module_edges: dict[str, set[str]] = {}
    for imp in imports:
        module_edges.setdefault(imp.importer, set()).add(imp.imported)
    for cycle in _cycles(module_edges):
        inside = [imp for imp in imports if imp.importer in cycle and imp.imported in cycle]
        out["module cycle"].append(f"import cycle between {', '.join(cycle)}: " + "; ".join(
            f"{imp.where(root)} {imp.importer} -> {imp.imported}" for imp in inside))

    package_edges: dict[str, set[str]] = {}
    for imp in imports:
        a, b = unit_of(imp.importer, package), unit_of(imp.imported, package)
        if a and b and a != b and layer_of(imp.importer, package, layers) == layer_of(imp.imported, package, layers):
            package_edges.setdefault(a, set()).add(b)
    for cycle in _cycles(package_edges):
        inside = [imp for imp in imports if unit_of(imp.importer, package) in cycle
                  and unit_of(imp.imported, package) in cycle
                  and unit_of(imp.importer, package) != unit_of(imp.imported, package)]
        out["package cycle"].append(f"packages {' <-> '.join(cycle)} import each other: " + "; ".join(
            f"{imp.where(root)} {imp.importer} -> {imp.imported}" for imp in inside))
    return out


def _report(kind: str, found: list[str]) -> str:
    return f"{len(found)} {kind} violation(s) in {PACKAGE}/ (layers: see this file's docstring):\n" + "\n".join(
        f"  {line}" for line in found)


def test_every_module_is_in_a_layer():
    found = violations(PROJECT, PACKAGE, LAYERS)["unlayered"]
    assert not found, _report("unlayered", found)


def test_no_module_imports_a_higher_layer():
    found = violations(PROJECT, PACKAGE, LAYERS)["upward"]
    assert not found, _report("upward import", found)


def test_no_import_cycle_between_modules():
    found = violations(PROJECT, PACKAGE, LAYERS)["module cycle"]
    assert not found, _report("import cycle", found)


def test_no_cycle_between_packages_of_one_layer():
    found = violations(PROJECT, PACKAGE, LAYERS)["package cycle"]
    assert not found, _report("package cycle", found)


def test_the_checker_finds_each_kind_of_violation(tmp_path):
    """The checks themselves, on a made-up package: imports inside functions, relative and `from pkg import mod`
    imports all count."""
    files = {
        "__init__.py": "",
        "errors.py": "",
        "low/__init__.py": "",
        "low/a.py": "def f():\n    from ..high import b\n",  # upward, inside a function, relative
        "low/c.py": "from fake.low import d\n",
        "low/d.py": "from fake.low import c\n",  # module cycle c <-> d
        "mid1.py": "import fake.mid2\n",
        "mid2.py": "from fake import mid1\n",  # package cycle in one layer (and a module cycle)
        "high/__init__.py": "",
        "high/b.py": "from fake.errors import X\n",  # allowed: downward
        "stray.py": "",
    }
    for name, text in files.items():
        (tmp_path / "fake" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "fake" / name).write_text(text)
    found = violations(tmp_path, "fake", [("errors",), ("low",), ("mid1", "mid2"), ("high",)])
    assert found["unlayered"] == ["fake/stray.py: fake.stray is in no layer (add its package to LAYERS)"]
    assert found["upward"] == ["fake/low/a.py:2: fake.low.a (L1) imports fake.high.b (L3): upward"]
    assert [line.split(":")[0] for line in found["module cycle"]] == [
        "import cycle between fake.low.c, fake.low.d", "import cycle between fake.mid1, fake.mid2"]
    assert len(found["package cycle"]) == 1 and found["package cycle"][0].startswith(
        "packages mid1 <-> mid2 import each other: fake/mid1.py:1 fake.mid1 -> fake.mid2")
