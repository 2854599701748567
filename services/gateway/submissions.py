"""``POST /api/submit`` and ``GET /api/objects/{kind}/{fingerprint}``: how a local author publishes.

Each submitted object is decoded (an object that does not decode makes the request malformed: 400,
naming the field, and nothing is queued), then judged by :func:`mim.verify.verify_entity` under
the node's acceptance policy, the same :class:`relay.policy.PolicySettings` the validators read.
An accepted object is queued, in the canonical bytes its verdict carries, through
:func:`relay.submit.submit`; a rejected one is not queued. Every receipt carries its verdict
(``ok``, and for a rejection the ``stage``, ``reason``, ``field`` and ``rule``). The answer is
202 when at least one object was queued and 422 when none was; a full ingest stream answers 429
with ``Retry-After``.

The validators re-check everything they take from the ingest stream, and only they apply the
operator's block list, so an accepted receipt means "valid and queued", not yet "stored". Whether
it was stored is answered by polling ``GET /api/objects/{kind}/{fingerprint}``: 200 with the stored
canonical object once the store holds it, 404 until then.

Verification is CPU work (about 0.16 ms per object); a batch larger than :data:`INLINE_VERIFY_MAX`
is judged in a worker thread so the event loop keeps serving meanwhile.

Who may submit depends on the listener (``install(..., public=...)``). On the local listener,
whoever reaches it submits as the operator. On the public listener a submission needs a token
(``Authorization: Bearer``, :mod:`services.gateway.tokens`; 401 without one that works, 429 past
its rate), unless the operator opened public submission (``MIM_GATEWAY_PUBLIC_SUBMIT``): then it
is taken without a token under the network's rules only, objects at the node's proof-of-work
minimum and no addresses (403), which reach a node only from their own nodes (§13.6). An address
submitted where addresses are taken must name a place the node may dial
(:func:`relay.location.checked`), or its receipt says why not (stage ``address``).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from typing import Any, Final, Literal

from fastapi import FastAPI, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from mim import bounds, canonical
from mim.entities import Address, Entity, entity_class
from mim.errors import MimError, OutOfBounds
from mim.verify import Policy, Verdict, verify_entity
from relay import AddressRefused, BusError, BusUnavailable
from relay.db import objects
from relay.location import AddressRules, checked
from relay.submit import IngestFull, dedupe_id, submit
from relay.wrapped import unwrap
from services.gateway import metrics
from services.gateway.answers import ErrorBody, refusal, refused
from services.gateway.settings import GatewaySettings
from services.gateway.state import Gateway
from services.gateway.tokens import TokenBook

__all__ = [
    "INLINE_VERIFY_MAX",
    "ObjectVerdict",
    "StoredObjectAnswer",
    "SubmitItem",
    "SubmitReceipt",
    "SubmitResult",
    "install",
]

#: Largest batch judged on the event loop: 32 objects hold it for about 5 ms.
INLINE_VERIFY_MAX: Final = 32

KindName = Literal["board", "thread", "post", "vote", "key", "truststate", "address"]
StoredKindName = Literal["board", "thread", "post", "vote", "key", "truststate"]


class SubmitItem(BaseModel):
    """One object to publish: its kind and its wire JSON."""

    kind: KindName = Field(description="The object's kind.")
    object: dict[str, Any] = Field(description="The object as the protocol encodes it.")


class ObjectVerdict(BaseModel):
    """The node's decision on one object, as the validators would reach it."""

    ok: bool = Field(description="The object is valid under this node's policy (and was queued).")
    stage: str = Field(
        description="The first check it failed: bounds, fingerprint, signature, pow or update"
        " ('' when ok)."
    )
    reason: str = Field(description="Why it failed, naming the value ('' when ok).")
    field: str = Field(description="The field that failed, e.g. `post.body` ('' when ok).")
    rule: str = Field(description="The rule that failed, e.g. `POST_BODY_MAX` ('' when ok).")


class SubmitReceipt(BaseModel):
    """What happened to one submitted object."""

    kind: KindName
    fingerprint: str = Field(description="The object's fingerprint ('' for an address).")
    id: str = Field(
        description="The ingest message id (kind:fingerprint:last_update:digest); '' if not queued."
    )
    duplicate: bool = Field(description="Already queued within the dedupe window.")
    sequence: int = Field(
        0,
        description="The message's sequence in the ingest stream, which a validator's rejection"
        " record names (that of the first copy when a duplicate); 0 if not queued.",
    )
    verdict: ObjectVerdict = Field(description="Accepted and queued, or rejected and why.")


class SubmitResult(BaseModel):
    """Receipts, in the order the objects were given (rejected ones included, not queued)."""

    queued: list[SubmitReceipt]


class StoredObjectAnswer(BaseModel):
    """One object as the store holds it."""

    kind: StoredKindName
    fingerprint: str
    last_update: int = Field(description="The stored version's `last_update` (0: never updated).")
    object: dict[str, Any] = Field(description="The stored object, in its canonical JSON.")


def _judge(
    batch: Sequence[tuple[SubmitItem, Entity]], policy: Policy, rules: AddressRules
) -> list[Verdict]:
    # an accepted verdict carries the object's canonical bytes, which are what gets queued: a
    # validator decodes them back to this very object, so it reaches this verdict too
    return [_verdict_of(entity, policy, rules) for _, entity in batch]


def _verdict_of(entity: Entity, policy: Policy, rules: AddressRules) -> Verdict:
    if isinstance(entity, Address):
        try:
            entity = checked(entity, rules)
        except AddressRefused as exc:
            return Verdict("address", False, "address", exc.reason, exc.field, exc.rule)
    return verify_entity(entity, policy)


def _verdict(v: Verdict) -> ObjectVerdict:
    return ObjectVerdict(ok=v.ok, stage=v.stage, reason=v.reason, field=v.field, rule=v.rule)


def _decode(batch: Sequence[SubmitItem]) -> list[tuple[SubmitItem, Entity]] | JSONResponse:
    """Each item with its object, or the 400 naming the first one that does not decode."""
    decoded: list[tuple[SubmitItem, Entity]] = []
    for n, item in enumerate(batch):
        try:
            kind, body = unwrap(json.dumps({"kind": item.kind, "object": item.object}))
            obj = canonical.loads(entity_class(kind), body)
        except MimError as exc:
            return refused(exc, 400, field=f"[{n}].{exc.field}")
        decoded.append((item, obj))
    return decoded


async def _queue(
    gw: Gateway,
    settings: GatewaySettings,
    batch: Sequence[SubmitItem],
    verdicts: Sequence[Verdict],
) -> list[SubmitReceipt] | JSONResponse:
    """Queue each accepted object; the receipts, or the 429/503 that stopped the batch."""
    receipts: list[SubmitReceipt] = []
    for item, verdict in zip(batch, verdicts, strict=True):
        receipt = SubmitReceipt(
            kind=item.kind,
            fingerprint=verdict.fingerprint,
            id="",
            duplicate=False,
            sequence=0,
            verdict=_verdict(verdict),
        )
        receipts.append(receipt)
        if not verdict.ok:
            metrics.SUBMITTED.labels("rejected").inc()
            continue
        raw = verdict.canonical
        try:
            ack = await submit(gw.nc.jetstream(), gw.layout, item.kind, raw, source="local")
        except IngestFull as exc:
            metrics.SUBMITTED.labels("full").inc()
            retry = str(settings.submit_retry_after_seconds)
            return refusal(429, "ingest", "submit.full", str(exc), **{"Retry-After": retry})
        except (BusUnavailable, BusError) as exc:
            metrics.SUBMITTED.labels("unavailable").inc()
            return refusal(503, "ingest", "submit.unavailable", str(exc))
        metrics.SUBMITTED.labels("duplicate" if ack.duplicate else "queued").inc()
        receipt.id = dedupe_id(item.kind, raw)
        receipt.duplicate = bool(ack.duplicate)
        receipt.sequence = ack.seq
    return receipts


def _stored_answer(stored: objects.StoredObject) -> Response:
    # the stored bytes go out as they are: the canonical encoding, not a re-serialisation
    head = json.dumps(
        {"kind": stored.kind, "fingerprint": stored.fingerprint, "last_update": stored.last_update}
    )
    return Response(f'{head[:-1]},"object":{stored.body}}}', media_type="application/json")


def _public_gate(settings: GatewaySettings, batch: Sequence[SubmitItem]) -> JSONResponse | None:
    """Without a token on the public listener: the refusal, or None if public submission is on
    and the batch holds no address."""
    if not settings.public_submit:
        reason = "submitting here needs a token; or use the node's local API"
        return refusal(
            401, "authorization", "auth.required", reason, **{"WWW-Authenticate": "Bearer"}
        )
    for n, item in enumerate(batch):
        if item.kind == "address":
            reason = "addresses reach this node only from their own nodes (§13.6)"
            return refusal(403, f"[{n}].kind", "submit.public_address", reason)
    return None


async def _admitted(
    request: Request, settings: GatewaySettings, batch: Sequence[SubmitItem]
) -> JSONResponse | None:
    """None if the public listener takes ``batch`` from this request, else the refusal."""
    authorization = request.headers.get("authorization")
    if authorization is None:
        return _public_gate(settings, batch)
    book: TokenBook = request.app.state.tokens
    admission = await book.admit(authorization, len(batch))
    if admission.admitted:
        return None
    headers = {"WWW-Authenticate": "Bearer"} if admission.status == 401 else {}
    if admission.status == 429:
        headers["Retry-After"] = "60"
    field = "body" if admission.status == 429 else "authorization"
    return refusal(admission.status, field, admission.rule, admission.reason, **headers)


def _submit_answers(public: bool) -> dict[int | str, dict[str, Any]]:
    answers: dict[int | str, dict[str, Any]] = {
        202: {"description": "At least one object was valid and queued."},
        400: {"model": ErrorBody, "description": "The body or an object does not decode."},
        413: {"model": ErrorBody, "description": "Too many objects."},
        422: {"model": SubmitResult, "description": "Every object was rejected; none queued."},
        429: {"model": ErrorBody, "description": "The ingest stream is full; retry later."},
        503: {"model": ErrorBody, "description": "The message bus did not confirm."},
    }
    if public:
        answers[401] = {"model": ErrorBody, "description": "No token, or one that does not work."}
        answers[403] = {"model": ErrorBody, "description": "An address, without a token."}
        answers[429] = {
            "model": ErrorBody,
            "description": "The ingest stream is full, or the remote has no lease, or the token"
            " is over its rate; retry later.",
        }
        answers[503]["description"] = "The message bus or the lease state did not answer."
    return answers


def install(app: FastAPI, settings: GatewaySettings, *, public: bool) -> None:
    """Add the submission and polling routes to ``app``: those of the public listener (a token,
    or open public submission) or of the local one (the operator's)."""
    _install_submit(app, settings, public=public)
    _install_objects(app, public=public)


def _install_submit(app: FastAPI, settings: GatewaySettings, *, public: bool) -> None:
    policy = settings.policy()
    rules = settings.address_rules()

    @app.post(
        "/api/submit",
        status_code=202,
        response_model=SubmitResult,
        responses=_submit_answers(public),
        summary="Verify objects and queue the valid ones for the validators",
    )
    async def submit_objects(
        request: Request, items: SubmitItem | list[SubmitItem]
    ) -> SubmitResult | JSONResponse:
        batch = items if isinstance(items, list) else [items]
        if len(batch) > settings.submit_max_objects:
            return refusal(
                413, "body", "submit.count", f"over {settings.submit_max_objects} objects"
            )
        if public:
            gate = await _admitted(request, settings, batch)
            if gate is not None:
                return gate
        decoded = _decode(batch)
        if isinstance(decoded, JSONResponse):
            return decoded
        if len(decoded) > INLINE_VERIFY_MAX:
            verdicts = await asyncio.to_thread(_judge, decoded, policy, rules)
        else:
            verdicts = _judge(decoded, policy, rules)
        receipts = await _queue(request.app.state.gateway, settings, batch, verdicts)
        if isinstance(receipts, JSONResponse):
            return receipts
        result = SubmitResult(queued=receipts)
        if not any(r.verdict.ok for r in receipts):
            return JSONResponse(result.model_dump(), status_code=422)
        return result


def _install_objects(app: FastAPI, *, public: bool) -> None:
    @app.get(
        "/api/objects/{kind}/{fingerprint}",
        response_model=StoredObjectAnswer,
        responses={
            400: {
                "model": ErrorBody,
                "description": "Not a kind the store holds, or a control character (NUL).",
            },
            404: {"model": ErrorBody, "description": "The store does not hold this object (yet)."},
            422: {"model": ErrorBody, "description": "Not a fingerprint (over 64 bytes, or NUL)."},
            **(
                {
                    429: {"model": ErrorBody, "description": "The remote has no lease now."},
                    503: {"model": ErrorBody, "description": "The lease state did not answer."},
                }
                if public
                else {}
            ),
        },
        summary="The stored version of one object, to poll after a submission",
    )
    async def stored_object(
        request: Request, kind: StoredKindName, fingerprint: str
    ) -> StoredObjectAnswer | Response:
        size = len(fingerprint.encode("utf-8", "surrogatepass"))
        if size > bounds.FINGERPRINT_MAX:
            raise OutOfBounds(
                "fingerprint", "FINGERPRINT_MAX", f"{size} bytes is over {bounds.FINGERPRINT_MAX}"
            )
        if not fingerprint.isprintable():
            # no stored fingerprint holds one, and the database refuses NUL in text
            reason = "holds a control character (NUL included)"
            return refusal(400, "fingerprint", "request.fingerprint_text", reason)
        stored = await objects.get(request.app.state.gateway.read_pool, kind, fingerprint)
        if stored is None:
            return refusal(
                404, "fingerprint", "object.not_stored", f"no stored {kind} {fingerprint}"
            )
        return _stored_answer(stored)
