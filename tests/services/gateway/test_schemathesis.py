"""schemathesis against the gateway's OpenAPI documents, over HTTP, with NATS and Postgres live.

Both listeners are fuzzed: the local one's document is fetched from it (``/openapi.json`` is
served there alone), the public one's is made by its app (the public listener serves no API
documents). Every operation in each is driven with generated requests (valid ones, then invalid
ones) and every answer is checked against the document: no 5xx, documented status codes and
content types, bodies that match their response schema.
"""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import hypothesis
import schemathesis
from hypothesis import HealthCheck
from schemathesis import APIOperation, GenerationMode, checks
from schemathesis.core.result import Ok

from relay.bus import ensure_streams
from tests.services.gateway.conftest import Running

_EXAMPLES = 25
# Every check but positive_data_acceptance: `object` is documented as any JSON object, so most
# schema-valid bodies are not Mim objects, and their documented answer is 400 naming the field.
_CHECKS = [
    checks.not_a_server_error,
    checks.status_code_conformance,
    checks.content_type_conformance,
    checks.response_schema_conformance,
    checks.response_headers_conformance,
    checks.negative_data_rejection,
]
_SETTINGS = hypothesis.settings(
    max_examples=_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=list(HealthCheck),
)


def _modes(document: dict[str, Any], method: str, path: str) -> tuple[GenerationMode, ...]:
    """Both generation modes; only the positive one for an operation that takes no input (there
    is nothing to make invalid)."""
    raw = document["paths"][path][method]
    if raw.get("parameters") or raw.get("requestBody"):
        return (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    return (GenerationMode.POSITIVE,)


def _fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Drive every operation in ``document`` in its generation modes; the operations run."""
    schema = schemathesis.openapi.from_dict(document)
    ran: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        for mode in _modes(document, operation.method.lower(), operation.path):

            @_SETTINGS
            @hypothesis.given(case=operation.as_strategy(generation_mode=mode))
            def check(case: schemathesis.Case[APIOperation[Any, Any, Any, Any]]) -> None:
                response = case.call(base_url=base_url, timeout=10)
                assert response.status_code < 500, (case.body, response.text)
                case.validate_response(response, checks=_CHECKS)

            check()
            ran.append(f"{operation.method.upper()} {operation.path} {mode.value}")
    return ran


async def test_documented_operations_hold_to_the_openapi(running: Running) -> None:
    """On both listeners, generated requests to every documented operation never get a 5xx and
    every answer has a documented status, content type and body shape; the public listener
    serves no API documents."""
    gw = running.gateway
    assert gw.nc is not None
    await ensure_streams(gw.nc.jetstream(), gw.layout)
    async with httpx.AsyncClient(base_url=running.local) as client:
        local = (await client.get("/openapi.json")).json()
    async with httpx.AsyncClient(base_url=running.url) as client:
        hidden = [(await client.get(p)).status_code for p in ("/openapi.json", "/docs")]
    public = running.apps.public.app.openapi()
    # schemathesis blocks on each request; the gateway serves from this test's event loop
    for document, url in ((local, running.local), (public, running.url)):
        ran = await asyncio.wait_for(asyncio.to_thread(_fuzz, document, url), timeout=120)
        assert "POST /api/submit positive" in ran
        assert "GET /api/objects/{kind}/{fingerprint} negative" in ran
        operations = [(p, m) for p, methods in document["paths"].items() for m in methods]
        assert len(ran) == sum(len(_modes(document, m, p)) for p, m in operations)
    assert "/api/tokens" in local["paths"] and "/api/tokens" not in public["paths"]
    assert hidden == [204, 204]  # the Mim API's answer to a path that is not its own
