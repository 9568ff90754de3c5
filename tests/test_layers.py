"""Imports go one way (data <- real envs | world model <- dream env <- planners, agents <- benchmarks), at the top."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("envs", "worldmodel", "planners", "agents", "benchmarks")

# Every module of ours belongs to one layer; a new module must be placed here (the test says so).
LAYER_OF = {
    "envs": "data",  # the package init only registers ids with string entry points
    "envs.episodes": "data",
    "envs.fileio": "data",
    "envs.video": "data",
    "envs.worlds": "data",
    "envs.activation": "real",
    "envs.memory_maze": "real",
    "envs.crafter": "real",
    "envs.policies": "real",
    "envs.collect": "real",
    "envs.minerl": "real",
    "envs.convert": "real",
    "envs.contexts": "dream",
    "envs.dream_core": "dream",
    "envs.dream": "dream",
    "envs.dream_vector": "dream",
    "envs.sb3": "dream",
}
PACKAGE_LAYER = {"worldmodel": "model", "planners": "control", "agents": "control", "benchmarks": "benchmarks"}
MAY_IMPORT = {
    "data": {"data"},
    "real": {"data", "real"},
    "model": {"data", "model"},
    "dream": {"data", "model", "dream"},
    "control": {"data", "real", "model", "dream", "control"},
    "benchmarks": {"data", "real", "model", "dream", "control", "benchmarks"},
}
# function-level imports of our own modules that are not cycle dodges (with the reason)
LAZY_ALLOWED = {
    ("worldmodel", "worldmodel.model"),  # `import worldmodel` stays cheap; worldmodel.load imports the model
}


def _modules():
    for pkg in PACKAGES:
        for path in sorted((ROOT / pkg).rglob("*.py")):
            rel = path.relative_to(ROOT).with_suffix("")
            parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
            yield ".".join(parts), path


def _layer(module: str) -> str:
    if module in LAYER_OF:
        return LAYER_OF[module]
    top = module.split(".")[0]
    if top == "envs":
        pytest.fail(f"module {module} has no layer: add it to LAYER_OF in tests/test_layers.py")
    return PACKAGE_LAYER[top]


def _imports(module: str, path: Path):
    """(imported module of ours, line, inside a function?) for every import statement of the file."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    parents = {}
    for node in ast.walk(tree):
        for child in ast.iter_child_nodes(node):
            parents[child] = node

    def in_function(node):
        while node in parents:
            node = parents[node]
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                return True
        return False

    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".") if is_pkg else module.split(".")[:-1]
                base = base[: len(base) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names = [target] + [f"{target}.{a.name}" for a in node.names]
        for name in names:
            top = name.split(".")[0]
            if top not in PACKAGES:
                continue
            # the longest prefix that is a module of ours (from X import function -> X)
            parts = name.split(".")
            known = {m for m, _ in _modules()}
            while parts and ".".join(parts) not in known:
                parts.pop()
            if parts:
                yield ".".join(parts), node.lineno, in_function(node)


def test_every_import_of_ours_goes_down_the_layers():
    """No module imports a module of a layer it may not depend on (e.g. the data layer imports nothing of ours
    above it, real envs and collection never import the world model, the world model never the dream env)."""
    bad = []
    for module, path in _modules():
        for target, line, _ in _imports(module, path):
            if _layer(target) not in MAY_IMPORT[_layer(module)]:
                bad.append(
                    f"{path.relative_to(ROOT)}:{line}: {module} ({_layer(module)}) imports {target} ({_layer(target)})"
                )
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_imports_of_ours_are_at_the_top_of_each_module():
    """No module imports one of ours from inside a function (the way cycles used to be hidden)."""
    bad = []
    for module, path in _modules():
        for target, line, lazy in _imports(module, path):
            if lazy and (module, target) not in LAZY_ALLOWED and target != module:
                bad.append(f"{path.relative_to(ROOT)}:{line}: imports {target} inside a function")
    assert not bad, "function-level imports of our modules:\n" + "\n".join(sorted(set(bad)))


def test_the_layer_checker_sees_a_violation(tmp_path, monkeypatch):
    """The checker itself works: a fake data-layer module importing the world model is reported."""
    fake = tmp_path / "envs" / "episodes.py"
    fake.parent.mkdir()
    fake.write_text("import numpy\n\ndef f():\n    from worldmodel.model import load\n")
    found = list(_imports("envs.episodes", fake))
    assert ("worldmodel.model", 4, True) in found
    assert _layer("worldmodel.model") not in MAY_IMPORT[_layer("envs.episodes")]


def test_test_file_names_are_unique():
    """pytest imports test files by base name (no packages under tests/): two with one name break collection."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted({n for n in names if names.count(n) > 1}) == []
