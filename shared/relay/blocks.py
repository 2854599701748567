"""The operator's block list as every process sees it: names, the bucket, and requests.

An entry names a fingerprint (of a key, board, thread, post, vote or truststate) or, for
addresses, a host. The store owns the list: it keeps the record (the ``blocks`` table,
:mod:`relay.db.blocks`) and its mirror, the NATS key-value bucket ``<PREFIX>_BLOCKLIST``, which
validators watch so a change reaches every replica within moments. Anyone else changes the list by
asking the store over NATS (:func:`ask`), which is what ``mimrelay block`` does.

Bucket entries: key :func:`kv_key` of the target, value the JSON :func:`record`. Requests go to
``Layout.blocks_subject`` (served by the store's queue group) as JSON ``{"op": "add" | "remove" |
"list" | "sync", "target": ..., "reason": ...}``; the answer is JSON with ``ok`` and either the
result or ``error``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final, Literal

import nats.errors
from nats.aio.client import Client as NATS

from relay import BusUnavailable, RelayError
from relay.bus import Layout

__all__ = [
    "MAX_TARGET_LENGTH",
    "Op",
    "Refused",
    "ask",
    "decode_record",
    "kv_key",
    "normalise",
    "record",
]

#: A fingerprint is at most 64 bytes (PROTOCOL.md §1); a host name at most 253 characters.
MAX_TARGET_LENGTH: Final = 253
_PLAIN_KEY: Final = re.compile(r"^[a-z0-9_-]{1,64}$")

Op = Literal["add", "remove", "list", "sync"]


class Refused(RelayError):
    """The store refused a block request (a bad target); the message says why."""


def normalise(target: str) -> str:
    """``target`` as stored: trimmed, lower case; ``ValueError`` naming the rule if unusable."""
    name = target.strip().lower()
    if not name:
        raise ValueError("`fingerprint`: must not be empty")
    if len(name) > MAX_TARGET_LENGTH:
        raise ValueError(f"`fingerprint`: {len(name)} characters is over {MAX_TARGET_LENGTH}")
    if any(ch.isspace() for ch in name):
        raise ValueError("`fingerprint`: must not contain white space")
    return name


def kv_key(target: str) -> str:
    """The bucket key of ``target``: itself when it is a plain token, else ``h.<hex of UTF-8>``."""
    return target if _PLAIN_KEY.match(target) else "h." + target.encode().hex()


def record(target: str, reason: str, created_at: float) -> bytes:
    """The bucket value of one entry."""
    return json.dumps({"target": target, "reason": reason, "created_at": created_at}).encode()


def decode_record(value: bytes | None) -> dict[str, Any] | None:
    """A bucket value as a dict with a string ``target``, or None if it is not one."""
    try:
        decoded = json.loads(value or b"")
    except ValueError:
        return None
    if not isinstance(decoded, dict) or not isinstance(decoded.get("target"), str):
        return None
    return decoded


async def ask(
    nc: NATS,
    layout: Layout,
    op: Op,
    *,
    target: str = "",
    reason: str = "",
    wait_seconds: float = 10.0,
) -> Mapping[str, Any]:
    """Ask the store to change or list the block list; its answer.

    Raises ``BusUnavailable`` when no store answers, ``Refused`` when it refuses the request.
    """
    payload = json.dumps({"op": op, "target": target, "reason": reason}).encode()
    try:
        reply = await nc.request(layout.blocks_subject, payload, timeout=wait_seconds)
    except nats.errors.NoRespondersError as exc:
        raise BusUnavailable("no store is running to keep the block list") from exc
    except nats.errors.TimeoutError as exc:
        raise BusUnavailable(f"the store did not answer within {wait_seconds} s") from exc
    answer = json.loads(reply.data)
    if not answer.get("ok"):
        raise Refused(str(answer.get("error", "refused")))
    return dict(answer)
