"""Slack out of reach, said in words (issue 23, item 4): `check`, the outbox's errors and
`poll-once` name what failed (a name that does not resolve, a refused port, TLS, a proxy, no
answer in time) instead of urllib's raw text among slack_sdk's per-attempt log lines; `check`
knows groups:history; `poll-once` says in one sentence what was sent and what still waits.

Everything stays on this machine: ports on 127.0.0.1, and names under `.invalid` that the
`no_dns` fixture answers itself (glibc would ask this machine's DNS server about them)."""
from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
from dataclasses import replace

import pytest

from bot.core.config import Secret
from bot.ops.check import run_check
from bot.slack.sender import DeliveryError, SlackSender, make_client
from tests.conftest import BOT_TOKEN, CHANNEL, samba_needs_root
from tests.helpers import ENV, ROOT, run_cli, write_config
from tests.tls import make_pki

FE = "MSExchangeFrontEndTransport"
NOWHERE = "slack.submitwatch.invalid"
PROXY_VARIABLES = ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy")


@pytest.fixture(autouse=True)
def no_dns(monkeypatch):
    """Names under .invalid do not resolve, said here without asking any DNS server; and no
    proxy from the environment sits between these tests and their servers."""
    real = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if str(host).rstrip(".").endswith(".invalid"):
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return real(host, *args, **kwargs)
    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def check_lines(make_config, api_url, app_token=None):
    """`check`'s status and its lines about Slack. Without app_token, SLACK_APP_TOKEN is
    missing, which fails `check` too (a test of a failing Slack does not mind)."""
    config = make_config(servers=("EX01",), slack={"api_url": api_url})
    config = replace(config, slack=replace(
        config.slack, app_token=Secret(app_token) if app_token else None))
    lines: list[str] = []
    status = run_check(config, out=lines.append)
    return status, [line for line in lines if "Slack" in line or "channel" in line]


def slack_line(lines):
    [line] = [line for line in lines if line.startswith(("OK       Slack", "FAILED   Slack"))]
    return line


@pytest.fixture
def tls_listener(tmp_path):
    """A TLS port on 127.0.0.1 whose certificate comes from a CA nobody trusts (or trusts only
    with SSL_CERT_FILE), for a name given by the test; it never answers HTTP."""
    listeners = []

    def start(names=("127.0.0.1",)):
        folder = tmp_path / f"pki{len(listeners)}"
        folder.mkdir()
        pki = make_pki(folder, names=names)
        context = pki.server_context()
        listener = socket.create_server(("127.0.0.1", 0))
        listeners.append(listener)

        def serve():
            while True:
                try:
                    conn, _ = listener.accept()
                except OSError:
                    return
                try:
                    context.wrap_socket(conn, server_side=True).close()
                except (OSError, ValueError):
                    conn.close()   # the client refused the certificate: what is tested
        threading.Thread(target=serve, daemon=True).start()
        return pki, listener.getsockname()[1]
    yield start
    for listener in listeners:
        listener.close()


class _RefusingProxy(http.server.BaseHTTPRequestHandler):
    """A proxy whose policy refuses everything: CONNECT (https) and plain requests (http)."""

    def do_CONNECT(self):  # noqa: N802 - http.server naming
        self.send_error(403)

    do_POST = do_GET = do_CONNECT  # noqa: N815

    def log_message(self, *args):
        pass


@pytest.fixture
def refusing_proxy():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RefusingProxy)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server.server_port
    server.shutdown()
    server.server_close()


# --- check: the words --------------------------------------------------------------------------

def test_check_says_a_refused_port_in_words_and_slack_sdk_logs_no_attempt_lines(
        tmp_path, winrm, slack):
    url, port = slack.api_url, slack.port
    config = write_config(tmp_path, slack, winrm)
    slack.stop()                       # the stand-in's port now refuses connections
    result = run_cli("check", "--config", str(config), env={**ENV, "SLACK_APP_TOKEN": "xapp-1"})
    assert result.returncode == 1
    assert (f"FAILED   Slack at {url}: 127.0.0.1:{port} refused the connection: nothing "
            "listens there, or a firewall rejects it") in result.stdout
    # Today: "Failed to send a request to Slack API server: <urlopen error [Errno 111] ...>",
    # "A retry handler found: ...", "Going to retry the same request: ..." on stderr.
    for raw in ("urlopen", "Errno", "Failed to send a request", "retry"):
        assert raw not in result.stdout + result.stderr, raw
    # -v (debug detail) keeps slack_sdk's own lines
    verbose = run_cli("-v", "check", "--config", str(config),
                      env={**ENV, "SLACK_APP_TOKEN": "xapp-1"})
    assert "Failed to send a request to Slack API server" in verbose.stderr


def test_check_says_a_name_that_does_not_resolve(make_config):
    status, lines = check_lines(make_config, f"https://{NOWHERE}/api/")
    assert status == 1
    assert slack_line(lines) == (f"FAILED   Slack at https://{NOWHERE}/api/: the host name "
                                 f"{NOWHERE} does not resolve (DNS): check it, and this "
                                 "machine's DNS server")


def test_check_says_tls_to_a_port_that_speaks_plain_http(make_config, slack):
    url = f"https://127.0.0.1:{slack.port}/api/"   # the stand-in speaks http only
    status, lines = check_lines(make_config, url)
    assert status == 1
    assert slack_line(lines) == (f"FAILED   Slack at {url}: TLS with 127.0.0.1 failed (wrong "
                                 f"version number): does 127.0.0.1:{slack.port} speak TLS?")


def test_check_says_a_certificate_nobody_trusts_and_one_for_another_name(
        make_config, tls_listener, monkeypatch):
    _pki, port = tls_listener()
    url = f"https://127.0.0.1:{port}/api/"
    status, lines = check_lines(make_config, url)
    assert status == 1
    assert slack_line(lines) == (
        f"FAILED   Slack at {url}: the TLS certificate 127.0.0.1 presented is not trusted "
        "(unable to get local issuer certificate): when a proxy or firewall inspects TLS, trust "
        "its CA (SSL_CERT_FILE names a CA bundle)")
    pki, port = tls_listener(names=("slack.example.test",))    # trusted, for another name
    monkeypatch.setenv("SSL_CERT_FILE", str(pki.ca_file))
    url = f"https://127.0.0.1:{port}/api/"
    status, lines = check_lines(make_config, url)
    assert slack_line(lines) == (
        f"FAILED   Slack at {url}: the TLS certificate 127.0.0.1 presented does not name "
        "127.0.0.1 (IP address mismatch, certificate is not valid for '127.0.0.1'.)")


def test_check_says_the_proxy_refused_and_never_shows_its_password(
        make_config, refusing_proxy, monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", f"http://squid-user:Pr0xy-secret@127.0.0.1:{refusing_proxy}")
    status, lines = check_lines(make_config, f"https://{NOWHERE}/api/")
    assert status == 1
    assert slack_line(lines) == (f"FAILED   Slack at https://{NOWHERE}/api/: the proxy "
                                 f"127.0.0.1:{refusing_proxy} refused to connect to {NOWHERE} "
                                 "(403 Forbidden)")
    status, lines = check_lines(make_config, f"http://{NOWHERE}/api/")   # no CONNECT: its page
    assert slack_line(lines).startswith(f"FAILED   Slack at http://{NOWHERE}/api/: HTTP 403 "
                                        "(Forbidden) through the proxy")
    assert not any("Pr0xy-secret" in line or "squid-user" in line for line in lines)


def test_check_says_when_slack_answers_with_a_server_error(make_config, slack):
    slack.set_down()
    status, lines = check_lines(make_config, slack.api_url)
    assert status == 1
    assert slack_line(lines) == (f"FAILED   Slack at {slack.api_url}: HTTP 503 (Service "
                                 "Unavailable): trouble on Slack's side (see status.slack.com) "
                                 "or on a proxy between")


# --- the outbox's error, in the same words -----------------------------------------------------

def test_a_delivery_error_says_why_in_words(slack):
    silent = socket.create_server(("127.0.0.1", 0))    # accepts, never answers
    try:
        port = silent.getsockname()[1]
        sender = SlackSender(make_client(f"http://127.0.0.1:{port}/api/", BOT_TOKEN,
                                         timeout=1, retries=0, connection_retries=False))
        with pytest.raises(DeliveryError) as info:
            sender.post(CHANNEL, "hi", [])
    finally:
        silent.close()
    assert str(info.value) == (f"Slack is unreachable at http://127.0.0.1:{port}/api/ (no answer "
                               f"from 127.0.0.1:{port} within 1 s); alerts wait in the outbox")
    assert info.value.code == "unreachable" and not info.value.permanent


# --- check: groups:history ---------------------------------------------------------------------

def test_check_lists_groups_history_and_warns_when_the_token_lacks_it(make_config):
    from sim.slack_api import SlackStandIn
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL,)) as full:
        status, lines = check_lines(make_config, full.api_url, full.app_token)
    assert status == 0, lines
    assert ("OK       the bot token has the scopes this configuration uses (chat:write, "
            "commands, channels:history, groups:history)") in lines
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL,),
                      scopes={"chat:write", "channels:history", "commands"}) as narrow:
        status, lines = check_lines(make_config, narrow.api_url, narrow.app_token)
    assert status == 0, lines      # a public channel works without it
    assert ("WARNING  the bot token lacks groups:history (the same look-up when the alerts "
            "channel is private): enough while every alerts channel is public, but a private "
            "one needs it: add it and reinstall the app (manifest.yml, or `submitwatch "
            "manifest`, has it)") in lines


def test_check_fails_a_private_channel_when_the_token_lacks_groups_history(make_config, slack):
    # What Slack answers conversations.history for a private channel without groups:history.
    slack.fail_next("conversations.history", body=json.dumps({
        "ok": False, "error": "missing_scope", "needed": "groups:history",
        "provided": "chat:write,channels:history,commands"}))
    status, lines = check_lines(make_config, slack.api_url)
    assert status == 1
    assert (f"FAILED   channel {CHANNEL} is private, and the bot token lacks groups:history (the "
            "same look-up when the alerts channel is private): add it and reinstall the app "
            "(manifest.yml, or `submitwatch manifest`, has it)") in lines


# --- poll-once: one sentence -------------------------------------------------------------------

def test_poll_once_says_what_was_sent_and_what_waits_in_one_sentence(tmp_path, logs, winrm,
                                                                    slack):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    config = write_config(tmp_path, slack, winrm)
    url, port = slack.api_url, slack.port
    slack.stop()
    down = run_cli("poll-once", "--config", str(config), env=ENV)
    assert down.returncode == 1
    # Today: "Slack: 0 sent, 1 failed, 0 waiting", then "... alerts wait in the outbox".
    assert ("incidents resolved: 0; Slack: 0 sent, 1 failed; 1 message waits in the outbox for "
            "the next try (by `submitwatch run` or the next `poll-once`)") in down.stdout
    assert (f"  Slack is unreachable at {url} (127.0.0.1:{port} refused the connection: nothing "
            "listens there, or a firewall rejects it); alerts wait in the outbox") in down.stdout
    assert "0 waiting" not in down.stdout and "urlopen" not in down.stdout + down.stderr
    from sim.slack_api import SlackStandIn
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL,)) as back:
        config.write_text(config.read_text().replace(url, back.api_url))
        later = run_cli("poll-once", "--config", str(config), env=ENV)
        # Its next try is not due yet (it may still reach Slack late: looked for first).
        assert ("Slack: 0 sent, 0 failed; 1 message waits in the outbox for the next try"
                in later.stdout) and later.returncode == 0
        fresh = tmp_path / "fresh"
        fresh.mkdir()
        up = run_cli("poll-once", "--config", str(write_config(fresh, back, winrm)), env=ENV)
        assert up.returncode == 0, up.stdout + up.stderr
        assert ("incidents resolved: 0; Slack: 1 sent, 0 failed; nothing waits in the outbox"
                in up.stdout)
        assert len(back.messages(CHANNEL)) == 1


# --- a run as another user than root: one line before anything runs ----------------------------

def test_a_run_that_selects_samba_tests_as_another_user_stops_with_one_line():
    assert samba_needs_root(3, euid=0) is None           # root: it runs
    assert samba_needs_root(0, euid=1000) is None        # no Samba test selected: it runs
    said = samba_needs_root(3, euid=1000)
    assert said is not None and "\n" not in said
    assert said.startswith("3 selected test(s) need root: they run Samba's AD domain controller")
    assert "-m 'not samba'" in said and "apt-get" in said


@pytest.mark.skipif(os.geteuid() != 0 or shutil.which("runuser") is None,
                    reason="runs pytest as the user nobody, which only root can (runuser)")
def test_pytest_as_nobody_says_what_it_needs_in_one_line(tmp_path):
    """pytest itself, as the user `nobody`, with Debian's python3.11 (this venv's interpreter
    may sit where nobody may not read) and this venv's packages."""
    python = shutil.which("python3.11", path="/usr/bin")
    if python is None:
        pytest.skip("no /usr/bin/python3.11 for the user nobody")
    packages = next((ROOT / ".venv" / "lib").glob("python3*/site-packages"))
    command = ["runuser", "-u", "nobody", "--", "env", f"HOME={tmp_path}",
               f"PYTHONPATH={packages}:{ROOT}", "PYTHONDONTWRITEBYTECODE=1", python, "-m",
               "pytest", "-q", "-p", "no:cacheprovider", "tests/test_check_directory.py",
               "tests/test_outbox_policy.py"]
    os.chmod(tmp_path, 0o777)
    needs = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert needs.returncode == 4, needs.stdout + needs.stderr
    said = [line for line in (needs.stdout + needs.stderr).splitlines() if "need root" in line]
    assert len(said) == 1 and "-m 'not samba'" in said[0]
    assert "passed" not in needs.stdout and "error" not in needs.stdout.lower()
    others = subprocess.run([*command, "-m", "not samba"], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert others.returncode == 0, others.stdout[-3000:] + others.stderr[-3000:]
    assert "deselected" in others.stdout and "need root" not in others.stdout + others.stderr
