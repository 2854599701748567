"""The request state every gateway replica of a node shares, and its bounds.

Any replica answers any request, so what one request leaves for the next lives in JetStream
(:mod:`relay.kv`), one bucket per idea, each bounded by a setting and forgetting by itself:

=====================  ==========================================  ===========================
bucket                 holds                                       bound (setting)
=====================  ==========================================  ===========================
``NONCES``             nonces seen, requests per key (50 min)      ``nonce_max_entries``
``LEASES``             remotes on the Mim API (60 s after use)     ``max_remotes``
``PING_LEASES``        remotes on ``/v0/ping`` (10 s)              ``ping_max_remotes``
``INFLIGHT``           requests in flight per remote and lease     remotes × in flight
``RATES``              objects per token this minute               ``tokens_max``
``CONTAINERS``         POST answer containers (1 h)                ``containers_max``
``CONTAINER_PAGES``    their pages (object store, 1 h)             ``containers_max_bytes``
=====================  ==========================================  ===========================

Leases, slots and rates live in the server's memory (they matter for seconds); nonces and
containers on disk, so a restarted NATS server still refuses a replayed request. Every replica
opens the buckets at start with the same bounds (a changed setting takes effect for all), each kept
by the node's ``MIM_STREAM_REPLICAS`` servers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Final

from nats.js import JetStreamContext

from relay.bus import Layout
from relay.kv import Bucket, BucketSpec, ensure_bucket
from services.gateway import nonces
from services.gateway.containers import Containers, open_containers
from services.gateway.settings import GatewaySettings

__all__ = ["Shared", "open_shared"]

_ENTRY_SLACK: Final = 2  # a key being rewritten may briefly count twice


@dataclass(frozen=True, slots=True)
class Shared:
    """The opened buckets of one node."""

    nonces: Bucket
    leases: Bucket
    ping_leases: Bucket
    inflight: Bucket
    rates: Bucket
    containers: Containers


def _memory(name: str, description: str, entries: int) -> BucketSpec:
    return BucketSpec(name, description, max_entries=entries * _ENTRY_SLACK, memory=True)


async def open_shared(js: JetStreamContext, layout: Layout, settings: GatewaySettings) -> Shared:
    """Create or open every bucket of ``layout`` at the bounds of ``settings``."""

    async def ensure(spec: BucketSpec) -> Bucket:
        return await ensure_bucket(js, replace(spec, replicas=layout.replicas))

    remotes = settings.max_remotes + settings.ping_max_remotes
    inflight = remotes * settings.max_requests_per_remote
    return Shared(
        nonces=await ensure(nonces.bucket_spec(layout.nonces_bucket, settings.nonce_max_entries)),
        leases=await ensure(
            BucketSpec(
                layout.leases_bucket,
                "Remotes leased on the Mim API (§11.2).",
                max_entries=settings.max_remotes,
                memory=True,
            ),
        ),
        ping_leases=await ensure(
            BucketSpec(
                layout.ping_leases_bucket,
                "Remotes leased on /v0/ping (§11.2).",
                max_entries=settings.ping_max_remotes,
                memory=True,
            ),
        ),
        inflight=await ensure(
            _memory(layout.inflight_bucket, "Requests in flight per remote.", inflight)
        ),
        rates=await ensure(
            _memory(layout.rates_bucket, "Objects per token this minute.", settings.tokens_max)
        ),
        containers=await open_containers(
            js,
            layout,
            max_containers=settings.containers_max,
            max_bytes=settings.containers_max_bytes,
        ),
    )
