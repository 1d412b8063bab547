"""Secrets never leak: the real `submitwatch` CLI (check, poll-once -v, run -v in Socket Mode and
in HTTP mode) with distinctive secret values, debug logging on, and WinRM and Slack failures
injected; then stdout, stderr, the SQLite files (main, -wal, -shm), the text of exceptions and
repr/str of the configuration are searched for every secret, in every encoding it could take.
"""
from __future__ import annotations

import base64
import copy
import dataclasses
import hashlib
import hmac
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
import traceback
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from bot.core.config import Secret, parse_config
from bot.engine.delivery import deliver_once
from bot.engine.poller import poll_server_once
from bot.slack.sender import SlackSender
from bot.sources.base import SourceError
from bot.sources.winrm import WinRMSource
from sim.eventlog import EventLog
from sim.slack_api import SlackStandIn
from sim.winrm_server import WinRMSimulator
from store.db import open_db
from tests.conftest import CHANNEL, WINRM_USER
from tests.helpers import EXE, ROOT, free_port, run_cli, wait_until

FE = "MSExchangeFrontEndTransport"
# Each secret carries a marker that survives URL- and JSON-encoding, so a partial or encoded
# leak is still found.
BOT_TOKEN = "xoxb-4242-SECRETbot7f3a9c1d"
APP_TOKEN = "xapp-1-A0SUBMITAPP-SECRETapp5e8b2a"
SIGNING_SECRET = "SECRETsigning0c4d6e"
WINRM_PASSWORD = "SECRETwinrm-Pw!9e3a"
WRONG_PASSWORD = "SECRETwrong-Pw!1b7d"
SECRETS = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN,
           "SLACK_SIGNING_SECRET": SIGNING_SECRET, "WINRM_PASSWORD": WINRM_PASSWORD,
           "the wrong WinRM password": WRONG_PASSWORD}
ENV = {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN,
       "SLACK_SIGNING_SECRET": SIGNING_SECRET, "WINRM_PASSWORD": WINRM_PASSWORD}


def forms(secret: str) -> list[bytes]:
    """The secret as bytes in each form it could leak in: as is, its marker alone, URL- and
    JSON-escaped, UTF-16 (NTLM hashes the password as UTF-16LE), base64 of the Basic header."""
    marker = secret[secret.index("SECRET"):]
    texts = {secret, marker, urllib.parse.quote(secret, safe=""), json.dumps(secret)[1:-1],
             base64.b64encode(f"{WINRM_USER}:{secret}".encode()).decode()[8:]}
    found = [t.encode() for t in texts]
    found += [t.encode("utf-16-le") for t in (secret, marker)]
    return found


def assert_no_secret(where: str, data: str | bytes) -> None:
    blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
    for name, secret in SECRETS.items():
        for form in forms(secret):
            assert form not in blob, f"{name} appears in {where}"


_BASE64 = re.compile(r"[A-Za-z0-9+/]{24,}={0,2}")


def assert_no_auth_tokens(where: str, text: str) -> None:
    """No NTLM message, bare or inside SPNEGO, in base64 anywhere: the AUTHENTICATE message
    carries the NTLMv2 response, which can be cracked offline to recover the password."""
    for blob in _BASE64.findall(text):
        try:
            raw = base64.b64decode(blob + "=" * (-len(blob) % 4))
        except ValueError:
            continue
        assert b"NTLMSSP" not in raw, f"an NTLM authentication message is logged in {where}"


def assert_database_clean(db_path: Path) -> None:
    files = [p for p in db_path.parent.iterdir() if p.name.startswith(db_path.name)]
    assert db_path in files
    for path in files:                       # sw.db, sw.db-wal, sw.db-shm
        assert_no_secret(path.name, path.read_bytes())


@pytest.fixture
def slack():
    with SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, channels=(CHANNEL,)) as s:
        yield s


@pytest.fixture
def sims():
    """EX01 over NTLM with message encryption; EX02 over Basic on http, the one transport that
    puts the password itself (base64) on the wire."""
    logs = {"EX01": EventLog("EX01.contoso.local", first_record=1000),
            "EX02": EventLog("EX02.contoso.local", first_record=5000)}
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm") as ntlm, \
            WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="basic") as basic:
        yield logs, ntlm, basic


def write_config(tmp_path, slack, sims, *, mode="socket", http_port=3000):
    _logs, ntlm, basic = sims
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
interval = "2s"
jitter = 0
delivery_interval = "0.5s"
operation_timeout = 2
read_timeout = 4

[[servers]]
name = "EX01"
url = "{ntlm.url_for('EX01')}"
username = '{WINRM_USER}'
password_env = "WINRM_PASSWORD"

[[servers]]
name = "EX02"
url = "{basic.url_for('EX02')}"
username = '{WINRM_USER}'
password_env = "WINRM_PASSWORD"
transport = "basic"
""", encoding="utf-8")
    return path


def scanner(logs, server, account="CONTOSO\\svc-scanner"):
    logs[server].append(FE, 1020, (account,))


# --- check and poll-once ------------------------------------------------------------------------

def test_check_and_poll_once_never_show_a_secret_even_when_everything_fails(tmp_path, slack,
                                                                            sims):
    logs, ntlm, _basic = sims
    config = write_config(tmp_path, slack, sims)
    outputs = []

    def cli(*args, env=ENV):
        result = run_cli(*args, "--config", str(config), env=env)
        outputs.append((" ".join(args), result))
        return result

    ok = cli("check", "-v")
    assert "OK       EX01: WinRM works" in ok.stdout and "OK       EX02: WinRM works" in ok.stdout
    assert "OK       Slack: signed in" in ok.stdout

    slack.fail_next("auth.test", error="token_revoked")
    bad = cli("check", "-v", env={**ENV, "WINRM_PASSWORD": WRONG_PASSWORD})
    assert bad.returncode == 1
    assert "FAILED   EX01: the server refused the credentials" in bad.stdout
    assert "FAILED   EX02: the server refused the credentials" in bad.stdout
    assert "FAILED   Slack" in bad.stdout

    scanner(logs, "EX01")
    scanner(logs, "EX02", "CONTOSO\\app-erp")
    good = cli("poll-once", "-v")
    assert good.returncode == 0, good.stderr
    assert "Slack: 2 sent, 0 failed" in good.stdout
    assert "DEBUG" in good.stderr                       # debug logging really was on

    scanner(logs, "EX01", "CONTOSO\\copier")
    slack.fail_next("chat.postMessage", error="token_revoked", times=5)
    slack.fail_next("chat.update", error="token_revoked", times=5)
    failed = cli("poll-once", "-v", env={**ENV, "WINRM_PASSWORD": WRONG_PASSWORD})
    assert failed.returncode == 1
    assert "EX01: FAILED" in failed.stdout and "HTTP 401" in failed.stdout
    ntlm.inject("EX01", "wsman_fault", times=None, reason="Access is denied.")
    scanner(logs, "EX02", "CONTOSO\\other")
    slack.fail_next("chat.postMessage", error="token_revoked", times=5)
    faulted = cli("poll-once", "-v")
    assert "EX01: FAILED" in faulted.stdout and "Access is denied" in faulted.stdout
    assert "token_revoked" in faulted.stdout or "SLACK_BOT_TOKEN" in faulted.stdout
    # JSON log lines go through the same filters.
    scanner(logs, "EX02", "CONTOSO\\json")
    as_json = cli("poll-once", "-v", "--log-format", "json")
    assert as_json.stderr.lstrip().startswith('{"time": ')

    for what, result in outputs:
        assert "Traceback" not in result.stderr, result.stderr[-2000:]
        assert_no_secret(f"stdout of `{what}`", result.stdout)
        assert_no_secret(f"stderr of `{what}`", result.stderr)
        assert_no_auth_tokens(f"stderr of `{what}`", result.stderr)
    assert_database_clean(tmp_path / "sw.db")


# --- run, Socket Mode and HTTP ------------------------------------------------------------------

def start_run(config, logs_to: Path):
    """`submitwatch run -v`; its output goes to files (debug logging would fill a pipe nobody
    reads until the end, and a full pipe blocks every thread that logs)."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("SLACK_", "SUBMITWATCH_", "WINRM_"))}
    env.update(ENV, PYTHONPATH=str(ROOT))
    out, err = open(logs_to / "run.out", "w+"), open(logs_to / "run.err", "w+")
    proc = subprocess.Popen(EXE + ["run", "-v", "--config", str(config)], env=env, cwd=ROOT,
                            stdout=out, stderr=err, text=True)
    proc.files = (out, err)
    return proc


def stop_run(proc) -> tuple[str, str]:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=30)
    texts = []
    for file in proc.files:
        file.seek(0)
        texts.append(file.read())
        file.close()
    assert proc.returncode == 0, texts[1][-3000:]
    return texts[0], texts[1]


def failures(db_path: Path, server: str) -> int:
    with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as conn:
        row = conn.execute("SELECT consecutive_failures FROM server_state WHERE server = ?",
                           [server]).fetchone()
    return row[0] if row else 0


def test_run_in_socket_mode_with_commands_and_failures_never_logs_a_secret(tmp_path, slack, sims):
    logs, ntlm, basic = sims
    config = write_config(tmp_path, slack, sims)
    db_path = tmp_path / "sw.db"
    scanner(logs, "EX01")
    proc = start_run(config, tmp_path)
    try:
        slack.wait_for_socket(timeout=30)
        slack.wait_for_calls("chat.postMessage", 1, timeout=30)
        for text in ("status", "ack #1 on it, calling the vendor", "history", "fix #1"):
            payload = slack.slash_command_payload(text, user_id="U0ALICE")
            envelope = slack.send_envelope("slash_commands", payload)
            assert slack.wait_for_ack(envelope, timeout=10)["envelope_id"] == envelope
            slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
        # WinRM refuses both servers for a while, then recovers.
        ntlm.inject("EX01", "unauthorized", times=None)
        basic.inject("EX02", "unauthorized", times=None)
        wait_until(lambda: failures(db_path, "EX01") >= 2 and failures(db_path, "EX02") >= 2,
                   what="two failed polls of each server")
        ntlm.clear_faults()
        basic.clear_faults()
        wait_until(lambda: failures(db_path, "EX01") == 0, what="EX01 polled again")
        # Then Slack revokes the bot token while an alert waits to be sent.
        slack.revoke_token()
        scanner(logs, "EX02", "CONTOSO\\after-revocation")
        wait_until(lambda: any(c.error == "token_revoked" for c in slack.calls),
                   what="a call refused with token_revoked")
        payload = slack.slash_command_payload("status", user_id="U0ALICE")
        envelope = slack.send_envelope("slash_commands", payload)
        slack.wait_for_ack(envelope, timeout=10)
        slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
    finally:
        out, err = stop_run(proc)
    assert "connected to Slack (Socket Mode)" in err and "DEBUG" in err
    assert "HTTP 401" in err and "token_revoked" in err      # the failures were logged
    assert_no_secret("stdout of `run -v` (Socket Mode)", out)
    assert_no_secret("stderr of `run -v` (Socket Mode)", err)
    assert_no_auth_tokens("stderr of `run -v` (Socket Mode)", err)
    assert_database_clean(db_path)
    for response in slack.responses():
        assert_no_secret("a slash-command answer", json.dumps(response))


def signed_request(port: int, body: str, secret: str) -> int:
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{timestamp}:{body}".encode(),
                                 hashlib.sha256).hexdigest()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/slack/events", data=body.encode(), method="POST",
        headers={"Content-Type": "application/x-www-form-urlencoded",
                 "X-Slack-Request-Timestamp": timestamp, "X-Slack-Signature": signature})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_run_in_http_mode_with_signed_and_forged_requests_never_logs_a_secret(tmp_path, slack,
                                                                             sims):
    logs, _ntlm, _basic = sims
    port = free_port()
    config = write_config(tmp_path, slack, sims, mode="http", http_port=port)
    scanner(logs, "EX01")
    proc = start_run(config, tmp_path)
    try:
        slack.wait_for_calls("chat.postMessage", 1, timeout=30)
        payload = slack.slash_command_payload("status", user_id="U0ALICE")
        body = urllib.parse.urlencode(payload)
        assert signed_request(port, body, SIGNING_SECRET) == 200
        slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
        forged = slack.slash_command_payload("ack #1", user_id="U0MALLORY")
        assert signed_request(port, urllib.parse.urlencode(forged), "guessed-secret") == 401
    finally:
        out, err = stop_run(proc)
    assert "serving Slack requests" in err and "DEBUG" in err
    assert_no_secret("stdout of `run -v` (HTTP)", out)
    assert_no_secret("stderr of `run -v` (HTTP)", err)
    assert_no_auth_tokens("stderr of `run -v` (HTTP)", err)
    assert_database_clean(tmp_path / "sw.db")


# --- exceptions and the configuration -----------------------------------------------------------

def exception_texts(exc: BaseException) -> str:
    """str, repr and the formatted traceback of an exception and everything chained to it."""
    parts, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        parts += [str(exc), repr(exc), *traceback.format_exception(exc)]
        exc = exc.__cause__ or exc.__context__
    return "\n".join(parts)


def test_exceptions_from_refused_credentials_and_a_revoked_token_hold_no_secret(tmp_path, slack,
                                                                               sims):
    logs, ntlm, _basic = sims
    raw = {"slack": {"channel": CHANNEL, "api_url": slack.api_url},
           "store": {"path": str(tmp_path / "sw.db")},
           "servers": [{"name": "EX01", "url": ntlm.url_for("EX01"), "username": WINRM_USER,
                        "password_env": "WINRM_PASSWORD"}]}
    wrong = parse_config(raw, {**ENV, "WINRM_PASSWORD": WRONG_PASSWORD})
    with pytest.raises(SourceError) as info:
        WinRMSource(wrong.servers[0], wrong.polling).open()
    assert "HTTP 401" in str(info.value)
    assert_no_secret("the SourceError for a wrong password", exception_texts(info.value))

    config = parse_config(raw, ENV)
    db = open_db(config.store.path)
    scanner(logs, "EX01")
    assert poll_server_once(db, WinRMSource(config.servers[0], config.polling), config).stored == 1
    slack.revoke_token()
    result = deliver_once(db, SlackSender.from_config(config.slack), config)
    assert result.failed == 1 and any("token_revoked" in e for e in result.errors)
    assert_no_secret("the delivery errors", "\n".join(result.errors))
    with pytest.raises(Exception) as info:   # what slack_sdk raises for a revoked token
        SlackSender.from_config(config.slack).client.auth_test()
    assert_no_secret("slack_sdk's error for a revoked token", exception_texts(info.value))
    db.conn.close()
    assert_database_clean(tmp_path / "sw.db")


def test_the_configuration_never_prints_a_secret(sims, slack):
    _logs, ntlm, _basic = sims
    config = parse_config({
        "slack": {"channel": CHANNEL, "api_url": slack.api_url, "mode": "http"},
        "servers": [{"name": "EX01", "url": ntlm.url_for("EX01"), "username": WINRM_USER,
                     "password_env": "WINRM_PASSWORD"}]}, ENV)
    assert config.slack.bot_token.reveal() == BOT_TOKEN        # the values are there...
    assert config.servers[0].password.reveal() == WINRM_PASSWORD
    source = WinRMSource(config.servers[0], config.polling)
    texts = [repr(config), str(config), f"{config!s:>10}", repr(config.slack),
             repr(config.servers), str(config.servers[0]), repr(source),
             repr(dataclasses.asdict(config)), repr(copy.deepcopy(config)),
             json.dumps(dataclasses.asdict(config), default=str),
             repr(Secret(BOT_TOKEN)), str(Secret(BOT_TOKEN)), f"{Secret(BOT_TOKEN)}"]
    for text in texts:                                          # ...and never shown
        assert_no_secret("repr/str of the configuration", text)
    assert "Secret('***')" in repr(config)
