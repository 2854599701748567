"""`mimrelay submit --wait` (through a running gateway's local API) and `import --wait` against a
running validator and store: each object is followed until stored or rejected, and the exit status
says whether all were stored."""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from mim import canonical
from mim import pow as mim_pow
from mim.create import create
from mim.entities import Post
from mim.signing import SigningKey
from tests.helpers.cli import run_cli
from tests.helpers.gateway import gateway
from tests.helpers.pipeline import running_pipeline

DIFFICULTY = 6
KEY = SigningKey.generate(bytes(range(60, 92)))
MINT = mim_pow.local_minter(random.Random(3).randrange)
WHERE = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64}


@pytest.fixture
def node(
    nats_url: str, empty_database: str, stream_prefix: str, tmp_path: Path
) -> Iterator[dict[str, str]]:
    """A validator, a store and a gateway; the environment that points the command at them."""
    allowed = {"MIM_ALLOWED_NETWORKS": "203.0.113.0/24"}  # the documentation network
    with (
        running_pipeline(nats_url, empty_database, stream_prefix, DIFFICULTY, **allowed) as env,
        gateway(
            nats_url, empty_database, stream_prefix, tmp_path / "gateway",
            MIM_MIN_POW=str(DIFFICULTY), **allowed,
        ) as gw,
    ):  # fmt: skip
        yield {**env, "MIM_GATEWAY_LOCAL_PORT": gw.local.rpartition(":")[2]}


def _post(body: str, now: int) -> Post:
    made = create("post", {**WHERE, "body": body}, KEY, DIFFICULTY, now, MINT)
    assert isinstance(made, Post)
    return made


async def test_wait_reports_each_object_stored_or_rejected(
    node: dict[str, str], tmp_path: Path
) -> None:
    """A valid post, one whose body changed after signing, an address and a post below the
    node's proof of work get, in order, `stored`, `rejected` at the signature stage, `stored`, and
    `rejected` at the pow stage, with the reasons; the summary counts them and the exit status is
    1; an address the gateway may not dial is `rejected` at the address stage."""
    good = _post("kept", 1_700_000_000)
    weak = create("post", {**WHERE, "body": "weak"}, KEY, 1, 1_700_000_002, MINT)
    tampered = dataclasses.replace(_post("original", 1_700_000_003), body="tampered")
    address = '{"location": "203.0.113.9", "port": 8090, "entity_version": 1}'
    lines = [canonical.dumps(good), canonical.dumps(tampered), address, canonical.dumps(weak)]
    objects = tmp_path / "objects.jsonl"
    objects.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = await asyncio.to_thread(run_cli, ["submit", "--wait", str(objects)], node)
    assert result.returncode == 1, result.stderr
    assert result.stderr == ""
    out = result.stdout.splitlines()
    assert out[0] == f"stored    post        {good.fingerprint}"
    assert out[1].startswith(f"rejected  post        {tampered.fingerprint}  signature: ")
    assert out[2] == "stored    address     203.0.113.9:8090"
    assert out[3].startswith(f"rejected  post        {weak.fingerprint}  pow: ")
    assert out[4:] == ["2 stored, 2 rejected"]
    local = tmp_path / "local.json"
    local.write_text('{"location": "10.1.2.3", "port": 8090}', encoding="utf-8")
    refused = await asyncio.to_thread(run_cli, ["submit", "--wait", str(local)], node)
    assert refused.returncode == 1
    assert refused.stdout.splitlines()[0].startswith(
        "rejected  address     10.1.2.3:8090  address: "
    )


async def test_wait_exits_0_when_all_are_stored_and_follows_objects_queued_before(
    node: dict[str, str], tmp_path: Path
) -> None:
    """Objects all stored exit 0; sent again within the dedupe window, they are found stored
    at once, and a rejection recorded before is found for an object sent again."""
    posts = [_post(f"post {n}", 1_700_000_100 + n) for n in range(3)]
    bad = dataclasses.replace(_post("other", 1_700_000_200), body="changed")
    good = tmp_path / "good.jsonl"
    good.write_text("\n".join(canonical.dumps(p) for p in posts) + "\n", encoding="utf-8")
    first = await asyncio.to_thread(run_cli, ["submit", "--wait", str(good)], node)
    assert first.returncode == 0, first.stdout + first.stderr
    assert first.stdout.splitlines()[-1] == "3 stored, 0 rejected"
    again = await asyncio.to_thread(run_cli, ["submit", "--wait", str(good)], node)
    assert again.returncode == 0
    assert again.stdout.splitlines()[-1] == "3 stored, 0 rejected"
    wrong = tmp_path / "wrong.json"
    wrong.write_text(canonical.dumps(bad), encoding="utf-8")
    outcomes = [
        (await asyncio.to_thread(run_cli, ["submit", "--wait", str(wrong)], node)).stdout
        for _ in range(2)
    ]
    assert outcomes[0] == outcomes[1]
    assert outcomes[0].endswith("0 stored, 1 rejected\n")


async def test_import_wait_and_timeout(
    node: dict[str, str], stream_prefix: str, tmp_path: Path
) -> None:
    """`import --wait` prints each object's outcome; sent where no validator reads, an object is
    `pending` once the timeout runs out, and the exit status is 1."""
    posts = [_post(f"imported {n}", 1_700_000_300 + n) for n in range(2)]
    lines = tmp_path / "export.jsonl"
    lines.write_text(
        "".join(f'{{"kind":"post","object":{canonical.dumps(p)}}}\n' for p in posts),
        encoding="utf-8",
    )
    imported = await asyncio.to_thread(run_cli, ["import", "--wait", str(lines)], node)
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert imported.stdout.splitlines() == [
        *(f"stored    post        {p.fingerprint}" for p in posts),
        "2 stored, 0 rejected",
    ]
    fresh = tmp_path / "fresh.jsonl"
    late = _post("late", 1_700_000_400)
    fresh.write_text(canonical.dumps(late) + "\n", encoding="utf-8")
    unread = {**node, "MIM_STREAM_PREFIX": stream_prefix + "X"}
    hurried = await asyncio.to_thread(
        run_cli, ["import", "--wait", "--timeout", "1", str(fresh)], unread
    )
    assert hurried.returncode == 1
    assert hurried.stdout.splitlines() == [
        f"pending   post        {late.fingerprint}  not stored within 1 s",
        "0 stored, 0 rejected, 1 not stored within 1 s",
    ]
