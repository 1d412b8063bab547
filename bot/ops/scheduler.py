"""What runs in the background: one APScheduler poll job per server, the housekeeping jobs,
and the delivery loop that sends the outbox to Slack.

Each job is one call of a step from bot.engine.poller. Jobs never overlap themselves
(max_instances=1), missed runs collapse into one (coalesce=True), and polls are jittered so
hundreds of servers do not all connect in the same second.

Delivery is a thread of its own rather than a job: it runs every delivery_interval and at once
when a poll stored events. An APScheduler job woken (modify_job) while it is running skips that
run ("maximum number of running instances reached") and waits a whole interval, which is what
kept alerts found during a delivery waiting (docs/benchmarks.md, row 3).
"""
from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.schedulers.background import BackgroundScheduler

from bot.core.config import CollectorConfig, Config
from bot.engine import devices, fixloop, liveness
from bot.engine.chatops import end_expired_snoozes
from bot.engine.delivery import deliver_once
from bot.engine.devices import ReverseDNS
from bot.engine.poller import end_storms, poll_server_once, remind_owners, resolve_quiet_incidents
from bot.engine.summary import queue_summary
from bot.ops.clockguard import ClockGuard
from bot.ops.watchdog import Watchdog
from bot.slack import alerts
from bot.slack.sender import SlackSender
from bot.sources.base import EventSource
from bot.sources.collector import CollectorSource, subscription_status
from bot.sources.winrm import WinRMSource
from store import db as store_db
from store.db import open_db

log = logging.getLogger("submitwatch")
MAX_POLL_WORKERS = 32
HOUSEKEEPING_EVERY_SECONDS = 30
#: How often the directory checks that are due run (bot.engine.fixloop; each run reads at most 20).
DIRECTORY_EVERY_SECONDS = 60
PRUNE_EVERY_HOURS = 6
#: Seconds a stop waits for polls and Slack calls under way (`docker stop` waits 10 s).
SHUTDOWN_GRACE = 5.0


class ThreadDatabases:
    """One SQLite connection per worker thread (a connection must not be shared across
    threads mid-transaction)."""

    def __init__(self, path: str):
        self.path = path
        self._local = threading.local()

    def get(self):
        db = getattr(self._local, "db", None)
        if db is None:
            db = self._local.db = open_db(self.path, migrate=False)
        return db


class DeliveryLoop:
    """Runs `step` every `interval` seconds, and right away when woken. A wake that comes
    while `step` runs makes it run once more as soon as it ends: never lost, never doubled."""

    def __init__(self, step, interval: float):
        self.step = step
        self.interval = interval
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def wake(self) -> None:
        self._wake.set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="deliver to Slack", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Let a delivery under way finish (its Slack call is answered or times out), then end;
        after `timeout` seconds stop waiting for it (its row is sent again after a restart)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.clear()  # before the step: a wake during it is kept for the next round
            self.step()
            self._wake.wait(self.interval)


class Background:
    """The poll and housekeeping jobs, their watchdog and the delivery loop, started and
    stopped together."""

    def __init__(self, jobs: BackgroundScheduler, delivery: DeliveryLoop, watchdog: Watchdog,
                 watch_every: float):
        self.jobs = jobs
        self.delivery = delivery
        self.watchdog = watchdog
        self.watch_every = watch_every

    def start(self) -> None:
        self.jobs.start()
        self.delivery.start()
        self.watchdog.start(self.watch_every)

    def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        """Stop everything within about `grace` seconds, whatever is hanging: a poll or Slack
        call still under way then is abandoned (a poll stores nothing half-way; an unsent row
        is sent after the restart, looked up first in case Slack had it)."""
        deadline = time.monotonic() + grace
        self.watchdog.stop()
        self.jobs.shutdown(wait=False)
        self.delivery.stop(timeout=max(0.1, deadline - time.monotonic()))


def build_scheduler(config: Config, sender: SlackSender, *,
                    monotonic: Callable[[], float] = time.monotonic) -> Background:
    """`monotonic` is the watchdog's clock (tests pass their own)."""
    open_db(config.store.path).conn.close()  # create or upgrade the schema once, up front
    dbs = ThreadDatabases(config.store.path)
    delivery = DeliveryLoop(_guarded(lambda: deliver_once(dbs.get(), sender, config), "deliver"),
                            config.polling.delivery_interval)
    workers = min(MAX_POLL_WORKERS, max(1, len(config.servers)))
    scheduler = BackgroundScheduler(
        # Housekeeping has its own thread: slow or hung servers must never hold it up.
        executors={"default": ThreadPoolExecutor(max_workers=workers),
                   "housekeeping": ThreadPoolExecutor(max_workers=1),
                   # LDAP reads may take seconds: they never hold up housekeeping or polls.
                   "directory": ThreadPoolExecutor(max_workers=1),
                   # Protocol-log reads: beside polling, never in its way.
                   "devices": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"max_instances": 1, "coalesce": True,
                      "misfire_grace_time": int(config.polling.interval)},
        timezone=UTC,
    )
    watchdog = Watchdog(scheduler, dbs.get, monotonic=monotonic)
    disk = DiskAlarm(sender, config.slack.channel)
    # One guard for every job that decides on quietness or snoozes, reading the clocks from
    # now on: whichever job reads the time first after a step, the step is judged before any
    # decision is made with that time (bot.ops.clockguard).
    guard = ClockGuard(monotonic)
    guard.start()
    start = datetime.now(UTC)
    for server in (s for s in config.servers if s.polled):   # the others: through collectors
        source = WinRMSource(server, config.polling)
        job_id = f"poll:{server.name}"
        # The first poll is jittered too, so a restart does not hit every server at once.
        first = start + timedelta(seconds=random.uniform(0, config.polling.jitter))
        scheduler.add_job(watchdog.wrap(job_id, _guarded(
            lambda s=source: poll_and_wake(delivery.wake, dbs.get(), s, config, disk, guard),
            f"poll {server.name}")),
            "interval", seconds=config.polling.interval, jitter=config.polling.jitter or None,
            next_run_time=first, id=job_id, name=f"poll {server.name}")
        watchdog.watch(job_id, f"poll {server.name}", config.polling.interval,
                       config.polling.jitter)
    for collector in config.collectors:
        # The collector's new events, then its sources' heartbeats (bot.engine.liveness), as
        # often as a server's poll, through one kept connection.
        job_id = f"collector:{collector.name}"
        collector_source = CollectorSource.of(collector, config.servers, config.polling)
        scheduler.add_job(watchdog.wrap(job_id, _guarded(
            lambda c=collector, s=collector_source: _sweep_collector(
                delivery.wake, dbs.get(), c, s, config, disk, guard),
            f"collector {collector.name}")),
            "interval", seconds=config.polling.interval, jitter=config.polling.jitter or None,
            next_run_time=start + timedelta(seconds=random.uniform(0, config.polling.jitter)),
            id=job_id, name=f"poll collector {collector.name}")
        watchdog.watch(job_id, f"poll collector {collector.name}", config.polling.interval,
                       config.polling.jitter)
    # As often as the polls when they are more frequent: a quiet incident or an expired snooze
    # never waits longer than a poll would (and tests with 1 s polls need not wait 30 s).
    housekeeping_every = min(HOUSEKEEPING_EVERY_SECONDS, config.polling.interval)
    scheduler.add_job(watchdog.wrap("housekeeping", _guarded(
        lambda: housekeeping(dbs.get(), config, guard), "housekeeping")),
        "interval", seconds=housekeeping_every, id="housekeeping",
        name="resolve quiet incidents, end snoozes and storms, remind owners, "
        "queue the scheduled summary", executor="housekeeping")
    watchdog.watch("housekeeping", "housekeeping (quiet incidents, snoozes)",
                   housekeeping_every, 0)
    scheduler.add_job(_guarded(lambda: prune_old(dbs.get(), config), "retention"),
                      "interval", hours=PRUNE_EVERY_HOURS, next_run_time=start + timedelta(
                          minutes=1), id="retention", name="delete what is past store.retention",
                      executor="housekeeping")
    if config.directory is not None:
        scheduler.add_job(_guarded(lambda: _check_directory(dbs.get(), config, delivery.wake),
                                   "directory"),
                          "interval", seconds=DIRECTORY_EVERY_SECONDS, id="directory",
                          name="read the directory for alerts and fixes", executor="directory")
    if config.devices.enabled:
        resolve = ReverseDNS(monotonic) if config.devices.reverse_dns else None
        # One source per server of its own: a look-up never waits for a poll's shell.
        lookup_sources = {s.name: WinRMSource(s, config.polling) for s in config.servers
                          if s.polled}
        scheduler.add_job(_guarded(lambda: _look_up_devices(
            dbs.get(), config, lookup_sources, resolve, delivery.wake), "devices"),
            "interval", seconds=config.polling.interval, id="devices",
            next_run_time=start + timedelta(seconds=config.polling.interval),
            name="name the devices from the protocol logs", executor="devices")
    # Checked often enough to repair a stalled poll within about one interval.
    watch_every = max(1.0, min(config.polling.interval, HOUSEKEEPING_EVERY_SECONDS))
    return Background(scheduler, delivery, watchdog, watch_every)


def _sweep_collector(wake_delivery: Callable[[], None], db, collector: CollectorConfig,
                     source: CollectorSource, config: Config, disk: DiskAlarm | None = None,
                     guard: ClockGuard | None = None) -> None:
    """One round of a collector; new events and any alert it raises or clears go out at once."""
    polled, live = liveness.sweep_collector(
        db, source, collector, config, lambda: subscription_status(source, collector.subscription),
        guard.now if guard is not None else lambda: datetime.now(UTC), guard)
    if disk is not None:
        disk.polled(polled, datetime.now(UTC))
    if polled.stored or live.error or live.silent or live.alive:
        wake_delivery()


def _check_directory(db, config: Config, wake_delivery: Callable[[], None]) -> None:
    """The directory checks that are due (bot.engine.fixloop); their notes go out at once."""
    if fixloop.run_checks(db, config, lambda: datetime.now(UTC)):
        wake_delivery()


def _look_up_devices(db, config: Config, sources: dict[str, WinRMSource],
                     resolve: ReverseDNS | None, wake_delivery: Callable[[], None]) -> None:
    """The device look-ups that are due (bot.engine.devices); the alerts update at once."""
    if devices.run_lookups(db, config, lambda: datetime.now(UTC),
                           lambda server: sources[server.name].open(), resolve):
        wake_delivery()


def prune_old(db, config: Config) -> None:
    deleted = store_db.prune(db, datetime.now(UTC) - timedelta(
        seconds=config.store.retention))
    if any(deleted.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items() if n))


class DiskAlarm:
    """A full disk, said once: in the log and, since the outbox cannot be written, straight to
    Slack; and once more when the database takes writes again."""

    def __init__(self, sender: SlackSender, channel: str):
        self.sender, self.channel = sender, channel
        self.since: datetime | None = None
        self._lock = threading.Lock()

    def polled(self, result, now: datetime) -> None:
        with self._lock:
            if result.disk_full:
                first, self.since = self.since is None, self.since or now
            elif result.error is None and self.since is not None:
                first, since, self.since = False, self.since, None
                log.info("the database takes writes again (full since %s); storing resumes",
                         store_db.iso(since))
                self._tell(f":white_check_mark: SubmitWatch stores events again: the disk "
                           f"holding its database had been full since {since:%H:%M} UTC on "
                           f"{since.day} {since:%b}. Nothing was lost.")
                return
            else:
                return
        if first:
            log.error("%s", result.error)
            self._tell(":rotating_light: *SubmitWatch has stopped storing events*: "
                       f"{alerts.escape(result.error)}. Polling goes on and resumes storing by "
                       "itself once there is space.")
        else:
            log.debug("%s", result.error)

    def _tell(self, text: str) -> None:
        try:
            self.sender.post(self.channel, text, [{"type": "section", "text": {
                "type": "mrkdwn", "text": text}}])
        except Exception as exc:  # Slack down too: the log line says it
            log.warning("could not tell Slack about the database: %s", exc)


def poll_and_wake(wake_delivery, db, source: EventSource, config: Config,
                  disk: DiskAlarm | None = None, guard: ClockGuard | None = None) -> None:
    """Poll; if that stored events, run delivery now rather than at its next tick, so an
    alert reaches Slack right after the poll that found it. With `guard`, every time the poll
    decides with has been judged by it first (a snooze set before a step forward holds)."""
    if guard is None:
        result = poll_server_once(db, source, config)
    else:
        result = poll_server_once(db, source, config, guard.now, guard)
    if disk is not None:
        disk.polled(result, datetime.now(UTC))
    if result.stored:
        wake_delivery()


def housekeeping(db, config: Config, guard: ClockGuard | None = None,
                 clock: Callable[[], datetime] = lambda: datetime.now(UTC)) -> None:
    """The guard judges the time first: every decision below is made with a time it has seen
    (a step is remembered before quiet periods and snoozes are measured across it)."""
    now = clock()
    if guard is not None:
        guard.observe(now)
    fixloop.confirm_fixes(db, config, lambda: now)   # before quiet ones resolve
    resolve_quiet_incidents(db, config, lambda: now, guard)
    end_expired_snoozes(db, now, guard)
    remind_owners(db, config, lambda: now, guard)
    end_storms(db, config, lambda: now, guard)
    queue_summary(db, config, now)


def _guarded(step, name: str):
    """A bug in one run must be logged and leave the job scheduled for the next run."""
    def run():
        try:
            return step()
        except store_db.DiskFullError as exc:  # said once by the polls' DiskAlarm, not per run
            log.debug("%s: %s", name, exc)
        except Exception:
            log.exception("%s failed unexpectedly; it will run again on schedule", name)
    return run
