"""Requests to the syncer from the operator's tools: "sync this remote now".

The request's form is :mod:`relay.sync_request`.

One syncer replica of the queue group takes each request, runs the sync in its own ``Syncer``
(the same client, pool and miners as its scheduled syncs), reports each stage to the progress
subject the request names, and answers the summary. The sync holds the remote's lease, taken over
a rest (the operator asked for it now) but not from a replica syncing it right now: that is
answered ``{"ok": false, "reason": "busy"}``. Requests are taken one at a time; the stop of the
service cuts a running one short and answers nothing (the asker times out).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from relay import LeaseLost
from relay.bus import Layout
from relay.runner import Context
from relay.sync_request import HEADER_PROGRESS
from services.syncer.claims import Claims
from services.syncer.peers import Remote, parse_remote
from services.syncer.sync import Progress, Report

__all__ = ["serve"]

SyncNow = Callable[[Remote, Progress], Awaitable[Report]]


async def serve(ctx: Context, nc: NATS, layout: Layout, sync: SyncNow, claims: Claims) -> None:
    """Answer sync requests until the service stops."""

    async def answer(msg: Msg) -> None:
        await ctx.until_stopped(_answer(nc, msg, sync, claims))

    await nc.subscribe(layout.sync_subject, queue=layout.syncer_queue_group, cb=answer)


async def _answer(nc: NATS, msg: Msg, sync: SyncNow, claims: Claims) -> None:
    try:
        request = json.loads(msg.data)
        remote = parse_remote(str(request["remote"]))
    except (ValueError, KeyError, TypeError) as exc:
        reply = {"ok": False, "usage": True, "reason": "remote", "error": f"HOST:PORT: {exc}"}
        await msg.respond(json.dumps(reply).encode())
        return
    claim = await claims.remote(remote.key, str(remote), now=True)
    if claim is None:
        await msg.respond(json.dumps(Report(str(remote), reason="busy").summary()).encode())
        return
    inbox = (msg.headers or {}).get(HEADER_PROGRESS, "")
    stages: asyncio.Queue[str | None] = asyncio.Queue()
    forward = asyncio.create_task(_forward(nc, inbox, stages), name="sync-progress")
    try:
        report = await claim.keep(sync(remote, stages.put_nowait))
    except LeaseLost:
        report = Report(str(remote), reason="lease_lost")
    finally:
        stages.put_nowait(None)
        await forward
        await claim.done(0.0)
    await msg.respond(json.dumps(report.summary()).encode())


async def _forward(nc: NATS, inbox: str, stages: asyncio.Queue[str | None]) -> None:
    """Tell ``inbox`` each stage as the sync enters it, until ``None``."""
    while (stage := await stages.get()) is not None:
        if not inbox:
            continue
        try:
            await nc.publish(inbox, stage.encode())
        except nats.errors.Error:
            inbox = ""  # progress is a courtesy; the summary still goes out
