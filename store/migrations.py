"""The schema, as sqlite-utils migrations: each step runs once, in order, in a transaction.

Never edit a migration that has shipped; add a new one.
"""
from __future__ import annotations

import json

from sqlite_utils import Database
from sqlite_utils.migrations import Migrations

migrations = Migrations("submitwatch")


@migrations()
def m001_initial(db: Database) -> None:
    # One row per configured server: the cursor and the health of its polling.
    # `generation` counts how often the server's Application log was found cleared: record ids
    # may start again after a clear, so events are unique per (server, generation, record_id).
    db.table("server_state").create({
        "server": str, "generation": int, "cursor": int, "newest_record": int,
        "last_poll_at": str, "last_success_at": str, "last_error": str, "last_error_at": str,
        "consecutive_failures": int, "events_stored": int,
    }, pk="server", not_null={"generation", "consecutive_failures", "events_stored"},
        defaults={"generation": 0, "consecutive_failures": 0, "events_stored": 0})

    db.table("incidents").create({
        "id": int, "key": str, "account": str, "status": str, "channel": str, "message_ts": str,
        "first_seen": str, "last_seen": str, "event_count": int, "servers": str,
        "connectors": str, "event_ids": str, "opened_at": str, "resolved_at": str,
        "last_message_at": str,
    }, pk="id", not_null={"key", "account", "status", "channel", "first_seen", "last_seen",
                          "event_count", "servers", "connectors", "event_ids", "opened_at"})
    # At most one open incident per account: the invariant grouping depends on.
    db.execute("CREATE UNIQUE INDEX incidents_one_open_per_key ON incidents(key) "
               "WHERE status = 'open'")
    db.table("incidents").create_index(["status", "last_seen"])

    db.table("events").create({
        "id": int, "server": str, "generation": int, "record_id": int, "provider": str,
        "event_id": int, "time": str, "account": str, "account_key": str, "connector": str,
        "computer": str, "incident_id": int, "stored_at": str,
    }, pk="id", not_null={"server", "generation", "record_id", "provider", "event_id", "time",
                          "account", "account_key", "stored_at"},
        foreign_keys=[("incident_id", "incidents", "id")])
    db.table("events").create_index(["server", "generation", "record_id"], unique=True)
    db.table("events").create_index(["account_key", "time"])
    db.table("events").create_index(["incident_id"])

    # Things read from a server that could not be used (malformed events, cleared logs, ...).
    db.table("problems").create({"id": int, "server": str, "at": str, "kind": str,
                                 "detail": str, "excerpt": str}, pk="id")
    db.table("problems").create_index(["server", "at"])

    # Slack messages to send. A row is written in the same transaction as the incident change
    # that caused it, and marked sent only after Slack answered ok.
    db.table("outbox").create({
        "id": int, "incident_id": int, "kind": str, "detail": str, "state": str,
        "created_at": str, "not_before": str, "attempts": int, "last_error": str,
        "sent_at": str,
    }, pk="id", not_null={"incident_id", "kind", "state", "created_at", "not_before", "attempts"},
        defaults={"attempts": 0}, foreign_keys=[("incident_id", "incidents", "id")])
    db.table("outbox").create_index(["state", "not_before"])
    db.table("outbox").create_index(["incident_id", "state"])


@migrations()
def m002_claims_and_log_bounds(db: Database) -> None:
    # A delivery worker claims a row before sending it, so two workers (`run` and a cron
    # `poll-once`) never send the same message; a claim older than a few minutes is taken over.
    db.table("outbox").add_column("claimed_at", str)
    # The log's oldest record at the last good poll: a smaller one later means the log was
    # cleared and numbered again; without a previous value, no wrap can be claimed.
    db.table("server_state").add_column("oldest_record", int)


@migrations()
def m003_chat_ops(db: Database) -> None:
    # Who took ownership of an incident from chat.
    db.table("incidents").add_column("acked_by", str)
    db.table("incidents").add_column("acked_at", str)
    db.table("incidents").add_column("ack_note", str)
    # Snoozes of one incident (target = its id) or of an account (target = incident key).
    # A row stays after it ends (ended_at), so `show` and the audit can tell the story.
    db.table("snoozes").create({
        "id": int, "kind": str, "target": str, "account": str, "until": str, "reason": str,
        "created_by": str, "created_at": str, "ended_at": str, "ended_by": str,
    }, pk="id", not_null={"kind", "target", "account", "until", "reason", "created_by",
                          "created_at"})
    db.table("snoozes").create_index(["ended_at", "until"])
    db.table("snoozes").create_index(["kind", "target"])
    # Every action taken from chat, allowed or refused: who, what, when, where, before and after.
    db.table("audit").create({
        "id": int, "at": str, "user_id": str, "action": str, "target": str, "incident_id": int,
        "channel": str, "via": str, "outcome": str, "before": str, "after": str, "detail": str,
    }, pk="id", not_null={"at", "user_id", "action", "target", "via", "outcome"})
    db.table("audit").create_index(["incident_id", "at"])
    db.table("audit").create_index(["at"])


@migrations()
def m004_lookup_indexes(db: Database) -> None:
    # `/submitwatch history` counts events per day over a window, for everyone or for one
    # server: without these it reads every event (about 0.3 s per million, each time).
    db.table("events").create_index(["time"])
    db.table("events").create_index(["server", "time"])
    # `/submitwatch fix` lists the connectors each server's 1018 events named. Only 1018 events
    # carry one, so the index holds just those, and a query hops from one name to the next.
    db.execute("CREATE INDEX idx_events_server_connector ON events(server, connector) "
               "WHERE connector IS NOT NULL")


@migrations()
def m005_claim_owner(db: Database) -> None:
    # Which worker ("host:pid:start") claimed a row: a worker on the same host can tell that the
    # claimant died (killed, crashed) and take the row over at once instead of after a timeout.
    db.table("outbox").add_column("claimed_by", str)


@migrations()
def m006_health_messages_and_dead_letters(db: Database) -> None:
    # Outbox rows about a server rather than an incident ("not being watched", "recovered").
    db.table("outbox").transform(not_null={"incident_id": False})
    db.table("outbox").add_column("server", str)
    # Errors a person must fix are retried more and more slowly, then given up ("failed") after
    # a day; failed_since says when the first of them happened.
    db.table("outbox").add_column("error_code", str)
    db.table("outbox").add_column("failed_since", str)
    # The "not being watched" alert of a server, while it is down.
    db.table("server_state").add_column("down_since", str)
    db.table("server_state").add_column("down_message_ts", str)


@migrations()
def m007_sightings(db: Database) -> None:
    # Which event ID named which connector on which server, once each: an account failing with
    # 1018 on one server and 1020 on another needs a different diagnosis for each. JSON list of
    # [event_id, server, connector], first-seen order; filled from the events already stored.
    db.table("incidents").add_column("sightings", str)
    rows = db.execute(
        "SELECT incident_id, event_id, server, connector FROM events "
        "WHERE incident_id IS NOT NULL GROUP BY incident_id, event_id, server, connector "
        "ORDER BY incident_id, min(time), min(id)").fetchall()
    sightings: dict[int, list] = {}
    for incident_id, event_id, server, connector in rows:
        sightings.setdefault(incident_id, []).append([event_id, server, connector])
    db.conn.executemany("UPDATE incidents SET sightings = ? WHERE id = ?",
                        [(json.dumps(found), id_) for id_, found in sightings.items()])


@migrations()
def m008_server_alert_channel(db: Database) -> None:
    # The channel ID Slack answered the "not being watched" alert with: its update and the
    # recovery notice go there even when the configuration names the channel (`#alerts`).
    db.table("server_state").add_column("down_channel", str)
    # When SubmitWatch first polled the server: a server that never polled successfully is
    # "not watched since then", not "last good poll <now>".
    db.table("server_state").add_column("first_poll_at", str)


@migrations()
def m009_last_stored_at(db: Database) -> None:
    # The bot's own time when an incident's newest event was stored: quietness is decided on it
    # as well as on Exchange's event times, so an Exchange clock behind the bot's (or jumping
    # ahead) neither resolves live incidents nor splits them. Filled from the events stored.
    db.table("incidents").add_column("last_stored_at", str)
    db.execute("UPDATE incidents SET last_stored_at = (SELECT max(stored_at) FROM events "
               "WHERE events.incident_id = incidents.id)")
    # How far a server's event times are from the bot's clock, when that was last measurable
    # (seconds; positive: Exchange ahead), for `status` and `check`.
    db.table("server_state").add_column("clock_skew", float)
    db.table("server_state").add_column("clock_skew_at", str)


@migrations()
def m010_log_name(db: Database) -> None:
    # Which event log a server's cursor counts in (servers.log): a cursor into one log means
    # nothing in another, so a changed log starts a new generation from the look-back.
    db.table("server_state").add_column("log", str)


@migrations()
def m011_reminders(db: Database) -> None:
    # When the owners of an open, unacknowledged incident were last reminded in its thread.
    db.table("incidents").add_column("last_reminded_at", str)


@migrations()
def m012_history_at_scale(db: Database) -> None:
    # The chat lookups with 200,000 incidents and 10 million events (benchmark row 9): without
    # these, `history` and `summary` read every incident on each call, and `summary` fetched
    # every event of its window from the table to count it by server and by connector.
    # `history` pages incidents by last activity; `history ACCOUNT`, an account's older
    # incidents and `summary`'s "new accounts" (was this account seen before?) look up by key;
    # `summary` counts what opened, was acknowledged and was resolved in its window (from the
    # index alone: the opening time rides along), and retention finds what ended before its
    # cutoff.
    db.table("incidents").create_index(["last_seen"])
    db.table("incidents").create_index(["key", "opened_at"])
    db.table("incidents").create_index(["opened_at", "key"])
    db.table("incidents").create_index(["acked_at", "opened_at"])
    db.table("incidents").create_index(["resolved_at", "opened_at"])
    # `summary` counts a window's events per server and connector in one pass over this index,
    # without reading a row. It replaces m004's partial (server, connector) index, whose queries
    # read a prefix of this one, so the events table keeps as many indexes; the events without
    # a connector are in it too, so the per-server counts add up to every event.
    db.execute("DROP INDEX idx_events_server_connector")
    db.table("events").create_index(["server", "connector", "time"])


@migrations()
def m013_storm_digests(db: Database) -> None:
    # A storm's digest: the one message that lists the incidents opening in a channel beyond
    # incidents.storm_threshold within incidents.storm_window (bot.engine.outbox.joins_digest). At
    # most one is live (not ended) per channel, as configured (not the ID Slack answers with).
    db.table("digests").create({
        "id": int, "channel": str, "channel_id": str, "opened_at": str, "last_joined_at": str,
        "ended_at": str, "message_ts": str, "last_message_at": str, "detailed_through": int,
    }, pk="id", not_null={"channel", "opened_at", "last_joined_at"})
    db.execute("CREATE UNIQUE INDEX digests_one_live_per_channel ON digests(channel) "
               "WHERE ended_at IS NULL")
    # An incident in a digest has no post of its own, ever; opened_in is the channel as
    # configured when it opened (incidents.channel becomes the ID once posted), which is what
    # the storm threshold counts in.
    db.table("incidents").add_column("digest_id", int)
    db.table("incidents").add_column("opened_in", str)
    db.execute("UPDATE incidents SET opened_in = channel")
    db.execute("CREATE INDEX incidents_by_digest ON incidents(digest_id) "
               "WHERE digest_id IS NOT NULL")
    db.execute("CREATE INDEX incidents_opened_in ON incidents(opened_in, opened_at)")
    # Outbox rows about a digest (its post, updates and thread replies).
    db.table("outbox").add_column("digest_id", int)
    db.execute("CREATE INDEX outbox_pending_by_digest ON outbox(digest_id, state) "
               "WHERE digest_id IS NOT NULL")


@migrations()
def m014_fixed_loop(db: Database) -> None:
    # The closed loop (bot.engine.fixloop): someone marked the incident fixed; then the directory is
    # read until it shows the right ("waiting"), the events are watched ("watching"), and it
    # ends "confirmed" (quiet for the confirmation window) or "failing" (it failed again).
    for column in ("fix_state", "fixed_by", "fixed_at", "fix_note", "fix_seen_at",
                   "fix_failed_at"):
        db.table("incidents").add_column(column, str)
    db.execute("CREATE INDEX incidents_fix_state ON incidents(fix_state) "
               "WHERE fix_state IS NOT NULL")
    # The last directory check of an incident (bot.core.findings.Finding as JSON) and when the
    # next one is due; the alert shows it, so a restart shows the last check without asking again.
    db.table("directory_checks").create({
        "incident_id": int, "checked_at": str, "finding": str, "next_at": str,
    }, pk="incident_id")


@migrations()
def m015_event_hours(db: Database) -> None:
    # Events counted per hour, server and connector ('' for none) as they are stored
    # (store.db.insert_events): `summary` sums a week's 168 hours instead of counting its
    # ~300,000 events (benchmark row 9). Filled from the events already stored.
    db.execute("CREATE TABLE event_hours (hour TEXT NOT NULL, server TEXT NOT NULL, "
               "connector TEXT NOT NULL, n INTEGER NOT NULL, PRIMARY KEY (hour, server, "
               "connector)) WITHOUT ROWID")
    # (As it shipped: the events had no origin yet, and event_hours counted per server.)
    db.execute("INSERT INTO event_hours SELECT substr(time, 1, 13), server, "
               "coalesce(connector, ''), count(*) FROM events GROUP BY 1, 2, 3")


@migrations()
def m016_event_origin(db: Database) -> None:
    # An event has two servers: `server`, the endpoint polled (it owns the cursor and the
    # generation), and `origin`, the configured Exchange server that logged it (bot.core.model.
    # Event): the same for a server's own log, many for a collector's ForwardedEvents. Filled
    # from `server`, which is what every event stored so far came from. The table is built
    # again (not ALTER TABLE ADD COLUMN) so that origin is NOT NULL like server: a NULL origin
    # would slip past the unique index below (NULLs never collide) and be stored twice.
    columns = ("id, server, origin, generation, record_id, provider, event_id, time, account, "
               "account_key, connector, computer, incident_id, stored_at")
    db.execute(
        "CREATE TABLE events_new (id INTEGER PRIMARY KEY, server TEXT NOT NULL, "
        "origin TEXT NOT NULL, generation INTEGER NOT NULL, record_id INTEGER NOT NULL, "
        "provider TEXT NOT NULL, event_id INTEGER NOT NULL, time TEXT NOT NULL, "
        "account TEXT NOT NULL, account_key TEXT NOT NULL, connector TEXT, computer TEXT, "
        "incident_id INTEGER REFERENCES incidents(id), stored_at TEXT NOT NULL)")
    db.execute(f"INSERT INTO events_new ({columns}) SELECT {columns.replace('origin', 'server')} "
               "FROM events ORDER BY id")
    db.execute("DROP TABLE events")        # and its indexes; no table refers to events
    db.execute("ALTER TABLE events_new RENAME TO events")
    events = db.table("events")
    # Dedupe (store.db.new_events): record ids count within one origin's log, in the generation
    # of the endpoint's log. For a server's own log origin = server, so this is m001's
    # (server, generation, record_id); in a collector's log two origins' record 7 are two
    # events. (server, generation, origin) is the prefix a batch's look-up seeks, one record id
    # range per origin in the batch.
    events.create_index(["server", "generation", "origin", "record_id"], unique=True)
    events.create_index(["account_key", "time"])         # as m001: an account's events
    events.create_index(["incident_id"])                 # as m001: an incident's events
    events.create_index(["time"])                        # as m004: sparkline, prune, summary
    # m004's (server, time) and m012's (server, connector, time), by origin: `history SERVER`
    # counts, the newest host (the fix's connector prefix) and the connectors a server has
    # seen are about the Exchange server that logged the events, not the endpoint that was
    # polled. Nothing asks for an endpoint's events by time. As many indexes as before.
    events.create_index(["origin", "time"])
    events.create_index(["origin", "connector", "time"])
    # `summary`'s hourly counts (m015) are per origin too: its "top servers" names the Exchange
    # servers the failures come from (a collector's endpoint would be one server with all of
    # them); an endpoint's own count is server_state.events_stored. Counted so far per server,
    # which was each event's origin: the counts stand as they are.
    db.execute("ALTER TABLE event_hours RENAME COLUMN server TO origin")


@migrations()
def m017_devices(db: Database) -> None:
    # The device look-up (bot.engine.devices) in Exchange's SMTP Receive protocol log.
    # How far each file of each server's log folder was read ("FrontEnd" or "Hub"): a file is
    # never read twice. Files older than the look-up needs are dropped as it goes.
    db.table("protocol_log_cursors").create({
        "server": str, "role": str, "file": str, "offset": int,
    }, pk=("server", "role", "file"), not_null={"offset"})
    # One row per incident, server and client address: the sessions that failed with its
    # account (addresses and names are untrusted text from the log and reverse DNS). Like
    # directory_checks, no foreign key: prune drops the rows of incidents it deleted.
    db.table("devices").create({
        "incident_id": int, "server": str, "address": str, "name": str, "sessions": int,
        "first": str, "last": str, "account_shown": int,
    }, pk=("incident_id", "server", "address"),
        not_null={"sessions", "first", "last", "account_shown"})
    # Failure lines read but joined to no event yet (the event may be stored by a later poll,
    # or its account's incident was not being looked up): joined on later runs, dropped after
    # a day. The line as JSON (untrusted text).
    db.table("protocol_lines").create({
        "server": str, "role": str, "file": str, "offset": int, "time": str, "line": str,
    }, pk=("server", "role", "file", "offset"), not_null={"time", "line"})
    # Where each incident's look-up stands: the newest event it has looked up, the last
    # read's problem (None: it read), events no line explained, connectors that do not log.
    db.table("device_checks").create({
        "incident_id": int, "checked_at": str, "looked_until": str, "problem": str,
        "unmatched_events": int, "quiet_connectors": str,
    }, pk="incident_id", not_null={"unmatched_events"}, defaults={"unmatched_events": 0})


@migrations()
def m018_origin_heartbeats(db: Database) -> None:
    # What a Windows Event Collector last said of each event source of its subscription
    # (bot.engine.liveness): the server it is taken for (`origin`; for a source left out, its
    # computer name), how (`taken`: "configured", "own_name" or "ignored"), the computer as the
    # collector names it, its RunTimeStatus and last heartbeat (NULL: none yet), and when that
    # was read. `status`, the Home tab and /metrics show it per origin.
    db.table("origin_heartbeats").create({
        "origin": str, "collector": str, "computer": str, "status": str,
        "last_heartbeat": str, "read_at": str, "taken": str,
    }, pk="origin", not_null={"collector", "computer", "status", "read_at", "taken"})


#: The hourly counts of the events table as it stands (benchmarks that fill the events table
#: directly). An hour is the first 13 characters of store.db.iso: 2026-12-01T09.
EVENT_HOURS_OF_EVENTS = ("SELECT substr(time, 1, 13), origin, coalesce(connector, ''), count(*) "
                         "FROM events GROUP BY 1, 2, 3")
