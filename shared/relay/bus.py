"""The bus layout: every subject, stream, consumer, bucket and header name the services share.

Nothing else in the project spells a subject or stream name. Names derive from the node's stream
prefix (``MIM_STREAM_PREFIX``, default ``MIM``): stream, consumer and bucket names use it upper
case, subjects lower case, so two nodes with different prefixes can share one NATS server::

    stream MIM_INGEST      subjects mim.ingest.<kind>               work queue; limits, discard new
        consumer MIM_VALIDATOR   durable pull, shared by every validator replica
    stream MIM_ACCEPTED    subjects mim.accepted.<kind>             work queue; limits, discard new
        consumer MIM_STORE       durable pull, shared by every store replica
    stream MIM_REJECTED    subjects mim.rejected.<kind>.<stage>     limits, discard old, max age
    kv     MIM_BLOCKLIST   operator block list (fingerprint -> reason), written by the store
    kv     MIM_CACHE_BUILDER  which gateway replica builds the caches
    kv     MIM_SYNCER_LEASES  which syncer replica syncs each remote, runs each schedule
    kv     MIM_STORE_LEASES   which store replica runs retention
    kv     MIM_NONCES      POST nonces seen (§11.4) and uses per node key   } shared request state
    kv     MIM_LEASES      remotes leased on the Mim API (§11.2)            } of the gateway
    kv     MIM_PING_LEASES remotes leased on /v0/ping (§11.2)               } replicas, each key
    kv     MIM_INFLIGHT    requests in flight per remote                    } with its own time to
    kv     MIM_RATES       submissions per token in the current window      } live (relay.kv)
    kv     MIM_CONTAINERS  POST answer containers (id -> pages)             }
    obj    MIM_CONTAINER_PAGES  the pages of those containers (§11.7)       }
    core   mim.store.blocks    (queue group mim-store)    block-list changes, asked of the store
           mim.syncer.sync     (queue group mim-syncers)  "sync this remote now", asked of a syncer
    core   mim.miner.request   (queue group mim-miners)   one proof, served by any one miner
           mim.miner.split     (every miner)              one hard proof, searched by all
           mim.miner.cancel.<job>                          stop searching for job <job>

Ingest and accepted streams refuse new messages when full (discard new): a flood is turned away
at the edge (``StreamFull``, the gateway answers 429) and nothing accepted is ever dropped. The
rejected stream is an inspection log: bounded, oldest dropped first, aged out. Publishes carry
``Nats-Msg-Id`` from ``msg_id(kind, fingerprint, last_update)`` so a retried publish within the
dedupe window is dropped by JetStream.

``ensure_streams`` creates or updates all of it idempotently; every service calls it at start-up
and any number may do so at once.

Every stream, consumer, key-value bucket and object store of a node is kept by ``Layout.replicas``
servers (``MIM_STREAM_REPLICAS``): 1 on a single nats-server, 3 on a three-server JetStream
cluster, where losing one server loses nothing and the others go on. A creator of a bucket passes
it on, ``BucketSpec(..., replicas=layout.replicas)`` (``relay.kv``) or ``KeyValueConfig(...,
replicas=layout.replicas)`` (``ensure_key_value``), and either brings an existing bucket to it; a
layout made with ``Layout.from_settings`` carries the node's setting.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

import nats.errors
import nats.js.errors
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    DiscardPolicy,
    KeyValueConfig,
    PubAck,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.kv import KeyValue

from mim import kinds
from relay import BusError, BusUnavailable, RelayError, StreamFull
from relay.settings import NodeSettings

__all__ = [
    "HEADER_KIND",
    "HEADER_LAST_PING",
    "HEADER_LAST_SYNC",
    "HEADER_MSG_ID",
    "HEADER_REASON",
    "HEADER_SOURCE",
    "HEADER_STAGE",
    "KINDS",
    "MAX_HEADER_VALUE",
    "MAX_REPLICAS",
    "NATS_UNAVAILABLE",
    "UNKNOWN_KIND",
    "Layout",
    "StreamLimits",
    "consumer_configs",
    "ensure_blocklist",
    "ensure_key_value",
    "ensure_streams",
    "header_value",
    "headers",
    "msg_id",
    "publish",
    "refusal",
    "stream_configs",
]

KINDS: Final = kinds.KINDS  # the subjects carry every kind of mim.kinds
UNKNOWN_KIND: Final = "unknown"
"""Kind token for rejections of messages whose kind could not be read."""

HEADER_MSG_ID: Final = "Nats-Msg-Id"
HEADER_KIND: Final = "Mim-Kind"
HEADER_STAGE: Final = "Mim-Stage"
HEADER_REASON: Final = "Mim-Reason"
HEADER_SOURCE: Final = "Mim-Source"
HEADER_LAST_PING: Final = "Mim-Last-Ping"
HEADER_LAST_SYNC: Final = "Mim-Last-Sync"

#: What the NATS client raises when the server did not answer or cannot be reached now.
NATS_UNAVAILABLE: Final = (
    nats.errors.TimeoutError,
    nats.errors.NoRespondersError,
    nats.errors.ConnectionClosedError,
    nats.errors.ConnectionDrainingError,
    nats.errors.ConnectionReconnectingError,
    nats.errors.OutboundBufferLimitError,
)

# A header value longer than this is cut: reasons are for people, not for parsing.
MAX_HEADER_VALUE: Final = 1024

# JetStream API error codes we translate (nats-server's errors.json).
_ERR_STREAM_NAME_IN_USE: Final = 10058  # stream exists with a different configuration
_ERR_STORE_FAILED: Final = 10077  # "maximum messages/bytes exceeded" under discard new
_ERR_INSUFFICIENT_RESOURCES: Final = 10047  # account or server storage exhausted
_CODE_UNAVAILABLE: Final = 503  # JetStream not ready or no quorum

#: JetStream keeps at most this many copies of a stream.
MAX_REPLICAS: Final = 5

_PREFIX_RE: Final = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,31}$")
_TOKEN_RE: Final = re.compile(r"^[a-z0-9_-]{1,64}$")


def _token(value: str, what: str) -> str:
    if not _TOKEN_RE.match(value):
        raise ValueError(f"{what} {value!r} is not a subject token ([a-z0-9_-], 1-64 chars)")
    return value


@dataclass(frozen=True, slots=True)
class Layout:
    """All names for one node, derived from its stream prefix, and how many servers keep each
    stream, bucket and object store of it (``replicas``)."""

    prefix: str = "MIM"
    replicas: int = 1

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(
                f"stream prefix {self.prefix!r} must start with a letter and hold only letters, "
                "digits, '_' and '-' (at most 32)"
            )
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise ValueError(f"replicas {self.replicas} must be 1 to {MAX_REPLICAS}")

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> Layout:
        return cls(settings.stream_prefix, settings.stream_replicas)

    @property
    def _name(self) -> str:
        return self.prefix.upper()

    @property
    def _root(self) -> str:
        return self.prefix.lower()

    # streams
    @property
    def ingest_stream(self) -> str:
        return f"{self._name}_INGEST"

    @property
    def accepted_stream(self) -> str:
        return f"{self._name}_ACCEPTED"

    @property
    def rejected_stream(self) -> str:
        return f"{self._name}_REJECTED"

    # consumers
    @property
    def validator_consumer(self) -> str:
        return f"{self._name}_VALIDATOR"

    @property
    def store_consumer(self) -> str:
        return f"{self._name}_STORE"

    # subjects
    def ingest_subject(self, kind: str) -> str:
        """Where objects of ``kind`` enter, e.g. ``mim.ingest.post``."""
        return f"{self._root}.ingest.{_token(kind, 'kind')}"

    @property
    def ingest_subjects(self) -> str:
        return f"{self._root}.ingest.*"

    def accepted_subject(self, kind: str) -> str:
        return f"{self._root}.accepted.{_token(kind, 'kind')}"

    @property
    def accepted_subjects(self) -> str:
        return f"{self._root}.accepted.*"

    def rejected_subject(self, kind: str, stage: str) -> str:
        """Where a rejection is recorded; use ``UNKNOWN_KIND`` when the kind is unreadable."""
        return f"{self._root}.rejected.{_token(kind, 'kind')}.{_token(stage, 'stage')}"

    @property
    def rejected_subjects(self) -> str:
        return f"{self._root}.rejected.>"

    # miner (core NATS request/reply, no stream)
    @property
    def miner_request_subject(self) -> str:
        """One proof; served by exactly one miner of ``miner_queue_group``."""
        return f"{self._root}.miner.request"

    @property
    def miner_queue_group(self) -> str:
        return f"{self._root}-miners"

    @property
    def miner_split_subject(self) -> str:
        """One hard proof searched by every miner at once (no queue group)."""
        return f"{self._root}.miner.split"

    def miner_cancel_subject(self, job_id: str) -> str:
        """Tells every miner to stop searching for ``job_id``."""
        return f"{self._root}.miner.cancel.{_token(job_id.lower(), 'job id')}"

    @property
    def miner_cancel_subjects(self) -> str:
        return f"{self._root}.miner.cancel.*"

    # key-value
    @property
    def blocklist_bucket(self) -> str:
        return f"{self._name}_BLOCKLIST"

    @property
    def cache_builder_bucket(self) -> str:
        """Who builds the caches: one gateway replica at a time holds its lease."""
        return f"{self._name}_CACHE_BUILDER"

    @property
    def syncer_leases_bucket(self) -> str:
        """Who syncs each remote and runs each schedule: one syncer replica at a time."""
        return f"{self._name}_SYNCER_LEASES"

    @property
    def store_leases_bucket(self) -> str:
        """Which store replica runs retention now."""
        return f"{self._name}_STORE_LEASES"

    # shared request state of the gateway replicas (relay.kv)
    @property
    def nonces_bucket(self) -> str:
        return f"{self._name}_NONCES"

    @property
    def leases_bucket(self) -> str:
        return f"{self._name}_LEASES"

    @property
    def ping_leases_bucket(self) -> str:
        return f"{self._name}_PING_LEASES"

    @property
    def inflight_bucket(self) -> str:
        return f"{self._name}_INFLIGHT"

    @property
    def rates_bucket(self) -> str:
        return f"{self._name}_RATES"

    @property
    def containers_bucket(self) -> str:
        return f"{self._name}_CONTAINERS"

    @property
    def container_pages_bucket(self) -> str:
        """An object store: pages may pass the server's largest message."""
        return f"{self._name}_CONTAINER_PAGES"

    # requests to the services that own a piece of work (core NATS request/reply)
    @property
    def blocks_subject(self) -> str:
        """Block-list changes and listings, answered by one store replica."""
        return f"{self._root}.store.blocks"

    @property
    def store_queue_group(self) -> str:
        return f"{self._root}-store"

    @property
    def sync_subject(self) -> str:
        """One sync of a named remote, now: answered by one syncer replica."""
        return f"{self._root}.syncer.sync"

    @property
    def syncer_queue_group(self) -> str:
        return f"{self._root}-syncers"


@dataclass(frozen=True, slots=True)
class StreamLimits:
    """Limits of the streams and consumers; every service must pass the same ones."""

    max_msgs: int = 1_000_000
    max_bytes: int = 1 << 30
    duplicate_window_seconds: float = 600.0
    rejected_max_msgs: int = 100_000
    rejected_max_bytes: int = 256 << 20
    rejected_max_age_seconds: float = 7 * 24 * 3600.0
    ack_wait_seconds: float = 30.0
    max_ack_pending: int = 4096
    # Unlimited on the server side: the validator terms a message after its own bounded number of
    # deliveries, so it is recorded as rejected instead of sitting unacked in a work queue.
    max_deliver: int = -1

    @classmethod
    def from_settings(cls, settings: NodeSettings) -> StreamLimits:
        return cls(
            max_msgs=settings.stream_max_msgs,
            max_bytes=settings.stream_max_bytes,
            duplicate_window_seconds=settings.dedupe_window_seconds,
            rejected_max_age_seconds=settings.rejected_max_age_seconds,
        )


def msg_id(kind: str, fingerprint: str, last_update: int | None) -> str:
    """The ``Nats-Msg-Id`` of one version of one object: ``post:<fingerprint>:<last_update>``."""
    return f"{kind}:{fingerprint}:{last_update or 0}"


def header_value(value: str) -> str:
    """``value`` as a header carries it: on one line, at most ``MAX_HEADER_VALUE`` characters."""
    text = " ".join(value.split())
    return text[:MAX_HEADER_VALUE]


def headers(
    *,
    kind: str | None = None,
    stage: str | None = None,
    reason: str | None = None,
    source: str | None = None,
    message_id: str | None = None,
) -> dict[str, str]:
    """Message headers; values are flattened to one line and cut at ``MAX_HEADER_VALUE``."""
    named = {
        HEADER_MSG_ID: message_id,
        HEADER_KIND: kind,
        HEADER_STAGE: stage,
        HEADER_REASON: reason,
        HEADER_SOURCE: source,
    }
    return {name: header_value(value) for name, value in named.items() if value is not None}


def stream_configs(layout: Layout, limits: StreamLimits) -> list[StreamConfig]:
    """The three streams of ``layout``."""

    def stream(name: str, description: str, subjects: str, *, inspect: bool) -> StreamConfig:
        return StreamConfig(
            name=name,
            description=description,
            subjects=[subjects],
            retention=RetentionPolicy.LIMITS if inspect else RetentionPolicy.WORK_QUEUE,
            discard=DiscardPolicy.OLD if inspect else DiscardPolicy.NEW,
            max_msgs=limits.rejected_max_msgs if inspect else limits.max_msgs,
            max_bytes=limits.rejected_max_bytes if inspect else limits.max_bytes,
            max_age=limits.rejected_max_age_seconds if inspect else None,
            storage=StorageType.FILE,
            num_replicas=layout.replicas,
            duplicate_window=limits.duplicate_window_seconds,
        )

    return [
        stream(
            layout.ingest_stream,
            "Objects waiting for validation.",
            layout.ingest_subjects,
            inspect=False,
        ),
        stream(
            layout.accepted_stream,
            "Validated objects waiting to be stored.",
            layout.accepted_subjects,
            inspect=False,
        ),
        stream(
            layout.rejected_stream,
            "Rejected objects with stage and reason, for inspection.",
            layout.rejected_subjects,
            inspect=True,
        ),
    ]


def consumer_configs(layout: Layout, limits: StreamLimits) -> dict[str, ConsumerConfig]:
    """Stream name -> its durable pull consumer."""

    def durable(name: str, description: str) -> ConsumerConfig:
        return ConsumerConfig(
            name=name,
            durable_name=name,
            description=description,
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=limits.ack_wait_seconds,
            max_deliver=limits.max_deliver,
            max_ack_pending=limits.max_ack_pending,
            num_replicas=layout.replicas,
        )

    return {
        layout.ingest_stream: durable(layout.validator_consumer, "Validators (all replicas)."),
        layout.accepted_stream: durable(layout.store_consumer, "Store writers (all replicas)."),
    }


async def _ensure_stream(js: JetStreamContext, config: StreamConfig) -> None:
    try:
        await js.add_stream(config)
        return
    except nats.js.errors.APIError as exc:  # e.g. more replicas than the servers can keep
        if exc.err_code != _ERR_STREAM_NAME_IN_USE:
            raise BusError(f"cannot create stream {config.name}: {exc}", exc.err_code) from exc
    # It exists with other limits: bring it to ours. Several services may do this at once; the
    # server applies each update whole, and they all carry the same configuration.
    try:
        await js.update_stream(config)
    except nats.js.errors.APIError as exc:
        raise BusError(
            f"stream {config.name} exists with a configuration that cannot become ours: {exc}",
            exc.err_code,
        ) from exc


async def _ensure_consumer(js: JetStreamContext, stream: str, config: ConsumerConfig) -> None:
    # With a consumer name the server's create is create-or-update, and identical concurrent
    # creates all succeed.
    try:
        await js.add_consumer(stream, config)
    except nats.js.errors.APIError as exc:
        raise BusError(
            f"cannot create consumer {config.name} on {stream}: {exc}", exc.err_code
        ) from exc


async def ensure_streams(
    js: JetStreamContext, layout: Layout, limits: StreamLimits | None = None
) -> None:
    """Create or update the streams and durable consumers of ``layout``; safe to run concurrently.

    Raises ``BusError`` if a stream exists in a form that cannot be updated (say, another
    retention policy), ``BusUnavailable`` if JetStream does not answer.
    """
    limits = limits or StreamLimits()
    try:
        await asyncio.gather(*(_ensure_stream(js, c) for c in stream_configs(layout, limits)))
        consumers = consumer_configs(layout, limits)
        await asyncio.gather(*(_ensure_consumer(js, s, c) for s, c in consumers.items()))
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise BusUnavailable(f"JetStream did not answer: {exc}") from exc


async def ensure_key_value(js: JetStreamContext, config: KeyValueConfig) -> KeyValue:
    """Create (or open) the bucket ``config`` names; safe to run concurrently.

    A bucket that exists with another replica count is brought to ``config.replicas`` (a cluster
    moves the copies itself); its other settings are left as they are.
    """
    try:
        try:
            return await js.create_key_value(config)
        except nats.js.errors.APIError as exc:
            if exc.err_code != _ERR_STREAM_NAME_IN_USE:
                raise BusError(
                    f"cannot create bucket {config.bucket}: {exc}", exc.err_code
                ) from exc
        stream = (await js.stream_info(f"KV_{config.bucket}")).config
        if stream.num_replicas != config.replicas:
            stream.num_replicas = config.replicas
            await js.update_stream(stream)
        return await js.key_value(config.bucket)
    except nats.js.errors.APIError as exc:
        raise BusError(f"bucket {config.bucket}: {exc}", exc.err_code) from exc
    except (nats.errors.TimeoutError, nats.errors.NoRespondersError) as exc:
        raise BusUnavailable(f"JetStream did not answer for bucket {config.bucket}: {exc}") from exc


async def ensure_blocklist(js: JetStreamContext, layout: Layout, *, history: int = 5) -> KeyValue:
    """Create (or open) the block-list bucket of ``layout``; safe to run concurrently."""
    return await ensure_key_value(
        js,
        KeyValueConfig(
            bucket=layout.blocklist_bucket,
            description="Operator block list: fingerprint -> reason.",
            history=history,
            storage=StorageType.FILE,
            replicas=layout.replicas,
        ),
    )


def refusal(subject: str, err_code: int, description: str, code: int = 0) -> RelayError:
    """The error for JetStream refusing a publish to ``subject`` (its API error fields)."""
    if err_code in (_ERR_STORE_FAILED, _ERR_INSUFFICIENT_RESOURCES):
        return StreamFull(f"{subject}: {description or 'stream full'}")
    if code == _CODE_UNAVAILABLE:
        return BusUnavailable(f"{subject}: {description or 'JetStream unavailable'}")
    return BusError(f"{subject}: {description or 'refused'} (error {err_code})", err_code)


async def publish(
    js: JetStreamContext,
    subject: str,
    payload: bytes,
    *,
    headers: Mapping[str, str] | None = None,
    ack_wait_seconds: float = 5.0,
) -> PubAck:
    """Publish to JetStream and wait for its acknowledgement, translating its failures.

    Raises ``StreamFull`` when the stream refuses new messages, ``BusUnavailable`` on timeout or
    no responders, ``BusError`` for other refusals. A duplicate (same ``Nats-Msg-Id`` within the
    window) is not an error: the returned ack has ``duplicate`` set.
    """
    try:
        return await js.publish(
            subject, payload, timeout=ack_wait_seconds, headers=dict(headers or {})
        )
    except nats.js.errors.APIError as exc:
        raise refusal(subject, exc.err_code or 0, exc.description or "", exc.code or 0) from exc
    except nats.js.errors.NoStreamResponseError as exc:
        raise BusUnavailable(f"{subject}: no stream answered") from exc
    except NATS_UNAVAILABLE as exc:
        raise BusUnavailable(f"{subject}: {exc!r}") from exc
    except nats.errors.MaxPayloadError as exc:
        raise BusError(f"{subject}: {len(payload)} bytes is over the server's max payload") from exc
