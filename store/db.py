"""SQLite through sqlite-utils: opening, transactions, and the small queries the rest uses.

Every write that must be all-or-nothing (events + incidents + outbox rows + cursor) runs inside
`write_transaction`, which takes SQLite's write lock up front (BEGIN IMMEDIATE) so two pollers,
or a cron `poll-once` beside `run`, queue up instead of failing half-way.
"""
from __future__ import annotations

import json
import os
import sqlite3
import sys
import tempfile
import threading
import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlite_utils import Database

from bot.core.messages import UNCLAIMED_POST, DigestMessage, Hurry, HurryDigest, Instruction
from bot.core.model import Event, Incident, Problem, ServerState, Sighting

from .migrations import migrations

BUSY_TIMEOUT_MS = 15_000


class StoreError(RuntimeError):
    """A database problem, in words a person can act on (see `explain`)."""


class DiskFullError(StoreError):
    """The disk holding the database is full: nothing can be written until there is space."""


def store_error(exc: sqlite3.Error, path: str | Path) -> StoreError:
    text = str(exc)
    full = "disk is full" in text or "database or disk is full" in text
    return (DiskFullError if full else StoreError)(explain(exc, path))


def open_db(path: str | Path, *, migrate: bool = True) -> Database:
    """Open (and create or upgrade) the database file, in WAL mode with a busy timeout."""
    path = Path(path)
    try:
        if path.parent and not path.parent.exists():
            raise StoreError(f"the folder for the database {path} does not exist")
        if not migrate:
            return _connect(path)
        # Creating the file, switching it to WAL and the schema: one process at a time.
        with _migration_lock(path):
            _create_private(path)
            db = _connect(path)
            migrations.apply(db)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot open the database: {explain(exc, path)}") from exc
    except OSError as exc:   # creating the file or its lock in a folder we may not write
        raise StoreError(f"cannot create the database {path}: {exc.strerror or exc}; give the "
                         "user running SubmitWatch write access to its folder") from exc
    return db


def _connect(path: Path) -> Database:
    conn = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                           isolation_level=None)
    db = Database(conn)
    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    db.execute("PRAGMA journal_mode = WAL")
    # FULL: a commit survives a power cut too, so "sent" marks are never lost (re-posts).
    db.execute("PRAGMA synchronous = FULL")
    db.execute("PRAGMA foreign_keys = ON")
    return db


@contextmanager
def _migration_lock(path: Path) -> Iterator[None]:
    """One process at a time creates or upgrades the schema.

    Two processes starting on a new database at once (`run` and a cron `poll-once`) would both
    see no schema and both create it: one then failed at once with "database is locked"
    (SQLite refuses the second writer of a deferred transaction without waiting). An OS lock on
    `<database>.lock` makes the second wait, then find the schema in place.
    """
    try:
        fd = os.open(f"{path}.lock", os.O_CREAT | os.O_RDWR, 0o600)
    except OSError:  # a read-only folder: nobody can create the schema there anyway
        yield
        return
    try:
        # sys.platform rather than os.name: type checkers know msvcrt exists only on win32.
        if sys.platform == "win32":
            import msvcrt
            msvcrt.locking(fd, msvcrt.LK_LOCK, 1)   # retries for 10 s, then raises OSError
        else:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)   # closing releases the lock


def _create_private(path: Path) -> None:
    """Create the database file readable by its owner only (it holds account names, the audit
    and channel IDs); SQLite gives its -wal and -shm files the same mode. An existing file is
    left as it is."""
    try:
        os.close(os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600))
    except FileExistsError:
        pass


def open_read_only(path: str | Path) -> Database:
    """Open an existing database for reading only (the terminal look-ups).

    A `file:...?mode=ro` URI: SQLite never creates the file and never takes the write lock, so
    this works beside a running `submitwatch run` (WAL mode: readers never wait for the writer)
    and changes nothing; `PRAGMA query_only` refuses a write even from our own code. A missing
    file, or a schema older or newer than this SubmitWatch, is a StoreError in words.
    """
    path = Path(path)
    if not path.is_file():
        raise StoreError(f"no database at {path}: has `submitwatch run` or the demo ever run "
                         "with this config?")
    try:
        conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True,
                               timeout=BUSY_TIMEOUT_MS / 1000, check_same_thread=False,
                               isolation_level=None)
        db = Database(conn)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA query_only = ON")
        applied = {m.name for m in migrations.applied(db)}
        pending = [m.name for m in migrations.pending(db)]
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot read the database: {explain(exc, path)}") from exc
    unknown = sorted(applied - {m.name for m in migrations._migrations})
    if unknown:
        conn.close()
        raise StoreError(f"the database {path} was written by a newer SubmitWatch (its schema "
                         f"has {', '.join(unknown)}): use that version to read it")
    if pending:
        conn.close()
        if not applied:
            raise StoreError(f"{path} holds no SubmitWatch schema: is it the database of this "
                             "config? `submitwatch run` creates the schema in a new file")
        raise StoreError(f"the database {path} has an older schema ({len(pending)} upgrade(s) "
                         f"not applied: {', '.join(pending)}); `submitwatch run` (or `poll-once`)"
                         " upgrades it, then ask again")
    return db


def backup(path: str | Path, target: str | Path) -> dict[str, int]:
    """A consistent copy of the live database (SQLite's online backup API), safe while `run`
    writes to it. Written to a new private file beside the target (a random name, created with
    O_EXCL and O_NOFOLLOW: nothing planted there is followed) and linked to the target's name,
    which fails if anything, a symlink included, has that name by then."""
    target = Path(target)
    if target.exists() or target.is_symlink():
        raise StoreError(f"{target} already exists; give a new file name (backups are never "
                         "overwritten)")
    if not Path(path).exists():
        raise StoreError(f"there is no database at {path} to back up (check store.path)")
    try:
        handle, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial",
                                        dir=target.parent if str(target.parent) else ".")
        os.close(handle)
    except OSError as exc:
        raise StoreError(f"cannot write the backup {target}: {exc.strerror}") from exc
    partial = Path(name)
    try:
        source = sqlite3.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True,
                                 timeout=BUSY_TIMEOUT_MS / 1000)
        copy = sqlite3.connect(str(partial))
        try:
            source.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
            if copy.execute("PRAGMA integrity_check").fetchone()[0] != "ok":
                raise StoreError(f"the copy in {partial} failed its integrity check")
            counts = {table: copy.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
                      for table in ("events", "incidents", "audit")}
        finally:
            copy.close()
            source.close()
        _publish(partial, target)
    except sqlite3.Error as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"backup failed: {explain(exc, path)}") from exc
    except FileExistsError:
        partial.unlink(missing_ok=True)
        raise StoreError(f"{target} appeared while the backup was written; the copy was "
                         "removed, nothing was overwritten") from None
    except OSError as exc:
        partial.unlink(missing_ok=True)
        raise StoreError(f"cannot write the backup {target}: {exc.strerror}") from exc
    return counts


def _publish(partial: Path, target: Path) -> None:
    """Give the finished copy its name without ever replacing a file (or symlink) there."""
    try:
        os.link(partial, target, follow_symlinks=False)
    except FileExistsError:
        raise
    except OSError:  # a file system without hard links: check, then rename (a small race)
        if target.exists() or target.is_symlink():
            raise FileExistsError(str(target)) from None
        os.rename(partial, target)
        return
    partial.unlink()


#: Pause between two of prune's transactions. The in-process writer lock is not fair: a batch
#: that starts again at once takes it back before a waiting poll thread wakes, which then
#: waited through several batches (over 1 s, benchmark row 9). SQLite's busy wait in another
#: process (a cron poll-once) retries at most every 100 ms, so it may still wait longer.
PRUNE_PAUSE = 0.05


def prune(db: Database, cutoff: datetime, batch: int = 5000,
          pause: float = PRUNE_PAUSE) -> dict[str, int]:
    """Delete what is older than the retention cutoff, in small transactions with a pause
    between them, so that polls and deliveries write in between.

    Kept: open incidents and all their events (however old), and anything still to be sent.
    Gone: resolved incidents that ended before the cutoff with their events and messages,
    events without an incident, sent outbox rows, problems and audit rows older than it.
    """
    stamp = iso(cutoff)
    # `+status`: the unary plus keeps SQLite from choosing incidents(status, last_seen) for
    # the equality, which read every resolved incident (0.1 s per batch with 200,000), over
    # incidents(resolved_at, ...) (m012), which reads only those resolved before the cutoff.
    old_incidents = "SELECT id FROM incidents WHERE +status = 'resolved' AND resolved_at < ?"
    steps: dict[str, tuple[str, list[Any]]] = {
        "events": ("DELETE FROM events WHERE id IN (SELECT id FROM events WHERE time < ? AND "
                   f"(incident_id IS NULL OR incident_id IN ({old_incidents})) LIMIT ?)",
                   [stamp, stamp, batch]),
        # The newest row always stays: SQLite gives a new row the highest id + 1, so deleting
        # it would hand its id out again, and Slack messages carry outbox ids (the crash
        # look-up and the duplicate check match on them).
        "outbox": ("DELETE FROM outbox WHERE id IN (SELECT id FROM outbox WHERE state IN "
                   "('sent', 'superseded', 'dead') AND (created_at < ? OR incident_id IN "
                   f"({old_incidents})) AND id < (SELECT max(id) FROM outbox) LIMIT ?)",
                   [stamp, stamp, batch]),
        "incidents": ("DELETE FROM incidents WHERE id IN (SELECT id FROM incidents i WHERE "
                      "+status = 'resolved' AND resolved_at < ? AND NOT EXISTS (SELECT 1 FROM "
                      "events e WHERE e.incident_id = i.id) AND NOT EXISTS (SELECT 1 FROM "
                      "outbox o WHERE o.incident_id = i.id) AND id < (SELECT max(id) FROM "
                      "incidents) LIMIT ?)", [stamp, batch]),   # the newest stays, as above
        # The last directory check of each incident gone (bot.engine.fixloop).
        "directory_checks": ("DELETE FROM directory_checks WHERE incident_id IN (SELECT "
                             "c.incident_id FROM directory_checks c LEFT JOIN incidents i ON "
                             "i.id = c.incident_id WHERE i.id IS NULL LIMIT ?)", [batch]),
        # Devices and look-ups of incidents gone (bot.engine.devices).
        "devices": ("DELETE FROM devices WHERE rowid IN (SELECT d.rowid FROM devices d LEFT "
                    "JOIN incidents i ON i.id = d.incident_id WHERE i.id IS NULL LIMIT ?)",
                    [batch]),
        "device_checks": ("DELETE FROM device_checks WHERE incident_id IN (SELECT "
                          "c.incident_id FROM device_checks c LEFT JOIN incidents i ON "
                          "i.id = c.incident_id WHERE i.id IS NULL LIMIT ?)", [batch]),
        "problems": ("DELETE FROM problems WHERE id IN (SELECT id FROM problems WHERE at < ? "
                     "LIMIT ?)", [stamp, batch]),
        "audit": ("DELETE FROM audit WHERE id IN (SELECT id FROM audit WHERE at < ? LIMIT ?)",
                  [stamp, batch]),
        "snoozes": ("DELETE FROM snoozes WHERE id IN (SELECT id FROM snoozes WHERE ended_at < ? "
                    "LIMIT ?)", [stamp, batch]),
        # Hourly counts (m015; per origin, m016) older than the cutoff: `summary` counts within
        # the retention.
        "event_hours": ("DELETE FROM event_hours WHERE (hour, origin, connector) IN (SELECT "
                        "hour, origin, connector FROM event_hours WHERE hour < ? LIMIT ?)",
                        [stamp[:13], batch]),
    }
    deleted = {}
    for table, (sql, params) in steps.items():
        deleted[table] = 0
        while True:
            with write_transaction(db):
                count = db.execute(sql, params).rowcount
            deleted[table] += count
            if count < batch:
                break
            time.sleep(pause)
    return deleted


#: Writers of this process queue on a lock before asking SQLite: SQLite's own busy wait polls
#: with sleeps of up to 100 ms, which left 32 poll threads mostly asleep (docs/benchmarks.md).
#: Other processes (a cron poll-once) still meet SQLite's busy timeout.
_WRITERS = threading.Lock()


@contextmanager
def write_transaction(db: Database) -> Iterator[Database]:
    """All-or-nothing writes. sqlite-utils calls inside nest as savepoints."""
    if not _WRITERS.acquire(timeout=BUSY_TIMEOUT_MS / 1000):
        raise StoreError(explain(sqlite3.OperationalError("database is locked"), _path_of(db)))
    try:
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise store_error(exc, _path_of(db)) from exc
        try:
            yield db
        except BaseException as exc:
            db.conn.rollback()
            if isinstance(exc, sqlite3.OperationalError):
                raise store_error(exc, _path_of(db)) from exc
            raise
        else:
            try:
                db.execute("COMMIT")
            except sqlite3.OperationalError as exc:   # a full disk often shows only here
                if db.conn.in_transaction:
                    db.conn.rollback()
                raise store_error(exc, _path_of(db)) from exc
    finally:
        _WRITERS.release()


def explain(exc: sqlite3.Error, path: str | Path) -> str:
    """An SQLite error in words a person can act on."""
    text = str(exc)
    if "locked" in text or "busy" in text:
        return (f"the database {path} stayed locked by another program for more than "
                f"{BUSY_TIMEOUT_MS // 1000} s (a second `submitwatch run`, or a tool holding a "
                "write transaction open?); nothing was lost, the step runs again on schedule")
    if "readonly" in text or "read-only" in text:
        return (f"the database {path} (or its folder, which holds the -wal and -shm files) is "
                "read-only for this user: give the user running SubmitWatch write access")
    if "disk is full" in text or "database or disk is full" in text:
        return (f"the disk holding the database {path} is full: SubmitWatch stores nothing "
                "until there is space, and then goes on by itself; nothing is lost meanwhile "
                "(the events wait on the servers, the cursors have not moved)")
    if "malformed" in text or "not a database" in text:
        return (f"{path} is damaged or not a SubmitWatch database ({text}); restore the last "
                "`submitwatch backup`")
    return f"database {path}: {text}"


def _path_of(db: Database) -> str:
    row = db.execute("PRAGMA database_list").fetchone()
    return row[2] if row else "?"


def iso(moment: datetime) -> str:
    """Fixed-width UTC text, so stored times sort and compare as strings."""
    return moment.astimezone(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def from_iso(text: str | None) -> datetime | None:
    if not text:
        return None
    return datetime.fromisoformat(text)  # reads the trailing Z as UTC (Python 3.11+)


def required_time(text: str | None, what: str) -> datetime:
    """from_iso for a time the schema requires (NOT NULL, or an aggregate over such times):
    a missing one means a damaged row, said so here rather than as a None met much later."""
    moment = from_iso(text)
    if moment is None:
        raise StoreError(f"the database has no {what} where one is required (a damaged row?); "
                         "restore the last `submitwatch backup`")
    return moment


# --- servers ------------------------------------------------------------------------------------

def server_state(db: Database, server: str) -> ServerState:
    rows = list(db.query("SELECT * FROM server_state WHERE server = ?", [server]))
    return _server_state(rows[0]) if rows else ServerState(server)


def all_server_states(db: Database) -> list[ServerState]:
    return [_server_state(r) for r in db.query("SELECT * FROM server_state ORDER BY server")]


def save_poll_success(db: Database, state: ServerState, *, generation: int, cursor: int | None,
                      oldest_record: int | None, newest_record: int | None, stored: int,
                      now: datetime, log: str = "Application") -> None:
    # Plain SQL: this runs after every batch of every poll, and sqlite-utils' upsert reads
    # the table's schema each time.
    db.execute(
        "INSERT INTO server_state (server, generation, cursor, oldest_record, newest_record, "
        "last_poll_at, last_success_at, consecutive_failures, events_stored, first_poll_at, "
        "log) VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, ?, ?) ON CONFLICT (server) DO UPDATE SET "
        "generation = excluded.generation, cursor = excluded.cursor, "
        "oldest_record = excluded.oldest_record, newest_record = excluded.newest_record, "
        "last_poll_at = excluded.last_poll_at, last_success_at = excluded.last_success_at, "
        "consecutive_failures = 0, events_stored = server_state.events_stored + ?, "
        "log = excluded.log",
        [state.server, generation, cursor, oldest_record, newest_record, iso(now), iso(now),
         stored, iso(now), log, stored])


def set_clock_skew(db: Database, server: str, seconds: float, now: datetime) -> None:
    db.execute("UPDATE server_state SET clock_skew = ?, clock_skew_at = ? WHERE server = ?",
               [seconds, iso(now), server])


def save_poll_failure(db: Database, server: str, error: str, now: datetime) -> None:
    state = server_state(db, server)
    db.table("server_state").upsert({
        "server": server, "generation": state.generation, "last_poll_at": iso(now),
        "last_error": error, "last_error_at": iso(now),
        "consecutive_failures": state.consecutive_failures + 1,
        "first_poll_at": iso(state.first_poll_at or now),
    }, pk="server")


def _server_state(row: dict[str, Any]) -> ServerState:
    return ServerState(
        server=row["server"], generation=row["generation"], cursor=row["cursor"],
        oldest_record=row["oldest_record"], last_poll_at=from_iso(row["last_poll_at"]),
        last_success_at=from_iso(row["last_success_at"]), last_error=row["last_error"],
        last_error_at=from_iso(row["last_error_at"]),
        consecutive_failures=row["consecutive_failures"], events_stored=row["events_stored"],
        down_since=from_iso(row["down_since"]), first_poll_at=from_iso(row.get("first_poll_at")),
        clock_skew=row.get("clock_skew"), clock_skew_at=from_iso(row.get("clock_skew_at")),
        log=row.get("log"))


# --- events and problems ------------------------------------------------------------------------

def new_events(db: Database, events: list[Event], generation: int) -> list[Event]:
    """The events not stored yet (a record repeated within the batch counts once).

    An event is known by its endpoint (`server`, whose cursor read it, in `generation` of that
    log), its origin and its record id: record ids count within each origin's log (m016), so
    two origins' record 7 read through one collector are two events. A batch is one endpoint's
    in production; tests feed several at once, and each is looked up on its own.
    Call inside write_transaction, with insert_events after: the look-up and the insert must
    see the same rows.
    """
    by_log: dict[tuple[str, str], list[int]] = {}
    for e in events:
        by_log.setdefault((e.server, e.origin), []).append(e.record_id)
    known: set[tuple[str, str, int]] = set()
    for (server, origin), ids in by_log.items():   # one origin for a server's own log
        known.update((server, origin, r[0]) for r in db.execute(
            "SELECT record_id FROM events WHERE server = ? AND generation = ? AND origin = ? "
            "AND record_id BETWEEN ? AND ?", [server, generation, origin, min(ids), max(ids)]))
    fresh: dict[tuple[str, str, int], Event] = {}
    for e in events:
        key = (e.server, e.origin, e.record_id)
        if key not in known:
            fresh.setdefault(key, e)
    return list(fresh.values())


def insert_events(db: Database, linked: Iterable[tuple[Event, int | None]], generation: int,
                  now: datetime) -> None:
    """Insert events already linked to their incident: one executemany for a whole batch, and
    their hourly counts per origin (m015, m016: what `summary` sums)."""
    stamp = iso(now)
    rows = [(e.server, e.origin, generation, e.record_id, e.provider, e.event_id, iso(e.time),
             e.account, e.incident_key, e.connector, e.computer, stamp, incident_id)
            for e, incident_id in linked]
    db.conn.executemany(
        "INSERT INTO events (server, origin, generation, record_id, provider, event_id, time, "
        "account, account_key, connector, computer, stored_at, incident_id) "
        "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    hours: dict[tuple[str, str, str], int] = {}
    for row in rows:
        key = (row[6][:13], row[1], row[9] or "")
        hours[key] = hours.get(key, 0) + 1
    db.conn.executemany(
        "INSERT INTO event_hours (hour, origin, connector, n) VALUES (?, ?, ?, ?) "
        "ON CONFLICT (hour, origin, connector) DO UPDATE SET n = n + excluded.n",
        [(*key, n) for key, n in hours.items()])


def record_problems(db: Database, problems: Iterable[Problem], now: datetime) -> None:
    problems = list(problems)
    if not problems:
        return
    db.table("problems").insert_all(({"server": p.server, "at": iso(now), "kind": p.kind,
                                      "detail": p.detail, "excerpt": p.excerpt}
                                     for p in problems), pk="id")


# --- incidents ----------------------------------------------------------------------------------

def open_incidents(db: Database, keys: Iterable[str] | None = None) -> dict[str, Incident]:
    if keys is None:
        rows = db.query("SELECT * FROM incidents WHERE status = 'open'")
    else:
        keys = list(set(keys))
        marks = ",".join("?" * len(keys))
        rows = db.query(f"SELECT * FROM incidents WHERE status = 'open' AND key IN ({marks})",
                        keys)
    return {row["key"]: _incident(row) for row in rows}


def get_incident(db: Database, incident_id: int) -> Incident | None:
    rows = list(db.query("SELECT * FROM incidents WHERE id = ?", [incident_id]))
    return _incident(rows[0]) if rows else None


def save_incident(db: Database, incident: Incident) -> Incident:
    """Insert a new incident or update an existing one; returns it with its id."""
    row = {
        "key": incident.key, "account": incident.account, "status": incident.status,
        "channel": incident.channel, "message_ts": incident.message_ts,
        "first_seen": iso(incident.first_seen), "last_seen": iso(incident.last_seen),
        "event_count": incident.event_count,
        "servers": json.dumps([list(pair) for pair in incident.servers]),
        "connectors": json.dumps(list(incident.connectors)),
        "event_ids": json.dumps(list(incident.event_ids)),
        "sightings": json.dumps([[s.event_id, s.server, s.connector] for s in incident.sightings]),
        "last_stored_at": iso(incident.last_stored_at) if incident.last_stored_at else None,
        "opened_at": iso(incident.opened_at),
        "resolved_at": iso(incident.resolved_at) if incident.resolved_at else None,
        "last_message_at": iso(incident.last_message_at) if incident.last_message_at else None,
    }
    if incident.id is None:
        # The channel as configured when it opened: what a storm's threshold counts in.
        incident_id = db.table("incidents").insert({**row, "opened_in": incident.channel}).last_pk
        return replace(incident, id=incident_id)
    # message_ts and last_message_at belong to delivery, the ack columns to store.chat: never
    # overwrite them from a stale copy. (Plain SQL: sqlite-utils' update re-reads the table's
    # schema on every call, which was most of the ingest's time.)
    del row["message_ts"], row["last_message_at"]
    db.execute(f"UPDATE incidents SET {', '.join(f'{k} = ?' for k in row)} WHERE id = ?",
               [*row.values(), incident.id])
    return incident


def set_reminded(db: Database, incident_id: int, now: datetime) -> None:
    """A reminder for the incident was queued (not part of save_incident: a stale copy of the
    incident must never turn it back)."""
    db.execute("UPDATE incidents SET last_reminded_at = ? WHERE id = ?", [iso(now), incident_id])


def set_message(db: Database, incident_id: int, *, ts: str | None, now: datetime,
                channel: str | None = None) -> None:
    """Record a sent alert: its ts (None: an update) and the channel ID Slack answered with,
    which every later update, reply and look-up uses whatever the configuration says."""
    if ts is None:
        db.execute("UPDATE incidents SET last_message_at = ? WHERE id = ?", [iso(now), incident_id])
    else:
        db.execute("UPDATE incidents SET message_ts = ?, last_message_at = ?, "
                   "channel = coalesce(?, channel) WHERE id = ?",
                   [ts, iso(now), channel, incident_id])


def _incident(row: dict[str, Any]) -> Incident:
    return Incident(
        id=row["id"], key=row["key"], account=row["account"], status=row["status"],
        channel=row["channel"],
        first_seen=required_time(row["first_seen"], "an incident's first_seen"),
        last_seen=required_time(row["last_seen"], "an incident's last_seen"),
        event_count=row["event_count"],
        servers=tuple(tuple(pair) for pair in json.loads(row["servers"])),
        connectors=tuple(json.loads(row["connectors"])),
        event_ids=tuple(json.loads(row["event_ids"])),
        opened_at=required_time(row["opened_at"], "an incident's opened_at"),
        message_ts=row["message_ts"], resolved_at=from_iso(row["resolved_at"]),
        last_message_at=from_iso(row["last_message_at"]), acked_by=row.get("acked_by"),
        acked_at=from_iso(row.get("acked_at")), ack_note=row.get("ack_note"),
        sightings=tuple(Sighting(*triple) for triple in json.loads(row.get("sightings") or "[]")),
        last_stored_at=from_iso(row.get("last_stored_at")),
        last_reminded_at=from_iso(row.get("last_reminded_at")), digest_id=row.get("digest_id"),
        fix_state=row.get("fix_state"), fixed_by=row.get("fixed_by"),
        fixed_at=from_iso(row.get("fixed_at")), fix_note=row.get("fix_note"),
        fix_seen_at=from_iso(row.get("fix_seen_at")),
        fix_failed_at=from_iso(row.get("fix_failed_at")))


incident_from_row = _incident


# --- outbox -------------------------------------------------------------------------------------

@dataclass(frozen=True, kw_only=True)
class _OutboxBase:
    """What every outbox row has, whatever it is about."""

    id: int
    kind: str
    detail: dict
    attempts: int
    not_before: datetime
    state: str = "pending"               # or "sending": claimed by a worker
    claimed_by: str | None = None        # "host:pid:start" of the worker that claimed it
    claimed_at: datetime | None = None
    failed_since: datetime | None = None  # first error a person must fix
    error_code: str | None = None         # of the last failed attempt


# incident_id and server are on every kind of row (None where a row has none), so code that
# handles any row can still read them; isinstance tells which one is set.

@dataclass(frozen=True, kw_only=True)
class IncidentRow(_OutboxBase):
    """A row about an incident: "post", "update", "reply", or a "dedupe" check after one."""

    incident_id: int
    server: None = None


@dataclass(frozen=True, kw_only=True)
class ServerRow(_OutboxBase):
    """A row about a server: "server_down", "server_up", or a "dedupe" check after one."""

    server: str
    incident_id: None = None


@dataclass(frozen=True, kw_only=True)
class BotRow(_OutboxBase):
    """A row about SubmitWatch itself: "bot_late", or a "dedupe" check after one."""

    incident_id: None = None
    server: None = None


@dataclass(frozen=True, kw_only=True)
class DigestRow(_OutboxBase):
    """A row about a storm digest: its "post", "update" or a "reply" in its thread, or a
    "dedupe" check after one."""

    digest_id: int
    incident_id: None = None
    server: None = None


OutboxRow = IncidentRow | ServerRow | BotRow | DigestRow


#: A claim older than this belongs to a worker that died mid-send; another may take the row.
CLAIM_TIMEOUT = timedelta(minutes=5)


def enqueue(db: Database, incident_id: int | None, kind: str, now: datetime, *,
            not_before: datetime | None = None, detail: dict | None = None,
            server: str | None = None, digest_id: int | None = None) -> None:
    db.execute("INSERT INTO outbox (incident_id, server, digest_id, kind, detail, state, "
               "created_at, not_before, attempts) VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, 0)",
               [incident_id, server, digest_id, kind, json.dumps(detail or {}), iso(now),
                iso(not_before or now)])


def enqueue_messages(db: Database, instructions: Iterable[Instruction], now: datetime) -> None:
    """Write what bot.engine.outbox decided (inside the caller's transaction)."""
    for item in instructions:
        if isinstance(item, Hurry):
            hurry_update(db, item.incident_id, now)
        elif isinstance(item, HurryDigest):
            db.execute("UPDATE outbox SET not_before = ? WHERE digest_id = ? AND kind = 'update' "
                       "AND state = 'pending' AND not_before > ?",
                       [iso(now), item.digest_id, iso(now)])
        elif isinstance(item, DigestMessage):
            enqueue(db, None, item.kind, now, not_before=item.not_before, detail=item.detail,
                    digest_id=item.digest_id)
        else:
            enqueue(db, item.incident_id, item.kind, now, not_before=item.not_before,
                    detail=item.detail)


def pending_kinds_of(db: Database, incident_ids: Iterable[int]) -> dict[int, set[str]]:
    """pending_kinds for many incidents in one query, plus UNCLAIMED_POST where it applies."""
    ids = list(incident_ids)
    found: dict[int, set[str]] = {i: set() for i in ids}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        for incident_id, kind, state in db.execute(
                "SELECT DISTINCT incident_id, kind, state FROM outbox WHERE state IN "
                f"('pending', 'sending') AND incident_id IN ({','.join('?' * len(chunk))})",
                chunk):
            found[incident_id].add(kind)
            if kind == "post" and state == "pending":
                found[incident_id].add(UNCLAIMED_POST)
    return found


def pending_kinds(db: Database, incident_id: int) -> set[str]:
    """Kinds of message still to be sent for an incident (waiting, or being sent right now)."""
    return {r["kind"] for r in db.query(
        "SELECT DISTINCT kind FROM outbox WHERE incident_id = ? AND state IN ('pending', "
        "'sending')", [incident_id])}


def pending_messages(db: Database, now: datetime, limit: int = 500) -> list[OutboxRow]:
    """Rows still to send, in the order they were written, including rows being sent.

    Delivery decides which are due, and whether a row being sent belongs to a worker that died
    (then it takes the row over).
    """
    rows = db.query("SELECT * FROM outbox WHERE state IN ('pending', 'sending') ORDER BY id "
                    "LIMIT ?", [limit])
    return [_outbox_row(r) for r in rows]


def _outbox_row(r: dict[str, Any]) -> OutboxRow:
    """The row as the type of what it is about: its incident, else its server, else the bot.
    (A dedupe row names the subject of the message it checks.)"""
    common: dict[str, Any] = dict(
        id=r["id"], kind=r["kind"], detail=json.loads(r["detail"]), attempts=r["attempts"],
        not_before=required_time(r["not_before"], "an outbox row's not_before"),
        state=r["state"], claimed_by=r["claimed_by"], claimed_at=from_iso(r["claimed_at"]),
        failed_since=from_iso(r["failed_since"]), error_code=r["error_code"])
    if r["incident_id"] is not None:
        return IncidentRow(incident_id=r["incident_id"], **common)
    if r.get("digest_id") is not None:
        return DigestRow(digest_id=r["digest_id"], **common)
    if r["server"] is not None:
        return ServerRow(server=r["server"], **common)
    return BotRow(**common)


def claim(db: Database, row: OutboxRow, now: datetime, owner: str) -> bool:
    """Compare-and-set: True only for the one worker that gets to send this row.

    A pending row is claimed; a row being sent is taken over only if it is still claimed
    exactly as `row` says (the caller decided that claim is dead).
    """
    if row.state == "pending":
        cursor = db.execute("UPDATE outbox SET state = 'sending', claimed_at = ?, claimed_by = ? "
                            "WHERE id = ? AND state = 'pending'", [iso(now), owner, row.id])
    else:
        cursor = db.execute(
            "UPDATE outbox SET claimed_at = ?, claimed_by = ? WHERE id = ? AND state = 'sending' "
            "AND claimed_by IS ? AND claimed_at IS ?",
            [iso(now), owner, row.id, row.claimed_by,
             iso(row.claimed_at) if row.claimed_at else None])
    return cursor.rowcount == 1


def mark_sent(db: Database, row_id: int, now: datetime) -> None:
    db.execute("UPDATE outbox SET state = 'sent', sent_at = ?, attempts = attempts + 1, "
               "last_error = NULL WHERE id = ?", [iso(now), row_id])


def mark_retry(db: Database, row_id: int, error: str, retry_at: datetime, *,
               code: str | None = None, failed_since: datetime | None = None) -> None:
    """Back to pending until retry_at. failed_since: when an error a person must fix began."""
    db.execute("UPDATE outbox SET state = 'pending', attempts = attempts + 1, last_error = ?, "
               "not_before = ?, error_code = ?, failed_since = ? WHERE id = ?",
               [error, iso(retry_at), code, iso(failed_since) if failed_since else None, row_id])


def mark_failed(db: Database, row_id: int, error: str) -> None:
    """Given up: an error a person must fix has lasted too long. requeue_failed revives it."""
    db.execute("UPDATE outbox SET state = 'failed', attempts = attempts + 1, last_error = ? "
               "WHERE id = ?", [error, row_id])


#: Errors about the token or the app, not one channel: any later success means they are fixed.
APP_WIDE_ERRORS = ("invalid_auth", "not_authed", "token_revoked", "token_expired",
                   "account_inactive", "missing_scope")


def has_given_up(db: Database) -> bool:
    return db.execute("SELECT 1 FROM outbox WHERE state = 'failed' LIMIT 1").fetchone() is not None


def requeue_failed(db: Database, channel: str, now: datetime) -> int:
    """A message to `channel` got through: revive given-up rows that this success shows fixed
    (app-wide errors, rows about servers, and rows for incidents in the same channel)."""
    marks = ",".join("?" * len(APP_WIDE_ERRORS))
    cursor = db.execute(
        "UPDATE outbox SET state = 'pending', not_before = ?, failed_since = NULL "
        f"WHERE state = 'failed' AND (error_code IN ({marks}) OR incident_id IS NULL OR "
        "incident_id IN (SELECT id FROM incidents WHERE channel = ?))",
        [iso(now), *APP_WIDE_ERRORS, channel])
    return cursor.rowcount


def delivery_problems(db: Database, now: datetime | None = None) -> list[dict[str, Any]]:
    """Messages held back by an error a person must fix, grouped by error, oldest first; and
    messages Slack refused as they were, given up ("dead", `refused` > 0) within DEAD_SHOWN."""
    shown_from = iso((now or datetime.now(UTC)) - DEAD_SHOWN)
    return [{**r, "since": from_iso(r["since"])} for r in db.query(
        "SELECT last_error AS error, error_code AS code, count(*) AS messages, "
        "min(failed_since) AS since, sum(state = 'failed') AS given_up, "
        "sum(state = 'dead') AS refused FROM outbox "
        "WHERE (state IN ('pending', 'failed') AND failed_since IS NOT NULL) "
        "OR (state = 'dead' AND failed_since >= ?) "
        "GROUP BY state = 'dead', error_code, last_error ORDER BY since", [shown_from])]


#: How long `status`, Home and `check` show messages Slack refused and that were given up.
DEAD_SHOWN = timedelta(days=7)


def mark_dead(db: Database, row_id: int, error: str, code: str, now: datetime) -> None:
    """Given up at once: Slack refused the message as it is (too long, invalid blocks), and
    would refuse it again unchanged. Never revived (requeue_failed takes 'failed' only)."""
    db.execute("UPDATE outbox SET state = 'dead', attempts = attempts + 1, last_error = ?, "
               "error_code = ?, failed_since = ?, claimed_by = NULL, claimed_at = NULL "
               "WHERE id = ?", [error, code, iso(now), row_id])


def dead_rows(db: Database, *, incident_id: int | None = None,
              digest_id: int | None = None, kind: str | None = None) -> int:
    """How many rows of an incident's or a digest's messages were given up as refused."""
    column, value = ("incident_id", incident_id) if incident_id is not None else \
        ("digest_id", digest_id)
    sql = f"SELECT count(*) FROM outbox WHERE state = 'dead' AND {column} = ?"
    params: list[Any] = [value]
    if kind:
        sql += " AND kind = ?"
        params.append(kind)
    return db.execute(sql, params).fetchone()[0]


def bury_waiting(db: Database, error: str, code: str, now: datetime, *,
                 incident_id: int | None = None, digest_id: int | None = None) -> int:
    """The post of an incident or digest was given up: its waiting updates and replies could
    never be sent (there is no message to update or thread under); give them up too."""
    column, value = ("incident_id", incident_id) if incident_id is not None else \
        ("digest_id", digest_id)
    return db.execute(
        f"UPDATE outbox SET state = 'dead', last_error = ?, error_code = ?, failed_since = ? "
        f"WHERE {column} = ? AND state = 'pending' AND kind IN ('update', 'reply')",
        [error, code, iso(now), value]).rowcount


def release_claim(db: Database, row_id: int, owner: str) -> bool:
    """This process claimed the row but could not record what became of it (the write failed:
    a full disk): leave it 'sending' (so whoever sends it looks in Slack first) but with a
    claim any worker may take over at once, instead of after CLAIM_TIMEOUT."""
    return db.execute("UPDATE outbox SET claimed_at = NULL WHERE id = ? AND state = 'sending' "
                      "AND claimed_by = ?", [row_id, owner]).rowcount == 1


def set_detail(db: Database, row_id: int, detail: dict) -> None:
    """Replace a row's detail (a digest's detail reply records which lines it details)."""
    db.execute("UPDATE outbox SET detail = ? WHERE id = ?", [json.dumps(detail), row_id])


def mark_superseded(db: Database, row_id: int) -> None:
    db.execute("UPDATE outbox SET state = 'superseded' WHERE id = ?", [row_id])


def forget_message(db: Database, incident_id: int) -> None:
    """The message was deleted in Slack: the next post starts a new one."""
    db.execute("UPDATE incidents SET message_ts = NULL WHERE id = ?", [incident_id])


def outbox_depth(db: Database) -> int:
    """Messages waiting to be sent (a later check for a duplicate is not one)."""
    return db.execute("SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending') "
                      "AND kind != 'dedupe'").fetchone()[0]


def hurry_update(db: Database, incident_id: int, now: datetime) -> None:
    """A person acted on the incident: send its waiting update now, not after coalescing."""
    db.execute("UPDATE outbox SET not_before = ? WHERE incident_id = ? AND kind = 'update' AND "
               "state = 'pending' AND not_before > ?", [iso(now), incident_id, iso(now)])


# --- server health alerts -----------------------------------------------------------------------

def mark_server_down(db: Database, server: str, now: datetime) -> bool:
    """Record that the "not being watched" alert is due; False if it was already raised."""
    cursor = db.execute("UPDATE server_state SET down_since = ? WHERE server = ? AND "
                        "down_since IS NULL", [iso(now), server])
    return cursor.rowcount == 1


def mark_server_up(db: Database, server: str) -> datetime | None:
    """Clear the down mark; returns since when it was down (None: it was not)."""
    rows = list(db.query("SELECT down_since FROM server_state WHERE server = ?", [server]))
    if not rows or rows[0]["down_since"] is None:
        return None
    db.execute("UPDATE server_state SET down_since = NULL WHERE server = ?", [server])
    return from_iso(rows[0]["down_since"])


def server_alert_ts(db: Database, server: str) -> str | None:
    return server_alert(db, server)[0]


def server_alert(db: Database, server: str) -> tuple[str | None, str | None]:
    """(ts, channel ID) of the server's "not being watched" alert, while there is one."""
    rows = list(db.query("SELECT down_message_ts, down_channel FROM server_state "
                         "WHERE server = ?", [server]))
    return (rows[0]["down_message_ts"], rows[0]["down_channel"]) if rows else (None, None)


def set_server_alert(db: Database, server: str, ts: str | None,
                     channel: str | None = None) -> None:
    db.execute("UPDATE server_state SET down_message_ts = ?, down_channel = ? WHERE server = ?",
               [ts, channel, server])
