"""The closed loop's state (bot.engine.fixloop): an incident marked fixed, the directory checks that
follow, and their findings. Writers run inside the caller's `db.write_transaction`."""
from __future__ import annotations

import json
from datetime import datetime

from sqlite_utils import Database

from bot.core.findings import Finding
from bot.core.model import Incident

from .db import incident_from_row, iso


def mark_fixed(db: Database, incident_id: int, *, by: str, note: str | None, state: str,
               now: datetime, seen_at: datetime | None) -> None:
    db.execute("UPDATE incidents SET fix_state = ?, fixed_by = ?, fixed_at = ?, fix_note = ?, "
               "fix_seen_at = ?, fix_failed_at = NULL WHERE id = ?",
               [state, by, iso(now), note, iso(seen_at) if seen_at else None, incident_id])


def move(db: Database, incident_id: int, *, was: str, to: str,
         seen_at: datetime | None = None, failed_at: datetime | None = None) -> bool:
    """Compare-and-set the loop's state: False when another job moved it first."""
    sets, params = ["fix_state = ?"], [to]
    if seen_at is not None:
        sets.append("fix_seen_at = ?")
        params.append(iso(seen_at))
    if failed_at is not None:
        sets.append("fix_failed_at = ?")
        params.append(iso(failed_at))
    cursor = db.execute(f"UPDATE incidents SET {', '.join(sets)} WHERE id = ? AND fix_state = ?",
                        [*params, incident_id, was])
    return cursor.rowcount == 1


def confirm(db: Database, incident_id: int, now: datetime) -> bool:
    """Confirmed fixed: the incident closes (its own kind of resolved)."""
    cursor = db.execute("UPDATE incidents SET fix_state = 'confirmed', status = 'resolved', "
                        "resolved_at = ? WHERE id = ? AND fix_state = 'watching' AND "
                        "status = 'open'", [iso(now), incident_id])
    return cursor.rowcount == 1


def in_states(db: Database, *states: str) -> list[Incident]:
    marks = ",".join("?" * len(states))
    return [incident_from_row(r) for r in db.query(
        f"SELECT * FROM incidents WHERE status = 'open' AND fix_state IN ({marks})", states)]


def finding(db: Database, incident_id: int) -> Finding | None:
    rows = list(db.query("SELECT finding FROM directory_checks WHERE incident_id = ?",
                         [incident_id]))
    if not rows or rows[0]["finding"] is None:   # never checked yet (only its next time set)
        return None
    return Finding.from_json(json.loads(rows[0]["finding"]))


def save_finding(db: Database, incident_id: int, found: Finding, next_at: datetime) -> None:
    db.execute("INSERT INTO directory_checks (incident_id, checked_at, finding, next_at) "
               "VALUES (?, ?, ?, ?) ON CONFLICT(incident_id) DO UPDATE SET "
               "checked_at = excluded.checked_at, finding = excluded.finding, "
               "next_at = excluded.next_at",
               [incident_id, iso(found.checked_at), json.dumps(found.to_json()), iso(next_at)])


def check_now(db: Database, incident_id: int, now: datetime) -> None:
    """The next check of the incident is due at once (it was marked fixed, or failed again)."""
    db.execute("INSERT INTO directory_checks (incident_id, checked_at, finding, next_at) "
               "VALUES (?, NULL, NULL, ?) ON CONFLICT(incident_id) DO UPDATE SET "
               "next_at = excluded.next_at", [incident_id, iso(now)])


def due_checks(db: Database, now: datetime, limit: int) -> list[Incident]:
    """Open incidents whose directory check is due (never checked, or their next check is
    due), marked fixed first, then the newest: those with an alert of their own, and those of
    a storm digest only once marked fixed (a storm is not read one by one)."""
    return [incident_from_row(r) for r in db.query(
        "SELECT i.* FROM incidents i LEFT JOIN directory_checks c ON c.incident_id = i.id "
        "WHERE i.status = 'open' AND (i.digest_id IS NULL OR i.fix_state IS NOT NULL) AND "
        "(c.incident_id IS NULL OR c.next_at <= ?) ORDER BY (i.fix_state IS NULL), i.id DESC "
        "LIMIT ?",
        [iso(now), limit])]

