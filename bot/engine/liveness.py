"""Liveness per origin through a Windows Event Collector, without polling each server.

The collector knows each event source's last heartbeat (`wecutil gr <subscription>`). An origin
not heard from for `collectors.heartbeat_timeout` gets the same "not being watched" alert as an
unreachable server, once, and a recovery notice when it is heard from again. A collector that
cannot be read is one alert under the collector's own name (as a failed poll of a server is),
never one per origin: while it is unreadable nothing is said about its origins. A heartbeat
read that fails while events still flow is an alert of its own (heartbeats_name).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.core.config import CollectorConfig, Config
from bot.core.model import Heartbeat
from bot.core.realtime import StepAware
from bot.engine.poller import PollResult, _record_health, poll_server_once, utc_now
from bot.sources.base import EventSource, SourceError
from bot.sources.collector import SubscriptionStatus
from bot.sources.origins import Origins
from store import db as store
from store import origins

Clock = Callable[[], datetime]


@dataclass
class Liveness:
    collector: str
    error: str | None = None
    silent: list[str] = field(default_factory=list)    # origins past the timeout
    alive: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)   # unconfigured, set to "ignore"


def sweep_collector(db: Database, source: EventSource, collector: CollectorConfig,
                    config: Config, read: Callable[[], SubscriptionStatus],
                    clock: Clock = utc_now,
                    guard: StepAware | None = None) -> tuple[PollResult, Liveness]:
    """One round of a collector: its new events (bot.engine.poller, the source a
    bot.sources.collector.CollectorSource), then its sources' heartbeats. A collector that
    cannot be read is one alert, under its own name, and its heartbeats are not asked for: its
    origins get no alert of their own while it lasts. `guard`: as for poll_server_once, whose
    `now` the clock should then be."""
    polled = poll_server_once(db, source, config, clock, guard)
    if polled.error is not None:
        return polled, Liveness(collector.name, error=polled.error)
    return polled, watch_collector(db, collector, config, read, clock)


def heartbeats_name(collector: CollectorConfig) -> str:
    """What the health of a collector's heartbeat read is recorded and alerted under. Apart from
    the collector's own (its events): events may flow while `wecutil gr` fails (a subscription
    renamed, a right missing), and each read would otherwise clear the other's failures."""
    return f"{collector.name} heartbeats"


def watch_collector(db: Database, collector: CollectorConfig, config: Config,
                    read: Callable[[], SubscriptionStatus], clock: Clock = utc_now) -> Liveness:
    """One look at a collector's subscription: raise or clear each origin's alert. `read` is
    bot.sources.collector.subscription_status bound to the collector's source."""
    now = clock()
    result = Liveness(collector.name)
    try:
        status = read()
    except SourceError as exc:
        result.error = str(exc)
    _record_health(db, heartbeats_name(collector), PollResult(collector.name, error=result.error),
                   config.polling.alert_after_failures, now)
    if result.error is not None:
        return result
    limit = timedelta(seconds=collector.heartbeat_timeout)
    seen = []
    configured = {s.name for s in config.servers}
    origin_of = Origins(config.servers, collector.unconfigured_origins)
    for source in status.sources:
        origin = origin_of(source.computer)
        heard = source.last_heartbeat
        taken = ("ignored" if origin is None else "configured" if origin in configured
                 else "own_name")
        seen.append(Heartbeat(origin or source.computer, collector.name, source.computer,
                              source.status, heard, now, taken))
        if origin is None:
            result.ignored.append(source.computer)
            continue
        if heard is not None and now - heard <= limit:
            result.alive.append(origin)
            _origin_up(db, origin, now)
        else:
            result.silent.append(origin)
            _origin_down(db, origin, collector, heard, now)
    with store.write_transaction(db):
        origins.save_heartbeats(db, collector.name, seen)
    return result


def _origin_down(db: Database, origin: str, collector: CollectorConfig,
                 heard: datetime | None, now: datetime) -> None:
    state = store.server_state(db, origin)
    if state.down_since is not None:
        return
    quiet = (f"for {_minutes(now - heard)}" if heard is not None
             else "since the collector has known it (no heartbeat yet)")
    timeout = _minutes(timedelta(seconds=collector.heartbeat_timeout))
    error = (f"{origin} has not reached the collector {collector.name} {quiet} (subscription "
             f"{collector.subscription!r}; heartbeat timeout {timeout}). "
             "Its events are not forwarded while this lasts: is the server up, and its "
             "Windows Remote Management service running?")
    with store.write_transaction(db):
        store.save_poll_failure(db, origin, error, now)
        if store.mark_server_down(db, origin, now):
            store.enqueue(db, None, "server_down", now, server=origin, detail={
                "error": error, "failures": 1,
                "since": store.iso(heard or state.first_poll_at or now), "never": heard is None})


def _origin_up(db: Database, origin: str, now: datetime) -> None:
    if store.server_state(db, origin).down_since is None:
        return
    with store.write_transaction(db):
        down_since = store.mark_server_up(db, origin)
        if down_since is not None:
            store.enqueue(db, None, "server_up", now, server=origin, detail={
                "since": store.iso(down_since), "at": store.iso(now)})


def _minutes(span: timedelta) -> str:
    minutes = int(span.total_seconds() // 60)
    return f"{minutes} minutes" if minutes < 120 else f"{minutes // 60} hours"
