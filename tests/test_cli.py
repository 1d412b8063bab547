"""The `submitwatch` command as a user runs it: a real process, real config file, real servers."""
from __future__ import annotations

import os
import signal
import subprocess

import pytest

from bot.exchange.advice import (
    BUILTIN,
    CAUSES,
    CUSTOM_NO_USERS,
    INTERNET_AUTH,
    SHOULD_ADMIT,
    advise,
)
from tests.conftest import BOT_TOKEN, CHANNEL
from tests.helpers import ENV, EXE, ROOT, free_port, run_cli, write_config

FE = "MSExchangeFrontEndTransport"


@pytest.mark.parametrize("command", [[], ["run"], ["poll-once"], ["check"], ["demo"]])
def test_help_for_every_command(command):
    result = run_cli(*command, "--help")
    assert result.returncode == 0
    assert "usage: submitwatch" in result.stdout
    assert ("--config" in result.stdout) == (command != ["demo"])  # the demo brings its own


def test_poll_once_polls_delivers_and_summarises(tmp_path, logs, winrm, slack):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    config = write_config(tmp_path, slack, winrm)
    result = run_cli("poll-once", "--config", str(config), env=ENV)
    assert result.returncode == 0, result.stderr
    assert "EX01: 2 new event(s) in 1 round trip(s)" in result.stdout
    assert "Slack: 1 sent, 0 failed" in result.stdout
    assert len(slack.messages(CHANNEL)) == 1
    again = run_cli("poll-once", env={**ENV, "SUBMITWATCH_CONFIG": str(config)})
    assert "EX01: 0 new event(s)" in again.stdout and len(slack.messages(CHANNEL)) == 1


def test_poll_once_exits_1_when_a_server_fails(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm)
    result = run_cli("poll-once", "--config", str(config),
                     env={**ENV, "WINRM_PASSWORD": "not-the-password"})
    assert result.returncode == 1
    assert "EX01: FAILED" in result.stdout and "HTTP 401" in result.stdout
    assert "not-the-password" not in result.stdout + result.stderr


def test_poll_once_exits_1_when_slack_fails(tmp_path, logs, winrm, slack):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    slack.set_joined(CHANNEL, False)
    result = run_cli("poll-once", "--config", str(write_config(tmp_path, slack, winrm)), env=ENV)
    assert result.returncode == 1
    assert "Slack: 0 sent, 1 failed" in result.stdout and "/invite @SubmitWatch" in result.stdout


def test_a_config_error_exits_2_with_the_key_named(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm, extra_server='tranport = "ntlm"')
    result = run_cli("poll-once", "--config", str(config), env=ENV)
    assert result.returncode == 2
    assert "configuration error: unknown key 'servers.EX01.tranport'" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_secrets_are_named_before_anything_runs(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm)
    result = run_cli("poll-once", "--config", str(config), env={})
    assert result.returncode == 2
    assert "SLACK_BOT_TOKEN" in result.stderr and "WINRM_PASSWORD" in result.stderr


def test_check_reports_each_part_in_words_and_never_the_secrets(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm)
    result = run_cli("check", "--config", str(config), env=ENV)
    assert result.returncode == 1  # no SLACK_APP_TOKEN for Socket Mode
    assert "MISSING  SLACK_APP_TOKEN" in result.stdout
    assert "OK       EX01: WinRM works" in result.stdout
    assert "OK       Slack: signed in as" in result.stdout
    result = run_cli("check", "--config", str(config),
                     env={**ENV, "SLACK_APP_TOKEN": "xapp-1", "WINRM_PASSWORD": "bad-pass-123"})
    assert "FAILED   EX01: the server refused the credentials" in result.stdout
    for secret in (BOT_TOKEN, "bad-pass-123", "xapp-1"):
        assert secret not in result.stdout + result.stderr


def test_check_warns_loudly_when_certificate_validation_is_off(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm,
                          extra_server='validate_certificate = false')
    text = config.read_text().replace("http://127.0.0.1", "https://127.0.0.1")
    config.write_text(text)
    result = run_cli("check", "--config", str(config), env=ENV)
    assert "WARNING  EX01: CERTIFICATE VALIDATION IS OFF" in result.stdout


def test_check_says_when_slack_refuses_the_token(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm)
    result = run_cli("check", "--config", str(config), env={**ENV, "SLACK_BOT_TOKEN": "xoxb-wrong"})
    assert "FAILED   Slack" in result.stdout and "check SLACK_BOT_TOKEN" in result.stdout


def test_demo_runs_the_whole_pipeline(tmp_path):
    result = run_cli("demo", "--db", str(tmp_path / "demo.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "EX01: 33 new event(s)" in out and "EX02: 23 new event(s)" in out
    # A 1020 for the built-in Administrator, its connector named by the event: no grant.
    admin = out[out.index("SMTP submit denied: CONTOSO\\Administrator"):]
    admin = admin[:admin.index("Preview in the browser")]
    assert CAUSES[BUILTIN][0] in admin
    assert "EX01\\Client Frontend EX01 (1020)" in admin and "Add-ADPermission" not in admin
    assert "NTAccount -ArgumentList 'CONTOSO\\Administrator'" in admin
    # Its first post already names EX02 (same first sweep): no "now also seen on EX02" note.
    assert "Servers: EX01, EX02" in admin and "now also seen on EX02" not in out
    # 1018 on a custom relay connector, and an ordinary account on a default one (Client
    # Frontend, meant for signed-in accounts): the cause by connector (bot.exchange.advice).
    erp = out[out.index("SMTP submit denied: CONTOSO\\app-erp"):]
    assert CAUSES[CUSTOM_NO_USERS][0] in erp[:erp.index("Preview in the browser")]
    jurgen = out[out.index("SMTP submit denied: CONTOSO\\jürgen.müller"):]
    assert CAUSES[SHOULD_ADMIT][0] in jurgen[:jurgen.index("Preview in the browser")]
    assert "> thread: CONTOSO\\app-erp: now also seen on EX01" in out
    assert "Preview in the browser: file://" in out and (tmp_path / "demo.html").is_file()
    assert "Resolved: CONTOSO\\app-erp" in out
    # The storm: five alerts of their own, then one digest listing the other 35.
    assert "Storm: 35 accounts refused SMTP submit" in out
    assert "> thread: *Incidents 1–25 of the 35 that joined this storm so far:*" in out
    assert (tmp_path / "demo.db").exists()


def test_demo_shows_the_port_25_device_and_its_cause(tmp_path):
    """CONTOSO\\svc-mfp signs in on Default Frontend EX01 (port 25): its alert names the
    internet-facing cause and port 587 as the first fix, from bot.exchange.advice."""
    result = run_cli("demo", "--db", str(tmp_path / "demo.db"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "CONTOSO\\svc-mfp, a multifunction printer" in out     # the narration says it
    mfp = out[out.index("SMTP submit denied: CONTOSO\\svc-mfp"):]
    mfp = mfp[:mfp.index("Preview in the browser")]
    assert "EX01\\Default Frontend EX01 (1018)" in mfp
    assert CAUSES[INTERNET_AUTH][0] in mfp
    first_fix = advise(1018, "CONTOSO\\svc-mfp", "EX01", "Default Frontend EX01",
                       version="2019").fixes[0]
    assert first_fix.id == "use_587" and first_fix.title in mfp


def test_run_in_http_mode_polls_posts_and_stops_cleanly_on_sigterm(tmp_path, logs, winrm, slack):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    port = free_port()
    config = write_config(tmp_path, slack, winrm, mode="http", http_port=port)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "WINRM_"))}
    env.update(ENV, SLACK_SIGNING_SECRET="s3cret", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(EXE + ["run", "--config", str(config)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        slack.wait_for_calls("chat.postMessage", 1, timeout=30)
        logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
        slack.wait_for_calls("chat.update", 1, timeout=30)  # the next poll updates in place
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "watching 1 server(s)" in err and "stopped" in err
    assert len(slack.messages(CHANNEL)) == 1


def test_run_in_socket_mode_answers_a_slash_command_and_stops_cleanly(tmp_path, logs, winrm,
                                                                      slack):
    logs["EX01"].append(FE, 1020, ("CONTOSO\\svc-scanner",))
    config = write_config(tmp_path, slack, winrm, mode="socket")
    metrics_port = free_port()
    config.write_text(config.read_text() + f"\n[metrics]\nport = {metrics_port}\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLACK_", "WINRM_"))}
    env.update(ENV, SLACK_APP_TOKEN=slack.app_token, PYTHONPATH=str(ROOT))
    proc = subprocess.Popen(EXE + ["run", "--config", str(config)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        slack.wait_for_socket(timeout=30)
        slack.wait_for_calls("chat.postMessage", 1, timeout=30)
        # Socket Mode has no Slack server of its own: [metrics] opens the ops listener.
        from tests.helpers import samples, scrape
        status, text = scrape(metrics_port, "/metrics")
        assert status == 200
        assert samples(text)[("submitwatch_incidents", (("state", "open"),))] == 1
        assert scrape(metrics_port, "/healthz") == (200, "ok")
        assert scrape(metrics_port, "/readyz")[0] == 200
        payload = slack.slash_command_payload("status")
        envelope = slack.send_envelope("slash_commands", payload)
        assert slack.wait_for_ack(envelope, timeout=10)["envelope_id"] == envelope
        [response] = slack.wait_for_responses(1, timeout=10, url=payload["response_url"])
        assert "*EX01*: :white_check_mark: ok · last good poll" in response["payload"]["text"]
        assert "*Open incidents:* 1" in response["payload"]["text"]
    finally:
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    assert "connected to Slack (Socket Mode)" in err and "stopped" in err
    # Polls ran (the alert came from one), and none of them wrote a line at INFO.
    assert "Running job" not in err and "executed successfully" not in err


def test_check_warns_when_anyone_may_act_and_checks_the_user_groups(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm)
    result = run_cli("check", "--config", str(config), env={**ENV, "SLACK_APP_TOKEN": slack.app_token})
    assert "WARNING  anyone in the Slack workspace may acknowledge and snooze" in result.stdout
    assert result.returncode == 0

    slack.set_usergroup("S0ONCALL", ["U0ALICE", "U0BOB"])
    config.write_text(config.read_text().replace(
        "[store]", '[permissions]\ngroups = ["S0ONCALL", "S0GONE"]\n\n[store]'))
    result = run_cli("check", "--config", str(config), env={**ENV, "SLACK_APP_TOKEN": slack.app_token})
    assert "anyone in the Slack workspace" not in result.stdout
    assert "OK       user group S0ONCALL: 2 member(s) may act" in result.stdout
    assert "FAILED   user group S0GONE: no such user group" in result.stdout
    assert result.returncode == 1


def _subcommands():
    import argparse

    from bot.cli import build_parser
    [sub] = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    return sorted(sub.choices)


@pytest.mark.parametrize("command", _subcommands())
def test_global_options_work_before_or_after_every_subcommand(command):
    from bot.cli import build_parser
    extra = {"backup": ["/tmp/copy.db"]}.get(command, [])
    takes_config = command != "demo"
    options = ["-v", "--log-format", "json"] + (["--config", "/etc/sw.toml"] if takes_config
                                                  else [])
    before = build_parser().parse_args(options + [command] + extra)
    after = build_parser().parse_args([command] + extra + options)
    for args in (before, after):
        assert args.command == command and args.verbose is True and args.log_format == "json"
        assert args.config == ("/etc/sw.toml" if takes_config else None)
    plain = build_parser().parse_args([command] + extra)
    assert plain.verbose is False and plain.config is None and plain.log_format is None


def test_config_before_the_subcommand_is_used_by_a_real_run(tmp_path, winrm, slack):
    config = write_config(tmp_path, slack, winrm)
    before = run_cli("--config", str(config), "check", env=ENV)
    after = run_cli("check", "--config", str(config), env=ENV)
    assert f"config {config}: OK" in before.stdout and "OK       EX01" in before.stdout
    assert (before.returncode, before.stdout) == (after.returncode, after.stdout)
