"""Issue 23, items 1 and 3: never send what Slack will refuse, never retry forever in silence,
and recover from a write that failed without waiting for the claim timeout.

Tables for the measure (bot.slack.blocks.size), the budget and the errors that will fail again;
then through the Slack stand-in, which enforces the block text limit as Slack does
(`msg_blocks_too_long`): a message refused full and taken shortened, one refused even shortened
(given up, counted, shown, said once), a storm of 200 accounts with 60-character names, and a
full disk while a row's result is being recorded."""
from __future__ import annotations

import sqlite3
from datetime import UTC, datetime

import pytest
from prometheus_client import generate_latest

from bot.core.config import ServerConfig
from bot.core.messages import SpreadNote
from bot.core.model import Incident
from bot.engine import delivery
from bot.engine.delivery import deliver_once
from bot.ops.metrics import registry_for
from bot.slack import alerts, replies
from bot.slack import digests as digest_view
from bot.slack.blocks import (
    BUDGET,
    TEXT_LIMIT,
    clip_units,
    context,
    fit,
    header,
    inert,
    section,
    size,
    units,
)
from bot.slack.sender import REFUSED_AS_SENT, DeliveryError, SlackSender
from sim.slack_blocks import MAX_BLOCK_TEXT, block_text_length, validate_blocks
from store import db as store
from store import digests
from tests.blocks import mrkdwn_texts
from tests.conftest import BOT_TOKEN, CHANNEL
from tests.helpers import FE, scanner, sweep

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
SERVERS = {f"EX{n:02d}": ServerConfig(name=f"EX{n:02d}", url="https://x/wsman", username="u",
                                      password_env="P") for n in range(8)}


def incident(account="CONTOSO\\svc-scanner", servers=(("EX01", "EX01"),), connectors=(),
             **kw) -> Incident:
    return Incident(key=account.casefold(), account=account, status="open", first_seen=T0,
                    channel=CHANNEL,
                    last_seen=T0, event_count=3, servers=servers, opened_at=T0,
                    connectors=connectors, id=7, event_ids=(1018,), **kw)


# --- the measure -----------------------------------------------------------------------------

@pytest.mark.parametrize("blocks, expected", [
    ([section("abc")], 3),
    ([section("🙂")], 2),                                       # outside the BMP: two units
    ([{"type": "section", "fields": [{"type": "mrkdwn", "text": "ab"},
                                     {"type": "plain_text", "text": "cd"}]}], 4),
    ([header("Title")], 5),
    ([context("x" * 10)], 10),
    ([{"type": "rich_text", "elements": [{"type": "rich_text_section", "elements": [
        {"type": "text", "text": "hello "}, {"type": "emoji", "name": "fire"},
        {"type": "user", "user_id": "U0ALICE"},
        {"type": "date", "timestamp": 0, "format": "{date}", "fallback": "1970"}]}]}],
     6 + len("<@fire>") + len("<@U0ALICE>") + 4),
    ([{"type": "rich_text", "elements": [{"type": "rich_text_preformatted", "elements": [
        {"type": "text", "text": "Get-X\nSet-Y"}]}]}], 11),
    ([{"type": "actions", "elements": [
        {"type": "button", "action_id": "a" * 50, "value": "v" * 500,
         "text": {"type": "plain_text", "text": "Ack"}},
        {"type": "static_select", "action_id": "s", "placeholder": {"type": "plain_text",
                                                                     "text": "Snooze"},
         "options": [{"text": {"type": "plain_text", "text": "1 hour"}, "value": "1:3600"}]}]}],
     3 + 6 + 6),                                                # ids and values are not text
])
def test_size_counts_every_text_of_every_block_in_utf16_units(blocks, expected):
    assert size(blocks) == expected
    assert block_text_length(blocks) <= expected   # ours is the higher measure


@pytest.mark.parametrize("text, limit, expected", [
    ("short", 150, "short"),
    ("x" * 151, 150, "x" * 149 + "…"),
    ("🙂" * 80, 150, "🙂" * 74 + "…"),                        # 160 units: cut at 149
    ("a🙂b", 3, "a…"),                                         # never half a surrogate pair
])
def test_headers_and_options_are_clipped_in_utf16_units(text, limit, expected):
    assert clip_units(text, limit) == expected and units(clip_units(text, limit)) <= limit


def test_a_header_and_an_option_never_pass_their_limit_in_utf16_units():
    assert units(header("🙂" * 200)["text"]["text"]) <= 150
    option = digest_view._option(incident(account="CONTOSO\\" + "🙂" * 100))
    assert units(option["text"]["text"]) <= 75


@pytest.mark.parametrize("count, each, tail", [(10, 500, 0), (40, 500, 3), (60, 50, 2),
                                               (30, 2900, 3), (5, 3000, 0)])
def test_fit_keeps_the_head_and_the_tail_within_the_budget_and_says_so(count, each, tail):
    blocks = [section(f"{n:03d}" + "y" * (each - 3)) for n in range(count)]
    fitted = fit(blocks, tail=tail, more="the rest: /submitwatch fix")
    assert size(fitted) <= BUDGET and len(fitted) <= 50
    if size(blocks) <= BUDGET and count <= 50:
        assert fitted == blocks
        return
    assert fitted[-tail - 1 if tail else -1] == context("the rest: /submitwatch fix")
    if tail:
        assert fitted[-tail:] == blocks[-tail:]
    kept = fitted[:len(fitted) - tail - 1]
    assert kept == blocks[:len(kept)]


# --- what notifications show -------------------------------------------------------------------

@pytest.mark.parametrize("name", ["CONTOSO\\*boss*", "CONTOSO\\:fire:", "<!channel>",
                                  "_x_ ~y~ `z`", "a:b:c:", ":+1:"])
def test_a_name_in_the_notification_text_formats_pings_and_draws_nothing(name):
    text, _ = alerts.alert(incident(account=name), SERVERS)
    shown = inert(name)
    assert shown in text
    for marker in ("*boss*", ":fire:", "<!channel>", "_x_", "~y~", "`z`", ":b:", ":+1:"):
        assert marker not in text
    note, _ = alerts.thread_note(incident(account=name), SpreadNote(servers=("EX02",)), SERVERS)
    assert shown in note and "*boss*" not in note and ":fire:" not in note


def test_the_notification_text_is_bounded_with_many_servers_and_long_names():
    servers = tuple((f"EX{n:03d}-" + "n" * 56, f"EX{n:03d}") for n in range(300))
    text, blocks = alerts.alert(incident(account="CONTOSO\\" + "a" * 400, servers=servers),
                                SERVERS)
    assert units(text) <= TEXT_LIMIT and "and 295 more" in text
    assert size(blocks) <= BUDGET and validate_blocks(blocks) == []


def test_show_fix_for_four_servers_and_three_connectors_each_fits_and_says_where_the_rest_is():
    servers = tuple((f"EX{n:02d}", f"EX{n:02d}") for n in range(4))
    connectors = tuple(f"EX{s:02d}\\Relay {c} for the scanners of building {c}" + "x" * 40
                       for s in range(4) for c in range(3))
    inc = incident(account="CONTOSO\\" + "s" * 60, servers=servers, connectors=connectors)
    _, blocks = alerts.fix_message(inc, SERVERS)
    assert size(blocks) <= BUDGET and validate_blocks(blocks) == []
    _, alert_blocks = alerts.alert(inc, SERVERS)
    assert size(alert_blocks) <= BUDGET
    assert alert_blocks[-1]["type"] == "context" and alert_blocks[-2]["type"] == "actions"


def test_a_status_with_refused_messages_says_so():
    problems = [{"error": "Slack chat.update failed (msg_blocks_too_long): too long",
                 "code": "msg_blocks_too_long", "messages": 2, "since": T0, "given_up": 0,
                 "refused": 2}]
    text, blocks = replies.status_view([], open_count=0, outbox=0, now=T0, interval=60,
                                       late_after=180, delivery=problems)
    said = "\n".join(mrkdwn_texts(blocks))
    assert "2 messages Slack refused (msg_blocks_too_long)" in said
    assert "not retried" in said and "Slack refused" in text


# --- the errors that will fail again -----------------------------------------------------------

@pytest.mark.parametrize("code, refused", [
    ("msg_blocks_too_long", True), ("invalid_blocks", True), ("invalid_blocks_format", True),
    ("no_text", True), ("invalid_arguments", True), ("msg_too_long", True),
    ("not_in_channel", False), ("ratelimited", False), ("internal_error", False),
])
def test_errors_slack_would_answer_again_are_permanent_and_refused(slack, code, refused):
    slack.fail_next("chat.postMessage", error=code, status=200)
    sender = SlackSender.from_config(_slack_config(slack), retries=0)
    with pytest.raises(DeliveryError) as caught:
        sender.post(CHANNEL, "hi", [section("hi")])
    assert caught.value.code == code and caught.value.refused is refused
    assert (code in REFUSED_AS_SENT) is refused
    if refused:
        assert caught.value.permanent


def _slack_config(slack):
    from bot.core.config import Secret, SlackConfig
    return SlackConfig(channel=CHANNEL, api_url=slack.api_url, bot_token=Secret(BOT_TOKEN))


# --- the stand-in ---------------------------------------------------------------------------------

def test_the_stand_in_refuses_too_much_block_text_as_slack_does(slack):
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    sections = [section("x" * 3000)] * 4
    with pytest.raises(SlackApiError) as caught:
        client.chat_postMessage(channel=CHANNEL, text="x", blocks=sections)   # 12,000 + 0
        client.chat_postMessage(channel=CHANNEL, text="x",
                                blocks=[*sections, section("y")])
    assert caught.value.response["error"] == "msg_blocks_too_long"
    assert len(slack.messages(CHANNEL)) == 1 and MAX_BLOCK_TEXT == 12_000
    posted = slack.messages(CHANNEL)[0]
    with pytest.raises(SlackApiError) as caught:
        client.chat_update(channel=CHANNEL, ts=posted["ts"], text="x",
                           blocks=[section("🙂" * 1500)] * 5)   # 7,500 characters, 15,000 units
    assert caught.value.response["error"] == "msg_blocks_too_long"
    client.chat_postMessage(channel=CHANNEL, text="t" * 9000, blocks=[section("ok")])  # not 4,000
    slack.max_block_text = 100                                                 # configurable
    with pytest.raises(SlackApiError):
        client.chat_postMessage(channel=CHANNEL, text="x", blocks=[section("z" * 101)])


# --- through delivery -----------------------------------------------------------------------------

def _alert_config(make_config):
    return make_config(servers=("EX01",))


def _given_up_metric(config, clock) -> str:
    registry = registry_for(lambda: store.open_db(config.store.path, migrate=False), clock)
    return generate_latest(registry).decode()


def test_an_alert_refused_as_too_long_is_sent_once_shortened(logs, db, make_config, slack,
                                                             clock, monkeypatch):
    config = _alert_config(make_config)
    slack.max_block_text = 900                   # Slack's limit, scaled down with ...
    monkeypatch.setattr(delivery, "SMALL_BUDGET", 800)   # ... the smaller rendering's budget
    scanner(logs["EX01"], 3)
    _, result = sweep(db, config, clock)
    assert result.sent == 1 and result.failed == 0
    [alert] = slack.messages(CHANNEL)
    assert block_text_length(alert["blocks"]) <= 800
    assert "More did not fit in one Slack message" in "\n".join(mrkdwn_texts(alert["blocks"]))
    refused = [c for c in slack.calls_to("chat.postMessage") if c.error]
    assert [c.error for c in refused] == ["msg_blocks_too_long"]
    assert size(refused[0].params["blocks"]) > 900
    assert store.outbox_depth(db) == 0 and store.delivery_problems(db, clock()) == []
    assert 'submitwatch_slack_messages_refused_total{error="msg_blocks_too_long",' \
           'outcome="shortened"}' in _given_up_metric(config, clock)


def test_an_alert_refused_even_shortened_is_given_up_counted_shown_and_said_once(
        logs, db, make_config, slack, clock):
    config = _alert_config(make_config)
    slack.fail_next("chat.postMessage", error="msg_blocks_too_long", status=200, times=2)
    scanner(logs["EX01"], 3)
    _, result = sweep(db, config, clock)
    assert result.failed == 1
    assert store.outbox_depth(db) == 1   # the notice, sent on the next round
    clock.advance(seconds=1)
    sweep(db, config, clock)
    [notice] = slack.messages(CHANNEL)
    assert "Slack refused the alert for incident #1 (msg_blocks_too_long)" in notice["text"]
    assert "/submitwatch show #1" in notice["text"]
    [problem] = store.delivery_problems(db, clock())
    assert problem["refused"] == 1 and problem["code"] == "msg_blocks_too_long"
    assert store.outbox_depth(db) == 0                       # nothing stuck
    metrics = _given_up_metric(config, clock)
    assert "submitwatch_outbox_refused_messages 1.0" in metrics
    assert 'outcome="given_up"' in metrics
    # More events: the incident has no alert to update, nothing waits forever, no new notice.
    calls = len(slack.calls)
    for _ in range(3):
        scanner(logs["EX01"], 1)
        clock.advance(minutes=10)
        sweep(db, config, clock)
    assert store.outbox_depth(db) == 0 and len(slack.messages(CHANNEL)) == 1
    assert not [c for c in slack.calls[calls:] if c.method.startswith("chat.")]
    # status and Home list it.
    _, blocks = replies.status_view([], open_count=1, outbox=0, now=clock(), interval=60,
                                    late_after=180, delivery=store.delivery_problems(db, clock()))
    assert "Slack refused (msg_blocks_too_long)" in "\n".join(mrkdwn_texts(blocks))
    from handlers.home import home_view
    home = home_view(db, config, clock(), "U0ALICE")
    assert "Slack refused (msg_blocks_too_long)" in "\n".join(mrkdwn_texts(home["blocks"]))
    from bot.ops.check import given_up_lines
    [line] = given_up_lines(config, clock())
    assert line.startswith("Slack refused 1 message(s) (msg_blocks_too_long) and SubmitWatch "
                           "gave them up since")


def test_a_digest_refused_as_too_long_is_sent_smaller(logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    for n in range(30):
        for _ in range(2):
            logs["EX01"].append(FE, 1018, (f"CONTOSO\\{n:02d}-" + "q" * 57,
                                           "Client Frontend EX01"))
    slack.max_block_text = 2_900        # a digest of 25 lines is refused; smaller is taken
    sweep(db, config, clock)
    for _ in range(6):
        clock.advance(seconds=31)
        sweep(db, config, clock)
    [digest] = [m for m in slack.messages(CHANNEL) if m["text"].startswith("Storm")]
    assert block_text_length(digest["blocks"]) <= 2_900
    text = "\n".join(mrkdwn_texts(digest["blocks"]))
    assert "`/submitwatch history` shows every one" in text
    assert store.outbox_depth(db) == 0


# --- a storm of 200 accounts with 60-character names ---------------------------------------------

def test_a_storm_of_200_long_names_fits_every_message_and_represents_every_incident(
        logs, db, make_config, slack, clock):
    config = make_config(servers=("EX01",))
    assert slack.max_block_text == MAX_BLOCK_TEXT                # the limit is on
    names = [f"CONTOSO\\{n:03d}-" + "scanner-of-building-seven-floor-" + "x" * 16
             for n in range(200)]
    assert all(len(n) == 60 for n in names)
    for name in names:
        for _ in range(2):
            logs["EX01"].append(FE, 1018, (name, "Client Frontend EX01 with a long name xx"))
    sweep(db, config, clock)
    for _ in range(20):
        clock.advance(seconds=31)
        sweep(db, config, clock)
    chat = [c for c in slack.calls if c.method.startswith("chat.")]
    assert chat and all(c.ok for c in chat), [c.error for c in chat if not c.ok]  # none refused
    assert store.outbox_depth(db) == 0                                               # none stuck
    assert not db.execute("SELECT count(*) FROM outbox WHERE state IN ('dead', 'failed')"
                          ).fetchone()[0]
    top = slack.messages(CHANNEL)
    [digest] = [m for m in top if m["text"].startswith("Storm")]
    shown = "\n".join(mrkdwn_texts(digest["blocks"]))
    for reply in digest["replies"]:
        shown += "\n".join(mrkdwn_texts(reply["blocks"]))
    alone = {i.account for i in store.open_incidents(db).values() if i.message_ts}
    for name in names:       # every incident: its own alert, or the digest or its thread
        assert name in alone or f"`{name}`" in shown, name
    sizes = [block_text_length(m["blocks"]) for m in top] + [
        block_text_length(r["blocks"]) for m in top for r in m["replies"]]
    assert max(sizes) <= BUDGET
    # The thread's replies say which of how many they detail.
    titles = [mrkdwn_texts(r["blocks"])[0].split("\n")[0] for r in digest["replies"]]
    assert titles[0].startswith("*Incidents 1–") and "of the 195 that joined" in titles[-1]
    print(f"largest message: {max(sizes)} units of block text; digest "
          f"{block_text_length(digest['blocks'])}; {len(digest['replies'])} replies")
    assert digests.get_digest(db, 1) is not None


# --- a full disk while the result is recorded ------------------------------------------------------

def test_a_claim_whose_result_could_not_be_written_is_retried_at_once(
        logs, db, make_config, slack, clock, monkeypatch):
    config = _alert_config(make_config)
    scanner(logs["EX01"], 1)
    from bot.engine.poller import poll_server_once
    from bot.sources.winrm import WinRMSource
    poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    sender = SlackSender.from_config(config.slack)
    real = store.mark_sent

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(store, "mark_sent", disk_full)
    with pytest.raises(store.StoreError, match="is full"):
        deliver_once(db, sender, config, clock)
    assert len(slack.messages(CHANNEL)) == 1                # Slack took it; we could not say so
    [row] = db.query("SELECT * FROM outbox WHERE kind = 'post'")
    assert row["state"] == "sending"
    monkeypatch.setattr(store, "mark_sent", real)           # space again
    clock.advance(seconds=1)                                # not 5 minutes
    deliver_once(db, sender, config, clock)
    [row] = db.query("SELECT * FROM outbox WHERE kind = 'post'")
    assert row["state"] == "sent" and len(slack.messages(CHANNEL)) == 1   # found, not posted again
    [incident_now] = store.open_incidents(db).values()
    assert incident_now.message_ts == slack.messages(CHANNEL)[0]["ts"]


def test_a_claim_left_behind_is_released_in_the_database_for_other_workers(
        logs, db, make_config, slack, clock, monkeypatch):
    config = _alert_config(make_config)
    scanner(logs["EX01"], 1)
    from bot.engine.poller import poll_server_once
    from bot.sources.winrm import WinRMSource
    poll_server_once(db, WinRMSource(config.servers[0], config.polling), config, clock)
    slack.fail_next("chat.postMessage", status=503, times=3)
    real = store.mark_retry

    def disk_full(*args, **kwargs):
        raise sqlite3.OperationalError("database or disk is full")
    monkeypatch.setattr(store, "mark_retry", disk_full)
    with pytest.raises(store.StoreError):
        deliver_once(db, SlackSender.from_config(config.slack, retries=0), config, clock)
    monkeypatch.setattr(store, "mark_retry", real)
    [row] = db.query("SELECT * FROM outbox WHERE kind = 'post'")
    # Still 'sending' (whoever sends it looks in Slack first), but any worker may take it now.
    assert row["state"] == "sending" and row["claimed_at"] is None
    assert delivery._left_behind(store.pending_messages(db, clock())[0])
