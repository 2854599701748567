"""Bearer tokens: who may submit on the public listener, and how fast.

A token is ``mim_<id>_<secret>``: 8 hex digits of public id, then 32 random bytes; the table
(:mod:`relay.db.tokens`) keeps only its SHA-256 digest. Tokens are made, listed and revoked on
the local listener (``mimrelay token``); every replica re-reads the working ones every
``token_refresh_seconds``, so a revoked token stops working within that time on all of them.

A request that brings ``Authorization: Bearer <token>`` is admitted when the token works and the
objects it submits fit the token's rate (objects per minute, counted for the whole node in the
``RATES`` bucket); otherwise it is refused 401 (no or unknown token) or 429 (over its rate).
"""

from __future__ import annotations

import asyncio
import hashlib
import secrets
import time
from dataclasses import dataclass
from typing import Final

import asyncpg

from relay import BusError, BusUnavailable
from relay.db import tokens
from relay.db.tokens import StoredToken
from relay.kv import Bucket, spend
from relay.logging import get_logger
from services.gateway import metrics

__all__ = ["Admission", "NewToken", "TokenBook", "digest"]

_PREFIX: Final = "mim_"
_RATE_WINDOW_SECONDS: Final = 60

_log = get_logger(__name__)


def digest(token: str) -> str:
    """What the table keeps of ``token``."""
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


@dataclass(frozen=True, slots=True)
class NewToken:
    """A token just made: the only time the token itself is known."""

    id: str
    name: str
    token: str
    rate_per_minute: int


@dataclass(frozen=True, slots=True)
class Admission:
    """The answer to a token: admitted, or refused with ``status``, ``rule`` and one line."""

    status: int = 0
    rule: str = ""
    reason: str = ""

    @property
    def admitted(self) -> bool:
        return self.status == 0


class TokenBook:
    """The working tokens, as one replica knows them, and their rates."""

    def __init__(
        self,
        pool: asyncpg.Pool,
        rates: Bucket,
        *,
        refresh_seconds: float,
        default_rate: int,
        most: int,
    ) -> None:
        self._pool = pool
        self._rates = rates
        self._refresh = refresh_seconds
        self._default_rate = default_rate
        self._most = most
        self._known: dict[str, StoredToken] = {}
        self._read_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _current(self) -> dict[str, StoredToken]:
        if time.monotonic() - self._read_at < self._refresh:
            return self._known
        async with self._lock:
            if time.monotonic() - self._read_at >= self._refresh:
                self._known = {t.digest: t for t in await tokens.active(self._pool)}
                self._read_at = time.monotonic()
        return self._known

    async def admit(self, authorization: str, objects: int) -> Admission:
        """Whether ``Authorization: <authorization>`` may submit ``objects`` objects now."""
        scheme, _, given = authorization.partition(" ")
        if scheme.lower() != "bearer" or not given.strip().startswith(_PREFIX):
            metrics.TOKEN_REFUSALS.labels("missing").inc()
            return Admission(401, "auth.token", "need `Authorization: Bearer mim_...`")
        token = (await self._current()).get(digest(given.strip()))
        if token is None:
            metrics.TOKEN_REFUSALS.labels("unknown").inc()
            return Admission(401, "auth.token", "unknown or revoked token")
        try:
            within = await spend(
                self._rates,
                f"token.{token.id}",
                limit=token.rate_per_minute,
                seconds=_RATE_WINDOW_SECONDS,
                now=int(time.time()),
                amount=objects,
            )
        except (BusUnavailable, BusError) as exc:
            _log.warning("token_rate_unavailable", error=str(exc))
            return Admission(503, "auth.unavailable", "token rates cannot be read now")
        if not within:
            metrics.TOKEN_REFUSALS.labels("rate").inc()
            reason = f"token {token.id} is over {token.rate_per_minute} objects a minute"
            return Admission(429, "auth.rate", reason)
        return Admission()

    async def create(self, name: str, rate: int | None) -> NewToken | None:
        """A new token named ``name``; None if ``tokens_max`` tokens work already."""
        token_id = secrets.token_hex(4)
        token = f"{_PREFIX}{token_id}_{secrets.token_urlsafe(32)}"
        per_minute = rate or self._default_rate
        made = await tokens.create(
            self._pool,
            token_id=token_id,
            name=name,
            digest=digest(token),
            rate=per_minute,
            now=int(time.time()),
            most=self._most,
        )
        self._read_at = float("-inf")
        return NewToken(token_id, name, token, per_minute) if made else None

    async def revoke(self, token_id: str) -> bool:
        """Revoke ``token_id``; whether it worked until now."""
        done = await tokens.revoke(self._pool, token_id, int(time.time()))
        self._read_at = float("-inf")
        return done

    async def listing(self) -> list[StoredToken]:
        return await tokens.listing(self._pool)
