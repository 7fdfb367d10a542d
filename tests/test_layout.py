"""The house's rooms: the packages import one another in one direction only
(schemas <- rules <- storage <- transforms <- pipeline), and no two modules import each
other, directly or around a loop (lazy imports inside functions included)."""

from __future__ import annotations

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = ["schemas", "rules", "storage", "transforms", "pipeline"]


def modules():
    """{dotted name: path} of the layers' Python modules and C extension sources."""
    found = {}
    for layer in LAYERS:
        for folder, _, names in os.walk(os.path.join(ROOT, layer)):
            for name in names:
                stem, ext = os.path.splitext(name)
                if ext in (".py", ".c"):
                    dotted = os.path.relpath(os.path.join(folder, stem), ROOT).replace(os.sep, ".")
                    found[dotted.removesuffix(".__init__")] = os.path.join(folder, name)
    return found


def imports(path, known):
    """The known modules a Python file imports (`from P import M` of a module M is
    an import of P.M)."""
    if not path.endswith(".py"):
        return set()
    with open(path, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            subs = {f"{node.module}.{alias.name}" for alias in node.names} & set(known)
            found.update(subs or {node.module})
    return {name for name in found if name in known}


def graph():
    known = modules()
    return {name: imports(path, known) - {name} for name, path in known.items()}


def test_the_packages_import_downwards_only():
    upward = sorted((name, target) for name, targets in graph().items()
                    for target in targets
                    if LAYERS.index(target.split(".")[0]) > LAYERS.index(name.split(".")[0]))
    assert not upward, f"imports against the layers {' <- '.join(LAYERS)}: {upward}"


def test_no_module_imports_itself_around_a_loop():
    edges = graph()
    # Tarjan's strongly connected components: a component of two or more is a cycle
    index, low, stack, on_stack, cycles = {}, {}, [], set(), []

    def visit(node):
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in edges[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))
    for node in sorted(edges):
        if node not in index:
            visit(node)
    assert not cycles, f"modules importing each other: {cycles}"
