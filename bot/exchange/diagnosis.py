"""Why an account was refused, from what Exchange's own code does, and what to do about it.

Exchange 2013's transport code (AuthCommandHelpers.OnAuthenticationComplete; the public
decompiled builds KB5000871/KB5001779), after an account authenticated over SMTP:

1. if the account is a *prohibited* identity -- the domain's built-in Administrator (its SID
   ends in -500, renamed or not), Guest or anonymous -- it logs **1020** and refuses. No
   permission is looked at, so granting ms-Exch-SMTP-Submit cannot fix a 1020; 2016, 2019 and
   Subscription Edition come from the same code;
2. only then it reads the connector's security descriptor for the account's token (its groups
   and Deny entries included); without Submit it logs **1018**.

Both events carry {account, connector name}. For Exchange 2007/2010 Microsoft documents 1020 as
a missing Submit right and their code is not public, so a 1020 from a server configured as one
of those gets both the documented fix and the built-in-identity check.

Pure: plain data in, plain data out. The commands come from bot.exchange.remediation;
bot.slack.alerts shows the result.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace

from bot.core.config import ServerConfig
from bot.core.model import Incident, Sighting
from bot.exchange.remediation import (
    Fix,
    UnsafeValueError,
    check_value,
    choose_connector,
    fix_for,
    inspect_connector_command,
    is_default_connector,
    is_legacy_version,
    sid_command,
)

#: Event 1018: the account's token has no ms-Exch-SMTP-Submit on the connector.
NO_SUBMIT = "no_submit"
#: Event 1020 on Exchange 2013 or later (or a server whose version is not configured).
BUILTIN = "builtin_identity"
#: Event 1020 on a server configured as Exchange 2007 or 2010: documented fix and the check.
LEGACY_1020 = "legacy_1020"

CAUSE_EVENT = {NO_SUBMIT: 1018, BUILTIN: 1020, LEGACY_1020: 1020}
#: Causes whose advice includes granting Submit.
GRANTING = (NO_SUBMIT, LEGACY_1020)


@dataclass(frozen=True)
class Target:
    """One Receive connector a cause involves on one server, with its commands or the reason
    there are none (plain text, safe to show once escaped)."""

    server: str                   # the configured server name
    connector: str | None         # SRV\Name; None only when no name could be built
    source: str                   # "event", "configured" or "guess"
    fix: Fix | None = None        # grant, verify, undo ... (granting causes only)
    refusal: str | None = None
    custom: bool = False          # 1018 on a connector that is not one of Exchange's defaults
    inspect: str | None = None    # read-only: what that custom connector accepts


@dataclass(frozen=True)
class Diagnosis:
    """One cause of an incident's events, where it was seen, and what to run."""

    cause: str                        # NO_SUBMIT, BUILTIN or LEGACY_1020
    servers: tuple[str, ...]          # configured server names, first-seen order
    targets: tuple[Target, ...]
    sid_check: str | None = None      # 1020 causes: the read-only SID command
    account_refusal: str | None = None  # why no command can name this account at all

    @property
    def event_id(self) -> int:
        return CAUSE_EVENT[self.cause]

    @property
    def grants(self) -> bool:
        return self.cause in GRANTING


def cause_of(event_id: int, version: str | None) -> str:
    if event_id == 1018:
        return NO_SUBMIT
    return LEGACY_1020 if is_legacy_version(version) else BUILTIN


def diagnose(account: str, sightings: Iterable[Sighting], hosts: Mapping[str, str],
             servers: Mapping[str, ServerConfig], *, typed: bool = False) -> list[Diagnosis]:
    """One Diagnosis per cause, in the order the causes were first seen.

    `hosts` maps a configured server name to the Exchange host its events came from (the
    short name commands use); `servers` holds the configuration (version, submission
    connector). A name that cannot go into a command spoils only its own target. `typed`:
    the sightings' connectors are what a person typed (`fix`), not what events named.
    """
    by_cause: dict[str, list[Sighting]] = {}
    for sighting in sightings:
        cfg = servers.get(sighting.server)
        by_cause.setdefault(cause_of(sighting.event_id, cfg.version if cfg else None),
                            []).append(sighting)
    account_refusal = _refusal(account)
    found = [_diagnosis(cause, account, seen, hosts, servers, account_refusal)
             for cause, seen in by_cause.items()]
    if typed:
        found = [replace(d, targets=tuple(_typed(t) for t in d.targets)) for d in found]
    return found


def _typed(target: Target) -> Target:
    if target.source != "event":
        return target
    fix = replace(target.fix, connector_source="typed") if target.fix else None
    return replace(target, source="typed", fix=fix)


def diagnose_incident(incident: Incident, servers: Mapping[str, ServerConfig]) -> list[Diagnosis]:
    return diagnose(incident.account, sightings_of(incident), dict(incident.servers), servers)


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


def _diagnosis(cause: str, account: str, sightings: list[Sighting], hosts: Mapping[str, str],
               servers: Mapping[str, ServerConfig], account_refusal: str | None) -> Diagnosis:
    names = tuple(dict.fromkeys(s.server for s in sightings))
    named = {s.server for s in sightings if s.connector}
    targets: list[Target] = []
    seen: set[tuple[str, str | None]] = set()
    for sighting in sightings:
        if sighting.connector is None and sighting.server in named:
            continue  # another event on that server named the connector
        key = (sighting.server, (sighting.connector or "").casefold())
        if key in seen:
            continue
        seen.add(key)
        targets.append(_target(cause, account, sighting, hosts, servers.get(sighting.server),
                               account_refusal))
    sid = None
    if cause != NO_SUBMIT and account_refusal is None:
        sid = sid_command(account)
    return Diagnosis(cause, names, tuple(targets), sid, account_refusal)


def _target(cause: str, account: str, sighting: Sighting, hosts: Mapping[str, str],
            cfg: ServerConfig | None, account_refusal: str | None) -> Target:
    host = hosts.get(sighting.server, sighting.server)
    version = cfg.version if cfg else None
    source = "event" if sighting.connector else "guess"
    try:
        connector, source = choose_connector(
            host, sighting.connector, cfg.submission_connector if cfg else None, version)
    except UnsafeValueError as exc:
        return Target(sighting.server, sighting.connector, source, refusal=str(exc))
    if cause not in GRANTING:
        return Target(sighting.server, connector, source)
    if account_refusal:
        return Target(sighting.server, connector, source, refusal=account_refusal)
    custom = (cause == NO_SUBMIT and source == "event"
              and not is_default_connector(connector, version))
    fix = replace(fix_for(account, host, connector=connector), connector_source=source)
    return Target(sighting.server, connector, source, fix=fix, custom=custom,
                  inspect=inspect_connector_command(connector) if custom else None)


def _refusal(account: str) -> str | None:
    """Why no command can name this account (None: every command may)."""
    try:
        check_value(account, "account")
    except UnsafeValueError as exc:
        return str(exc)
    return None
