"""`submitwatch history|show|status|summary|verify|routes|fix`: the slash command's answers in a
terminal, as text and as JSON, from a read-only database (handlers.terminal, store.db.
open_read_only, bot.cli). Real SQLite files filled by the pipeline's own functions."""
from __future__ import annotations

import json
import re
import sqlite3
import threading
import time
from datetime import timedelta

import pytest

from bot.cli import LOOK_UPS, main
from handlers import terminal
from handlers.terminal import COMMANDS, mrkdwn_to_plain, render
from store import db as store
from store.db import StoreError, open_read_only
from store.migrations import migrations
from tests import test_lookups
from tests.helpers import COPIER, NOW, OLD, PRINTER, SCANNER, Feed, at, lookup_config

HOSTILE = "CONTOSO\\evil\x1b[31mred\rX\nY\u202egnp"
#: What a terminal must never receive from data: escape, carriage return, bidi and line controls.
#: The seeded week of tests/test_lookups.py (its fixtures, shared).
config, world = test_lookups.config, test_lookups.world
RAW_CONTROLS = re.compile(r"[\x00-\x09\x0b-\x1f\x7f-\x9f\u200b-\u200f\u202a-\u202e\u2066-\u2069"
                          r"\u2028\u2029\ufeff]")


@pytest.fixture
def ro(db, db_path, world):
    reader = open_read_only(db_path)
    yield reader
    reader.conn.close()


def look(command, *args, config=None, db=None):
    return terminal.ask(command, list(args), config or lookup_config(), db, now=NOW)


def assert_inert(text):
    assert not RAW_CONTROLS.search(text), repr(text)


# --- each command's text --------------------------------------------------------------------------

def test_history_text_is_the_slash_commands_answer_in_plain_words(ro, world):
    _, ids = world
    answer = look("history", db=ro)
    assert answer.error is None and answer.exit_code == 0
    assert answer.text.split("\n") == [
        "History of all accounts, the last 7 days",
        "▂▁▂▁█▅▁▂ 2026-03-01 → 2026-03-08 (events per UTC day, peak 14 on 2026-03-05)",
        "4 incidents (1 open) · 25 events in the window",
        "",
        f"#{ids[PRINTER]} CONTOSO\\printer · open · 1 event · EX01 · last 2026-03-08 12:00 UTC",
        f"#{ids[SCANNER]} CONTOSO\\svc-scanner · resolved · 21 events · EX01, EX02 · "
        "last 2026-03-06 08:06 UTC",
        f"#{ids[COPIER]} CONTOSO\\copier · resolved · 2 events · EX02 · "
        "last 2026-03-03 09:01 UTC",
        f"#{ids[OLD]} CONTOSO\\old · resolved · 2 events · EX01 · "
        "last 2026-03-01 16:00 UTC",
        "",
        "Showing all 4, newest first. /submitwatch show #N tells one's story.",
    ]


def test_history_takes_the_slash_commands_arguments(ro, world):
    answer = look("history", "ex02", "--limit", "1", db=ro)
    assert answer.text.startswith("History of server EX02, the last 7 days\n")
    assert "Showing 1 of 2, newest first" in answer.text
    bad = look("history", "--since", "400d", db=ro)
    assert bad.exit_code == 1 and bad.text == ""
    assert bad.terminal() == ("`--since` goes back at most 366 days (one sparkline bar per day)"
                              .replace("`", "") + "\nusage: submitwatch history [account|server] "
                              "[--since 7d] [--limit N]")


def test_show_text_has_fields_timeline_and_no_markup(ro, world):
    _, ids = world
    text = look("show", str(ids[SCANNER]), db=ro).text
    lines = text.split("\n")
    assert lines[:3] == [f"Incident #{ids[SCANNER]}", "=" * len(lines[0]), ""]
    assert "Events: 21 (IDs 1018, 1020)" in lines
    assert "Servers: EX01, EX02" in lines
    assert "First seen: 2026-03-05 09:00 UTC" in lines
    assert "• EX01 · EX01\\Relay Scanners · 14 events (1018) · 2026-03-05 09:00 UTC → "\
           "2026-03-05 09:13 UTC" in lines
    assert "Timeline" in lines and "• 2026-03-05 09:00 UTC first event" in lines
    for marker in ("<!date", "<@", "&lt;", "&amp;", "*", "`"):
        assert marker not in text
    assert look("show", f"#{ids[SCANNER]}", db=ro).text == text   # `#42` as in Slack


def test_status_summary_and_routes_text(ro):
    assert look("status", db=ro).text.split("\n") == [
        "Servers (each polled every 1m)",
        "• EX01: ○ not polled yet · no poll has run yet",
        "• EX02: ○ not polled yet · no poll has run yet",
        "• EX03: ○ not polled yet · no poll has run yet",
        "",
        "Open incidents: 1   Alerts waiting to be sent: 5",
    ]
    summary = look("summary", "--since", "7d", db=ro).text.split("\n")
    assert summary[0] == "Summary of the last 7 days (since 2026-03-01 15:00 UTC)"
    assert "• top servers: EX01 (16), EX02 (9)" in summary
    assert look("routes", SCANNER, "EX02", "1018", db=ro).text.split("\n") == [
        "Routes for CONTOSO\\svc-scanner (no [[routes]] configured: every alert goes to its "
        "server's channel, naming nobody)",
        "• EX02, event 1018: route (no route) → #C0EX02, owners nobody",
    ]


def test_fix_text_shows_the_commands_as_indented_code(ro):
    answer = look("fix", SCANNER, "EX01\\Relay Scanners", "1018", db=ro)
    assert answer.text.startswith("Understood: account CONTOSO\\svc-scanner, connector "
                                  "EX01\\Relay Scanners, event 1018 (you said).")
    code = [line for line in answer.text.split("\n") if line.startswith("    ")]
    assert "    Get-ReceiveConnector -Identity 'EX01\\Relay Scanners' | Format-List Identity,"\
           "Enabled,Bindings,RemoteIPRanges,PermissionGroups,AuthMechanism,TransportRole" in code
    assert all(c[4:] in "\n".join(answer.data["commands"]) for c in code)


def test_verify_without_a_directory_says_how_to_turn_it_on(ro):
    answer = look("verify", SCANNER, db=ro)
    assert answer.text.startswith("Directory checks are off, so CONTOSO\\svc-scanner cannot be "
                                  "verified: SubmitWatch has no [directory] in its configuration.")
    assert answer.data == {"account": SCANNER, "directory": False, "asked": None, "servers": [],
                           "finding": None, "problems": []}
    assert look("verify", db=ro).error == "name the account, like CONTOSO\\svc-scanner"


def test_verify_reads_the_directory_as_the_slash_command_does(samba_ad, db, db_path, clock):
    from tests.helpers import ask as slash
    from tests.samba_ad import submit_ace, unique
    from tests.test_verify import make_config
    alice = samba_ad.add_user(unique("terminal")[:20])
    name = unique("Client Frontend")
    samba_ad.add_connector("EX01", name, aces=[submit_ace(alice.sid)])
    config = make_config(samba_ad)
    reader = open_read_only(db_path)
    answer = terminal.ask("verify", [f"CORP\\{alice.name}", f"EX01\\{name}"], config, reader,
                          now=clock())
    reader.conn.close()
    # one view, two renderings: the Slack answer's blocks, as text
    assert answer.text == render(slash(db, config, clock, f"verify CORP\\{alice.name} "
                                                          f"'EX01\\{name}'"))
    assert f"Connector EX01\\{name}: Submit granted" in answer.text
    data = answer.data
    assert data["directory"] is True and data["asked"] == f"EX01\\{name}"
    assert data["finding"]["found"] is True and data["finding"]["sid"] == alice.sid
    [fact] = data["finding"]["connectors"]
    assert (fact["server"], fact["name"], fact["right"]) == ("EX01", name, "granted")
    assert data["problems"] == []


# --- JSON ---------------------------------------------------------------------------------------

DATA_KEYS = {
    "history": {"subject", "since", "until", "limit", "total", "open", "events",
                "events_per_day", "incidents", "older"},
    "show": {"incident", "event_groups", "event_group_count", "timeline", "audit",
             "snoozed_until", "finding", "devices"},
    "status": {"servers", "poll_interval_seconds", "open_incidents", "outbox",
               "delivery_problems"},
    "summary": {"since", "until", "new_accounts", "opened", "events", "open_now",
                "acknowledged_now", "top_servers", "top_connectors", "median_seconds_to_ack",
                "median_seconds_to_resolve", "servers_not_watched"},
    "verify": {"account", "directory", "asked", "servers", "finding", "problems"},
    "routes": {"account", "routes_configured", "routes"},
    "fix": {"account", "commands"},
}
INCIDENT_KEYS = {"id", "account", "status", "channel", "first_seen", "last_seen", "opened_at",
                 "resolved_at", "event_count", "event_ids", "servers", "connectors", "acked_by",
                 "acked_at", "ack_note", "fix_state", "fixed_by", "fixed_at"}


def test_every_command_has_a_documented_json_shape(ro, world):
    _, ids = world
    args = {"history": [], "show": [str(ids[SCANNER])], "status": [], "summary": [],
            "verify": [SCANNER], "routes": [SCANNER], "fix": [SCANNER]}
    assert set(args) == set(COMMANDS) == set(LOOK_UPS) == set(DATA_KEYS)
    for command in COMMANDS:
        answer = look(command, *args[command], db=ro)
        out = json.loads(answer.json())
        assert set(out) == {"version", "command", "arguments", "generated_at", "text", "data"}
        assert out["version"] == 1 and out["command"] == command
        assert out["arguments"] == args[command]
        assert out["generated_at"] == "2026-03-08T15:00:00Z"
        assert out["text"] == answer.text
        assert set(out["data"]) == DATA_KEYS[command], command


def test_history_and_show_json_carry_the_incidents(ro, world):
    _, ids = world
    data = json.loads(look("history", "--since", "2d", db=ro).json())["data"]
    assert data["subject"] == {"kind": "all", "name": None}
    assert data["since"] == "2026-03-06T15:00:00Z" and data["until"] == "2026-03-08T15:00:00Z"
    assert data["events_per_day"] == [{"day": "2026-03-06", "events": 0},
                                      {"day": "2026-03-07", "events": 0},
                                      {"day": "2026-03-08", "events": 1}]
    [printer] = data["incidents"]
    assert set(printer) == INCIDENT_KEYS
    assert printer["id"] == ids[PRINTER] and printer["account"] == PRINTER
    assert printer["status"] == "open" and printer["event_count"] == 1
    assert printer["last_seen"] == "2026-03-08T12:00:00Z"
    assert printer["servers"] == [{"name": "EX01", "host": "EX01"}]
    shown = json.loads(look("show", str(ids[SCANNER]), db=ro).json())["data"]
    assert shown["incident"]["account"] == SCANNER and shown["incident"]["event_count"] == 21
    assert shown["event_groups"][0] == {
        "server": "EX01", "connector": "EX01\\Relay Scanners", "event_ids": [1018], "events": 14,
        "first": "2026-03-05T09:00:00Z", "last": "2026-03-05T09:13:00Z"}
    assert [m["what"] for m in shown["timeline"]][:2] == ["first event", "opened"]


def test_a_question_it_cannot_answer_is_an_error_object(ro):
    out = json.loads(look("show", "9999", db=ro).json())
    assert out == {"version": 1, "command": "show", "arguments": ["9999"],
                   "generated_at": "2026-03-08T15:00:00Z",
                   "error": "there is no incident #9999; /submitwatch history lists them",
                   "usage": "submitwatch show <incident>"}


# --- hostile names --------------------------------------------------------------------------------

def test_hostile_names_come_out_escaped_in_text_and_json(db, db_path):
    config = lookup_config()
    Feed(db, config).burst(HOSTILE, at(8, 13), 2, connector="EX01\\Bad\x1b[2J\u2028Name")
    reader = open_read_only(db_path)
    history = look("history", db=reader)
    line = next(li for li in history.text.split("\n") if "evil" in li)
    assert line.startswith("#1 CONTOSO\\evil\\x1b[31mred\\x0dX\\x0aY\\x202egnp · open · 2 events")
    for command, args in (("history", []), ("show", ["1"]), ("summary", []), ("fix", ["#1"]),
                          ("routes", [HOSTILE]), ("verify", [HOSTILE])):
        answer = look(command, *args, db=reader)
        # fix refuses to build commands for such a name: its refusal is just as inert
        assert (answer.error is None) == (command != "fix"), (command, answer.error)
        assert_inert(answer.terminal())
        serialized = answer.json()
        assert_inert(serialized)
        assert serialized.isascii()
    assert look("fix", "#1", db=reader).error.startswith(
        "No command can be built: account name contains an escape character (U+001B)")
    data = json.loads(look("show", "1", db=reader).json())["data"]
    assert data["incident"]["account"] == HOSTILE   # the data itself, exactly (JSON-escaped)
    reader.conn.close()


def test_mrkdwn_tokens_and_markers_become_plain_words():
    assert mrkdwn_to_plain("*Bold* and _it_ and ~gone~ `*kept*` <@U0ALICE> <#C0ALERTS> "
                           "<!subteam^S0OPS> <!date^1772982000^{date_short_pretty} {time}|"
                           "2026-03-08 15:00 UTC> <https://x.example|the page> a &lt;b&gt; "
                           "&amp;lt; :warning:") == (
        "Bold and it and gone *kept* @U0ALICE #C0ALERTS @S0OPS 2026-03-08 15:00 UTC the page "
        "(https://x.example) a <b> &lt; ⚠")
    text = render(terminal.Reply("x", [
        {"type": "header", "text": {"type": "plain_text", "text": "Title"}},
        {"type": "actions", "elements": [{"type": "button", "text": {"type": "plain_text",
                                                                      "text": "Ack"}}]},
        {"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
            {"type": "text", "text": "at "},
            {"type": "date", "timestamp": 0, "format": "{time}", "fallback": "1970-01-01 00:00 UTC"},
            {"type": "text", "text": " by "}, {"type": "user", "user_id": "U0BOB"}]}]},
        {"type": "rich_text", "elements": [{"type": "rich_text_preformatted", "elements": [
            {"type": "text", "text": "Get-Thing\nSet-Thing"}]}]},
    ]))
    assert text == ("Title\n=====\n\nat 1970-01-01 00:00 UTC by @U0BOB\n\n"
                    "    Get-Thing\n    Set-Thing")


# --- the read-only database -------------------------------------------------------------------------

def test_the_read_only_open_never_creates_a_file(tmp_path):
    missing = tmp_path / "none.db"
    with pytest.raises(StoreError) as caught:
        open_read_only(missing)
    assert str(caught.value) == (f"no database at {missing}: has `submitwatch run` or the demo "
                                 "ever run with this config?")
    assert list(tmp_path.iterdir()) == []


def test_it_reads_while_another_connection_holds_a_write_transaction(db, db_path, world):
    writer = sqlite3.connect(db_path, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    writer.execute("UPDATE incidents SET status = 'open'")
    try:
        reader = open_read_only(db_path)
        started = time.monotonic()
        answer = look("history", db=reader)
        assert time.monotonic() - started < 5   # never waits for the writer's lock
        assert "4 incidents (1 open)" in answer.text   # the committed state, not the pending one
        with pytest.raises(sqlite3.OperationalError):   # and it can never write itself
            reader.execute("UPDATE incidents SET status = 'resolved'")
        reader.conn.close()
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_a_reader_beside_a_writer_thread_sees_whole_commits(db, db_path, world):
    reader = open_read_only(db_path)
    stop = threading.Event()

    def write():
        feed = Feed(db, lookup_config())
        minute = 0
        while not stop.is_set() and minute < 200:
            feed.burst("CONTOSO\\busy", NOW - timedelta(minutes=300 - minute), 1)
            minute += 1
    thread = threading.Thread(target=write)
    thread.start()
    try:
        for _ in range(20):
            assert look("status", db=reader).error is None
    finally:
        stop.set()
        thread.join()
        reader.conn.close()


def test_an_older_schema_is_named_with_how_to_upgrade(tmp_path):
    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    from sqlite_utils import Database
    migrations.apply(Database(old), stop_before="m018_origin_heartbeats")
    old.close()
    with pytest.raises(StoreError) as caught:
        open_read_only(path)
    assert str(caught.value) == (f"the database {path} has an older schema (1 upgrade(s) not "
                                 "applied: m018_origin_heartbeats); `submitwatch run` (or "
                                 "`poll-once`) upgrades it, then ask again")


# --- the command line ---------------------------------------------------------------------------------

def write_toml(tmp_path, db_path):
    path = tmp_path / "submitwatch.toml"
    path.write_text(f"""
[slack]
channel = "C0ALERTS"

[store]
path = '{db_path}'

[[servers]]
name = "EX01"
url = "https://127.0.0.1:5986/wsman"
username = "u"
password_env = "PW"
""", encoding="utf-8")
    return str(path)


@pytest.fixture
def at_now(monkeypatch):
    monkeypatch.setattr(terminal, "clock", lambda: NOW)


def test_cli_prints_text_and_json(tmp_path, db, db_path, world, at_now, capsys):
    _, ids = world
    toml = write_toml(tmp_path, db_path)
    assert main(["--config", toml, "history", "--limit", "2"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("History of all accounts, the last 7 days\n")
    assert "Showing 2 of 4, newest first" in out
    # the words may come after an option, as people type them
    assert main(["--config", toml, "routes", "--json", SCANNER, "1018"]) == 0
    data = json.loads(capsys.readouterr().out)["data"]
    assert data["routes"] == [{"server": "EX01", "event_id": 1018, "route": "(no route)",
                               "channel": "C0ALERTS", "owners": []}]
    assert main(["--config", toml, "show", "9999"]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err.startswith("there is no incident #9999")


def test_cli_says_when_there_is_no_database_and_creates_none(tmp_path, capsys):
    missing = tmp_path / "nothing.db"
    toml = write_toml(tmp_path, missing)
    for command in COMMANDS:
        assert main(["--config", toml, command, "x"]) == 2
        assert capsys.readouterr().err == (
            f"submitwatch: database error: no database at {missing}: has `submitwatch run` or "
            "the demo ever run with this config?\n")
    assert not missing.exists() and not (tmp_path / "nothing.db.lock").exists()


def test_cli_names_an_older_schema_with_exit_2(tmp_path, capsys):
    path = tmp_path / "old.db"
    old = store.open_db(path, migrate=False)
    migrations.apply(old, stop_before="m017_devices")
    old.conn.close()
    assert main(["--config", write_toml(tmp_path, path), "status"]) == 2
    err = capsys.readouterr().err
    assert ("has an older schema (2 upgrade(s) not applied: m017_devices, "
            "m018_origin_heartbeats)") in err
    assert "`submitwatch run` (or `poll-once`) upgrades it" in err
