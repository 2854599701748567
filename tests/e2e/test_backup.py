"""`mimrelay export --jsonl`, then `mimrelay import` into a second node through its validator."""

from __future__ import annotations

import asyncio
import json
import random
from collections.abc import Iterator, Mapping
from pathlib import Path

import asyncpg
import nats
import pytest

from mim import pow as mim_pow
from mim.create import create, update
from mim.entities import Provable
from mim.signing import SigningKey
from relay.bus import Layout
from relay.db import storing
from relay.embedded import free_port
from tests.helpers.cli import run_cli
from tests.helpers.pipeline import running_pipeline, wait_drained
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template

DIFFICULTY = 6
KEY = SigningKey.generate(bytes(range(120, 152)))
NOW = 1_700_000_000
MINT = mim_pow.local_minter(random.Random(7).randrange)
VALUES: dict[str, dict[str, object]] = {
    "board": {"name": "backups", "description": "<escaped> & kept", "language": "eng"},
    "thread": {"board": "b" * 64, "name": "restore", "body": "line\u2028separator"},
    "vote": {"board": "b" * 64, "thread": "c" * 64, "target": "d" * 64, "typeclass": 1, "type": 1},
    "key": {"name": "operator", "info": "ünïcode"},
    "truststate": {"target": "e" * 64, "typeclass": 1, "type": 1, "domain": "b" * 64},
}


@pytest.fixture
def database_template_setup() -> TemplateSetup:
    return migrate_template


def _objects() -> list[Provable]:
    made = [create(kind, values, KEY, DIFFICULTY, NOW, MINT) for kind, values in VALUES.items()]
    made.append(update(made[1], {"body": "updated <body>"}, KEY, DIFFICULTY, NOW + 60, MINT))
    posts = [
        create(
            "post",
            {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64, "body": f"post {n} & <"},
            KEY,
            DIFFICULTY,
            NOW + n,
            MINT,
        )
        for n in range(40)
    ]
    return made + posts


async def _seed(url: str, objects: list[Provable]) -> None:
    conn = await asyncpg.connect(url)
    try:
        async with conn.transaction():
            await storing.store_objects(conn, objects, NOW + 100)
    finally:
        await conn.close()


async def _bodies(url: str) -> set[tuple[str, str]]:
    conn = await asyncpg.connect(url)
    try:
        rows = await conn.fetch("SELECT kind, body FROM objects")
    finally:
        await conn.close()
    return {(r["kind"], r["body"]) for r in rows}


def _read_export(path: Path) -> tuple[list[str], list[Path]]:
    """The lines of an export file, and any partial file left beside it."""
    return path.read_text(encoding="utf-8").splitlines(), list(path.parent.glob(".*.partial"))


@pytest.fixture
def target_node(nats_url: str, empty_database: str, stream_prefix: str) -> Iterator[dict[str, str]]:
    """A validator and a store on the target database, running until the test ends."""
    with running_pipeline(nats_url, empty_database, stream_prefix, DIFFICULTY) as env:
        yield env


async def _wait_restored(
    env: Mapping[str, str], expected: int, *, rejected: int = 0, limit: float = 40.0
) -> None:
    """Until the target holds ``expected`` objects, has ``rejected`` rejections, and both work
    streams are empty."""
    nc = await nats.connect(env["MIM_NATS_URL"])
    try:
        await wait_drained(
            nc.jetstream(),
            Layout(env["MIM_STREAM_PREFIX"]),
            env["MIM_DATABASE_URL"],
            stored=expected,
            rejected=rejected,
            limit=limit,
        )
    finally:
        await nc.close()


async def test_export_then_import_restores_the_same_objects_through_the_validators(
    fresh_database: str, target_node: dict[str, str], tmp_path: Path
) -> None:
    """Every stored object is exported as one canonical line, and importing the file into an
    empty node through its validator and store yields the identical set of canonical JSON, while
    a tampered line is refused by the validator and a broken line is named by number."""
    objects = _objects()
    await _seed(fresh_database, objects)
    source = await _bodies(fresh_database)
    assert len(source) == len(objects) - 1  # the thread's update replaced the thread

    backup = tmp_path / "backup.jsonl"
    exported = await asyncio.to_thread(
        run_cli, ["export", "--jsonl", str(backup)], {"MIM_DATABASE_URL": fresh_database}
    )
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.strip() == f"exported {len(source)} object(s) to {backup}"
    lines, leftovers = await asyncio.to_thread(_read_export, backup)
    assert {(json.loads(x)["kind"], x[x.index('"object":') + 9 : -1]) for x in lines} == source
    assert leftovers == []

    clean = await asyncio.to_thread(run_cli, ["import", str(backup)], target_node)
    assert clean.returncode == 0, clean.stderr
    assert (
        clean.stdout.strip()
        == f"queued {len(source)} object(s), 0 already queued, 0 line(s) refused"
    )
    await _wait_restored(target_node, len(source))
    assert await _bodies(target_node["MIM_DATABASE_URL"]) == source

    original = next(x for x in lines if '"body":"post 39 ' in x)
    forged = original.replace("post 39", "post 99")
    mixed = tmp_path / "mixed.jsonl"
    await asyncio.to_thread(
        mixed.write_text, f"{lines[0]}\n\nnot json\n{forged}\n", encoding="utf-8"
    )
    again = await asyncio.to_thread(run_cli, ["import", str(mixed)], target_node)
    assert again.returncode == 1, again.stderr
    assert again.stdout.strip() == "queued 1 object(s), 1 already queued, 1 line(s) refused"
    assert "line 3: refused: `object`: not JSON" in again.stderr
    await _wait_restored(target_node, len(source), rejected=1)
    assert await _bodies(target_node["MIM_DATABASE_URL"]) == source


def test_export_and_import_exit_1_when_the_node_is_unreachable_and_2_on_a_missing_file(
    tmp_path: Path,
) -> None:
    """An unreachable database or NATS exits 1 with one line and no traceback; no export file is
    left behind; a missing import file exits 2."""
    port = free_port()  # nothing listens there
    target = tmp_path / "out.jsonl"
    down = run_cli(
        ["export", "--jsonl", str(target)],
        {"MIM_DATABASE_URL": f"postgresql://nobody@127.0.0.1:{port}/none"},
    )
    assert down.returncode == 1
    assert down.stderr.startswith("error: ") and "Traceback" not in down.stderr
    assert list(tmp_path.iterdir()) == []

    target.write_text("{}\n", encoding="utf-8")
    no_bus = run_cli(["import", str(target)], {"MIM_NATS_URL": f"nats://127.0.0.1:{port}"})
    assert no_bus.returncode == 1
    assert "Traceback" not in no_bus.stderr

    missing = run_cli(["import", str(tmp_path / "absent.jsonl")], {})
    assert missing.returncode == 2
    assert "absent.jsonl" in missing.stderr
