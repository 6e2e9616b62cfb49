"""The import graph of the project's own modules: no circles, the runtime free of training and
export, and no private name (``_x``) imported from another file. Read from the source with ``ast``,
so a lazy import inside a function counts like one at the top."""
import ast
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("runtime", "training", "export", "benchmarks", "tests", "android_demo")


def project_modules() -> dict[str, str]:
    """module name -> file, for every .py file of the project's packages."""
    mods = {}
    for pkg in PACKAGES:
        for folder, dirs, files in os.walk(os.path.join(ROOT, pkg)):
            dirs[:] = [d for d in dirs if d not in ("node_modules", "__pycache__", "dist")]
            for f in files:
                if f.endswith(".py"):
                    rel = os.path.relpath(os.path.join(folder, f), ROOT)[:-3].replace(os.sep, ".")
                    mods[rel.removesuffix(".__init__")] = os.path.join(folder, f)
    return mods


def import_edges(mods: dict[str, str]) -> tuple[dict[str, set], list[tuple[str, str, str]]]:
    """(module -> the project modules it imports, [(module, imported module, private name)])."""
    edges, private = {m: set() for m in mods}, []
    for mod, path in mods.items():
        package = mod if path.endswith("__init__.py") else mod.rpartition(".")[0]
        with open(path, encoding="utf-8") as f:
            tree = ast.parse(f.read(), path)
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                edges[mod] |= {a.name for a in node.names if a.name in mods and a.name != mod}
            elif isinstance(node, ast.ImportFrom):
                if node.level:
                    parts = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(parts + ([node.module] if node.module else []))
                else:
                    base = node.module or ""
                for a in node.names:
                    target = f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base
                    if target in mods and target != mod:
                        edges[mod].add(target)
                        if target == base and a.name.startswith("_") and not a.name.startswith("__"):
                            private.append((mod, target, a.name))
    return edges, private


def cycles(edges: dict[str, set]) -> list[list[str]]:
    """One module list per strongly connected component of more than one module (Tarjan)."""
    index, low, stack, on, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


@pytest.fixture(scope="module")
def graph():
    return import_edges(project_modules())


def test_no_import_circles(graph):
    assert cycles(graph[0]) == []


def test_runtime_imports_neither_training_nor_export(graph):
    edges = graph[0]
    bad = sorted((m, t) for m, ts in edges.items() if m.startswith("runtime") for t in ts
                 if t.split(".")[0] in ("training", "export", "benchmarks", "tests"))
    assert bad == []


def test_no_private_name_imported_from_another_file(graph):
    assert graph[1] == []


def test_the_checks_see_a_circle_and_a_private_import():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(edges) == [["a", "b", "c"]]
    mods = project_modules()
    assert "training.models.geo" in mods and "runtime.keras_layers" in mods
    assert "runtime.keras_layers" in import_edges(mods)[0]["training.models.geo"]
