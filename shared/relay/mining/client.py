"""The client of the miner service: `mine()` asks the miners, and searches here when none does."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from typing import Any

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

import mim.errors
import mim.pow
from relay import DependencyUnavailable
from relay.bus import Layout
from relay.connect import connect_nats
from relay.logging import get_logger
from relay.mining.local import LocalSearch, mine_local
from relay.mining.wire import (
    RETRYABLE,
    SILENCE_SECONDS,
    Mined,
    MiningError,
    MiningTimeout,
    Progress,
    Request,
)

_log = get_logger(__name__)


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
        if rule in RETRYABLE:
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
    nc = await connect(nats_url) if nats_url else None
    try:
        return await mine(nc, text, difficulty, timeout=timeout, split=split, layout=layout)
    finally:
        if nc is not None:
            await nc.close()


def service_minter(
    nats_url: str, *, timeout: float = 600.0, split: bool = True, layout: Layout | None = None
) -> mim.pow.Minter:
    """A ``mim.pow.Minter`` for synchronous code (the CLI): each call runs ``mine`` in its own loop.

    Like ``mim.pow.local_minter`` it answers ``""`` for a difficulty of 0 or less. An empty
    ``nats_url`` mines in this process.
    """
    where = layout or Layout()

    def mint(text: str, difficulty: int) -> str:
        if difficulty <= 0:
            return ""
        mined = asyncio.run(_mine_once(nats_url, text, difficulty, timeout, split, where))
        return mined.unsigned_pow

    return mint
