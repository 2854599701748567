"""Proof of work from the miner service, or in this process when no miner answers.

The wire protocol (core NATS, subjects from ``relay.bus.Layout``) is defined here once, for both
the miner service and its clients::

    request   {"job": id, "text": <exact PoW input>, "difficulty": N, "deadline_s": s, "split": b}
    progress  {"job": id, "progress": {"attempts": n, "seconds": s, "miner": m}}    every second
    found     {"job": id, "salt": s, "counter": c, "attempts": n, "seconds": s, "miner": m}
    error     {"job": id, "error": {"field": f, "rule": r, "detail": d}}

A request goes to ``miner_request_subject`` (one miner of the queue group takes it) or, split, to
``miner_split_subject`` (every miner searches with its own salt). Replies go to the request's
reply subject. The first ``found`` wins; for a split job the requester then publishes on
``miner_cancel_subject(job)`` so every other miner stops. ``miner`` is a random id of the
answering miner process, so that the progress of a split job can be summed over miners. No private
key is ever sent: the requester signs the found prefix itself (PROTOCOL.md §7.2 step 7).

``mine()`` is the client: it uses the service when one answers and searches in this process when
none does (no responders, NATS unreachable, job too large for the bus), logging which. The
in-process search runs in a thread, or, given ``local=in_pool(cpu)``, in a worker of the caller's
process pool, where it does not even compete with the event loop for the GIL. A miner
that goes silent (killed mid-job) is noticed within ``SILENCE_SECONDS`` and the job is sent again;
nothing waits past the caller's deadline. ``service_minter`` adapts it to ``mim.pow.Minter``.
"""

from __future__ import annotations

from relay.mining.client import connect, mine, service_minter
from relay.mining.local import LocalSearch, in_pool, mine_local
from relay.mining.wire import (
    CHUNK_ATTEMPTS,
    PROGRESS_SECONDS,
    SILENCE_SECONDS,
    Mined,
    MiningError,
    MiningTimeout,
    Progress,
    Refusal,
    Request,
    encode_error,
    encode_found,
    encode_progress,
    job_of,
    parse_request,
)

__all__ = [
    "CHUNK_ATTEMPTS",
    "PROGRESS_SECONDS",
    "SILENCE_SECONDS",
    "LocalSearch",
    "Mined",
    "MiningError",
    "MiningTimeout",
    "Progress",
    "Refusal",
    "Request",
    "connect",
    "encode_error",
    "encode_found",
    "encode_progress",
    "in_pool",
    "job_of",
    "mine",
    "mine_local",
    "parse_request",
    "service_minter",
]
