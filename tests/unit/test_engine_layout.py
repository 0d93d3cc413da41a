"""The engine reads by name: no import cycles, no hidden imports, one place picks a teacher."""

from __future__ import annotations

import ast
import graphlib
from pathlib import Path

from tests.support import ROOT
from worker.distill.sources import resolve
from worker.distill.strategies import STRATEGIES, get_strategy
from worker.distill.teachers import (
    HFTeacher,
    OpenAITeacher,
    is_black_box,
    load_teacher,
    resolve_teacher,
)

ENGINE = ROOT / "worker" / "distill"


def _module(path: Path) -> str:
    name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
    return name.removesuffix(".__init__")


def _imports(tree: ast.AST, modules: set[str]) -> set[str]:
    """Engine modules a file imports, wherever the import statement stands."""
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
        else:
            continue
        found.update(n for n in names if n in modules)
    return found


def test_no_module_of_the_engine_imports_one_that_imports_it_back():
    files = {_module(p): p for p in ENGINE.rglob("*.py")}
    graph = {name: _imports(ast.parse(path.read_text()), set(files)) - {name}
             for name, path in files.items()}
    try:
        graphlib.TopologicalSorter(graph).prepare()
    except graphlib.CycleError as exc:
        raise AssertionError(f"import cycle in worker/distill: {exc.args[1]}") from None


def test_no_engine_import_hides_inside_a_function():
    """Imports of our own modules stand at the top, where a cycle would show (heavy
    third-party libraries may still load lazily)."""
    hidden = []
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                hidden += [f"{path.relative_to(ROOT)}:{inner.lineno}"
                           for inner in ast.walk(node) if _ours(inner)]
    assert hidden == []


def _ours(node: ast.AST) -> bool:
    if isinstance(node, ast.Import):
        return any(alias.name.split(".")[0] in ("worker", "app") for alias in node.names)
    return isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in (
        "worker", "app")


def test_every_registered_strategy_answers_to_its_name():
    assert set(STRATEGIES) == {"adaptive", "vanilla_kd", "pseudo_label"}
    assert all(get_strategy(name).name == name for name in STRATEGIES)


def test_the_uri_scheme_picks_the_teacher(tmp_path, tiny_models):
    uri = "openai+http://127.0.0.1:9/v1?model=tiny"
    black = resolve_teacher(uri, tmp_path)
    assert is_black_box(uri) and black.uri == uri
    assert not any(tmp_path.iterdir()), "a black box has no files to fetch"
    assert isinstance(load_teacher(black, "cpu"), OpenAITeacher)
    assert not is_black_box(tiny_models[0])
    white = resolve_teacher(tiny_models[0], tmp_path)
    assert white == resolve(tiny_models[0], tmp_path)
    assert isinstance(load_teacher(white, "cpu"), HFTeacher)
