"""How the gateway answers: JSON bodies (gzip when it pays) and refusals, each written once.

Every refusal has the body ``{"error": {"field", "rule", "reason", ...}}``: ``field`` names what
was refused, ``rule`` the rule it broke, ``reason`` says it in one line. A refusal that comes from
the protocol core is rendered from the error itself (:func:`refused`: its status and
``as_dict()``, which adds ``stage`` and ``detail``); the gateway's own refusals (a lease, a body
size, a full stream) name theirs with :func:`refusal`.

Every refusal is counted in ``mim_gateway_refusals_total`` by status and rule. A 503 (a bound of
the node's own, or a dependency out of reach) is also logged as ``answered_unavailable``, at most
once per rule every ``UNAVAILABLE_LOG_SECONDS`` with the count held back since, so an operator
sees which bound answered without a line per request under hostile traffic.
"""

from __future__ import annotations

import gzip
import time
from collections.abc import Callable
from typing import Final

from fastapi import Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mim.errors import MimError
from relay.logging import get_logger
from services.gateway import metrics

__all__ = [
    "UNAVAILABLE_LOG_SECONDS",
    "ErrorBody",
    "ErrorDetail",
    "Throttle",
    "database_unavailable",
    "gzipped_json",
    "json_bytes",
    "refusal",
    "refused",
]

_log = get_logger(__name__)

UNAVAILABLE_LOG_SECONDS: Final = 60.0


class Throttle:
    """Lets one line per key through every ``every`` seconds and counts the ones held back."""

    def __init__(self, every: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._every = every
        self._clock = clock
        self._last: dict[str, float] = {}
        self._held: dict[str, int] = {}

    def passes(self, key: str) -> int | None:
        """How many lines of ``key`` were held back since its last one, if this one may be
        written; None (and counted) while the last one is too recent."""
        now = self._clock()
        last = self._last.get(key)
        if last is not None and now - last < self._every:
            self._held[key] = self._held.get(key, 0) + 1
            return None
        self._last[key] = now
        return self._held.pop(key, 0)


_unavailable = Throttle(UNAVAILABLE_LOG_SECONDS)  # keys: rules, a small closed set


class ErrorDetail(BaseModel):
    """What a refusal names."""

    field: str = Field(description="What was refused, e.g. `body`, `post.body`, `remote`.")
    rule: str = Field(description="The rule it broke, e.g. `http.body_size`, `POST_BODY_MAX`.")
    reason: str = Field(description="The refusal in one line, naming the value.")


class ErrorBody(BaseModel):
    """The body of every 4xx and 503 answer."""

    error: ErrorDetail


def refusal(
    status: int, field: str, rule: str, reason: str, *, cause: str = "", **headers: str
) -> JSONResponse:
    """An answer refusing ``field`` under ``rule``, with ``headers`` (e.g. ``Retry-After``).

    ``cause`` (an error's text) goes to the log line of a 503, not to the client.
    """
    metrics.REFUSALS.labels(str(status), rule).inc()
    if status >= 500:
        held = _unavailable.passes(rule)
        if held is not None:
            _log.warning(
                "answered_unavailable",
                status=status,
                rule=rule,
                field=field,
                reason=reason,
                cause=cause[:300],
                held_back=held,
            )
    body = {"error": {"field": field, "rule": rule, "reason": reason}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def database_unavailable(exc: BaseException, retry_after: int) -> JSONResponse:
    """503 with ``Retry-After`` for a request the database could not answer (it is down or
    restarting); logged as one line, never a traceback."""
    reason = "the node's database does not answer now; try again later"
    headers = {"Retry-After": str(retry_after)}
    return refusal(503, "database", "database.unavailable", reason, cause=repr(exc), **headers)


def refused(exc: MimError, status: int | None = None, *, field: str | None = None) -> JSONResponse:
    """The answer to a protocol error: its own status (or ``status``) and ``as_dict()``.

    ``field`` replaces the error's field, e.g. to say which object of a batch it was about.
    """
    detail = exc.as_dict()
    if field is not None:
        detail["field"] = field
    metrics.REFUSALS.labels(str(status or exc.status), exc.rule).inc()
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


def gzipped_json(request: Request, gz: bytes) -> Response:
    """A JSON answer kept gzip-compressed: as it is to a client that accepts gzip, else
    decompressed (``gz`` is the node's own, never a stranger's)."""
    if _gzip_ok(request):
        return json_bytes(request, b"", gz)
    return Response(gzip.decompress(gz), media_type="application/json")
