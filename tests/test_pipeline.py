"""End to end: real pywinrm -> simulator, real SQLite, real slack_sdk -> Slack stand-in."""
from __future__ import annotations

import os
from datetime import timedelta

from bot.engine import workers
from bot.engine.delivery import deliver_once
from bot.engine.poller import poll_server_once, resolve_quiet_incidents
from bot.slack.sender import SlackSender
from bot.sources.winrm import WinRMSource
from store import db as store
from store.db import open_db
from tests.blocks import preformatted, prose
from tests.conftest import CHANNEL
from tests.helpers import scanner, sweep

FE, BE = "MSExchangeFrontEndTransport", "MSExchangeTransport"


def fields(message):
    """The alert's prose, its facts (Servers, Connectors, Events, First / last seen) included."""
    return prose(message["blocks"])


def count(db, table):
    return db.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def test_two_servers_one_post_per_incident_then_updates_and_a_thread_reply(
        logs, db, make_config, slack, clock):
    config = make_config()
    scanner(logs["EX01"], 3)
    logs["EX02"].append(FE, 1018, ("CONTOSO\\app-erp", "EX02\\Client Frontend EX02"))
    logs["EX01"].append_noise(5)
    results, delivery = sweep(db, config, clock)
    assert [r.stored for r in results] == [3, 1] and not any(r.error for r in results)
    posts = slack.calls_to("chat.postMessage")
    assert len(posts) == 2 and delivery.sent == 2
    assert {p.params["channel"] for p in posts} == {CHANNEL}
    assert "CONTOSO\\svc-scanner" in posts[0].params["text"]
    assert posts[0].params["metadata"]["event_type"] == "submitwatch_incident"

    # More of the same on the other server: the same message is updated, and the thread says
    # the problem spread.
    clock.advance(seconds=30)
    scanner(logs["EX02"], 2, account="contoso\\SVC-SCANNER")
    results, delivery = sweep(db, config, clock)
    assert count(db, "incidents") == 2
    updates = slack.calls_to("chat.update")
    [message, _] = slack.messages(CHANNEL)
    assert len(updates) == 1 and updates[0].params["ts"] == message["ts"]
    assert message["edits"] == 1
    assert "Events: 5" in fields(message)
    [reply] = message["replies"]
    assert "now also seen on *EX02*" in reply["text"]
    assert len(slack.calls_to("chat.postMessage")) == 3  # 2 alerts + 1 thread reply


def test_restart_on_the_same_database_posts_nothing_twice_and_keeps_the_cursor(
        logs, db_path, make_config, slack, clock):
    config = make_config()
    scanner(logs["EX01"], 2)
    first = open_db(db_path)
    sweep(first, config, clock)
    cursor = store.server_state(first, "EX01").cursor
    first.conn.close()

    again = open_db(db_path)  # a new process: new connection, new sender, same file
    assert store.server_state(again, "EX01").cursor == cursor
    results, delivery = sweep(again, config, clock)
    assert [r.stored for r in results] == [0, 0]
    assert delivery.sent == 0
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert store.server_state(again, "EX01").cursor == cursor == logs["EX01"].newest_record


def test_slack_down_then_back_delivers_every_alert_once(logs, db, make_config, slack, clock):
    config = make_config()
    slack.set_down(True)
    for n in range(3):
        scanner(logs["EX01"], 1, account=f"CONTOSO\\app{n}")
    _, delivery = sweep(db, config, clock)
    assert delivery.sent == 0 and delivery.failed == 1  # stops at the first failure
    assert store.outbox_depth(db) == 3
    [row] = [r for r in db.query("SELECT * FROM outbox WHERE attempts > 0")]
    assert "will retry" in row["last_error"] or "unreachable" in row["last_error"]

    clock.advance(minutes=59)  # an hour of outage: more events, more failed rounds
    scanner(logs["EX01"], 1, account="CONTOSO\\app3")
    sweep(db, config, clock)
    slack.set_down(False)
    clock.advance(minutes=6)  # past the longest backoff
    _, delivery = sweep(db, config, clock)
    assert delivery.sent == 4 and store.outbox_depth(db) == 0
    posted = [c.params["text"] for c in slack.calls_to("chat.postMessage") if c.ok]
    assert len(posted) == 4
    assert [t.split(": ")[1].split(" on ")[0] for t in posted] == [
        "CONTOSO\\app0", "CONTOSO\\app1", "CONTOSO\\app2", "CONTOSO\\app3"]


def test_polling_the_same_range_twice_stores_nothing_twice(logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 4)
    sweep(db, config, clock)
    # Forget the cursor, as if the cursor update had been lost: the same range comes back.
    db.execute("UPDATE server_state SET cursor = ?", [logs["EX01"].oldest_record - 1])
    results, _ = sweep(db, config, clock)
    assert results[0].error is None and results[0].stored == 0
    assert count(db, "events") == 4
    assert db.execute("SELECT event_count FROM incidents").fetchone()[0] == 4


def test_many_events_are_read_in_batches(logs, db, make_config, clock, winrm):
    config = make_config(servers=("EX01",), polling={"batch_size": 5})
    scanner(logs["EX01"], 23)
    [result], _ = sweep(db, config, clock)
    assert result.stored == 23 and result.round_trips == 5
    assert store.server_state(db, "EX01").cursor == logs["EX01"].newest_record


def test_first_poll_reads_only_the_look_back(logs, db, make_config, clock):
    config = make_config(servers=("EX01",), polling={"lookback": "24h"})
    old = clock.now - timedelta(hours=30)
    logs["EX01"].append(FE, 1020, ("CONTOSO\\old",), time=old)
    scanner(logs["EX01"], 1, account="CONTOSO\\new")
    [result], _ = sweep(db, config, clock)
    assert result.stored == 1
    assert [r["account"] for r in db.query("SELECT account FROM events")] == ["CONTOSO\\new"]


def test_a_first_poll_with_nothing_to_read_starts_at_the_newest_record(logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    logs["EX01"].append_noise(3)
    sweep(db, config, clock)
    assert store.server_state(db, "EX01").cursor == logs["EX01"].newest_record


def test_a_cleared_log_is_detected_reported_and_read_again(logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 3)
    sweep(db, config, clock)
    logs["EX01"].clear(restart_numbering=True)
    scanner(logs["EX01"], 2, account="CONTOSO\\after-clear")
    [result], _ = sweep(db, config, clock)
    assert result.stored == 2
    assert [p.kind for p in result.problems] == ["log_cleared"]
    assert count(db, "events") == 5  # same record ids as before the clear, new generation
    kinds = [r["kind"] for r in db.query("SELECT kind FROM problems")]
    assert kinds == ["log_cleared"]
    assert store.server_state(db, "EX01").generation == 1


def test_a_wrapped_log_reports_how_much_was_lost(logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    logs["EX01"].append_noise(10)
    logs["EX01"].drop_oldest(6)
    [result], _ = sweep(db, config, clock)
    [problem] = result.problems
    assert problem.kind == "log_wrapped" and problem.detail.startswith("5 log record(s)")


def test_one_failing_server_never_stops_the_others(logs, db, make_config, clock, winrm):
    config = make_config()
    scanner(logs["EX01"], 1)
    scanner(logs["EX02"], 1, account="CONTOSO\\other")
    winrm.inject("EX01", "unauthorized", times=1)
    results, delivery = sweep(db, config, clock)
    assert "refused the credentials" in results[0].error
    assert results[1].stored == 1 and delivery.sent == 1
    state = store.server_state(db, "EX01")
    assert state.consecutive_failures == 1 and "HTTP 401" in state.last_error
    results, _ = sweep(db, config, clock)  # it recovers by itself next time
    assert results[0].stored == 1 and store.server_state(db, "EX01").consecutive_failures == 0


def test_a_malformed_event_is_recorded_and_the_good_ones_kept(logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    logs["EX01"].append_raw("<Event xmlns='http://schemas.microsoft.com/win/2004/08/events/event'>"
                            "<System><Provider Name='MSExchangeTransport'/><EventID>1020</EventID>"
                            "<EventRecordID>oops</EventRecordID></System></Event>")
    scanner(logs["EX01"], 1)
    [result], _ = sweep(db, config, clock)
    assert result.stored == 2
    assert [r["kind"] for r in db.query("SELECT kind FROM problems")] == ["malformed_event"]


def test_non_ascii_account_names_survive_the_round_trip(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1, account="CONTOSO\\jürgen.müller")
    sweep(db, config, clock)
    assert db.execute("SELECT account FROM events").fetchone()[0] == "CONTOSO\\jürgen.müller"
    assert "jürgen.müller" in slack.calls_to("chat.postMessage")[0].params["text"]


def test_updates_are_coalesced_to_one_per_interval(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",), incidents={"update_interval": "10s"})
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    for _ in range(8):  # a burst: a poll every 2 s, each with new events
        clock.advance(seconds=2)
        scanner(logs["EX01"], 3)
        sweep(db, config, clock)
    updates = slack.calls_to("chat.update")
    assert 1 <= len(updates) <= 2  # 16 s of burst, at most one update per 10 s
    clock.advance(seconds=10)
    sweep(db, config, clock)  # the last state always reaches Slack
    [message] = slack.messages(CHANNEL)
    assert "Events: 25" in fields(message)


def test_quiet_incidents_resolve_and_the_message_says_so(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    clock.advance(hours=25)
    assert resolve_quiet_incidents(db, config, clock) == 1
    deliver_once(db, SlackSender.from_config(config.slack), config, clock)
    [message] = slack.messages(CHANNEL)
    assert message["edits"] == 1 and message["text"].startswith("Resolved: ")
    scanner(logs["EX01"], 1)  # the problem comes back: a new incident, a new alert
    sweep(db, config, clock)
    assert len(slack.messages(CHANNEL)) == 2


def test_a_permanent_slack_error_is_kept_and_delivered_once_fixed(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    slack.set_joined(CHANNEL, False)
    scanner(logs["EX01"], 1)
    _, delivery = sweep(db, config, clock)
    assert delivery.failed == 1 and "/invite @SubmitWatch" in delivery.errors[0]
    slack.set_joined(CHANNEL, True)
    clock.advance(minutes=10)  # a person must act first: no retry storm meanwhile
    _, delivery = sweep(db, config, clock)
    assert delivery.sent == 0 and delivery.waiting == 1
    clock.advance(minutes=6)
    _, delivery = sweep(db, config, clock)
    assert delivery.sent == 1 and len(slack.messages(CHANNEL)) == 1


def test_rate_limited_post_is_retried_and_lands_once(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "0"})
    scanner(logs["EX01"], 1)
    _, delivery = sweep(db, config, clock)
    assert delivery.sent == 1
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [429, 200]
    assert len(slack.messages(CHANNEL)) == 1


NS = "http://schemas.microsoft.com/win/2004/08/events/event"


def raw_event(record, account="CONTOSO\\x", computer="EX01.contoso.local", close=True):
    text = (f"<Event xmlns='{NS}'><System><Provider Name='{FE}'/><EventID>1020</EventID>"
            f"<TimeCreated SystemTime='2026-11-27T08:00:00.000000000Z'/>"
            f"<EventRecordID>{record}</EventRecordID><Computer>{computer}</Computer></System>"
            f"<EventData><Data>{account}</Data></EventData>")
    return text + "</Event>" if close else text[:-30]


def test_a_cut_off_last_event_is_read_again_never_skipped(logs, db, make_config, clock):
    config = make_config(servers=("EX01",), polling={"lookback": "3650d"})
    scanner(logs["EX01"], 2)
    before_cut = logs["EX01"].newest_record
    logs["EX01"].append_raw(raw_event(before_cut + 1, close=False))
    for _ in range(2):  # every poll stops before it and says so; nothing after it is skipped
        [result], _ = sweep(db, config, clock)
        assert [p.kind for p in result.problems] == ["truncated_event"]
        assert store.server_state(db, "EX01").cursor == before_cut
    assert count(db, "events") == 2


def test_a_clear_with_continued_numbering_is_not_reported_as_a_loss(logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 3)
    sweep(db, config, clock)
    logs["EX01"].clear()  # as Windows does: the next record number carries on
    [result], _ = sweep(db, config, clock)  # sees the empty log: a clear
    assert [p.kind for p in result.problems] == ["log_cleared"]
    scanner(logs["EX01"], 2, account="CONTOSO\\after")
    [result], _ = sweep(db, config, clock)
    assert result.problems == [] and result.stored == 2


def test_a_renumbered_log_that_grew_past_the_cursor_is_still_seen_as_cleared(
        logs, db, make_config, clock):
    config = make_config(servers=("EX01",))
    logs["EX01"].clear(restart_numbering=True)
    scanner(logs["EX01"], 7)
    logs["EX01"].drop_oldest(4)
    sweep(db, config, clock)  # records 5..7: cursor 7, oldest 5
    logs["EX01"].clear(restart_numbering=True)
    scanner(logs["EX01"], 9, account="CONTOSO\\after")  # records 1..9, past the old cursor
    [result], _ = sweep(db, config, clock)
    assert [p.kind for p in result.problems] == ["log_cleared"]
    assert result.stored == 9  # records 1-7 of the new log were not skipped


def test_nonsense_computer_names_and_huge_record_ids_do_not_stop_a_server(
        logs, db, make_config, clock):
    config = make_config(servers=("EX01",), polling={"lookback": "3650d"})
    first = logs["EX01"].next_record
    logs["EX01"].append_raw(raw_event(first, computer="."))
    logs["EX01"].append_raw(raw_event(2**64 - 1))
    scanner(logs["EX01"], 1)
    [result], _ = sweep(db, config, clock)
    assert result.error is None and result.stored == 2
    assert [p.detail for p in result.problems] == [
        f"an event was skipped: EventRecordID {2**64 - 1} is out of range"]
    servers = db.execute("SELECT servers FROM incidents WHERE key = 'contoso\\x'").fetchone()[0]
    assert servers == '[["EX01", "EX01"]]'  # fell back to the configured name


def test_an_unexpected_error_is_recorded_and_the_other_servers_go_on(
        logs, db, make_config, clock, monkeypatch):
    import bot.engine.poller

    def broken(*args, **kwargs):
        raise RuntimeError("a bug in grouping")
    config = make_config()
    scanner(logs["EX01"], 1)
    scanner(logs["EX02"], 1)
    monkeypatch.setattr(bot.engine.poller, "decide_batch", broken)
    results = [poll_server_once(db, WinRMSource(s, config.polling), config, clock)
               for s in config.servers]
    assert all("unexpected RuntimeError while polling: a bug in grouping" in r.error
               for r in results)
    assert store.server_state(db, "EX01").consecutive_failures == 1
    assert count(db, "events") == 0  # rolled back: the next poll reads them again
    monkeypatch.undo()
    results = [poll_server_once(db, WinRMSource(s, config.polling), config, clock)
               for s in config.servers]
    assert [r.stored for r in results] == [1, 1]


def test_two_delivery_workers_never_send_the_same_message(logs, db_path, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    worker_a, worker_b = open_db(db_path), open_db(db_path)
    poll_server_once(worker_a, WinRMSource(config.servers[0], config.polling), config, clock)
    [row] = store.pending_messages(worker_a, clock())
    alive_elsewhere = f"{workers.HOST}:{os.getppid()}:1"  # a live process: not ours, not dead
    with store.write_transaction(worker_b):
        assert store.claim(worker_b, row, clock(), alive_elsewhere)  # b is sending it now
    sender = SlackSender.from_config(config.slack)
    assert deliver_once(worker_a, sender, config, clock).sent == 0
    assert slack.calls_to("chat.postMessage") == []
    clock.advance(minutes=6)  # b died mid-send: its claim expires and a takes over
    assert deliver_once(worker_a, sender, config, clock).sent == 1
    assert deliver_once(worker_b, sender, config, clock).sent == 0
    assert len(slack.messages(CHANNEL)) == 1


def test_a_deleted_alert_is_posted_again(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",), incidents={"update_interval": "0s"})
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    slack.fail_next("chat.update", error="message_not_found")
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    sweep(db, config, clock)
    assert len(slack.calls_to("chat.postMessage")) == 2
    newest = slack.messages(CHANNEL)[-1]
    assert "Events: 2" in fields(newest)
    assert db.execute("SELECT message_ts FROM incidents").fetchone()[0] == newest["ts"]


def test_alerts_waiting_when_the_process_stops_are_sent_once_after_restart(
        logs, db_path, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    slack.set_down(True)
    scanner(logs["EX01"], 1)
    first = open_db(db_path)
    sweep(first, config, clock)
    first.conn.close()
    slack.set_down(False)
    clock.advance(minutes=6)
    again = open_db(db_path)
    _, delivery = sweep(again, config, clock)
    assert delivery.sent == 1 and len(slack.messages(CHANNEL)) == 1
    _, delivery = sweep(again, config, clock)
    assert delivery.sent == 0 and len(slack.messages(CHANNEL)) == 1


def test_a_newly_named_connector_gets_a_thread_reply(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1, account="CONTOSO\\app-erp")
    sweep(db, config, clock)
    logs["EX01"].append(FE, 1018, ("CONTOSO\\app-erp", "EX01\\Scanners EX01"))
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    [reply] = message["replies"]
    assert "connector named by the event: *EX01\\Scanners EX01*" in reply["text"]
    commands = "\n".join(preformatted(reply["blocks"]))
    assert "-Identity 'EX01\\Scanners EX01'" in commands


def test_a_servers_channel_override_is_used(logs, db, make_config, slack, clock):
    config = make_config(servers=[{"name": "EX02", "channel": "C0EX02"}])
    scanner(logs["EX02"], 1)
    sweep(db, config, clock)
    assert len(slack.messages("C0EX02")) == 1 and slack.messages(CHANNEL) == []


def test_the_quiet_period_is_configurable(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",), incidents={"quiet_period": "1h"})
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    clock.advance(minutes=59)
    assert resolve_quiet_incidents(db, config, clock) == 0
    clock.advance(minutes=2)
    assert resolve_quiet_incidents(db, config, clock) == 1


def test_the_look_back_is_configurable(logs, db, make_config, clock):
    config = make_config(servers=("EX01",), polling={"lookback": "1h"})
    logs["EX01"].append(FE, 1020, ("CONTOSO\\two-hours-ago",), time=clock.now - timedelta(hours=2))
    logs["EX01"].append(FE, 1020, ("CONTOSO\\just-now",))
    [result], _ = sweep(db, config, clock)
    assert [r["account"] for r in db.query("SELECT account FROM events")] == ["CONTOSO\\just-now"]


def test_undecodable_output_is_a_problem_and_the_event_is_kept(logs, db, make_config, winrm, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    # Output faults act on the next command: let `gli` through, damage the `qe` output.
    winrm.inject("EX01", "invalid_text", times=2)
    [result], _ = sweep(db, config, clock)
    assert result.stored == 1
    assert "invalid_text" in [p.kind for p in result.problems]
    assert "\ufffd" in db.execute("SELECT account FROM events").fetchone()[0]


def test_a_claim_decides_between_two_workers_that_saw_the_same_row(
        logs, db_path, make_config, slack, clock, monkeypatch):
    import threading
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll_server_once(open_db(db_path), WinRMSource(config.servers[0], config.polling), config,
                     clock)
    both_listed = threading.Barrier(2, timeout=10)
    listed = store.pending_messages

    def list_then_wait(*args, **kwargs):  # both workers read the row before either claims it
        rows = listed(*args, **kwargs)
        both_listed.wait()
        return rows
    monkeypatch.setattr(store, "pending_messages", list_then_wait)
    results = []

    def worker():
        results.append(deliver_once(open_db(db_path), SlackSender.from_config(config.slack),
                                    config, clock).sent)
    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert sorted(results) == [0, 1]
    assert len(slack.calls_to("chat.postMessage")) == 1
