"""Database care: WAL and a busy timeout, clear errors for a locked or read-only file, a
consistent backup while the bot writes, and retention that keeps the file bounded."""
from __future__ import annotations

import os
import sqlite3
import threading
from datetime import UTC, datetime, timedelta

import pytest

from bot.core.model import Problem
from bot.engine.poller import poll_server_once
from bot.sources.winrm import WinRMSource
from store import db as store
from store.db import StoreError, backup, open_db, prune
from tests.helpers import ENV, run_cli, scanner, sweep, write_config


def test_wal_and_busy_timeout_are_on(db):
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("PRAGMA busy_timeout").fetchone()[0] == store.BUSY_TIMEOUT_MS


def test_a_database_locked_too_long_is_said_in_words(db_path, db, monkeypatch):
    monkeypatch.setattr(store, "BUSY_TIMEOUT_MS", 200)
    holder = sqlite3.connect(db_path)
    holder.execute("BEGIN IMMEDIATE")      # another program holds the write lock
    try:
        impatient = open_db(db_path)
        impatient.execute("PRAGMA busy_timeout = 200")
        with pytest.raises(StoreError, match="stayed locked by another program"):
            with store.write_transaction(impatient):
                pass
    finally:
        holder.rollback()


def test_a_poll_against_a_locked_database_fails_that_poll_only_and_says_why(
        logs, db_path, db, make_config, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    db.execute("PRAGMA busy_timeout = 100")
    holder = sqlite3.connect(db_path)
    holder.execute("BEGIN IMMEDIATE")
    try:
        result = poll_server_once(db, WinRMSource(config.servers[0], config.polling), config,
                                  clock)
    finally:
        holder.rollback()
    assert "stayed locked by another program" in result.error
    result = poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    assert result.error is None and result.stored == 1      # nothing was lost


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores file permissions")
def test_a_read_only_database_is_said_in_words(tmp_path):
    path = tmp_path / "ro.db"
    open_db(path).conn.close()
    path.chmod(0o444)
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(StoreError, match="read-only for this user"):
            with store.write_transaction(open_db(path)):
                pass
    finally:
        tmp_path.chmod(0o755)


def test_a_read_only_database_as_root_too(tmp_path):
    """Root ignores permissions; a read-only connection shows the same message path."""
    path = tmp_path / "ro.db"
    open_db(path).conn.close()
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, isolation_level=None)
    from sqlite_utils import Database
    with pytest.raises(StoreError, match="is read-only for this user"):
        with store.write_transaction(Database(conn)) as db:
            store.record_problems(db, [Problem("EX01", "test", "x")], datetime.now(UTC))


def test_a_damaged_file_is_said_in_words(tmp_path):
    path = tmp_path / "junk.db"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(StoreError, match="damaged or not a SubmitWatch database"):
        open_db(path)


def test_backup_while_writing_is_a_consistent_copy(logs, db_path, db, make_config, clock,
                                                   tmp_path):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 50)
    sweep(db, config, clock)
    stop = threading.Event()

    def keep_writing():
        writer = open_db(db_path)
        n = 0
        while not stop.is_set():
            with store.write_transaction(writer):
                writer.execute("INSERT INTO problems (server, at, kind, detail, excerpt) VALUES "
                               "('EX01', ?, 'test', 'busy', '')", [store.iso(clock())])
            n += 1
    thread = threading.Thread(target=keep_writing)
    thread.start()
    try:
        target = tmp_path / "copy.db"
        counts = backup(db_path, target)
    finally:
        stop.set()
        thread.join()
    assert counts["events"] == 50 and counts["incidents"] == 1
    copy = sqlite3.connect(target)
    assert copy.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert copy.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not (tmp_path / "copy.db.partial").exists()
    with pytest.raises(StoreError, match="already exists"):
        backup(db_path, target)


def test_backup_command(tmp_path, logs, winrm, slack):
    config = write_config(tmp_path, slack, winrm)
    open_db(tmp_path / "sw.db").conn.close()
    result = run_cli("backup", str(tmp_path / "b.db"), "--config", str(config), env=ENV)
    assert result.returncode == 0, result.stderr
    assert "backed up" in result.stdout and "0 events" in result.stdout
    again = run_cli("backup", str(tmp_path / "b.db"), "--config", str(config), env=ENV)
    assert again.returncode == 2 and "already exists" in again.stderr


def test_retention_deletes_old_resolved_incidents_and_keeps_open_ones(
        logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 3, account="CONTOSO\\old")
    sweep(db, config, clock)
    clock.advance(days=2)
    from bot.engine.poller import resolve_quiet_incidents
    resolve_quiet_incidents(db, config, clock)   # the old one resolves after its quiet day
    scanner(logs["EX01"], 2, account="CONTOSO\\current")
    sweep(db, config, clock)
    with store.write_transaction(db):
        db.execute("INSERT INTO audit (at, user_id, action, target, via, outcome) VALUES "
                   "(?, 'U1', 'ack', '#1', 'slash', 'done')", [store.iso(clock() - timedelta(
                       days=400))])

    # Everything before now goes: the old incident resolved at now, its events are older.
    deleted = prune(db, clock() + timedelta(seconds=1), batch=2)   # small batches: loops work
    assert deleted["events"] == 3 and deleted["incidents"] == 1 and deleted["audit"] == 1
    [kept] = store.open_incidents(db).values()
    assert kept.account == "CONTOSO\\current" and kept.event_count == 2
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 2
    assert prune(db, clock() + timedelta(seconds=1)) == dict.fromkeys(deleted, 0)


def test_retention_never_deletes_what_is_still_to_be_sent(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    with store.write_transaction(db):
        db.execute("UPDATE incidents SET status = 'resolved', resolved_at = ?",
                   [store.iso(clock() - timedelta(days=500))])
    prune(db, clock())
    assert store.outbox_depth(db) == 1 and db.execute(
        "SELECT count(*) FROM incidents").fetchone()[0] == 1


def test_retention_deletes_snoozes_that_ended_long_ago_and_keeps_the_rest(db, clock):
    from store import chat
    now = clock()
    old = chat.add_snooze(db, kind="account", target="a", account="A", until=now - timedelta(
        days=199), reason="old", user_id="U0ALICE", now=now - timedelta(days=200))
    chat.end_snooze(db, old.id, now - timedelta(days=199), None)
    recent = chat.add_snooze(db, kind="account", target="b", account="B",
                             until=now - timedelta(days=1), reason="recent", user_id="U0ALICE",
                             now=now - timedelta(days=2))
    chat.end_snooze(db, recent.id, now - timedelta(days=1), None)
    live = chat.add_snooze(db, kind="account", target="c", account="C",
                           until=now + timedelta(days=1), reason="live", user_id="U0ALICE", now=now)
    assert store.prune(db, now - timedelta(days=180))["snoozes"] == 1
    assert chat.get_snooze(db, old.id) is None
    assert chat.get_snooze(db, recent.id) and chat.get_snooze(db, live.id)
