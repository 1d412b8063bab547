"""Read-only subcommands: history, show, fix, status, servers, snoozes.

Each is `(Request, args) -> Reply`: parse the words, ask store.queries, render with
bot.slack.replies.
A person's mistake raises CommandError with safe mrkdwn; nothing here writes.
"""
from __future__ import annotations

from datetime import datetime, timedelta
from functools import partial

from bot.core.config import Config, ServerConfig
from bot.core.model import Incident, Sighting, incident_key
from bot.engine.liveness import heartbeats_name
from bot.engine.summary import unwatched
from bot.exchange.advice import advise
from bot.exchange.diagnosis import diagnose, diagnose_incident
from bot.exchange.remediation import (
    UnsafeValueError,
    check_value,
    connector_identity,
    likely_submission_connector,
    list_connectors_command,
    short_server_name,
)
from bot.slack import replies
from bot.slack.alerts import escape, show
from store import chat, fixes, origins, queries
from store import db as store
from store import devices as device_store

from .common import (
    CommandError,
    Reply,
    Request,
    checked_name,
    duration,
    incident_id,
    looks_like_incident,
    positive_int,
    take_options,
)

DEFAULT_SINCE = 7 * 86400
#: The sparkline has one bar per day: a year of bars still reads in one line.
MAX_SINCE = 366 * 86400
DEFAULT_LIMIT = 20
#: More than this is a report, not a chat answer; --since or an account narrows it.
MAX_LIMIT = 100
#: Servers and candidates `fix` lists, so the answer fits one message.
FIX_SERVERS = 10     # each takes up to four blocks (candidates, listing, advice, commands)
FIX_CANDIDATES = 5
HOME_INCIDENTS = 40


# --- history ------------------------------------------------------------------------------------

def history(req: Request, args: list[str]) -> Reply:
    rest, options = take_options(args, {"--since": duration, "--limit": positive_int})
    since = options.get("--since", DEFAULT_SINCE)
    limit = options.get("--limit", DEFAULT_LIMIT)
    if since > MAX_SINCE:
        raise CommandError("`--since` goes back at most 366 days (one sparkline bar per day)")
    if limit > MAX_LIMIT:
        raise CommandError(f"`--limit` is at most {MAX_LIMIT}; narrow the question with "
                           "`--since`, an account or a server")
    if len(rest) > 1:
        raise CommandError("give one account or server; put an account with spaces in "
                           "\"double quotes\"")
    subject = _subject(req, rest[0]) if rest else replies.Subject()
    key = incident_key(subject.name) if subject.kind == "account" else None
    page = queries.history(req.db, since=req.now - timedelta(seconds=since), until=req.now,
                           limit=limit, account_key=key,
                           server=subject.name if subject.kind == "server" else None)
    older = None
    if key is not None and not page.incidents:
        older = next(iter(queries.incidents_of_account(req.db, key, 1)), None)
    devices = (device_store.lookups_of(req.db, [i.stored_id for i in page.incidents])
               if req.config.devices.enabled else {})
    text, blocks = replies.history_view(page, subject=subject, since_seconds=since, limit=limit,
                                      max_limit=MAX_LIMIT, older=older, devices=devices)
    return Reply(text, blocks)


def _subject(req: Request, word: str) -> replies.Subject:
    """A configured (or once polled) server's name, any case; anything else is an account."""
    name = checked_name(word, "account or server")
    servers = [s.name for s in req.config.servers] + queries.known_servers(req.db)
    for server in servers:
        if server.casefold() == name.casefold():
            return replies.Subject("server", server)
    return replies.Subject("account", name)


# --- show ---------------------------------------------------------------------------------------

def show_incident(req: Request, args: list[str]) -> Reply:
    if len(args) != 1:
        raise CommandError("give one incident number, like `#42`")
    incident = _incident(req, args[0])
    servers = {s.name: s for s in req.config.servers}
    finding = fixes.finding(req.db, incident.stored_id) if req.config.directory else None
    diagnoses = diagnose_incident(incident, servers, finding,
                                  directory=req.config.directory is not None)
    devices = (device_store.lookup_of(req.db, incident.stored_id)
               if req.config.devices.enabled else None)
    text, blocks = replies.show_view(queries.incident_detail(req.db, incident, req.now), req.now,
                                   diagnoses, finding=finding, devices=devices)
    return Reply(text, blocks)


def _incident(req: Request, word: str) -> Incident:
    number = incident_id(word)
    incident = store.get_incident(req.db, number)
    if incident is None:
        raise CommandError(f"there is no incident #{number}; `/submitwatch history` lists them")
    return incident


# --- fix ----------------------------------------------------------------------------------------

def fix(req: Request, args: list[str]) -> Reply:
    """`fix <account> [SERVER\\Connector] [1018|1020]`: the cause and its commands.

    The cause comes from the event kind given, else from the account's stored events; when
    neither tells, both causes are explained. The reply says what it understood first.
    """
    if not args:
        raise CommandError("name the account, like `CONTOSO\\svc-scanner`")
    kinds = [int(w) for w in args[1:] if w in ("1018", "1020")]
    rest = [w for w in args[1:] if w not in ("1018", "1020")]
    if len(set(kinds)) > 1:
        raise CommandError("give one event kind, `1018` or `1020`, or none")
    account = checked_name(args[0], "account")
    if account.startswith("#") and looks_like_incident(account):
        account = _incident(req, account).account  # `fix #42`: that incident's account
    _refuse_unsafe(account, "account")
    # An unquoted connector name is the rest of the words ("EX01\\Client Frontend EX01").
    connector = _connector_arg(" ".join(rest)) if rest else None
    server = _server_of(req, connector) if connector else None
    events = queries.event_kinds_of_account(req.db, incident_key(account))
    why: str | None
    if kinds:
        causes, why = set(kinds), "you said"
    else:
        causes = set().union(*([events.get(server, set())] if server else events.values()))
        why = "from its stored events" if causes else None
    understood = replies.Understood(account, connector, tuple(sorted(causes or (1018, 1020))), why)
    sections: list[list[dict]] = []
    for event_id in understood.event_ids:
        if event_id == 1018 and connector is None:
            sections.append(_fix_candidates(req, account))
        else:
            sections.append(_diagnosed(req, account, event_id, server, connector, events))
    text, blocks = replies.fix_reply(understood, sections)
    return Reply(text, blocks)


def _connector_arg(connector: str) -> str:
    connector = checked_name(connector, "connector")
    server, _, name = connector.partition("\\")
    if not server.strip() or not name.strip() or " " in server.strip():
        raise CommandError(f"write the connector as `SERVER\\Name`, like `EX01\\Client Frontend "
                           f"EX01` (got `{show(connector, 80)}`); put an account or connector "
                           "with spaces in quotes")
    return connector


def _server_of(req: Request, connector: str) -> str:
    """The configured server a connector identity belongs to: by name or by Exchange host."""
    prefix = connector.partition("\\")[0].strip().casefold()
    for cfg in req.config.servers:
        if prefix in (cfg.name.casefold(), _exchange_host(req, cfg.name).casefold()):
            return cfg.name
    return connector.partition("\\")[0].strip()


def _diagnosed(req: Request, account: str, event_id: int, server: str | None,
               connector: str | None, events: dict[str, set[int]]) -> list[dict]:
    """One event kind's diagnosis: on the connector given, else on the servers the account's
    events of that kind came from, else on every configured server."""
    if server:
        names = [server]
    else:
        names = ([n for n, ids in events.items() if event_id in ids]
                 or [s.name for s in req.config.servers])
    sightings = [Sighting(event_id, name, connector) for name in names[:FIX_SERVERS]]
    hosts = {name: _exchange_host(req, name) for name in names[:FIX_SERVERS]}
    if connector:
        if server is None:   # fix() finds the server whenever it is given a connector
            raise ValueError(f"connector {connector!r} was given without its server")
        hosts[server] = connector.partition("\\")[0].strip()
    configured = {s.name: s for s in req.config.servers}
    return replies.diagnosed_blocks(diagnose(account, sightings, hosts, configured,
                                             typed=connector is not None,
                                             directory=req.config.directory is not None))


def _refuse_unsafe(value: str, what: str) -> None:
    try:
        check_value(value, what)
    except UnsafeValueError as exc:
        raise CommandError(f"No command can be built: {escape(str(exc))}") from None


def _fix_candidates(req: Request, account: str) -> list[dict]:
    seen_by_server: dict[str, list[queries.ConnectorSeen]] = {}
    for seen in queries.connectors_of_account(req.db, incident_key(account), event_id=1018):
        seen_by_server.setdefault(seen.server, []).append(seen)
    configured = {s.name: s for s in req.config.servers}
    # Configured servers first, then any other server this account's events came from.
    names = list(configured) + [n for n in seen_by_server if n not in configured]
    entries = [_server_fix(req, account, name, configured.get(name), seen_by_server.get(name, []))
               for name in names[:FIX_SERVERS]]
    newest = next(iter(queries.incidents_of_account(req.db, incident_key(account), 1)), None)
    return replies.candidates_blocks(account, entries,
                                   hidden_servers=max(0, len(names) - FIX_SERVERS),
                                   incident=newest)


def _server_fix(req: Request, account: str, name: str, cfg: ServerConfig | None,
                seen: list[queries.ConnectorSeen]) -> replies.ServerFix:
    """One server's candidates, strongest first: named by this account's events, configured,
    named by anyone's events there, the usual default (a guess). The first that can be quoted
    safely gets the commands."""
    host = _exchange_host(req, name)
    candidates: list[replies.Candidate] = []
    refusals: list[str] = []

    def add(connector: str, source: str, hit: queries.ConnectorSeen | None = None) -> None:
        if all(c.connector.casefold() != connector.casefold() for c in candidates):
            candidates.append(replies.Candidate(connector, source, hit))

    for hit in seen[:3]:
        add(hit.connector, "account", hit)
    if cfg and cfg.submission_connector:
        configured = _safely(lambda: connector_identity(host, cfg.submission_connector), refusals)
        if configured:
            add(configured, "configured")
    for connector in queries.connectors_on_server(req.db, name, limit=10):
        add(connector, "server")
    guess = _safely(lambda: likely_submission_connector(host, cfg.version if cfg else None),
                    refusals)
    if guess:
        add(guess, "guess")
    # A hostile name in an event gets no command, and is never ranked first: say why instead.
    safe = [c for c in candidates
            if _safely(partial(connector_identity, host, c.connector), refusals)]
    advice = None
    if safe:
        advice = advise(1018, account, host, safe[0].connector,
                        version=cfg.version if cfg else None,
                        role=cfg.role if cfg else None,
                        directory=req.config.directory is not None)
    return replies.ServerFix(name, host, safe[:FIX_CANDIDATES], advice,
                             _safely(partial(list_connectors_command, host), refusals),
                             hidden=max(0, len(safe) - FIX_CANDIDATES),
                             refusals=list(dict.fromkeys(refusals)))  # each reason once


def _safely(make, refusals: list[str]):
    """make(), or None with the reason (safe mrkdwn) added to refusals."""
    try:
        return make()
    except UnsafeValueError as exc:
        refusals.append(escape(str(exc)))
        return None


def _exchange_host(req: Request, name: str) -> str:
    """The short Exchange name for commands: from the newest event the server logged (its
    origin, whichever endpoint read it), else its name."""
    computer = queries.latest_host(req.db, name)
    try:
        return short_server_name(computer) if computer else name
    except UnsafeValueError:
        return name


# --- status, servers, snoozes -------------------------------------------------------------------

def server_statuses(db, config: Config, now: datetime) -> list[replies.ServerStatus]:
    """Configured servers (polled or not; those without url with what their collector last
    said of them and their own events), the collectors, then servers polled before but
    configured no more."""
    states = {s.server: s for s in store.all_server_states(db)}
    beats = origins.heartbeats(db)
    configured = {s.name for s in config.servers}
    # Sources a collector took under their own name, having no [[servers]] entry: shown too.
    unnamed = sorted(b.origin for b in beats.values()
                     if b.taken == "own_name" and b.origin not in configured)
    fed = {e.origin: e for e in origins.origin_events(
        db, [s.name for s in config.servers if not s.polled] + unnamed, now)}
    rows = [replies.ServerStatus(s.name, s, states.pop(s.name, None), beats.get(s.name),
                                 fed.get(s.name)) for s in config.servers]
    rows += [replies.ServerStatus(name, None, states.pop(name, None), beats[name], fed.get(name))
             for name in unnamed]
    rows += [replies.ServerStatus(
        c.name, c.endpoint, states.pop(c.name, None), collector=c.subscription,
        heartbeats=states.pop(heartbeats_name(c), None),
        heartbeats_read_at=max((b.read_at for b in beats.values() if b.collector == c.name),
                               default=None),
        ignored=tuple(sorted(b.computer for b in beats.values()
                             if b.collector == c.name and b.taken == "ignored")))
        for c in config.collectors]
    return rows + [replies.ServerStatus(name, None, state) for name, state in states.items()]


def late_after(config: Config) -> float:
    """A server is late when three polls in a row (plus jitter) have not succeeded."""
    return 3 * config.polling.interval + config.polling.jitter


def status(req: Request, args: list[str]) -> Reply:
    _no_arguments("status", args)
    text, blocks = replies.status_view(
        server_statuses(req.db, req.config, req.now), open_count=queries.open_count(req.db),
        outbox=store.outbox_depth(req.db), now=req.now, interval=req.config.polling.interval,
        late_after=late_after(req.config), delivery=store.delivery_problems(req.db))
    return Reply(text, blocks)


def servers(req: Request, args: list[str]) -> Reply:
    _no_arguments("servers", args)
    text, blocks = replies.servers_view(server_statuses(req.db, req.config, req.now),
                                      default_channel=req.config.slack.channel, now=req.now,
                                      late_after=late_after(req.config))
    return Reply(text, blocks)


def routes(req: Request, args: list[str]) -> Reply:
    """`routes <account> [SERVER] [1018|1020]`: the route a new incident would take."""
    if not args:
        raise CommandError("name the account, like `CONTOSO\\svc-scanner`")
    account = checked_name(args[0], "account")
    kinds = [int(w) for w in args[1:] if w in ("1018", "1020")]
    rest = [w for w in args[1:] if w not in ("1018", "1020")]
    if len(kinds) > 1 or len(rest) > 1:
        raise CommandError("give at most one server and one event kind (`1018` or `1020`)")
    configured = {s.name.casefold(): s.name for s in req.config.servers}
    if rest and rest[0].casefold() not in configured:
        raise CommandError(f"{show(rest[0], 64)} is not a configured server")
    servers = [configured[rest[0].casefold()]] if rest else [s.name for s in req.config.servers]
    events = kinds or [1018, 1020]
    taken = [(server, event, req.config.route_for(account, server, event))
             for server in servers for event in events]
    text, blocks = replies.routes_view(account, taken, bool(req.config.routes))
    return Reply(text, blocks)


def summary(req: Request, args: list[str]) -> Reply:
    """`summary [--since 7d]`: the period at a glance."""
    rest, options = take_options(args, {"--since": duration})
    if rest:
        raise CommandError("summary takes only `--since`, like `--since 7d`")
    since = options.get("--since", DEFAULT_SINCE)
    if since > MAX_SINCE:
        raise CommandError("`--since` goes back at most 366 days")
    figures = queries.summary(req.db, since=req.now - timedelta(seconds=since), until=req.now)
    text, blocks = replies.summary_view(figures, since_seconds=since,
                                        unwatched=unwatched(req.db, req.config))
    return Reply(text, blocks)


def snoozes(req: Request, args: list[str]) -> Reply:
    _no_arguments("snoozes", args)
    text, blocks = replies.snoozes_view(chat.active_snoozes(req.db, req.now), req.now)
    return Reply(text, blocks)


def _no_arguments(name: str, args: list[str]) -> None:
    if args:
        raise CommandError(f"`{name}` takes no arguments (got `{show(args[0], 40)}`)")
