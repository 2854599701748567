"""Writing accepted objects: the update rules of PROTOCOL.md §14 and §20. Writer: the store.

Everything here runs inside the caller's transaction, so one batch commits or rolls back whole.
Rules for a provable object ``cand`` against the stored version ``ex`` (same kind, fingerprint):

- no ``ex``: stored when ``cand.last_update`` is 0 or after ``cand.creation`` (creation and update
  arriving together); a first sighting with ``0 < last_update <= creation`` is refused;
- ``ex`` present: replaced only when ``cand.last_update`` is after both ``ex.last_update`` and
  ``ex.creation``, ``ex`` is signed, and ``cand`` is signed by ``ex``'s owner key (a Key's own
  ``key``). An equal ``last_update`` is a duplicate, an older one stale, another key refused.

The check runs in the ``ON CONFLICT ... WHERE`` of one multi-row statement per batch, so
concurrent replicas writing the same object cannot interleave. A stored version refreshes
``last_referenced`` of its ancestors (§14), which brings old boards and threads back into the
caches.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeAlias

import asyncpg

from mim import canonical
from mim.entities import Board, Key, Post, Provable, Thread, Truststate, Vote
from relay.db import Conn

__all__ = [
    "MAX_PARENT_DEPTH",
    "WRITER",
    "WRITES",
    "ObjectRow",
    "Outcome",
    "row_of",
    "store_objects",
]

#: The one service that writes ``objects`` and ``board_owners``.
WRITER: Final = "store"
#: The functions here that write; only the writer's code may call them.
WRITES: Final = ("store_objects",)

Outcome = Literal["inserted", "updated", "duplicate", "stale", "refused"]

#: Deepest parent chain followed when refreshing a reply's ancestors (§13.5 uses the same bound).
MAX_PARENT_DEPTH: Final = 1000


@dataclass(frozen=True, slots=True)
class ObjectRow:
    """The columns of ``objects`` for one provable object."""

    kind: str
    fingerprint: str
    body: str
    creation: int
    last_update: int
    board: str = ""
    thread: str = ""
    parent: str = ""
    target: str = ""
    owner: str = ""
    owner_publickey: str = ""
    signed: bool = False


def row_of(entity: Provable, body: str | None = None) -> ObjectRow:
    """The ``objects`` row of ``entity``, its body the canonical JSON (``body`` when given)."""
    board = thread = parent = target = owner = owner_key = ""
    if isinstance(entity, Key):
        owner, owner_key = entity.fingerprint, entity.key
    else:
        owner, owner_key = entity.owner, entity.owner_publickey
    if isinstance(entity, Thread):
        board = entity.board
    elif isinstance(entity, Post):
        board, thread, parent = entity.board, entity.thread, entity.parent
    elif isinstance(entity, Vote):
        board, thread, target = entity.board, entity.thread, entity.target
    elif isinstance(entity, Truststate):
        target, board = entity.target, entity.domain
    return ObjectRow(
        kind=entity.kind,
        fingerprint=entity.fingerprint,
        body=canonical.dumps(entity) if body is None else body,
        creation=entity.creation,
        last_update=entity.last_update,
        board=board,
        thread=thread,
        parent=parent,
        target=target,
        owner=owner,
        owner_publickey=owner_key.lower(),
        signed=bool(entity.signature),
    )


_UPSERT: Final = """
INSERT INTO objects AS o (kind, fingerprint, body, creation, last_update, board, thread, parent,
                          target, owner, owner_publickey, signed, local_arrival, last_referenced)
SELECT c.*, $13, $13
FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[], $5::bigint[], $6::text[],
            $7::text[], $8::text[], $9::text[], $10::text[], $11::text[], $12::boolean[]) AS c
ON CONFLICT (kind, fingerprint) DO UPDATE SET
    body = EXCLUDED.body, creation = EXCLUDED.creation, last_update = EXCLUDED.last_update,
    board = EXCLUDED.board, thread = EXCLUDED.thread, parent = EXCLUDED.parent,
    target = EXCLUDED.target, owner = EXCLUDED.owner, owner_publickey = EXCLUDED.owner_publickey,
    signed = EXCLUDED.signed, local_arrival = EXCLUDED.local_arrival,
    last_referenced = GREATEST(o.last_referenced, EXCLUDED.last_referenced)
WHERE EXCLUDED.last_update > o.last_update
  AND EXCLUDED.last_update > o.creation
  AND o.signed
  AND o.owner_publickey <> ''
  AND o.owner_publickey = EXCLUDED.owner_publickey
RETURNING o.kind, o.fingerprint, (o.xmax = 0) AS inserted
"""

_STORED: Final = """
SELECT o.kind, o.fingerprint, o.last_update, o.owner_publickey, o.signed, o.body
FROM objects o JOIN unnest($1::text[], $2::text[]) AS c (kind, fingerprint)
  ON o.kind = c.kind AND o.fingerprint = c.fingerprint
"""

_Key: TypeAlias = tuple[str, str]


def _may_be_first(row: ObjectRow) -> bool:
    """Whether ``row`` may be stored where nothing is: not ``0 < last_update <= creation``."""
    return row.last_update == 0 or row.last_update > row.creation


def _why_not(row: ObjectRow, stored: asyncpg.Record | None) -> Outcome:
    """The outcome of ``row``, which was not written, against the ``stored`` version."""
    if stored is None:
        return "refused"
    if stored["body"] == row.body or stored["last_update"] == row.last_update:
        return "duplicate"
    if not stored["signed"] or stored["owner_publickey"] != row.owner_publickey:
        return "refused"
    return "stale"


def _column(rows: Sequence[ObjectRow], name: str) -> list[Any]:
    return [getattr(row, name) for row in rows]


_COLUMNS: Final = (
    "kind", "fingerprint", "body", "creation", "last_update", "board", "thread", "parent",
    "target", "owner", "owner_publickey", "signed",
)  # fmt: skip


async def _store_round(conn: Conn, rows: Sequence[ObjectRow], now: int) -> list[Outcome]:
    """Apply the rules to ``rows``, no two of the same object, in two statements; outcomes.

    ``rows`` go in (kind, fingerprint) order, so replicas writing overlapping batches take their
    row locks in the same order. The upsert's ``WHERE`` decides; the rows it did not write are
    read back once to say why, and since nothing else in the round touched them, what is read is
    what the upsert saw.
    """
    candidates = [row for row in rows if _may_be_first(row)]
    written: dict[_Key, bool] = {}
    if candidates:
        records = await conn.fetch(_UPSERT, *(_column(candidates, name) for name in _COLUMNS), now)
        written = {(r["kind"], r["fingerprint"]): r["inserted"] for r in records}
    missed = [row for row in rows if (row.kind, row.fingerprint) not in written]
    stored: dict[_Key, asyncpg.Record] = {}
    if missed:
        records = await conn.fetch(_STORED, _column(missed, "kind"), _column(missed, "fingerprint"))
        stored = {(r["kind"], r["fingerprint"]): r for r in records}
    outcomes: list[Outcome] = []
    for row in rows:
        key = (row.kind, row.fingerprint)
        if key in written:
            outcomes.append("inserted" if written[key] else "updated")
        else:
            outcomes.append(_why_not(row, stored.get(key)))
    return outcomes


def _rounds(rows: Sequence[ObjectRow]) -> list[list[int]]:
    """Indexes of ``rows`` in rounds: the n-th version of each object in round n, keys sorted.

    Versions of one object are applied in arrival order, one per round, exactly as if the batch
    were written row by row; objects never affect one another's outcome.
    """
    rounds: list[list[int]] = []
    seen: dict[_Key, int] = {}
    for index, row in enumerate(rows):
        key = (row.kind, row.fingerprint)
        n = seen.get(key, 0)
        seen[key] = n + 1
        if n == len(rounds):
            rounds.append([])
        rounds[n].append(index)
    for indexes in rounds:
        indexes.sort(key=lambda i: (rows[i].kind, rows[i].fingerprint))
    return rounds


async def store_objects(
    conn: Conn,
    entities: Sequence[Provable],
    now: int,
    bodies: Sequence[str | None] | None = None,
) -> list[Outcome]:
    """Apply the update rules to ``entities`` in order; one outcome per entity.

    Stored boards get their owners rewritten, and every stored object refreshes its ancestors'
    ``last_referenced`` to ``now``. Run inside a transaction. The batch takes two statements per
    round (one round per version of the most repeated object, so normally one). ``bodies`` may
    give the canonical JSON of each entity when the caller holds it already (the accepted stream
    carries exactly that), which spares encoding it again.
    """
    given = bodies if bodies is not None else [None] * len(entities)
    rows = [row_of(entity, body) for entity, body in zip(entities, given, strict=True)]
    outcomes: list[Outcome] = ["refused"] * len(rows)
    stored: list[Provable] = []
    for indexes in _rounds(rows):
        results = await _store_round(conn, [rows[i] for i in indexes], now)
        for index, outcome in zip(indexes, results, strict=True):
            outcomes[index] = outcome
        for index in sorted(indexes):
            entity = entities[index]
            if outcomes[index] in ("inserted", "updated"):
                stored.append(entity)
                if isinstance(entity, Board):
                    await _write_board_owners(conn, entity)
    if stored:
        await _refresh_ancestors(conn, stored, now)
    return outcomes


async def _write_board_owners(conn: Conn, board: Board) -> None:
    await conn.execute("DELETE FROM board_owners WHERE board = $1", board.fingerprint)
    seen: set[str] = set()
    rows: list[tuple[str, int, str, int, int]] = []
    for owner in board.board_owners or ():
        if owner.key_fingerprint in seen:
            continue  # duplicates collapse to the first (§17.4)
        seen.add(owner.key_fingerprint)
        rows.append(
            (board.fingerprint, len(rows), owner.key_fingerprint, owner.expiry, owner.level)
        )
    if rows:
        await conn.executemany(
            "INSERT INTO board_owners (board, position, key_fingerprint, expiry, level)"
            " VALUES ($1, $2, $3, $4, $5)",
            rows,
        )


def _ancestors(entity: Provable) -> Iterable[tuple[str, str]]:
    """(kind, fingerprint) of what ``entity`` refers to, per §14 (keys and parent chains aside)."""
    if isinstance(entity, Thread):
        yield "board", entity.board
    elif isinstance(entity, Post):
        yield "board", entity.board
        yield "thread", entity.thread
    elif isinstance(entity, Truststate):
        yield "key", entity.target


def _owner_keys(entity: Provable) -> Iterable[str]:
    """Public keys of the Key entities ``entity`` refreshes: its owner's (a Key refreshes none).

    Matched by public key: an ``owner`` fingerprint is derived from the key, not the Key entity.
    """
    if not isinstance(entity, Key) and entity.owner_publickey:
        yield entity.owner_publickey.lower()


_REFRESH: Final = """
UPDATE objects SET last_referenced = $3
WHERE (kind, fingerprint) IN (SELECT * FROM unnest($1::text[], $2::text[]))
  AND last_referenced < $3
"""

_REFRESH_KEYS: Final = """
UPDATE objects SET last_referenced = $2
WHERE kind = 'key' AND owner_publickey = ANY($1::text[]) AND last_referenced < $2
"""

_REFRESH_PARENTS: Final = """
WITH RECURSIVE chain (fingerprint, depth) AS (
    SELECT p, 1 FROM unnest($1::text[]) AS p
    UNION
    SELECT o.parent, c.depth + 1
    FROM chain c JOIN objects o ON o.kind = 'post' AND o.fingerprint = c.fingerprint
    WHERE c.depth < $3 AND o.parent <> ''
)
UPDATE objects SET last_referenced = $2
WHERE kind = 'post' AND fingerprint IN (SELECT fingerprint FROM chain) AND last_referenced < $2
"""


async def _refresh_ancestors(conn: Conn, stored: Sequence[Provable], now: int) -> None:
    pairs = sorted({(k, fp) for e in stored for k, fp in _ancestors(e) if fp})
    if pairs:
        await conn.execute(_REFRESH, [k for k, _ in pairs], [fp for _, fp in pairs], now)
    keys = sorted({k for e in stored for k in _owner_keys(e)})
    if keys:
        await conn.execute(_REFRESH_KEYS, keys, now)
    parents = sorted({e.parent for e in stored if isinstance(e, Post) and e.parent})
    if parents:
        await conn.execute(_REFRESH_PARENTS, parents, now, MAX_PARENT_DEPTH)
