"""The layers hold: imports run one way, no module imports itself round a circle, and each table
has one writing service.

Read from the source with ``ast`` (every import, at any depth, ``TYPE_CHECKING`` ones too):

- ``mim`` imports neither ``relay`` nor ``services``;
- ``relay`` (the command line included) imports no ``services``;
- a service imports no other service;
- no two modules reach each other through imports;
- a write function of ``relay.db`` (named in its module's ``WRITES``) is used only by the service
  its module names as ``WRITER``.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SOURCES = {"mim": ROOT / "shared" / "mim", "relay": ROOT / "shared" / "relay"}
SERVICES = ROOT / "services"

#: Those outside the writing service that may still apply the schema: ``mimrelay up`` migrates
#: before it starts any service, so none of them meets a database without tables.
SCHEMA_PREPARERS = {"relay.node"}


@dataclass(frozen=True, slots=True)
class Module:
    name: str
    path: Path
    tree: ast.Module

    @property
    def layer(self) -> str:
        return self.name.split(".")[0]

    @property
    def service(self) -> str | None:
        parts = self.name.split(".")
        return parts[1] if parts[0] == "services" and len(parts) > 1 else None


def _name(path: Path, root: Path, package: str) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join([package, *parts])


def modules() -> list[Module]:
    found: list[Module] = []
    roots = [*((root, package) for package, root in SOURCES.items()), (SERVICES, "services")]
    for root, package in roots:
        for path in sorted(root.rglob("*.py")):
            tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
            found.append(Module(_name(path, root, package), path, tree))
    return found


def _resolve(module: Module, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.name.split(".")
    is_package = module.path.name == "__init__.py"
    base = base[: len(base) - node.level + (1 if is_package else 0)]
    return ".".join([*base, *([node.module] if node.module else [])])


def imported(module: Module, known: set[str]) -> Iterator[tuple[str, list[str]]]:
    """``(module name, names taken from it)`` for every import of ``module``.

    ``from package import name`` counts as importing ``package.name`` when that is a module.
    """
    for node in ast.walk(module.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, []
        elif isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            for alias in node.names:
                sub = f"{source}.{alias.name}"
                if sub in known:
                    yield sub, []
                else:
                    yield source, [alias.name]


ALL = modules()
KNOWN = {m.name for m in ALL}


def _edges() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m.name: set() for m in ALL}
    for module in ALL:
        for name, _ in imported(module, KNOWN):
            target = name
            while target and target not in KNOWN:
                target = target.rpartition(".")[0]
            if target and target != module.name:
                edges[module.name].add(target)
    return edges


def _arrows_against_the_layers() -> list[str]:
    wrong: list[str] = []
    for module in ALL:
        for target, _ in imported(module, KNOWN):
            top = target.split(".")[0]
            if module.layer == "mim" and top in ("relay", "services"):
                wrong.append(f"{module.name} -> {target}: mim imports no runtime")
            elif module.layer == "relay" and top == "services":
                wrong.append(f"{module.name} -> {target}: relay imports no service")
            elif module.service and top == "services":
                other = target.split(".")[1] if "." in target else ""
                if other != module.service:
                    wrong.append(f"{module.name} -> {target}: a service imports no other")
    return wrong


def test_imports_run_one_way() -> None:
    """mim <- relay <- services, and no service imports another (the CLI is relay)."""
    assert _arrows_against_the_layers() == []


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in sorted(edges[node]):
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            group = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                group.append(top)
                if top == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return groups


def test_no_module_reaches_itself_through_imports() -> None:
    """No import circle anywhere in mim, relay or the services."""
    assert _circles(_edges()) == []


def _writes() -> dict[str, tuple[str, frozenset[str]]]:
    """``relay.db`` module -> (its writing service, its write functions)."""
    found: dict[str, tuple[str, frozenset[str]]] = {}
    for module in ALL:
        if not module.name.startswith("relay.db."):
            continue
        values: dict[str, object] = {}
        for node in module.tree.body:
            if isinstance(node, ast.AnnAssign | ast.Assign) and node.value is not None:
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                for target in targets:
                    if isinstance(target, ast.Name) and target.id in ("WRITER", "WRITES"):
                        values[target.id] = ast.literal_eval(node.value)
        assert "WRITER" in values, f"{module.name} names no WRITER"
        writes = values.get("WRITES", ())
        assert isinstance(writes, tuple), f"{module.name}: WRITES is not a tuple"
        found[module.name] = (str(values["WRITER"]), frozenset(str(w) for w in writes))
    return found


def _uses(module: Module, db_module: str) -> set[str]:
    """The names of ``db_module`` that ``module`` uses: imported by name, or as attributes."""
    package, _, short = db_module.rpartition(".")
    aliases: set[str] = set()
    used: set[str] = set()
    for node in ast.walk(module.tree):
        if isinstance(node, ast.ImportFrom):
            source = _resolve(module, node)
            if source == db_module:
                used.update(a.name for a in node.names)
            elif source == package:
                aliases.update(a.asname or a.name for a in node.names if a.name == short)
        elif isinstance(node, ast.Import):
            aliases.update(a.asname for a in node.names if a.name == db_module and a.asname)
    for node in ast.walk(module.tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in aliases
        ):
            used.add(node.attr)
    return used


def test_each_table_has_one_writing_service() -> None:
    """A write function of a ``relay.db`` module is used by the service it names, nobody else."""
    wrong: list[str] = []
    for db_module, (writer, writes) in _writes().items():
        for module in ALL:
            if module.name.startswith("relay.db"):
                continue
            used = _uses(module, db_module) & writes
            allowed = module.service == writer or (
                db_module == "relay.db.schema" and module.name in SCHEMA_PREPARERS
            )
            if used and not allowed:
                wrong.append(f"{module.name} writes through {db_module}: {sorted(used)}")
    assert wrong == []


@pytest.mark.parametrize("db_module", sorted(_writes()))
def test_every_writer_is_a_service(db_module: str) -> None:
    """Each ``relay.db`` module names a real service as its writer."""
    writer, _ = _writes()[db_module]
    assert (SERVICES / writer / "__main__.py").exists()


def test_the_checks_see_an_arrow_against_the_layers(tmp_path: Path) -> None:
    """A service importing another, and a circle, are found (the checks can fail)."""
    source = "from services.store import writer\nimport services.gateway.posts\n"
    fake = Module("services.gateway.posts", tmp_path / "posts.py", ast.parse(source))
    targets = [t for t, _ in imported(fake, KNOWN)]
    assert "services.store.writer" in targets
    assert _circles({"a": {"b"}, "b": {"a"}, "c": set()}) == [["a", "b"]]
