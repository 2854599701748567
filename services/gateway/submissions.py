"""``POST /api/submit``: a local author hands objects to the ingest stream.

Each object is decoded (so garbage is refused here with 400, naming the field) and queued, in its
canonical bytes, through :func:`relay.submit.submit`; the validator decides later. The answer is
202 with one receipt per object. A full ingest stream answers 429 with ``Retry-After``.
"""

from __future__ import annotations

import json
from typing import Any, Literal

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mim import canonical
from mim.entities import Address, entity_class
from mim.errors import MimError
from relay import BusError, BusUnavailable
from relay.submit import IngestFull, dedupe_id, submit
from services.gateway import metrics
from services.gateway.settings import GatewaySettings

__all__ = ["SubmitItem", "SubmitReceipt", "SubmitResult", "install"]

KindName = Literal["board", "thread", "post", "vote", "key", "truststate", "address"]


class SubmitItem(BaseModel):
    """One object to publish: its kind and its wire JSON."""

    kind: KindName = Field(description="The object's kind.")
    object: dict[str, Any] = Field(description="The object as the protocol encodes it.")


class SubmitReceipt(BaseModel):
    """What happened to one submitted object."""

    kind: KindName
    fingerprint: str = Field(description="The object's fingerprint ('' for an address).")
    id: str = Field(description="The ingest message id (kind:fingerprint:last_update).")
    duplicate: bool = Field(description="Already queued within the dedupe window.")


class SubmitResult(BaseModel):
    """Receipts, in the order the objects were given."""

    queued: list[SubmitReceipt]


class ErrorDetail(BaseModel):
    field: str
    rule: str
    reason: str


class ErrorBody(BaseModel):
    error: ErrorDetail


def _error(status: int, field: str, rule: str, reason: str, **headers: str) -> JSONResponse:
    body = {"error": {"field": field, "rule": rule, "reason": reason}}
    return JSONResponse(body, status_code=status, headers=headers or None)


def install(app: FastAPI, settings: GatewaySettings) -> None:
    """Add the submission route to ``app``."""

    @app.post(
        "/api/submit",
        status_code=202,
        response_model=SubmitResult,
        responses={
            400: {"model": ErrorBody, "description": "An object does not decode."},
            413: {"model": ErrorBody, "description": "Too many objects."},
            429: {"model": ErrorBody, "description": "The ingest stream is full; retry later."},
            503: {"model": ErrorBody, "description": "The message bus did not confirm."},
        },
        summary="Queue objects for validation",
    )
    async def submit_objects(
        request: Request, items: SubmitItem | list[SubmitItem]
    ) -> SubmitResult | JSONResponse:
        batch = items if isinstance(items, list) else [items]
        if len(batch) > settings.submit_max_objects:
            return _error(
                413, "body", "submit.count", f"over {settings.submit_max_objects} objects"
            )
        encoded: list[tuple[SubmitItem, bytes, str]] = []
        for n, item in enumerate(batch):
            try:
                obj = canonical.loads(entity_class(item.kind), json.dumps(item.object))
            except MimError as exc:
                return _error(400, f"[{n}].{exc.field}", exc.rule, exc.reason)
            raw = canonical.encode(obj)
            fingerprint = "" if isinstance(obj, Address) else obj.fingerprint
            encoded.append((item, raw, fingerprint))
        gw = request.app.state.gateway
        receipts: list[SubmitReceipt] = []
        for item, raw, fingerprint in encoded:
            try:
                ack = await submit(gw.nc.jetstream(), gw.layout, item.kind, raw, source="local")
            except IngestFull as exc:
                metrics.SUBMITTED.labels("full").inc()
                retry = str(settings.submit_retry_after_seconds)
                return _error(429, "ingest", "submit.full", str(exc), **{"Retry-After": retry})
            except (BusUnavailable, BusError) as exc:
                metrics.SUBMITTED.labels("unavailable").inc()
                return _error(503, "ingest", "submit.unavailable", str(exc))
            metrics.SUBMITTED.labels("duplicate" if ack.duplicate else "queued").inc()
            receipts.append(
                SubmitReceipt(
                    kind=item.kind,
                    fingerprint=fingerprint,
                    id=dedupe_id(item.kind, raw),
                    duplicate=bool(ack.duplicate),
                )
            )
        return SubmitResult(queued=receipts)
