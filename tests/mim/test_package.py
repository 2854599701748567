"""The core's public surface and its purity."""

from __future__ import annotations

import ast
from pathlib import Path

import mim

MIM_DIR = Path(mim.__file__).parent
#: What shared/mim may import: pure standard-library modules, cryptography, PyNaCl, itself.
ALLOWED = {
    "__future__",
    "binascii",
    "codecs",
    "collections",
    "dataclasses",
    "enum",
    "functools",
    "hashlib",
    "ipaddress",
    "json",
    "re",
    "types",
    "typing",
    "cryptography",
    "nacl",
    "mim",
}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(), str(path))
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found


def test_core_imports_only_pure_modules() -> None:
    """No module of mim imports I/O, networking, clocks, randomness or a service."""
    offenders = {
        f"{path.name}: {name}"
        for path in sorted(MIM_DIR.glob("*.py"))
        for name in _imports(path)
        if name not in ALLOWED
    }
    assert not offenders


def test_core_has_no_async_code() -> None:
    """The core is synchronous: no async def anywhere."""
    for path in MIM_DIR.glob("*.py"):
        tree = ast.parse(path.read_text())
        assert not any(isinstance(n, ast.AsyncFunctionDef) for n in ast.walk(tree)), path.name


def test_all_lists_exactly_the_public_names() -> None:
    """`mim.__all__` names every public attribute of the package and nothing else."""
    public = {name for name in vars(mim) if not name.startswith("_")}
    assert set(mim.__all__) == public
    assert len(mim.__all__) == len(set(mim.__all__))
