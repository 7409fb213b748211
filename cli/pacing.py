"""Pacing calls to a rate, and holding them for a while: the dlq replay's and the backfill's requests."""

from __future__ import annotations

import math
import time
from collections.abc import Callable


class Pacer:
    """Spaces calls to ``wait`` at least ``1/rate`` seconds apart (no limit when ``rate`` is None), and holds
    them while ``hold`` says; the first call is due at once, and a late caller is not made to catch up."""

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._interval = 1.0 / rate if rate else 0.0
        self._clock, self._sleep = clock, sleep
        self._next_at = -math.inf
        self._held_until = -math.inf

    def wait(self) -> None:
        """Return when the next call is due."""
        now = self._clock()
        start = max(now, self._next_at, self._held_until)
        if start > now:
            self._sleep(start - now)
        self._next_at = start + self._interval

    def hold(self, seconds: float) -> None:
        """Hold the next call until ``seconds`` from now (or longer, when it is held longer already)."""
        self._held_until = max(self._held_until, self._clock() + seconds)
