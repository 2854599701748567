"""Asking a running syncer to sync one remote now: what ``mimrelay sync HOST:PORT`` does.

The request goes to ``Layout.sync_subject`` (one syncer replica of the queue group answers) as
JSON ``{"remote": "HOST:PORT"}``. While the sync runs, the syncer publishes the name of each stage
it enters to the subject the request names in its ``Mim-Progress`` header, if any; at the end it
answers the sync's summary (``ok``, ``reason``, pages, bytes, objects ...). A remote that does not
parse is answered ``{"ok": false, "usage": true, "reason": "remote", "error": ...}``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

import nats.errors
from nats.aio.client import Client as NATS
from nats.aio.msg import Msg

from relay import BusUnavailable
from relay.bus import Layout

__all__ = ["HEADER_PROGRESS", "STAGES", "ask"]

#: Header naming the subject where the syncer reports the stage it enters.
HEADER_PROGRESS: Final = "Mim-Progress"

#: The stages of one sync, in order, as the progress subject hears them (then ``done``).
STAGES: Final = ("check", "addresses", "votes", "truststates", "posts", "threads", "boards", "keys")


async def ask(
    nc: NATS,
    layout: Layout,
    remote: str,
    *,
    wait_seconds: float,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Have a syncer sync ``remote`` now; its summary. ``BusUnavailable`` if none answers."""
    headers: dict[str, str] = {}
    subscription = None
    if progress is not None:
        inbox = nc.new_inbox()

        async def heard(msg: Msg) -> None:
            progress(msg.data.decode(errors="replace"))

        subscription = await nc.subscribe(inbox, cb=heard)
        headers[HEADER_PROGRESS] = inbox
    try:
        reply = await nc.request(
            layout.sync_subject,
            json.dumps({"remote": remote}).encode(),
            timeout=wait_seconds,
            headers=headers or None,
        )
    except nats.errors.NoRespondersError as exc:
        raise BusUnavailable("no syncer is running to sync with") from exc
    except nats.errors.TimeoutError as exc:
        raise BusUnavailable(f"the syncer did not finish within {wait_seconds:g} s") from exc
    finally:
        if subscription is not None:
            await subscription.unsubscribe()
    answer = json.loads(reply.data)
    if not isinstance(answer, dict):
        raise BusUnavailable("the syncer answered something that is not a summary")
    return answer
