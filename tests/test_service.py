"""Running it like a service: channel IDs whatever the config says, a truthful watchdog."""
from __future__ import annotations

from datetime import timedelta

import pytest

from store import db as store
from tests.blocks import prose
from tests.conftest import CHANNEL
from tests.helpers import samples, scanner, scrape, sweep


def test_a_channel_given_by_name_works_for_the_post_and_every_later_update(
        logs, db, make_config, slack, clock):
    slack.add_channel("C0NAMED", "alerts")
    config = make_config(servers=("EX01", "EX02"), slack={"channel": "#alerts"})
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    [incident] = store.open_incidents(db).values()
    assert incident.channel == "C0NAMED"    # the ID Slack answered the post with
    clock.advance(seconds=30)
    scanner(logs["EX01"], 2)
    scanner(logs["EX02"], 1)               # an update and a thread note
    _, delivery = sweep(db, config, clock)
    assert delivery.failed == 0, delivery.errors
    [message] = slack.messages("C0NAMED")
    assert message["edits"] == 1 and len(message["replies"]) == 1
    assert all(c.params["channel"] == "C0NAMED" for c in slack.calls_to("chat.update"))
    assert "Events: 4" in prose(message["blocks"])


def test_a_server_alert_in_a_named_channel_is_updated_by_its_id(
        db, make_config, slack, winrm, clock):
    slack.add_channel("C0NAMED", "alerts")
    config = make_config(servers=("EX01",), slack={"channel": "#alerts"},
                         polling={"alert_after_failures": 1})
    clock.advance(minutes=1)
    sweep(db, config, clock)                 # a good poll first
    winrm.inject("EX01", "unauthorized", times=None)
    clock.advance(minutes=1)
    sweep(db, config, clock)
    assert store.server_alert(db, "EX01")[1] == "C0NAMED"
    winrm.clear_faults("EX01")
    clock.advance(minutes=1)
    _, delivery = sweep(db, config, clock)
    assert delivery.failed == 0, delivery.errors
    [alert] = slack.messages("C0NAMED")
    assert "is watched again" in alert["text"] and len(alert["replies"]) == 1


def test_a_server_that_never_polled_says_so_instead_of_a_last_good_poll(
        db, make_config, slack, winrm, clock):
    config = make_config(servers=("EX01",), polling={"alert_after_failures": 2})
    winrm.inject("EX01", "unauthorized", times=None)
    started = clock()
    sweep(db, config, clock)
    clock.advance(minutes=1)
    sweep(db, config, clock)
    [alert] = slack.messages(CHANNEL)
    assert "never polled successfully since SubmitWatch started watching it at" in alert["text"]
    assert started.strftime("%Y-%m-%d %H:%M UTC") in alert["text"]
    assert "Last good poll" not in alert["text"]


def test_a_server_that_polled_before_names_its_last_good_poll(
        db, make_config, slack, winrm, clock):
    config = make_config(servers=("EX01",), polling={"alert_after_failures": 1})
    sweep(db, config, clock)
    good = clock()
    winrm.inject("EX01", "unauthorized", times=None)
    clock.advance(minutes=5)
    sweep(db, config, clock)
    [alert] = slack.messages(CHANNEL)
    assert f"Last good poll: <!date^{int(good.timestamp())}^" in alert["text"]
    assert clock() - good == timedelta(minutes=5)


# --- check: every mistake it can find, in words, with the exit status ----------------------------

def run_check_of(config, app_token=None):
    from dataclasses import replace

    from bot.core.config import Secret
    from bot.ops.check import run_check
    if app_token is not None:
        config = replace(config, slack=replace(config.slack, app_token=Secret(app_token)))
    lines: list[str] = []
    status = run_check(config, out=lines.append)
    return status, "\n".join(lines)


def test_check_passes_a_good_setup_and_says_what_it_verified(make_config, slack):
    status, out = run_check_of(make_config(servers=("EX01",)), slack.app_token)
    assert status == 0, out
    assert f"OK       channel {CHANNEL}: exists and the bot is in it" in out
    assert "OK       the bot token has the scopes this configuration uses" in out
    assert "OK       Socket Mode: the app token opens a connection" in out


def test_check_fails_a_channel_the_bot_is_not_in_or_that_does_not_exist(make_config, slack):
    slack.set_joined(CHANNEL, False)
    config = make_config(servers=({"name": "EX01", "channel": "C0NOSUCH"},))
    status, out = run_check_of(config, slack.app_token)
    assert status == 1
    assert f"FAILED   channel {CHANNEL}: the bot is not in channel {CHANNEL}: type `/invite " \
           "@SubmitWatch` there" in out
    assert "FAILED   channel C0NOSUCH: the channel C0NOSUCH does not exist" in out


def test_check_gives_the_id_of_a_channel_named_by_its_name_and_fails_it(make_config, slack):
    slack.add_channel("C0NAMED", "alerts")
    status, out = run_check_of(make_config(servers=("EX01",), slack={"channel": "#alerts"}),
                               slack.app_token)
    assert status == 1, out    # it works, but breaks the look-up that prevents duplicates
    assert 'FAILED   channel #alerts is a name; its ID is C0NAMED: write channel = "C0NAMED"' \
        in out
    assert "OK       channel #alerts: exists and the bot is in it" in out
    status, out = run_check_of(make_config(servers=("EX01",), slack={"channel": "#nowhere"}),
                               slack.app_token)
    assert status == 1 and "FAILED   channel #nowhere: this is a name" in out


def test_check_names_the_scopes_the_configuration_needs_and_the_token_lacks(make_config):
    from sim.slack_api import SlackStandIn
    from tests.conftest import BOT_TOKEN
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL,),
                      scopes={"chat:write", "channels:history", "commands"}) as narrow:
        config = make_config(servers=("EX01",), slack={"api_url": narrow.api_url})
        status, out = run_check_of(config, narrow.app_token)
        assert status == 0, out   # usergroups:read only matters when groups are configured
        config = make_config(servers=("EX01",), slack={"api_url": narrow.api_url},
                             permissions={"groups": ["S0ONCALL"]})
        status, out = run_check_of(config, narrow.app_token)
    assert status == 1
    assert "FAILED   the bot token lacks usergroups:read (check who is in permissions.groups)" \
        in out


def test_check_fails_an_app_token_that_cannot_open_socket_mode(make_config, slack):
    from tests.conftest import BOT_TOKEN
    status, out = run_check_of(make_config(servers=("EX01",)), "xapp-wrong")
    assert status == 1 and "FAILED   Socket Mode: Slack rejected SLACK_APP_TOKEN" in out
    status, out = run_check_of(make_config(servers=("EX01",)), BOT_TOKEN)
    assert status == 1 and "SLACK_APP_TOKEN holds a bot token" in out


# --- metrics and health, scraped over HTTP and parsed with prometheus_client's own parser --------

def ops_listener(config, clock):
    from bot.app import ops_for, serve_ops
    return serve_ops(ops_for(config, clock), "127.0.0.1", 0)


def test_metrics_count_polls_events_slack_calls_and_read_the_database(
        logs, db, make_config, slack, winrm, clock):
    config = make_config(servers=("EX01", "EX02"))
    server = ops_listener(config, clock)
    try:
        port = server.server_port
        status, before = scrape(port, "/metrics")
        assert status == 200
        before = samples(before)
        scanner(logs["EX01"], 3)
        winrm.inject("EX02", "unauthorized", times=None)
        sweep(db, config, clock)
        after = samples(scrape(port, "/metrics")[1])
    finally:
        server.shutdown()
        server.server_close()

    def delta(name, **labels):
        key = (name, tuple(sorted(labels.items())))
        return after.get(key, 0) - before.get(key, 0)
    assert delta("submitwatch_polls_total", server="EX01", outcome="ok") == 1
    assert delta("submitwatch_polls_total", server="EX02", outcome="failed") == 1
    assert delta("submitwatch_events_stored_total", server="EX01") == 3
    assert delta("submitwatch_poll_duration_seconds_count", server="EX01") == 1
    assert delta("submitwatch_slack_api_calls_total", method="chat.postMessage") == 1
    assert after[("submitwatch_incidents", (("state", "open"),))] == 1
    assert after[("submitwatch_incidents", (("state", "acknowledged"),))] == 0
    assert after[("submitwatch_outbox_messages", ())] == 0
    assert after[("submitwatch_server_consecutive_failures", (("server", "EX02"),))] == 1
    assert after[("submitwatch_server_last_success_timestamp_seconds", (("server", "EX01"),))] \
        == pytest.approx(clock().timestamp(), abs=1)
    assert after[("submitwatch_server_records_behind", (("server", "EX01"),))] == 0


def test_slack_errors_are_counted_by_method_and_code(logs, db, make_config, slack, clock):
    from bot.core import counters
    config = make_config(servers=("EX01",))
    key = ("chat.postMessage", "not_in_channel")
    before = counters.SLACK_ERRORS.labels(*key)._value.get()
    slack.set_joined(CHANNEL, False)
    scanner(logs["EX01"], 1)
    sweep(db, config, clock)
    assert counters.SLACK_ERRORS.labels(*key)._value.get() == before + 1
    # ... and the waiting message shows in the outbox gauges.
    server = ops_listener(config, clock)
    try:
        clock.advance(minutes=2)
        found = samples(scrape(server.server_port, "/metrics")[1])
    finally:
        server.shutdown()
        server.server_close()
    assert found[("submitwatch_outbox_messages", ())] == 1
    assert found[("submitwatch_outbox_oldest_age_seconds", ())] == pytest.approx(120, abs=1)


def test_readyz_says_what_is_wrong_database_slack_or_polling(
        db, db_path, make_config, slack, clock):
    import json
    import sqlite3
    config = make_config(servers=("EX01",))
    sweep(db, config, clock)
    server = ops_listener(config, clock)
    try:
        port = server.server_port
        assert scrape(port, "/healthz") == (200, "ok")
        status, body = scrape(port, "/readyz")
        assert status == 200 and json.loads(body) == {
            "ready": True, "checks": {"database": "ok", "slack": "ok", "polling": "ok"}}
        blocker = sqlite3.connect(db_path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")     # another writer holds the lock
        status, body = scrape(port, "/readyz")
        blocker.execute("ROLLBACK")
        blocker.close()
        assert status == 503 and "takes no writes" in json.loads(body)["checks"]["database"]
        clock.advance(minutes=10)              # no poll since: three intervals and more
        status, body = scrape(port, "/readyz")
        assert status == 503
        assert json.loads(body)["checks"]["polling"] == "not polled in the last 185s: EX01"
        assert scrape(port, "/nothing")[0] == 404
    finally:
        server.shutdown()
        server.server_close()
    slack.set_down(True)
    server = ops_listener(config, clock)       # a new listener: nothing cached
    try:
        status, body = scrape(server.server_port, "/readyz")
    finally:
        server.shutdown()
        server.server_close()
    assert status == 503 and json.loads(body)["checks"]["slack"].startswith(
        "Slack does not answer at")


def test_http_mode_serves_metrics_and_readiness_beside_the_slack_events(
        db, make_config, slack, clock):
    from bot.app import build_bolt_app, ops_for, serve_http
    config = make_config(servers=("EX01",), slack={"mode": "http"})
    server = serve_http(build_bolt_app(config), "127.0.0.1", 0, ops_for(config, clock))
    try:
        port = server.server_port
        status, text = scrape(port, "/metrics")
        assert status == 200 and "submitwatch_outbox_messages" in text
        assert scrape(port, "/healthz") == (200, "ok")
        assert scrape(port, "/readyz")[0] == 200
    finally:
        server.shutdown()
        server.server_close()


def test_json_logs_are_one_object_per_line_with_structured_fields(tmp_path, winrm, slack):
    import json

    from tests.helpers import ENV, run_cli, write_config
    config = write_config(tmp_path, slack, winrm)
    winrm.inject("EX01", "unauthorized", times=None)
    for args, extra in ((["--log-format", "json"], ""), ([], '\n[logging]\nformat = "json"\n')):
        if extra:
            config.write_text(config.read_text() + extra)
        result = run_cli("poll-once", "--config", str(config), *args, env=ENV)
        lines = [json.loads(line) for line in result.stderr.splitlines() if line.strip()]
        [failed] = [line for line in lines if line["message"].startswith("poll failed")]
        assert failed["level"] == "WARNING" and failed["logger"] == "submitwatch"
        assert failed["server"] == "EX01" and failed["time"].endswith("Z")
        assert ENV["WINRM_PASSWORD"] not in result.stderr   # the secret filters apply too


@pytest.mark.parametrize("table, error", [
    ({"metrics": {"port": 0}}, "metrics.port must be a whole number from 1 to 65535"),
    ({"metrics": {"port": 9464, "host": "metrics.local"}}, "metrics.host must be the IP address"),
    ({"metrics": {"listen": 1}}, "metrics"),
    ({"logging": {"format": "xml"}}, "logging.format must be one of"),
])
def test_metrics_and_logging_keys_are_checked(table, error):
    from bot.core.config import ConfigError, parse_config
    raw = {"slack": {"channel": "C0ALERTS"}, **table}
    with pytest.raises(ConfigError, match=error):
        parse_config(raw, {})


def test_metrics_are_off_unless_a_port_is_set():
    from bot.core.config import parse_config
    assert parse_config({"slack": {"channel": "C"}}, {}).metrics.port is None
    on = parse_config({"slack": {"channel": "C"}, "metrics": {"port": 9464}}, {})
    assert (on.metrics.host, on.metrics.port) == ("127.0.0.1", 9464)


def test_an_alert_to_a_named_channel_whose_post_got_no_answer_is_never_lost(
        logs, db, make_config, slack, clock):
    from bot.engine.delivery import deliver_once
    from bot.slack.sender import SlackSender
    slack.add_channel("C0NAMED", "alerts")
    config = make_config(servers=("EX01",), slack={"channel": "#alerts"})
    scanner(logs["EX01"], 1)
    slack.fail_next("chat.postMessage", status=503, times=5)   # no answer to the first post
    sweep(db, config, clock)
    clock.advance(minutes=2)
    result = deliver_once(db, SlackSender.from_config(config.slack), config, clock)
    assert result.sent == 1 and result.failed == 0, result.errors   # no channel_not_found
    assert len(slack.messages("C0NAMED")) == 1
