"""The update rules of PROTOCOL.md §14/§17.4 as seen in the tables."""

from __future__ import annotations

from collections.abc import Sequence

import asyncpg

from mim import canonical
from mim.entities import Address, BoardOwner, Client, Protocol, Provable
from relay.db import addresses as db_addresses
from relay.db import storing
from tests.services.store.factory import Factory, forged

NOW = 1_800_000_000


async def store(pool: asyncpg.Pool, objs: Sequence[Provable], now: int = NOW) -> list[str]:
    async with pool.acquire() as conn, conn.transaction():
        return list(await storing.store_objects(conn, list(objs), now))


async def body(pool: asyncpg.Pool, obj: Provable) -> str | None:
    value: str | None = await pool.fetchval(
        "SELECT body FROM objects WHERE kind = $1 AND fingerprint = $2", obj.kind, obj.fingerprint
    )
    return value


async def test_board_update_replaces_only_when_newer_than_creation_and_last_update(
    pool: asyncpg.Pool,
) -> None:
    """A board created at 2 ignores updates with last_update 1 and 2 and takes the one at 3."""
    f = Factory()
    board = f.board(now=2)
    lu1 = forged(board, description="one", last_update=1, update_signature="aa")
    lu2 = forged(board, description="two", last_update=2, update_signature="aa")
    lu3 = f.update(board, {"description": "three"}, now=3)
    assert await store(pool, [board]) == ["inserted"]
    assert await store(pool, [lu1, lu2]) == ["stale", "stale"]
    assert await body(pool, board) == canonical.dumps(board)
    assert await store(pool, [lu3]) == ["updated"]
    assert await body(pool, board) == canonical.dumps(lu3)


async def test_first_sighting_with_last_update_not_after_creation_is_refused(
    pool: asyncpg.Pool,
) -> None:
    """A new post with creation 3 and last_update 2 is refused; a new thread with 3/5 is stored."""
    f = Factory()
    board = f.board(now=1)
    thread = f.thread(board, now=3)
    post = forged(f.post(board, thread, now=3), last_update=2, update_signature="aa")
    updated_thread = f.update(thread, {"body": "later"}, now=5)
    assert await store(pool, [post, updated_thread]) == ["refused", "inserted"]
    assert await body(pool, post) is None
    assert await body(pool, thread) == canonical.dumps(updated_thread)


async def test_an_older_update_after_a_newer_one_changes_nothing(pool: asyncpg.Pool) -> None:
    """Once the update at 20 is stored, the update at 10 and a repeat of 20 leave the row as is."""
    f = Factory()
    board = f.board(now=5)
    older = f.update(board, {"description": "older"}, now=10)
    newer = f.update(board, {"description": "newer"}, now=20)
    outcomes = await store(pool, [board, newer, older, newer])
    assert outcomes == ["inserted", "updated", "stale", "duplicate"]
    assert await body(pool, board) == canonical.dumps(newer)


async def test_an_update_signed_by_another_key_is_refused(pool: asyncpg.Pool) -> None:
    """An update carrying another owner key is refused and the stored version stays."""
    owner, other = Factory(1), Factory(2)
    board = owner.board(now=5)
    theirs = forged(
        other.update(forged(board, owner_publickey=other.key.public_hex), {"description": "x"}, 9)
    )
    assert await store(pool, [board, theirs]) == ["inserted", "refused"]
    assert await body(pool, board) == canonical.dumps(board)


async def test_board_owners_keep_their_order_and_are_rewritten_on_update(
    pool: asyncpg.Pool,
) -> None:
    """Owners are stored in the board's order, replaced whole by an update, duplicates collapsed."""
    f = Factory()
    a, b, c, d = (f"{i:064x}" for i in (10, 11, 12, 13))
    board = f.board(now=5, board_owners=(BoardOwner(key_fingerprint=c, level=1),
                                         BoardOwner(key_fingerprint=a, level=1),
                                         BoardOwner(key_fingerprint=b, level=1),
                                         BoardOwner(key_fingerprint=a, level=1)))  # fmt: skip
    update = f.update(
        board,
        {"board_owners": (BoardOwner(key_fingerprint=d, level=1),
                          BoardOwner(key_fingerprint=c, level=1),
                          BoardOwner(key_fingerprint=b, level=2, expiry=99))},
        now=9,
    )  # fmt: skip
    query = (
        "SELECT key_fingerprint, level, expiry FROM board_owners WHERE board = $1 ORDER BY position"
    )
    await store(pool, [board])
    first = [tuple(r) for r in await pool.fetch(query, board.fingerprint)]
    await store(pool, [update])
    second = [tuple(r) for r in await pool.fetch(query, board.fingerprint)]
    assert first == [(c, 1, 0), (a, 1, 0), (b, 1, 0)]
    assert second == [(d, 1, 0), (c, 1, 0), (b, 2, 99)]


async def test_a_reply_refreshes_last_referenced_of_its_ancestors(pool: asyncpg.Pool) -> None:
    """Storing a reply moves last_referenced of its board, thread, parent chain and key to now."""
    f = Factory()
    key = f.make("key", {"name": "me"}, 1)
    board = f.board(now=1)
    thread = f.thread(board, now=1)
    top = f.post(board, thread, now=1)
    reply = f.post(board, thread, parent=top, now=1)
    reply2 = f.post(board, thread, parent=reply, body="deep", now=1)
    unrelated = f.board(name="other board", now=1)
    await store(pool, [key, board, thread, top, reply, unrelated], now=100)
    await store(pool, [reply2], now=200)
    rows = await pool.fetch("SELECT kind, fingerprint, last_referenced FROM objects")
    seen = {(r["kind"], r["fingerprint"]): r["last_referenced"] for r in rows}
    for obj in (key, board, thread, top, reply, reply2):
        assert seen[(obj.kind, obj.fingerprint)] == 200, obj.kind
    assert seen[("board", unrelated.fingerprint)] == 100


def _address(location: str, port: int, type_: int = 2) -> Address:
    return Address(
        location=location, location_type=4, port=port, type=type_, entity_version=1,
        protocol=Protocol(version_major=1), client=Client(version_major=2, name="Aether"),
    )  # fmt: skip


async def test_addresses_third_party_never_overwrite_and_first_party_replace(
    pool: asyncpg.Pool,
) -> None:
    """Third-party addresses are stored stripped and never change a row; first-party ones do."""
    async with pool.acquire() as conn:
        third = await db_addresses.store_third_party(conn, _address("10.0.0.1", 80), 100)
        again = await db_addresses.store_third_party(conn, _address("10.0.0.1", 80, 3), 101)
        stripped = await conn.fetchrow("SELECT type, body, first_party FROM addresses")
        first = await db_addresses.store_first_party(
            conn, _address("10.0.0.1", 80), 102, last_ping=500
        )
        older = await db_addresses.store_first_party(
            conn, _address("10.0.0.1", 80), 103, last_ping=400
        )
        full = await conn.fetchrow("SELECT type, body, first_party, last_ping FROM addresses")
    assert (third, again, first, older) == ("written", "kept", "written", "kept")
    assert stripped is not None and full is not None
    assert stripped["type"] == 0 and not stripped["first_party"]
    assert '"name":""' in stripped["body"]
    assert full["type"] == 2 and full["first_party"] and full["last_ping"] == 500
    assert full["body"] == canonical.dumps(_address("10.0.0.1", 80))


async def test_address_table_is_pruned_to_the_most_recent(pool: asyncpg.Pool) -> None:
    """Pruning keeps the most recently pinged addresses up to the limit."""
    async with pool.acquire() as conn:
        for i in range(10):
            await db_addresses.store_first_party(
                conn, _address(f"10.0.0.{i}", 80), 100, last_ping=i
            )
        removed = await db_addresses.prune(conn, 4)
    rows = await pool.fetch("SELECT location FROM addresses ORDER BY location")
    assert removed == 6
    assert [r["location"] for r in rows] == [f"10.0.0.{i}" for i in (6, 7, 8, 9)]
