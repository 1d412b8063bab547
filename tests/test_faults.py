"""Faults on both sides, through the real protocols: a server that keeps failing gets one
"not being watched" alert and one recovery notice; Slack errors a person must fix are retried
ever more slowly, given up after a day, surfaced, and sent once the cause is fixed."""
from __future__ import annotations

import itertools
from datetime import timedelta

from bot.engine.delivery import GIVE_UP_AFTER, backoff, deliver_once
from bot.engine.poller import poll_server_once
from bot.slack.sender import SlackSender
from bot.sources.winrm import WinRMSource
from store import db as store
from tests.conftest import CHANNEL
from tests.helpers import scanner, sweep


def test_a_failing_server_raises_one_alert_and_one_recovery_notice(
        logs, db, make_config, slack, winrm, clock):
    config = make_config(servers=("EX01",), polling={"alert_after_failures": 3})
    winrm.inject("EX01", "unauthorized", times=None)
    for poll in range(1, 7):
        clock.advance(minutes=1)
        [result], _ = sweep(db, config, clock)
        assert result.error and "401" in result.error or "rejected" in result.error
        expected = 0 if poll < 3 else 1
        assert len(slack.messages(CHANNEL)) == expected, f"after poll {poll}"
    [alert] = slack.messages(CHANNEL)
    assert alert["blocks"][0]["text"]["text"] == "Not being watched: EX01"
    assert "6 polls" not in alert["text"] and "3 polls in a row failed" in alert["text"]
    assert alert["metadata"]["event_payload"]["server"] == "EX01"

    winrm.clear_faults("EX01")
    scanner(logs["EX01"], 1)
    for _ in range(3):
        clock.advance(minutes=1)
        sweep(db, config, clock)
    alert, incident_alert = slack.messages(CHANNEL)
    assert alert["edits"] == 1 and "is watched again" in alert["text"]
    [recovered] = alert["replies"]
    assert "*EX01* polls again since" in recovered["text"]
    assert "SMTP submit denied" in incident_alert["text"]   # the events were read after all

    # A second outage gets its own alert, once.
    winrm.inject("EX01", "unauthorized", times=None)
    for _ in range(5):
        clock.advance(minutes=1)
        sweep(db, config, clock)
    assert len(slack.messages(CHANNEL)) == 3


def test_a_slack_error_a_person_must_fix_backs_off_gives_up_after_a_day_and_comes_back(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    slack.set_joined(CHANNEL, False)           # nobody invited the bot
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    [problem] = store.delivery_problems(db)
    assert problem["code"] == "not_in_channel" and problem["given_up"] == 0
    assert "/invite @SubmitWatch" in problem["error"]

    sender = SlackSender.from_config(config.slack)
    attempts_at = []
    start = clock()
    while clock() - start < GIVE_UP_AFTER + timedelta(hours=5):
        clock.advance(minutes=5)
        before = len(slack.calls_to("chat.postMessage"))
        deliver_once(db, sender, config, clock)
        if len(slack.calls_to("chat.postMessage")) > before:
            attempts_at.append(clock() - start)
    gaps = [b - a for a, b in itertools.pairwise(attempts_at)]
    assert gaps == sorted(gaps) and gaps[-1] <= timedelta(hours=4, minutes=5)
    assert len(attempts_at) < 15                # not every 5 minutes for a day
    [problem] = store.delivery_problems(db)
    assert problem["given_up"] == 1 and store.outbox_depth(db) == 0
    calls = len(slack.calls_to("chat.postMessage"))
    clock.advance(hours=12)
    deliver_once(db, sender, config, clock)
    assert len(slack.calls_to("chat.postMessage")) == calls   # given up: not tried again

    # Someone invites the bot; the next alert in that channel gets through and revives it.
    slack.set_joined(CHANNEL, True)
    scanner(logs["EX01"], 1, account="CONTOSO\\app-erp")
    sweep(db, config, clock)
    deliver_once(db, sender, config, clock)
    texts = [m["text"] for m in slack.messages(CHANNEL)]
    assert len(texts) == 2 and any("svc-scanner" in t for t in texts)
    assert store.delivery_problems(db) == []


def test_a_revoked_token_is_given_up_and_revived_by_any_later_success(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    sender = SlackSender.from_config(config.slack)
    slack.fail_next("chat.postMessage", error="token_revoked", times=1000)
    deliver_once(db, sender, config, clock)
    clock.advance(seconds=GIVE_UP_AFTER.total_seconds() + 1)
    deliver_once(db, sender, config, clock)
    [problem] = store.delivery_problems(db)
    assert (problem["code"], problem["given_up"]) == ("token_revoked", 1)
    assert "reinstall the app and update SLACK_BOT_TOKEN" in problem["error"]

    slack.clear_faults()
    config_other = make_config(servers=({"name": "EX02", "channel": "C0EX02"},))
    scanner(logs["EX02"], 1, account="CONTOSO\\other")
    sweep(db, config_other, clock)               # a message elsewhere gets through
    deliver_once(db, sender, config, clock)
    assert len(slack.messages(CHANNEL)) == 1


def test_backoff_grows_and_is_capped():
    assert [backoff(n, False).total_seconds() for n in range(8)] == [
        5, 10, 20, 40, 80, 160, 300, 300]
    assert [backoff(n, True).total_seconds() / 60 for n in range(6)] == [
        15, 30, 60, 120, 240, 240]
    assert backoff(10_000, False).total_seconds() == 300   # no overflow after years of retries


def test_status_and_the_home_tab_show_what_slack_refused_and_the_fix(
        logs, db, make_config, slack, clock):
    from handlers.commands import answer
    from handlers.common import Request
    from handlers.home import home_view
    config = make_config(servers=("EX01",))
    slack.set_joined(CHANNEL, False)
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    status = answer(Request(db=db, config=config, now=clock(), user_id="U0ALICE",
                            channel_id=CHANNEL), "status").text
    assert "1 message held back since" in status and "retrying" in status
    assert "type `/invite @SubmitWatch` there" in status
    home = home_view(db, config, clock(), "U0ALICE")
    texts = "\n".join(b["text"]["text"] for b in home["blocks"] if b.get("text")
                      and b["type"] == "section")
    assert "*Slack delivery problems*" in texts and "/invite @SubmitWatch" in texts


# --- mutation-testing gaps ----------------------------------------------------------------------

def test_an_error_a_person_must_fix_is_given_up_exactly_after_a_day(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    sender = SlackSender.from_config(config.slack)
    slack.fail_next("chat.postMessage", error="channel_not_found", times=1000)
    deliver_once(db, sender, config, clock)
    clock.advance(seconds=GIVE_UP_AFTER.total_seconds())
    deliver_once(db, sender, config, clock)
    [problem] = store.delivery_problems(db)
    assert (problem["code"], problem["given_up"]) == ("channel_not_found", 1)


def test_while_slack_is_down_one_round_tries_once_not_every_message(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    for account in ("CONTOSO\\a", "CONTOSO\\b", "CONTOSO\\c"):
        scanner(logs["EX01"], 1, account=account)
    poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    slack.set_down(True)
    result = deliver_once(db, SlackSender.from_config(config.slack, retries=0), config, clock)
    assert result.failed == 1 and len(slack.calls_to("chat.postMessage")) == 1
    assert store.outbox_depth(db) == 3
    slack.set_down(False)
    clock.advance(minutes=1)
    assert deliver_once(db, SlackSender.from_config(config.slack), config, clock).sent == 3


def test_a_thread_note_is_not_held_back_by_an_update_waiting_to_coalesce(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01", "EX02"))
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    clock.advance(seconds=1)
    scanner(logs["EX02"], 1)            # a new server: an update (coalesced 10 s) and a note
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert message["edits"] == 0 and len(message["replies"]) == 1
    clock.advance(seconds=10)
    sweep(db, config, clock)
    assert slack.messages(CHANNEL)[0]["edits"] == 1


def test_a_recovery_whose_alert_was_deleted_is_posted_on_its_own_and_the_alert_forgotten(
        logs, db, make_config, slack, winrm, clock):
    config = make_config(servers=("EX01",), polling={"alert_after_failures": 1})
    winrm.inject("EX01", "unauthorized", times=None)
    clock.advance(minutes=1)
    sweep(db, config, clock)
    [alert] = slack.messages(CHANNEL)
    assert store.server_alert_ts(db, "EX01") == alert["ts"]
    winrm.clear_faults("EX01")
    slack.fail_next("chat.update", error="message_not_found")   # someone deleted the alert
    clock.advance(minutes=1)
    sweep(db, config, clock)
    alert, recovery = slack.messages(CHANNEL)
    assert "polls again since" in recovery["text"] and alert["replies"] == []
    assert store.server_alert_ts(db, "EX01") is None and store.outbox_depth(db) == 0


def test_a_given_up_server_alert_is_revived_by_any_later_success(db, clock):
    now = clock()
    with store.write_transaction(db):
        store.enqueue(db, None, "server_down", now, server="EX01")
    [row] = store.pending_messages(db, now)
    store.mark_retry(db, row.id, "not in channel", now, code="not_in_channel", failed_since=now)
    store.mark_failed(db, row.id, "not in channel")
    assert store.outbox_depth(db) == 0
    assert store.requeue_failed(db, "C0SOMEWHERE", now) == 1
    assert [r.id for r in store.pending_messages(db, now)] == [row.id]


def _ack_on_a_deleted_alert(db, make_config, logs, slack, clock):
    from bot.engine import chatops
    from bot.engine.chatops import Actor
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    chatops.acknowledge(db, incident.id, Actor("U0ALICE", "button", CHANNEL), "mine", clock())
    slack.fail_next("chat.update", error="message_not_found")   # someone deleted the alert
    for _ in range(4):
        clock.advance(minutes=10)
        sweep(db, config, clock)


def test_a_thread_note_of_a_deleted_alert_never_becomes_a_top_level_message(
        logs, db, make_config, slack, clock):
    _ack_on_a_deleted_alert(db, make_config, logs, slack, clock)
    assert {m["metadata"]["event_type"] for m in slack.messages(CHANNEL)} == {
        "submitwatch_incident"}


def test_a_deleted_alert_with_a_pending_thread_note_is_posted_again_with_the_note(
        logs, db, make_config, slack, clock):
    _ack_on_a_deleted_alert(db, make_config, logs, slack, clock)
    _, again = slack.messages(CHANNEL)
    assert "Acknowledged by <@U0ALICE>" in str(again["blocks"])
    assert len(again["replies"]) == 1 and store.outbox_depth(db) == 0
