"""The miner: take proof-of-work jobs from NATS, search them in the process pool, answer or stop.

Wire protocol and client: ``relay.mining``. One job runs one search *lane* per worker process,
each lane with its own fresh salt, so a single proof uses every core this miner has. A lane runs
``mim.pow.search`` in chunks of ``chunk_attempts`` (about 0.05 s each) in the ``SearchPool`` and
checks between chunks whether the job is over: found by another lane, cancelled by a message on
``miner_cancel_subject(job)``, or past its deadline. The event loop only routes messages.

Every job ends in exactly one ``job_finished`` line and one ``mim_miner_jobs_total{outcome}``:
``found`` (the proof is sent), ``cancelled`` (someone else answered; nothing is sent),
``deadline`` / ``refused`` / ``busy`` / ``shutdown`` (an error reply naming the problem is sent).
On SIGTERM the miner stops taking jobs; jobs still running after the grace period answer
``miner.shutdown`` so their requesters send them to another miner at once.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Final

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from structlog.contextvars import bound_contextvars

import mim.pow
from relay.bus import Layout
from relay.mining import (
    PROGRESS_SECONDS,
    MiningError,
    Refusal,
    Request,
    encode_error,
    encode_found,
    encode_progress,
    job_of,
    parse_request,
)
from relay.runner import Context
from services.miner import metrics
from services.miner.pool import SearchPool
from services.miner.settings import MinerSettings

__all__ = ["Miner", "main"]

_REMEMBER_CANCELLED: Final = 4096  # cancel messages kept for jobs that have not arrived (yet)


@dataclass(slots=True, eq=False)
class _Job:
    request: Request
    reply: str
    started: float
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled_at: float | None = None
    attempts: int = 0

    @property
    def seconds(self) -> float:
        return time.monotonic() - self.started


class Miner:
    """Serves the request (queue group), split and cancel subjects of one node's layout."""

    def __init__(
        self, ctx: Context, nc: NATS, pool: SearchPool, settings: MinerSettings, layout: Layout
    ) -> None:
        self._ctx = ctx
        self._nc = nc
        self._pool = pool
        self._settings = settings
        self._layout = layout
        self._lanes = pool.workers
        self._jobs: dict[str, _Job] = {}
        self._cancelled: OrderedDict[str, None] = OrderedDict()
        self._subs: list[Subscription] = []
        self._log = ctx.log
        self.id = secrets.token_hex(4)

    async def start(self) -> None:
        """Warm every worker process up, then subscribe."""
        await self._pool.warm_up()
        metrics.WORKERS.set(self._lanes)
        layout = self._layout
        queue = layout.miner_queue_group
        self._subs = [
            await self._nc.subscribe(layout.miner_request_subject, queue, cb=self._on_request),
            await self._nc.subscribe(layout.miner_split_subject, cb=self._on_request),
        ]
        await self._nc.subscribe(layout.miner_cancel_subjects, cb=self._on_cancel)
        await self._nc.flush()
        self._log.info(
            "miner_listening",
            miner=self.id,
            workers=self._lanes,
            subject=layout.miner_request_subject,
        )

    async def stop_taking(self) -> None:
        """Stop taking jobs; requests already delivered are answered ``miner.shutdown``."""
        for sub in self._subs:
            await sub.drain()  # type: ignore[no-untyped-call]

    # --- messages ------------------------------------------------------------------------------

    async def _on_request(self, msg: Msg) -> None:
        job_id = job_of(msg.data)
        if not msg.reply:
            self._log.warning("job_refused", job=job_id, rule="request.reply", detail="no reply")
            metrics.JOBS.labels(outcome="refused").inc()
            return
        try:
            request = self._admit(msg.data)
        except MiningError as exc:
            outcome = {"miner.shutdown": "shutdown", "miner.busy": "busy"}.get(exc.rule, "refused")
            self._log.info("job_refused", job=job_id, outcome=outcome, **exc.as_dict())
            metrics.JOBS.labels(outcome=outcome).inc()
            await self._send(msg.reply, encode_error(job_id, exc))
            return
        if request.job in self._cancelled:
            self._log.info("job_skipped", job=request.job, reason="cancelled before it arrived")
            return
        job = _Job(request, msg.reply, time.monotonic())
        self._jobs[request.job] = job
        self._ctx.spawn(self._run(job), name=f"miner-job-{request.job}", kind="miner-job")

    def _admit(self, data: bytes) -> Request:
        if self._ctx.stop.is_set():
            raise MiningError("request", "miner.shutdown", "this miner is stopping")
        request = parse_request(
            data,
            max_text_bytes=self._settings.max_text_bytes,
            limit_seconds=self._settings.job_limit_seconds,
        )
        if request.job in self._jobs:
            raise Refusal("job", "request.job", f"job {request.job} is already running here")
        if len(self._jobs) >= self._settings.max_jobs:
            detail = f"{len(self._jobs)} jobs running, the limit is {self._settings.max_jobs}"
            raise MiningError("request", "miner.busy", detail)
        return request

    async def _on_cancel(self, msg: Msg) -> None:
        job_id = msg.subject.rsplit(".", 1)[-1]
        job = self._jobs.get(job_id)
        if job is None:
            self._cancelled[job_id] = None
            while len(self._cancelled) > _REMEMBER_CANCELLED:
                self._cancelled.popitem(last=False)
            return
        if job.cancelled_at is None and not job.stop.is_set():
            job.cancelled_at = time.monotonic()
            job.stop.set()

    async def _send(self, subject: str, payload: bytes) -> None:
        try:
            await self._nc.publish(subject, payload)
        except nats.errors.Error as exc:
            self._log.warning("reply_failed", error=repr(exc))

    # --- jobs ----------------------------------------------------------------------------------

    async def _run(self, job: _Job) -> None:
        request = job.request
        with bound_contextvars(job=request.job, difficulty=request.difficulty, split=request.split):
            metrics.JOBS_IN_FLIGHT.inc()
            self._log.info("job_started", deadline_s=request.deadline_s, lanes=self._lanes)
            heartbeat = asyncio.create_task(self._heartbeat(job))
            try:
                outcome = await self._search(job)
            except asyncio.CancelledError:
                error = MiningError("request", "miner.shutdown", "this miner stopped mid-job")
                await self._send(job.reply, encode_error(request.job, error))
                self._finish(job, "shutdown")
                raise
            finally:
                job.stop.set()
                heartbeat.cancel()
                metrics.JOBS_IN_FLIGHT.dec()
                del self._jobs[request.job]
            self._finish(job, outcome)

    async def _search(self, job: _Job) -> str:
        """Run the lanes until one finds a proof or the job is over; send the answer."""
        request = job.request
        deadline = job.started + request.deadline_s
        lanes = [
            asyncio.create_task(self._lane(job, mim.pow.make_salt(secrets.randbelow), deadline))
            for _ in range(self._lanes)
        ]
        try:
            found: tuple[str, int] | None = None
            pending: set[asyncio.Task[tuple[str, int] | None]] = set(lanes)
            while pending and found is None:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                found = next((r for t in done if (r := t.result()) is not None), None)
            job.stop.set()
            if job.cancelled_at is not None:  # the requester has its answer from another miner
                found = None
            if found is not None:
                salt, counter = found
                reply = encode_found(request.job, salt, counter, job.attempts, job.seconds, self.id)
                await self._send(job.reply, reply)
            await asyncio.gather(*pending)  # each ends after its current chunk
        finally:
            for lane in lanes:
                lane.cancel()
        if found is not None:
            metrics.JOB_DURATION.labels(
                difficulty_bucket=metrics.difficulty_bucket(request.difficulty)
            ).observe(job.seconds)
            return "found"
        if job.cancelled_at is not None:
            return "cancelled"
        detail = (
            f"no proof of difficulty {request.difficulty} after {job.attempts} attempts "
            f"in {request.deadline_s} s"
        )
        error = MiningError("deadline_s", "miner.deadline", detail)
        await self._send(job.reply, encode_error(request.job, error))
        return "deadline"

    async def _lane(self, job: _Job, salt: str, deadline: float) -> tuple[str, int] | None:
        request, chunk = job.request, self._settings.chunk_attempts
        start = 0
        while not job.stop.is_set() and time.monotonic() < deadline:
            counter, attempts = await self._pool.search(
                request.text, request.difficulty, salt, start, chunk
            )
            job.attempts += attempts
            metrics.ATTEMPTS.inc(attempts)
            if counter is not None:
                return salt, counter
            if attempts < chunk:  # the int64 counter range ran out for this salt
                return None
            start += attempts
        return None

    async def _heartbeat(self, job: _Job) -> None:
        while True:
            await asyncio.sleep(PROGRESS_SECONDS)
            await self._send(
                job.reply, encode_progress(job.request.job, job.attempts, job.seconds, self.id)
            )

    def _finish(self, job: _Job, outcome: str) -> None:
        metrics.JOBS.labels(outcome=outcome).inc()
        extra: dict[str, float] = {}
        if outcome == "cancelled" and job.cancelled_at is not None:
            metrics.CANCELLATIONS.inc()
            extra["stop_latency_s"] = round(time.monotonic() - job.cancelled_at, 3)
        seconds = job.seconds
        self._log.info(
            "job_finished",
            outcome=outcome,
            attempts=job.attempts,
            duration_s=round(seconds, 3),
            rate=round(job.attempts / seconds) if seconds > 0 else 0,
            **extra,
        )


async def main(ctx: Context) -> None:
    """Serve mining jobs until SIGTERM; in-flight jobs then get the grace period to finish."""
    settings = ctx.settings
    assert isinstance(settings, MinerSettings)
    pool = ctx.processes(SearchPool(settings.process_workers))
    nc = await ctx.nats()
    miner = Miner(ctx, nc, pool, settings, Layout.from_settings(settings))
    await miner.start()
    ctx.mark_ready()
    await ctx.stop.wait()
    await miner.stop_taking()
