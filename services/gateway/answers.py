"""How the gateway answers: JSON bodies (gzip when it pays) and refusals, each written once.

Every refusal has the body ``{"error": {"field", "rule", "reason", ...}}``: ``field`` names what
was refused, ``rule`` the rule it broke, ``reason`` says it in one line. A refusal that comes from
the protocol core is rendered from the error itself (:func:`refused`: its status and
``as_dict()``, which adds ``stage`` and ``detail``); the gateway's own refusals (a lease, a body
size, a full stream) name theirs with :func:`refusal`.
"""

from __future__ import annotations

import gzip

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mim.errors import MimError
from relay.logging import get_logger

__all__ = [
    "ErrorBody",
    "ErrorDetail",
    "database_unavailable",
    "json_bytes",
    "refusal",
    "refused",
]

_log = get_logger(__name__)


class ErrorDetail(BaseModel):
    """What a refusal names."""

    field: str = Field(description="What was refused, e.g. `body`, `post.body`, `remote`.")
    rule: str = Field(description="The rule it broke, e.g. `http.body_size`, `POST_BODY_MAX`.")
    reason: str = Field(description="The refusal in one line, naming the value.")


class ErrorBody(BaseModel):
    """The body of every 4xx and 503 answer."""

    error: ErrorDetail


def refusal(status: int, field: str, rule: str, reason: str, **headers: str) -> JSONResponse:
    """An answer refusing ``field`` under ``rule``, with ``headers`` (e.g. ``Retry-After``)."""
    body = {"error": {"field": field, "rule": rule, "reason": reason}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def database_unavailable(exc: BaseException, retry_after: int) -> JSONResponse:
    """503 with ``Retry-After`` for a request the database could not answer (it is down or
    restarting); logged as one line, never a traceback."""
    _log.warning("database_unavailable", error=repr(exc)[:300])
    reason = "the node's database does not answer now; try again later"
    return refusal(
        503, "database", "database.unavailable", reason, **{"Retry-After": str(retry_after)}
    )


def refused(exc: MimError, status: int | None = None, *, field: str | None = None) -> JSONResponse:
    """The answer to a protocol error: its own status (or ``status``) and ``as_dict()``.

    ``field`` replaces the error's field, e.g. to say which object of a batch it was about.
    """
    detail = exc.as_dict()
    if field is not None:
        detail["field"] = field
    return JSONResponse({"error": detail}, status_code=status or exc.status)


def _gzip_ok(request: Request) -> bool:
    return "gzip" in request.headers.get("accept-encoding", "")


def json_bytes(
    request: Request, body: bytes, gz: bytes | None = None, min_gzip: int = 512
) -> Response:
    """A JSON answer, gzip-encoded when the client accepts it and it is worth it."""
    if _gzip_ok(request) and (gz is not None or len(body) >= min_gzip):
        payload = gz if gz is not None else gzip.compress(body, 6, mtime=0)
        return Response(
            payload,
            media_type="application/json",
            headers={"Content-Encoding": "gzip", "Vary": "Accept-Encoding"},
        )
    return Response(body, media_type="application/json")
