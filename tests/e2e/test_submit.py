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
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template

DIFFICULTY = 6
KEY = SigningKey.generate(bytes(range(60, 92)))
MINT = mim_pow.local_minter(random.Random(3).randrange)
WHERE = {"board": "b" * 64, "thread": "c" * 64, "parent": "c" * 64}


@dataclasses.dataclass(frozen=True)
class Served:
    """The environment that points the command at a running node, and its public listener."""

    env: dict[str, str]
    public: str


@pytest.fixture
def served(
    nats_url: str, empty_database: str, stream_prefix: str, tmp_path: Path
) -> Iterator[Served]:
    """A validator, a store and a gateway."""
    allowed = {"MIM_ALLOWED_NETWORKS": "203.0.113.0/24"}  # the documentation network
    with (
        running_pipeline(nats_url, empty_database, stream_prefix, DIFFICULTY, **allowed) as env,
        gateway(
            nats_url, empty_database, stream_prefix, tmp_path / "gateway",
            MIM_MIN_POW=str(DIFFICULTY), **allowed,
        ) as gw,
    ):  # fmt: skip
        yield Served({**env, "MIM_GATEWAY_LOCAL_PORT": gw.local.rpartition(":")[2]}, gw.url)


@pytest.fixture
def node(served: Served) -> dict[str, str]:
    return served.env


@pytest.fixture
def database_template_setup() -> TemplateSetup:
    """Another node's database (``fresh_database``) holds the schema its gateway needs."""
    return migrate_template


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


async def test_wait_with_api_follows_only_its_own_node(
    served: Served, fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """`--wait` follows objects through the servers of this machine's node: with `--api` naming
    that node, by its local API or by its public listener with a token, each object is followed
    to `stored`; naming another node's listener, the command exits 2 before sending anything and
    says why, since that node's store is not one it can see."""
    posts = [_post(f"by api {n}", 1_700_000_500 + n) for n in range(2)]
    files = []
    for n, post in enumerate(posts):
        files.append(tmp_path / f"post-{n}.json")
        files[-1].write_text(canonical.dumps(post), encoding="utf-8")
    local = f"http://127.0.0.1:{served.env['MIM_GATEWAY_LOCAL_PORT']}"
    by_local = await asyncio.to_thread(
        run_cli, ["submit", "--wait", "--api", local, str(files[0])], served.env
    )
    assert by_local.returncode == 0, by_local.stdout + by_local.stderr
    assert by_local.stdout.splitlines() == [
        f"stored    post        {posts[0].fingerprint}",
        "1 stored, 0 rejected",
    ]
    made = await asyncio.to_thread(run_cli, ["token", "create", "api", "--api", local], served.env)
    token = tmp_path / "token"
    token.write_text(made.stdout.splitlines()[0] + "\n", encoding="utf-8")
    public = ["--api", served.public, "--token-file", str(token)]
    by_public = await asyncio.to_thread(
        run_cli, ["submit", "--wait", *public, str(files[1])], served.env
    )
    assert by_public.returncode == 0, by_public.stdout + by_public.stderr
    assert by_public.stdout.splitlines()[-1] == "1 stored, 0 rejected"

    with gateway(nats_url, fresh_database, stream_prefix + "X", tmp_path / "other") as other:
        elsewhere = await asyncio.to_thread(
            run_cli, ["submit", "--wait", "--api", other.url, str(files[0])], served.env
        )
    assert elsewhere.returncode == 2
    assert elsewhere.stdout == ""
    assert "error: --wait follows objects through the node in" in elsewhere.stderr
    assert f"{other.url} is another node" in elsewhere.stderr
