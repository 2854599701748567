"""Settings of the syncer (``MIM_SYNCER_*`` plus the node-wide ``MIM_*``).

Defaults are the reference's (PROTOCOL.md §13.1, §13.2, §16) except where §20 says we do better:
several remotes are synced at once (``max_concurrent_syncs``).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field
from pydantic_settings import SettingsConfigDict

from mim.pages import REQUEST_MIN_POW
from relay.location import AddressSettings
from relay.settings import LeaseSettings, NetworkSettings, PoolSettings, ServiceSettings
from services.syncer.peers import parse_bootstrap


def _remotes(value: str) -> str:
    parse_bootstrap(value)  # a ValueError names the remote that does not parse
    return value


Remotes = Annotated[str, AfterValidator(_remotes)]

__all__ = ["SyncerSettings"]


class SyncerSettings(
    AddressSettings, NetworkSettings, LeaseSettings, PoolSettings, ServiceSettings
):
    """What the syncer needs; service fields read ``MIM_SYNCER_<FIELD>``."""

    model_config = SettingsConfigDict(env_prefix="MIM_SYNCER_")

    metrics_port: int = Field(
        9104, ge=0, le=65535, description="Port of `/metrics` and `/healthz` (0 picks a free one)."
    )
    bootstrap: Remotes = Field(
        "",
        validation_alias="MIM_BOOTSTRAP",
        description=(
            "Comma-separated `host:port` remotes to start from (IPv4, `[v6]:port`, names);"
            " also asked for `/v0/bootstrappers` (§13.3)."
        ),
    )
    scheme: str = Field(
        "auto",
        pattern="^(auto|http|https)$",
        description="Scheme for remotes that name none: `https`, `http`, or `auto` (https first).",
    )
    cursor_overlap_seconds: int = Field(
        default=120,
        ge=0,
        description=(
            "Ask remotes again for this much before each cursor: an object stamped just before a"
            " remote's page time may commit just after it, and is otherwise never seen."
        ),
    )
    tick_seconds: float = Field(
        60.0, gt=0, description="Pause between two neighbour ticks (§13.1 NeighbourWatch)."
    )
    neighbour_count: int = Field(10, ge=1, description="Size of the rotating neighbour list.")
    max_concurrent_syncs: int = Field(
        4, ge=1, description="Remotes synced at once (each remote still one sync at a time)."
    )
    scout_attempts: int = Field(
        50, ge=1, description="Addresses tried, newest first, when a neighbour fails (§13.2)."
    )
    explore_every_ticks: int = Field(
        6, ge=1, description="Every this many ticks, also sync up to 4 known static nodes (§13.2)."
    )
    scan_interval_seconds: float = Field(
        600.0,
        gt=0,
        description=(
            "Pause between two network scans (ping every stored address); a scout scans first"
            " when the last scan is older (§13.1, §13.2)."
        ),
    )
    scan_page_size: int = Field(
        100, ge=1, description="Addresses pinged at once during a network scan (§16)."
    )
    scan_skip_seconds: float = Field(
        120.0,
        ge=0,
        description="A scan does not ping again an address pinged (answered or not) this recently.",
    )
    bootstrap_interval_seconds: float = Field(
        360 * 60.0,
        gt=0,
        description=(
            "Bootstrap again (ask `MIM_BOOTSTRAP` for bootstrappers, sync them) when the last"
            " successful bootstrap is this old (§13.3)."
        ),
    )
    bootstrap_retry_seconds: float = Field(
        600.0, gt=0, description="After a bootstrap that synced no bootstrapper, wait this long."
    )
    bootstrap_explore_every_ticks: int = Field(
        360,
        ge=1,
        description=(
            "Every this many ticks (about 6 h at the default tick), also sync up to 3 live and 1"
            " static bootstrapper and the CA nodes (§13.2)."
        ),
    )
    ca_nodes: Remotes = Field(
        "",
        description="Comma-separated CA nodes (`host:port`, as `MIM_BOOTSTRAP`) visited with the"
        " bootstrappers.",
    )
    exclusion_live_seconds: float = Field(
        300.0,
        ge=0,
        description="After a sync attempt, live remotes rest this long (§13.2). A sync signs"
        " about 8 POST requests and a node takes 358 from one key in 50 minutes (§16): under"
        " about 70 s a remote starts refusing us.",
    )
    exclusion_static_seconds: float = Field(
        72 * 3600.0, ge=0, description="After a sync attempt, static remotes rest this long."
    )
    request_pow: int = Field(
        REQUEST_MIN_POW, ge=1, le=63, description="Proof of work of our POST requests (§11.4)."
    )
    process_workers: int = Field(
        1,
        ge=0,
        description=(
            "Processes minting request proofs of work when no miner answers (0: one per CPU);"
            " one is plenty, about 30 ms per request."
        ),
    )
    pow_timeout_seconds: float = Field(
        120.0, gt=0, description="Longest wait for the proof of work of one request."
    )
    connect_timeout_seconds: float = Field(
        20.0, gt=0, description="TCP connect (and TLS handshake) timeout (§16)."
    )
    request_timeout_seconds: float = Field(
        60.0, gt=0, description="Whole-request timeout of one HTTP exchange (§16)."
    )
    idle_seconds: float = Field(
        120.0, gt=0, description="Idle keep-alive connections are closed after this long."
    )
    max_connections: int = Field(32, ge=1, description="HTTP connections open at once, in all.")
    max_page_bytes: int = Field(
        150_000_000, ge=1024, description="Largest page accepted from a remote (§8.2)."
    )
    page_concurrency: int = Field(
        4, ge=1, description="Pages of one remote fetched at once during a sync."
    )
    broken_pages_per_cache: int = Field(
        3, ge=1, description="Broken pages after which a cache is abandoned (§13.4)."
    )
    address_read_max: int = Field(
        1000, ge=1, description="Addresses read from the table when scouting (§16 table size)."
    )
    addresses_per_sync: int = Field(
        100, ge=1, description="Addresses taken from one remote in one sync (§13.4 step 6)."
    )
    purgatory_max_held: int = Field(
        10_000,
        ge=0,
        description=(
            "Objects from beyond the event horizon one sync holds until it knows their"
            " descendants (§13.5); more are dropped."
        ),
    )
