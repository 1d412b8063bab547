"""Why an incident's account was refused, per server and connector, as one story.

Each (event ID, server, connector) an incident saw gets its advice from bot.exchange.advice,
which chooses the cause by connector kind, account kind and what the directory showed (not by
the event ID alone); places with the same cause are told together, in the order first seen.

Exchange 2013's transport code (AuthCommandHelpers.OnAuthenticationComplete; the public
decompiled builds KB5000871/KB5001779), after an account authenticated over SMTP:

1. if the account is a *prohibited* identity -- the domain's built-in Administrator (its SID
   ends in -500, renamed or not), Guest or anonymous -- it logs **1020** and refuses. No
   permission is looked at, so granting ms-Exch-SMTP-Submit cannot fix a 1020;
2. only then it reads the connector's security descriptor for the account's token (its groups
   and Deny entries included); without Submit it logs **1018**.

Both events carry {account, connector name}. For Exchange 2007/2010 Microsoft documents 1020 as
a missing Submit right and their code is not public (bot.exchange.advice LEGACY_1020).

Pure: plain data in, plain data out; bot.slack.alerts shows the result.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from bot.core.config import ServerConfig
from bot.core.findings import Finding
from bot.core.model import Incident, Sighting
from bot.exchange.advice import CAUSES, Advice, advise
from bot.exchange.remediation import (
    UnsafeValueError,
    connector_identity,
    is_legacy_version,
    short_server_name,
)

#: Event 1018 / 1020 by kind, for a storm digest's short lines (the event ID alone).
NO_SUBMIT = "no_submit"
BUILTIN = "builtin_identity"
LEGACY_1020 = "legacy_1020"


@dataclass(frozen=True)
class Target:
    """One place an incident's account was refused: a configured server and the Receive
    connector (SRV\\Name, None when nothing names one), with its advice."""

    server: str
    connector: str | None
    source: str                   # "event", "typed", "configured" or "none"
    advice: Advice


@dataclass(frozen=True)
class Diagnosis:
    """One cause of an incident's events and every place it was seen."""

    cause: str                        # a cause of bot.exchange.advice.CAUSES
    servers: tuple[str, ...]          # configured server names, first-seen order
    targets: tuple[Target, ...]

    @property
    def headline(self) -> str:
        return CAUSES[self.cause][0]

    @property
    def advice(self) -> Advice:
        """The first place's advice: the explanation the alert shows for the cause."""
        return self.targets[0].advice

    @property
    def grants(self) -> bool:
        return any(t.advice.grants for t in self.targets)


def cause_of(event_id: int, version: str | None) -> str:
    """The event's kind alone (a digest line, which has no room for the advice)."""
    if event_id == 1018:
        return NO_SUBMIT
    return LEGACY_1020 if is_legacy_version(version) else BUILTIN


def diagnose(account: str, sightings: Iterable[Sighting], hosts: Mapping[str, str],
             servers: Mapping[str, ServerConfig], *, typed: bool = False,
             finding: Finding | None = None, last_seen: datetime | None = None,
             directory: bool | None = None) -> list[Diagnosis]:
    """One Diagnosis per cause, in the order the causes were first seen.

    `hosts` maps a configured server name to the Exchange host its events came from (the short
    name commands use); `servers` holds the configuration (version, role, submission
    connector). `typed`: the connectors are what a person typed (`fix`), not what events named.
    `finding`: the directory's last check of the account; `last_seen`: the newest event, to
    tell whether events came after the directory showed the right. `directory`: a [directory]
    is configured (default: a finding was given).
    """
    places: list[Target] = []
    seen: set[tuple[int, str, str]] = set()
    sightings = list(sightings)
    named = {(s.server, s.event_id) for s in sightings if s.connector}
    for sighting in sightings:
        if sighting.connector is None and (sighting.server, sighting.event_id) in named:
            continue  # another event of that kind on that server named the connector
        key = (sighting.event_id, sighting.server, (sighting.connector or "").casefold())
        if key in seen:
            continue
        seen.add(key)
        places.append(_target(account, sighting, hosts, servers.get(sighting.server), typed,
                              finding, last_seen, directory))
    by_cause: dict[str, list[Target]] = {}
    for place in places:
        by_cause.setdefault(place.advice.cause, []).append(place)
    return [Diagnosis(cause, tuple(dict.fromkeys(t.server for t in found)), tuple(found))
            for cause, found in by_cause.items()]


def diagnose_incident(incident: Incident, servers: Mapping[str, ServerConfig],
                      finding: Finding | None = None, *,
                      directory: bool | None = None) -> list[Diagnosis]:
    return diagnose(incident.account, sightings_of(incident), dict(incident.servers), servers,
                    finding=finding, last_seen=incident.last_seen, directory=directory)


def sightings_of(incident: Incident) -> tuple[Sighting, ...]:
    """The incident's sightings; for a row stored before they were kept, the best reading of its
    servers, connectors and event IDs (a connector is matched to its server by host prefix)."""
    if incident.sightings:
        return incident.sightings
    hosts = {host.casefold(): name for name, host in incident.servers}
    first = incident.servers[0][0] if incident.servers else ""
    named: dict[str, list[str]] = {}
    for connector in incident.connectors:   # one whose prefix is no server's: the first one's
        server = hosts.get(connector.split("\\", 1)[0].casefold(), first)
        named.setdefault(server, []).append(connector)
    derived = []
    for name, _host in incident.servers:
        connectors: Sequence[str | None] = named.get(name) or [None]   # None: it named none
        for event_id in incident.event_ids:
            derived += [Sighting(event_id, name, c) for c in connectors]
    return tuple(derived)


def _target(account: str, sighting: Sighting, hosts: Mapping[str, str],
            cfg: ServerConfig | None, typed: bool, finding: Finding | None,
            last_seen: datetime | None, directory: bool | None) -> Target:
    host = _host(hosts.get(sighting.server, sighting.server))
    connector, source = sighting.connector, ("typed" if typed else "event")
    if connector is None and cfg is not None and cfg.submission_connector:
        connector, source = cfg.submission_connector, "configured"
    elif connector is None:
        source = "none"
    found = finding if finding is not None and _same_account(finding, account) else None
    advice = advise(sighting.event_id, account, host, connector,
                    version=cfg.version if cfg else None,
                    role=cfg.role if cfg else None,
                    finding=found, resolved=found.name if found and found.found else None,
                    directory=directory,
                    still_failing=_still_failing(found, host, connector, last_seen))
    return Target(sighting.server, advice.connector, source, advice)


def _host(host: str) -> str:
    try:
        return short_server_name(host)
    except UnsafeValueError:
        return host


def _same_account(finding: Finding, account: str) -> bool:
    return finding.account.casefold() == account.casefold()


def _still_failing(finding: Finding | None, host: str, connector: str | None,
                   last_seen: datetime | None) -> bool | None:
    """Whether events came after the directory showed the right on this connector (None: the
    directory did not show it, or nothing tells)."""
    if finding is None or connector is None or last_seen is None:
        return None
    try:
        identity = connector_identity(host, connector)
    except UnsafeValueError:
        return None
    for fact in finding.connectors:
        if fact.place.casefold() == identity.casefold() and fact.right == "granted":
            return last_seen > finding.checked_at
    return None
