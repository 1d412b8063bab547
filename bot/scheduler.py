"""APScheduler wiring: one poll job per server, plus delivery and the quiet-incident sweep.

Each job is one call of a step from bot.poller. Jobs never overlap themselves
(max_instances=1), missed runs collapse into one (coalesce=True), and polls are jittered so
hundreds of servers do not all connect in the same second.
"""
from __future__ import annotations

import logging
import random
import threading
from datetime import datetime, timedelta, timezone

from apscheduler.executors.pool import ThreadPoolExecutor
from apscheduler.jobstores.base import JobLookupError
from apscheduler.schedulers.background import BackgroundScheduler

from store import db as store_db
from store.db import open_db

from .chatops import end_expired_snoozes
from .config import Config
from .delivery import deliver_once
from .poller import poll_server_once, resolve_quiet_incidents
from .slack_out import SlackSender
from .source import WinRMSource

log = logging.getLogger("submitwatch")
MAX_POLL_WORKERS = 32
HOUSEKEEPING_EVERY_SECONDS = 30
PRUNE_EVERY_HOURS = 6


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


def build_scheduler(config: Config, sender: SlackSender) -> BackgroundScheduler:
    open_db(config.store.path).conn.close()  # create or upgrade the schema once, up front
    dbs = ThreadDatabases(config.store.path)
    workers = min(MAX_POLL_WORKERS, max(1, len(config.servers)))
    scheduler = BackgroundScheduler(
        # Delivery has its own thread: slow or hung servers must never hold up Slack messages.
        executors={"default": ThreadPoolExecutor(max_workers=workers),
                   "slack": ThreadPoolExecutor(max_workers=1)},
        job_defaults={"max_instances": 1, "coalesce": True,
                      "misfire_grace_time": int(config.polling.interval)},
        timezone=timezone.utc,
    )
    start = datetime.now(timezone.utc)
    for server in config.servers:
        source = WinRMSource(server, config.polling)
        # The first poll is jittered too, so a restart does not hit every server at once.
        first = start + timedelta(seconds=random.uniform(0, config.polling.jitter))
        scheduler.add_job(_guarded(lambda s=source: poll_and_wake(scheduler, dbs.get(), s,
                                                                  config),
                                   f"poll {server.name}"),
                          "interval", seconds=config.polling.interval,
                          jitter=config.polling.jitter or None, next_run_time=first,
                          id=f"poll:{server.name}", name=f"poll {server.name}")
    scheduler.add_job(_guarded(lambda: deliver_once(dbs.get(), sender, config), "deliver"),
                      "interval", seconds=config.polling.delivery_interval, next_run_time=start,
                      id="deliver", name="deliver to Slack", executor="slack")
    scheduler.add_job(_guarded(lambda: housekeeping(dbs.get(), config), "housekeeping"),
                      "interval", seconds=HOUSEKEEPING_EVERY_SECONDS, id="housekeeping",
                      name="resolve quiet incidents, end snoozes", executor="slack")
    scheduler.add_job(_guarded(lambda: prune_old(dbs.get(), config), "retention"),
                      "interval", hours=PRUNE_EVERY_HOURS, next_run_time=start + timedelta(
                          minutes=1), id="retention", name="delete what is past store.retention",
                      executor="slack")
    return scheduler


def prune_old(db, config: Config) -> None:
    deleted = store_db.prune(db, datetime.now(timezone.utc) - timedelta(
        seconds=config.store.retention))
    if any(deleted.values()):
        log.info("retention: deleted %s", ", ".join(f"{n} {t}" for t, n in deleted.items() if n))


def poll_and_wake(scheduler, db, source: WinRMSource, config: Config) -> None:
    """Poll; if that stored events, run delivery now rather than at its next tick, so an
    alert reaches Slack right after the poll that found it."""
    if poll_server_once(db, source, config).stored:
        try:
            scheduler.modify_job("deliver", next_run_time=datetime.now(timezone.utc))
        except JobLookupError:  # shutting down
            pass


def housekeeping(db, config: Config) -> None:
    resolve_quiet_incidents(db, config)
    end_expired_snoozes(db, datetime.now(timezone.utc))


def _guarded(step, name: str):
    """A bug in one run must be logged and leave the job scheduled for the next run."""
    def run():
        try:
            return step()
        except Exception:
            log.exception("%s failed unexpectedly; it will run again on schedule", name)
    return run
