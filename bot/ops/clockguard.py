"""Real elapsed time across wall-clock steps forward, for decisions about quietness.

When NTP steps the clock forward a day, every open incident looks a day quiet and a 4 h snooze
looks over: everything would resolve (and be posted again) at once. The monotonic clock does
not step, so a guard fed by the housekeeping job notices a forward step (wall time moving more
than monotonic time) and remembers it; `elapsed(since, now)` then leaves the step out for a
moment from before it. Steps back need nothing here: they only delay (the watchdog keeps the
polls running). What the guard knows lives in the process: a step before a restart is not seen.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

log = logging.getLogger("submitwatch")
#: A difference between the two clocks smaller than this is scheduling noise, not a step.
NOISE = timedelta(seconds=30)


class ClockGuard:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic):
        self.monotonic = monotonic
        self._last: tuple[datetime, float] | None = None
        self.steps: list[tuple[datetime, timedelta]] = []   # (wall time before it, size)
        self._lock = threading.Lock()

    def observe(self, now: datetime) -> None:
        """Compare the clocks since the last call; remember a step forward."""
        mono = self.monotonic()
        with self._lock:
            if self._last is not None:
                wall_before, mono_before = self._last
                expected = wall_before + timedelta(seconds=mono - mono_before)
                step = now - expected
                if step > NOISE:
                    self.steps.append((expected, step))
                    log.warning("the system clock jumped %s forward; quiet periods and snoozes "
                                "started before it are counted without the jump", step)
            self._last = (now, mono)

    def elapsed(self, since: datetime, now: datetime) -> timedelta:
        """Time really passed from `since` to `now`: less every forward step after `since`."""
        with self._lock:
            jumped = sum((size for before, size in self.steps if since <= before), timedelta())
        return now - since - jumped

    def real_now(self, since: datetime, now: datetime) -> datetime:
        """`now` as the clock would say it without the steps made after `since`."""
        return since + self.elapsed(since, now)
