"""`/submitwatch verify <account> [SERVER\\Connector]`: what Active Directory says, now.

Read-only and on demand: the account's SID, RID and token groups, and its ms-Exch-SMTP-Submit
right on one connector, or on every connector of every configured server (each marked when
this account's own events named it). bot.directory.adcheck does the reading; this module picks the
places, asks once per server (so one server the directory does not know spoils only its own
lines) and hands the result to bot.slack.verify_view.

The slash command listener acks before calling us, so a slow directory only delays the answer.
"""
from __future__ import annotations

from dataclasses import replace

from bot.core.config import DirectoryConfig
from bot.core.findings import ConnectorFact, Finding
from bot.core.model import incident_key
from bot.directory import adcheck
from bot.slack import verify_view
from bot.slack.blocks import show
from store import db as store
from store import queries

from .common import CommandError, Reply, Request, checked_name, looks_like_incident

#: Servers asked about when no connector is given: one bind each, so the answer stays timely.
MAX_SERVERS = 20


def verify(req: Request, args: list[str]) -> Reply:
    return look(req, args)[0]


def look(req: Request, args: list[str]) -> tuple[Reply, str, verify_view.Verified | None]:
    """The answer, the account asked about, and what the directory said (None: no [directory]
    is configured); the terminal keeps the last for --json."""
    if not args:
        raise CommandError("name the account, like `CONTOSO\\svc-scanner`")
    account = _account(req, args[0])
    # An unquoted connector name is the rest of the words ("EX01\\Client Frontend EX01").
    place = _place(req, " ".join(args[1:])) if args[1:] else None
    if req.config.directory is None:
        text, blocks = verify_view.directory_off(account)
        return Reply(text, blocks), account, None
    named = _named(req, account)
    if place is not None:
        places: list[tuple[str, str | None]] = [place]
    else:
        places = [(s.name, None) for s in req.config.servers[:MAX_SERVERS]]
    verified = _read(req.config.directory, account, places, named, req)
    text, blocks = verify_view.verify_view(
        verified, hidden_servers=max(0, len(req.config.servers) - MAX_SERVERS)
        if place is None else 0)
    return Reply(text, blocks), account, verified


def _read(config: DirectoryConfig, account: str, places: list[tuple[str, str | None]],
          named: list[str], req: Request) -> verify_view.Verified:
    """The account first (which also proves the directory answers at all: when it does not,
    that one error is the answer), then each place on its own, so a server the directory does
    not know is one line among the others instead of the whole answer."""
    who = adcheck.check(config, account, [], req.now, named)
    if who.error:
        return verify_view.Verified(who, asked=None, problems=())
    facts: list[ConnectorFact] = []
    problems: list[verify_view.ServerProblem] = []
    for server, name in places:
        found: Finding = adcheck.check(config, account, [(server, name)], req.now, named)
        if found.error:
            problems.append(verify_view.ServerProblem(server, found.error, found.fix))
        else:
            facts += found.connectors
    asked = f"{places[0][0]}\\{places[0][1]}" if len(places) == 1 and places[0][1] else None
    return verify_view.Verified(replace(who, connectors=tuple(facts)), asked=asked,
                                problems=tuple(problems), servers=tuple(s for s, _ in places))


def _account(req: Request, word: str) -> str:
    """The account as typed, or `#42`: that incident's account."""
    name = checked_name(word, "account").strip()
    if looks_like_incident(name) and name.startswith("#"):
        incident = store.get_incident(req.db, int(name[1:]))
        if incident is None:
            raise CommandError(f"there is no incident {show(name, 20)}; `/submitwatch history` "
                               "lists them")
        return incident.account
    return name


def _place(req: Request, words: str) -> tuple[str, str]:
    """`SERVER\\Connector` as (server, connector name); a configured server's name is taken in
    its configured spelling, any other server is asked about as typed (the directory knows
    every Exchange server, watched or not)."""
    text = checked_name(words, "connector").strip()
    place = adcheck.split_place(text)
    if place is None or " " in place[0]:
        raise CommandError(f"write the connector as `SERVER\\Name`, like `EX01\\Client Frontend "
                           f"EX01` (got `{show(text, 80)}`); put an account or connector with "
                           "spaces in quotes")
    server, name = place
    for configured in req.config.servers:
        if configured.name.casefold() == server.casefold():
            return configured.name, name
    return server, name


def _named(req: Request, account: str) -> list[str]:
    """The connectors this account's stored events named, as SERVER\\Name with the server as
    configured (events write the Exchange host in front of the name, which may differ)."""
    seen = queries.connectors_of_account(req.db, incident_key(account))
    return [f"{s.server}\\{_connector_name(s.connector)}" for s in seen]


def _connector_name(identity: str) -> str:
    """'EX01\\Client Frontend EX01' -> 'Client Frontend EX01' (a bare name stays)."""
    _, sep, name = identity.partition("\\")
    return name if sep else identity
