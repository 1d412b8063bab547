"""Group events into incidents: one per account (case-insensitive) while the problem lasts.

Pure: takes the open incidents and `now`, returns what changed. The store writes the changes and
the outbox rows they imply in one transaction.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta

from bot.core.model import Event, Incident, Sighting
from bot.exchange.remediation import UnsafeValueError, short_server_name


@dataclass
class IncidentChange:
    """What happened to one incident in one step."""

    before: Incident | None        # None: the incident was opened by this step
    after: Incident
    events: list[Event] = field(default_factory=list)
    new_servers: tuple[str, ...] = ()     # configured names newly affected (not on open)
    new_connectors: tuple[str, ...] = ()  # connectors newly named (not on open)

    @property
    def opened(self) -> bool:
        return self.before is None

    @property
    def resolved(self) -> bool:
        return self.after.status == "resolved" and (self.before is None
                                                     or self.before.status != "resolved")


def decide(events: Iterable[Event], open_incidents: Mapping[str, Incident], now: datetime,
           quiet_period: timedelta, channel_for: Callable[[Event], str]) -> list[IncidentChange]:
    """Fold new events (any order) into the open incidents.

    An event that comes more than `quiet_period` after its incident's last event closes that
    incident and opens a new one: the quiet sweep may not have run yet (or events arrive in a
    burst after downtime), and the answer must not depend on when the sweep ran. Only if the
    bot, too, stored nothing for it for that long: an Exchange clock that jumps ahead must not
    split a live incident (and post it again) on every sweep.
    """
    growing: dict[str, _Growth] = {}   # per account: the incident events are added to now
    ordered: list[_Growth] = []
    for event in sorted(events, key=lambda e: (e.time, e.origin, e.record_id)):
        key = event.incident_key
        growth = growing.get(key)
        if growth is None and key in open_incidents:
            growth = growing[key] = _Growth(open_incidents[key])
            ordered.append(growth)
        if (growth is not None and event.time - growth.last_seen > quiet_period
                and not growth.stored_within(now, quiet_period)):
            growth.resolved_at = now
            growth = None
        if growth is None:
            growth = growing[key] = _Growth(_open(event, now, channel_for(event)),
                                            opened_by=event)
            ordered.append(growth)
        else:
            growth.add(event)
    return [growth.change(now) for growth in ordered]


class _Growth:
    """One incident growing through a batch: plain sets and lists while events come in, one
    Incident built at the end (building a frozen dataclass per event was the ingest's cost)."""

    def __init__(self, base: Incident, opened_by: Event | None = None):
        self.base = base
        self.opened = opened_by is not None
        self.events: list[Event] = [opened_by] if opened_by else []
        self.first_seen, self.last_seen = base.first_seen, base.last_seen
        self.count = base.event_count
        self.servers = list(base.servers)
        self.server_names = {name for name, _ in base.servers}
        self.connectors = list(base.connectors)
        self.event_ids = set(base.event_ids)
        self.stored_before = None if self.opened else base.last_stored_at
        self.sightings = list(base.sightings)
        # plain tuples to look up, a Sighting built only for a new one (this runs per event)
        self.seen = {(s.event_id, s.server, s.connector) for s in base.sightings}
        self.resolved_at: datetime | None = None
        if opened_by is not None:
            self._sighted(opened_by)

    def add(self, event: Event) -> None:
        self.events.append(event)
        self.first_seen = min(self.first_seen, event.time)
        self.last_seen = max(self.last_seen, event.time)
        self.count += 1
        if event.origin not in self.server_names:
            self.server_names.add(event.origin)
            self.servers.append((event.origin, _host(event)))
        if event.connector and event.connector not in self.connectors:
            self.connectors.append(event.connector)
        self.event_ids.add(event.event_id)
        self._sighted(event)

    def stored_within(self, now: datetime, period: timedelta) -> bool:
        """Did the bot store an event of this incident, before this batch, within `period`?"""
        return self.stored_before is not None and now - self.stored_before <= period

    def _sighted(self, event: Event) -> None:
        key = (event.event_id, event.origin, event.connector)
        if key not in self.seen:
            self.seen.add(key)
            self.sightings.append(Sighting(*key))

    def change(self, now: datetime) -> IncidentChange:
        after = replace(self.base, first_seen=self.first_seen, last_seen=self.last_seen,
                        event_count=self.count, servers=tuple(self.servers),
                        connectors=tuple(self.connectors),
                        event_ids=tuple(sorted(self.event_ids)),
                        sightings=tuple(self.sightings),
                        last_stored_at=now if self.events else self.base.last_stored_at)
        if self.resolved_at is not None:
            after = replace(after, status="resolved", resolved_at=self.resolved_at)
        if self.opened:
            return IncidentChange(before=None, after=after, events=self.events)
        before = self.base
        return IncidentChange(
            before=before, after=after, events=self.events,
            new_servers=tuple(n for n, _ in after.servers if n not in before.server_names),
            new_connectors=tuple(c for c in after.connectors if c not in before.connectors))


def resolve_quiet(open_incidents: Iterable[Incident], now: datetime, quiet_period: timedelta,
                  elapsed: Callable[[datetime, datetime], timedelta] = lambda a, b: b - a,
                  ) -> list[IncidentChange]:
    """Close every open incident with no event for the quiet period. `elapsed(since, now)` is
    the real time between the two (bot.ops.clockguard leaves a clock step forward out of it)."""
    return [IncidentChange(before=i, after=replace(i, status="resolved", resolved_at=now))
            for i in open_incidents
            if i.status == "open" and elapsed(i.quiet_since(), now) > quiet_period]


def _open(event: Event, now: datetime, channel: str) -> Incident:
    return Incident(
        id=None, key=event.incident_key, account=event.account, status="open", channel=channel,
        first_seen=event.time, last_seen=event.time, event_count=1,
        servers=((event.origin, _host(event)),),
        connectors=(event.connector,) if event.connector else (),
        event_ids=(event.event_id,), opened_at=now,
    )


def _host(event: Event) -> str:
    """The Exchange host the event names (EX01 of EX01.contoso.local), else the configured name.

    <Computer> is remote text like everything else in an event; a nonsense value must not
    stop the incident from being recorded.
    """
    try:
        return short_server_name(event.computer or event.origin)
    except UnsafeValueError:
        return event.origin
