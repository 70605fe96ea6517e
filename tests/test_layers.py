"""The import graph runs one way: the front ends call down into strategies and the engine.

Nothing below a front end imports one, nothing outside the CLI imports the CLI, and
only engine/ imports llama.cpp. The graph is read from the source (ast), so that an
import inside a function counts as much as one at the top of a file.
"""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "specs_local"
CLI = "specs_local.cli"
FRONT_ENDS = (CLI, "specs_local.server", "specs_local.cluster", "specs_local.batch", "specs_local.bench")
# `python -m specs_local` starts the CLI: it sits above every front end.
ENTRY_POINTS = ("specs_local.__main__",)
ENGINE = "specs_local.engine"
# Edges another branch removes; delete each allowance once that branch is in.
ALLOWED: set[tuple[str, str]] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imported_from(node: ast.ImportFrom, path: Path) -> list[str]:
    """The modules a ``from ... import ...`` loads: a name that is itself a module counts as one."""
    if node.level:
        package = module_name(path).split(".")
        if path.name != "__init__.py":
            package = package[:-1]
        base = ".".join(package[: len(package) - node.level + 1] + ([node.module] if node.module else []))
    else:
        base = node.module
    return [f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base for alias in node.names]


def imports(path: Path) -> set[str]:
    """Every module ``path`` imports, anywhere in the file."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            found.update(imported_from(node, path))
    return found


def graph() -> dict[str, set[str]]:
    """Each source file (relative path) with the modules it imports."""
    return {path.relative_to(ROOT).as_posix(): imports(path) for path in sorted(PACKAGE.rglob("*.py"))}


def within(name: str, packages: tuple[str, ...]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in packages)


def offending_edges(rule) -> list[str]:
    """``"FILE imports MODULE"`` for each edge that ``rule(importer, imported)`` refuses."""
    return [f"{file} imports {target}" for file, targets in graph().items() for target in sorted(targets)
            if (file, target) not in ALLOWED and not rule(module_name(ROOT / file), target)]


def assert_none(edges: list[str]) -> None:
    assert not edges, "\n".join(["edges against the layers:", *edges])


def test_the_graph_reader_sees_relative_and_lazy_imports():
    edges = graph()
    assert "specs_local.server" in edges["specs_local/cli/serve.py"]  # `from ..server import` inside a function
    assert "specs_local.cli" in edges["specs_local/cli/solve.py"]  # `from . import build_solver`
    assert "specs_local.cli.batch" in edges["specs_local/cli/__init__.py"]  # `from .batch import batch`
    assert "llama_cpp" in edges["specs_local/engine/loading.py"]


def test_each_allowance_is_still_an_edge():
    # Once the edge is gone, its allowance must go too, or it would let the edge come back.
    edges = graph()
    assert [edge for edge in ALLOWED if edge[1] not in edges[edge[0]]] == []


def test_nothing_below_the_front_ends_imports_one():
    def allowed(importer: str, target: str) -> bool:
        return within(importer, FRONT_ENDS + ENTRY_POINTS) or not within(target, FRONT_ENDS)

    assert_none(offending_edges(allowed))


def test_only_the_cli_imports_the_cli():
    # Front ends call down, not sideways into the CLI: what two of them share lives below both.
    def allowed(importer: str, target: str) -> bool:
        return within(importer, (CLI,) + ENTRY_POINTS) or not within(target, (CLI,))

    assert_none(offending_edges(allowed))


def test_only_the_engine_imports_llama_cpp():
    def allowed(importer: str, target: str) -> bool:
        return within(importer, (ENGINE,)) or not within(target, ("llama_cpp",))

    assert_none(offending_edges(allowed))


def test_strategies_do_not_import_rewards():
    # A search is handed its reward object; the policy prompt it needs lives in chat.py.
    def allowed(importer: str, target: str) -> bool:
        return not within(importer, ("specs_local.search",)) or not within(target, ("specs_local.rewards",))

    assert_none(offending_edges(allowed))


def test_every_package_is_listed_for_installation():
    """pyproject lists the packages by hand (models/ is mapped in), and an editable install finds
    an unlisted one anyway: only `pip install .`, the README's, would be missing it."""
    import tomllib

    listed = set(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"])
    found = {module_name(init) for init in PACKAGE.rglob("__init__.py") if "__pycache__" not in init.parts}
    assert found - listed == set(), f"add to pyproject.toml's packages: {sorted(found - listed)}"
