"""Events keep two servers (m016): `server`, the endpoint polled, which owns the cursor, and
`origin`, the configured Exchange server that logged the event. For a server's own log they are
the same; a collector's log (one endpoint, many origins) reuses record ids across origins.
Real SQLite files, the store's own functions, the chat answers as a person reads them."""
from __future__ import annotations

import sqlite3
from datetime import timedelta

import pytest

from bot.core.model import Event
from handlers.commands import answer
from handlers.common import Request
from store import db as store
from store import queries
from store.db import open_db, write_transaction
from store.migrations import migrations
from tests.blocks import sections
from tests.helpers import NOW, SCANNER, Feed, lookup_config

T = NOW - timedelta(hours=2)


def event(record: int, origin: str, server: str = "WEC01", account: str = SCANNER,
          minute: int = 0, connector: str | None = None, host: str | None = None) -> Event:
    return Event(server=server, record_id=record, provider="MSExchangeTransport",
                 event_id=1018 if connector else 1020, time=T + timedelta(minutes=minute),
                 account=account, connector=connector,
                 computer=f"{host or origin}.contoso.local", origin=origin)


def store_new(db, events: list[Event], generation: int = 0) -> list[Event]:
    """As a poll stores a batch: the look-up and the insert in one transaction."""
    with write_transaction(db):
        fresh = store.new_events(db, events, generation)
        store.insert_events(db, [(e, None) for e in fresh], generation, NOW)
    return fresh


def stored(db) -> list[tuple]:
    return [tuple(r) for r in db.execute(
        "SELECT server, origin, generation, record_id FROM events ORDER BY id")]


# --- the migration --------------------------------------------------------------------------

OLD_EVENT = ("INSERT INTO events (server, generation, record_id, provider, event_id, time, "
             "account, account_key, connector, computer, incident_id, stored_at) "
             "VALUES (?, ?, ?, 'MSExchangeTransport', 1018, ?, ?, ?, ?, ?, ?, ?)")


def test_the_migration_fills_origin_from_server_and_keeps_every_row_and_count(db_path):
    db = open_db(db_path, migrate=False)
    migrations.apply(db, stop_before="m016_event_origin")
    assert "origin" not in db["events"].columns_dict
    db["incidents"].insert({"id": 1, "key": "k", "account": "K", "status": "open",
                            "channel": "C", "first_seen": "2026-03-08T08:00:00Z",
                            "last_seen": "2026-03-08T09:00:00Z", "event_count": 3,
                            "servers": '[["EX01", "EX01"]]', "connectors": "[]",
                            "event_ids": "[1018]", "opened_at": "2026-03-08T08:00:00Z"})
    rows = [("EX01", 0, 7, "2026-03-08T08:01:00.000000Z", "K", "k", "EX01\\Relay",
             "EX01.contoso.local", 1, "2026-03-08T08:02:00.000000Z"),
            ("EX02", 0, 7, "2026-03-08T08:05:00.000000Z", "K", "k", None,
             "EX02.contoso.local", 1, "2026-03-08T08:06:00.000000Z"),
            ("EX01", 1, 7, "2026-03-08T09:00:00.000000Z", "K", "k", None,
             "EX01.contoso.local", None, "2026-03-08T09:01:00.000000Z")]
    db.conn.executemany(OLD_EVENT, rows)
    db.execute("INSERT INTO event_hours VALUES ('2026-03-08T08', 'EX01', 'EX01\\Relay', 1), "
               "('2026-03-08T08', 'EX02', '', 1), ('2026-03-08T09', 'EX01', '', 1)")
    before = db.execute("SELECT * FROM events ORDER BY id").fetchall()

    migrations.apply(db)

    # Every row as it was, with its origin: the server it was read from.
    assert db.execute("SELECT id, server, generation, record_id, provider, event_id, time, "
                      "account, account_key, connector, computer, incident_id, stored_at "
                      "FROM events ORDER BY id").fetchall() == before
    assert [r[0] for r in db.execute("SELECT origin FROM events ORDER BY id")] == [
        "EX01", "EX02", "EX01"]
    assert db["events"].columns_dict["origin"] is str
    # The hourly counts were per server, which was each event's origin: they stand.
    assert db.execute("SELECT hour, origin, connector, n FROM event_hours ORDER BY 1, 2"
                      ).fetchall() == [("2026-03-08T08", "EX01", "EX01\\Relay", 1),
                                       ("2026-03-08T08", "EX02", "", 1),
                                       ("2026-03-08T09", "EX01", "", 1)]
    # As many indexes as before, the dedupe one unique per origin.
    indexes = {i.name: (i.columns, i.unique) for i in db["events"].indexes}
    assert indexes == {
        "idx_events_server_generation_origin_record_id":
            (["server", "generation", "origin", "record_id"], 1),
        "idx_events_account_key_time": (["account_key", "time"], 0),
        "idx_events_incident_id": (["incident_id"], 0),
        "idx_events_time": (["time"], 0),
        "idx_events_origin_time": (["origin", "time"], 0),
        "idx_events_origin_connector_time": (["origin", "connector", "time"], 0),
    }
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert db.execute("PRAGMA foreign_key_check").fetchall() == []
    # An event stored before the upgrade and read again after it is not stored twice...
    again = event(7, "EX01", server="EX01")
    assert store.new_events(db, [again], 0) == []
    assert store.new_events(db, [again], 2) == [again]   # ...a new generation is new
    # ...and the schema itself refuses a second copy, or an event without its origin.
    with pytest.raises(sqlite3.IntegrityError, match="UNIQUE"):
        db.conn.execute(OLD_EVENT.replace("(server,", "(origin, server,").replace(
            "VALUES (", "VALUES ('EX01', "), rows[0])
    with pytest.raises(sqlite3.IntegrityError, match="NOT NULL"):
        db.conn.execute(OLD_EVENT, ("EX01", 0, 8, *rows[0][3:]))
    db.conn.close()


def test_a_database_that_is_made_new_has_origin_and_opens_again_unchanged(db_path):
    db = open_db(db_path)
    assert "origin" in db["events"].columns_dict and "origin" in db["event_hours"].columns_dict
    db.conn.close()
    again = open_db(db_path)
    assert again.execute("SELECT count(*) FROM _sqlite_migrations WHERE name = "
                         "'m016_event_origin'").fetchone()[0] == 1
    again.conn.close()


# --- dedupe ---------------------------------------------------------------------------------

def test_two_origins_through_one_endpoint_with_the_same_record_id_are_two_events(db):
    fresh = store_new(db, [event(7, "EX01"), event(7, "EX02", minute=1)])
    assert [(e.origin, e.record_id) for e in fresh] == [("EX01", 7), ("EX02", 7)]
    assert stored(db) == [("WEC01", "EX01", 0, 7), ("WEC01", "EX02", 0, 7)]
    # The next batch: both record 7s are known, each for its own origin; EX02's 8 is new.
    fresh = store_new(db, [event(7, "EX02", minute=1), event(7, "EX01"), event(8, "EX02")])
    assert [(e.origin, e.record_id) for e in fresh] == [("EX02", 8)]
    assert stored(db)[-1] == ("WEC01", "EX02", 0, 8)
    # Counted per origin for `summary`, not as one endpoint.
    assert db.execute("SELECT origin, sum(n) FROM event_hours GROUP BY origin").fetchall() == [
        ("EX01", 1), ("EX02", 2)]
    # Another endpoint's record 7 of EX01 (a second collector, or EX01 polled directly) is
    # another read of the log, with its own cursor: kept apart as before.
    assert len(store_new(db, [event(7, "EX01", server="EX01")])) == 1


def test_a_record_repeated_for_one_origin_is_stored_once(db):
    # Within one batch (a collector forwarding an event twice)...
    fresh = store_new(db, [event(7, "EX01"), event(7, "EX01"), event(9, "EX01")])
    assert [(e.origin, e.record_id) for e in fresh] == [("EX01", 7), ("EX01", 9)]
    # ...and in a later batch (read again after a crash before the cursor moved).
    assert store_new(db, [event(9, "EX01"), event(7, "EX01")]) == []
    assert stored(db) == [("WEC01", "EX01", 0, 7), ("WEC01", "EX01", 0, 9)]
    # A server's own log, where origin is the server: exactly as before m016.
    direct = [Event(server="EX03", record_id=5, provider="MSExchangeTransport", event_id=1020,
                    time=T, account=SCANNER, connector=None, computer="EX03.contoso.local")]
    assert direct[0].origin == "EX03"
    assert len(store_new(db, direct + direct)) == 1 and store_new(db, direct) == []


def test_the_same_origin_and_record_through_two_endpoints_are_known_apart(db):
    # Each endpoint's cursor counts in its own log: EX01's record 1 read through WEC01 says
    # nothing about what WEC02 has read, so a batch holding both keeps both.
    both = [event(1, "EX01"), event(1, "EX01", server="WEC02")]
    assert [(e.server, e.origin) for e in store_new(db, both)] == [("WEC01", "EX01"),
                                                                    ("WEC02", "EX01")]
    assert store_new(db, both) == []


# --- what people read: history, show, fix, routes, summary -----------------------------------

def ask(db, config, text):
    return answer(Request(db=db, config=config, now=NOW, user_id="U0ALICE",
                          channel_id="C0ALERTS"), text)



@pytest.fixture
def collected(db):
    """One account failing on EX01 and EX02, both read through the collector WEC01 with
    colliding record ids; EX02's host is MBX02, not its configured name."""
    config = lookup_config()
    feed = Feed(db, config)
    feed.ingest([event(7, "EX01", connector="EX01\\Relay Scanners"),
                 event(7, "EX02", minute=1, host="MBX02"),
                 event(8, "EX02", minute=2, connector="MBX02\\Client Frontend MBX02",
                       host="MBX02"),
                 event(8, "EX09", account="CONTOSO\\elsewhere", minute=3)],
                T + timedelta(minutes=5))
    return config


def test_history_counts_a_server_by_the_events_it_logged_not_the_endpoint(db, collected):
    ex02 = sections(ask(db, collected, "history EX02"))
    assert ex02[0].startswith("*History* of server `EX02`, the last 7 days\n")
    assert ex02[0].endswith("*1* incident (*1* open) · *2* events in the window")
    assert "`CONTOSO\\svc-scanner`" in ex02[1] and "elsewhere" not in ex02[1]
    assert sections(ask(db, collected, "history ex01"))[0].endswith(
        "*1* incident (*1* open) · *1* event in the window")
    # An origin no longer configured still has its history, as a server.
    assert sections(ask(db, collected, "history EX09"))[0].startswith(
        "*History* of server `EX09`")
    # The endpoint logged nothing: it is not a server of any event (nor was it polled here).
    assert "WEC01" not in queries.known_servers(db)


def test_show_names_the_origin_of_each_group_and_the_incident_its_servers(db, collected):
    [number] = [r[0] for r in db.execute("SELECT id FROM incidents WHERE key = ?",
                                         [SCANNER.casefold()])]
    reply = ask(db, collected, f"show #{number}")
    fields = [f["text"] for f in reply.blocks[2]["fields"]]
    assert "*Servers*\nEX01, EX02" in fields
    groups = next(s for s in sections(reply) if s.startswith("*Events per server"))
    lines = groups.split("\n")[1:]
    assert [line.split(" · ")[:2] for line in lines] == [
        ["• *EX01*", "`EX01\\Relay Scanners`"],
        ["• *EX02*", "connector not named by the event"],
        ["• *EX02*", "`MBX02\\Client Frontend MBX02`"]]
    assert "WEC01" not in "\n".join(sections(reply))


def test_the_fix_follows_the_origin(db, collected):
    assert db.execute("SELECT servers FROM incidents WHERE key = ?", [SCANNER.casefold()]
                      ).fetchone()[0] == '[["EX01", "EX01"], ["EX02", "MBX02"]]'
    # The connector's server prefix in `fix` is the host the origin's newest event named.
    assert queries.latest_host(db, "EX02") == "MBX02.contoso.local"
    assert queries.latest_host(db, "WEC01") is None
    text = "\n".join(sections(ask(db, collected, f"fix {SCANNER} 1018")))
    assert "EX02 (Exchange host MBX02)" in text
    assert "EX01\\Relay Scanners: named by this account's 1018 events" in text
    assert "MBX02\\Client Frontend MBX02: named by this account's 1018 events" in text
    assert queries.connectors_on_server(db, "EX02") == ["MBX02\\Client Frontend MBX02"]
    assert queries.event_kinds_of_account(db, SCANNER.casefold()) == {
        "EX01": {1018}, "EX02": {1018, 1020}}


def test_an_incident_takes_the_route_of_the_origin_that_opened_it(db):
    """EX02's channel (lookup_config), though the endpoint WEC01 read the event."""
    Feed(db, lookup_config()).ingest([event(3, "EX02", account="CONTOSO\\copier"),
                                      event(3, "EX01", account="CONTOSO\\printer")], T)
    assert db.execute("SELECT account, channel FROM incidents ORDER BY account").fetchall() == [
        ("CONTOSO\\copier", "C0EX02"), ("CONTOSO\\printer", "C0ALERTS")]


def test_summary_ranks_the_origins(db, collected):
    # Counted from the events (no whole hour in the window)...
    figures = queries.summary(db, since=T - timedelta(minutes=30), until=T + timedelta(minutes=30))
    assert figures.top_servers == [("EX02", 2), ("EX01", 1), ("EX09", 1)]
    # ...and from the hourly counts (whole hours only): the same, per origin.
    whole = queries.summary(db, since=T - timedelta(hours=1), until=T + timedelta(hours=1))
    assert whole.top_servers == figures.top_servers
