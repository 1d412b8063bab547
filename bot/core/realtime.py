"""What deciding code needs from the clock guard (bot.ops.clockguard.ClockGuard) without
importing it: the time really passed since a moment, steps of the wall clock taken out."""
from __future__ import annotations

from datetime import datetime, timedelta
from typing import Protocol


class StepAware(Protocol):
    def elapsed(self, since: datetime, now: datetime) -> timedelta:
        """Time really passed from `since` to `now`: less every step made after `since`."""
        ...

    def real_now(self, since: datetime, now: datetime) -> datetime:
        """`now` as the clock would say it without the steps made after `since`."""
        ...
