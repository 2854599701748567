"""The gateway's 503 log under a flood: one line per rule per interval, with what it held back."""

from __future__ import annotations

from services.gateway.answers import Throttle


def test_one_line_per_rule_per_interval_telling_how_many_were_held_back() -> None:
    """Within the interval a rule's further lines are held back and counted; the next line after
    it says how many; another rule is not held back by the first."""
    now = [100.0]
    throttle = Throttle(60.0, clock=lambda: now[0])
    assert throttle.passes("database.unavailable") == 0
    for _ in range(5):
        now[0] += 10
        assert throttle.passes("database.unavailable") is None
    assert throttle.passes("answer.size") == 0
    now[0] += 10.5  # 60.5 s after the first line
    assert throttle.passes("database.unavailable") == 5
    assert throttle.passes("database.unavailable") is None
