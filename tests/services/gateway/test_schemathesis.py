"""schemathesis against the gateway's own OpenAPI document, over HTTP, with NATS and Postgres live.

The document is fetched from the running gateway; every operation in it is driven with generated
requests (valid ones, then invalid ones) and every answer is checked against the document: no
5xx, documented status codes and content types, bodies that match their response schema.
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


def _fuzz(document: dict[str, Any], base_url: str) -> list[str]:
    """Drive every operation in ``document`` in both generation modes; the operations run."""
    schema = schemathesis.openapi.from_dict(document)
    ran: list[str] = []
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

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
    """Generated requests to every documented operation never get a 5xx and every answer has a
    documented status, content type and body shape."""
    gw = running.gateway
    assert gw.nc is not None
    await ensure_streams(gw.nc.jetstream(), gw.layout)
    async with httpx.AsyncClient(base_url=running.url) as client:
        document = (await client.get("/openapi.json")).json()
    # schemathesis blocks on each request; the gateway serves from this test's event loop
    ran = await asyncio.wait_for(asyncio.to_thread(_fuzz, document, running.url), timeout=80)
    assert "POST /api/submit positive" in ran
    assert "GET /api/objects/{kind}/{fingerprint} negative" in ran
    assert len(ran) == 2 * sum(len(methods) for methods in document["paths"].values())
