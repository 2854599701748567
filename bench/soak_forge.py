"""What the soak and chaos runs send: signed objects of every kind, updates, hostile bodies and
POST requests, made in a worker process so the run's own event loop only talks HTTP.

A :class:`Forge` is a small forum that keeps growing: authors (each with a Key entity), boards,
threads, posts, votes on posts and truststates on authors, in the proportions of ``MIX``, and
updates of what it made a few seconds before (a post's body, a board's description, a vote's
type...). What it makes is handed over as :class:`Wire` tuples: kind, canonical JSON,
fingerprint and ``last_update``. ``start_worker`` runs one Forge in a process of its own; the
module functions (``batch``, ``hostile``, ``query``) are what the run calls in it.

Hostile cases (``HOSTILE``), each with the answers a sound gateway gives it:

- ``bad_signature``, ``tampered``, ``no_pow``: a post that fails a check (signature,
  fingerprint, proof of work), refused with 422;
- ``malformed``: a body that is not JSON, 400 (422 from a framework that says so);
- ``wrong_type``: a post whose ``creation`` is a string, 400 or 422;
- ``replay``: an object sent before, sent again: queued again or found a duplicate, 202;
- ``stale``: the first version of an object updated since, 202 (the store keeps the newer one);
- ``query_replay``: the same signed POST request (for one post) twice; the second is refused (400);
- ``oversized``: a body over the gateway's 4 MiB bound, 413.
"""

from __future__ import annotations

import dataclasses
import json
import multiprocessing
import random
import secrets
from collections import deque
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from typing import Any, Final, NamedTuple

from mim import canonical, pages
from mim import pow as mim_pow
from mim.create import create, update
from mim.entities import Filter, Provable
from mim.signing import SigningKey

__all__ = [
    "HOSTILE",
    "MIX",
    "Forge",
    "Wire",
    "batch",
    "first",
    "hostile",
    "query",
    "start_worker",
]

#: Shares of what is made: kinds, and updates of objects made before.
MIX: Final = {
    "post": 55,
    "vote": 12,
    "update": 12,
    "thread": 8,
    "board": 4,
    "truststate": 5,
    "key": 4,
}
#: Hostile cases and the statuses a sound gateway answers them with.
HOSTILE: Final = {
    "bad_signature": (422,),
    "tampered": (422,),
    "no_pow": (422,),
    "malformed": (400, 422),
    "wrong_type": (400, 422),
    "replay": (202,),
    "stale": (202,),
    "query_replay": (400,),
    "oversized": (413,),
}
_RECENT: Final = 4000  # objects kept as candidates for updates, and for votes and parents
_UPDATE_AFTER: Final = 2  # seconds an object is left alone before it may be updated
_ASKERS: Final = 4  # keys the single-post lookups take turns with
_OVERSIZED: Final = 5 << 20  # bytes: over the gateway's 4 MiB default body bound


class Wire(NamedTuple):
    kind: str
    body: str  # canonical JSON
    fingerprint: str
    last_update: int


def _wire(obj: Provable) -> Wire:
    return Wire(obj.kind, canonical.dumps(obj), obj.fingerprint, obj.last_update)


class Forge:
    """A growing forum of signed objects; see the module docstring."""

    def __init__(self, seed: int, difficulty: int, request_pow: int, peer_port: int) -> None:
        self.rng = random.Random(seed)
        self.mint = mim_pow.local_minter(self.rng.randrange)
        self.difficulty = difficulty
        self.request_pow = request_pow
        self.peer_port = peer_port
        self.peer = self._key()
        # single-post lookups (and replays of them) come from several remotes, as on a node many
        # peers ask: one key would pass the 358 requests per key in 50 minutes of §16
        self.askers = [self._key() for _ in range(_ASKERS)]
        self.asked = 0
        self.made = 0
        self.authors: list[tuple[SigningKey, Provable]] = []
        self.owners: dict[str, SigningKey] = {}  # public key (hex) -> the key
        self.boards: deque[Provable] = deque(maxlen=64)
        self.threads: deque[Provable] = deque(maxlen=256)
        self.posts: deque[Provable] = deque(maxlen=_RECENT)
        self.recent: deque[Provable] = deque(maxlen=_RECENT)
        self.firsts: deque[Provable] = deque(maxlen=256)  # first versions of updated objects
        self.versions: dict[str, int] = {}  # fingerprint -> newest last_update made

    def _key(self) -> SigningKey:
        return SigningKey.generate(self.rng.randbytes(32))

    def _make(self, kind: str, values: dict[str, Any], key: SigningKey, now: int) -> Provable:
        self.made += 1
        obj = create(kind, values, key, self.difficulty, now, self.mint)
        self.recent.append(obj)
        return obj

    def _author(self, now: int) -> Provable:
        key = self._key()
        entity = self._make("key", {"name": f"author {len(self.authors)}"}, key, now)
        self.authors.append((key, entity))
        self.owners[key.public_hex] = key
        return entity

    def _board(self, now: int) -> Provable:
        key, _ = self.rng.choice(self.authors)
        board = self._make("board", {"name": f"board {self.made}"}, key, now)
        self.boards.append(board)
        return board

    def _thread(self, now: int) -> Provable:
        key, _ = self.rng.choice(self.authors)
        board = self.rng.choice(self.boards)
        values = {"board": board.fingerprint, "name": f"thread {self.made}", "body": "soak"}
        thread = self._make("thread", values, key, now)
        self.threads.append(thread)
        return thread

    def _post(self, now: int) -> Provable:
        key, _ = self.rng.choice(self.authors)
        post = self._make("post", self._post_values(), key, now)
        self.posts.append(post)
        return post

    def _post_values(self) -> dict[str, Any]:
        thread = self.rng.choice(self.threads)
        parent = self.rng.choice(self.posts) if self.posts and self.rng.random() < 0.5 else thread
        return {
            "board": getattr(thread, "board", ""),
            "thread": thread.fingerprint,
            "parent": parent.fingerprint,
            "body": f"soak post {self.made} " + "x" * self.rng.randrange(0, 600),
        }

    def _vote(self, now: int) -> Provable:
        if not self.posts:
            return self._post(now)
        key, _ = self.rng.choice(self.authors)
        target = self.rng.choice(self.posts)
        values = {
            "board": getattr(target, "board", ""),
            "thread": getattr(target, "thread", ""),
            "target": target.fingerprint,
            "typeclass": 1,
            "type": 1,
        }
        return self._make("vote", values, key, now)

    def _truststate(self, now: int) -> Provable:
        key, _ = self.rng.choice(self.authors)
        _, target = self.rng.choice(self.authors)
        values = {"target": target.fingerprint, "typeclass": 1, "type": 1}
        return self._make("truststate", values, key, now)

    def _update(self, now: int) -> Provable | None:
        for _ in range(8):
            old = self.rng.choice(self.recent)
            newest = self.versions.get(old.fingerprint, old.creation)
            if newest > now - _UPDATE_AFTER:
                continue
            owner = self.owners[getattr(old, "key", "") or getattr(old, "owner_publickey", "")]
            new = update(old, _changes(old, self.made), owner, self.difficulty, now, self.mint)
            self.made += 1
            self.versions[old.fingerprint] = now
            if not old.last_update:
                self.firsts.append(old)
            self.recent.append(new)
            return new
        return None

    def start(self, now: int, authors: int = 3) -> list[Wire]:
        """The first authors (Key entities), a board and a thread each."""
        made = [self._author(now) for _ in range(authors)]
        made += [self._board(now) for _ in range(authors)]
        made += [self._thread(now) for _ in range(authors)]
        return [_wire(o) for o in made]

    def batch(self, count: int, now: int) -> list[Wire]:
        """``count`` objects in the proportions of ``MIX``."""
        makers: dict[str, Callable[[int], Provable | None]] = {
            "post": self._post,
            "vote": self._vote,
            "update": self._update,
            "thread": self._thread,
            "board": self._board,
            "truststate": self._truststate,
            "key": self._author,
        }
        kinds = self.rng.choices(list(MIX), weights=list(MIX.values()), k=count)
        wires: dict[tuple[str, int], Wire] = {}  # a vote made twice in a second is one object
        for kind in kinds:
            made = makers[kind](now)
            if made is not None:
                wires.setdefault((made.fingerprint, made.last_update), _wire(made))
        return list(wires.values())

    def hostile(self, case: str, now: int) -> bytes:
        """The request body of one hostile case (``HOSTILE``)."""
        if case == "query_replay":
            return self.query(now)
        if case == "malformed":
            return b'[{"kind": "post", "object": {"fingerprint": '
        if case == "oversized":
            return b"[" + b" " * _OVERSIZED + b"]"
        if case == "replay":
            return _body(self.rng.choice(self.recent))
        if case == "stale" and self.firsts:
            return _body(self.rng.choice(self.firsts))
        key, _ = self.rng.choice(self.authors)
        work = 0 if case == "no_pow" else self.difficulty
        post = create("post", self._post_values(), key, work, now, self.mint)
        wire = json.loads(canonical.dumps(post))
        if case == "bad_signature":
            wire["signature"] = _flip(wire["signature"])
        elif case == "tampered":
            wire["body"] += " (changed)"
        elif case == "wrong_type":
            wire["creation"] = str(wire["creation"])
        return json.dumps([{"kind": "post", "object": wire}]).encode()

    def query(self, now: int, seconds: int = 0) -> bytes:
        """A signed POST request for the posts of the last ``seconds`` (a syncer asks from its
        cursor less its overlap), or with ``seconds`` 0 for one post made here by fingerprint
        (the range when none was made yet)."""
        key = self.peer
        if not seconds:
            key = self.askers[self.asked % len(self.askers)]
            self.asked += 1
        base = pages.prefill(
            key.public_hex, port=self.peer_port, node_type=2, nonce=secrets.token_hex(32), now=now
        )
        filters: tuple[Filter, ...]
        if self.posts and not seconds:
            filters = (
                Filter(type="fingerprint", values=(self.rng.choice(self.posts).fingerprint,)),
            )
        else:
            filters = pages.timestamp_filter(now - (seconds or 60), now)
        page = dataclasses.replace(base, entity="posts", endpoint="posts", filters=filters)
        return canonical.encode(pages.build_request(page, key, self.mint, self.request_pow))


def _changes(obj: Provable, made: int) -> dict[str, Any]:
    if obj.kind == "board":
        return {"description": f"updated {made}"}
    if obj.kind in ("post", "thread"):
        return {"body": f"updated {made}"}
    if obj.kind == "key":
        return {"info": f"updated {made}"}
    return {"type": 2 if getattr(obj, "type", 1) == 1 else 1}  # vote, truststate


def _flip(text: str) -> str:
    return ("1" if text[0] != "1" else "2") + text[1:]


def _body(obj: Provable) -> bytes:
    return f'[{{"kind":"{obj.kind}","object":{canonical.dumps(obj)}}}]'.encode()


# --- the worker process -----------------------------------------------------------------------

_FORGE: Forge | None = None


def _init(seed: int, difficulty: int, request_pow: int, peer_port: int) -> None:
    global _FORGE  # noqa: PLW0603 - the one Forge of this worker process
    _FORGE = Forge(seed, difficulty, request_pow, peer_port)


def _forge() -> Forge:
    if _FORGE is None:
        raise RuntimeError("the forge worker was not started")
    return _FORGE


def start_worker(
    seed: int, difficulty: int, request_pow: int, peer_port: int
) -> ProcessPoolExecutor:
    """A process running one :class:`Forge`, for ``first``, ``batch``, ``hostile`` and ``query``."""
    return ProcessPoolExecutor(
        1,
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_init,
        initargs=(seed, difficulty, request_pow, peer_port),
    )


def first(now: int) -> list[Wire]:
    return _forge().start(now)


def batch(count: int, now: int) -> list[Wire]:
    return _forge().batch(count, now)


def hostile(case: str, now: int) -> bytes:
    return _forge().hostile(case, now)


def query(now: int, seconds: int = 0) -> bytes:
    return _forge().query(now, seconds)
