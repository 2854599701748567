"""The gateway while its database is down: each request that needs it gets 503, never a 500."""

from __future__ import annotations

from pathlib import Path

import httpx

from tests.helpers.gateway import REQUEST_POW, error_of, gateway, request
from tests.helpers.metrics import sample, scrape
from tests.helpers.servers import running_postgres
from tests.helpers.store import migrate_template


async def test_requests_that_need_the_database_get_503_while_it_is_down(
    nats_url: str, stream_prefix: str, tmp_path: Path
) -> None:
    """With PostgreSQL stopped under a running gateway, a POST query on the public API and a
    token listing on the local API are refused 503 ``database.unavailable`` with ``Retry-After``;
    the gateway counts both by rule, logs one ``answered_unavailable`` line naming the rule and
    the error (the second held back), never a traceback, and keeps running."""
    with running_postgres() as pg:
        url = pg.url()
        await migrate_template(url)
        settings = {"MIM_GATEWAY_POST_MIN_POW": str(REQUEST_POW)}
        with gateway(nats_url, url, stream_prefix, tmp_path, **settings) as gw:
            async with httpx.AsyncClient(timeout=30) as client:
                assert (await client.get(f"{gw.local}/api/tokens")).status_code == 200
                pg.stop()
                post = await client.post(
                    f"{gw.url}/v0/c0/posts",
                    content=request("posts"),
                    headers={"Content-Type": "application/json"},
                )
                tokens = await client.get(f"{gw.local}/api/tokens")
            for answer in (post, tokens):
                assert answer.status_code == 503, answer.text
                assert error_of(answer)["rule"] == "database.unavailable"
                assert int(answer.headers["Retry-After"]) > 0
            assert gw.proc.proc.poll() is None
            refused = sample(
                scrape(f"{gw.metrics}/metrics"),
                "mim_gateway_refusals_total",
                status="503",
                rule="database.unavailable",
            )
            assert refused == 2
            lines = gw.proc.events("answered_unavailable")
            assert [line["rule"] for line in lines] == ["database.unavailable"]
            assert lines[0]["cause"]  # the error the driver gave
            assert "Traceback" not in gw.proc.stderr
