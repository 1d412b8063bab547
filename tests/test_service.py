"""Running it like a service: channel IDs whatever the config says, a truthful watchdog."""
from __future__ import annotations

from datetime import timedelta

from store import db as store
from tests.blocks import prose
from tests.conftest import CHANNEL
from tests.test_pipeline import scanner, sweep


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

    from bot.check import run_check
    from bot.config import Secret
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


def test_check_gives_the_id_of_a_channel_named_by_its_name(make_config, slack):
    slack.add_channel("C0NAMED", "alerts")
    status, out = run_check_of(make_config(servers=("EX01",), slack={"channel": "#alerts"}),
                               slack.app_token)
    assert status == 0, out
    assert 'channel #alerts is a name; its ID is C0NAMED: write channel = "C0NAMED"' in out
    assert "OK       channel #alerts: exists and the bot is in it" in out
    status, out = run_check_of(make_config(servers=("EX01",), slack={"channel": "#nowhere"}),
                               slack.app_token)
    assert status == 1 and "FAILED   channel #nowhere: this is a name" in out


def test_check_names_the_scopes_the_configuration_needs_and_the_token_lacks(make_config):
    from bot.sim.slack_api import SlackStandIn
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
