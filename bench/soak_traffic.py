"""The traffic of the soak and chaos runs, on a node's public API only.

Four loops share one :class:`Traffic` until its stop event is set:

- submissions: every second, ``rate`` objects from the forge (every kind, updates included) in one
  ``POST /api/submit``; each receipt goes to the :class:`Ledger`. A batch that got no answer (the
  gateway killed, NATS down: 5xx, 429, a dropped connection) is sent again with the next one, so
  what it held is either confirmed later or left uncertain, never counted as accepted;
- a GET crawler: ``/v0/status``, ``/v0/node``, then each endpoint's ``index.json`` and the
  manifest and pages of its newest cache, ``crawl_rate`` requests a second;
- POST queries: every ``query_every`` seconds a signed request for the posts since the previous
  one less ``query_overlap`` seconds, as a syncing peer asks from its cursor (route
  ``query_range``), and every ``lookup_every`` seconds between them one for a single post by
  fingerprint (``query_one``);
- a hostile trickle: one case of ``soak_forge.HOSTILE`` every ``hostile_every`` seconds, in turn;
  an answer outside the case's expected statuses is kept in ``unexpected``.

Every answer is counted by route and status; latencies (seconds) are kept per route until the
sampler takes them each minute.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Final, TypeVar

import httpx

import soak_forge
from mim.kinds import PLURALS
from soak_forge import HOSTILE, Wire

__all__ = ["Ledger", "Traffic"]

T = TypeVar("T")

_JSON: Final = {"Content-Type": "application/json"}
_TIMEOUT: Final = httpx.Timeout(30.0, connect=5.0)
_PAGES_PER_CACHE: Final = 8
_RESEND_MAX: Final = 5000  # unanswered objects kept for sending again
_BEHIND_MAX: Final = 5.0  # seconds of submissions made up after a stall; older ones are skipped


class Ledger:
    """What was sent and what the node confirmed it queued.

    ``accepted`` maps ``(kind, fingerprint)`` to the newest ``last_update`` the node queued;
    ``sent`` holds every object ever sent (accepted or not), so a stored object that was never
    sent shows up as made up.
    """

    def __init__(self) -> None:
        self.accepted: dict[tuple[str, str], int] = {}
        self.sent: set[tuple[str, str]] = set()
        self.outcomes: Counter[str] = Counter()

    def sending(self, wires: Iterable[Wire]) -> None:
        self.sent.update((w.kind, w.fingerprint) for w in wires)

    def receipts(self, wires: Sequence[Wire], receipts: Sequence[dict[str, Any]]) -> None:
        """Record a 202 or 422 answer: each receipt, in the order the objects were sent."""
        for wire, receipt in zip(wires, receipts, strict=True):
            if not receipt.get("verdict", {}).get("ok") or not receipt.get("id"):
                self.outcomes["rejected"] += 1
                continue
            self.outcomes["duplicate" if receipt.get("duplicate") else "queued"] += 1
            key = (wire.kind, wire.fingerprint)
            self.accepted[key] = max(self.accepted.get(key, -1), wire.last_update)


class Traffic:
    """The loops of the module docstring against one node's API."""

    def __init__(
        self,
        api_url: str,
        submit_url: str,
        forge: ProcessPoolExecutor,
        *,
        rate: float,
        crawl_rate: float = 5.0,
        query_every: float = 60.0,
        query_overlap: int = 120,
        lookup_every: float = 10.0,
        hostile_every: float = 3.0,
        token: str = "",
        tolerant: bool = False,
    ) -> None:
        self.api_url = api_url
        self.submit_url = submit_url
        self.forge = forge
        self.rate = rate
        self.crawl_rate = crawl_rate
        self.query_every = query_every
        self.query_overlap = query_overlap
        self.lookup_every = lookup_every
        self.hostile_every = hostile_every
        self.tolerant = tolerant
        self.ledger = Ledger()
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.server_errors: Counter[str] = Counter()  # "route status rule" of each 5xx
        self.latencies: defaultdict[str, list[float]] = defaultdict(list)
        self.unexpected: list[str] = []
        self.hostile: Counter[tuple[str, int]] = Counter()
        self._resend: list[Wire] = []
        self._headers = {**_JSON, **({"Authorization": f"Bearer {token}"} if token else {})}

    # --- running -------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """All four loops until ``stop`` is set."""
        async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
            loops = [self._submitting, self._crawling, self._querying, self._hostile]
            await asyncio.gather(*(loop(http, stop) for loop in loops))

    async def begin(self) -> None:
        """Send the first authors, boards and threads, which everything else refers to."""
        first = await self._in_forge(soak_forge.first, int(time.time()))
        async with httpx.AsyncClient(timeout=_TIMEOUT) as http:
            await self.submit(http, first)

    def take_latencies(self) -> dict[str, list[float]]:
        """The latencies recorded since the last call, per route."""
        taken, self.latencies = dict(self.latencies), defaultdict(list)
        return taken

    async def _in_forge(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.forge, fn, *args)

    async def _call(
        self, http: httpx.AsyncClient, route: str, method: str, url: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        """One request, counted (and timed, unless hostile); status 0 when nothing answered."""
        started = time.perf_counter()
        try:
            answer = await http.request(method, url, content=body, headers=self._headers)
        except httpx.HTTPError:
            self.statuses[route, 0] += 1
            return 0, b""
        if route != "hostile":
            self.latencies[route].append(time.perf_counter() - started)
        self.statuses[route, answer.status_code] += 1
        if answer.status_code >= 500:
            self.server_errors[f"{route} {answer.status_code} {_rule_of(answer.content)}"] += 1
        return answer.status_code, answer.content

    # --- the loops -----------------------------------------------------------------------------

    async def _submitting(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        owed = 0.0
        tick = time.monotonic()
        while not stop.is_set():
            owed += self.rate
            count, owed = int(owed), owed - int(owed)
            wires = await self._in_forge(soak_forge.batch, count, int(time.time()))
            await self.submit(http, [*self._resend, *wires])
            tick = max(tick + 1.0, time.monotonic() - _BEHIND_MAX)
            await _pause(stop, tick - time.monotonic())

    async def submit(self, http: httpx.AsyncClient, wires: list[Wire]) -> None:
        """Send ``wires`` in one request; keep them for the next one if it got no receipts."""
        self._resend = []
        if not wires:
            return
        self.ledger.sending(wires)
        body = ("[" + ",".join(_item(w) for w in wires) + "]").encode()
        status, answer = await self._call(
            http, "submit", "POST", f"{self.submit_url}/api/submit", body
        )
        if status in (202, 422):
            try:
                receipts = json.loads(answer)["queued"]
            except (ValueError, KeyError, TypeError):
                self.unexpected.append(f"submit {status}: {answer[:200]!r}")
                return
            self.ledger.receipts(wires, receipts)
            return
        if self._unexpected(status, (202, 422)):
            self.unexpected.append(f"submit {status}: {answer[:200]!r}")
        self._resend = wires[-_RESEND_MAX:]

    async def _crawling(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        pause = 1.0 / self.crawl_rate
        while not stop.is_set():
            for route, path in await self._crawl_plan(http):
                if stop.is_set():
                    return
                await self._call(http, route, "GET", f"{self.api_url}/{path}")
                await _pause(stop, pause)
            await _pause(stop, pause)

    async def _crawl_plan(self, http: httpx.AsyncClient) -> list[tuple[str, str]]:
        """The requests of one round: the node's pages, then each endpoint's newest cache."""
        plan = [("status", "v0/status"), ("node", "v0/node")]
        for plural in PLURALS.values():
            folder = "v0/addresses" if plural == "addresses" else f"v0/c0/{plural}"
            status, raw = await self._call(
                http, "index", "GET", f"{self.api_url}/{folder}/index.json"
            )
            results = _results(raw) if status == 200 else []
            if not results:
                continue
            base = f"{folder}/{results[-1]}"
            if plural != "addresses":
                plan.append(("manifest", f"{base}/manifest/0.json"))
            plan += [("page", f"{base}/{n}.json") for n in range(_PAGES_PER_CACHE)]
        return plan

    async def _querying(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        url = f"{self.api_url}/v0/c0/posts"
        cursor = due = time.time() - self.query_every
        while not await _pause(stop, min(self.lookup_every, self.query_every)):
            now = time.time()
            if now - due >= self.query_every:
                since = math.ceil(now - cursor) + self.query_overlap
                body = await self._in_forge(soak_forge.query, int(now), since)
                await self._call(http, "query_range", "POST", url, body)
                cursor = due = now
            else:
                body = await self._in_forge(soak_forge.query, int(now))
                await self._call(http, "query_one", "POST", url, body)

    async def _hostile(self, http: httpx.AsyncClient, stop: asyncio.Event) -> None:
        for case in itertools.cycle(HOSTILE):
            if await _pause(stop, self.hostile_every):
                return
            body = await self._in_forge(soak_forge.hostile, case, int(time.time()))
            if case == "query_replay":
                url = f"{self.api_url}/v0/c0/posts"
                await self._call(http, "hostile", "POST", url, body)
            else:
                url = f"{self.submit_url}/api/submit"
            status, answer = await self._call(http, "hostile", "POST", url, body)
            self.hostile[case, status] += 1
            if self._unexpected(status, HOSTILE[case]):
                self.unexpected.append(f"{case} {status}: {answer[:200]!r}")

    def _unexpected(self, status: int, expected: Sequence[int]) -> bool:
        if status in expected:
            return False
        return not (self.tolerant and (status in {0, 429} or status >= 500))


def _item(wire: Wire) -> str:
    return f'{{"kind":"{wire.kind}","object":{wire.body}}}'


def _results(raw: bytes) -> list[str]:
    try:
        results = json.loads(raw).get("results") or []
        return [str(r["response_url"]) for r in results]
    except (ValueError, AttributeError, KeyError, TypeError):
        return []


async def _pause(stop: asyncio.Event, seconds: float) -> bool:
    """Sleep ``seconds`` or until ``stop``; True if it was set."""
    if seconds <= 0:
        return stop.is_set()
    try:
        await asyncio.wait_for(stop.wait(), seconds)
    except TimeoutError:
        return False
    return True


def _rule_of(body: bytes) -> str:
    """The rule an error answer names, or what the body is instead."""
    try:
        return str(json.loads(body)["error"]["rule"])
    except (ValueError, KeyError, TypeError):
        return f"no rule ({len(body)} bytes)"
