"""The SQLite store on real files: schema, invariants, transactions."""
import sqlite3
from datetime import UTC, datetime

import pytest

from bot.core.model import Event
from store import db as store
from store.db import StoreError, open_db, write_transaction

NOW = datetime(2026, 3, 8, 9, 0, tzinfo=UTC)


def event(record, server="EX01", account="CONTOSO\\a"):
    return Event(server=server, record_id=record, provider="MSExchangeTransport", event_id=1020,
                 time=NOW, account=account, connector=None, computer="EX01.contoso.local")


def test_wal_mode_and_migrations_are_applied_once(db_path):
    db = open_db(db_path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert {"events", "incidents", "outbox", "problems", "server_state"} <= set(db.table_names())
    db.conn.close()
    again = open_db(db_path)  # a second start changes nothing
    assert [r["name"] for r in again.query("SELECT name FROM _sqlite_migrations")] == [
        "m001_initial", "m002_claims_and_log_bounds", "m003_chat_ops", "m004_lookup_indexes", "m005_claim_owner",
        "m006_health_messages_and_dead_letters", "m007_sightings", "m008_server_alert_channel", "m009_last_stored_at",
        "m010_log_name", "m011_reminders", "m012_history_at_scale", "m013_storm_digests", "m014_fixed_loop", "m015_event_hours",
        "m016_event_origin", "m017_devices", "m018_origin_heartbeats"]


def test_events_are_unique_per_server_generation_and_record(db):
    def store_new(events, generation):
        fresh = store.new_events(db, events, generation)
        store.insert_events(db, [(e, None) for e in fresh], generation, NOW)
        return fresh
    with write_transaction(db):
        first = store_new([event(1), event(2), event(2)], 0)
    with write_transaction(db):
        second = store_new([event(2), event(3)], 0)
        other_server = store_new([event(2, server="EX02")], 0)
        after_clear = store_new([event(2)], 1)
    assert [e.record_id for e in first] == [1, 2]
    assert [e.record_id for e in second] == [3]
    assert len(other_server) == 1 and len(after_clear) == 1
    with pytest.raises(sqlite3.IntegrityError):
        db.execute("INSERT INTO events (server, origin, generation, record_id, provider, "
                   "event_id, time, account, account_key, stored_at) VALUES ('EX01', 'EX01', 0, "
                   "1, 'p', 1020, 't', 'a', 'a', 't')")


def test_a_failed_transaction_leaves_nothing_behind(db):
    with pytest.raises(RuntimeError):
        with write_transaction(db):
            store.insert_events(db, [(event(1), None)], 0, NOW)
            raise RuntimeError("crash between insert and cursor update")
    assert db.execute("SELECT count(*) FROM events").fetchone()[0] == 0


def test_only_one_open_incident_per_account(db):
    row = {"key": "a", "account": "a", "status": "open", "channel": "C", "first_seen": "t",
           "last_seen": "t", "event_count": 1, "servers": "[]", "connectors": "[]",
           "event_ids": "[]", "opened_at": "t"}
    db["incidents"].insert(row)
    db["incidents"].insert({**row, "status": "resolved"})
    with pytest.raises(sqlite3.IntegrityError):
        db["incidents"].insert(row)


def test_times_round_trip_as_sortable_text():
    text = store.iso(NOW)
    assert text == "2026-03-08T09:00:00.000000Z"
    assert store.from_iso(text) == NOW


def test_a_database_in_a_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(StoreError, match="the folder for the database .* does not exist"):
        open_db(tmp_path / "nope" / "sw.db")


def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("hello, this is not SQLite" * 100)
    with pytest.raises(StoreError, match="cannot open the database"):
        open_db(path)
