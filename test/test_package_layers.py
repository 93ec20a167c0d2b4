"""The package is layered: data -> model -> runtime -> eval -> training -> tools -> ros ->
cli. A module imports only from its own subpackage or a lower layer (at module level or
inside a function alike), so the model code has no runtime state, the runtime no
evaluation and nothing below the nodes any ROS. Read from the source with ``ast``; a
new subpackage has to be given its place here."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "v2x_vlm_ros"

LAYERS = {
    "config": 0, "geometry": 0, "preprocessing": 0,
    "data": 1,
    "model": 2,
    "runtime": 3,
    "eval": 4,
    "training": 5, "conversion": 5,
    "tools": 6,
    "ros": 7,
    "cli": 8,
}


def subpackage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if parts[0] == "v2x_vlm_ros" and len(parts) > 1 else None


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, imported v2x_vlm_ros module) for every import in the file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
    return [(line, m) for line, m in found if subpackage_of(m)]


def layer_violations(root: Path) -> list[str]:
    bad = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root)
        own = rel.parts[0] if len(rel.parts) > 1 else rel.stem
        if own == "__init__":  # the package root, loaded with every module: imports none of them
            bad.extend(f"{rel}:{line}: the package root imports {module}" for line, module in imports(path))
            continue
        if own not in LAYERS:
            bad.append(f"{rel}: subpackage {own!r} has no layer")
            continue
        for line, module in imports(path):
            target = subpackage_of(module)
            if target != own and LAYERS.get(target, 99) >= LAYERS[own]:
                bad.append(f"{rel}:{line}: {own} (layer {LAYERS[own]}) imports {module} "
                           f"(layer {LAYERS.get(target, 'none')})")
    return bad


def test_every_subpackage_has_a_layer():
    present = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    present |= {p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__"}
    assert present == set(LAYERS)


def test_no_module_imports_from_a_higher_layer():
    assert layer_violations(PACKAGE) == []


@pytest.mark.parametrize("module, statement, expected", [
    ("model/extra.py", "from v2x_vlm_ros.runtime.engine import PlannerEngine\n",
     "model/extra.py:1: model (layer 2) imports v2x_vlm_ros.runtime.engine (layer 3)"),
    ("runtime/extra.py", "def f():\n    import v2x_vlm_ros.eval.metrics\n",
     "runtime/extra.py:2: runtime (layer 3) imports v2x_vlm_ros.eval.metrics (layer 4)"),
    ("tools/extra.py", "from v2x_vlm_ros.ros.params import x\n",
     "tools/extra.py:1: tools (layer 6) imports v2x_vlm_ros.ros.params (layer 7)"),
    ("eval/extra.py", "from v2x_vlm_ros.training import y\n",
     "eval/extra.py:1: eval (layer 4) imports v2x_vlm_ros.training (layer 5)"),
    ("__init__.py", "from v2x_vlm_ros.data import records\n",
     "__init__.py:1: the package root imports v2x_vlm_ros.data"),
])
def test_an_upward_import_is_named_with_its_line(tmp_path, module, statement, expected):
    """The check itself, on a copy of a clean tree given one upward import (also one inside
    a function, where heavy imports are put off)."""
    root = tmp_path / "v2x_vlm_ros"
    for sub in ("model", "runtime", "tools", "eval"):
        (root / sub).mkdir(parents=True)
    (root / "__init__.py").write_text('"""The package."""\n')
    (root / "model" / "ok.py").write_text("from v2x_vlm_ros.data.records import X\n")
    (root / "tools" / "ok.py").write_text("from v2x_vlm_ros.tools.bag import write_bag\n")
    assert layer_violations(root) == []
    (root / module).write_text(statement)
    assert layer_violations(root) == [expected]
