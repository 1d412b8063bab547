"""The Slack stand-in, driven by the real slack_sdk WebClient over loopback HTTP.

These tests pin down both halves the rest of the suite relies on: what the
stand-in records (exact payloads, state) and how real slack_sdk reacts to what
it answers (retry handlers, SlackApiError).
"""

from __future__ import annotations

import json
import logging
import re
import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import unquote

import pytest
from slack_bolt import App
from slack_bolt.adapter.socket_mode import SocketModeHandler
from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry import FixedValueRetryIntervalCalculator
from slack_sdk.http_retry.builtin_handlers import (
    RateLimitErrorRetryHandler,
    ServerErrorRetryHandler,
)
from slack_sdk.webhook import WebhookClient

from sim.slack_api import RESPONSE_URL_MAX_POSTS, Call, SlackStandIn
from sim.slack_blocks import block_kit_builder_url, render_text
from tests.helpers import wait_until

TOKEN = "xoxb-test"
APP_TOKEN = "xapp-test"
CHANNEL = "C0ALERTS"
TS_PATTERN = re.compile(r"^\d{10}\.\d{6}$")

ALERT_BLOCKS = [
    {"type": "header", "text": {"type": "plain_text", "text": "SMTP submit denied: CONTOSO\\svc-scanner"}},
    {
        "type": "section",
        "text": {"type": "mrkdwn", "text": "*3 events* since 08:13 &amp; counting (&lt;!channel&gt; is not a ping)"},
    },
    {
        "type": "section",
        "fields": [
            {"type": "mrkdwn", "text": "*Account*\nCONTOSO\\svc-scanner"},
            {"type": "mrkdwn", "text": "*Connector*\nEX01\\Default Frontend EX01"},
        ],
    },
    {"type": "divider"},
    {
        "type": "context",
        "elements": [
            {"type": "mrkdwn", "text": "Event 1018 on <https://ex01.contoso.local|EX01>"},
            {"type": "plain_text", "text": "MSExchangeTransport"},
        ],
    },
    {
        "type": "actions",
        "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Grant submit"}, "action_id": "grant"},
            {"type": "button", "text": {"type": "plain_text", "text": "Ignore"}, "action_id": "ignore"},
        ],
    },
]


@pytest.fixture
def slack():
    with SlackStandIn(
        bot_token=TOKEN, app_token=APP_TOKEN, channels=(CHANNEL, "C0OTHER"), not_joined=("C0OTHER",)
    ) as stand_in:
        yield stand_in


@pytest.fixture
def client(slack):
    # No retry handlers: each test that wants retries builds its own client.
    return WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])


def fast_server_retries(count: int = 2) -> ServerErrorRetryHandler:
    return ServerErrorRetryHandler(
        max_retry_count=count, interval_calculator=FixedValueRetryIntervalCalculator(0.01)
    )


# slack_sdk warns (UserWarning) when a post has no top-level `text`; the tests
# that do that on purpose silence it.
no_text_warning = pytest.mark.filterwarnings("ignore:The top-level `text` argument is missing")


def api_error(excinfo: pytest.ExceptionInfo[SlackApiError]) -> str:
    return excinfo.value.response["error"]


# -- lifecycle and plumbing -------------------------------------------------


def test_api_url_is_loopback_with_trailing_slash_and_stop_frees_the_port():
    stand_in = SlackStandIn().start()
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/api/", stand_in.api_url)
    port = stand_in.port
    stand_in.stop()
    stand_in.stop()  # idempotent
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    with pytest.raises(RuntimeError):
        _ = stand_in.api_url


def test_base_url_without_trailing_slash_still_works(slack):
    # slack_sdk appends the slash itself (BaseClient.__init__).
    no_slash = WebClient(token=TOKEN, base_url=slack.api_url.rstrip("/"))
    response = no_slash.auth_test()
    assert response["user_id"] == slack.bot_user_id
    assert slack.calls_to("auth.test")[0].headers["authorization"] == f"Bearer {TOKEN}"


def test_auth_test_identity(client, slack):
    response = client.auth_test()
    assert response.data == {
        "ok": True,
        "url": "https://submitwatch-test.slack.com/",
        "team": "SubmitWatch Test",
        "user": "submitwatch",
        "team_id": slack.team_id,
        "user_id": slack.bot_user_id,
        "bot_id": slack.bot_id,
        "is_enterprise_install": False,
    }


def test_unknown_method(client):
    with pytest.raises(SlackApiError) as excinfo:
        client.api_call("chat.frobnicate", params={"channel": CHANNEL})
    assert api_error(excinfo) == "unknown_method"


# -- posting ------------------------------------------------------------------


def test_post_with_blocks_records_exact_json_payload(client, slack):
    response = client.chat_postMessage(
        channel=CHANNEL, text="SMTP submit denied: CONTOSO\\svc-scanner", blocks=ALERT_BLOCKS
    )

    [call] = slack.calls
    assert isinstance(call, Call)
    assert call.method == "chat.postMessage"
    assert call.params == {
        "channel": CHANNEL,
        "text": "SMTP submit denied: CONTOSO\\svc-scanner",
        "blocks": ALERT_BLOCKS,
    }
    assert call.headers["content-type"].startswith("application/json")
    assert call.headers["authorization"] == f"Bearer {TOKEN}"
    assert call.ok and call.status == 200
    assert abs(call.at - time.time()) < 5

    assert response["channel"] == CHANNEL
    assert TS_PATTERN.match(response["ts"])
    assert response["message"]["blocks"] == ALERT_BLOCKS
    assert response["message"]["bot_id"] == slack.bot_id

    [message] = slack.messages(CHANNEL)
    assert message["ts"] == response["ts"]
    assert message["text"] == "SMTP submit denied: CONTOSO\\svc-scanner"
    assert message["blocks"] == ALERT_BLOCKS
    assert message["replies"] == [] and message["edits"] == 0 and message["metadata"] is None


def test_text_only_post_is_also_json_and_ts_strictly_increase(client, slack):
    first = client.chat_postMessage(channel=CHANNEL, text="one")["ts"]
    second = client.chat_postMessage(channel=CHANNEL, text="two")["ts"]
    assert first == "1767225600.000100"
    assert second == "1767225600.000200"
    assert all(c.headers["content-type"].startswith("application/json") for c in slack.calls)
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["one", "two"]


def test_form_encoded_post_with_blocks_as_json_string(client, slack):
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "form"}}]
    client.api_call(
        "chat.postMessage", params={"channel": "#c0alerts", "text": "form", "blocks": json.dumps(blocks)}
    )
    [call] = slack.calls
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.params == {"channel": "#c0alerts", "text": "form", "blocks": json.dumps(blocks)}
    [message] = slack.messages(CHANNEL)  # resolved by name
    assert message["blocks"] == blocks


def test_token_in_form_body_is_accepted():
    with SlackStandIn() as slack:
        tokenless = WebClient(base_url=slack.api_url)
        assert tokenless.api_call("auth.test", params={"token": "xoxb-test"})["ok"] is True
        with pytest.raises(SlackApiError) as excinfo:
            tokenless.auth_test()
        assert api_error(excinfo) == "not_authed"


@no_text_warning
def test_post_validation_errors(client):
    cases = [
        (dict(channel="C0NOPE", text="x"), "channel_not_found"),
        (dict(channel="C0OTHER", text="x"), "not_in_channel"),
        (dict(channel=CHANNEL, text=""), "no_text"),
        (dict(channel=CHANNEL, text="x", blocks=[{"type": "divider"}] * 51), "invalid_blocks"),
        (dict(channel=CHANNEL, text="x", blocks=[{"type": "sectoin"}]), "invalid_blocks"),
        (dict(channel=CHANNEL, text="x", thread_ts="1767225600.999999"), "thread_not_found"),
        (dict(channel=CHANNEL, text="x" * 40_001), "msg_too_long"),
    ]
    for kwargs, expected in cases:
        with pytest.raises(SlackApiError) as excinfo:
            client.chat_postMessage(**kwargs)
        assert api_error(excinfo) == expected, kwargs


def test_exactly_fifty_blocks_is_fine_and_block_limits_report_pointer(client, slack):
    client.chat_postMessage(channel=CHANNEL, text="x", blocks=[{"type": "divider"}] * 50)
    long_header = [{"type": "header", "text": {"type": "plain_text", "text": "h" * 151}}]
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x", blocks=long_header)
    assert excinfo.value.response["response_metadata"]["messages"] == [
        "[ERROR] must be less than 151 characters [json-pointer:/blocks/0/text/text]"
    ]
    with pytest.raises(SlackApiError) as excinfo:
        client.api_call("chat.postMessage", params={"channel": CHANNEL, "text": "x", "blocks": "{not json"})
    assert api_error(excinfo) == "invalid_blocks_format"
    assert len(slack.messages(CHANNEL)) == 1


@no_text_warning
def test_blocks_without_text_are_accepted(client, slack):
    client.chat_postMessage(channel=CHANNEL, blocks=[{"type": "divider"}])
    assert slack.messages(CHANNEL)[0]["text"] == ""


# -- update, threads, metadata ----------------------------------------------------


def test_update_replaces_content_and_counts_edits(client, slack):
    ts = client.chat_postMessage(channel=CHANNEL, text="open", blocks=ALERT_BLOCKS)["ts"]
    new_blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": ":white_check_mark: fixed"}}]

    response = client.chat_update(channel=CHANNEL, ts=ts, text="fixed", blocks=new_blocks)
    assert response["ts"] == ts and response["text"] == "fixed"
    assert slack.calls_to("chat.update")[0].params == {
        "channel": CHANNEL,
        "ts": ts,
        "text": "fixed",
        "blocks": new_blocks,
    }

    client.chat_update(channel=CHANNEL, ts=ts, text="fixed again")  # blocks absent: kept
    [message] = slack.messages(CHANNEL)
    assert message["ts"] == ts
    assert message["text"] == "fixed again"
    assert message["blocks"] == new_blocks
    assert message["edits"] == 2

    client.chat_update(channel=CHANNEL, ts=ts, text="plain", blocks=[])  # [] clears blocks
    assert slack.messages(CHANNEL)[0]["blocks"] == []

    history = client.conversations_history(channel=CHANNEL)["messages"]
    assert history[0]["edited"]["user"] == slack.bot_user_id


def test_update_unknown_message(client):
    client.chat_postMessage(channel=CHANNEL, text="x")
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_update(channel=CHANNEL, ts="1767225600.999999", text="y")
    assert api_error(excinfo) == "message_not_found"
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_update(channel="C0NOPE", ts="1767225600.000100", text="y")
    assert api_error(excinfo) == "channel_not_found"


def test_thread_replies(client, slack):
    parent = client.chat_postMessage(channel=CHANNEL, text="incident")["ts"]
    first = client.chat_postMessage(channel=CHANNEL, text="update 1", thread_ts=parent)
    assert first["message"]["thread_ts"] == parent
    second = client.chat_postMessage(channel=CHANNEL, text="update 2", thread_ts=first["ts"])  # reply's ts

    [message] = slack.messages(CHANNEL)
    assert [r["text"] for r in message["replies"]] == ["update 1", "update 2"]
    assert all(r["thread_ts"] == parent for r in message["replies"])

    history = client.conversations_history(channel=CHANNEL)["messages"]
    assert [m["text"] for m in history] == ["incident"]  # replies are not top level
    assert history[0]["reply_count"] == 2 and history[0]["latest_reply"] == second["ts"]

    replies = client.conversations_replies(channel=CHANNEL, ts=parent)["messages"]
    assert [m["text"] for m in replies] == ["incident", "update 1", "update 2"]

    with pytest.raises(SlackApiError) as excinfo:
        client.conversations_replies(channel=CHANNEL, ts="1767225600.999999")
    assert api_error(excinfo) == "thread_not_found"


def test_metadata_round_trip(client, slack):
    metadata = {"event_type": "submitwatch_incident", "event_payload": {"incident": "EX01|CONTOSO\\svc", "n": 3}}
    client.chat_postMessage(channel=CHANNEL, text="incident", metadata=metadata)

    assert slack.calls_to("chat.postMessage")[0].params["metadata"] == metadata
    assert slack.messages(CHANNEL)[0]["metadata"] == metadata

    plain = client.conversations_history(channel=CHANNEL)["messages"][0]
    assert "metadata" not in plain
    with_meta = client.conversations_history(channel=CHANNEL, include_all_metadata=True)["messages"][0]
    assert with_meta["metadata"] == metadata
    # slack_sdk turns the bool into "1" in a form body
    assert slack.calls_to("conversations.history")[1].params["include_all_metadata"] == "1"

    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x", metadata={"event_payload": {}})
    assert api_error(excinfo) == "invalid_metadata_schema"


def test_history_newest_first_with_pagination(client):
    for i in range(5):
        client.chat_postMessage(channel=CHANNEL, text=f"m{i}")
    page1 = client.conversations_history(channel=CHANNEL, limit=2)
    assert [m["text"] for m in page1["messages"]] == ["m4", "m3"] and page1["has_more"] is True
    cursor = page1["response_metadata"]["next_cursor"]
    page2 = client.conversations_history(channel=CHANNEL, limit=2, cursor=cursor)
    assert [m["text"] for m in page2["messages"]] == ["m2", "m1"]
    everything = [m["text"] for page in client.conversations_history(channel=CHANNEL, limit=2) for m in page["messages"]]
    assert everything == ["m4", "m3", "m2", "m1", "m0"]

    with pytest.raises(SlackApiError) as excinfo:
        client.conversations_history(channel="C0OTHER")
    assert api_error(excinfo) == "not_in_channel"


def test_conversations_info_and_ephemeral(client, slack):
    info = client.conversations_info(channel="C0OTHER")["channel"]
    assert info["id"] == "C0OTHER" and info["is_member"] is False
    slack.set_joined("C0OTHER")
    assert client.conversations_info(channel="C0OTHER")["channel"]["is_member"] is True

    response = client.chat_postEphemeral(channel=CHANNEL, user="U0ADMIN", text="only you")
    assert TS_PATTERN.match(response["message_ts"])
    assert slack.ephemerals(CHANNEL) == [
        {
            "channel": CHANNEL,
            "user": "U0ADMIN",
            "ts": response["message_ts"],
            "thread_ts": None,
            "text": "only you",
            "blocks": [],
        }
    ]
    assert slack.messages(CHANNEL) == []  # ephemerals are not channel history


# -- auth -----------------------------------------------------------------------


def test_wrong_token_is_invalid_auth_and_changes_nothing(slack):
    wrong = WebClient(token="xoxb-wrong", base_url=slack.api_url)
    with pytest.raises(SlackApiError) as excinfo:
        wrong.chat_postMessage(channel=CHANNEL, text="x")
    assert api_error(excinfo) == "invalid_auth"
    assert excinfo.value.response.status_code == 200  # Slack answers auth errors with 200
    assert slack.messages(CHANNEL) == []
    assert slack.calls[0].error == "invalid_auth"


def test_revoked_token(client, slack):
    client.auth_test()
    slack.revoke_token()
    with pytest.raises(SlackApiError) as excinfo:
        client.auth_test()
    assert api_error(excinfo) == "token_revoked"


# -- faults and retries ---------------------------------------------------------


def test_429_retry_after_is_honoured_and_post_lands_once(slack):
    retrying = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[RateLimitErrorRetryHandler()])
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "1"})

    started = time.monotonic()
    response = retrying.chat_postMessage(channel=CHANNEL, text="after the wait")
    elapsed = time.monotonic() - started

    assert response["ok"] is True
    assert elapsed >= 1.0  # slack_sdk slept Retry-After (+ up to 1 s jitter)
    attempts = slack.calls_to("chat.postMessage")
    assert [(c.status, c.error) for c in attempts] == [(429, "ratelimited"), (200, None)]
    assert attempts[0].params == attempts[1].params  # the same request, resent
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["after the wait"]


def test_429_without_retry_handler_surfaces_as_ratelimited(client, slack):
    slack.fail_next("chat.postMessage", status=429, headers={"Retry-After": "30"})
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x")
    response = excinfo.value.response
    assert response.status_code == 429
    assert response["error"] == "ratelimited"
    assert response.headers["retry-after"] == "30"
    assert slack.messages(CHANNEL) == []


@pytest.mark.parametrize("status", [500, 503])
def test_server_errors_are_retried_with_server_error_handler(slack, status):
    retrying = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[fast_server_retries(2)])
    slack.fail_next("chat.postMessage", status=status, times=2)

    response = retrying.chat_postMessage(channel=CHANNEL, text="third time lucky")

    assert response["ok"] is True
    assert [c.status for c in slack.calls_to("chat.postMessage")] == [status, status, 200]
    assert len(slack.messages(CHANNEL)) == 1


def test_server_error_without_retry_is_non_json_api_error(client, slack):
    slack.fail_next("chat.postMessage", status=500)
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x")
    assert excinfo.value.response.status_code == 500
    assert api_error(excinfo) == "Received a response in a non-JSON format: Internal Server Error"


def test_injected_ok_false_error_is_raised_then_cleared(client, slack):
    slack.fail_next("chat.postMessage", error="channel_not_found")
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="x")
    assert api_error(excinfo) == "channel_not_found"
    client.auth_test()  # other methods unaffected
    client.chat_postMessage(channel=CHANNEL, text="x")  # the fault was used up
    assert len(slack.messages(CHANNEL)) == 1


def test_wildcard_fault_and_fail_next_argument_checks(client, slack):
    slack.fail_next("*", error="fatal_error")
    with pytest.raises(SlackApiError):
        client.auth_test()
    client.auth_test()
    with pytest.raises(ValueError):
        slack.fail_next("chat.postMessage")  # status 200 needs an error
    with pytest.raises(ValueError):
        slack.fail_next("chat.postMessage", status=500, times=0)


def test_outage_on_and_off(client, slack):
    slack.set_down(True)
    with pytest.raises(SlackApiError) as excinfo:
        client.chat_postMessage(channel=CHANNEL, text="lost")
    assert excinfo.value.response.status_code == 503

    retrying = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[fast_server_retries(2)])
    with pytest.raises(SlackApiError):
        retrying.auth_test()
    assert [c.status for c in slack.calls_to("auth.test")] == [503, 503, 503]

    slack.set_down(False)
    client.chat_postMessage(channel=CHANNEL, text="back")
    assert [m["text"] for m in slack.messages(CHANNEL)] == ["back"]


def test_delay_slows_each_request(client, slack):
    slack.delay = 0.2
    started = time.monotonic()
    client.auth_test()
    assert time.monotonic() - started >= 0.2


# -- concurrency ----------------------------------------------------------------


def test_concurrent_posts_get_unique_increasing_ts(slack):
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        client = WebClient(token=TOKEN, base_url=slack.api_url)
        try:
            for i in range(10):
                client.chat_postMessage(channel=CHANNEL, text=f"{n}-{i}")
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)
    assert not errors
    stamps = [m["ts"] for m in slack.messages(CHANNEL)]
    assert len(stamps) == 80 and len(set(stamps)) == 80
    assert stamps == sorted(stamps, key=float)
    assert len(slack.calls_to("chat.postMessage")) == 80
    assert slack.wait_for_calls("chat.postMessage", 80, timeout=0.1)
    with pytest.raises(TimeoutError):
        slack.wait_for_calls("chat.postMessage", 81, timeout=0.1)


# -- Socket Mode ----------------------------------------------------------------


def pong_app(slack: SlackStandIn) -> App:
    """A real Bolt app whose /submitwatch listener acks, then respond()s.

    The bot token goes on the WebClient: Bolt ignores ``App(token=...)`` when
    ``client=`` is given too (and then finds no token at all).
    """
    app = App(client=WebClient(token=TOKEN, base_url=slack.api_url))

    @app.command("/submitwatch")
    def pong(ack, respond, command):
        ack()
        respond("pong: " + command["text"])

    return app


@pytest.fixture
def bolt_socket(slack):
    """Bolt's SocketModeHandler (slack_sdk's built-in client) connected to the stand-in.

    ``ping_interval`` is the client's monitor period, which is also how soon
    it notices a dropped socket and reconnects (Bolt's default is 10 s).
    """
    handler = SocketModeHandler(pong_app(slack), APP_TOKEN, ping_interval=0.5)
    handler.connect()
    try:
        yield handler
    finally:
        handler.close()


def raw_post(url: str, body: bytes, content_type: str, headers: dict | None = None) -> tuple[int, dict]:
    """POST without slack_sdk, which always moves a token into the Authorization header."""
    request = urllib.request.Request(url, data=body, headers={"Content-Type": content_type, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def test_bolt_slash_command_over_socket_mode(slack, bolt_socket):
    client = slack.wait_for_socket()
    [opened] = slack.calls_to("apps.connections.open")
    assert opened.ok and opened.headers["authorization"] == f"Bearer {APP_TOKEN}"
    assert client["id"] == 1 and client["peer"][0] == "127.0.0.1"

    payload = slack.slash_command_payload("status EX01", user_id="U0ADMIN")
    envelope_id = slack.send_envelope("slash_commands", payload, accepts_response_payload=True)

    assert slack.wait_for_ack(envelope_id) == {"envelope_id": envelope_id}  # ack() with no args: no payload
    [response] = slack.wait_for_responses(1)
    assert response["url"] == payload["response_url"]
    assert response["payload"] == {"text": "pong: status EX01"}
    assert response["status"] == 200 and response["error"] is None

    [sent] = slack.envelopes()
    assert sent["type"] == "slash_commands" and sent["payload"] == payload and sent["client"] == 1
    assert sent["acks"] == 1 and 0 <= sent["ack_seconds"] < 3 and sent["late"] is False

    bolt_socket.close()
    assert not bolt_socket.client.is_connected()
    wait_until(lambda: slack.connected_clients() == [])  # the server saw the socket go


def test_apps_connections_open_token_types(slack):
    def open_with(token):
        return WebClient(base_url=slack.api_url).apps_connections_open(app_token=token)

    url = open_with(APP_TOKEN)["url"]
    assert re.fullmatch(r"ws://127\.0\.0\.1:\d+/link/\?ticket=\w+&app_id=A0SUBMITAPP", url)
    for token, expected in [(TOKEN, "not_allowed_token_type"), ("xapp-wrong", "invalid_auth")]:
        with pytest.raises(SlackApiError) as excinfo:
            open_with(token)
        assert api_error(excinfo) == expected, token
    with pytest.raises(SlackApiError) as excinfo:
        WebClient(base_url=slack.api_url).api_call("apps.connections.open")
    assert api_error(excinfo) == "not_authed"
    # Slack reads the app-level token from the header only.
    status, body = raw_post(
        slack.api_url + "apps.connections.open", f"token={APP_TOKEN}".encode(), "application/x-www-form-urlencoded"
    )
    assert (status, body) == (200, {"ok": False, "error": "not_authed"})
    # ... and the app-level token is no good for bot methods.
    with pytest.raises(SlackApiError) as excinfo:
        WebClient(token=APP_TOKEN, base_url=slack.api_url).chat_postMessage(channel=CHANNEL, text="x")
    assert api_error(excinfo) == "not_allowed_token_type"
    assert slack.messages(CHANNEL) == []

    with SlackStandIn(app_token=None) as no_socket_mode:
        with pytest.raises(SlackApiError) as excinfo:
            WebClient(base_url=no_socket_mode.api_url).apps_connections_open(app_token=APP_TOKEN)
        assert api_error(excinfo) == "invalid_auth"


def test_socket_wire_format_tickets_and_acks(slack):
    from websockets.exceptions import InvalidStatus
    from websockets.sync.client import connect

    url = WebClient(base_url=slack.api_url).apps_connections_open(app_token=APP_TOKEN)["url"]
    with connect(url) as ws:
        assert json.loads(ws.recv(timeout=5)) == {
            "type": "hello",
            "num_connections": 1,
            "debug_info": {"host": "slack-stand-in", "build_number": 1, "approximate_connection_time": 18060},
            "connection_info": {"app_id": slack.app_id},
        }
        with pytest.raises(InvalidStatus) as excinfo:
            connect(url, open_timeout=5)  # tickets are single-use
        assert excinfo.value.response.status_code == 401
        assert slack.wait_for_socket(timeout=1)["id"] == 1

        envelope_id = slack.send_envelope("events_api", {"event": {"type": "app_home_opened", "user": "U0ADMIN"}})
        assert json.loads(ws.recv(timeout=5)) == {
            "envelope_id": envelope_id,
            "type": "events_api",
            "payload": {"event": {"type": "app_home_opened", "user": "U0ADMIN"}},
            "accepts_response_payload": False,
            "retry_attempt": 0,
            "retry_reason": "",
        }
        ack = {"envelope_id": envelope_id, "payload": {"text": "hi"}}
        ws.send(json.dumps(ack))
        ws.send(json.dumps(ack))  # a double ack is recorded, not hidden
        ws.send(json.dumps({"envelope_id": "never-sent"}))
        assert slack.wait_for_ack(envelope_id) == ack
        wait_until(lambda: len(slack.socket_messages()) == 3)
        assert slack.envelopes()[0]["acks"] == 2
        assert [m["message"] for m in slack.socket_messages()][2] == {"envelope_id": "never-sent"}

        assert slack.send_disconnect("warning") == 1
        assert json.loads(ws.recv(timeout=5)) == {
            "type": "disconnect",
            "reason": "warning",
            "debug_info": {"host": "slack-stand-in"},
        }
        lonely = slack.send_envelope("interactive", {"type": "block_actions"})
        with pytest.raises(TimeoutError):
            slack.wait_for_ack(lonely, timeout=0.05)
        assert slack.envelopes()[1]["late"] is True

    wait_until(lambda: slack.connected_clients() == [])
    with pytest.raises(InvalidStatus) as excinfo:
        connect(url.replace("/link/", "/elsewhere/"), open_timeout=5)
    assert excinfo.value.response.status_code == 404


def test_socket_mode_api_misuse(slack):
    with pytest.raises(RuntimeError):
        slack.send_envelope("slash_commands", slack.slash_command_payload("x"))  # nobody connected
    with pytest.raises(ValueError):
        slack.send_envelope("slash_command", {})  # Slack's type is plural
    with pytest.raises(KeyError):
        slack.wait_for_ack("never-sent")
    with pytest.raises(TimeoutError):
        slack.wait_for_socket(timeout=0.05)
    assert slack.disconnect_sockets() == 0 and slack.send_disconnect() == 0


def test_server_side_disconnect_then_client_reconnects(slack, bolt_socket, caplog):
    caplog.set_level(logging.INFO)
    first = slack.wait_for_socket()

    assert slack.disconnect_sockets() == 1
    assert slack.connected_clients() == []
    second = slack.wait_for_socket(timeout=5)  # slack_sdk's monitor notices within ping_interval
    assert second["id"] == first["id"] + 1
    assert len(slack.calls_to("apps.connections.open")) == 2  # a fresh URL, not the old ticket

    envelope_id = slack.send_envelope("slash_commands", slack.slash_command_payload("after drop"))
    slack.wait_for_ack(envelope_id)
    assert slack.envelopes()[0]["client"] == second["id"]
    assert slack.wait_for_responses(1)[0]["payload"] == {"text": "pong: after drop"}

    # Slack's graceful refresh: a disconnect message, then the client swaps sockets itself.
    slack.send_disconnect("refresh_requested")
    third = slack.wait_for_socket(newer_than=second["id"])
    wait_until(lambda: [c["id"] for c in slack.connected_clients()] == [third["id"]])
    envelope_id = slack.send_envelope("slash_commands", slack.slash_command_payload("after refresh"))
    slack.wait_for_ack(envelope_id)
    assert slack.wait_for_responses(2)[1]["payload"] == {"text": "pong: after refresh"}

    problems = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert problems == []


def test_slash_command_payload_has_slacks_fields(slack):
    payload = slack.slash_command_payload("grant CONTOSO\\svc-scanner", user_id="U0BOB", channel_id="C0OTHER")
    assert set(payload) == {
        "token", "team_id", "team_domain", "channel_id", "channel_name", "user_id", "user_name",
        "command", "text", "api_app_id", "is_enterprise_install", "response_url", "trigger_id",
    }  # fmt: skip
    assert all(isinstance(value, str) for value in payload.values())
    assert payload["command"] == "/submitwatch" and payload["text"] == "grant CONTOSO\\svc-scanner"
    assert (payload["channel_id"], payload["channel_name"]) == ("C0OTHER", "c0other")
    assert (payload["user_id"], payload["team_id"], payload["api_app_id"]) == ("U0BOB", slack.team_id, slack.app_id)
    assert re.fullmatch(rf"http://127\.0\.0\.1:{slack.port}/response/\d+", payload["response_url"])
    assert slack.slash_command_payload("x")["channel_id"] == CHANNEL
    assert slack.slash_command_payload("x")["trigger_id"] != slack.slash_command_payload("x")["trigger_id"]


def test_response_url_limits_and_validation(slack):
    url = slack.new_response_url()
    webhook = WebhookClient(url)
    for i in range(RESPONSE_URL_MAX_POSTS):
        assert webhook.send(text=f"update {i}").status_code == 200
    used = webhook.send(text="one too many")
    assert used.status_code == 404 and json.loads(used.body)["error"] == "used_url"

    fresh = WebhookClient(slack.new_response_url())
    assert fresh.send(text="").status_code == 400  # no_text, and it does not use up the URL
    assert fresh.send(blocks=[{"type": "sectoin"}]).status_code == 400
    assert fresh.send_dict({"delete_original": True}).status_code == 200

    unknown = WebhookClient(url.rsplit("/", 1)[0] + "/999")
    assert unknown.send(text="x").status_code == 404
    with pytest.raises(urllib.error.HTTPError) as excinfo:
        urllib.request.urlopen(url, timeout=5)  # GET
    with excinfo.value as error:
        assert error.code == 405

    records = slack.responses(url)
    assert [r["payload"]["text"] for r in records] == [f"update {i}" for i in range(5)] + ["one too many"]
    assert [r["error"] for r in records][-1] == "used_url"
    assert [r["error"] for r in slack.responses()[6:]] == ["no_text", "invalid_blocks", None, "no_service"]
    slack.reset()
    assert slack.responses() == []
    assert webhook.send(text="usable again after reset").status_code == 200


# -- App Home, user groups, scopes -------------------------------------------------


def home(blocks: list) -> dict:
    return {"type": "home", "blocks": blocks}


def section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": text}}


def invalid_arguments(excinfo: pytest.ExceptionInfo[SlackApiError]) -> list[str]:
    assert api_error(excinfo) == "invalid_arguments"
    return excinfo.value.response["response_metadata"]["messages"]


def test_views_publish_keeps_the_latest_home_tab_per_user(client, slack):
    assert slack.home_view("U0ADMIN") is None
    first = client.views_publish(user_id="U0ADMIN", view=home([section("one")]))["view"]
    assert first["type"] == "home" and first["blocks"] == [section("one")]
    assert slack.home_view("U0ADMIN") == first
    [call] = slack.calls_to("views.publish")
    assert call.headers["content-type"].startswith("application/json")  # slack_sdk sends JSON here

    second = client.views_publish(user_id="U0ADMIN", view=home([section("two")]), hash=first["hash"])["view"]
    assert second["id"] == first["id"] and second["hash"] != first["hash"]  # same tab, new state
    assert slack.home_view("U0ADMIN")["blocks"] == [section("two")]
    assert slack.home_view("U0OTHER") is None

    # a hash from before the last publish means someone else published in between
    with pytest.raises(SlackApiError) as excinfo:
        client.views_publish(user_id="U0ADMIN", view=home([section("three")]), hash=first["hash"])
    assert api_error(excinfo) == "hash_conflict"
    assert slack.home_view("U0ADMIN")["blocks"] == [section("two")]

    # form bodies carry the view as a JSON string, as Slack's docs say
    status, body = raw_post(
        slack.api_url + "views.publish",
        f"token={TOKEN}&user_id=U0BOB&view={json.dumps(home([section('form')]))}".encode(),
        "application/x-www-form-urlencoded",
    )
    assert status == 200 and body["ok"] and slack.home_view("U0BOB")["blocks"] == [section("form")]
    slack.reset()
    assert slack.home_view("U0ADMIN") is None


def test_views_publish_refuses_what_slack_refuses(client, slack):
    hundred = [section(f"row {i}") for i in range(100)]
    client.views_publish(user_id="U0ADMIN", view=home(hundred))  # Home tabs take 100, messages 50
    with pytest.raises(SlackApiError) as excinfo:
        client.views_publish(user_id="U0ADMIN", view=home(hundred + [section("101")]))
    assert invalid_arguments(excinfo) == ["[ERROR] no more than 100 items allowed [json-pointer:/view/blocks]"]
    with pytest.raises(SlackApiError) as excinfo:
        client.views_publish(user_id="U0ADMIN", view=home([section("x" * 3001)]))
    assert invalid_arguments(excinfo) == [
        "[ERROR] must be less than 3001 characters [json-pointer:/view/blocks/0/text/text]"
    ]
    with pytest.raises(SlackApiError) as excinfo:
        client.views_publish(user_id="U0ADMIN", view={"type": "modal", "blocks": []})
    assert invalid_arguments(excinfo) == ["[ERROR] must be 'home' for views.publish [json-pointer:/view/type]"]
    with pytest.raises(SlackApiError) as excinfo:
        client.views_publish(user_id="#general", view=home([]))
    assert invalid_arguments(excinfo) == ["invalid `user_id`"]
    with pytest.raises(SlackApiError) as excinfo:
        client.views_publish(user_id="U0ADMIN", view=home([section("y" * 2999)] * 90))
    assert api_error(excinfo) == "view_too_large"
    assert len(slack.home_view("U0ADMIN")["blocks"]) == 100  # refused calls changed nothing


def test_usergroups_users_list(client, slack):
    slack.set_usergroup("S0ADMINS", ["U0ADMIN", "U0BOB"])
    assert client.usergroups_users_list(usergroup="S0ADMINS")["users"] == ["U0ADMIN", "U0BOB"]
    assert slack.calls_to("usergroups.users.list")[0].params == {"usergroup": "S0ADMINS"}  # a GET query
    slack.set_usergroup("S0ADMINS", [])
    assert client.usergroups_users_list(usergroup="S0ADMINS")["users"] == []
    with pytest.raises(SlackApiError) as excinfo:
        client.usergroups_users_list(usergroup="S0NOBODY")
    assert api_error(excinfo) == "no_such_subteam"
    with pytest.raises(ValueError):
        slack.set_usergroup("U0ADMIN", [])


def test_a_token_without_the_scope_gets_missing_scope():
    with SlackStandIn(bot_token=TOKEN, channels=(CHANNEL,), scopes={"chat:write", "commands"}) as slack:
        client = WebClient(token=TOKEN, base_url=slack.api_url, retry_handlers=[])
        slack.set_usergroup("S0ADMINS", ["U0ADMIN"])
        with pytest.raises(SlackApiError) as excinfo:
            client.usergroups_users_list(usergroup="S0ADMINS")
        assert excinfo.value.response.data == {
            "ok": False, "error": "missing_scope", "needed": "usergroups:read", "provided": "chat:write,commands",
        }  # fmt: skip
        client.chat_postMessage(channel=CHANNEL, text="chat:write is there")
        client.views_publish(user_id="U0ADMIN", view=home([]))  # needs no scope at all
        slack.scopes = slack.scopes | {"usergroups:read"}
        assert client.usergroups_users_list(usergroup="S0ADMINS")["users"] == ["U0ADMIN"]


# -- payloads Slack sends: button clicks and App Home --------------------------------

SNOOZE_SELECT = {
    "type": "static_select",
    "action_id": "snooze",
    "placeholder": {"type": "plain_text", "text": "Snooze"},
    "options": [
        {"text": {"type": "plain_text", "text": "1 hour"}, "value": "3600"},
        {"text": {"type": "plain_text", "text": "7 days"}, "value": "604800"},
    ],
}
CLICKABLE = [
    section("an alert"),
    {
        "type": "actions",
        "block_id": "alert_actions",
        "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Acknowledge"}, "action_id": "ack", "value": "42"},
            SNOOZE_SELECT,
        ],
    },
]


def test_block_actions_payload_for_a_button_on_a_posted_message(client, slack):
    ts = client.chat_postMessage(channel=CHANNEL, text="an alert", blocks=CLICKABLE)["ts"]
    payload = slack.block_actions_payload("U0ADMIN", CHANNEL, ts, "ack", user_name="admin")
    assert set(payload) == {
        "type", "user", "api_app_id", "token", "container", "trigger_id", "team", "enterprise",
        "is_enterprise_install", "channel", "state", "response_url", "actions", "message",
    }  # fmt: skip
    assert payload["type"] == "block_actions"
    assert payload["user"] == {"id": "U0ADMIN", "username": "admin", "name": "admin", "team_id": slack.team_id}
    assert payload["channel"] == {"id": CHANNEL, "name": "c0alerts"}
    assert payload["container"] == {"type": "message", "message_ts": ts, "channel_id": CHANNEL, "is_ephemeral": False}
    assert payload["message"]["ts"] == ts and payload["message"]["blocks"] == CLICKABLE
    [action] = payload["actions"]
    assert TS_PATTERN.match(action.pop("action_ts"))
    assert action == {
        "action_id": "ack", "block_id": "alert_actions", "type": "button", "value": "42",
        "text": {"type": "plain_text", "text": "Acknowledge", "emoji": True},
    }  # fmt: skip — the value is the one the message holds, as Slack sends it
    assert payload["team"]["id"] == slack.team_id and payload["api_app_id"] == slack.app_id
    assert re.fullmatch(rf"http://127\.0\.0\.1:{slack.port}/response/\d+", payload["response_url"])
    assert json.loads(json.dumps(payload)) == payload  # goes over the wire as JSON


def test_block_actions_payload_for_a_select_and_for_an_unknown_message(client, slack):
    ts = client.chat_postMessage(channel=CHANNEL, text="an alert", blocks=CLICKABLE)["ts"]
    [action] = slack.block_actions_payload("U0ADMIN", CHANNEL, ts, "snooze", selected_option_value="604800")["actions"]
    assert action["type"] == "static_select" and action["block_id"] == "alert_actions"
    assert action["selected_option"] == {"text": {"type": "plain_text", "text": "7 days", "emoji": True}, "value": "604800"}
    with pytest.raises(ValueError):  # the message offers no such option: a bug in the test
        slack.block_actions_payload("U0ADMIN", CHANNEL, ts, "snooze", selected_option_value="60")
    with pytest.raises(ValueError):  # a button has no options
        slack.block_actions_payload("U0ADMIN", CHANNEL, ts, "ack", selected_option_value="3600")

    gone = slack.block_actions_payload("U0ADMIN", CHANNEL, "1767225600.999999", "ack", value="7", block_id="b1")
    assert "message" not in gone  # Slack can only send the message it has
    assert gone["actions"][0]["value"] == "7" and gone["actions"][0]["block_id"] == "b1"
    assert gone["container"]["message_ts"] == "1767225600.999999"


def test_app_home_opened_event_carries_the_published_view(client, slack):
    first = slack.app_home_opened_event("U0ADMIN")
    assert first["type"] == "event_callback" and first["team_id"] == slack.team_id
    assert first["event"]["type"] == "app_home_opened" and first["event"]["tab"] == "home"
    assert first["event"]["user"] == "U0ADMIN" and first["event"]["channel"].startswith("D")
    assert "view" not in first["event"]  # never published for this user
    assert first["authorizations"][0]["user_id"] == slack.bot_user_id
    view = client.views_publish(user_id="U0ADMIN", view=home([section("hi")]))["view"]
    again = slack.app_home_opened_event("U0ADMIN")
    assert again["event"]["view"] == view and again["event_id"] != first["event_id"]


def test_bolt_answers_a_button_click_and_app_home_opened_over_socket_mode(slack):
    app = App(client=WebClient(token=TOKEN, base_url=slack.api_url))

    @app.action("ack")
    def on_ack(ack, body, respond):
        ack()
        respond(f"acked by {body['user']['id']} on {body['container']['message_ts']}", replace_original=False)

    @app.event("app_home_opened")
    def on_home(event, client):
        client.views_publish(user_id=event["user"], view=home([section("fresh home")]))

    handler = SocketModeHandler(app, APP_TOKEN, ping_interval=0.5)
    handler.connect()
    try:
        slack.wait_for_socket()
        ts = WebClient(token=TOKEN, base_url=slack.api_url).chat_postMessage(
            channel=CHANNEL, text="an alert", blocks=CLICKABLE
        )["ts"]
        click = slack.block_actions_payload("U0ADMIN", CHANNEL, ts, "ack")
        clicked = slack.send_envelope("interactive", click)
        assert slack.wait_for_ack(clicked) == {"envelope_id": clicked}
        [response] = slack.wait_for_responses(1, url=click["response_url"])
        assert response["payload"]["text"] == f"acked by U0ADMIN on {ts}"

        opened = slack.send_envelope("events_api", slack.app_home_opened_event("U0ADMIN"))
        assert slack.wait_for_ack(opened) == {"envelope_id": opened}
        slack.wait_for_calls("views.publish")
        assert slack.home_view("U0ADMIN")["blocks"] == [section("fresh home")]
        assert [e["late"] for e in slack.envelopes()] == [False, False]

        # No listener for this action: Bolt sends no ack at all (Slack then shows the user an
        # error), which is why tests/test_manifest.py checks every declared action is answered.
        stray = slack.block_actions_payload("U0ADMIN", CHANNEL, ts, "snooze", selected_option_value="3600")
        with pytest.raises(TimeoutError):
            slack.wait_for_ack(slack.send_envelope("interactive", stray), timeout=0.5)
    finally:
        handler.close()


def test_validate_blocks_checks_selects_and_takes_the_home_limit():
    from sim.slack_blocks import MAX_HOME_BLOCKS, validate_blocks

    assert validate_blocks(CLICKABLE) == []
    bad = {**SNOOZE_SELECT, "options": [{"text": {"type": "mrkdwn", "text": "x"}, "value": ""}]}
    assert validate_blocks([{"type": "actions", "elements": [bad]}]) == [
        "[ERROR] must be plain_text [json-pointer:/blocks/0/elements/0/options/0/text/type]",
        "[ERROR] must be 1 to 150 characters [json-pointer:/blocks/0/elements/0/options/0/value]",
    ]
    rows = [section("r")] * 60
    assert validate_blocks(rows) == ["[ERROR] no more than 50 items allowed [json-pointer:/blocks]"]
    assert validate_blocks(rows, max_blocks=MAX_HOME_BLOCKS) == []



# -- rendering ------------------------------------------------------------------


def test_render_text_of_typical_alert():
    assert render_text({"text": "fallback", "blocks": ALERT_BLOCKS}) == "\n".join(
        [
            "SMTP submit denied: CONTOSO\\svc-scanner",
            "=======================================",
            "*3 events* since 08:13 & counting (<!channel> is not a ping)",
            "*Account* CONTOSO\\svc-scanner",
            "*Connector* EX01\\Default Frontend EX01",
            "----------------------------------------",
            "Event 1018 on EX01 (https://ex01.contoso.local) | MSExchangeTransport",
            "[Grant submit] [Ignore]",
        ]
    )


def test_render_text_falls_back_to_text_and_decodes_controls():
    assert render_text({"text": "hi <@U123> in <#C0ALERTS|alerts>: a &amp;lt; b &gt; c", "blocks": []}) == (
        "hi @U123 in #alerts: a &lt; b > c"
    )
    assert render_text({"blocks": [{"type": "section", "text": {"type": "plain_text", "text": "&amp;"}}]}) == "&amp;"


def test_render_text_of_a_posted_message(client, slack):
    client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=ALERT_BLOCKS)
    rendered = render_text(slack.messages(CHANNEL)[0])
    assert rendered.startswith("SMTP submit denied")
    assert "[Grant submit] [Ignore]" in rendered


def test_block_kit_builder_url_round_trips():
    url = block_kit_builder_url(ALERT_BLOCKS)
    prefix = "https://app.slack.com/block-kit-builder/#"
    assert url.startswith(prefix)
    encoded = url[len(prefix) :]
    assert not set(encoded) & set(' "{}#&?')
    assert json.loads(unquote(encoded)) == {"blocks": ALERT_BLOCKS}
    assert block_kit_builder_url({"blocks": ALERT_BLOCKS}) == url
