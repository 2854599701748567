"""Module-level code nothing uses: every function, class and constant defined at the top of a
module under shared/ or services/ must be named somewhere else (code, tests, benches, or a string
such as a command table), or be part of mim's public surface. ``mim/bounds.py`` is the protocol's
table of bounds and is kept whole, each bound checked or not. Prints each unused one; exit 1 if
any. ``python scripts/unused.py``.
"""

from __future__ import annotations

import ast
import re
import sys
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DEFINED_IN = [ROOT / "shared", ROOT / "services"]
KEPT_WHOLE = {ROOT / "shared" / "mim" / "bounds.py"}
READ_IN = [*DEFINED_IN, ROOT / "tests", ROOT / "bench"]
_WORD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def _defined(tree: ast.Module) -> list[tuple[str, int]]:
    found: list[tuple[str, int]] = []
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            if not node.decorator_list:  # decorated: registered with a framework
                found.append((node.name, node.lineno))
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            found += [(t.id, node.lineno) for t in targets if isinstance(t, ast.Name)]
    return [(n, line) for n, line in found if not (n.startswith("__") and n.endswith("__"))]


def _docstrings(tree: ast.Module) -> set[int]:
    """ids of the string nodes that are docstrings (naming a thing in prose is not using it)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                found.add(id(body[0].value))
    return found


def _mentions(tree: ast.Module) -> Counter[str]:
    seen: Counter[str] = Counter()
    prose = _docstrings(tree)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load):
            seen[node.id] += 1
        elif isinstance(node, ast.Attribute):
            seen[node.attr] += 1
        elif isinstance(node, ast.alias):
            seen[node.name.rsplit(".", 1)[-1]] += 1
        elif (
            isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in prose
        ):
            seen.update(_WORD.findall(node.value))
    return seen


def _public_core() -> set[str]:
    tree = ast.parse((ROOT / "shared" / "mim" / "__init__.py").read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return set(ast.literal_eval(node.value))
    return set()


def main() -> int:
    trees = {
        path: ast.parse(path.read_text(encoding="utf-8"), str(path))
        for folder in READ_IN
        for path in sorted(folder.rglob("*.py"))
    }
    mentions: Counter[str] = Counter()
    for tree in trees.values():
        mentions.update(_mentions(tree))
    public = _public_core()
    unused: list[str] = []
    for path, tree in trees.items():
        if path in KEPT_WHOLE or not any(path.is_relative_to(f) for f in DEFINED_IN):
            continue
        for name, at in _defined(tree):
            # naming it in its own module's __all__ is not a use
            if name not in public and mentions[name] <= _self_mentions(tree, name):
                unused.append(f"{path.relative_to(ROOT)}:{at}: {name} is never used")
    for report in unused:
        print(report)
    return 1 if unused else 0


def _self_mentions(tree: ast.Module, name: str) -> int:
    """How often ``name`` appears in its own module's ``__all__`` (which is not a use)."""
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "__all__" for t in node.targets
        ):
            return int(name in ast.literal_eval(node.value))
    return 0


if __name__ == "__main__":
    sys.exit(main())
