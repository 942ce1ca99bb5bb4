"""The package's shape: one subpackage per pipeline stage, imports that run one way, small modules."""

import ast
from pathlib import Path

from tests.support import REPO

PACKAGE = REPO / "facellm"
STAGES = ("common", "data", "train", "infer", "eval", "testing")
# What the entry points outside the package are: production code like the package's own stages.
ENTRY_POINTS = [REPO / "fairfacegpt.py", REPO / "inference.py", *sorted((REPO / "vlmeval").rglob("*.py"))]
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(path: Path) -> set[str]:
    """Every facellm module PATH imports, at its top or inside a function."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("facellm")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("facellm"):
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names}  # `from package import module`
    return found


def graph() -> dict[str, set[str]]:
    modules = {module_name(path): path for path in PACKAGE.rglob("*.py")}
    return {name: {m for m in imported(path) if m in modules and m != name} for name, path in modules.items()}


def stage(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 else None


def test_every_module_lives_in_a_stage_folder():
    loose = [p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"]
    assert not loose, f"modules outside the stage folders: {loose}"
    assert sorted(p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__") == sorted(
        STAGES
    )


def test_no_import_cycles():
    edges = graph()
    state: dict[str, int] = {}  # 1 on the current path, 2 finished

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycle = [*path[path.index(target) :], target]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if target not in state:
                visit(target, [*path, target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])


def test_inference_and_evaluation_do_not_import_training():
    wrong = {
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if stage(module) in ("infer", "eval", "common", "data") and stage(target) == "train"
    }
    assert not wrong, wrong


def test_production_code_does_not_import_the_demo_and_test_corner():
    wrong = {
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if stage(module) != "testing" and stage(target) == "testing"
    }
    wrong |= {
        (str(path.relative_to(REPO)), target)
        for path in ENTRY_POINTS
        for target in imported(path)
        if target.startswith("facellm.testing")
    }
    assert not wrong, wrong


def test_common_imports_no_stage():
    wrong = {
        (module, target)
        for module, targets in graph().items()
        for target in targets
        if stage(module) == "common" and stage(target) not in (None, "common")
    }
    assert not wrong, wrong


def test_modules_and_functions_stay_small():
    long_modules, long_functions = [], []
    for path in sorted(PACKAGE.rglob("*.py")):
        text = path.read_text(encoding="utf-8")
        if text.count("\n") > MAX_MODULE_LINES:
            long_modules.append(f"{path.relative_to(REPO)}: {text.count(chr(10))} lines")
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                length = node.end_lineno - node.lineno + 1
                if length > MAX_FUNCTION_LINES:
                    long_functions.append(
                        f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {length} lines"
                    )
    assert not long_modules, long_modules
    assert not long_functions, long_functions
