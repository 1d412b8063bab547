"""Real elapsed time across wall-clock steps, for decisions about quietness and snoozes.

When NTP steps the clock forward a day, every open incident looks a day quiet and a 4 h snooze
looks over: everything would resolve (and be posted again) at once. The monotonic clock does
not step, so the guard compares the two clocks each time a job reads the time (`now`, or
`observe` with a time just read) and remembers every step; `elapsed(since, now)` then leaves
the steps made after `since` out. A step back is remembered too, so a step forward followed
by a correction back does not stretch a snooze by the correction (a step back alone only delays
and the watchdog keeps the polls running, but the real time is still the one counted).

Which job sees a step first does not matter: the guard takes its first reading when the
scheduler is built (`start`), before any job runs, and every job that decides on quietness or
snoozes (each poll, housekeeping) has the guard judge the time it decides with before it
decides. What the guard knows lives in the process: a step before a restart is not seen.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

log = logging.getLogger("submitwatch")
#: A difference between the two clocks smaller than this is scheduling noise, not a step.
NOISE = timedelta(seconds=30)


class ClockGuard:
    def __init__(self, monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.monotonic, self.wall = monotonic, wall
        self._last: tuple[datetime, float] | None = None
        #: (the wall time the clock would have said without it, size: negative for a step back)
        self.steps: list[tuple[datetime, timedelta]] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """The first reading: a step from here on is seen by whichever job reads the time
        first (without it, one made before the first reading would go unseen)."""
        self.now()

    def now(self) -> datetime:
        """The wall clock, judged: a step since the last reading is remembered before the
        time is handed to anything that decides with it."""
        with self._lock:
            now = self.wall()
            self._observe(now, self.monotonic())
        return now

    def observe(self, now: datetime) -> None:
        """Compare the clocks since the last reading with `now`, a wall time just read."""
        mono = self.monotonic()
        with self._lock:
            self._observe(now, mono)

    def _observe(self, now: datetime, mono: float) -> None:
        if self._last is not None:
            wall_before, mono_before = self._last
            expected = wall_before + timedelta(seconds=mono - mono_before)
            step = now - expected
            if abs(step) > NOISE:
                self.steps.append((expected, step))
                log.warning("the system clock jumped %s %s; quiet periods and snoozes started "
                            "before it are counted without the jump",
                            timedelta(seconds=round(abs(step).total_seconds())),
                            "forward" if step > timedelta() else "back")
        if self._last is None or mono >= self._last[1]:   # a reading that waited for the lock
            self._last = (now, mono)

    def elapsed(self, since: datetime, now: datetime) -> timedelta:
        """Time really passed from `since` to `now`: less every step made after `since`.

        A step forward counts for every moment up to the time it jumped from. A step back
        counts only for a moment before every time read after it: one inside the hour the
        clock said twice may be from before the step or after it, and is counted as after it,
        so a decision can be late by the step, never early."""
        with self._lock:
            jumped = sum((size for before, size in self.steps
                          if (since <= before if size > timedelta() else since < before + size)),
                         timedelta())
        return now - since - jumped

    def real_now(self, since: datetime, now: datetime) -> datetime:
        """`now` as the clock would say it without the steps made after `since`."""
        return since + self.elapsed(since, now)
