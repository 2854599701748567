"""Purgatory (§13.5): the descent search on its own, and a real sync holding back old objects."""

from __future__ import annotations

import time

from prometheus_client import REGISTRY
from services.syncer.peers import parse_remote
from services.syncer.purgatory import Purgatory

from mim.entities import Board, Key, Post, Thread, Vote
from relay.settings import DAY_SECONDS
from tests.services.syncer.conftest import Nodes
from tests.services.syncer.node import make

HORIZON = 1_000
OLD, NEW = 500, 2_000


def _admitted(purgatory: Purgatory) -> set[str]:
    return {obj.fingerprint for obj in purgatory.settle().admitted}


def test_new_objects_pass_and_old_ones_wait() -> None:
    """Objects at or after the horizon pass at once; older ones, updated or not, are held."""
    purgatory = Purgatory(HORIZON)
    new_board = Board(fingerprint="b-new", creation=HORIZON)
    updated = Board(fingerprint="b-updated", creation=OLD, last_update=NEW)
    old = Board(fingerprint="b-old", creation=OLD, last_update=OLD + 1)
    assert purgatory.sort([new_board, updated, old]) == [new_board, updated]
    assert len(purgatory) == 1


def test_an_old_chain_above_a_new_post_is_admitted_whole() -> None:
    """An old board whose only newer descendant is a reply in an old thread under an old post is
    admitted with that thread and post; the reference, looking one step down, would lose it."""
    purgatory = Purgatory(HORIZON)
    board = Board(fingerprint="b", creation=OLD)
    thread = Thread(fingerprint="t", board="b", creation=OLD)
    post = Post(fingerprint="p", board="b", thread="t", creation=OLD)
    reply = Post(fingerprint="r", board="b", thread="t", parent="p", creation=NEW)
    assert purgatory.sort([reply, post, thread, board]) == [reply]
    settled = purgatory.settle()
    assert {o.fingerprint for o in settled.admitted} == {"b", "t", "p"}
    assert settled.total("held") == 3 and settled.total("dropped") == 0


def test_old_objects_without_newer_descendants_are_dropped() -> None:
    """An old thread with only old posts, an old vote and an old key with nothing new are
    dropped and counted by kind."""
    purgatory = Purgatory(HORIZON)
    thread = Thread(fingerprint="t", board="b", creation=OLD)
    post = Post(fingerprint="p", thread="t", creation=OLD + 1)
    vote = Vote(fingerprint="v", thread="t", creation=OLD)
    key = Key(fingerprint="k", creation=OLD)
    purgatory.sort([thread, post, vote, key])
    settled = purgatory.settle()
    assert settled.admitted == []
    assert settled.counts["dropped"] == {"thread": 1, "post": 1, "vote": 1, "key": 1}


def test_a_key_is_admitted_for_what_it_owns() -> None:
    """An old key is admitted for a newer vote it owns; votes are nobody's ancestors."""
    purgatory = Purgatory(HORIZON)
    key = Key(fingerprint="k", creation=OLD)
    old_post = Post(fingerprint="p", creation=OLD)
    vote = Vote(fingerprint="v", owner="k", thread="p", creation=NEW)
    purgatory.sort([key, old_post, vote])
    assert _admitted(purgatory) == {"k"}


def test_search_depth_and_held_count_are_bounded() -> None:
    """Past ``max_depth`` steps up from the newer descendant nothing more is admitted, and past
    ``max_held`` old objects the rest are dropped at once."""
    purgatory = Purgatory(HORIZON, max_depth=2)
    chain = [Post(fingerprint="p0", creation=OLD)]
    chain += [Post(fingerprint=f"p{n}", parent=f"p{n - 1}", creation=OLD) for n in range(1, 4)]
    newest = Post(fingerprint="new", parent="p3", creation=NEW)
    purgatory.sort([*chain, newest])
    assert _admitted(purgatory) == {"p3", "p2"}

    small = Purgatory(HORIZON, max_held=1)
    small.sort([Board(fingerprint="a", creation=OLD), Board(fingerprint="b", creation=OLD)])
    settled = small.settle()
    assert settled.counts["dropped"] == {"board": 2} and settled.total("held") == 2


def test_a_newer_version_releases_the_held_one() -> None:
    """When an object's update from after the horizon arrives, its old version is no longer
    held; of two old versions the later is kept."""
    purgatory = Purgatory(HORIZON)
    purgatory.sort([Board(fingerprint="b", creation=OLD)])
    purgatory.sort([Board(fingerprint="b", creation=OLD, last_update=NEW)])
    assert len(purgatory) == 0
    purgatory.sort([Board(fingerprint="c", creation=OLD, last_update=OLD + 1)])
    purgatory.sort([Board(fingerprint="c", creation=OLD, last_update=OLD + 2)])
    purgatory.sort([Thread(fingerprint="t", board="c", creation=NEW)])
    [kept] = purgatory.settle().admitted
    assert kept.last_update == OLD + 2


def _purgatory_metric(kind: str, outcome: str) -> float:
    value = REGISTRY.get_sample_value(
        "mim_syncer_purgatory_objects_total", {"kind": kind, "outcome": outcome}
    )
    return value or 0.0


async def test_sync_stores_an_old_board_for_its_new_thread_and_drops_the_rest(
    nodes: Nodes,
) -> None:
    """A remote serving a board from beyond our event horizon with a new thread in it, an old
    thread with nothing new under it, and an old vote: after one sync we hold the board and the
    new thread, not the old thread nor the vote, and the report and metrics count them."""
    a, b = await nodes("A"), await nodes("B")
    now = int(time.time())
    old = now - 200 * DAY_SECONDS  # beyond the default 180 days of MIM_NETWORK_MEMORY_DAYS
    board = make("board", {"name": "an old board"}, old)
    new_thread = make("thread", {"board": board.fingerprint, "name": "new"}, now - 60)
    old_thread = make("thread", {"board": board.fingerprint, "name": "old and quiet"}, old + 10)
    vote = make(
        "vote",
        {
            "board": board.fingerprint,
            "thread": old_thread.fingerprint,
            "target": old_thread.fingerprint,
            "typeclass": 1,
            "type": 1,
        },
        old + 20,
    )
    served = [board, new_thread, old_thread, vote]
    await a.hold(served)
    before = {
        (k, o): _purgatory_metric(k, o)
        for k in ("board", "thread", "vote")
        for o in ("held", "admitted", "dropped")
    }
    async with b.syncer() as syncer:
        report = await syncer.sync(parse_remote(a.address))
    assert report.ok, report.summary()
    assert report.summary()["purgatory"] == {"held": 3, "admitted": 1, "dropped": 2}
    assert {k: n for k, n in report.objects.items() if k != "address"} == {
        "board": 1,
        "thread": 1,
    }
    await b.wait_holding([board, new_thread])
    held = await b.held()
    assert ("thread", old_thread.fingerprint) not in held
    assert ("vote", vote.fingerprint) not in held
    delta = {key: _purgatory_metric(*key) - value for key, value in before.items()}
    assert {key: n for key, n in delta.items() if n} == {
        ("board", "held"): 1,
        ("board", "admitted"): 1,
        ("thread", "held"): 1,
        ("thread", "dropped"): 1,
        ("vote", "held"): 1,
        ("vote", "dropped"): 1,
    }
