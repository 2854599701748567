"""``mimrelay token`` (and ``submit`` with a token) against a running gateway, as operators run
them."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from mim import canonical
from tests.cli.conftest import posts, queued
from tests.helpers.cli import invoke
from tests.services.gateway.conftest import Running


async def test_a_token_submits_on_the_public_listener_until_revoked(
    gateway: Running, tmp_path: Path
) -> None:
    """Without a token the public listener refuses a submission (exit 1, 401 named); a token made
    with ``mimrelay token create`` submits there, is listed without its secret, and once revoked
    is refused again."""
    file = tmp_path / "posts.jsonl"
    file.write_bytes(b"\n".join(canonical.encode(p) for p in posts(2, "token")))
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
    assert await queued(gateway) == 2
