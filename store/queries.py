"""Read-only queries for the chat lookups (history, show, fix, status, the App Home).

Nothing here writes. Each query is shaped for an index, so it stays fast with ten million events
and 200,000 incidents (benchmark row 9):

- events(account_key, time)   per account: history sparkline, connectors an account hit
- events(incident_id)         one incident's events
- events(time), events(origin, time)
                              (migration m004, by origin since m016) the sparkline without a
                              filter or per server, each server's latest host
- events(origin, connector, time)
                              (m012, m016) the connectors each server has seen
- incidents                   hundreds of thousands of rows at most: read through
                              incidents(status, last_seen) where the status is known, else
                              (m012) by last_seen, by key, or by when they opened, were
                              acknowledged or resolved

A "server" here is an event's origin, the Exchange server that logged it (events.origin, m016),
not the endpoint polled (events.server, which owns the cursor): the same for a server's own log,
not for a collector's.
"""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from statistics import median

from sqlite_utils import Database

from bot.core.model import (
    ConnectorSeen,
    EventGroup,
    History,
    Incident,
    IncidentDetail,
    Moment,
    Snooze,
    Summary,
)

from . import chat
from .db import _incident as incident_from_row
from .db import iso, required_time

# --- history ------------------------------------------------------------------------------------

def history(db: Database, *, since: datetime, until: datetime, limit: int,
            account_key: str | None = None, server: str | None = None) -> History:
    """History of every account, of one account (its incident key) or of one server's name
    (the events it logged, whichever endpoint they were read from)."""
    where, params = ["last_seen >= :since"], {"since": iso(since), "until": iso(until),
                                              "limit": limit}
    event_filter = ""
    if account_key is not None:
        where.append("key = :key")
        event_filter = "AND account_key = :key"
        params["key"] = account_key
    if server is not None:
        # incidents.servers is JSON [[name, host], ...]: at most a few pairs per incident.
        where.append("EXISTS (SELECT 1 FROM json_each(incidents.servers) AS s "
                     "WHERE json_extract(s.value, '$[0]') = :server)")
        event_filter = "AND origin = :server"
        params["server"] = server
    condition = " AND ".join(where)
    total, open_count = db.execute(
        f"SELECT count(*), coalesce(sum(status = 'open'), 0) FROM incidents WHERE {condition}",
        params).fetchone()
    rows = db.query(f"SELECT * FROM incidents WHERE {condition} "
                    "ORDER BY last_seen DESC, id DESC LIMIT :limit", params)
    return History([incident_from_row(r) for r in rows], total, open_count,
                   _events_per_day(db, event_filter, params))


def _events_per_day(db: Database, event_filter: str, params: dict) -> list[tuple[str, int]]:
    """Events per UTC day from `since` to the day of `until`, zero days included.

    One count per day over an index range (events(time), (origin, time) or (account_key,
    time)) rather than GROUP BY substr(time, 1, 10): counting a range needs no sort, about
    ten times faster over a million events. Stored times are fixed-width ISO text, so
    'YYYY-MM-DD' sorts just before every time of that day.
    """
    return [(day, count) for day, count in db.execute(
        "WITH RECURSIVE days(day) AS ("
        "  SELECT date(:since) UNION ALL"
        "  SELECT date(day, '+1 day') FROM days WHERE day < date(:until))"
        " SELECT day, (SELECT count(*) FROM events WHERE time >= max(day, :since)"
        f"              AND time < date(day, '+1 day') {event_filter}) FROM days", params)]


def known_servers(db: Database) -> list[str]:
    """Every server name ever polled or named as a stored event's origin (a server removed from
    the config still has history).

    The origins by a loose index scan of events(origin, time): one seek per distinct origin.
    """
    return [r[0] for r in db.execute(
        "WITH RECURSIVE origins(origin) AS ("
        "  SELECT min(origin) FROM events"
        "  UNION ALL"
        "  SELECT (SELECT min(origin) FROM events WHERE origin > origins.origin)"
        "  FROM origins WHERE origins.origin IS NOT NULL"
        ") SELECT server FROM server_state UNION "
        "SELECT origin FROM origins WHERE origin IS NOT NULL ORDER BY 1")]


# --- one incident -------------------------------------------------------------------------------

def event_groups(db: Database, incident_id: int, limit: int = 25) -> tuple[list[EventGroup], int]:
    """(the `limit` biggest groups, how many groups there are in all), per origin and
    connector."""
    rows = db.execute(
        "SELECT origin, connector, group_concat(DISTINCT event_id), count(*) AS n, min(time), "
        "max(time), count(*) OVER () FROM events WHERE incident_id = ? "
        "GROUP BY origin, connector ORDER BY n DESC, origin, connector LIMIT ?",
        [incident_id, limit]).fetchall()
    groups = [EventGroup(server, connector, tuple(sorted(int(i) for i in ids.split(","))), n,
                         required_time(first, "an event's time"),
                         required_time(last, "an event's time"))
              for server, connector, ids, n, first, last, _ in rows]
    return groups, rows[0][6] if rows else 0


def timeline(db: Database, incident: Incident, now: datetime) -> list[Moment]:
    """What happened to an incident, oldest first: events, ack, snoozes, resolution.

    Who did what from chat, including undone acks, is in the audit trail (`audit`).
    """
    moments = [Moment(incident.first_seen, "first event"),
               Moment(incident.opened_at, "opened")]
    if incident.event_count > 1:
        moments.append(Moment(incident.last_seen, "last event"))
    if incident.acked_by and incident.acked_at:
        moments.append(Moment(incident.acked_at, "acknowledged", incident.acked_by,
                              incident.ack_note))
    for snooze in snoozes_of(db, incident, now):
        target = "incident" if snooze.kind == "incident" else "account"
        moments.append(Moment(snooze.created_at, f"{target} snoozed", snooze.created_by,
                              snooze.reason, snooze.until))
        if snooze.ended_at:
            what = "snooze ended" if snooze.ended_by else "snooze expired"
            moments.append(Moment(snooze.ended_at, what, snooze.ended_by))
        elif snooze.until <= now:
            moments.append(Moment(snooze.until, "snooze expired"))
    if incident.resolved_at:
        moments.append(Moment(incident.resolved_at, "resolved"))
    # Python's sort is stable: moments at the same instant keep the order above.
    return sorted(moments, key=lambda m: m.at)


def snoozes_of(db: Database, incident: Incident, now: datetime,
               limit: int = 30) -> list[Snooze]:
    """Every snooze that silenced this incident at some point: its own, and its account's
    while the incident lasted (ended ones included, so `show` can tell the story); the newest
    `limit`, oldest first."""
    start = min(incident.first_seen, incident.opened_at)
    end = incident.resolved_at or now
    rows = db.query(
        "SELECT * FROM snoozes WHERE ((kind = 'incident' AND target = :id) OR "
        "(kind = 'account' AND target = :key)) AND created_at <= :end "
        "AND coalesce(ended_at, until) >= :start ORDER BY created_at DESC, id DESC LIMIT :limit",
        {"id": str(incident.id), "key": incident.key, "start": iso(start), "end": iso(end),
         "limit": limit})
    return [chat._snooze(r) for r in reversed(list(rows))]


def incident_detail(db: Database, incident: Incident, now: datetime,
                    group_limit: int = 25, audit_limit: int = 30) -> IncidentDetail:
    if incident.id is None:   # its events and audit rows are found by its id
        raise ValueError("incident_detail needs a stored incident (one with an id)")
    groups, group_count = event_groups(db, incident.id, group_limit)
    in_force = chat.snoozes_for(db, incident, now) if incident.status == "open" else []
    return IncidentDetail(incident, groups, group_count, timeline(db, incident, now),
                          chat.audit_trail(db, incident.id, audit_limit),
                          max((s.until for s in in_force), default=None))


# --- accounts -----------------------------------------------------------------------------------

def incidents_of_account(db: Database, key: str, limit: int = 10) -> list[Incident]:
    """An account's incidents, newest first."""
    return [incident_from_row(r) for r in db.query(
        "SELECT * FROM incidents WHERE key = ? ORDER BY last_seen DESC, id DESC LIMIT ?",
        [key, limit])]


def connectors_of_account(db: Database, key: str, limit: int = 50,
                          event_id: int | None = None) -> list[ConnectorSeen]:
    """The connectors an account's events (of `event_id`, or any) named, per origin, most
    recent first."""
    kind = "" if event_id is None else " AND event_id = :event_id"
    rows = db.execute(
        "SELECT origin, connector, count(*), max(time) AS last FROM events "
        f"WHERE account_key = :key AND connector IS NOT NULL{kind} GROUP BY origin, connector "
        "ORDER BY last DESC LIMIT :limit",
        {"key": key, "limit": limit, "event_id": event_id}).fetchall()
    return [ConnectorSeen(s, c, n, required_time(last, "an event's time"))
            for s, c, n, last in rows]


def event_kinds_of_account(db: Database, key: str) -> dict[str, set[int]]:
    """Which event IDs an account's stored events have, per origin (the cause `fix` explains)."""
    found: dict[str, set[int]] = {}
    for server, event_id in db.execute("SELECT DISTINCT origin, event_id FROM events "
                                       "WHERE account_key = ?", [key]):
        found.setdefault(server, set()).add(event_id)
    return found


# --- servers ------------------------------------------------------------------------------------

def connectors_on_server(db: Database, server: str, limit: int = 10) -> list[str]:
    """Distinct connectors named by the events a server logged (any account), at most `limit`.

    A loose index scan: each step jumps to the next connector name in the index on
    events(origin, connector, time), so the cost is one seek per distinct name however many
    events named it.
    """
    rows = db.execute(
        "WITH RECURSIVE seen(connector) AS ("
        "  SELECT min(connector) FROM events WHERE origin = :server AND connector IS NOT NULL"
        "  UNION ALL"
        "  SELECT (SELECT min(connector) FROM events WHERE origin = :server"
        "          AND connector IS NOT NULL AND connector > seen.connector)"
        "  FROM seen WHERE seen.connector IS NOT NULL LIMIT :limit"
        ") SELECT connector FROM seen WHERE connector IS NOT NULL",
        {"server": server, "limit": limit}).fetchall()
    return [r[0] for r in rows]


def latest_host(db: Database, server: str) -> str | None:
    """The Exchange host (<Computer>) named by the newest event the server logged, if any: the
    connector's server prefix in `fix`'s commands."""
    row = db.execute("SELECT computer FROM events WHERE origin = ? ORDER BY time DESC LIMIT 1",
                     [server]).fetchone()
    return row[0] if row and row[0] else None


# --- open incidents, counts ---------------------------------------------------------------------

def open_incidents_page(db: Database, limit: int) -> tuple[list[Incident], int]:
    """(the `limit` most recently active open incidents, how many are open)."""
    rows = db.query("SELECT * FROM incidents WHERE status = 'open' "
                    "ORDER BY last_seen DESC, id DESC LIMIT ?", [limit])
    total = db.execute("SELECT count(*) FROM incidents WHERE status = 'open'").fetchone()[0]
    return [incident_from_row(r) for r in rows], total



def open_count(db: Database) -> int:
    return db.execute("SELECT count(*) FROM incidents WHERE status = 'open'").fetchone()[0]


# --- summary ------------------------------------------------------------------------------------

def summary(db: Database, *, since: datetime, until: datetime, top: int = 5) -> Summary:
    """The figures of `/submitwatch summary` for [since, until)."""
    window = {"since": iso(since), "until": iso(until), "top": top}
    # The accounts that opened incidents in the window (incidents(opened_at, key)), and which
    # of them had one before it: one look-up per account in incidents(key, opened_at), instead
    # of the list of every key ever seen.
    opened, accounts, seen_before = db.execute(
        "WITH opened AS (SELECT key, count(*) AS n FROM incidents WHERE opened_at >= :since "
        "AND opened_at < :until GROUP BY key) SELECT coalesce(sum(n), 0), count(*), "
        "coalesce(sum(EXISTS (SELECT 1 FROM incidents AS older WHERE older.key = opened.key "
        "AND older.opened_at < :since)), 0) FROM opened", window).fetchone()
    open_now, acked_now = db.execute(
        "SELECT count(*), count(acked_by) FROM incidents WHERE status = 'open'").fetchone()
    per_server: dict[str, int] = {}
    per_connector: dict[str, int] = {}
    for server, connector, n in _events_by_place(db, since, until):
        per_server[server] = per_server.get(server, 0) + n
        if connector:
            per_connector[connector] = per_connector.get(connector, 0) + n
    to_ack = _seconds_between(db, "acked_at", window)
    to_resolve = _seconds_between(db, "resolved_at", window)
    return Summary(since, until, accounts - seen_before, opened, sum(per_server.values()),
                   open_now, acked_now, _ranked(per_server.items())[:top],
                   _ranked(per_connector.items())[:top],
                   median(to_ack) if to_ack else None,
                   median(to_resolve) if to_resolve else None)


def _events_by_place(db: Database, since: datetime, until: datetime) -> list[tuple]:
    """(origin, connector or '', events) in [since, until): the whole hours inside the window
    from the hourly counts (m015: a week is 168 hours of a few rows each, where counting its
    ~300,000 events took most of `summary`'s time), the part-hours at its ends from the events
    themselves (events(time))."""
    first = since.replace(minute=0, second=0, microsecond=0)
    if first < since:
        first += timedelta(hours=1)          # the first whole hour
    last = until.replace(minute=0, second=0, microsecond=0)   # the end of the last one
    edges = "SELECT origin, coalesce(connector, ''), count(*) FROM events WHERE time >= ? " \
            "AND time < ? GROUP BY 1, 2"
    if first >= last:                        # no whole hour inside: count the events
        return db.execute(edges, [iso(since), iso(until)]).fetchall()
    rows = db.execute("SELECT origin, connector, sum(n) FROM event_hours WHERE hour >= ? AND "
                      "hour < ? GROUP BY 1, 2", [iso(first)[:13], iso(last)[:13]]).fetchall()
    rows += db.execute(edges, [iso(since), iso(first)]).fetchall()
    rows += db.execute(edges, [iso(last), iso(until)]).fetchall()
    return rows


def _ranked(counts: Iterable[tuple[str, int]]) -> list[tuple[str, int]]:
    """Names with a count above zero, most first, then by name (as ORDER BY n DESC, name)."""
    return sorted(((name, n) for name, n in counts if n), key=lambda item: (-item[1], item[0]))


def _seconds_between(db: Database, column: str, window: dict) -> list[float]:
    """Seconds from opening to `column` (acked_at, resolved_at) for incidents where it falls in
    the window. `column` is one of ours, never input."""
    rows = db.execute(f"SELECT opened_at, {column} FROM incidents WHERE {column} >= :since "
                      f"AND {column} < :until", window).fetchall()
    # Neither can be NULL (opened_at is NOT NULL, the other is in the window), so the times are
    # parsed directly: required_time's check cost as much as the parse over a week's 8,000
    # incidents of a 200,000-incident database.
    parse = datetime.fromisoformat
    return [(parse(done) - parse(start)).total_seconds() for start, done in rows]
