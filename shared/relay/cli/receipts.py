"""Sending objects through the gateway's ``POST /api/submit``, ``BATCH`` at a time: ``submit``.

The gateway judges each object as the validators will and answers a receipt per object: queued
(with its ingest sequence, to follow it until stored) or rejected with the stage and the reason.
Each object goes as its author wrote it, in a ``{"kind", "object"}`` wrapper. An object the
gateway cannot decode fails its whole batch (400 naming it): it is taken out, counted as rejected
at ``decode``, and the rest of the batch is sent again. A full ingest stream (429) is waited out,
as ``Retry-After`` says, for up to ``full_wait_seconds``; objects of that batch queued before it
filled come back as already queued. Anything else the gateway answers ends the command (exit 1).
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections.abc import Mapping
from typing import Any, Final

import httpx

from relay.cli.api import call, refusal_text
from relay.cli.feed import Fed, Sent, identify
from relay.cli.files import Items
from relay.cli.running import REFUSED, Bar, fail
from relay.wrapped import wrap

__all__ = ["BATCH", "send"]

#: Objects a request; the gateway takes up to ``MIM_GATEWAY_SUBMIT_MAX_OBJECTS`` (1000).
BATCH: Final = 500
_OBJECT_FIELD: Final = re.compile(r"\[(\d+)\]")


def send(
    url: str, items: Items, *, headers: Mapping[str, str], full_wait_seconds: float, bar: Bar
) -> Fed:
    """Submit every ``(where, kind, body)`` of ``items`` at ``url``; every object's :class:`Sent`,
    in order, those the gateway refused among them."""
    fed = Fed()
    for start in range(0, len(items), BATCH):
        batch = items[start : start + BATCH]
        for one in _batch(url, batch, headers, full_wait_seconds):
            if one.refused is not None:
                fed.rejected.append(one)
            elif one.duplicate:
                fed.duplicates += 1
            else:
                fed.queued += 1
            fed.sent.append(one)
        bar.update(len(batch))
    return fed


def _refused(item: tuple[str, str, bytes], stage: str, reason: str) -> Sent:
    where, kind, _ = item
    return Sent(where, kind, "", 0, 0, False, refused=(stage, reason))


def _batch(
    url: str, batch: Items, headers: Mapping[str, str], full_wait_seconds: float
) -> list[Sent]:
    settled: dict[int, Sent] = {}
    pending: list[tuple[int, str]] = []
    for n, (_, kind, body) in enumerate(batch):
        try:
            pending.append((n, wrap(kind, body.decode("utf-8"))))
        except UnicodeDecodeError:
            settled[n] = _refused(batch[n], "decode", "`object`: not UTF-8")
    deadline = time.monotonic() + full_wait_seconds
    json_headers = {**headers, "Content-Type": "application/json"}
    while pending:
        content = ("[" + ",".join(text for _, text in pending) + "]").encode()
        answer = call("POST", url, content=content, headers=json_headers)
        if answer.status_code in (202, 422):
            receipts = answer.json()["queued"]
            for (n, _), receipt in zip(pending, receipts, strict=True):
                settled[n] = _receipt(batch[n], receipt)
            break
        undecodable = _undecodable(answer, len(pending))
        if undecodable is not None:
            n, _ = pending.pop(undecodable[0])
            settled[n] = _refused(batch[n], "decode", undecodable[1])
        elif _full(answer) and time.monotonic() < deadline:
            time.sleep(_retry_after(answer, deadline))
        else:
            fail(f"the gateway refused: {refusal_text(answer)}", REFUSED)
    return [settled[n] for n in range(len(batch))]


def _receipt(item: tuple[str, str, bytes], receipt: dict[str, Any]) -> Sent:
    where, kind, body = item
    verdict = receipt["verdict"]
    if not verdict["ok"]:  # named as it decodes: its fingerprint, or where an address points
        refused = (str(verdict["stage"]), str(verdict["reason"]))
        return dataclasses.replace(identify(where, kind, body, 0, False), refused=refused)
    return identify(where, kind, body, int(receipt.get("sequence", 0)), bool(receipt["duplicate"]))


def _error(answer: httpx.Response) -> dict[str, Any]:
    try:
        error = answer.json()["error"]
    except (ValueError, KeyError, TypeError):
        return {}
    return error if isinstance(error, dict) else {}


def _undecodable(answer: httpx.Response, count: int) -> tuple[int, str] | None:
    """The index of the object a 400 names, and why it does not decode; None if it names none."""
    if answer.status_code != 400:
        return None
    error = _error(answer)
    found = _OBJECT_FIELD.match(str(error.get("field", "")))
    if found is None or int(found[1]) >= count:
        return None
    return int(found[1]), str(error.get("reason", ""))


def _full(answer: httpx.Response) -> bool:
    return answer.status_code == 429 and _error(answer).get("rule") == "submit.full"


def _retry_after(answer: httpx.Response, deadline: float) -> float:
    try:
        wanted = float(answer.headers.get("Retry-After", "1"))
    except ValueError:
        wanted = 1.0
    return max(min(wanted, deadline - time.monotonic()), 0.0)
