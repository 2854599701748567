"""The public Mim API (PROTOCOL.md §11) and the local submission endpoints, as one FastAPI app.

``create_app(gw)`` returns the app behind its :class:`~services.gateway.edge.Edge` (limits,
request metrics, and cached GETs answered without the framework), serving the running
:class:`~services.gateway.state.Gateway` ``gw``; it opens nothing itself (the service does, see
:mod:`services.gateway.service`). Every refusal is rendered by :mod:`services.gateway.answers`:
a protocol error from its own status and ``as_dict()``, the framework's own errors in the same
``{"error": {"field", "rule", "reason"}}`` shape.
"""

from __future__ import annotations

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException

from mim.errors import MimError
from services.gateway import mim_api, submissions
from services.gateway.answers import refusal, refused
from services.gateway.edge import Edge
from services.gateway.state import Gateway

__all__ = ["create_app"]


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(MimError)
    async def mim_error(request: Request, exc: MimError) -> Response:
        return refused(exc)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> Response:
        # FastAPI raises these itself, e.g. 400 for a body that is not UTF-8; answer in our shape
        headers = exc.headers or {}
        return refusal(exc.status_code, "request", "http.request", exc.detail, **headers)

    @app.exception_handler(RequestValidationError)
    async def malformed(request: Request, exc: RequestValidationError) -> Response:
        # a body or path that does not fit the documented schema is a malformed request: 400
        first = exc.errors()[0] if exc.errors() else {}
        where = [str(part) for part in first.get("loc", ()) if part not in ("body", "path")]
        rule = "request." + str(first.get("type", "invalid"))
        return refusal(400, ".".join(where) or "request", rule, str(first.get("msg", "invalid")))


def create_app(gw: Gateway) -> Edge:
    """The gateway app serving ``gw`` (the FastAPI app behind its edge)."""
    app = FastAPI(
        title="mimrelay gateway",
        summary="The public Mim API of one relay node, and local submission of objects.",
    )
    app.state.gateway = gw
    _install_errors(app)
    submissions.install(app, gw.settings)

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST"], include_in_schema=False)
    async def mim(request: Request, path: str) -> Response:
        if request.method == "POST":
            return await mim_api.post(gw, request, "/" + path)
        return await mim_api.get(gw, request, "/" + path)

    return Edge(app, gw.settings)
