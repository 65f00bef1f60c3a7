"""The house rules, checked on the source: who may import whom, and what ``tasks/`` and ``flows/``
hold (see the README's Architecture).

Every rule reads the ``ast`` of the project's own files (imports inside functions included), so a
new import that breaks a rule fails here with the file and the name.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LAYERS = ("robustops", "adapters", "tasks", "flows", "app")


def _module(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _files() -> dict[str, Path]:
    out = {}
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")) if (ROOT / layer).is_dir() else []:
            out[_module(path)] = path
    return out


FILES = _files()


def _is_package(module: str) -> bool:
    return FILES.get(module, Path()).name == "__init__.py"


def _imports(module: str) -> list[tuple[str, list[str], int]]:
    """(imported module, names taken from it, line) for every import in ``module``'s file."""
    path = FILES[module]
    tree = ast.parse(path.read_text(), str(path))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolved against this module's package
                pkg = module.split(".") if _is_package(module) else module.split(".")[:-1]
                pkg = pkg[: len(pkg) - node.level + 1]
                base = ".".join([*pkg, base] if base else pkg)
            out.append((base, [a.name for a in node.names], node.lineno))
    return out


def _targets(imported: str, names: list[str]) -> list[str]:
    """The project modules one import statement loads: ``from pkg import mod`` loads pkg.mod."""
    subs = [f"{imported}.{n}" for n in names if f"{imported}.{n}" in FILES]
    rest = [n for n in names if f"{imported}.{n}" not in FILES]
    return subs + ([imported] if imported in FILES and (rest or not names) else [])


def _graph() -> dict[str, set[str]]:
    return {m: {t for imp, names, _ in _imports(m) for t in _targets(imp, names)} for m in FILES}


def _where(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _under(module: str, *prefixes: str) -> bool:
    return any(module == p or module.startswith(p + ".") for p in prefixes)


def _violations(rule) -> list[str]:
    """Every import that breaks ``rule(module, imported, names)``; ``from pkg import mod`` is
    checked as an import of ``pkg.mod``."""
    found = []
    for m in FILES:
        for imported, names, line in _imports(m):
            subs = [n for n in names if f"{imported}.{n}" in FILES]
            checks = [(f"{imported}.{n}", []) for n in subs]
            rest = [n for n in names if n not in subs]
            checks += [(imported, rest)] if rest or not names else []
            for target, taken in checks:
                why = rule(m, target, taken)
                if why:
                    found.append(f"{_where(FILES[m])}:{line}: {why}")
    return found


def test_there_is_no_import_circle():
    graph, index, low, stack, on, circles = _graph(), {}, {}, [], set(), []

    def visit(v: str) -> None:  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            part = []
            while True:
                w = stack.pop()
                on.discard(w)
                part.append(w)
                if w == v:
                    break
            if len(part) > 1:
                circles.append(sorted(part))

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10 * len(graph)))
    for v in sorted(graph):
        if v not in index:
            visit(v)
    assert not circles, f"import circles: {circles}"


def test_the_core_imports_no_orchestration():
    banned = ("prefect", "mlflow", "tasks", "flows", "adapters", "app", "dask", "prefect_dask")

    def rule(m, imported, names):
        if _under(m, "robustops") and _under(imported, *banned):
            return f"the core (robustops/) imports {imported}"

    found = _violations(rule)
    assert not found, "\n".join(found)


def test_the_config_package_is_a_leaf():
    allowed = {"pydantic", "yaml", "__future__"} | set(sys.stdlib_module_names)
    shared = ("robustops.config", "robustops.errors", "robustops.redact", "robustops.names")

    def rule(m, imported, names):
        if not _under(m, "robustops.config"):
            return None
        top = imported.split(".")[0]
        if top == "robustops" and not _under(imported, *shared):
            return f"the config package imports {imported}: only {', '.join(shared[1:])} are allowed"
        if top != "robustops" and top not in allowed:
            return f"the config package imports {imported} (only pydantic, yaml and the standard library)"

    found = _violations(rule)
    assert not found, "\n".join(found)


def test_only_the_app_and_flows_import_the_composition_root():
    def rule(m, imported, names):
        if imported == "robustops.catalog" and not _under(m, "flows", "app", "robustops.catalog"):
            return f"{m} imports the composition root (only flows/ and app/ may)"

    found = _violations(rule)
    assert not found, "\n".join(found)


def test_layers_point_one_way():
    below = {
        "robustops.training": ("robustops.evaluation", "robustops.defences", "robustops.serving"),
        "robustops.evaluation": ("robustops.defences", "robustops.serving", "robustops.monitoring"),
        "robustops.defences": ("robustops.serving", "robustops.monitoring"),
        "adapters": ("tasks", "flows", "app"),
        "tasks": ("flows", "app"),
        "flows": ("app",),
    }

    def rule(m, imported, names):
        for layer, above in below.items():
            if _under(m, layer) and _under(imported, *above):
                return f"{layer} imports {imported}, which stands above it"

    found = _violations(rule)
    assert not found, "\n".join(found)


def test_no_private_name_is_imported_across_modules():
    def rule(m, imported, names):
        private = [n for n in names if n.startswith("_") and n != "__version__"]
        if private and (imported in FILES or _under(imported, *LAYERS)):
            return f"imports the private name(s) {private} from {imported}: make them public or move them"

    found = _violations(rule)
    # Attribute access on an imported project module (``pyfunc._settings``) counts as well.
    for path in FILES.values():
        tree = ast.parse(path.read_text())
        modules = {
            a.asname or a.name.split(".")[-1]
            for node in ast.walk(tree)
            if isinstance(node, (ast.Import, ast.ImportFrom))
            for a in node.names
            if isinstance(node, ast.Import)
            and a.name in FILES
            or isinstance(node, ast.ImportFrom)
            and f"{node.module}.{a.name}" in FILES
        }
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and isinstance(node.value, ast.Name)
                and node.value.id in modules
            ):
                found.append(f"{_where(path)}:{node.lineno}: uses {node.value.id}.{node.attr}")
    assert not found, "\n".join(found)


def test_tasks_are_called_as_tasks_outside_tests():
    """``task.fn(...)`` skips the retries, caching and logging a task exists for."""
    found = []
    for path in FILES.values():
        for node in ast.walk(ast.parse(path.read_text())):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr == "fn"
                and not (isinstance(node.func.value, ast.Name) and node.func.value.id == "self")
            ):
                found.append(f"{_where(path)}:{node.lineno}")
    assert not found, f".fn( on a task outside tests: {found}"


def _decorator_name(node: ast.expr) -> str:
    """``task`` for ``@task``, ``@task(...)`` and ``@prefect.task(...)``."""
    node = node.func if isinstance(node, ast.Call) else node
    return node.id if isinstance(node, ast.Name) else node.attr if isinstance(node, ast.Attribute) else ""


def _only(layer: str, kind: str, decorated) -> list[str]:
    """What stands at the top of ``layer``'s files besides imports, the module docstring,
    ``__all__`` and functions with a decorator that ``decorated(name)`` accepts. In ``tasks/`` a
    function that the same file passes as ``cache_key_fn=`` may stay beside its task."""
    found = []
    for module, path in FILES.items():
        if not _under(module, layer):
            continue
        tree = ast.parse(path.read_text(), str(path))
        keys = {
            kw.value.id
            for node in ast.walk(tree)
            if isinstance(node, ast.Call) and layer == "tasks"
            for kw in node.keywords
            if kw.arg == "cache_key_fn" and isinstance(kw.value, ast.Name)
        }
        for i, node in enumerate(tree.body):
            where = f"{_where(path)}:{node.lineno}"
            if isinstance(node, ast.Import | ast.ImportFrom):
                continue
            if i == 0 and isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
                continue  # the module docstring
            targets = (
                node.targets
                if isinstance(node, ast.Assign)
                else [node.target]
                if isinstance(node, ast.AnnAssign)
                else []
            )
            if targets and all(isinstance(t, ast.Name) and t.id == "__all__" for t in targets):
                continue
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                if node.name in keys or any(decorated(_decorator_name(d)) for d in node.decorator_list):
                    continue
                found.append(f"{where}: {node.name}() is not a {kind}")
            elif isinstance(node, ast.ClassDef):
                found.append(f"{where}: class {node.name}")
            else:
                found.append(f"{where}: a top-level {type(node).__name__.lower()} statement")
    return found


def test_tasks_hold_only_tasks():
    """``tasks/`` holds ``@task`` functions (and the cache-key function a task names): a helper goes
    to the core if it is pure, to ``adapters/`` if it talks to MLflow or Prefect; so do constants."""
    found = _only("tasks", "@task function", lambda name: name == "task")
    assert not found, "move these to robustops/ (pure) or adapters/ (MLflow, Prefect):\n" + "\n".join(found)


def test_flows_hold_only_flows():
    """``flows/`` holds ``@flow`` functions only (``@checked_flow`` and other ``*_flow`` decorators
    from ``adapters`` make flows too); what they compose are tasks."""
    found = _only("flows", "@flow function", lambda name: name == "flow" or name.endswith("_flow"))
    assert not found, "move these to robustops/ (pure), adapters/ or tasks/:\n" + "\n".join(found)


def test_loading_a_config_imports_no_torch():
    code = (
        "import sys; from robustops.config import load_config; "
        "load_config('configs/default.yaml'); "
        "bad = sorted(m for m in sys.modules if m == 'torch' or m.startswith(('torch.', 'prefect', 'mlflow'))); "
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


@pytest.mark.parametrize("rule", [test_the_core_imports_no_orchestration, test_the_config_package_is_a_leaf])
def test_the_rules_catch_a_breach(rule, monkeypatch, tmp_path):
    """Each rule fails on a file that breaks it (the checks themselves can fail)."""
    bad = tmp_path / "bad.py"
    bad.write_text("import prefect\nimport torch\nfrom robustops.training import fit\n")
    monkeypatch.setitem(FILES, "robustops.config.bad", bad)
    with pytest.raises(AssertionError):
        rule()


@pytest.mark.parametrize(
    "layer, rule", [("tasks", test_tasks_hold_only_tasks), ("flows", test_flows_hold_only_flows)]
)
def test_the_layout_rules_catch_a_breach(layer, rule, monkeypatch, tmp_path):
    """A helper, a class or a constant in ``tasks/`` or ``flows/`` fails its rule; a file of
    decorated functions, imports, a docstring and ``__all__`` passes it."""
    this = sys.modules[__name__]
    decorator = "task" if layer == "tasks" else "flow"
    key = ", cache_key_fn=_key" if layer == "tasks" else ""
    good = tmp_path / "good.py"
    good.write_text(
        f'"""Doc."""\n\nfrom prefect import {decorator}\n\n__all__ = ["run"]\n\n\n'
        + ("def _key(context, parameters):\n    return ''\n\n\n" if key else "")
        + f"@{decorator}(name='run'{key})\ndef run():\n    pass\n"
    )
    monkeypatch.setattr(this, "FILES", {f"{layer}.good": good})
    rule()
    for bad in ("def helper():\n    pass\n", "class Helper:\n    pass\n", "LIMIT = 3\n"):
        path = tmp_path / "bad.py"
        path.write_text(f"from prefect import {decorator}\n\n{bad}")
        monkeypatch.setattr(this, "FILES", {f"{layer}.bad": path})
        with pytest.raises(AssertionError):
            rule()
