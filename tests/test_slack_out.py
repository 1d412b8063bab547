"""Delivery through real slack_sdk to the Slack stand-in: the exact payloads, and each failure."""
from types import SimpleNamespace

import pytest
from slack_sdk.http_retry import builtin_handlers

from bot.slack.sender import DeliveryError, SlackSender, make_client
from tests.conftest import BOT_TOKEN, CHANNEL

BLOCKS = [{"type": "section", "text": {"type": "mrkdwn", "text": "hello"}}]


@pytest.fixture
def sender(slack):
    return SlackSender(make_client(slack.api_url, BOT_TOKEN, timeout=5, retries=1))


def test_post_sends_exactly_this_payload(sender, slack):
    ts = sender.post(CHANNEL, "fallback", BLOCKS, metadata={
        "event_type": "submitwatch_incident", "event_payload": {"incident_id": 7}}).ts
    [call] = slack.calls_to("chat.postMessage")
    assert call.params == {"channel": CHANNEL, "text": "fallback", "blocks": BLOCKS,
                           "metadata": {"event_type": "submitwatch_incident",
                                        "event_payload": {"incident_id": 7}},
                           "unfurl_links": False, "unfurl_media": False}
    assert call.headers["authorization"] == f"Bearer {BOT_TOKEN}"
    assert slack.messages(CHANNEL)[0]["ts"] == ts


def test_update_and_thread_reply(sender, slack):
    ts = sender.post(CHANNEL, "first", BLOCKS).ts
    sender.update(CHANNEL, ts, "second", BLOCKS)
    sender.post(CHANNEL, "in thread", BLOCKS, thread_ts=ts)
    [update] = slack.calls_to("chat.update")
    assert update.params == {"channel": CHANNEL, "ts": ts, "text": "second", "blocks": BLOCKS}
    [message] = slack.messages(CHANNEL)
    assert message["text"] == "second" and message["edits"] == 1
    assert [r["text"] for r in message["replies"]] == ["in thread"]


def test_429_honours_retry_after_and_posts_once(sender, slack, monkeypatch):
    """slack_sdk's rate-limit handler sleeps Retry-After (plus jitter) before the retry: the
    wait it asks for is recorded instead of spent (its module's clock, nobody else's)."""
    waits: list[float] = []
    monkeypatch.setattr(builtin_handlers, "time", SimpleNamespace(sleep=waits.append))
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "7"})
    sender.post(CHANNEL, "hi", BLOCKS)
    calls = slack.calls_to("chat.postMessage")
    assert [c.status for c in calls] == [429, 200]
    assert len(waits) == 1 and 7 <= waits[0] < 8
    assert len(slack.messages(CHANNEL)) == 1


def test_5xx_is_retried(sender, slack):
    slack.fail_next("chat.postMessage", status=500)
    sender.post(CHANNEL, "hi", BLOCKS)
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [500, 200]


def test_5xx_that_persists_is_a_retryable_delivery_error(sender, slack):
    slack.fail_next("chat.postMessage", status=503, times=5)
    with pytest.raises(DeliveryError) as info:
        sender.post(CHANNEL, "hi", BLOCKS)
    assert info.value.code == "http_503" and not info.value.permanent


@pytest.mark.parametrize("error, words", [
    ("channel_not_found", "does not exist or the bot cannot see it"),
    ("not_in_channel", "/invite @SubmitWatch"),
    ("invalid_auth", "check SLACK_BOT_TOKEN"),
    ("token_revoked", "reinstall the app"),
])
def test_ok_false_errors_are_permanent_and_say_what_to_do(sender, slack, error, words):
    slack.fail_next("chat.postMessage", error=error)
    with pytest.raises(DeliveryError) as info:
        sender.post(CHANNEL, "hi", BLOCKS)
    assert info.value.permanent and info.value.code == error
    assert words in str(info.value)
    assert len(slack.calls_to("chat.postMessage")) == 1  # not retried by the client


def test_an_unknown_ok_false_error_is_retryable(sender, slack):
    slack.fail_next("chat.postMessage", error="internal_error")
    with pytest.raises(DeliveryError) as info:
        sender.post(CHANNEL, "hi", BLOCKS)
    assert not info.value.permanent and "will retry" in str(info.value)


def test_unreachable_slack_is_retryable(slack):
    url = slack.api_url
    slack.stop()
    sender = SlackSender(make_client(url, BOT_TOKEN, timeout=2, retries=0))
    with pytest.raises(DeliveryError) as info:
        sender.post(CHANNEL, "hi", BLOCKS)
    assert info.value.code == "unreachable" and "wait in the outbox" in str(info.value)
