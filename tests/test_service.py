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
