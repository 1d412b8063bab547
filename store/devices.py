"""The device look-up's state (bot.engine.devices): how far each protocol-log file was read, the
devices each incident's account failed from, and where each incident's look-up stands.
Writers run inside the caller's `write_transaction`; addresses and names are untrusted text."""
from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.core.devices import (
    FAILED,
    FOUND,
    NO_MATCH,
    NOT_LOGGING,
    PENDING,
    DeviceLookup,
    DeviceSeen,
)
from bot.core.model import Event

from .db import from_iso, iso


@dataclass(frozen=True)
class Due:
    """An open incident with events its look-up has not covered yet."""

    incident_id: int
    account: str
    looked_until: datetime | None     # the newest event already looked up


def due(db: Database, now: datetime, every: float, limit: int) -> list[Due]:
    """Open incidents with events newer than their last look-up, not looked up for `every`
    seconds (at most one look-up per incident per interval), newest first."""
    rows = db.query(
        "SELECT i.id, i.account, c.looked_until FROM incidents i LEFT JOIN device_checks c "
        "ON c.incident_id = i.id WHERE i.status = 'open' AND "
        "(c.looked_until IS NULL OR i.last_seen > c.looked_until) AND "
        "(c.checked_at IS NULL OR c.checked_at <= ?) ORDER BY i.last_seen DESC LIMIT ?",
        [iso(now - timedelta(seconds=every)), limit])
    return [Due(r["id"], r["account"], from_iso(r["looked_until"])) for r in rows]


def new_events(db: Database, incident_id: int, after: datetime | None,
               limit: int = 5000) -> list[Event]:
    """The incident's events after `after` (all of them when None), oldest first."""
    where = "incident_id = ?"
    params: list[object] = [incident_id]
    if after is not None:
        where += " AND time > ?"
        params.append(iso(after))
    return [_event(r) for r in db.query(
        f"SELECT * FROM events WHERE {where} ORDER BY time LIMIT ?", [*params, limit])]


def events_between(db: Database, origin: str, start: datetime, end: datetime,
                   limit: int = 20000) -> list[Event]:
    """Every account's events an Exchange server logged between two times (the join needs
    them all: a line that hides its account is joined only where one account failed)."""
    return [_event(r) for r in db.query(
        "SELECT * FROM events WHERE origin = ? AND time >= ? AND time <= ? ORDER BY time "
        "LIMIT ?", [origin, iso(start), iso(end), limit])]


def _event(row: Mapping) -> Event:
    time = from_iso(row["time"])
    assert time is not None
    return Event(server=row["server"], record_id=row["record_id"], provider=row["provider"],
                 event_id=row["event_id"], time=time, account=row["account"],
                 connector=row["connector"], computer=row["computer"] or "",
                 origin=row["origin"])


def cursors(db: Database, server: str, role: str) -> dict[str, int]:
    return {r["file"]: r["offset"] for r in db.query(
        "SELECT file, offset FROM protocol_log_cursors WHERE server = ? AND role = ?",
        [server, role])}


def save_cursors(db: Database, server: str, role: str, found: Mapping[str, int],
                 older_than: str) -> None:
    """Keep how far each file was read; forget files named before `older_than` (a file name
    prefix such as RECV2026120500: those hours will not be asked for again)."""
    for file, offset in found.items():
        db.execute("INSERT INTO protocol_log_cursors (server, role, file, offset) VALUES "
                   "(?, ?, ?, ?) ON CONFLICT(server, role, file) DO UPDATE SET "
                   "offset = excluded.offset", [server, role, file, offset])
    db.execute("DELETE FROM protocol_log_cursors WHERE server = ? AND role = ? AND file < ?",
               [server, role, older_than])


def pending_lines(db: Database, server: str, role: str) -> list[str]:
    """The lines kept from earlier reads (JSON, bot.engine.devices reads them)."""
    return [r["line"] for r in db.query(
        "SELECT line FROM protocol_lines WHERE server = ? AND role = ? ORDER BY time",
        [server, role])]


def keep_lines(db: Database, server: str, role: str,
               lines: Iterable[tuple[str, int, datetime, str]], older_than: datetime) -> None:
    """Keep exactly these lines (file, offset, time, JSON) as the ones still to join, minus
    those older than `older_than`."""
    db.execute("DELETE FROM protocol_lines WHERE server = ? AND role = ?", [server, role])
    for file, offset, time, line in lines:
        if time >= older_than:
            db.execute("INSERT OR IGNORE INTO protocol_lines (server, role, file, offset, time, "
                       "line) VALUES (?, ?, ?, ?, ?, ?)",
                       [server, role, file, offset, iso(time), line])


def add_devices(db: Database, incident_id: int, server: str,
                seen: Iterable[DeviceSeen]) -> None:
    """Add what one look-up found: sessions add up, first/last widen (a file is read once, so
    a session is counted once)."""
    for d in seen:
        db.execute(
            "INSERT INTO devices (incident_id, server, address, name, sessions, first, last, "
            "account_shown) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(incident_id, server, address) DO UPDATE SET "
            "name = coalesce(excluded.name, name), sessions = sessions + excluded.sessions, "
            "first = min(first, excluded.first), last = max(last, excluded.last), "
            "account_shown = account_shown AND excluded.account_shown",
            [incident_id, server, d.address, d.name, d.sessions, iso(d.first), iso(d.last),
             int(d.account_shown)])


def save_check(db: Database, incident_id: int, *, checked_at: datetime,
               looked_until: datetime | None, problem: str | None, unmatched: int,
               quiet_connectors: Sequence[str]) -> None:
    """Where the look-up stands. `looked_until` moves only when the read covered the events
    (a failed read leaves it, so they are looked up again next time); `unmatched` is the last
    read's count of events no line explained."""
    db.execute(
        "INSERT INTO device_checks (incident_id, checked_at, looked_until, problem, "
        "unmatched_events, quiet_connectors) VALUES (?, ?, ?, ?, ?, ?) "
        "ON CONFLICT(incident_id) DO UPDATE SET checked_at = excluded.checked_at, "
        "looked_until = coalesce(excluded.looked_until, looked_until), "
        "problem = excluded.problem, "
        "unmatched_events = excluded.unmatched_events, "
        "quiet_connectors = excluded.quiet_connectors",
        [incident_id, iso(checked_at), iso(looked_until) if looked_until else None, problem,
         unmatched, json.dumps(list(quiet_connectors))])


def lookup_of(db: Database, incident_id: int) -> DeviceLookup:
    """What the look-ups found for an incident (PENDING: not looked up yet)."""
    return lookups_of(db, [incident_id]).get(incident_id, DeviceLookup(PENDING))


def lookups_of(db: Database, incident_ids: Iterable[int]) -> dict[int, DeviceLookup]:
    ids = list(dict.fromkeys(incident_ids))
    out: dict[int, DeviceLookup] = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        marks = ",".join("?" * len(chunk))
        seen: dict[int, list[DeviceSeen]] = {}
        for r in db.query(f"SELECT incident_id, address, max(name) AS name, "
                          "sum(sessions) AS sessions, min(first) AS first, max(last) AS last, "
                          "min(account_shown) AS shown FROM devices WHERE incident_id IN "
                          f"({marks}) GROUP BY incident_id, address", chunk):
            first, last = from_iso(r["first"]), from_iso(r["last"])
            assert first is not None and last is not None
            seen.setdefault(r["incident_id"], []).append(DeviceSeen(
                r["address"], r["name"], r["sessions"], first, last, bool(r["shown"])))
        checks = {r["incident_id"]: r for r in db.query(
            f"SELECT * FROM device_checks WHERE incident_id IN ({marks})", chunk)}
        for incident_id in seen.keys() - checks.keys():   # named by another incident's read
            checks[incident_id] = {"incident_id": incident_id, "problem": None,
                                   "looked_until": None, "quiet_connectors": None,
                                   "unmatched_events": 0, "checked_at": None}
        for r in checks.values():
            devices = sorted(seen.get(r["incident_id"], []),
                             key=lambda d: (-d.sessions, d.first, d.address))
            quiet = tuple(json.loads(r["quiet_connectors"] or "[]"))
            if devices:
                state = FOUND
            elif r["problem"] and r["looked_until"] is None:
                state = FAILED
            elif quiet:
                state = NOT_LOGGING
            else:
                state = NO_MATCH if r["looked_until"] is not None else FAILED
            out[r["incident_id"]] = DeviceLookup(
                state, tuple(devices), problem=r["problem"], quiet_connectors=quiet,
                unmatched_events=r["unmatched_events"], checked_at=from_iso(r["checked_at"]))
    return out
