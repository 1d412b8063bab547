"""HTTP mode: the real Bolt app behind the bot's own threaded WSGI server, on 127.0.0.1.

Requests are signed here the way Slack documents it (v0 HMAC-SHA256 of "v0:{timestamp}:{body}"
with the signing secret) and sent over real HTTP; replies to slash commands go to response_urls
on the Slack stand-in, so "no listener ran" is visible as "nothing was posted there".
"""
from __future__ import annotations

import hashlib
import hmac
import http.client
import json
import socket
import threading
import time
from urllib.parse import urlencode

import pytest

from bot.app import EVENTS_PATH, MAX_BODY, build_bolt_app, run, serve_http
from bot.core.config import ConfigError, parse_config
from bot.slack.alerts import ACTION_SHOW_FIX
from store.db import open_db
from tests.conftest import BOT_TOKEN, CHANNEL

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
FORM = "application/x-www-form-urlencoded"


def http_config(slack, db_path, **slack_keys):
    raw = {"slack": {"channel": CHANNEL, "api_url": slack.api_url, "mode": "http", **slack_keys},
           "store": {"path": db_path}}
    return parse_config(raw, {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_SIGNING_SECRET": SECRET})


@pytest.fixture
def bot(slack, db_path, clock):
    """The real Bolt app served on an ephemeral port; yields the port."""
    open_db(db_path).conn.close()  # the schema, as `run` creates it before serving
    server = serve_http(build_bolt_app(http_config(slack, db_path), clock), "127.0.0.1", 0)
    try:
        yield server.server_port
    finally:
        server.shutdown()
        server.server_close()


def sign(body: str, timestamp: int | str, secret: str = SECRET) -> str:
    base = f"v0:{timestamp}:{body}".encode()
    return "v0=" + hmac.new(secret.encode(), base, hashlib.sha256).hexdigest()


def signed(body: str, *, age: int = 0, secret: str = SECRET) -> dict:
    """Slack's two headers for `body`, as if Slack sent it `age` seconds ago."""
    timestamp = int(time.time()) - age
    return {"X-Slack-Request-Timestamp": str(timestamp),
            "X-Slack-Signature": sign(body, timestamp, secret)}


def request(port: int, method: str, path: str, body: str = "", headers: dict | None = None,
            content_type: str = FORM) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body.encode() if body else None,
                     headers={"Content-Type": content_type, **(headers or {})})
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def post(port: int, body: str, headers: dict, content_type: str = FORM) -> tuple[int, str]:
    return request(port, "POST", EVENTS_PATH, body, headers, content_type)


def command_body(slack, text: str) -> tuple[str, str]:
    """A slash command's form body and its response_url."""
    payload = slack.slash_command_payload(text)
    return urlencode(payload), payload["response_url"]


# -- what Slack sends, correctly signed --------------------------------------------------------


def test_slash_commands_are_acked_then_answered_through_the_response_url(slack, bot):
    body, response_url = command_body(slack, "help")
    assert post(bot, body, signed(body)) == (200, "")  # the ack: empty, within Slack's 3 s
    [reply] = slack.wait_for_responses(1, url=response_url)
    assert reply["status"] == 200
    assert reply["payload"]["response_type"] == "ephemeral"
    for subcommand in ("history", "show", "fix", "ack", "snooze", "status", "servers"):
        assert f"`/submitwatch {subcommand}" in reply["payload"]["text"]

    body, response_url = command_body(slack, "status")
    assert post(bot, body, signed(body))[0] == 200
    [reply] = slack.wait_for_responses(1, url=response_url)
    assert "*Open incidents:* 0" in reply["payload"]["text"]  # read from the real SQLite file


def test_a_signed_button_click_is_acked_and_answered(slack, bot):
    # A click on "Show fix" of an alert whose incident is not in the database (any more).
    payload = slack.block_actions_payload("U0ADMIN", CHANNEL, "1767225600.000100",
                                          ACTION_SHOW_FIX, value="1")
    body = urlencode({"payload": json.dumps(payload)})  # Slack posts interactions as a form field
    assert post(bot, body, signed(body, secret="not-the-secret"))[0] == 401
    assert post(bot, body, signed(body)) == (200, "")
    [reply] = slack.wait_for_responses(1, url=payload["response_url"])
    assert reply["payload"]["text"] == "That incident no longer exists."
    assert reply["payload"]["response_type"] == "ephemeral"


def test_slacks_url_check_is_answered(bot):
    # When the Request URL is set in the app settings, Slack posts this and wants the challenge.
    body = json.dumps({"token": "x", "challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P",
                       "type": "url_verification"})
    status, text = post(bot, body, signed(body), "application/json")
    assert (status, json.loads(text)) == (
        200, {"challenge": "3eZbrw1aBm2rZgRNFdxV2595E9CY3gmdALWMmHkvFXO7tYXAYM8P"})


# -- what Slack did not send ---------------------------------------------------------------------


def forged(body):
    return signed(body, secret="guessed-secret")


def tampered(body):
    return signed(body.replace("status", "help"))  # signed other bytes than those sent


def no_headers(body):
    return {}


def no_signature(body):
    return {"X-Slack-Request-Timestamp": str(int(time.time()))}


def garbage_timestamp(body):
    return {"X-Slack-Request-Timestamp": "soon", "X-Slack-Signature": sign(body, "soon")}


def stale(body):
    return signed(body, age=6 * 60)  # Bolt allows 5 minutes of clock difference


def from_the_future(body):
    return signed(body, age=-6 * 60)


def replay_with_refreshed_timestamp(body):
    # A request captured 6 minutes ago: its signature covers its old timestamp, so bringing
    # the timestamp up to date to get past the 5-minute window breaks the signature.
    captured = signed(body, age=6 * 60)
    return {**captured, "X-Slack-Request-Timestamp": str(int(time.time()))}


@pytest.mark.parametrize("headers_for", [forged, tampered, no_headers, no_signature,
                                         garbage_timestamp, stale, from_the_future,
                                         replay_with_refreshed_timestamp])
def test_requests_slack_did_not_sign_are_refused_and_run_nothing(slack, bot, headers_for, caplog):
    body, response_url = command_body(slack, "status")
    status, text = post(bot, body, headers_for(body))
    assert status == 401
    assert "Traceback" not in caplog.text  # refused, not crashed
    # A good request afterwards is answered: had the refused one reached the listener, its
    # reply would be there too.
    good, good_url = command_body(slack, "help")
    assert post(bot, good, signed(good))[0] == 200
    slack.wait_for_responses(1, url=good_url)
    assert slack.responses(response_url) == []
    assert [r["url"] for r in slack.responses()] == [good_url]


def test_health_check_and_other_paths(bot):
    assert request(bot, "GET", "/healthz") == (200, "ok")
    assert request(bot, "GET", EVENTS_PATH)[0] == 404  # Slack only POSTs
    assert request(bot, "GET", "/")[0] == 404
    assert request(bot, "GET", "/slack/install")[0] == 404
    assert request(bot, "POST", "/slack/events/../healthz", "x=1")[0] == 404


def test_an_oversized_body_is_refused_before_it_is_read(bot):
    conn = http.client.HTTPConnection("127.0.0.1", bot, timeout=10)
    try:
        conn.putrequest("POST", EVENTS_PATH)
        conn.putheader("Content-Type", FORM)
        conn.putheader("Content-Length", str(MAX_BODY + 1))
        conn.endheaders()  # no body sent: the answer must not wait for it
        response = conn.getresponse()
        assert response.status == 413
    finally:
        conn.close()


def test_a_stalled_client_does_not_block_other_requests(bot):
    stalled = socket.create_connection(("127.0.0.1", bot), timeout=10)
    try:
        stalled.sendall(f"POST {EVENTS_PATH} HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n"
                        "X-Slack-Request-Timestamp: 1\r\n\r\nonly part".encode())
        started = time.monotonic()
        assert request(bot, "GET", "/healthz") == (200, "ok")  # one thread per request
        assert time.monotonic() - started < 2
    finally:
        stalled.close()


# -- `submitwatch run` in HTTP mode ------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_run_serves_http_and_stops_cleanly(slack, db_path):
    port = free_port()
    config = http_config(slack, db_path, http_port=port)
    stop = threading.Event()
    runner = threading.Thread(target=run, args=(config, stop))
    runner.start()
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                assert request(port, "GET", "/healthz") == (200, "ok")
                break
            except ConnectionRefusedError:
                assert time.monotonic() < deadline, "run did not start serving"
                time.sleep(0.05)
        body, response_url = command_body(slack, "status")
        assert post(port, body, signed(body))[0] == 200
        slack.wait_for_responses(1, url=response_url)
    finally:
        stop.set()
        runner.join(timeout=15)
    assert not runner.is_alive()
    with pytest.raises(ConnectionRefusedError):  # nothing listens there any more
        request(port, "GET", "/healthz")


def test_run_fails_with_a_config_error_when_the_port_is_taken(slack, db_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        config = http_config(slack, db_path, http_port=taken.getsockname()[1])
        with pytest.raises(ConfigError, match=r"slack\.http_port \d+ cannot be opened"):
            run(config, threading.Event())


def test_http_host_is_checked(slack, db_path):
    assert http_config(slack, db_path).slack.http_host == "127.0.0.1"  # behind a local proxy
    assert http_config(slack, db_path, http_host="0.0.0.0").slack.http_host == "0.0.0.0"
    assert http_config(slack, db_path, http_host="::").slack.http_host == "::"
    for bad in ("localhost", "127.0.0.256", "", 8080):
        with pytest.raises(ConfigError, match="slack.http_host must"):
            http_config(slack, db_path, http_host=bad)
