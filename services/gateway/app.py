"""The gateway's two apps: the public Mim API (PROTOCOL.md §11) and the operator's local API.

``create_apps(gw, leases, tokens)`` returns both, each behind its
:class:`~services.gateway.edge.Edge` (limits, request metrics, and cached GETs answered without
the framework), serving the running :class:`~services.gateway.state.Gateway` ``gw``; they open
nothing themselves (the service does, see :mod:`services.gateway.service`).

- **public** (``MIM_GATEWAY_HOST:MIM_GATEWAY_PORT``): the Mim API, leased per remote; submission
  only with a token or when the operator opened it; polling of stored objects. No API documents.
- **local** (``MIM_GATEWAY_LOCAL_HOST:MIM_GATEWAY_LOCAL_PORT``, loopback by default): submission
  as the operator, tokens (:mod:`services.gateway.local_api`), polling, and ``/docs`` with
  ``/openapi.json``. No leases: whoever reaches it is trusted.

Every refusal is rendered by :mod:`services.gateway.answers`: a protocol error from its own status
and ``as_dict()``, the framework's own errors in the same ``{"error": {"field", "rule",
"reason"}}`` shape. A client that goes away before its body is read is logged
(``client_disconnected``) and counted with status 499, never as an error.
"""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from mim.errors import MimError
from relay.health import DATABASE_FAILURES
from relay.logging import get_logger
from services.gateway import local_api, mim_api, submissions
from services.gateway.answers import database_unavailable, refusal, refused
from services.gateway.edge import Edge
from services.gateway.remotes import Leases
from services.gateway.state import Gateway
from services.gateway.tokens import TokenBook

__all__ = ["Apps", "create_apps"]

_CLIENT_CLOSED = 499  # the client went away before we answered (no answer reaches it)

_log = get_logger(__name__)


def _install_errors(app: FastAPI, retry_after: int) -> None:
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

    for failure in DATABASE_FAILURES:
        # a query the database could not answer (down, restarting, its connection lost): 503
        @app.exception_handler(failure)
        async def database_down(request: Request, exc: Exception) -> Response:
            return database_unavailable(exc, retry_after)

    @app.exception_handler(ClientDisconnect)
    async def gone(request: Request, exc: ClientDisconnect) -> Response:
        _log.info("client_disconnected", path=request.url.path[:128], method=request.method)
        return Response(status_code=_CLIENT_CLOSED)


@dataclass(frozen=True, slots=True)
class Apps:
    """What uvicorn serves: the public listener's app and the local listener's."""

    public: Edge
    local: Edge


def _public(gw: Gateway, leases: Leases, tokens: TokenBook) -> Edge:
    app = FastAPI(
        title="mimrelay gateway (public)",
        summary="The public Mim API of one relay node, and submission with a token.",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.gateway = gw
    app.state.tokens = tokens
    _install_errors(app, gw.settings.busy_retry_after_seconds)
    submissions.install(app, gw.settings, public=True)

    @app.api_route("/{path:path}", methods=["GET", "HEAD", "POST"], include_in_schema=False)
    async def mim(request: Request, path: str) -> Response:
        if request.method == "POST":
            return await mim_api.post(gw, request, "/" + path)
        return await mim_api.get(gw, request, "/" + path)

    return Edge(app, gw.settings, leases)


def _local(gw: Gateway, tokens: TokenBook) -> Edge:
    app = FastAPI(
        title="mimrelay gateway (local)",
        summary="The operator's API of one relay node: submission, tokens, stored objects.",
    )
    app.state.gateway = gw
    app.state.tokens = tokens
    _install_errors(app, gw.settings.busy_retry_after_seconds)
    submissions.install(app, gw.settings, public=False)
    local_api.install(app)
    return Edge(app, gw.settings)


def create_apps(gw: Gateway, leases: Leases, tokens: TokenBook) -> Apps:
    """The public and the local app serving ``gw``."""
    return Apps(public=_public(gw, leases, tokens), local=_local(gw, tokens))
