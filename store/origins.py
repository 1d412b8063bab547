"""What the collectors last said of each origin (m018), and each origin's own events: what
`status`, the Home tab and /metrics show for a server whose events come through a collector."""
from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.core.model import Heartbeat, OriginEvents
from store.db import from_iso, iso, required_time


def save_heartbeats(db: Database, collector: str, beats: Iterable[Heartbeat]) -> None:
    """What one collector reported of each of its sources."""
    db.conn.executemany(
        "INSERT INTO origin_heartbeats (origin, collector, computer, status, last_heartbeat, "
        "read_at, taken) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (origin) DO UPDATE SET "
        "collector = excluded.collector, computer = excluded.computer, status = excluded.status, "
        "last_heartbeat = excluded.last_heartbeat, read_at = excluded.read_at, "
        "taken = excluded.taken",
        [(b.origin, collector, b.computer, b.status,
          iso(b.last_heartbeat) if b.last_heartbeat else None, iso(b.read_at), b.taken)
         for b in beats])


def heartbeats(db: Database) -> dict[str, Heartbeat]:
    return {row["origin"]: Heartbeat(
        row["origin"], row["collector"], row["computer"], row["status"],
        from_iso(row["last_heartbeat"]), required_time(row["read_at"], "heartbeat read time"),
        row["taken"])
        for row in db.query("SELECT * FROM origin_heartbeats")}


def origin_events(db: Database, origins: Iterable[str], now: datetime) -> list[OriginEvents]:
    """Per origin: its events of the last day (from the hourly counts, m015) and its newest
    event (one index seek on events(origin, time)): cheap with millions of events kept."""
    since = iso(now - timedelta(hours=24))[:13]
    counts = {row[0]: row[1] for row in db.execute(
        "SELECT origin, sum(n) FROM event_hours WHERE hour >= ? GROUP BY origin", [since])}
    found = []
    for origin in origins:
        last = db.execute("SELECT max(time) FROM events WHERE origin = ?", [origin]).fetchone()[0]
        found.append(OriginEvents(origin, counts.get(origin, 0), from_iso(last)))
    return found
