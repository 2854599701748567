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

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import mim.errors
import mim.pow
from relay import DependencyUnavailable, RelayError
from relay.bus import Layout
from relay.logging import get_logger
from relay.runner import CpuPool, connect_nats

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

PROGRESS_SECONDS: Final = 1.0  # a miner reports progress on a job at least this often
SILENCE_SECONDS: Final = 5.0  # a requester hearing nothing for this long sends the job again
CHUNK_ATTEMPTS: Final = 50_000  # attempts per search call (~0.05 s): cancel and deadline checks
_JOB_ID_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")
_JOB_ID_MAX: Final = 64  # a subject token of relay.bus
_RETRYABLE: Final = frozenset({"miner.shutdown", "miner.busy"})

Progress = Callable[[int, float], None]
"""Called with (attempts so far, seconds so far) while a job runs."""

LocalSearch = Callable[[str, int, float], Awaitable["Mined"]]
"""The search ``mine`` falls back to, given (text, difficulty, timeout in seconds)."""

_log = get_logger(__name__)


class MiningError(RelayError):
    """No proof: a miner refused the job or the search failed; names field, rule and detail."""

    def __init__(self, field: str, rule: str, detail: str) -> None:
        super().__init__(f"{field}: {detail} ({rule})")
        self.field = field
        self.rule = rule
        self.detail = detail

    def as_dict(self) -> dict[str, str]:
        return {"field": self.field, "rule": self.rule, "detail": self.detail}


class MiningTimeout(MiningError):
    """The deadline passed before a proof was found."""


class Refusal(MiningError):
    """A request the miner will not take; its ``as_dict()`` is the error reply."""


class Mined(NamedTuple):
    """A found proof: the unsigned PoW string, the attempts it took, and where it was mined.

    For a split job ``attempts`` counts every miner's work as last reported.
    """

    unsigned_pow: str
    attempts: int
    where: str  # "service", "local" (a thread) or "pool" (a worker process of ours)


# --- Wire format -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Request:
    """One valid mining request."""

    job: str
    text: str
    difficulty: int
    deadline_s: float
    split: bool = False

    def encode(self) -> bytes:
        return json.dumps(
            {
                "job": self.job,
                "text": self.text,
                "difficulty": self.difficulty,
                "deadline_s": self.deadline_s,
                "split": self.split,
            }
        ).encode()


def _job_of(raw: dict[str, Any]) -> str:
    job = raw.get("job")
    if not isinstance(job, str) or not 0 < len(job) <= _JOB_ID_MAX or set(job) - _JOB_ID_CHARS:
        raise Refusal("job", "request.job", f"must be 1-{_JOB_ID_MAX} of [a-z0-9_-]")
    return job


def _difficulty_of(raw: dict[str, Any]) -> int:
    value = raw.get("difficulty")
    if not isinstance(value, int) or isinstance(value, bool):
        raise Refusal("difficulty", "request.difficulty", f"{value!r} is not an integer")
    if not 1 <= value <= mim.pow.MAX_DIFFICULTY:
        detail = f"{value} is outside 1..{mim.pow.MAX_DIFFICULTY}"
        raise Refusal("difficulty", "request.difficulty", detail)
    return value


def _text_of(raw: dict[str, Any], max_text_bytes: int) -> str:
    text = raw.get("text")
    if not isinstance(text, str):
        raise Refusal("text", "request.text", f"must be a string, not {type(text).__name__}")
    size = len(text.encode("utf-8", "surrogatepass"))
    if size > max_text_bytes:
        raise Refusal("text", "request.text_size", f"{size} bytes is over {max_text_bytes}")
    return text


def _deadline_of(raw: dict[str, Any], limit: float) -> float:
    value = raw.get("deadline_s", limit)
    if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
        raise Refusal("deadline_s", "request.deadline", f"{value!r} is not a positive number")
    return min(float(value), limit)


def parse_request(data: bytes, *, max_text_bytes: int, limit_seconds: float) -> Request:
    """The request in ``data``, its deadline capped at ``limit_seconds``; ``Refusal`` otherwise."""
    try:
        raw = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise Refusal("request", "request.json", f"not a JSON document: {exc}") from exc
    if not isinstance(raw, dict):
        raise Refusal("request", "request.json", f"must be an object, not {type(raw).__name__}")
    split = raw.get("split", False)
    if not isinstance(split, bool):
        raise Refusal("split", "request.split", f"{split!r} is not true or false")
    return Request(
        job=_job_of(raw),
        text=_text_of(raw, max_text_bytes),
        difficulty=_difficulty_of(raw),
        deadline_s=_deadline_of(raw, limit_seconds),
        split=split,
    )


def job_of(data: bytes) -> str | None:
    """The job id of a maybe invalid request, to address its error reply (``None``: unreadable)."""
    try:
        raw = json.loads(data)
        return _job_of(raw) if isinstance(raw, dict) else None
    except (UnicodeDecodeError, json.JSONDecodeError, Refusal):
        return None


def encode_found(
    job: str, salt: str, counter: int, attempts: int, seconds: float, miner: str
) -> bytes:
    reply = {
        "job": job,
        "salt": salt,
        "counter": counter,
        "attempts": attempts,
        "seconds": seconds,
        "miner": miner,
    }
    return json.dumps(reply).encode()


def encode_progress(job: str, attempts: int, seconds: float, miner: str) -> bytes:
    report = {"attempts": attempts, "seconds": seconds, "miner": miner}
    return json.dumps({"job": job, "progress": report}).encode()


def encode_error(job: str | None, error: MiningError) -> bytes:
    return json.dumps({"job": job, "error": error.as_dict()}).encode()


# --- In-process search -------------------------------------------------------------------------


def _search_local(
    text: str, difficulty: int, deadline: float, progress: Progress | None
) -> tuple[str, int]:
    salt = mim.pow.make_salt(secrets.randbelow)
    started = time.monotonic()
    start = 0
    while True:
        counter, attempts = mim.pow.search(text, difficulty, salt, start, CHUNK_ATTEMPTS)
        done = start + attempts
        if counter is not None:
            return mim.pow.unsigned(difficulty, salt, counter), done
        if progress is not None:
            progress(done, time.monotonic() - started)
        if time.monotonic() >= deadline:
            detail = f"no proof of difficulty {difficulty} after {done} attempts"
            raise MiningTimeout("deadline_s", "miner.deadline", detail)
        start += CHUNK_ATTEMPTS


def _check_difficulty(difficulty: int) -> None:
    if not 1 <= difficulty <= mim.pow.MAX_DIFFICULTY:
        detail = f"{difficulty} is outside 1..{mim.pow.MAX_DIFFICULTY}"
        raise MiningError("difficulty", "request.difficulty", detail)


async def mine_local(
    text: str,
    difficulty: int,
    *,
    timeout: float,  # noqa: ASYNC109 (a deadline for the search thread, not for one await)
    progress: Progress | None = None,
) -> Mined:
    """Search in a thread of this process (one core); ``MiningTimeout`` after ``timeout``."""
    _check_difficulty(difficulty)
    deadline = time.monotonic() + timeout
    found, attempts = await asyncio.to_thread(_search_local, text, difficulty, deadline, progress)
    return Mined(found, attempts, "local")


def _search_in_worker(text: str, difficulty: int, timeout: float) -> tuple[str, int]:
    """The search in a pool worker: ``("", attempts)`` past the deadline (errors pickle badly)."""
    try:
        return _search_local(text, difficulty, time.monotonic() + timeout, None)
    except MiningTimeout:
        return "", 0


def in_pool(cpu: CpuPool) -> LocalSearch:
    """A ``local`` search for :func:`mine` that runs in a worker process of ``cpu``."""

    async def search(text: str, difficulty: int, timeout: float) -> Mined:  # noqa: ASYNC109
        _check_difficulty(difficulty)
        found, attempts = await cpu.run(_search_in_worker, text, difficulty, timeout)
        if not found:
            detail = f"no proof of difficulty {difficulty} in {timeout:.1f} s"
            raise MiningTimeout("deadline_s", "miner.deadline", detail)
        return Mined(found, attempts, "pool")

    return search


# --- Service client ----------------------------------------------------------------------------


class _NoMiner(Exception):
    """No miner can take the job; the reason is the message."""


class _Silent(Exception):
    """The miners working on a job stopped reporting."""


def _is_no_responders(msg: Msg) -> bool:
    headers = msg.headers or {}
    return headers.get("Status") == "503" and not msg.data


def _found(raw: dict[str, Any], text: str, difficulty: int) -> Mined | None:
    """The proof in a ``found`` reply if it does the work; ``None`` for anything else."""
    salt, counter, attempts = raw.get("salt"), raw.get("counter"), raw.get("attempts")
    if not (isinstance(salt, str) and isinstance(counter, int) and isinstance(attempts, int)):
        return None
    candidate = mim.pow.unsigned(difficulty, salt, counter)
    try:
        mim.pow.check(text, candidate, "", difficulty)
    except mim.errors.MimError:
        _log.warning("miner_reply_invalid", rule="pow.work")
        return None
    return Mined(candidate, attempts, "service")


async def _attempt(
    nc: NATS,
    layout: Layout,
    request: Request,
    deadline: float,
    silence: float,
    progress: Progress | None,
) -> Mined:
    """Send ``request`` once and wait for its answer; cancels the job on the way out."""
    tally = _Tally(progress)
    inbox = nc.new_inbox()
    sub = await nc.subscribe(inbox)
    subject = layout.miner_split_subject if request.split else layout.miner_request_subject
    answered = False
    try:
        await nc.publish(subject, request.encode(), reply=inbox)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                detail = f"no proof of difficulty {request.difficulty} in {request.deadline_s} s"
                raise MiningTimeout("deadline_s", "miner.deadline", detail)
            try:
                msg = await sub.next_msg(timeout=min(left, silence))
            except nats.errors.TimeoutError:
                if left > silence:
                    if tally.refused:  # the only miners that spoke turned the job away
                        raise _NoMiner(tally.refused) from None
                    raise _Silent from None
                continue
            result = _reply(msg, request, tally)
            if result is not None:
                answered = not request.split  # the one miner of a plain job has stopped
                return result
    finally:
        await sub.unsubscribe()
        if not answered and not nc.is_closed:  # tell every miner still on the job to stop
            await _cancel(nc, layout, request.job)


async def _cancel(nc: NATS, layout: Layout, job: str) -> None:
    """Publish the cancel and see it leave now: the caller may go on to block its loop."""
    try:
        await nc.publish(layout.miner_cancel_subject(job), b"")
        await nc.flush(timeout=1)
    except (nats.errors.Error, TimeoutError) as exc:
        _log.warning("miner_cancel_failed", job=job, error=repr(exc))


class _Tally:
    """The attempts each miner reported on one job, summed for the caller's progress display."""

    def __init__(self, progress: Progress | None) -> None:
        self._progress = progress
        self._started = time.monotonic()
        self._by_miner: dict[str, int] = {}
        self.refused = ""  # the last "busy" or "shutdown" answer to a split job

    def report(self, miner: str, attempts: int) -> None:
        self._by_miner[miner] = attempts
        if self._progress is not None:
            self._progress(self.others(""), time.monotonic() - self._started)

    def others(self, winner: str) -> int:
        """Attempts reported by miners other than ``winner``."""
        return sum(n for miner, n in self._by_miner.items() if miner != winner)


def _reply(msg: Msg, request: Request, tally: _Tally) -> Mined | None:
    """Act on one reply: a proof, progress (``None``), or an error raised."""
    if _is_no_responders(msg):
        raise _NoMiner("no miner is listening")
    try:
        raw = json.loads(msg.data)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None
    if not isinstance(raw, dict) or raw.get("job") != request.job:
        return None
    if isinstance(error := raw.get("error"), dict):
        field, rule = str(error.get("field", "?")), str(error.get("rule", "?"))
        detail = str(error.get("detail", ""))
        if rule in _RETRYABLE:
            if not request.split:
                raise _NoMiner(f"{rule}: {detail}")
            tally.refused = f"{rule}: {detail}"  # other miners may still be searching
            return None
        kind = MiningTimeout if rule == "miner.deadline" else MiningError
        raise kind(field, rule, detail)
    if isinstance(report := raw.get("progress"), dict):
        attempts = report.get("attempts")
        if isinstance(attempts, int):
            tally.report(str(report.get("miner", "")), attempts)
        return None
    mined = _found(raw, request.text, request.difficulty)
    if mined is None:
        return None
    return mined._replace(attempts=mined.attempts + tally.others(str(raw.get("miner", ""))))


async def mine(
    nc: NATS | None,
    text: str,
    difficulty: int,
    *,
    timeout: float,  # noqa: ASYNC109 (one deadline over retries and the fallback)
    split: bool = True,
    layout: Layout | None = None,
    progress: Progress | None = None,
    silence: float = SILENCE_SECONDS,
    local: LocalSearch | None = None,
) -> Mined:
    """A proof of ``difficulty`` over ``text`` from the miner service, or mined in this process.

    Falls back to ``mine_local`` (or to ``local`` if given, which reports no ``progress``) when
    no miner answers (or ``nc`` is ``None``); sends the job again when its miners go silent;
    raises ``MiningError`` for a refused job and ``MiningTimeout`` when ``timeout`` seconds pass
    without a proof.
    """
    layout = layout or Layout()
    deadline = time.monotonic() + timeout
    reason = "no NATS connection"
    tries = 0
    while nc is not None and not nc.is_closed:
        tries += 1
        left = deadline - time.monotonic()
        job = secrets.token_hex(8)
        request = Request(job, text, difficulty, round(max(left, 0.001), 3), split)
        try:
            mined = await _attempt(nc, layout, request, deadline, silence, progress)
        except _NoMiner as exc:
            reason = str(exc)
            break
        except _Silent:
            _log.warning("miner_silent", job=job, tries=tries, silence_s=silence)
            continue
        except (nats.errors.MaxPayloadError, nats.errors.ConnectionClosedError) as exc:
            reason = f"cannot send the job: {exc!r}"
            break
        _log.info("pow_mined", where="service", job=job, difficulty=difficulty, tries=tries)
        return mined
    left = deadline - time.monotonic()
    _log.info("pow_mining_in_process", reason=reason, difficulty=difficulty)
    if left <= 0:
        raise MiningTimeout("deadline_s", "miner.deadline", f"no time left after: {reason}")
    if local is not None:
        return await local(text, difficulty, left)
    return await mine_local(text, difficulty, timeout=left, progress=progress)


async def connect(nats_url: str, *, connect_timeout: float = 2.0) -> NATS | None:
    """A NATS connection for mining, or ``None`` (logged) when NATS does not answer at once."""
    try:
        return await connect_nats(
            nats_url,
            "mimrelay-mining",
            attempts=1,
            delay=0.1,
            connect_timeout=connect_timeout,
            log=_log,
        )
    except DependencyUnavailable as exc:
        _log.info("pow_nats_unreachable", error=str(exc))
        return None


async def _mine_once(
    nats_url: str,
    text: str,
    difficulty: int,
    timeout: float,  # noqa: ASYNC109 (passed on to mine)
    split: bool,
    layout: Layout,
) -> Mined:
    nc = await connect(nats_url)
    try:
        return await mine(nc, text, difficulty, timeout=timeout, split=split, layout=layout)
    finally:
        if nc is not None:
            await nc.close()


def service_minter(
    nats_url: str, *, timeout: float = 600.0, split: bool = True, layout: Layout | None = None
) -> mim.pow.Minter:
    """A ``mim.pow.Minter`` for synchronous code (the CLI): each call runs ``mine`` in its own loop.

    Like ``mim.pow.local_minter`` it answers ``""`` for a difficulty of 0 or less.
    """
    where = layout or Layout()

    def mint(text: str, difficulty: int) -> str:
        if difficulty <= 0:
            return ""
        mined = asyncio.run(_mine_once(nats_url, text, difficulty, timeout, split, where))
        return mined.unsigned_pow

    return mint
