"""services.gateway.http: an answer's head and body leave in one write, and nothing is held back
or reordered."""

from __future__ import annotations

import asyncio
from typing import Any

from services.gateway.http import _Corked


class _Recorded(asyncio.Transport):
    """A transport that keeps what it was asked to do, in order."""

    def __init__(self) -> None:
        super().__init__()
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: Any) -> None:
        self.calls.append(("write", bytes(data)))

    def writelines(self, list_of_data: Any) -> None:
        self.calls.append(("writelines", [bytes(d) for d in list_of_data]))

    def close(self) -> None:
        self.closing = True
        self.calls.append(("close", None))

    def is_closing(self) -> bool:
        return self.closing

    def get_write_buffer_size(self) -> int:
        return 0


async def test_a_head_waits_for_its_body_and_both_leave_in_one_call() -> None:
    recorded = _Recorded()
    corked = _Corked(recorded, asyncio.get_running_loop())
    corked.write(b"HTTP/1.1 200 OK\r\n\r\n")
    assert recorded.calls == []
    corked.write(b"x" * 100_000)
    assert recorded.calls == [("writelines", [b"HTTP/1.1 200 OK\r\n\r\n", b"x" * 100_000])]
    await asyncio.sleep(0)
    assert len(recorded.calls) == 1  # the scheduled flush found nothing left


async def test_a_head_with_nothing_after_it_leaves_within_the_loop_iteration() -> None:
    recorded = _Recorded()
    corked = _Corked(recorded, asyncio.get_running_loop())
    corked.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")  # a HEAD's answer
    await asyncio.sleep(0)
    assert recorded.calls == [("write", b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")]


async def test_a_long_write_goes_at_once_and_close_or_any_other_use_writes_what_is_held() -> None:
    recorded = _Recorded()
    corked = _Corked(recorded, asyncio.get_running_loop())
    corked.write(b"y" * 10_000)
    assert recorded.calls == [("write", b"y" * 10_000)]
    corked.write(b"head")
    assert corked.get_write_buffer_size() == 0
    assert recorded.calls[-1] == ("write", b"head")
    corked.write(b"tail")
    corked.close()
    assert recorded.calls[-2:] == [("write", b"tail"), ("close", None)]
    corked.write(b"late")  # after close: not held for ever, handed on (the transport drops it)
    assert recorded.calls[-1] == ("write", b"late")
