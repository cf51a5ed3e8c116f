"""Every public name of the package says what it promises: a docstring on each public
module-level function and class and each public method of a public class (generated
protobuf modules and @overload signatures excepted). A name added without one fails here."""

from __future__ import annotations

import ast
from pathlib import Path

import dtmx

ROOT = Path(dtmx.__file__).parent


def _is_overload(node: ast.AST) -> bool:
    decorators = getattr(node, "decorator_list", [])
    return any((isinstance(d, ast.Name) and d.id == "overload")
               or (isinstance(d, ast.Attribute) and d.attr == "overload") for d in decorators)


def _missing(tree: ast.AST, path: str) -> list[str]:
    out: list[str] = []

    def walk(node: ast.AST, prefix: str) -> None:
        for n in ast.iter_child_nodes(node):
            if not isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                continue
            if n.name.startswith("_"):
                continue
            if ast.get_docstring(n) is None and not _is_overload(n):
                out.append(f"{path}:{n.lineno} {prefix}{n.name}")
            if isinstance(n, ast.ClassDef):
                walk(n, f"{prefix}{n.name}.")

    walk(tree, "")
    return out


def test_public_names_have_docstrings() -> None:
    missing: list[str] = []
    for path in sorted(ROOT.rglob("*.py")):
        if path.name.endswith(("_pb2.py", "_pb2_grpc.py")):
            continue
        rel = str(path.relative_to(ROOT.parent))
        missing += _missing(ast.parse(path.read_text()), rel)
    assert missing == [], "\n".join(missing)
