"""``mimrelay submit`` and ``mimrelay token`` against a running gateway, as operators run them."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner

from mim import canonical
from mim.entities import Post
from relay.bus import ensure_streams
from relay.cli import main
from tests.helpers.cli import invoke
from tests.helpers.servers import TemplateSetup
from tests.helpers.store import migrate_template
from tests.services.gateway.conftest import Running, make, serving


@pytest.fixture
def database_template_setup() -> TemplateSetup | None:
    return migrate_template


@pytest.fixture
async def gateway(
    fresh_database: str, nats_url: str, stream_prefix: str, tmp_path: Path
) -> AsyncIterator[Running]:
    """A gateway whose revoked tokens stop working within a fifth of a second."""
    async with serving(
        fresh_database, nats_url, stream_prefix, tmp_path, token_refresh_seconds=0.2
    ) as served:
        assert served.gateway.nc is not None
        await ensure_streams(served.gateway.nc.jetstream(), served.gateway.layout)
        yield served


def _posts(count: int, label: str) -> list[Post]:
    now = int(time.time())
    made = [make("post", {"board": "b" * 64, "thread": "t" * 64, "body": f"{label} {n}"}, now)
            for n in range(count)]  # fmt: skip
    return [p for p in made if isinstance(p, Post)]


async def _queued(running: Running) -> int:
    assert running.gateway.nc is not None
    info = await running.gateway.nc.jetstream().stream_info(running.gateway.layout.ingest_stream)
    return info.state.messages


async def test_submit_queues_lines_arrays_and_wrappers(gateway: Running, tmp_path: Path) -> None:
    """A file of JSON lines is queued through the local API; the same objects again as an array
    or in kind wrappers are recognised as already queued; exit 0 each time."""
    posts = [canonical.encode(p) for p in _posts(3, "lines")]
    lines = tmp_path / "posts.jsonl"
    lines.write_bytes(b"\n".join(posts) + b"\n")
    array = tmp_path / "array.json"
    array.write_bytes(b"[ " + b" ,\n".join(posts) + b" ]")
    wrapped = tmp_path / "wrapped.json"
    wrapped.write_text(json.dumps([{"kind": "post", "object": json.loads(posts[0])}]))
    api = ["--api", gateway.local]

    result = await invoke(["submit", str(lines), "--kind", "post", *api], {})
    assert result.exit_code == 0, result.output
    assert "queued 3 object(s), 0 already queued, 0 rejected" in result.output
    result = await invoke(["submit", str(array), "--kind", "post", *api], {})
    assert "queued 0 object(s), 3 already queued, 0 rejected" in result.output
    result = await invoke(["submit", str(wrapped), *api], {})
    assert result.exit_code == 0, result.output
    assert "queued 0 object(s), 1 already queued, 0 rejected" in result.output
    assert await _queued(gateway) == 3


async def test_submit_names_each_rejection_and_exits_1(gateway: Running, tmp_path: Path) -> None:
    """A tampered post among good ones is named on stderr with its reason, the good ones are
    queued, and the exit status is 1."""
    good, tampered = _posts(2, "mixed")
    tampered = replace(tampered, body="changed after signing")
    file = tmp_path / "mixed.jsonl"
    file.write_bytes(canonical.encode(good) + b"\n" + canonical.encode(tampered) + b"\n")
    result = await invoke(["submit", str(file), "-k", "post", "--api", gateway.local], {})
    assert result.exit_code == 1
    assert "queued 1 object(s), 0 already queued, 1 rejected" in result.output
    assert "rejected object 2 (post):" in result.output
    assert await _queued(gateway) == 1


def test_submit_without_a_kind_names_the_problem(tmp_path: Path) -> None:
    """A bare object without ``--kind`` is refused with exit 2 and a message naming the fix."""
    bare = tmp_path / "one.json"
    bare.write_bytes(canonical.encode(_posts(1, "bare")[0]))
    result = CliRunner().invoke(main, ["submit", str(bare), "--api", "http://127.0.0.1:9"])
    assert result.exit_code == 2
    assert "no `--kind` given" in result.output


async def test_a_token_submits_on_the_public_listener_until_revoked(
    gateway: Running, tmp_path: Path
) -> None:
    """Without a token the public listener refuses a submission (exit 1, 401 named); a token made
    with ``mimrelay token create`` submits there, is listed without its secret, and once revoked
    is refused again."""
    file = tmp_path / "posts.jsonl"
    file.write_bytes(b"\n".join(canonical.encode(p) for p in _posts(2, "token")))
    public = ["--api", gateway.url]

    refused = await invoke(["submit", str(file), "-k", "post", *public], {})
    assert refused.exit_code == 1
    assert "401 auth.required" in refused.output

    made = await invoke(["token", "create", "frontend", "--rate", "50", "--api", gateway.local], {})
    assert made.exit_code == 0, made.output
    token = made.stdout.strip().splitlines()[0]
    assert token.startswith("mim_")
    held = tmp_path / "token"
    held.write_text(token + "\n")
    with_token = ["--token-file", str(held)]
    taken = await invoke(["submit", str(file), "-k", "post", *public, *with_token], {})
    assert taken.exit_code == 0, taken.output
    assert "queued 2 object(s)" in taken.output

    listed = await invoke(["token", "list", "--json", "--api", gateway.local], {})
    (row,) = [json.loads(line) for line in listed.stdout.splitlines()]
    assert row["name"] == "frontend" and row["rate_per_minute"] == 50 and row["revoked_at"] is None
    assert token not in listed.output

    revoked = await invoke(["token", "revoke", row["id"], "--api", gateway.local], {})
    assert revoked.exit_code == 0, revoked.output
    await asyncio.sleep(0.3)  # past the gateway's token refresh
    again = await invoke(["submit", str(file), "-k", "post", *public], {"MIM_API_TOKEN": token})
    assert again.exit_code == 1
    assert "401 auth.token: unknown or revoked token" in again.output
    assert await _queued(gateway) == 2
