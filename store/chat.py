"""What responders change from chat: acknowledgements, snoozes, and the audit trail of both.

Call the writers inside `db.write_transaction`, together with the outbox rows the change calls
for, so an ack is never recorded without its message update (or the reverse).
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from bot.core.model import Incident, Snooze

from .db import StoreError, from_iso, iso, required_time

# --- acknowledgements ---------------------------------------------------------------------------

def set_ack(db: Database, incident_id: int, user_id: str | None, note: str | None,
            now: datetime | None) -> None:
    """Acknowledge (user_id given) or unacknowledge (user_id None) an incident."""
    db.execute("UPDATE incidents SET acked_by = ?, acked_at = ?, ack_note = ? WHERE id = ?",
               [user_id, iso(now) if user_id and now else None, note if user_id else None,
                incident_id])


# --- snoozes ------------------------------------------------------------------------------------

def add_snooze(db: Database, *, kind: str, target: str, account: str, until: datetime,
               reason: str, user_id: str, now: datetime) -> Snooze:
    row_id = db.table("snoozes").insert({
        "kind": kind, "target": target, "account": account, "until": iso(until),
        "reason": reason, "created_by": user_id, "created_at": iso(now)}).last_pk
    # Read back in the same connection (and transaction): missing only if SQLite lost the row.
    snooze = get_snooze(db, row_id) if row_id is not None else None
    if snooze is None:
        raise StoreError(f"the snooze of {target} was written but cannot be read back")
    return snooze


def get_snooze(db: Database, snooze_id: int) -> Snooze | None:
    rows = list(db.query("SELECT * FROM snoozes WHERE id = ?", [snooze_id]))
    return _snooze(rows[0]) if rows else None


def active_snoozes(db: Database, now: datetime) -> list[Snooze]:
    """Snoozes in force at `now`, soonest to end first."""
    return [_snooze(r) for r in db.query(
        "SELECT * FROM snoozes WHERE ended_at IS NULL AND until > ? ORDER BY until, id",
        [iso(now)])]


def snoozes_for(db: Database, incident: Incident, now: datetime) -> list[Snooze]:
    """The snoozes in force for one incident: its own, and its account's."""
    return [_snooze(r) for r in db.query(
        "SELECT * FROM snoozes WHERE ended_at IS NULL AND until > ? AND ((kind = 'incident' "
        "AND target = ?) OR (kind = 'account' AND target = ?)) ORDER BY until DESC, id",
        [iso(now), str(incident.id), incident.key])]


def snoozed_keys(db: Database, now: datetime) -> tuple[set[str], set[str]]:
    """(incident ids, incident keys) silenced at `now`: one query for a whole batch."""
    ids: set[str] = set()
    keys: set[str] = set()
    for snooze in active_snoozes(db, now):
        (ids if snooze.kind == "incident" else keys).add(snooze.target)
    return ids, keys


def due_snoozes(db: Database, now: datetime) -> list[Snooze]:
    """Snoozes whose time is up but that have not been ended yet."""
    return [_snooze(r) for r in db.query(
        "SELECT * FROM snoozes WHERE ended_at IS NULL AND until <= ? ORDER BY until, id",
        [iso(now)])]


def end_snooze(db: Database, snooze_id: int, now: datetime, user_id: str | None) -> None:
    db.execute("UPDATE snoozes SET ended_at = ?, ended_by = ? WHERE id = ? AND ended_at IS NULL",
               [iso(now), user_id, snooze_id])


def incidents_covered(db: Database, snooze: Snooze) -> list[Incident]:
    """The open incidents a snooze silences (for an account snooze: the account's open one)."""
    from .db import get_incident, open_incidents
    if snooze.kind == "incident":
        incident = get_incident(db, int(snooze.target))
        return [incident] if incident and incident.status == "open" else []
    return list(open_incidents(db, [snooze.target]).values())


def _snooze(row: dict[str, Any]) -> Snooze:
    return Snooze(
        id=row["id"], kind=row["kind"], target=row["target"], account=row["account"],
        until=required_time(row["until"], "a snooze's until"), reason=row["reason"],
        created_by=row["created_by"],
        created_at=required_time(row["created_at"], "a snooze's created_at"),
        ended_at=from_iso(row["ended_at"]),
        ended_by=row["ended_by"])


# --- audit --------------------------------------------------------------------------------------

def audit(db: Database, *, now: datetime, user_id: str, action: str, target: str,
          via: str, outcome: str, incident_id: int | None = None, channel: str | None = None,
          before: Any = None, after: Any = None, detail: str | None = None) -> None:
    """Record one action taken (or refused) from chat. before/after are JSON-able snapshots."""
    db.table("audit").insert({
        "at": iso(now), "user_id": user_id, "action": action, "target": target,
        "incident_id": incident_id, "channel": channel, "via": via, "outcome": outcome,
        "before": json.dumps(before, sort_keys=True) if before is not None else None,
        "after": json.dumps(after, sort_keys=True) if after is not None else None,
        "detail": detail})


def audit_trail(db: Database, incident_id: int, limit: int = 50) -> list[dict[str, Any]]:
    """The newest `limit` actions on one incident, oldest first."""
    rows = list(db.query("SELECT * FROM audit WHERE incident_id = ? ORDER BY id DESC LIMIT ?",
                         [incident_id, limit]))
    return [_audit(r) for r in reversed(rows)]


def recent_audit(db: Database, limit: int = 50) -> list[dict[str, Any]]:
    return [_audit(r) for r in db.query("SELECT * FROM audit ORDER BY id DESC LIMIT ?", [limit])]


def _audit(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "at": from_iso(row["at"]),
            "before": json.loads(row["before"]) if row["before"] else None,
            "after": json.loads(row["after"]) if row["after"] else None}


def incident_snapshot(incident: Incident | None, snoozes: Iterable[Snooze] = ()) -> dict | None:
    """What the audit keeps of an incident's chat state, before and after an action."""
    if incident is None:
        return None
    return {"status": incident.status, "acked_by": incident.acked_by,
            "ack_note": incident.ack_note,
            "snoozed_until": max((iso(s.until) for s in snoozes), default=None)}
