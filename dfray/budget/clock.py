"""Clocks for the budget ledger and governor: wall time in production, simulated in tests.

A clock is anything with ``now() -> float``: seconds on one monotone-enough axis. The
ledger compares it with EC2 launch times, so both clocks here count seconds since the Unix
epoch (a SimClock starts at the wall time of its creation unless told otherwise).
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now(self) -> float: ...


class WallClock:
    """Real time: ``time.time()``."""

    def now(self) -> float:
        return time.time()

    def __repr__(self) -> str:
        return "WallClock()"


class SimClock:
    """A clock that moves only when told to: ``advance(seconds)`` or ``set(t)``."""

    def __init__(self, start: float | None = None):
        self._t = time.time() if start is None else float(start)

    def now(self) -> float:
        return self._t

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError(f"a clock cannot go back: advance({seconds})")
        self._t += float(seconds)
        return self._t

    def set(self, t: float) -> None:
        if t < self._t:
            raise ValueError(f"a clock cannot go back: set({t}) < now ({self._t})")
        self._t = float(t)

    def __repr__(self) -> str:
        return f"SimClock(now={self._t:.3f})"
