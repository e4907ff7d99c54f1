"""The house rules of the package, read from its source: dependencies point one way (no import
cycle, imports inside functions counted), only ``cli/`` imports Click, only ``engines/ray.py``
imports Ray, the engines never import the CLI, no ``cli/`` module imports torch at module level,
and no module grows past ~450 lines."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).parent.parent / "scorecam_cli"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}


def imports(name: str, top_level_only: bool = False) -> set[str]:
    """Modules that module ``name`` imports (anywhere in it, or at module level only)."""
    tree = ast.parse(MODULES[name].read_text(encoding="utf-8"))
    package = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{parent}.{base}" if base else parent
            names = {f"{base}.{alias.name}" for alias in node.names}
            found |= names if names <= MODULES.keys() else {base, *names}
    return found


def own_imports(name: str) -> set[str]:
    """Our modules whose code runs (or must have run) for ``name``'s imports: each module named,
    and each package on its way (``a.b.c`` runs ``a.b``'s ``__init__``), except the packages that
    hold ``name`` itself, which are running already; ``from pkg import NAME`` of a name defined
    in such a package's ``__init__`` counts as using that package."""
    found = set()
    for target in imports(name):
        parts = target.split(".")
        for end in range(2, len(parts) + 1):
            candidate = ".".join(parts[:end])
            inside = name.startswith(candidate + ".")
            if candidate in MODULES and candidate != name and (not inside or end == len(parts)):
                found.add(candidate)
    return found


def test_no_import_cycles() -> None:
    graph = {name: own_imports(name) for name in MODULES}
    done: set[str] = set()

    def visit(name: str, path: list[str]) -> None:
        if name in path:
            cycle = [*path[path.index(name) :], name]
            raise AssertionError("import cycle: " + " -> ".join(cycle))
        if name in done:
            return
        for target in sorted(graph[name]):
            visit(target, [*path, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])


def test_click_ray_and_the_cli_stay_in_their_rooms() -> None:
    for name in MODULES:
        found = imports(name)
        in_cli = name.startswith("scorecam_cli.cli") or name == "scorecam_cli.__main__"
        assert in_cli or not any(m.split(".")[0] == "click" for m in found), name
        if name != "scorecam_cli.engines.ray":
            assert not any(m.split(".")[0] == "ray" for m in found), name
        if name.startswith("scorecam_cli.engines") or not in_cli:
            assert not any(m.startswith("scorecam_cli.cli") for m in found), name


def test_the_cli_imports_no_torch_at_module_level() -> None:
    heavy = {"torch", "cv2", "numpy", "onnxruntime", "ray", "transformers"}
    for name in MODULES:
        if name.startswith("scorecam_cli.cli"):
            top = imports(name, top_level_only=True)
            assert not {m.split(".")[0] for m in top} & heavy, name
            for target in own_imports(name) & {m for m in top}:
                if not target.startswith("scorecam_cli.cli"):  # what the CLI imports at the top
                    assert not {m.split(".")[0] for m in imports(target, True)} & heavy, target


def test_no_module_over_450_lines() -> None:
    for name, path in MODULES.items():
        lines = len(path.read_text(encoding="utf-8").splitlines())
        assert lines <= 460, f"{name}: {lines} lines"
