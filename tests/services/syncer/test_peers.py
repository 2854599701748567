"""Remote parsing and the neighbour schedule."""

from __future__ import annotations

import pytest
from services.syncer.peers import (
    Exclusions,
    Outcome,
    Remote,
    Scheduler,
    parse_bootstrap,
    remote_of,
    stored_remote,
)

from mim import canonical
from mim.entities import Address
from relay.db.addresses import StoredAddress
from relay.location import parse_rules


def test_bootstrap_list_reads_ipv4_ipv6_names_and_schemes() -> None:
    """``MIM_BOOTSTRAP`` takes IPv4, bracketed IPv6 (Yggdrasil too), names and explicit schemes."""
    remotes = parse_bootstrap("1.2.3.4:5, [200:1::2]:443 ,node.example:8090,,http://[::1]:9/sub")
    assert [(r.host, r.port, r.scheme) for r in remotes] == [
        ("1.2.3.4", 5, ""),
        ("200:1::2", 443, ""),
        ("node.example", 8090, ""),
        ("::1", 9, "http"),
    ]
    assert [r.location_type for r in remotes] == [4, 6, 3, 6]
    assert remotes[1].netloc == "[200:1::2]:443" and remotes[3].sublocation == "sub"
    for bad in ("1.2.3.4", "[::1]", "host:0", "host:70000", "ftp://h:1", "::1:80"):
        with pytest.raises(ValueError, match=r"port|IPv6|scheme|expected"):
            parse_bootstrap(bad)


def _row(location: str) -> StoredAddress:
    body = canonical.dumps(Address(location=location, port=4000, type=2, entity_version=1))
    return StoredAddress(location, "", 4000, body, True, 0, 0, 0)


def test_the_syncer_dials_no_place_off_the_public_network() -> None:
    """Stored or learned addresses naming loopback in its short or mapped forms, private ranges
    or private names give no remote to dial; a public one gives its canonical host, and a local
    test network that allows loopback dials it canonically."""
    public = parse_rules("")
    for location in ("127.1", "::ffff:127.0.0.1", "0x7f.0.0.1", "10.0.0.7", "localhost", "[::1]"):
        assert stored_remote(_row(location), public)[1] is None, location
    remote = stored_remote(_row("::ffff:8.8.8.8"), public)[1]
    assert remote is not None and (remote.host, remote.port) == ("8.8.8.8", 4000)
    local = remote_of(
        Address(location="127.1", port=9, entity_version=1), parse_rules("127.0.0.0/8")
    )
    assert local is not None and local.host == "127.0.0.1"


async def test_failed_neighbour_rests_and_a_scout_replaces_it() -> None:
    """A neighbour whose sync fails is excluded and scouting finds a stored address that works;
    the working one is synced again on the next tick, the failed one is not."""
    good, bad, spare = Remote("10.0.0.1", 1), Remote("10.0.0.2", 1), Remote("10.0.0.3", 1)
    calls: list[str] = []

    async def sync(remote: Remote) -> Outcome:
        calls.append(remote.host)
        return Outcome(ok=remote is not bad, node_type=2)

    async def known() -> list[Remote]:
        return [bad, spare]

    clock = [0.0]
    scheduler = Scheduler(
        sync, known, bootstrap=[good, bad], max_concurrent=2,
        exclusions=Exclusions(300.0, 3600.0), clock=lambda: clock[0],
    )  # fmt: skip
    assert await scheduler.tick() == 2  # good succeeds, bad fails and spare is scouted
    assert calls == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    clock[0] = 301.0  # past the live exclusion window
    calls.clear()
    await scheduler.tick()
    assert sorted(calls) == ["10.0.0.1", "10.0.0.3"]


async def test_explore_visits_statics_then_bootstrappers_and_ca_nodes_on_their_ticks() -> None:
    """With no neighbours, ticks 6, 12, … sync up to 4 static nodes that are not resting; tick 36
    instead syncs up to 3 live bootstrappers, 1 static bootstrapper and every CA node; other ticks
    sync none of them. At tick 72 the resting static bootstrapper is passed over for the next."""
    statics = [Remote(f"10.0.255.{n}", 1, static=True, node_type=255) for n in range(5)]
    live = [Remote(f"10.0.3.{n}", 1, node_type=3) for n in range(4)]
    static_bs = [Remote(f"10.0.254.{n}", 1, static=True, node_type=254) for n in range(2)]
    ca = [Remote("ca.example", 443)]
    stored = [Remote("10.0.2.1", 1, node_type=2), *statics, *live, *static_bs]
    synced: dict[int, set[str]] = {}

    async def sync(remote: Remote) -> Outcome:
        synced.setdefault(scheduler.ticks, set()).add(remote.host)
        return Outcome(ok=True, node_type=remote.node_type or 4)

    async def known() -> list[Remote]:
        return stored

    clock = [0.0]
    scheduler = Scheduler(
        sync, known, explore_every=6, bootstrap_every=36, ca_nodes=ca,
        exclusions=Exclusions(0.0, 3600.0), clock=lambda: clock[0],
    )  # fmt: skip
    for _ in range(36):
        await scheduler.tick()
        clock[0] += 60.0
    assert synced == {
        6: {r.host for r in statics[:4]},
        12: {statics[4].host},  # the other four rest for an hour (static exclusion)
        36: {"10.0.3.0", "10.0.3.1", "10.0.3.2", "10.0.254.0", "ca.example"},
    }
    for _ in range(36):
        await scheduler.tick()
        clock[0] += 60.0
    assert synced[72] == {"10.0.3.0", "10.0.3.1", "10.0.3.2", "10.0.254.1", "ca.example"}


class FakeBootstrap:
    """A bootstrap check that is due until a round syncs someone, finding ``online``."""

    def __init__(self, online: list[Remote]) -> None:
        self.online = online
        self.rounds: list[int] = []

    async def due(self) -> bool:
        return not any(self.rounds)

    async def discover(self) -> list[Remote]:
        return self.online

    async def done(self, synced: int) -> float:
        self.rounds.append(synced)
        return 0.0


async def test_bootstrap_check_syncs_online_bootstrappers_first_and_stops_when_done() -> None:
    """At the first tick the online bootstrappers are synced before the bootstrap remotes, the
    round's successes are reported, and once one succeeded no round runs again; a round with no
    success is repeated at the next tick. With several online, those that synced are synced a
    second time in the same round."""
    up, down, seed = Remote("10.0.3.1", 1), Remote("10.0.3.2", 1), Remote("10.0.9.9", 1)
    order: list[str] = []

    async def sync(remote: Remote) -> Outcome:
        order.append(remote.host)
        return Outcome(ok=remote is not down, node_type=3)

    async def known() -> list[Remote]:
        return []

    bootstrap = FakeBootstrap([down])
    scheduler = Scheduler(
        sync, known, bootstrap=[seed], bootstrapper=bootstrap, max_concurrent=1,
        exclusions=Exclusions(0.0, 0.0),
    )  # fmt: skip
    await scheduler.tick()
    assert order[:2] == ["10.0.3.2", "10.0.9.9"] and bootstrap.rounds == [0]
    bootstrap.online = [up, down]
    order.clear()
    await scheduler.tick()
    assert order[:3] == ["10.0.3.1", "10.0.3.2", "10.0.3.1"] and bootstrap.rounds == [0, 1]
    assert order.count("10.0.3.2") == 1  # the one that failed is not tried again
    order.clear()
    await scheduler.tick()
    assert "10.0.3.1" not in order and bootstrap.rounds == [0, 1]
