"""Group events into incidents: one per account (case-insensitive) while the problem lasts.

Pure: takes the open incidents and `now`, returns what changed. The store writes the changes and
the outbox rows they imply in one transaction.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import Callable, Iterable, Mapping

from .model import Event, Incident
from .remediation import UnsafeValueError, short_server_name


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
           quiet_period: timedelta, channel_for: Callable[[str], str]) -> list[IncidentChange]:
    """Fold new events (any order) into the open incidents.

    An event that comes more than `quiet_period` after its incident's last event closes that
    incident and opens a new one: the quiet sweep may not have run yet (or events arrive in a
    burst after downtime), and the answer must not depend on when the sweep ran.
    """
    current: dict[str, Incident] = dict(open_incidents)
    changes: dict[str, IncidentChange] = {}
    ordered: list[IncidentChange] = []
    for event in sorted(events, key=lambda e: (e.time, e.server, e.record_id)):
        key = event.incident_key
        incident = current.get(key)
        if incident is not None and event.time - incident.last_seen > quiet_period:
            closing = changes.pop(key, None)
            if closing is None:  # not yet touched in this step
                closing = IncidentChange(before=incident, after=incident)
                ordered.append(closing)
            closing.after = replace(closing.after, status="resolved", resolved_at=now)
            incident = None
        if incident is None:
            incident = _open(event, now, channel_for(event.server))
            change = IncidentChange(before=None, after=incident, events=[event])
            changes[key] = change
            ordered.append(change)
        else:
            change = changes.get(key)
            if change is None:
                change = IncidentChange(before=incident, after=incident)
                changes[key] = change
                ordered.append(change)
            grown = _add(incident, event)
            if not change.opened:
                change.new_servers += tuple(n for n, _ in grown.servers if n not in
                                            incident.server_names)
                change.new_connectors += tuple(c for c in grown.connectors
                                               if c not in incident.connectors)
            change.after = grown
            change.events.append(event)
            incident = grown
        current[key] = incident
    return ordered


def resolve_quiet(open_incidents: Iterable[Incident], now: datetime,
                  quiet_period: timedelta) -> list[IncidentChange]:
    """Close every open incident with no event for the quiet period."""
    return [IncidentChange(before=i, after=replace(i, status="resolved", resolved_at=now))
            for i in open_incidents
            if i.status == "open" and now - i.last_seen > quiet_period]


def _open(event: Event, now: datetime, channel: str) -> Incident:
    return Incident(
        id=None, key=event.incident_key, account=event.account, status="open", channel=channel,
        first_seen=event.time, last_seen=event.time, event_count=1,
        servers=((event.server, _host(event)),),
        connectors=(event.connector,) if event.connector else (),
        event_ids=(event.event_id,), opened_at=now,
    )


def _add(incident: Incident, event: Event) -> Incident:
    servers = incident.servers
    if event.server not in incident.server_names:
        servers += ((event.server, _host(event)),)
    connectors = incident.connectors
    if event.connector and event.connector not in connectors:
        connectors += (event.connector,)
    event_ids = incident.event_ids
    if event.event_id not in event_ids:
        event_ids = tuple(sorted(event_ids + (event.event_id,)))
    return replace(incident, first_seen=min(incident.first_seen, event.time),
                   last_seen=max(incident.last_seen, event.time),
                   event_count=incident.event_count + 1, servers=servers,
                   connectors=connectors, event_ids=event_ids)


def _host(event: Event) -> str:
    """The Exchange host the event names (EX01 of EX01.contoso.local), else the configured name.

    <Computer> is remote text like everything else in an event; a nonsense value must not
    stop the incident from being recorded.
    """
    try:
        return short_server_name(event.computer or event.server)
    except UnsafeValueError:
        return event.server
