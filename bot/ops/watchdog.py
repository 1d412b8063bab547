"""The watch never goes blind: a watchdog on the monotonic clock over the scheduler's jobs.

APScheduler 3 schedules on the wall clock. When NTP steps the clock back an hour, every job's
next run time is suddenly an hour ahead and the scheduler sleeps that hour: no server is
polled, no failure is counted, no alert fires. The monotonic clock does not step, so this
watchdog notices a job that has not started for longer than its interval allows, asks the
scheduler to run it now (its interval then counts from there), and says so once in Slack:
whatever the cause, silence from SubmitWatch must never mean that it stopped looking.

`check` is one step that tests call directly with a clock of their own.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from store import db as store

log = logging.getLogger("submitwatch")


@dataclass
class _Job:
    job_id: str
    name: str
    interval: float          # seconds between runs
    allowed: float           # how late it may start before the watchdog steps in
    last_start: float        # monotonic time of its last start (or of the watchdog's start)
    running: bool = False
    last_end: float = 0.0    # and of the end of its last run: a slow run is not a stalled job

    @property
    def since(self) -> float:
        return max(self.last_start, self.last_end)


class Watchdog:
    def __init__(self, scheduler, open_database: Callable, *,
                 monotonic: Callable[[], float] = time.monotonic,
                 wall: Callable[[], datetime] = lambda: datetime.now(UTC)):
        self.scheduler = scheduler
        self.open_database = open_database
        self.monotonic, self.wall = monotonic, wall
        self.jobs: dict[str, _Job] = {}
        self.late_since: float | None = None   # monotonic start of the current late episode
        self._lock = threading.Lock()
        self._stop = threading.Event()

    def watch(self, job_id: str, name: str, interval: float, slack: float) -> None:
        """Watch a job that should start every `interval` seconds (plus up to `slack`)."""
        self.jobs[job_id] = _Job(job_id, name, interval, 2 * interval + slack, self.monotonic())

    def wrap(self, job_id: str, step: Callable[[], object]) -> Callable[[], object]:
        """The job's function, telling the watchdog when each run starts and ends."""
        def run():
            with self._lock:
                job = self.jobs[job_id]
                job.last_start, job.running = self.monotonic(), True
            try:
                return step()
            finally:
                with self._lock:
                    job.running, job.last_end = False, self.monotonic()
        return run

    def check(self) -> list[str]:
        """Reschedule every overdue job to run now; the names of those it rescheduled."""
        now = self.monotonic()
        with self._lock:
            overdue = [(j, now - j.since - j.interval) for j in self.jobs.values()
                       if not j.running and now - j.since > j.allowed]
            for job, _late in overdue:
                # Counted from now, so one repair is enough even if the job is slow to start.
                job.last_start = now
        if not overdue:
            if self.late_since is not None:
                log.info("every job starts on time again")
            self.late_since = None
            return []
        names = [job.name for job, _late in overdue]
        late = max(lateness for _job, lateness in overdue)
        log.warning("%s did not start on time (%.0fs late: the system clock may have been "
                    "stepped back); running now and rescheduling", ", ".join(names), late)
        for job, _late in overdue:
            try:
                self.scheduler.modify_job(job.job_id, next_run_time=self.wall())
            except Exception:  # the job was removed meanwhile: nothing to repair
                log.exception("could not reschedule %s", job.name)
        if self.late_since is None:
            self.late_since = now
            self._tell_slack(names, late)
        return names

    def _tell_slack(self, names: list[str], late: float) -> None:
        """Once per late episode: the outbox sends it like any alert."""
        now = self.wall()
        try:
            db = self.open_database()
            with store.write_transaction(db):
                store.enqueue(db, None, "bot_late", now, detail={
                    "jobs": names, "late_seconds": round(late), "at": store.iso(now)})
        except Exception:  # the log line above has said it already
            log.exception("could not queue the 'could not poll on time' notice")

    def run(self, every: float) -> None:
        """Check every `every` seconds (monotonic waits) until stopped."""
        while not self._stop.wait(every):
            try:
                self.check()
            except Exception:
                log.exception("the scheduler watchdog failed; it checks again in %.0fs", every)

    def start(self, every: float) -> None:
        threading.Thread(target=self.run, args=(every,), name="scheduler watchdog",
                         daemon=True).start()

    def stop(self) -> None:
        self._stop.set()
