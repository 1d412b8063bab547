"""Acknowledge and snooze, end to end below the Slack listeners: real pywinrm -> simulator,
real SQLite, bot.engine.chatops, real delivery through slack_sdk -> the Slack stand-in."""
from __future__ import annotations

import pytest

from bot.engine import chatops
from bot.engine.chatops import ActionError
from bot.slack.alerts import ACTION_ACK, ACTION_SNOOZE, ACTION_UNACK, ACTION_UNSNOOZE
from store import chat
from store import db as store
from tests.blocks import prose
from tests.conftest import CHANNEL
from tests.helpers import ALICE, BOB, ask, scanner, sweep

HOUR = 3600


def elements(message):
    """action_id of each interactive element on the message."""
    return [e["action_id"] for b in message["blocks"] if b["type"] == "actions"
            for e in b["elements"]]


def context_text(message):
    return "\n".join(e["text"] for b in message["blocks"] if b["type"] == "context"
                     for e in b["elements"])


def test_an_alert_offers_acknowledge_snooze_fix_and_mark_fixed(posted):
    _, incident, message = posted
    assert elements(message) == [ACTION_ACK, ACTION_SNOOZE, "submitwatch_show_fix",
                                 "submitwatch_fixed"]
    [select] = [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]
                if e["type"] == "static_select"]
    assert [o["value"] for o in select["options"]] == [
        f"{incident.id}:3600", f"{incident.id}:14400", f"{incident.id}:86400",
        f"{incident.id}:604800"]


def test_ack_updates_the_alert_in_place_records_the_thread_and_the_audit(
        posted, db, slack, clock):
    config, incident, _ = posted
    clock.advance(seconds=5)
    chatops.acknowledge(db, incident.id, ALICE, "calling the scanner vendor", clock())
    sweep(db, config, clock)

    [message] = slack.messages(CHANNEL)
    assert message["edits"] == 1
    assert "Acknowledged by <@U0ALICE> at " in context_text(message)
    assert "calling the scanner vendor" in context_text(message)
    assert elements(message)[0] == ACTION_UNACK
    [note] = message["replies"]
    assert note["text"].startswith("Acknowledged by <@U0ALICE> at ")
    [row] = chat.audit_trail(db, incident.id)
    assert (row["user_id"], row["action"], row["via"], row["outcome"], row["channel"]) == (
        "U0ALICE", "ack", "button", "done", CHANNEL)
    assert row["before"]["acked_by"] is None and row["after"]["acked_by"] == "U0ALICE"
    assert row["detail"] == "calling the scanner vendor"


def test_unack_gives_the_alert_back_its_acknowledge_button(posted, db, slack, clock):
    config, incident, _ = posted
    chatops.acknowledge(db, incident.id, ALICE, None, clock())
    sweep(db, config, clock)
    chatops.unacknowledge(db, incident.id, BOB, clock())
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert elements(message)[0] == ACTION_ACK
    assert "Acknowledged" not in context_text(message)
    assert "<@U0BOB> removed the acknowledgement of <@U0ALICE>" in message["replies"][-1]["text"]
    assert [r["action"] for r in chat.audit_trail(db, incident.id)] == ["ack", "unack"]


def test_acknowledging_twice_or_a_missing_or_resolved_incident_says_why(posted, db, clock):
    _, incident, _ = posted
    chatops.acknowledge(db, incident.id, ALICE, None, clock())
    with pytest.raises(ActionError, match="already acknowledged"):
        chatops.acknowledge(db, incident.id, ALICE, None, clock())
    with pytest.raises(ActionError, match="no incident #999"):
        chatops.acknowledge(db, 999, ALICE, None, clock())
    chatops.unacknowledge(db, incident.id, BOB, clock())
    with pytest.raises(ActionError, match="not acknowledged"):
        chatops.unacknowledge(db, incident.id, BOB, clock())
    db.execute("UPDATE incidents SET status = 'resolved'")
    with pytest.raises(ActionError, match="resolved"):
        chatops.acknowledge(db, incident.id, BOB, None, clock())


def test_someone_else_acking_takes_over_and_the_thread_says_from_whom(posted, db, slack, clock):
    config, incident, _ = posted
    chatops.acknowledge(db, incident.id, ALICE, None, clock())
    chatops.acknowledge(db, incident.id, BOB, None, clock())
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert "taking over from <@U0ALICE>" in message["replies"][-1]["text"]
    assert store.get_incident(db, incident.id).acked_by == "U0BOB"


def test_an_acknowledged_incident_keeps_counting_but_never_re_alerts(
        posted, logs, db, slack, clock):
    config, incident, _ = posted
    chatops.acknowledge(db, incident.id, ALICE, None, clock())
    sweep(db, config, clock)
    replies_before = len(slack.messages(CHANNEL)[0]["replies"])
    clock.advance(seconds=60)
    scanner(logs["EX02"], 3)   # spreads to a new server: normally a thread note
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert len(message["replies"]) == replies_before
    assert "Events: 5" in prose(message["blocks"])
    assert len([c for c in slack.calls_to("chat.postMessage")
                if not c.params.get("thread_ts")]) == 1


def test_a_snoozed_incident_collects_silently_and_comes_back_when_the_snooze_ends(
        posted, logs, db, slack, clock):
    config, incident, _ = posted
    chatops.snooze(db, incident.id, HOUR, "scanner firmware update tonight", ALICE, clock())
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert ACTION_UNSNOOZE in elements(message) and ACTION_SNOOZE not in elements(message)
    assert "Snoozed (this incident) by <@U0ALICE>" in context_text(message)
    assert "scanner firmware update tonight" in context_text(message)
    assert len(message["replies"]) == 1

    clock.advance(minutes=30)
    scanner(logs["EX02"], 4)              # spread while snoozed: counted, no thread note
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert len(message["replies"]) == 1
    assert "Events: 6" in prose(message["blocks"])

    clock.advance(minutes=31)
    assert chatops.end_expired_snoozes(db, clock()) == 1
    assert chatops.end_expired_snoozes(db, clock()) == 0
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert "Snoozed" not in context_text(message) and ACTION_SNOOZE in elements(message)
    assert "The snooze ended at" in message["replies"][-1]["text"]
    assert [r["action"] for r in chat.audit_trail(db, incident.id)] == [
        "snooze", "snooze_expired"]
    assert chat.audit_trail(db, incident.id)[1]["user_id"] == chatops.SYSTEM


def test_an_account_snoozed_in_advance_is_not_posted_until_the_snooze_ends(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    chatops.snooze(db, "CONTOSO\\SVC-Backup", 2 * HOUR, "backup job migration", BOB, clock())
    [row] = chat.recent_audit(db)
    assert row["target"] == "account CONTOSO\\SVC-Backup" and row["incident_id"] is None
    scanner(logs["EX01"], 3, account="contoso\\svc-backup")
    sweep(db, config, clock)
    assert slack.messages(CHANNEL) == []
    [incident] = store.open_incidents(db).values()
    assert incident.event_count == 3

    clock.advance(hours=2, seconds=1)
    chatops.end_expired_snoozes(db, clock())
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert "contoso\\svc-backup" in message["text"] and "(3 events)" in message["text"]


def test_unsnooze_by_account_ends_it_and_brings_the_alert_back(posted, db, slack, clock):
    config, incident, _ = posted
    chatops.snooze(db, "contoso\\svc-scanner", HOUR, "known", ALICE, clock())
    sweep(db, config, clock)
    assert "Snoozed (this account)" in context_text(slack.messages(CHANNEL)[0])
    ended = chatops.unsnooze(db, "CONTOSO\\svc-scanner", BOB, clock())
    assert len(ended) == 1 and chat.active_snoozes(db, clock()) == []
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert "Snoozed" not in context_text(message)
    assert "<@U0BOB> ended the snooze" in message["replies"][-1]["text"]
    with pytest.raises(ActionError, match="no snooze is in force"):
        chatops.unsnooze(db, incident.id, BOB, clock())


def test_a_new_snooze_replaces_the_old_one_and_long_ones_are_refused(posted, db, clock):
    _, incident, _ = posted
    chatops.snooze(db, incident.id, HOUR, "first", ALICE, clock())
    second = chatops.snooze(db, incident.id, 4 * HOUR, "longer", BOB, clock())
    assert chat.active_snoozes(db, clock()) == [second]
    with pytest.raises(ActionError, match="at most 90 days"):
        chatops.snooze(db, incident.id, 91 * 24 * HOUR, "forever", ALICE, clock())


def test_an_ack_while_a_coalesced_update_waits_is_sent_without_the_delay(
        posted, logs, db, slack, clock):
    config, incident, _ = posted
    clock.advance(seconds=1)
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)          # update held back by incidents.update_interval (10 s)
    assert slack.messages(CHANNEL)[0]["edits"] == 0
    chatops.acknowledge(db, incident.id, ALICE, None, clock())
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert message["edits"] == 1 and "Acknowledged by <@U0ALICE>" in context_text(message)


def test_a_refusal_is_audited(posted, db, clock):
    _, incident, _ = posted
    chatops.record_refusal(db, BOB, "ack", f"#{incident.id}", "not allowed", clock(),
                           incident.id)
    [row] = chat.audit_trail(db, incident.id)
    assert (row["outcome"], row["user_id"], row["detail"]) == ("refused", "U0BOB", "not allowed")
    assert store.get_incident(db, incident.id).acked_by is None


# --- the same through /submitwatch ------------------------------------------------------------

def test_slash_ack_and_unack(posted, db, clock):
    config, incident, _ = posted
    reply = ask(db, config, clock, f"ack #{incident.id} on it, calling the vendor")
    assert reply.text.startswith(f"Acknowledged #{incident.id}.") and not reply.share
    assert store.get_incident(db, incident.id).ack_note == "on it, calling the vendor"
    assert chat.audit_trail(db, incident.id)[0]["via"] == "slash"
    assert ask(db, config, clock, f"unack {incident.id}").text == (
        f"#{incident.id} is no longer acknowledged.")
    assert "is not acknowledged" in ask(db, config, clock, f"unack #{incident.id}").text


def test_slash_snooze_an_account_and_unsnooze_it(posted, db, clock):
    config, incident, _ = posted
    reply = ask(db, config, clock, 'snooze "CONTOSO\\svc-scanner" 4h vendor is replacing it')
    assert reply.text.startswith("Snoozed *CONTOSO\\svc-scanner* (every incident of this account")
    [snooze] = chat.active_snoozes(db, clock())
    assert (snooze.kind, snooze.reason) == ("account", "vendor is replacing it")
    assert (snooze.until - clock()).total_seconds() == 4 * HOUR
    reply = ask(db, config, clock, "unsnooze contoso\\SVC-SCANNER")
    assert reply.text.startswith("Ended 1 snooze(s) of *contoso\\SVC-SCANNER*")


@pytest.mark.parametrize("text, expected", [
    ("ack", "Say which incident"),
    ("ack 12abc", "is not an incident number"),
    ("ack #999", "There is no incident #999"),
    ("snooze #1 4h", "Say what to snooze, for how long, and why"),
    ("snooze #1 soon because", "`soon` is not a duration"),
    ("snooze #1 0s because", "`0s` is not a duration"),
    ("snooze #1 100d because", "at most 90 days"),
    ("snooze #1 1h " + "x" * 400, "keep it under 300"),
    ("unsnooze", "Say which incident"),
    ("ack #1 --force", "unknown option `--force`"),
])
def test_slash_mistakes_are_explained_with_the_usage(posted, db, clock, text, expected):
    config, _, _ = posted
    reply = ask(db, config, clock, text)
    assert expected in reply.text
    assert store.get_incident(db, 1).acked_by is None and chat.active_snoozes(db, clock()) == []


def test_slash_refuses_people_without_permission_and_audits_it(posted, db, clock, make_config):
    _, incident, _ = posted
    config = make_config(servers=("EX01", "EX02"), permissions={"users": ["U0ALICE"]})
    reply = ask(db, config, clock, f"ack #{incident.id}", user="U0MALLORY")
    assert "limited to <@U0ALICE>" in reply.text
    assert store.get_incident(db, incident.id).acked_by is None
    [row] = chat.audit_trail(db, incident.id)
    assert (row["user_id"], row["action"], row["outcome"]) == ("U0MALLORY", "ack", "refused")
    assert ask(db, config, clock, f"ack #{incident.id}").text.startswith("Acknowledged")


def test_commands_answer_only_in_the_configured_channels(posted, db, clock, make_config):
    config = make_config(permissions={"channels": ["C0OPS"]})
    reply = ask(db, config, clock, "history", channel="C0RANDOM")
    assert reply.text.startswith("SubmitWatch answers commands only in <#C0OPS>")
    assert "only in" not in ask(db, config, clock, "help", channel="C0OPS").text


@pytest.mark.parametrize("text", ["", "frobnicate", "<!channel> hi", "HELP"])
def test_unknown_or_empty_input_shows_the_help(posted, db, clock, text):
    config, _, _ = posted
    reply = ask(db, config, clock, text)
    assert "/submitwatch ack &lt;#incident&gt; [note]" in reply.text
    assert "<!channel>" not in reply.text


# --- mutation-testing gaps: boundaries, undo paths and the audit of each ------------------------

def test_a_snooze_of_exactly_90_days_is_allowed(posted, db, clock):
    _, incident, _ = posted
    snooze = chatops.snooze(db, incident.id, 90 * 24 * HOUR, "vendor contract", ALICE, clock())
    assert snooze.until - clock() == chatops.MAX_SNOOZE


def test_a_snooze_ends_exactly_at_its_until(posted, db, clock):
    _, incident, _ = posted
    snooze = chatops.snooze(db, incident.id, HOUR, "tonight", ALICE, clock())
    assert chat.active_snoozes(db, snooze.until) == [] and chat.snoozes_for(
        db, incident, snooze.until) == []
    assert chat.due_snoozes(db, snooze.until) == [snooze]


def test_ending_a_snooze_twice_keeps_who_ended_it_first(posted, db, clock):
    _, incident, _ = posted
    snooze = chatops.snooze(db, incident.id, HOUR, "tonight", ALICE, clock())
    chat.end_snooze(db, snooze.id, clock(), "U0BOB")
    clock.advance(minutes=1)
    chat.end_snooze(db, snooze.id, clock(), None)
    ended = chat.get_snooze(db, snooze.id)
    assert ended.ended_by == "U0BOB" and ended.ended_at < clock()


def test_unsnooze_by_account_ends_the_incidents_own_snooze_too_and_is_audited(
        posted, db, slack, clock):
    config, incident, _ = posted
    own = chatops.snooze(db, incident.id, HOUR, "own", ALICE, clock())
    chatops.snooze(db, "CONTOSO\\svc-scanner", 4 * HOUR, "account", ALICE, clock())
    ended = chatops.unsnooze(db, "contoso\\svc-scanner", BOB, clock())
    assert own in ended and len(ended) == 2 and chat.active_snoozes(db, clock()) == []
    trail = chat.audit_trail(db, incident.id)
    assert [r["action"] for r in trail] == ["snooze", "snooze", "unsnooze"]
    assert trail[-1]["user_id"] == "U0BOB" and trail[-1]["after"]["snoozed_until"] is None
    assert trail[-1]["before"]["snoozed_until"] == store.iso(clock() + _hours(4))


def _hours(n):
    from datetime import timedelta
    return timedelta(hours=n)


def test_the_audit_keeps_the_latest_end_of_all_snoozes_in_force(posted, db, clock):
    _, incident, _ = posted
    chatops.snooze(db, "CONTOSO\\svc-scanner", 4 * HOUR, "account", ALICE, clock())
    chatops.snooze(db, incident.id, HOUR, "own", ALICE, clock())
    chatops.acknowledge(db, incident.id, BOB, None, clock())
    ack = chat.audit_trail(db, incident.id)[-1]
    assert ack["before"]["snoozed_until"] == store.iso(clock() + _hours(4))


def test_unsnoozing_a_resolved_incident_ends_the_snooze_and_touches_no_message(
        posted, db, slack, clock):
    from bot.engine.poller import resolve_quiet_incidents
    config, incident, _ = posted
    chatops.snooze(db, incident.id, 7 * 24 * HOUR, "long", ALICE, clock())
    sweep(db, config, clock)
    clock.advance(hours=25)
    assert resolve_quiet_incidents(db, config, clock) == 1
    sweep(db, config, clock)
    edits, replies = slack.messages(CHANNEL)[0]["edits"], len(slack.messages(CHANNEL)[0]["replies"])
    [ended] = chatops.unsnooze(db, incident.id, BOB, clock())
    assert chat.get_snooze(db, ended.id).ended_by == "U0BOB"
    assert store.pending_messages(db, clock()) == []
    [row] = chat.recent_audit(db, 1)
    assert (row["action"], row["target"], row["incident_id"]) == (
        "unsnooze", f"#{incident.id}", None)
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert (message["edits"], len(message["replies"])) == (edits, replies)


def test_unack_of_a_resolved_incident_is_refused(posted, db, clock):
    _, incident, _ = posted
    chatops.acknowledge(db, incident.id, ALICE, None, clock())
    db.execute("UPDATE incidents SET status = 'resolved'")
    with pytest.raises(ActionError, match="resolved: nothing to unacknowledge"):
        chatops.unacknowledge(db, incident.id, BOB, clock())
    assert store.get_incident(db, incident.id).acked_by == "U0ALICE"
    assert [r["action"] for r in chat.audit_trail(db, incident.id)] == ["ack"]


def test_when_one_of_two_snoozes_expires_the_alert_stops_showing_it(posted, db, slack, clock):
    config, incident, _ = posted
    chatops.snooze(db, incident.id, HOUR, "firmware tonight", ALICE, clock())
    chatops.snooze(db, "CONTOSO\\svc-scanner", 4 * HOUR, "vendor replacing it", BOB, clock())
    sweep(db, config, clock)
    shown = context_text(slack.messages(CHANNEL)[0])
    assert "firmware tonight" in shown and "vendor replacing it" in shown
    clock.advance(hours=1, seconds=1)
    assert chatops.end_expired_snoozes(db, clock()) == 1
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert "vendor replacing it" in context_text(message)      # still snoozed by the account
    assert "firmware tonight" not in context_text(message)     # but not by an ended snooze


def test_acking_an_incident_never_posted_does_not_hold_back_its_alert(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    chatops.snooze(db, "CONTOSO\\svc-backup", HOUR, "migration", BOB, clock())
    scanner(logs["EX01"], 2, account="CONTOSO\\svc-backup")
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    chatops.acknowledge(db, incident.id, ALICE, "mine", clock())
    assert store.pending_messages(db, clock()) == []   # nothing to update: never posted
    clock.advance(hours=1, seconds=1)
    chatops.end_expired_snoozes(db, clock())
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert "Acknowledged by <@U0ALICE>" in context_text(message)
    assert store.outbox_depth(db) == 0


def test_unack_clears_the_note_too(posted, db, clock):
    _, incident, _ = posted
    chatops.acknowledge(db, incident.id, ALICE, "calling the vendor", clock())
    chatops.unacknowledge(db, incident.id, BOB, clock())
    after = store.get_incident(db, incident.id)
    assert (after.acked_by, after.acked_at, after.ack_note) == (None, None, None)


def test_a_snooze_that_expires_after_its_incident_resolved_touches_no_message(
        posted, db, slack, clock):
    from bot.engine.poller import resolve_quiet_incidents
    config, incident, _ = posted
    chatops.snooze(db, incident.id, 2 * 24 * HOUR, "long", ALICE, clock())
    clock.advance(hours=25)
    resolve_quiet_incidents(db, config, clock)
    sweep(db, config, clock)
    clock.advance(hours=24)
    assert chatops.end_expired_snoozes(db, clock()) == 1
    assert store.pending_messages(db, clock()) == []
    assert chat.active_snoozes(db, clock()) == []


def test_slash_snooze_takes_a_bare_incident_number_and_wants_a_reason(posted, db, clock):
    config, incident, _ = posted
    assert "Give a reason" in ask(db, config, clock, f'snooze #{incident.id} 1h ""').text
    assert chat.active_snoozes(db, clock()) == []
    reply = ask(db, config, clock, f"snooze {incident.id} 1h firmware")
    assert reply.text.startswith(f"Snoozed #{incident.id} (this incident)")
    [snooze] = chat.active_snoozes(db, clock())
    assert (snooze.kind, snooze.target) == ("incident", str(incident.id))


def test_share_is_recognised_in_any_case_and_a_bug_gets_an_apology(posted, db, clock, caplog):
    from handlers.commands import answer
    from handlers.common import Request
    config, _, _ = posted
    assert ask(db, config, clock, "servers --SHARE").share
    broken = Request(db=None, config=config, now=clock(), user_id="U0ALICE", channel_id=CHANNEL)
    reply = answer(broken, "status")
    assert reply.text.startswith("Sorry, `/submitwatch status` failed on our side")
    assert "Traceback" not in reply.text and "/submitwatch status failed" in caplog.text


def test_curly_quotes_from_slack_clients_group_words_like_straight_ones(posted, db, clock):
    config, _, _ = posted
    reply = ask(db, config, clock, "snooze \u201cCONTOSO\\svc-scanner\u201d 1h vendor")
    assert reply.text.startswith("Snoozed *CONTOSO\\svc-scanner*")
    [snooze] = chat.active_snoozes(db, clock())
    assert (snooze.kind, snooze.target) == ("account", "contoso\\svc-scanner")


def test_an_incident_that_grew_while_never_posted_is_posted_when_the_snooze_ends(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    chatops.snooze(db, "CONTOSO\\svc-backup", HOUR, "migration", BOB, clock())
    scanner(logs["EX01"], 2, account="CONTOSO\\svc-backup")
    sweep(db, config, clock)
    clock.advance(minutes=5)
    scanner(logs["EX01"], 1, account="CONTOSO\\svc-backup")
    sweep(db, config, clock)
    assert store.pending_messages(db, clock()) == []
    clock.advance(hours=1)
    chatops.end_expired_snoozes(db, clock())
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert "(3 events)" in message["text"] and store.outbox_depth(db) == 0
