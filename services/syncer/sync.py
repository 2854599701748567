"""One sync with a remote (PROTOCOL.md §13.4, with §20.4 and §20.5).

Check: ``GET /v0/status`` → ``GET /v0/node`` (signature verified, node ID = SHA-256 of its key,
ourselves refused) → unless the remote is static (types 253-255), our signed, PoW'd
``POST /v0/node``, whose answer must come from the same key. The remote's address is then stored
first-party, with the place we dialled.

Then per endpoint, in the reference's order (``ENDPOINTS``): read ``index.json``; for each cache
ending at or after our cursor, read its manifest and fetch only the entity pages listing a
``(fingerprint, last_update)`` we lack or hold older (a missing manifest means every page); then,
unless static, ``POST`` for the live tail since the cursor and follow its ``results`` containers
the same way. Every page must verify and be signed by the remote's node key; a page that does not
decode or verify is counted and dropped, and ``broken_pages_per_cache`` of them abandon that cache.
Every object goes to the ingest stream (the validators judge it); nothing is written to the
objects table here. The endpoint's cursor then moves to the newest page timestamp seen (the
remote's clock), never backwards, and only if no cache of it was abandoned.

Objects last modified before our event horizon wait in :mod:`~services.syncer.purgatory` until
the sync ends (or fails), and only those with a newer descendant in the sync are then published.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Final

import asyncpg
from nats.aio.client import Client as NATS

from mim import canonical, pages, paths
from mim.entities import PLURALS, Address, ApiResponse, Entity, Filter, Kind
from mim.signing import SigningKey
from relay import RelayError, mining
from relay.bus import Layout
from relay.cpu import CpuPool
from relay.db import cursors, objects, retention
from relay.first_party import Reporter
from relay.logging import get_logger
from relay.publisher import Publisher
from relay.submit import submit_many
from services.syncer import check, metrics
from services.syncer.check import Broken, SyncFailed, decode
from services.syncer.client import Client, FetchError, Tally
from services.syncer.peers import Outcome, Remote, remote_of
from services.syncer.purgatory import Purgatory
from services.syncer.settings import SyncerSettings

__all__ = ["ENDPOINTS", "Report", "SyncFailed", "Syncer"]

#: The reference's fixed endpoint order (§13.4 step 5).
ENDPOINTS: Final = ("addresses", "votes", "truststates", "posts", "threads", "boards", "keys")
_KINDS: Final[dict[str, Kind]] = {plural: kind for kind, plural in PLURALS.items()}
_CACHE_URL: Final = re.compile(r"^(cache|post)_[0-9a-f]{64}$")
_PUBLISH_CHUNK: Final = 256  # objects awaiting their JetStream acks at once
_PUBLISH_TIMEOUT_SECONDS: Final = 30.0  # for all the acks of one chunk
_BROKEN_CACHES_PER_ENDPOINT: Final = 3  # §13.4 step 7

_log = get_logger(__name__)

Progress = Callable[[str], None]
"""Called with the stage a sync enters: ``check``, then each endpoint, then ``done``."""


@dataclass
class Report:
    """What one sync did."""

    remote: str
    node_id: str = ""
    node_type: int = 0
    ok: bool = False
    reason: str = ""
    tally: Tally = field(default_factory=Tally)
    objects: dict[str, int] = field(default_factory=dict)
    skipped: int = 0
    broken: dict[str, int] = field(default_factory=dict)
    cursors: dict[str, int] = field(default_factory=dict)
    purgatory: dict[str, int] = field(default_factory=dict)  # held, admitted, dropped
    seconds: float = 0.0

    @property
    def outcome(self) -> Outcome:
        return Outcome(ok=self.ok, node_type=self.node_type)

    def summary(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "node_id": self.node_id,
            "node_type": self.node_type,
            "ok": self.ok,
            "reason": self.reason,
            "pages": dict(self.tally.pages),
            "bytes": self.tally.bytes,
            "objects": dict(self.objects),
            "skipped_pages": self.skipped,
            "broken_pages": dict(self.broken),
            "purgatory": dict(self.purgatory),
            "duration_s": round(self.seconds, 3),
        }


@dataclass
class _Run:
    """The state of one sync in progress."""

    remote: Remote
    report: Report
    purgatory: Purgatory
    key: str = ""  # the remote's node public key
    static: bool = False
    cache_broken: bool = False
    address: Address = field(default_factory=Address)  # what the remote says of itself
    seen: set[tuple[str, str, int]] = field(default_factory=set)  # published in this sync


class Syncer:
    """Syncs with remotes; shares one client, pool and NATS connection between syncs."""

    def __init__(
        self,
        settings: SyncerSettings,
        client: Client,
        pool: asyncpg.Pool,
        layout: Layout,
        key: SigningKey,
        *,
        nc: NATS | None = None,
        cpu: CpuPool | None = None,
    ) -> None:
        self.settings = settings
        self.client = client
        self.pool = pool
        self.layout = layout
        self.key = key
        self.nc = nc
        self._publisher = Publisher(nc, timeout=_PUBLISH_TIMEOUT_SECONDS) if nc else None
        self._reporter = Reporter(nc.jetstream(), layout) if nc else None
        # without a miner, request PoW is searched in a worker process when we have a pool
        self._local_pow = mining.in_pool(cpu) if cpu is not None else None
        self.node_id = pages.node_id(key.public_hex)
        self._rules = settings.address_rules()

    # ------------------------------------------------------------------ the whole sync

    async def sync(self, remote: Remote, progress: Progress | None = None) -> Report:
        """Sync with ``remote`` once; never raises for what the remote does."""
        report = Report(remote=str(remote))
        horizon = retention.memory_cutoff(
            int(time.time()), self.settings.network_memory_days, self.settings.network_head_days
        )
        purgatory = Purgatory(horizon, max_held=self.settings.purgatory_max_held)
        run = _Run(remote, report, purgatory)
        started = time.perf_counter()
        metrics.SYNCS_STARTED.inc()
        metrics.PEERS_ACTIVE.inc()
        _log.info("peer_sync_started", peer=str(remote))
        step = progress or (lambda _stage: None)
        try:
            step("check")
            await self._check(run)
            for endpoint in ENDPOINTS:
                step(endpoint)
                await self._endpoint(run, endpoint)
            await self._settle(run)
            await self._record(run, last_sync=int(time.time()))
            report.ok = True
        except (SyncFailed, FetchError) as exc:
            report.reason = exc.reason
            _log.info("peer_sync_failed", peer=str(remote), reason=exc.reason, detail=exc.detail)
            await self._settle_anyway(run)
        finally:
            metrics.PEERS_ACTIVE.dec()
            report.seconds = time.perf_counter() - started
        metrics.SYNCS.labels("ok" if report.ok else report.reason).inc()
        metrics.SYNC_SECONDS.observe(report.seconds)
        step("done")
        _log.info("peer_sync_finished", **report.summary())
        return report

    async def _settle_anyway(self, run: _Run) -> None:
        """After a failed sync, still settle what purgatory holds.

        Endpoints run children first (posts before threads before boards before keys), so the
        descendants of whatever was held have arrived already unless the failure cut them off.
        """
        if not len(run.purgatory):
            return
        try:
            await self._settle(run)
        except SyncFailed as exc:
            _log.warning("purgatory_not_settled", peer=str(run.remote), detail=exc.detail)

    # ------------------------------------------------------------------ check (§13.4 step 2)

    async def _check(self, run: _Run) -> None:
        status, _ = await self._request(run, "GET", paths.STATUS, "status")
        if not 200 <= status < 300:
            raise SyncFailed("status", f"GET /v0/status answered {status}")
        node = await self._node_page(run, "GET", None)
        run.key = node.node_public_key
        run.report.node_id = pages.node_id(node.node_public_key)
        run.static = check.is_static(run.remote, node)
        # what its node page says it is decides how long it rests, even if the POST then fails
        run.report.node_type = check.own_address(node.address, static=run.static).type
        own = node.address
        if not run.static:
            answer = await self._node_page(run, "POST", await self._post_body(()))
            if answer.node_public_key != node.node_public_key:
                raise SyncFailed("node_key", "the POST answer is signed by another key")
            own = answer.address
        run.address = check.own_address(own, static=run.static)
        seen = node.timestamp if run.static else int(time.time())
        await self._record(run, last_ping=seen)
        run.report.node_type = run.address.type

    async def _record(self, run: _Run, *, last_ping: int = 0, last_sync: int = 0) -> None:
        """Report the remote first-party; a report the bus does not take is logged, not fatal."""
        if self._reporter is None:
            return
        try:
            await check.record(
                self._reporter, run.remote, run.address, last_ping=last_ping, last_sync=last_sync
            )
        except RelayError as exc:
            _log.warning("peer_not_recorded", peer=str(run.remote), error=str(exc))

    async def _node_page(self, run: _Run, method: str, body: bytes | None) -> ApiResponse:
        async def request(method: str, path: str, body: bytes | None) -> tuple[int, bytes]:
            return await self._request(run, method, path, "node", body)

        return await check.node_page(request, method, paths.NODE, body, own_id=self.node_id)

    # ------------------------------------------------------------------ requests

    async def _request(
        self, run: _Run, method: str, path: str, page: str, body: bytes | None = None
    ) -> tuple[int, bytes]:
        return await self.client.request(
            run.remote, method, path, body=body, page=page, tally=run.report.tally
        )

    async def _post_body(self, filters: Sequence[Filter]) -> bytes:
        """A signed request with fresh nonce and PoW (§11.4), minted by the miner if one answers,
        else off the event loop (a worker of ``cpu`` when given, else a thread)."""
        base = pages.prefill(
            self.key.public_hex,
            port=self.settings.announced_port(),
            node_type=pages.NODE_TYPE_LIVE,
            nonce=secrets.token_hex(32),
            now=int(time.time()),
        )
        base = replace(base, filters=tuple(filters) or None)
        signed = pages.sign_page(replace(base, proof_of_work=""), self.key)
        text = canonical.dumps(signed)
        difficulty = self.settings.request_pow
        try:
            mined = await mining.mine(
                self.nc,
                text,
                difficulty,
                timeout=self.settings.pow_timeout_seconds,
                split=False,
                layout=self.layout,
                local=self._local_pow,
            )
        except mining.MiningError as exc:
            raise SyncFailed("pow", str(exc)) from exc

        def found(pow_text: str, _difficulty: int) -> str:
            if pow_text != text:  # signing is deterministic: the same page, the same text
                raise SyncFailed("pow", "the request changed between mining and signing")
            return mined.unsigned_pow

        return canonical.encode(pages.build_request(base, self.key, found, difficulty))

    async def _page(self, run: _Run, path: str, page: str) -> ApiResponse | None:
        """A verified page of the remote; None if it has none (204, 404); broken pages counted."""
        status, data = await self._request(run, "GET", path, page)
        if status in (204, 404):
            return None
        if status != 200:
            raise Broken("http")
        return decode(data, expect_key=run.key)

    def _count_broken(self, run: _Run, reason: str, path: str) -> None:
        metrics.PAGES_BROKEN.labels(reason).inc()
        run.report.broken[reason] = run.report.broken.get(reason, 0) + 1
        _log.warning("page_dropped", peer=str(run.remote), path=path, reason=reason)

    # ------------------------------------------------------------------ endpoints (§13.4 6-7)

    async def _endpoint(self, run: _Run, plural: str) -> None:
        kind = _KINDS[plural]
        cursor = await cursors.get(self.pool, run.report.node_id, plural)
        folder = paths.endpoint(kind)
        run.cache_broken = False
        newest = cursor
        try:
            index = await self._page(run, f"{folder}/{paths.INDEX}", "index")
        except Broken as exc:
            self._count_broken(run, exc.reason, f"{folder}/{paths.INDEX}")
            index, run.cache_broken = None, True
        # Ask from a little before the cursor: an object the remote stamped before its page time
        # may have committed after it. What we already hold is filtered out by version.
        since = max(0, cursor - self.settings.cursor_overlap_seconds) if cursor else 0
        if index is not None:
            newest = max(newest, index.timestamp)
            node = run.report.node_id
            known = await cursors.synced_caches(self.pool, node, plural)
            taken = await self._caches(run, kind, folder, index, since, known)
            if taken != known:
                await cursors.set_synced_caches(self.pool, node, plural, taken)
        if not run.static:
            newest = max(newest, await self._live_tail(run, kind, plural, since))
        if run.cache_broken:
            run.report.cursors[plural] = cursor
            return
        run.report.cursors[plural] = await cursors.advance(
            self.pool, run.report.node_id, plural, newest
        )
        if newest:
            metrics.REMOTE_LAG_SECONDS.observe(max(0, int(time.time()) - newest))

    async def _caches(
        self,
        run: _Run,
        kind: Kind,
        folder: str,
        index: ApiResponse,
        cursor: int,
        known: set[str],
    ) -> set[str]:
        """Take what we lack of the caches ``index`` lists; the URLs now taken whole.

        A cache in ``known`` was taken whole before and is skipped, manifests and all: a
        published cache never changes. A cache is taken whole when every page we lacked was
        fetched and nothing in it waited in purgatory (which may want it again later).
        """
        failed = 0
        taken: set[str] = set()
        for result in index.results or ():
            url = result.response_url
            if url in known:
                taken.add(url)
                metrics.CACHES_SKIPPED.inc()
                continue
            if result.ends_at < cursor:
                continue
            if not _CACHE_URL.match(url):
                self._count_broken(run, "index", f"{folder}/{paths.INDEX}")
                run.cache_broken = True
                continue
            holds = run.purgatory.holds
            if await self._container(run, kind, f"{folder}/{url}"):
                if run.purgatory.holds == holds:
                    taken.add(url)
                continue
            failed += 1
            run.cache_broken = True
            if failed >= _BROKEN_CACHES_PER_ENDPOINT:
                break
        return taken

    async def _live_tail(self, run: _Run, kind: Kind, plural: str, cursor: int) -> int:
        """POST for what arrived since ``cursor``; the newest page timestamp seen."""
        path = paths.endpoint(kind)
        body = await self._post_body(pages.timestamp_filter(cursor, 0))
        status, data = await self._request(run, "POST", path, "post", body)
        if status != 200:
            self._count_broken(run, "http", path)
            run.cache_broken = True
            return 0
        try:
            face = decode(data, expect_key=run.key)
        except Broken as exc:
            self._count_broken(run, exc.reason, path)
            run.cache_broken = True
            return 0
        await self._take(run, kind, face)
        for result in face.results or ():
            if result.ends_at <= cursor:
                continue
            if not _CACHE_URL.match(result.response_url):
                self._count_broken(run, "index", path)
                continue
            if not await self._container(run, kind, f"v0/responses/{result.response_url}"):
                run.cache_broken = True
        return face.timestamp

    # ------------------------------------------------------------------ one cache or container

    async def _container(self, run: _Run, kind: Kind, base: str) -> bool:
        """Fetch what we lack of one cache or POST container; False if it was abandoned."""
        broken = 0
        wanted: list[int] | None = None
        if kind != "address":
            try:
                wanted = await self._wanted_pages(run, kind, base)
            except Broken as exc:
                self._count_broken(run, exc.reason, f"{base}/manifest")
                broken += 1
        label = "address" if kind == "address" else "entity"  # address caches have no manifest
        if wanted is None:  # no manifest: every page, as far as the first one says
            try:
                first = await self._page(run, f"{base}/0.json", label)
            except Broken as exc:
                self._count_broken(run, exc.reason, f"{base}/0.json")
                return False
            if first is None:
                return True
            await self._take(run, kind, first)
            wanted = list(range(1, first.pagination.pages + 1))
        step = self.settings.page_concurrency
        for at in range(0, len(wanted), step):
            fetched = await asyncio.gather(
                *(
                    self._entity_page(run, kind, f"{base}/{n}.json", label)
                    for n in wanted[at : at + step]
                )
            )
            broken += fetched.count(False)
            if broken >= self.settings.broken_pages_per_cache:
                _log.warning("cache_abandoned", peer=str(run.remote), cache=base, broken=broken)
                return False
        return True

    async def _wanted_pages(self, run: _Run, kind: Kind, base: str) -> list[int] | None:
        """Entity pages whose manifest lists a version we lack; None if there is no manifest."""
        plural = PLURALS[kind]
        wanted: list[int] = []
        number = 0
        while True:
            page = await self._page(run, f"{base}/manifest/{number}.json", "manifest")
            if page is None:
                return None if number == 0 else wanted
            manifests = getattr(page.response, f"{plural}_manifest") or ()
            pairs = {(e.fingerprint, e.last_update) for m in manifests for e in m.entities or ()}
            have = await objects.have_versions(self.pool, kind, pairs)
            for manifest in manifests:
                listed = {(e.fingerprint, e.last_update) for e in manifest.entities or ()}
                if listed - have:
                    wanted.append(manifest.page_number)
                else:
                    metrics.PAGES_SKIPPED.inc()
                    run.report.skipped += 1
            if number >= page.pagination.pages:
                return wanted
            number += 1

    async def _entity_page(self, run: _Run, kind: Kind, path: str, label: str) -> bool:
        try:
            page = await self._page(run, path, label)
        except Broken as exc:
            self._count_broken(run, exc.reason, path)
            return False
        if page is not None:
            await self._take(run, kind, page)
        return True

    # ------------------------------------------------------------------ into the ingest stream

    async def _take(self, run: _Run, kind: Kind, page: ApiResponse) -> None:
        """Publish the objects of ``kind`` a page carries; addresses only stripped, bounded.

        Objects from beyond the event horizon are held in purgatory until the sync ends.
        """
        found: Sequence[Entity] = getattr(page.response, PLURALS[kind]) or ()
        if kind == "address":
            found = [a for a in found if isinstance(a, Address) and self._learnable(a)]
            room = self.settings.addresses_per_sync - run.report.objects.get("address", 0)
            found = found[: max(0, room)]
        else:  # publish a version once per sync, and never one we hold already
            fresh = [o for o in found if not isinstance(o, Address) and _version(o) not in run.seen]
            run.seen.update(_version(o) for o in fresh)
            held = await objects.have_versions(self.pool, kind, [_version(o)[1:] for o in fresh])
            found = run.purgatory.sort(o for o in fresh if _version(o)[1:] not in held)
        await self._publish(run, kind, found)

    async def _publish(self, run: _Run, kind: Kind, found: Sequence[Entity]) -> None:
        if not found:
            return
        publisher = self._publisher
        if publisher is None:
            raise SyncFailed("ingest", "no NATS connection to publish on")
        for at in range(0, len(found), _PUBLISH_CHUNK):
            chunk = found[at : at + _PUBLISH_CHUNK]
            objects = [(kind, canonical.encode(obj)) for obj in chunk]
            results = await submit_many(publisher, self.layout, objects, source="peer")
            refused = [r for r in results if isinstance(r, RelayError)]
            if refused:
                raise SyncFailed("ingest", f"{len(refused)} of {len(chunk)} refused: {refused[0]}")
        metrics.OBJECTS_PULLED.labels(kind).inc(len(found))
        run.report.objects[kind] = run.report.objects.get(kind, 0) + len(found)

    async def _settle(self, run: _Run) -> None:
        """Publish what purgatory admits, count what it held (§13.4 step 8, §13.5)."""
        settled = run.purgatory.settle()
        by_kind: dict[Kind, list[Entity]] = {}
        for obj in settled.admitted:
            by_kind.setdefault(obj.kind, []).append(obj)
        for outcome in ("admitted", "dropped"):
            for kind, count in settled.counts.get(outcome, {}).items():
                metrics.PURGATORY.labels(kind, "held").inc(count)
                metrics.PURGATORY.labels(kind, outcome).inc(count)
        run.report.purgatory = {
            outcome: settled.total(outcome) for outcome in ("held", "admitted", "dropped")
        }
        for kind, held in by_kind.items():
            await self._publish(run, kind, held)

    def _learnable(self, address: Address) -> bool:
        return remote_of(address, self._rules) is not None


def _version(obj: Entity) -> tuple[str, str, int]:
    return (obj.kind, getattr(obj, "fingerprint", ""), getattr(obj, "last_update", 0))
