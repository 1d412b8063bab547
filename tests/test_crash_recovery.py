"""A worker that dies mid-send: its claim is taken over at once, and a message that had reached
Slack is found by its metadata and recorded, never posted twice. Real SQLite, real slack_sdk,
the Slack stand-in; the dead worker is a real process that exited."""
from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import replace
from datetime import UTC, timedelta

from bot.engine import workers
from bot.engine.delivery import deliver_once
from bot.engine.poller import poll_server_once
from bot.slack.sender import SlackSender
from bot.sources.winrm import WinRMSource
from store import db as store
from tests.conftest import BOT_TOKEN, CHANNEL
from tests.helpers import scanner, sweep


def dead_owner() -> str:
    """The claim of a process on this host that has exited (and was reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return f"{workers.HOST}:{child.pid}:1"


def poll(db, config, clock):
    for server in config.servers:
        poll_server_once(db, WinRMSource(server, config.polling), config, clock)


def claimed_row(db, clock, owner):
    [row] = store.pending_messages(db, clock())
    with store.write_transaction(db):
        assert store.claim(db, row, clock(), owner)
    return row


def test_a_claim_of_a_dead_process_is_taken_over_at_once(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll(db, config, clock)
    claimed_row(db, clock, dead_owner())   # it died before reaching Slack
    result = deliver_once(db, SlackSender.from_config(config.slack), config, clock)
    assert result.sent == 1 and len(slack.messages(CHANNEL)) == 1
    assert slack.calls_to("conversations.history")  # it looked first


def test_a_post_that_reached_slack_before_the_crash_is_recorded_not_repeated(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll(db, config, clock)
    row = claimed_row(db, clock, dead_owner())
    # What the dead worker did: Slack took its post; the worker died before its commit.
    incident = store.get_incident(db, row.incident_id)
    sender = SlackSender.from_config(config.slack)
    ts = sender.post(CHANNEL, "alert", [], metadata={
        "event_type": "submitwatch_incident",
        "event_payload": {"incident_id": incident.id, "outbox_id": row.id}}).ts
    assert incident.message_ts is None

    result = deliver_once(db, sender, config, clock)
    assert result.sent == 1
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert store.get_incident(db, incident.id).message_ts == ts
    assert store.outbox_depth(db) == 0

    # The adopted message is the living alert from now on.
    clock.advance(seconds=30)
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    [message] = slack.messages(CHANNEL)
    assert message["ts"] == ts and message["edits"] == 1


def test_a_thread_reply_that_reached_slack_is_not_repeated(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01", "EX02"))
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    clock.advance(seconds=30)
    scanner(logs["EX02"], 1)
    poll(db, config, clock)
    [_update, reply] = store.pending_messages(db, clock())
    with store.write_transaction(db):
        store.mark_superseded(db, _update.id)   # only the reply matters here
        assert store.claim(db, reply, clock(), dead_owner())
    incident = store.get_incident(db, reply.incident_id)
    sender = SlackSender.from_config(config.slack)
    sender.post(CHANNEL, "note", [], thread_ts=incident.message_ts, metadata={
        "event_type": "submitwatch_note",
        "event_payload": {"incident_id": incident.id, "outbox_id": reply.id}})
    deliver_once(db, sender, config, clock)
    [message] = slack.messages(CHANNEL)
    assert len(message["replies"]) == 1


def test_a_post_whose_answer_timed_out_is_looked_up_not_reposted(
        logs, db, make_config, slack, clock):
    """Slack took the post but the answer came too late: the retry finds it in the channel."""
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll(db, config, clock)
    slack.lose_answers("chat.postMessage")   # Slack posts it; its answer is lost on the way
    result = deliver_once(db, SlackSender.from_config(config.slack), config, clock)
    assert result.failed == 1 and "unreachable" in result.errors[0]
    [posted] = slack.messages(CHANNEL)

    clock.advance(seconds=10)   # an unanswered post waits a minute before the look-up
    assert deliver_once(db, SlackSender.from_config(config.slack), config, clock).sent == 0
    clock.advance(seconds=51)
    assert deliver_once(db, SlackSender.from_config(config.slack), config, clock).sent == 1
    assert len(slack.messages(CHANNEL)) == 1
    [incident] = store.open_incidents(db).values()
    assert incident.message_ts == posted["ts"]


def test_without_the_history_scope_it_still_delivers_and_says_why(
        logs, db, make_config, clock, caplog):
    from sim.slack_api import SlackStandIn
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL,),
                      scopes=("chat:write", "commands")) as narrow:
        config = make_config(servers=("EX01",), slack={"api_url": narrow.api_url})
        scanner(logs["EX01"], 1)
        poll(db, config, clock)
        claimed_row(db, clock, dead_owner())
        deliver_once(db, SlackSender.from_config(config.slack), config, clock)
        assert len(narrow.messages(CHANNEL)) == 1
    assert "lacks channels:history" in caplog.text


def test_a_live_claim_elsewhere_on_this_host_is_left_alone_until_it_times_out(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll(db, config, clock)
    import os
    claimed_row(db, clock, f"{workers.HOST}:{os.getppid()}:1")
    sender = SlackSender.from_config(config.slack)
    assert deliver_once(db, sender, config, clock).sent == 0
    clock.advance(seconds=store.CLAIM_TIMEOUT.total_seconds() - 1)
    assert deliver_once(db, sender, config, clock).sent == 0
    clock.advance(seconds=2)
    assert deliver_once(db, sender, config, clock).sent == 1


def test_claim_is_dead_decisions():
    from datetime import datetime
    now = datetime.now(UTC)
    timeout = timedelta(minutes=5)
    assert not workers.claim_is_dead(workers.OWNER, now, now, timeout)          # ours
    assert workers.claim_is_dead(workers.OWNER, now - timeout * 2, now, timeout)
    assert not workers.claim_is_dead("other-host:1:1", now, now, timeout)      # cannot tell
    assert workers.claim_is_dead(dead_owner(), now, now, timeout)
    import os
    assert workers.claim_is_dead(f"{workers.HOST}:{os.getpid()}:1", now, now, timeout)  # reused pid
    assert not workers.claim_is_dead(None, now, now, timeout)


def test_a_server_alert_that_reached_slack_before_the_crash_is_recorded_and_updated_later(
        logs, db, make_config, slack, winrm, clock):
    config = make_config(servers=("EX01",), polling={"alert_after_failures": 1})
    winrm.inject("EX01", "unauthorized", times=None)
    poll(db, config, clock)
    row = claimed_row(db, clock, dead_owner())
    sender = SlackSender.from_config(config.slack)
    ts = sender.post(CHANNEL, "not watched", [], metadata={
        "event_type": "submitwatch_server", "event_payload": {"server": "EX01",
                                                               "outbox_id": row.id}}).ts
    assert deliver_once(db, sender, config, clock).sent == 1
    assert len(slack.calls_to("chat.postMessage")) == 1
    assert store.server_alert_ts(db, "EX01") == ts
    winrm.clear_faults("EX01")
    clock.advance(minutes=1)
    sweep(db, config, clock)            # the recovery edits that alert and replies under it
    [alert] = slack.messages(CHANNEL)
    assert alert["ts"] == ts and alert["edits"] == 1 and len(alert["replies"]) == 1


def test_a_claim_taken_over_once_cannot_be_taken_over_again_with_the_stale_view(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    scanner(logs["EX01"], 1)
    poll(db, config, clock)
    claimed_row(db, clock, dead_owner())
    [stale] = store.pending_messages(db, clock())     # two workers both read the dead claim
    with store.write_transaction(db):
        assert store.claim(db, stale, clock(), "worker-a")
        assert not store.claim(db, stale, clock(), "worker-b")
        assert not store.claim(db, stale, clock(), "worker-a")   # not even by the same view
    with store.write_transaction(db):
        pending = replace(stale, state="pending")
        assert not store.claim(db, pending, clock(), "worker-c")  # it is not pending any more


def test_an_unreaped_killed_worker_is_dead_at_once():
    import signal
    from datetime import datetime
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        child.send_signal(signal.SIGKILL)
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:          # until it is a zombie (not yet reaped)
            with open(f"/proc/{child.pid}/stat") as stat:
                if stat.read().rsplit(")", 1)[1].split()[0] == "Z":
                    break
            time.sleep(0.01)
        now = datetime.now(UTC)
        assert workers.claim_is_dead(f"{workers.HOST}:{child.pid}:1", now, now,
                                     timedelta(minutes=5))
    finally:
        child.wait()


def test_a_claim_from_another_host_is_never_judged_by_a_local_pid():
    from datetime import datetime
    now = datetime.now(UTC)
    gone = dead_owner().split(":")[1]
    assert not workers.claim_is_dead(f"another-host:{gone}:1", now, now, timedelta(minutes=5))
