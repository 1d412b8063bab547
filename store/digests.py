"""Storm digests: the one message per channel that lists the incidents of a storm.

Which incident joins a digest is bot.engine.outbox's rule (`joins_digest`); this module only stores
the digests, who is in them, and what their message shows. Writers run inside the caller's
`db.write_transaction`.
"""
from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from bot.core.messages import DETAILS
from bot.core.model import Digest, DigestLines, Incident

from .db import StoreError, from_iso, incident_from_row, iso, required_time

#: How many incidents a digest's message lists by name; the totals count them all.
SHOWN = 40
#: Its thread details new lines this many per reply, and at most DETAIL_MOST in all (past
#: that, a storm's detail is only noise in a thread: `/submitwatch history` lists them all).
DETAIL_BATCH = 25
DETAIL_MOST = 200


def live_digest(db: Database, channel: str) -> Digest | None:
    """The channel's digest while its storm lasts (at most one: a unique index)."""
    rows = list(db.query("SELECT * FROM digests WHERE channel = ? AND ended_at IS NULL",
                         [channel]))
    return _digest(rows[0]) if rows else None


def live_digests(db: Database) -> list[Digest]:
    return [_digest(r) for r in db.query("SELECT * FROM digests WHERE ended_at IS NULL")]


def get_digest(db: Database, digest_id: int) -> Digest | None:
    rows = list(db.query("SELECT * FROM digests WHERE id = ?", [digest_id]))
    return _digest(rows[0]) if rows else None


def opened_since(db: Database, channel: str, since: datetime) -> int:
    """How many incidents opened in the channel (as configured) after a time (a storm that
    ended exactly one window ago counts nothing: bot.engine.outbox.storm_over)."""
    return db.execute("SELECT count(*) FROM incidents WHERE opened_in = ? AND opened_at > ?",
                      [channel, iso(since)]).fetchone()[0]


def open_digest(db: Database, channel: str, now: datetime) -> Digest:
    digest_id = db.table("digests").insert({
        "channel": channel, "opened_at": iso(now), "last_joined_at": iso(now),
        "detailed_through": 0}).last_pk
    digest = get_digest(db, digest_id) if digest_id is not None else None
    if digest is None:
        raise StoreError(f"the digest of {channel} was written but cannot be read back")
    return digest


def join(db: Database, digest_id: int, incident_id: int, now: datetime) -> None:
    """The incident is listed in the digest from now on, and never gets a post of its own."""
    db.execute("UPDATE incidents SET digest_id = ? WHERE id = ?", [digest_id, incident_id])
    db.execute("UPDATE digests SET last_joined_at = ? WHERE id = ?", [iso(now), digest_id])


def end(db: Database, digest_id: int, now: datetime, quiet_since: datetime) -> bool:
    """End the storm if nothing joined it since `quiet_since` (compare-and-set: False when
    another worker ended it first, or an incident joined it meanwhile)."""
    return db.execute("UPDATE digests SET ended_at = ? WHERE id = ? AND ended_at IS NULL AND "
                      "last_joined_at <= ?", [iso(now), digest_id, iso(quiet_since)]
                      ).rowcount == 1


def set_message(db: Database, digest_id: int, *, ts: str | None, channel_id: str | None,
                now: datetime) -> None:
    """Record a sent digest (ts None: an update of it)."""
    if ts is None:
        db.execute("UPDATE digests SET last_message_at = ? WHERE id = ?", [iso(now), digest_id])
    else:
        db.execute("UPDATE digests SET message_ts = ?, channel_id = coalesce(?, channel_id), "
                   "last_message_at = ? WHERE id = ?", [ts, channel_id, iso(now), digest_id])


def forget_message(db: Database, digest_id: int) -> None:
    """The digest was deleted in Slack: the next post starts a new one."""
    db.execute("UPDATE digests SET message_ts = NULL WHERE id = ?", [digest_id])


def members(db: Database, digest_id: int, *, status: str | None = None) -> list[Incident]:
    sql = "SELECT * FROM incidents WHERE digest_id = ?"
    params: list[Any] = [digest_id]
    if status:
        sql += " AND status = ?"
        params.append(status)
    return [incident_from_row(r) for r in db.query(sql + " ORDER BY id", params)]


def lines(db: Database, digest: Digest, shown: int = SHOWN) -> DigestLines:
    """The digest as its message shows it: the newest `shown` incidents and the totals."""
    total, open_, acked, resolved, events = db.execute(
        "SELECT count(*), coalesce(sum(status = 'open'), 0), "
        "coalesce(sum(status = 'open' AND acked_by IS NOT NULL), 0), "
        "coalesce(sum(status = 'resolved'), 0), coalesce(sum(event_count), 0) "
        "FROM incidents WHERE digest_id = ?", [digest.id]).fetchone()
    by_event = tuple(db.execute(
        "SELECT event_id, count(DISTINCT incident_id) FROM events WHERE incident_id IN "
        "(SELECT id FROM incidents WHERE digest_id = ?) GROUP BY event_id ORDER BY event_id",
        [digest.id]).fetchall())
    newest = tuple(incident_from_row(r) for r in db.query(
        "SELECT * FROM incidents WHERE digest_id = ? ORDER BY id DESC LIMIT ?",
        [digest.id, shown]))
    return DigestLines(digest, newest, total, open_, acked, resolved, events, by_event)


def shown_state(db: Database, digest_id: int) -> tuple:
    """What the digest's message displays, in one cheap row: a change needs a chat.update."""
    return tuple(db.execute(
        "SELECT count(*), sum(event_count), max(last_seen), sum(status = 'open'), "
        "sum(acked_by IS NOT NULL), max(id), (SELECT ended_at FROM digests WHERE id = ?) "
        "FROM incidents WHERE digest_id = ?", [digest_id, digest_id]).fetchone())


def undetailed(db: Database, digest: Digest, limit: int) -> list[Incident]:
    """Incidents of the digest its thread has not detailed yet, oldest first."""
    return [incident_from_row(r) for r in db.query(
        "SELECT * FROM incidents WHERE digest_id = ? AND id > ? ORDER BY id LIMIT ?",
        [digest.id, digest.detailed_through, limit])]


def count_undetailed(db: Database, digest: Digest) -> int:
    return db.execute("SELECT count(*) FROM incidents WHERE digest_id = ? AND id > ?",
                      [digest.id, digest.detailed_through]).fetchone()[0]


def detailed_count(db: Database, digest: Digest) -> int:
    return db.execute("SELECT count(*) FROM incidents WHERE digest_id = ? AND id <= ?",
                      [digest.id, digest.detailed_through]).fetchone()[0]


def thread_full(db: Database, digest: Digest) -> bool:
    """The thread has detailed as many lines as it ever will."""
    return detailed_count(db, digest) >= DETAIL_MOST


def set_detailed(db: Database, digest_id: int, through: int) -> None:
    db.execute("UPDATE digests SET detailed_through = max(detailed_through, ?) WHERE id = ?",
               [through, digest_id])


def pending_kinds(db: Database, digest_id: int) -> set[str]:
    """Kinds of message still to be sent for a digest (waiting, or being sent right now),
    plus bot.core.messages.DETAILS while a reply detailing its new lines waits."""
    kinds = set()
    for kind, detail in db.execute(
            "SELECT kind, detail FROM outbox WHERE digest_id = ? AND state IN ('pending', "
            "'sending')", [digest_id]):
        kinds.add(kind)
        if kind == "reply" and json.loads(detail).get(DETAILS):
            kinds.add(DETAILS)
    return kinds


def _digest(row: dict[str, Any]) -> Digest:
    return Digest(
        id=row["id"], channel=row["channel"], channel_id=row["channel_id"],
        opened_at=required_time(row["opened_at"], "a digest's opened_at"),
        last_joined_at=required_time(row["last_joined_at"], "a digest's last_joined_at"),
        ended_at=from_iso(row["ended_at"]), message_ts=row["message_ts"],
        last_message_at=from_iso(row["last_message_at"]),
        detailed_through=row["detailed_through"] or 0)
