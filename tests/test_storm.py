"""Storm digests: past incidents.storm_threshold new incidents in one channel within
incidents.storm_window, the rest are listed in one digest message instead of one post each.
The rule is pure (bot.engine.outbox), tested as a table; the storm end to end through the WinRM
simulator, the pipeline and the Slack stand-in, which enforces Slack's per-channel rate."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.core.messages import DETAILS, DigestMessage, HurryDigest
from bot.engine import chatops, outbox
from bot.engine.poller import end_storms
from bot.slack.digests import ACTION_DIGEST_ACK, ACTION_DIGEST_SNOOZE
from store import chat, digests
from store import db as store
from tests.blocks import mrkdwn_texts
from tests.conftest import BOT_TOKEN, CHANNEL
from tests.helpers import ALICE, FE, assert_no_markup, bolt_actions, click, sweep

T0 = datetime(2026, 12, 1, 9, 0, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


# --- the rules --------------------------------------------------------------------------------

@pytest.mark.parametrize("opened_recently, live, threshold, joins", [
    (0, False, 5, False),
    (4, False, 5, False),     # the fifth of the window is still posted
    (5, False, 5, True),      # the sixth starts the digest
    (0, True, 5, True),       # while a digest is live, every new one joins it
    (500, True, 0, False),    # threshold 0: never a digest
])
def test_which_new_incident_joins_the_digest(opened_recently, live, threshold, joins):
    assert outbox.joins_digest(opened_recently=opened_recently, live_digest=live,
                               threshold=threshold) is joins


@pytest.mark.parametrize("pending, joined, last, expected", [
    (set(), False, None, [DigestMessage("update", 7, not_before=T0)]),
    (set(), True, T0 - 10 * MINUTE, [DigestMessage("update", 7, not_before=T0),
                                     DigestMessage("reply", 7, not_before=T0,
                                                   detail={DETAILS: True})]),
    (set(), True, T0 - timedelta(seconds=5), [   # coalesced: 30 s after the last edit
        DigestMessage("update", 7, not_before=T0 + timedelta(seconds=25)),
        DigestMessage("reply", 7, not_before=T0 + timedelta(seconds=25),
                      detail={DETAILS: True})]),
    ({"post", DETAILS, "reply"}, True, None, []),   # the waiting post and reply show them
    ({"update"}, True, T0, [DigestMessage("reply", 7, not_before=T0 + timedelta(seconds=30),
                                          detail={DETAILS: True})]),
])
def test_a_digest_change_is_one_coalesced_update_and_one_detail_reply(pending, joined, last,
                                                                       expected):
    assert outbox.for_digest_change(7, pending=pending, joined=joined, last_message_at=last,
                                    now=T0, interval=outbox.DIGEST_INTERVAL) == expected


def test_a_digest_is_never_edited_more_often_than_every_30_seconds():
    assert outbox.digest_interval(timedelta(seconds=10)) == timedelta(seconds=30)
    assert outbox.digest_interval(timedelta(minutes=2)) == timedelta(minutes=2)


@pytest.mark.parametrize("last_joined, over", [
    (T0 - 9 * MINUTE, False), (T0 - 10 * MINUTE, True), (T0 - 60 * MINUTE, True)])
def test_a_storm_ends_after_a_window_without_a_new_incident(last_joined, over):
    assert outbox.storm_over(last_joined_at=last_joined, now=T0,
                             window=timedelta(minutes=10)) is over


def test_acting_on_a_digest_updates_it_at_once_and_says_so_in_its_thread():
    note = {"action": "ack", "by": "U0ALICE"}
    assert outbox.for_digest_action(3, set(), note) == [
        DigestMessage("update", 3), DigestMessage("reply", 3, detail=note)]
    assert outbox.for_digest_action(3, {"update"}, None) == [HurryDigest(3)]


@pytest.mark.parametrize("remaining, full, pending, more", [
    (10, False, set(), True), (0, False, set(), False), (10, True, set(), False),
    (10, False, {DETAILS}, False)])
def test_the_thread_details_the_rest_until_it_is_full(remaining, full, pending, more):
    out = outbox.more_details(4, remaining=remaining, full=full, pending=pending, now=T0,
                              interval=outbox.DIGEST_INTERVAL)
    assert out == ([DigestMessage("reply", 4, not_before=T0 + outbox.DIGEST_INTERVAL,
                                  detail={DETAILS: True})] if more else [])


# --- a storm end to end -----------------------------------------------------------------------

class Slow:
    """The test's clock as the stand-in's rate clock: seconds pass only when the test says."""

    def __init__(self, clock):
        self.clock = clock

    def __call__(self) -> float:
        return self.clock.now.timestamp()


def storm(log, accounts, start=0, events=2, prefix="CONTOSO\\scan-"):
    names = [f"{prefix}{n:04d}" for n in range(start, start + accounts)]
    for name in names:
        for _ in range(events):
            log.append(FE, 1018, (name, "Client Frontend EX01"))
    return names


def posts(slack, statuses=(200,)):
    return [c for c in slack.calls if c.method == "chat.postMessage" and c.status in statuses]


@pytest.fixture
def stormy(logs, db, make_config, slack, clock):
    """Slack's rate enforced on the stand-in; one sweep brings 30 new accounts on EX01."""
    clock.now = T0
    slack.limit_post_rate(1.0, burst=8, clock=Slow(clock), retry_after="0")
    config = make_config(servers=("EX01",))
    names = storm(logs["EX01"], 30)
    sweep(db, config, clock)
    return config, names


def thread(slack, ts):
    return slack.message(CHANNEL, ts)["replies"]


def the_digest(db):
    [digest] = digests.live_digests(db) or [digests.get_digest(db, 1)]
    return digest


def test_a_storm_is_five_alerts_and_one_digest_whose_thread_details_the_rest(
        stormy, db, slack, clock):
    config, names = stormy
    assert [c.method for c in slack.calls if c.method.startswith("chat.")] == [
        "chat.postMessage"] * 7      # 5 alerts, the digest, one detail reply: no 429
    incidents = sorted(store.open_incidents(db).values(), key=lambda i: i.stored_id)
    assert [i.account for i in incidents] == names     # every one stored, none twice
    alone, listed = incidents[:5], incidents[5:]
    assert all(i.message_ts and i.digest_id is None for i in alone)
    digest = the_digest(db)
    assert all(i.message_ts is None and i.digest_id == digest.id for i in listed)
    top = slack.messages(CHANNEL)
    assert len(top) == 6 and top[-1]["ts"] == digest.message_ts
    text = "\n".join(mrkdwn_texts(top[-1]["blocks"]))
    assert "Storm: 25 accounts refused SMTP submit" in top[-1]["text"]
    assert all(f"#{i.id}*" in text for i in listed) and not any(
        f"#{i.id}*" in text for i in alone)
    [details] = thread(slack, digest.message_ts)
    detail_text = "\n".join(mrkdwn_texts(details["blocks"]))
    assert "25 incidents joined this storm" in detail_text
    assert all(f"/submitwatch fix #{i.id}" in detail_text for i in listed)


def test_more_events_and_new_accounts_during_the_storm_edit_the_digest_and_post_nothing(
        stormy, logs, db, slack, clock):
    config, names = stormy
    digest = the_digest(db)
    calls = len(slack.calls)
    storm(logs["EX01"], 5, start=5)                 # known accounts in the digest fail again
    new = storm(logs["EX01"], 3, start=100)         # and three new ones join it
    clock.advance(seconds=31)
    sweep(db, config, clock)
    chat_calls = [c.method for c in slack.calls[calls:] if c.method.startswith("chat.")]
    assert chat_calls == ["chat.update", "chat.postMessage"]   # the digest, one detail reply
    assert len(slack.messages(CHANNEL)) == 6
    joined = [i for i in store.open_incidents(db).values() if i.account in new]
    assert {i.digest_id for i in joined} == {digest.id} and not any(i.message_ts for i in joined)
    [message] = [m for m in slack.messages(CHANNEL) if m["ts"] == digest.message_ts]
    assert "Storm: 28 accounts" in message["text"]
    last = thread(slack, digest.message_ts)[-1]
    # 25 were detailed by the first reply: this one says which of how many it details.
    assert "Incidents 26–28 of the 28 that joined this storm so far" in "\n".join(
        mrkdwn_texts(last["blocks"]))
    assert all(name in "\n".join(mrkdwn_texts(last["blocks"])) for name in new)


def test_the_storm_ends_after_a_quiet_window_and_the_next_incident_is_posted_alone(
        stormy, logs, db, slack, clock):
    config, _ = stormy
    digest = the_digest(db)
    clock.advance(minutes=9)
    assert end_storms(db, config, clock) == 0
    clock.advance(minutes=1)
    assert end_storms(db, config, clock) == 1
    sweep(db, config, clock)
    [message] = [m for m in slack.messages(CHANNEL) if m["ts"] == digest.message_ts]
    assert message["text"].startswith("Storm over: 25 accounts")
    assert "The storm is over" in thread(slack, digest.message_ts)[-1]["text"]
    [late] = storm(logs["EX01"], 1, start=500)
    sweep(db, config, clock)
    [incident] = [i for i in store.open_incidents(db).values() if i.account == late]
    assert incident.digest_id is None and incident.message_ts
    assert slack.messages(CHANNEL)[-1]["ts"] == incident.message_ts


def test_a_digested_incident_never_gets_a_post_of_its_own_not_even_after_a_snooze(
        stormy, db, slack, clock):
    config, _ = stormy
    digest = the_digest(db)
    listed = digests.members(db, digest.id)[0]
    chatops.snooze(db, listed.stored_id, 3600, "maintenance", ALICE, clock())
    clock.advance(hours=2)
    chatops.end_expired_snoozes(db, clock())
    sweep(db, config, clock)
    assert len(slack.messages(CHANNEL)) == 6
    assert store.get_incident(db, listed.stored_id).message_ts is None
    notes = [r["text"] for r in thread(slack, digest.message_ts)]
    assert any(f"#{listed.id} " in n and "snoozed" in n for n in notes)
    assert any(f"The snooze of #{listed.id} " in n for n in notes)


def test_acknowledge_all_and_one_line_from_the_digest(stormy, db, slack, clock):
    config, _ = stormy
    digest = the_digest(db)
    app = bolt_actions(slack, db, config, clock)
    [message] = [m for m in slack.messages(CHANNEL) if m["ts"] == digest.message_ts]
    first = digests.members(db, digest.id)[0]
    assert click(app, slack, "U0BOB", "submitwatch_ack", message,
                 selected_option_value=str(first.id)) == []
    assert store.get_incident(db, first.stored_id).acked_by == "U0BOB"
    assert click(app, slack, "U0ALICE", ACTION_DIGEST_ACK, message, value=str(digest.id)) == []
    members = digests.members(db, digest.id)
    assert {i.acked_by for i in members} == {"U0ALICE"}   # all 25, taking over Bob's one
    trail = chat.audit_trail(db, first.stored_id)
    assert [(a["user_id"], a["action"]) for a in trail] == [("U0BOB", "ack"), ("U0ALICE", "ack")]
    clock.advance(seconds=1)
    sweep(db, config, clock)
    notes = [r["text"] for r in thread(slack, digest.message_ts)]
    assert any("Acknowledged by <@U0ALICE>: all 25 open incidents of this digest" in n
               for n in notes)
    assert any(f"Acknowledged by <@U0BOB>: #{first.id} " in n for n in notes)
    [message] = [m for m in slack.messages(CHANNEL) if m["ts"] == digest.message_ts]
    assert "25 acknowledged" in "\n".join(mrkdwn_texts(message["blocks"]))


def test_snooze_all_from_the_digest_snoozes_each_incident_and_audits_each(
        stormy, db, slack, clock):
    config, _ = stormy
    digest = the_digest(db)
    app = bolt_actions(slack, db, config, clock)
    [message] = [m for m in slack.messages(CHANNEL) if m["ts"] == digest.message_ts]
    click(app, slack, "U0ALICE", ACTION_DIGEST_SNOOZE, message,
          selected_option_value=f"{digest.id}:3600")
    members = digests.members(db, digest.id)
    snoozed = {s.target for s in chat.active_snoozes(db, clock())}
    assert snoozed == {str(i.id) for i in members}
    assert all(chat.audit_trail(db, i.stored_id)[-1]["action"] == "snooze" for i in members)


def test_without_a_digest_a_storm_runs_into_slacks_rate_limit(logs, db, make_config, slack,
                                                              clock):
    """What the digest prevents: the stand-in answers 429 past Slack's per-channel rate."""
    clock.now = T0
    slack.limit_post_rate(1.0, burst=8, clock=Slow(clock), retry_after="0")
    config = make_config(servers=("EX01",), incidents={"storm_threshold": 0})
    storm(logs["EX01"], 30)
    _, delivery = sweep(db, config, clock)
    assert len(posts(slack)) == 8 and posts(slack, (429,))
    assert delivery.failed >= 1
    waiting = [i for i in store.open_incidents(db).values() if i.message_ts is None]
    assert len(waiting) == 22   # not lost: they wait in the outbox for the next round


def test_hostile_account_names_stay_inert_in_the_digest_and_its_thread(logs, db, make_config,
                                                                        slack, clock):
    config = make_config(servers=("EX01",), routes=[{"accounts": ["*"], "owners": ["U0OWNER"]}])
    hostile = storm(logs["EX01"], 8, prefix="CONTOSO\\<!channel> *boss* `x` <@U0EVIL> ")
    sweep(db, config, clock)
    digest = the_digest(db)
    [message] = [m for m in slack.messages(CHANNEL) if m["ts"] == digest.message_ts]
    texts = mrkdwn_texts(message["blocks"]) + [message["text"]]
    for reply in thread(slack, digest.message_ts):
        texts += mrkdwn_texts(reply["blocks"]) + [reply["text"]]
    assert_no_markup(texts)
    assert not any("<@U0EVIL>" in t or "<!channel>" in t for t in texts)
    assert any("Owners: <@U0OWNER>" in t for t in texts)    # from the configuration only
    assert len(hostile) == 8 and "3 accounts" in message["text"]


def test_a_detail_reply_whose_answer_was_lost_is_recorded_once_not_posted_again(
        stormy, logs, db, slack, clock):
    config, _ = stormy
    digest = the_digest(db)
    new = storm(logs["EX01"], 3, start=200)
    clock.advance(seconds=31)
    slack.lose_answers("chat.postMessage")        # Slack posts the reply; its answer is lost
    sweep(db, config, clock)
    clock.advance(seconds=61)                     # looked up before it is tried again
    sweep(db, config, clock)
    replies = [r for r in thread(slack, digest.message_ts) if "joined the storm" in r["text"]]
    assert [r["text"] for r in replies] == ["25 incidents joined the storm",
                                            "28 incidents joined the storm: 26–28 detailed here"]
    last = max(i.stored_id for i in digests.members(db, digest.id))
    assert digests.get_digest(db, digest.id).detailed_through == last
    later = storm(logs["EX01"], 2, start=300)     # the next reply details only what is new
    clock.advance(seconds=31)
    sweep(db, config, clock)
    text = "\n".join(mrkdwn_texts(thread(slack, digest.message_ts)[-1]["blocks"]))
    assert all(n in text for n in later) and not any(n in text for n in new)


def test_snooze_all_ends_with_one_note_not_one_per_incident(stormy, db, slack, clock):
    config, _ = stormy
    digest = the_digest(db)
    assert chatops.snooze_digest(db, digest.id, 3600, "change window", ALICE, clock()) == 25
    sweep(db, config, clock)
    before = len(thread(slack, digest.message_ts))
    clock.advance(hours=2)
    assert chatops.end_expired_snoozes(db, clock()) == 25
    sweep(db, config, clock)
    notes = thread(slack, digest.message_ts)[before:]
    assert [n["text"] for n in notes] == [
        "The snooze of all 25 open incidents of this digest ended"]


def test_a_storm_ends_once_even_when_two_workers_see_it_over(stormy, db, clock):
    config, _ = stormy
    digest = the_digest(db)
    clock.advance(minutes=10)
    window_ago = clock() - timedelta(minutes=10)
    assert digests.end(db, digest.id, clock(), window_ago)
    assert not digests.end(db, digest.id, clock(), window_ago)   # the other worker: no-op
    assert end_storms(db, config, clock) == 0


def test_marking_a_digested_incident_fixed_speaks_in_the_digests_thread(stormy, logs, db, slack,
                                                                       clock):
    config, _ = stormy
    digest = the_digest(db)
    listed = digests.members(db, digest.id)[0]
    chatops.mark_fixed(db, listed.stored_id, ALICE, "new password set", clock(),
                       has_directory=False)
    clock.advance(minutes=5)
    logs["EX01"].append(FE, 1018, (listed.account, "Client Frontend EX01"))
    sweep(db, config, clock)
    notes = [r["text"] for r in thread(slack, digest.message_ts)]
    assert any(f"Marked fixed by <@U0ALICE>: #{listed.id} " in n for n in notes)
    assert any(f"#{listed.id} " in n and "still failing after it was marked fixed" in n
               for n in notes)
    assert len(slack.messages(CHANNEL)) == 6      # and still no post of its own


def test_the_stand_ins_rate_is_per_channel_whether_named_by_id_or_by_name(slack, clock):
    slack.limit_post_rate(1.0, burst=2, clock=Slow(clock), retry_after="0")
    client = WebClient(token=BOT_TOKEN, base_url=slack.api_url)
    client.chat_postMessage(channel=CHANNEL, text="one")
    client.chat_postMessage(channel="#" + CHANNEL.lower(), text="two")   # the same channel
    with pytest.raises(SlackApiError) as refused:
        client.chat_postMessage(channel=CHANNEL, text="three")
    assert refused.value.response.status_code == 429
    client.chat_postMessage(channel="C0EX02", text="another channel has its own rate")
    clock.advance(seconds=1)
    client.chat_postMessage(channel=CHANNEL, text="a second later")


def test_an_account_snoozed_before_a_storm_joins_the_digest_when_its_snooze_ends(
        logs, db, make_config, slack, clock):
    clock.now = T0
    config = make_config(servers=("EX01",))
    chatops.snooze(db, "CONTOSO\\quiet-0000", 3600, "known, being replaced", ALICE, clock())
    storm(logs["EX01"], 1, prefix="CONTOSO\\quiet-")     # opens silenced: no post
    storm(logs["EX01"], 30)
    sweep(db, config, clock)
    quiet = next(i for i in store.open_incidents(db).values() if i.account == "CONTOSO\\quiet-0000")
    assert quiet.digest_id is None and quiet.message_ts is None
    chatops.unsnooze(db, "CONTOSO\\quiet-0000", ALICE, clock())
    clock.advance(seconds=31)
    sweep(db, config, clock)
    assert store.get_incident(db, quiet.stored_id).digest_id == the_digest(db).id
    assert len(slack.messages(CHANNEL)) == 6              # five alerts and the digest, still
