"""What several test modules share: waiting, a hand-moved clock, the CLI as a process, one
poll-and-deliver sweep. (Fixtures stay in conftest.py; test modules do not import each other.)"""
from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient

from bot.core.config import parse_config
from bot.core.model import Event
from bot.engine.chatops import Actor
from bot.engine.delivery import deliver_once
from bot.engine.poller import ingest, poll_server_once
from bot.slack.sender import SlackSender
from bot.sources.winrm import WinRMSource
from handlers import actions
from store.db import write_transaction
from tests.conftest import BOT_TOKEN, CHANNEL, WINRM_PASSWORD, WINRM_USER

FE, BE = "MSExchangeFrontEndTransport", "MSExchangeTransport"


def wait_until(condition, timeout: float = 20.0, what: str = "condition", every: float = 0.05):
    """Poll `condition` until it returns something true (returned), or fail after `timeout`.
    For waiting on another thread or process; never for the passing of time itself."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        time.sleep(every)


class Seconds:
    """A monotonic clock (float seconds) the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> float:
        self.now += seconds
        return self.now


# --- the CLI as a separate process ---------------------------------------------------------------

EXE = [sys.executable, "-m", "bot.cli"]
ROOT = Path(__file__).resolve().parent.parent


def run_cli(*args, env=None, timeout=60, cwd=None):
    full_env = {k: v for k, v in os.environ.items()
                if not k.startswith(("SLACK_", "SUBMITWATCH_", "WINRM_"))}
    full_env.update(env or {})
    full_env["PYTHONPATH"] = str(ROOT)
    return subprocess.run(EXE + list(args), capture_output=True, text=True, env=full_env,
                          timeout=timeout, cwd=cwd or ROOT)


def write_config(tmp_path, slack, winrm, *, extra_server="", mode="socket", http_port=3000,
                 polling='interval = "2s"\njitter = 0\ndelivery_interval = "0.5s"'):
    path = tmp_path / "submitwatch.toml"
    path.write_text(f"""
[slack]
channel = "{CHANNEL}"
api_url = "{slack.api_url}"
mode = "{mode}"
http_port = {http_port}

[store]
path = "{tmp_path / 'sw.db'}"

[polling]
{polling}

[[servers]]
name = "EX01"
url = "{winrm.url_for('EX01')}"
username = '{WINRM_USER}'
password_env = "WINRM_PASSWORD"
{extra_server}
""", encoding="utf-8")
    return path


ENV = {"SLACK_BOT_TOKEN": BOT_TOKEN, "WINRM_PASSWORD": WINRM_PASSWORD}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- one poll of every server, then one delivery round ------------------------------------------

def scanner(log, n=1, account="CONTOSO\\svc-scanner"):
    for _ in range(n):
        log.append(FE, 1020, (account,))


def sweep(db, config, clock):
    results = [poll_server_once(db, WinRMSource(s, config.polling), config, clock)
               for s in config.servers]
    delivery = deliver_once(db, SlackSender.from_config(config.slack, retries=2), config, clock)
    return results, delivery


# --- chat-ops: who acts, and /submitwatch below Slack ------------------------------------------

ALICE = Actor("U0ALICE", "button", CHANNEL)
BOB = Actor("U0BOB", "slash", CHANNEL)


def ask(db, config, clock, text, user="U0ALICE", channel=CHANNEL, client=None):
    """/submitwatch `text` from `user`, answered as the slash command would (no Slack)."""
    from handlers.commands import answer
    from handlers.common import Request
    return answer(Request(db=db, config=config, now=clock(), user_id=user, channel_id=channel,
                          client=client), text)


def bolt_actions(slack, db, config, clock):
    """The alert's buttons on a real Bolt app (its Web API calls go to the stand-in)."""
    app = App(client=WebClient(token=BOT_TOKEN, base_url=slack.api_url), signing_secret="unused",
              request_verification_enabled=False, token_verification_enabled=False,
              process_before_response=True)
    actions.register(app, lambda: db, config, clock=clock)
    return app


def click(app, slack, user, action_id, message, **value):
    """`user` clicks `action_id` on `message` (the stand-in builds Slack's payload); returns
    what the listener answered through the response_url."""
    payload = slack.block_actions_payload(user, CHANNEL, message["ts"], action_id, **value)
    assert app.dispatch(BoltRequest(body=payload, mode="socket_mode")).status == 200
    return [r["payload"] for r in slack.responses(payload["response_url"])]


# --- the world the lookup tests read: events fed straight in, no server polled -----------------

NOW = datetime(2026, 3, 8, 15, 0, tzinfo=UTC)
SCANNER = "CONTOSO\\svc-scanner"
RELAY = "EX01\\Relay Scanners"
FRONTEND = "EX01\\Client Frontend EX01"
PRINTER, COPIER, OLD, ANCIENT = ("CONTOSO\\printer", "CONTOSO\\copier", "CONTOSO\\old",
                                 "CONTOSO\\ancient")


def at(day: int, hour: int, minute: int = 0) -> datetime:
    return datetime(2026, 3, day, hour, minute, tzinfo=UTC)


# --- the world these tests look up ---------------------------------------------------------------

def lookup_config(**tables):
    """Three servers that are never polled: for tests that feed events straight in."""
    raw = {
        "slack": {"channel": "C0ALERTS"},
        "servers": [
            {"name": "EX01", "url": "https://127.0.0.1:5986/wsman", "username": "u",
             "password_env": "PW", "version": "2016"},
            {"name": "EX02", "url": "http://127.0.0.1:5985/wsman", "username": "u",
             "password_env": "PW", "submission_connector": "Client Frontend EX02",
             "channel": "C0EX02"},
            {"name": "EX03", "url": "https://127.0.0.1:5987/wsman", "username": "u",
             "password_env": "PW", "version": "2010", "validate_certificate": False},
        ],
        **tables,
    }
    return parse_config(raw, {"SLACK_BOT_TOKEN": "xoxb-test", "PW": "secret"})


class Feed:
    """Events as the poller stores them: unique record ids per server, the real decide()."""

    def __init__(self, db, config):
        self.db, self.config, self.record = db, config, 1000

    def event(self, account, time, server="EX01", connector=None):
        self.record += 1
        return Event(server=server, record_id=self.record, provider="MSExchangeTransport",
                     event_id=1018 if connector else 1020, time=time, account=account,
                     connector=connector, computer=f"{server}.contoso.local")

    def ingest(self, events, now):
        with write_transaction(self.db):
            ingest(self.db, self.config, events, 0, now)

    def burst(self, account, first, count, **kw):
        """`count` events a minute apart, stored a minute after the last (as a poll would)."""
        events = [self.event(account, first + timedelta(minutes=i), **kw) for i in range(count)]
        self.ingest(events, events[-1].time + timedelta(minutes=1))


def many_incidents(db, config, count, open_ones=True):
    """`count` incidents of hostile, long account names, one event each, a minute apart."""
    feed = Feed(db, config)
    start = NOW - timedelta(minutes=count + 5)
    events = [feed.event(f"CONTOSO\\{'<&>`*' * 40}{n:05d}", start + timedelta(minutes=n))
              for n in range(count)]
    feed.ingest(events, NOW - timedelta(minutes=1))
    return events


# --- what every answer must be -------------------------------------------------------------

_OUR_TOKENS = re.compile(r"<!date\^\d+\^\{date_short_pretty\} \{time\}\|[^<>]*>|<@[UW][A-Z0-9]+>"
                         r"|<#[CG][A-Z0-9]+>|<!subteam\^S[A-Z0-9]+>")


def assert_no_markup(texts):
    """Only our own <tokens> in mrkdwn (dates, user and channel IDs), & only in entities."""
    for text in texts:
        bare = _OUR_TOKENS.sub("", text)
        assert "<" not in bare and ">" not in bare, text
        assert "&" not in re.sub(r"&(amp|lt|gt);", "", bare), text


# --- the ops endpoints (/metrics, /healthz, /readyz) ---------------------------------------------

def scrape(port, path):
    import urllib.error
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def samples(text):
    from prometheus_client.parser import text_string_to_metric_families
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}
