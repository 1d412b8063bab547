"""Prometheus metrics and health: /metrics, /healthz (alive) and /readyz (able to do its job).

What happens in this process (polls, their duration, events stored, Slack API calls and errors)
is counted as it happens (bot.core.counters). What the database knows (outbox depth and age,
incidents by state, each server's last good poll and how far its cursor is behind the log) is
read from the database at scrape time, so it is true whichever process (`run`, a cron
`poll-once`) did the work, and survives restarts. Names follow Prometheus' conventions:
`submitwatch_` prefix, base units (seconds), `_total` on counters.

The WSGI app here is served by its own small listener (`[metrics]`, any mode) and, in HTTP mode,
on the Slack server's port too.
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily

from bot.core import counters
from store import origins
from store.db import iso, required_time

METRICS_PATH, HEALTH_PATH, READY_PATH = "/metrics", "/healthz", "/readyz"

# Counted as they happen, in every process (bot.core.counters); registered into each served
# registry.
_PROCESS_METRICS = counters.PROCESS_METRICS


class StoreCollector:
    """Gauges read from the database at scrape time."""

    def __init__(self, open_database: Callable, clock: Callable[[], datetime]):
        self.open_database, self.clock = open_database, clock

    def collect(self) -> Iterable[GaugeMetricFamily]:
        db, now = self.open_database(), self.clock()
        depth, oldest = db.execute("SELECT count(*), min(created_at) FROM outbox WHERE state "
                                   "IN ('pending', 'sending') AND kind != 'dedupe'").fetchone()
        yield GaugeMetricFamily("submitwatch_outbox_messages",
                                "Slack messages waiting to be sent.", value=depth)
        yield GaugeMetricFamily("submitwatch_outbox_oldest_age_seconds",
                                "Age of the oldest waiting Slack message (0: none waits).",
                                value=_age(oldest, now))
        yield GaugeMetricFamily("submitwatch_outbox_given_up_messages",
                                "Slack messages given up after a day of errors a person must "
                                "fix.", value=db.execute("SELECT count(*) FROM outbox WHERE "
                                                         "state = 'failed'").fetchone()[0])
        yield GaugeMetricFamily("submitwatch_outbox_refused_messages",
                                "Slack messages given up at once because Slack refused them as "
                                "they were (too long, invalid blocks): kept for the retention.",
                                value=db.execute("SELECT count(*) FROM outbox WHERE "
                                                 "state = 'dead'").fetchone()[0])
        incidents = GaugeMetricFamily("submitwatch_incidents", "Open incidents, by state.",
                                      labels=["state"])
        for state, count in _incident_counts(db, now).items():
            incidents.add_metric([state], count)
        yield incidents
        last_good = GaugeMetricFamily("submitwatch_server_last_success_timestamp_seconds",
                                      "When each server last polled well (Unix time).",
                                      labels=["server"])
        behind = GaugeMetricFamily("submitwatch_server_records_behind",
                                   "Records in a server's log after the cursor at its last "
                                   "poll: how far SubmitWatch lags behind its newest event.",
                                   labels=["server"])
        failures = GaugeMetricFamily("submitwatch_server_consecutive_failures",
                                     "Failed polls in a row, per server.", labels=["server"])
        skew = GaugeMetricFamily("submitwatch_server_clock_skew_seconds",
                                 "How far a server's event times were from SubmitWatch's clock "
                                 "when last measured (positive: ahead; 0: within 5 minutes).",
                                 labels=["server"])
        for server, success, newest, cursor, failed, off in db.execute(
                "SELECT server, last_success_at, newest_record, cursor, consecutive_failures, "
                "clock_skew FROM server_state"):
            if success:
                last_good.add_metric([server],
                                     required_time(success, "last_success_at").timestamp())
            behind.add_metric([server], max(0, (newest or 0) - (cursor or 0)))
            failures.add_metric([server], failed)
            if off is not None:
                skew.add_metric([server], off)
        yield last_good
        yield behind
        yield failures
        yield skew
        yield from _origin_metrics(db, now)


def _origin_metrics(db, now: datetime) -> Iterable[GaugeMetricFamily]:
    """Per origin (the Exchange server that logged the events, whichever endpoint read them):
    its events of the last day, its newest event, and what its collector last said of it."""
    beats = {o: b for o, b in origins.heartbeats(db).items() if b.taken != "ignored"}
    counted = {row[0] for row in db.execute(
        "SELECT DISTINCT origin FROM event_hours WHERE hour >= ?",
        [iso(now - timedelta(hours=24))[:13]])}
    events = GaugeMetricFamily("submitwatch_origin_events_last_day",
                               "1018/1020 events stored in the last 24 hours, per origin.",
                               labels=["origin"])
    newest = GaugeMetricFamily("submitwatch_origin_last_event_timestamp_seconds",
                               "When each origin's newest kept event was logged (Unix time).",
                               labels=["origin"])
    for found in origins.origin_events(db, sorted(counted | set(beats)), now):
        events.add_metric([found.origin], found.last_day)
        if found.last_event is not None:
            newest.add_metric([found.origin], found.last_event.timestamp())
    age = GaugeMetricFamily("submitwatch_origin_heartbeat_age_seconds",
                            "Seconds since an origin's last heartbeat at its Windows Event "
                            "Collector, as last read (absent: no heartbeat yet).",
                            labels=["origin", "collector"])
    for beat in beats.values():
        if beat.last_heartbeat is not None:
            age.add_metric([beat.origin, beat.collector],
                           max(0.0, (now - beat.last_heartbeat).total_seconds()))
    yield events
    yield newest
    yield age


def _incident_counts(db, now: datetime) -> dict[str, int]:
    """open (all), acknowledged, snoozed (by an incident or an account snooze in force)."""
    total, acked = db.execute("SELECT count(*), count(acked_by) FROM incidents "
                              "WHERE status = 'open'").fetchone()
    snoozed = db.execute(
        "SELECT count(*) FROM incidents i WHERE status = 'open' AND EXISTS (SELECT 1 FROM "
        "snoozes s WHERE s.ended_at IS NULL AND s.until > ? AND ((s.kind = 'incident' AND "
        "s.target = CAST(i.id AS TEXT)) OR (s.kind = 'account' AND s.target = i.key)))",
        [iso(now)]).fetchone()[0]
    return {"open": total, "acknowledged": acked, "snoozed": snoozed}


def _age(text: str | None, now: datetime) -> float:
    return max(0.0, (now - required_time(text, "a stored time")).total_seconds()) if text else 0.0




def registry_for(open_database: Callable, clock: Callable[[], datetime]) -> CollectorRegistry:
    """A registry with this process's counters and the database's gauges."""
    registry = CollectorRegistry(auto_describe=True)
    for metric in _PROCESS_METRICS:
        registry.register(metric)
    registry.register(StoreCollector(open_database, clock))
    return registry


class Readiness:
    """Can SubmitWatch do its job now? The database takes writes, Slack answers, and every
    server was polled recently (polls that fail count: the watchdog alerts about those)."""

    SLACK_CACHE = 30.0   # seconds an auth.test answer is trusted, so scrapes do not hit Slack

    def __init__(self, config, open_database: Callable, clock: Callable[[], datetime],
                 slack_ok: Callable[[], str | None],
                 monotonic: Callable[[], float] = time.monotonic):
        self.config, self.open_database, self.clock = config, open_database, clock
        self.slack_ok, self.monotonic = slack_ok, monotonic
        self.started = clock()
        self._slack: tuple[float, str | None] | None = None
        self._lock = threading.Lock()

    def checks(self) -> dict[str, str | None]:
        """Each check's problem in words, or None when it passes."""
        return {"database": self._database(), "slack": self._slack_problem(),
                "polling": self._polling()}

    def _database(self) -> str | None:
        try:
            # mode=rw: a readiness probe must never create a missing database
            uri = Path(self.config.store.path).resolve().as_uri() + "?mode=rw"
            conn = sqlite3.connect(uri, uri=True, timeout=1, isolation_level=None)
            try:
                conn.execute("BEGIN IMMEDIATE")   # takes the write lock, writes nothing
                conn.execute("ROLLBACK")
            finally:
                conn.close()
        except sqlite3.Error as exc:
            return f"the database {self.config.store.path} takes no writes: {exc}"
        return None

    def _slack_problem(self) -> str | None:
        with self._lock:
            now = self.monotonic()
            if self._slack is None or now - self._slack[0] > self.SLACK_CACHE:
                self._slack = (now, self.slack_ok())
            return self._slack[1]

    def _polling(self) -> str | None:
        late = 3 * self.config.polling.interval + self.config.polling.jitter
        now = self.clock()
        if (now - self.started).total_seconds() <= late:
            return None   # just started: the first round may not have finished yet
        polled = {r[0]: r[1] for r in self.open_database().execute(
            "SELECT server, last_poll_at FROM server_state")}
        endpoints = [s for s in self.config.servers if s.polled] + [
            c.endpoint for c in self.config.collectors]
        stale = [s.name for s in endpoints if not polled.get(s.name)
                 or (now - required_time(polled[s.name], "last_poll_at")).total_seconds() > late]
        if stale:
            return f"not polled in the last {late:g}s: {', '.join(stale)}"
        return None


def ops_app(registry: CollectorRegistry, readiness: Readiness | None):
    """WSGI: GET /metrics, /healthz, /readyz; None for any other path (the caller decides)."""
    def application(environ, start_response):
        path = environ.get("PATH_INFO")
        if environ.get("REQUEST_METHOD") != "GET" or path not in (METRICS_PATH, HEALTH_PATH,
                                                                  READY_PATH):
            return None
        if path == METRICS_PATH:
            return _reply(start_response, "200 OK", generate_latest(registry),
                          CONTENT_TYPE_LATEST)
        if path == HEALTH_PATH:
            return _reply(start_response, "200 OK", b"ok", "text/plain; charset=utf-8")
        checks = readiness.checks() if readiness else {}
        failing = {name: why for name, why in checks.items() if why}
        body = json.dumps({"ready": not failing, "checks": {n: why or "ok" for n, why in
                                                            checks.items()}}).encode()
        return _reply(start_response, "503 Service Unavailable" if failing else "200 OK", body,
                      "application/json")
    return application


def _reply(start_response, status: str, body: bytes, content_type: str) -> list[bytes]:
    start_response(status, [("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return [body]
