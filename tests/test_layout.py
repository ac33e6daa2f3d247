"""The import rules of the README's code map, checked on the source: each folder may import only the
ones below it, and no stage command imports another."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FOLDERS = {"workdir": "workdir", "extract": "extract", "retrieval": "retrieval", "index": "index", "serve": "serve"}
# What each library folder may import from gais_pipe (besides itself). config and distributed are the
# two shared basics that live in pipeline/ (the gais_pipe package root).
ALLOWED = {
    "workdir": {"gais_pipe.config"},
    "extract": {"gais_pipe.config", "gais_pipe.distributed", "gais_pipe.workdir"},
    "retrieval": {"gais_pipe.config", "gais_pipe.distributed", "gais_pipe.workdir", "gais_pipe.extract"},
    "index": {"gais_pipe.config", "gais_pipe.distributed", "gais_pipe.workdir", "gais_pipe.retrieval"},
    "serve": {
        "gais_pipe.config",
        "gais_pipe.distributed",
        "gais_pipe.workdir",
        "gais_pipe.extract",
        "gais_pipe.retrieval",
        "gais_pipe.index",
    },
}


def gais_imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gais_pipe"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("gais_pipe"))
    return found


def allowed(module: str, rules: set[str], own: str) -> bool:
    return module.startswith(f"gais_pipe.{own}") or any(module == r or module.startswith(r + ".") for r in rules)


@pytest.mark.parametrize("folder", sorted(ALLOWED))
def test_library_folders_import_only_what_lies_below_them(folder):
    wrong = {
        f"{path.name} imports {module}"
        for path in (ROOT / folder).glob("*.py")
        for module in gais_imports(path)
        if not allowed(module, ALLOWED[folder], folder)
    }
    assert not wrong, sorted(wrong)


def test_no_stage_imports_another_stage():
    stages = {p.stem for p in (ROOT / "pipeline").glob("*_stage.py")}
    assert {"extract_stage", "train_stage", "eval_stage", "index_stage", "query_stage"} <= stages
    wrong = {
        f"{path.name} imports {module}"
        for path in (ROOT / "pipeline").glob("*_stage.py")
        for module in gais_imports(path)
        if module.removeprefix("gais_pipe.") in stages
    }
    assert not wrong, sorted(wrong)


def test_every_gais_pipe_import_in_the_tree_resolves():
    """Scripts and tests are not all run by the suite; a name moved between modules must not leave one
    of them importing what is gone."""
    import importlib

    missing = []
    for folder in ("pipeline", "workdir", "extract", "retrieval", "index", "benchmarks", "tests"):
        for path in sorted((ROOT / folder).glob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("gais_pipe"):
                    module = importlib.import_module(node.module)
                    missing += [
                        f"{folder}/{path.name}: {node.module}.{a.name}"
                        for a in node.names
                        if not hasattr(module, a.name) and importlib.util.find_spec(f"{node.module}.{a.name}") is None
                    ]
    assert not missing, missing
