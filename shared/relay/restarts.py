"""How long ``mimrelay up`` waits before starting again something that exited.

The pause doubles from ``least`` up to ``most`` with each exit, and goes back to ``least`` once
the thing has run for ``reset`` seconds; ``in_a_row`` counts the exits since it last ran that
long, so a supervisor can give up on something that keeps failing.
"""

from __future__ import annotations

__all__ = ["Backoff"]


class Backoff:
    """The restart pause of one supervised process; see the module docstring."""

    def __init__(self, least: float, most: float, reset: float) -> None:
        self.least = least
        self.most = most
        self.reset = reset
        self.delay = least
        self.in_a_row = 0

    def exited(self, ran_for: float) -> float:
        """Record an exit (or a failed start) after ``ran_for`` seconds; the pause to wait now."""
        if ran_for >= self.reset:
            self.delay = self.least
            self.in_a_row = 0
        pause = self.delay
        self.in_a_row += 1
        self.delay = min(self.delay * 2, self.most)
        return pause
