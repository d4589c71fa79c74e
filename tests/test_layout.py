"""The habits that keep the tree readable as the architecture, checked on every run."""

import ast
import pathlib
import re

import pytest

SRC = pathlib.Path(__file__).resolve().parents[1] / "src" / "pedconv"
LAYOUT_PAGE = SRC.parents[1] / "docs" / "contributing.md"  # the docs page with the Layout section
MODULES = sorted(SRC.rglob("*.py"))
MAX_FUNCTION_LINES = 80


def _module_name(path: pathlib.Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: pathlib.Path):
    """``(absolute module, imported names)`` of every ``from ... import`` in ``path``."""
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            yield module, [a.name for a in node.names]
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []


def test_runtime_code_never_imports_the_test_oracles():
    offenders = [
        str(p.relative_to(SRC))
        for p in MODULES
        if p.name != "testing.py"
        for module, names in _imports(p)
        if module == "pedconv.testing" or (module == "pedconv" and "testing" in names)
    ]
    assert not offenders, f"runtime modules importing pedconv.testing: {offenders}"


def test_no_module_imports_a_private_name_from_another_module():
    offenders = [
        f"{p.relative_to(SRC)}: {module}.{name}"
        for p in MODULES
        for module, names in _imports(p)
        if module.startswith("pedconv")
        for name in names
        if name.startswith("_") and not name.startswith("__")
    ]
    assert not offenders, offenders


def _is_parser_builder(node: ast.AST) -> bool:
    return isinstance(node, ast.FunctionDef) and ("parser" in node.name or "arguments" in node.name)


def test_no_function_is_over_80_lines_except_declarative_parser_builders():
    long = [
        f"{p.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)"
        for p in MODULES
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
        and node.end_lineno - node.lineno + 1 > MAX_FUNCTION_LINES
        and not _is_parser_builder(node)
    ]
    assert not long, long


def test_no_module_shadows_the_standard_library():
    import sys

    names = {p.stem for p in MODULES} | {p.name for p in SRC.rglob("*") if p.is_dir()}
    shadowing = sorted(n for n in names if n in sys.stdlib_module_names and n not in {"__init__", "__main__"})
    assert not shadowing, shadowing


def test_the_docs_layout_names_every_package_and_top_level_module():
    text = LAYOUT_PAGE.read_text()
    layout = text[text.index("## Layout") :]
    entries = [p for p in SRC.iterdir() if (p.is_dir() and (p / "__init__.py").exists()) or p.suffix == ".py"]
    missing = [p.name for p in entries if p.name not in {"__init__.py", "__main__.py"} and p.name not in layout]
    assert not missing, f"the docs' Layout section does not mention {missing}"
    mentioned = set(re.findall(r"`([a-z_]+(?:/|\.py))`", layout))
    places = [SRC.parents[1], SRC, *(d for d in SRC.iterdir() if d.is_dir())]
    gone = [m for m in mentioned if not any((d / m.rstrip("/")).exists() for d in places)]
    assert not gone, f"the docs' Layout section names files that do not exist: {gone}"


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(SRC)))
def test_every_module_opens_with_a_docstring(path):
    assert ast.get_docstring(ast.parse(path.read_text())), f"{path.relative_to(SRC)} has no module docstring"


MAX_MODULE_LINES = 500


def _runtime_imports(path: pathlib.Path) -> set[str]:
    """The ``pedconv`` modules ``path`` imports when it runs (at import time or inside functions;
    ``if TYPE_CHECKING:`` blocks left out), a ``from package import submodule`` as the submodule."""
    known = {_module_name(p) for p in MODULES}
    tree = ast.parse(path.read_text())
    typing_only = {id(n) for node in ast.walk(tree)
                   if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
                   for n in ast.walk(node)}
    package = _module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    found: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in typing_only:
            continue
        if isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            module = ".".join([*base, *(node.module.split(".") if node.module else [])])
            for alias in node.names:
                found.add(f"{module}.{alias.name}" if f"{module}.{alias.name}" in known else module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {m for m in found if m in known} - {_module_name(path)}


def _import_graph() -> dict[str, set[str]]:
    return {_module_name(p): _runtime_imports(p) for p in MODULES}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles_in_src():
    """Lazy imports inside functions count too: a circle hidden in a function is still a circle."""
    assert _cycles(_import_graph()) == []


def test_the_training_pipeline_imports_no_task():
    """Tasks build on pedconv.training, never the other way round (no task is special-cased there)."""
    offenders = sorted(f"{m} -> {i}" for m, imports in _import_graph().items() if m.startswith("pedconv.training")
                       for i in imports if i.startswith("pedconv.tasks"))
    assert offenders == []


def test_no_module_is_over_500_lines():
    long = {str(p.relative_to(SRC)): n for p in MODULES if (n := len(p.read_text().splitlines())) > MAX_MODULE_LINES}
    assert long == {}
