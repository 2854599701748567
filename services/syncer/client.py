"""One HTTP client pool for every remote (PROTOCOL.md §11.1, §16).

Keep-alive connections are reused and closed after ``idle_seconds`` unused; timeouts are the
reference's (connect 20 s, whole request 60 s); TLS is never verified (reference nodes present an
expired self-signed certificate). A remote's scheme is the one its address names; ``auto`` tries
HTTPS first and falls back to plain HTTP, and remembers what answered. Bodies are read up to
``max_page_bytes``. A host name is dialled only at an address the rules allow
(:mod:`services.syncer.dial`). Every httpx error becomes :class:`FetchError` here, at the edge.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

import httpx

from relay import AddressRefused, RelayError
from relay.location import AddressRules
from services.syncer import metrics
from services.syncer.dial import CheckedBackend, checked_transport
from services.syncer.peers import Remote

__all__ = ["Client", "FetchError", "Tally"]

_JSON: Final = {"Content-Type": "application/json", "Accept-Encoding": "gzip"}


class FetchError(RelayError):
    """A remote did not answer usefully: unreachable, timed out, a bad status, a body too large."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


@dataclass
class Tally:
    """Requests and body bytes of one sync, by page type."""

    pages: dict[str, int] = field(default_factory=dict)
    bytes: int = 0

    def add(self, page: str, size: int) -> None:
        self.pages[page] = self.pages.get(page, 0) + 1
        self.bytes += size


class Client:
    """The node's outbound HTTP pool; ``await client.aclose()`` when done."""

    def __init__(
        self,
        *,
        connect_timeout: float = 20.0,
        request_timeout: float = 60.0,
        idle_seconds: float = 120.0,
        max_connections: int = 32,
        max_page_bytes: int = 150_000_000,
        scheme: str = "auto",
        rules: AddressRules | None = None,
        backend: CheckedBackend | None = None,
    ) -> None:
        limits = httpx.Limits(
            max_connections=max_connections,
            max_keepalive_connections=max_connections,
            keepalive_expiry=idle_seconds,
        )
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(request_timeout, connect=connect_timeout),
            follow_redirects=False,
            transport=checked_transport(
                backend or CheckedBackend(rules or AddressRules()),
                verify=False,  # reference nodes self-sign; nobody verifies (§11.1)
                limits=limits,
            ),
        )
        self._request_timeout = request_timeout
        self._max_bytes = max_page_bytes
        self._default = scheme
        self._schemes: dict[tuple[str, int], str] = {}

    async def aclose(self) -> None:
        await self._http.aclose()

    def _candidates(self, remote: Remote) -> list[str]:
        known = remote.scheme or self._schemes.get((remote.host, remote.port))
        if known:
            return [known]
        return ["https", "http"] if self._default == "auto" else [self._default]

    async def request(
        self,
        remote: Remote,
        method: str,
        path: str,
        *,
        body: bytes | None = None,
        page: str = "page",
        tally: Tally | None = None,
    ) -> tuple[int, bytes]:
        """``(status, body)`` of one request to ``remote``; raises ``FetchError``."""
        candidates = self._candidates(remote)
        for n, scheme in enumerate(candidates):
            url = f"{scheme}://{remote.netloc}/{path.lstrip('/')}"
            try:
                status, data = await self._send(method, url, body)
            except FetchError as exc:
                if exc.reason in ("unreachable", "http") and n + 1 < len(candidates):
                    continue  # a TLS hello to a plain-HTTP server fails here: try the next
                raise
            self._schemes[(remote.host, remote.port)] = scheme
            metrics.PAGES_FETCHED.labels(page).inc()
            metrics.BYTES_FETCHED.inc(len(data))
            if tally is not None:
                tally.add(page, len(data))
            return status, data
        raise FetchError("unreachable", "no scheme to try")  # pragma: no cover - never empty

    async def _send(self, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
        headers: Mapping[str, str] = _JSON if body is not None else {"Accept-Encoding": "gzip"}
        deadline = time.monotonic() + self._request_timeout
        try:
            async with self._http.stream(method, url, content=body, headers=headers) as response:
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self._max_bytes:
                        raise FetchError("too_large", f"over {self._max_bytes} bytes")
                    if time.monotonic() > deadline:
                        raise FetchError("timeout", "body took too long")
                    chunks.append(chunk)
                return response.status_code, b"".join(chunks)
        except AddressRefused as exc:
            raise FetchError("refused_place", exc.reason) from exc
        except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
            raise FetchError("unreachable", repr(exc)) from exc
        except httpx.TimeoutException as exc:
            raise FetchError("timeout", repr(exc)) from exc
        except (httpx.HTTPError, OSError) as exc:
            raise FetchError("http", repr(exc)) from exc
