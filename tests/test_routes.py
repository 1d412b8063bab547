"""[[routes]]: the first match decides a new incident's channel and the owners its alert names.
The configuration as a user writes it, the real pipeline into the Slack stand-in, `check` and
`/submitwatch routes`; owners' mentions come from the configuration only, never from events."""
from __future__ import annotations

import re

import pytest

from bot.core.config import ConfigError
from bot.ops.check import run_check
from bot.slack.blocks import owner_mention
from tests.blocks import mrkdwn_texts
from tests.conftest import CHANNEL
from tests.helpers import FE, ask, sweep

ROUTES = [
    {"name": "scanners", "accounts": ["contoso\\SCAN-*"], "channel": "C0EX02",
     "owners": ["U0OWNER", "S0TEAM"]},
    {"name": "built-in on EX02", "servers": ["ex02"], "events": [1020], "owners": ["U0ADMIN"]},
]


@pytest.fixture
def routed(make_config):
    return make_config(routes=ROUTES)


def test_the_first_matching_route_wins_and_globs_ignore_case(routed):
    assert routed.route_for("CONTOSO\\scan-07", "EX01", 1018).name == "scanners"
    assert routed.route_for("CONTOSO\\scan-07", "EX02", 1020).name == "scanners"   # first wins
    assert routed.route_for("CONTOSO\\app", "EX02", 1020).name == "built-in on EX02"
    assert routed.route_for("CONTOSO\\app", "EX02", 1020).channel == CHANNEL  # slack.channel
    default = routed.route_for("CONTOSO\\app", "EX02", 1018)
    assert (default.name, default.channel, default.owners) == ("(no route)", CHANNEL, ())


def test_a_route_without_a_channel_keeps_the_servers_and_globs_take_brackets_literally(
        make_config):
    config = make_config(servers=("EX01", {"name": "EX02", "channel": "C0EX02"}),
                         routes=[{"accounts": ["CONTOSO\\app[1]"], "owners": ["U0OWNER"]}])
    assert config.route_for("contoso\\APP[1]", "EX02", 1018).channel == "C0EX02"
    assert config.route_for("contoso\\APP[1]", "EX01", 1018).channel == CHANNEL
    assert config.route_for("CONTOSO\\app1", "EX01", 1018).name == "(no route)"


@pytest.mark.parametrize("route, words", [
    ({"owners": ["@exchange-team"]}, "is not a Slack user ID"),
    ({"owners": ["C0ALERTS"]}, "is not a Slack user ID"),
    ({"servers": ["EX99"]}, "names no configured server: EX99"),
    ({"events": [1019]}, "must be a list of 1018 and/or 1020"),
    ({"events": [[1018]]}, "must be a list of 1018 and/or 1020"),
    ({"events": [1018.0]}, "must be a list of 1018 and/or 1020"),
    ({"accounts": []}, "is empty, so the route would never match"),
    ({"accounts": "CONTOSO\\*"}, "must be a list of account globs"),
    ({"channels": ["C0X"]}, "channels"),
])
def test_a_wrong_route_is_refused_in_words(make_config, route, words):
    with pytest.raises(ConfigError, match=re.escape(words)):
        make_config(routes=[route])


def test_a_routed_alert_goes_to_its_channel_and_names_its_owners(logs, db, routed, slack,
                                                                  clock):
    logs["EX01"].append(FE, 1018, ("CONTOSO\\scan-07", "Client Frontend EX01"))
    logs["EX01"].append(FE, 1018, ("CONTOSO\\app", "Client Frontend EX01"))
    sweep(db, routed, clock)
    [scanner] = slack.messages("C0EX02")
    [other] = slack.messages(CHANNEL)
    assert "CONTOSO\\scan-07" in scanner["text"] and "owners <@U0OWNER> <!subteam^S0TEAM>" \
        in scanner["text"]
    assert "Owners: <@U0OWNER> <!subteam^S0TEAM>" in mrkdwn_texts(scanner["blocks"])
    assert "Owners" not in other["text"] and not any(
        "Owners" in t for t in mrkdwn_texts(other["blocks"]))


def test_event_text_never_becomes_a_mention(logs, db, make_config, slack, clock):
    """A route with a catch-all glob names its owners; the hostile account names nobody."""
    config = make_config(routes=[{"accounts": ["*"], "owners": ["U0OWNER"]}])
    account = "CONTOSO\\<@U0EVIL> <!channel> <!subteam^S0EVIL>"
    logs["EX01"].append(FE, 1020, (account,))
    sweep(db, config, clock)
    [alert] = slack.messages(CHANNEL)
    mentions = set()
    for text in [alert["text"], *mrkdwn_texts(alert["blocks"])]:
        mentions |= set(re.findall(r"<[@!][^>]*>", text))
    assert mentions <= {"<@U0OWNER>"} and "<@U0OWNER>" in mentions
    assert owner_mention("<@U0EVIL>") == "&lt;@U0EVIL&gt;"   # the renderer's own guard too


def test_routes_answers_which_route_an_account_takes_without_pinging_anyone(db, routed, clock):
    reply = ask(db, routed, clock, "routes CONTOSO\\scan-01")
    text = "\n".join(mrkdwn_texts(reply.blocks))
    assert "EX01, event 1018: route *scanners* → <#C0EX02>, owners `U0OWNER`, `S0TEAM`" in text
    assert "<@" not in text and "subteam" not in text
    reply = ask(db, routed, clock, "routes CONTOSO\\app EX02 1020")
    assert "EX02, event 1020: route *built-in on EX02* → <#C0ALERTS>, owners `U0ADMIN`" \
        in "\n".join(mrkdwn_texts(reply.blocks))
    assert "is not a configured server" in ask(db, routed, clock, "routes x EX99").text


def test_check_finds_a_route_channel_without_the_bot_and_a_missing_owner_group(
        routed, slack):
    slack.set_joined("C0EX02", False)
    lines: list[str] = []
    run_check(routed, lines.append)
    assert any(line.startswith("FAILED   channel C0EX02") for line in lines)
    assert any(line.startswith("FAILED   user group S0TEAM") and "a route's alerts" in line
               for line in lines)
    slack.set_joined("C0EX02", True)
    slack.set_usergroup("S0TEAM", ["U0OWNER"])
    lines = []
    run_check(routed, lines.append)
    assert "OK       channel C0EX02: exists and the bot is in it" in lines
    assert "OK       user group S0TEAM: 1 member(s) are named by a route's alerts" in lines


# --- reminders ------------------------------------------------------------------------------

def _failing(logs, db, config, clock, hours):
    """`hours` hours pass with the account failing on: one event, one poll and delivery."""
    clock.advance(hours=hours)
    logs["EX01"].append(FE, 1020, ("CONTOSO\\scan-07",), time=clock())
    sweep(db, config, clock)


def test_owners_are_reminded_in_the_thread_until_someone_acknowledges(logs, db, routed, slack,
                                                                      clock):
    from bot.engine.chatops import Actor, acknowledge
    from bot.engine.poller import remind_owners
    from store import db as store
    logs["EX01"].append(FE, 1020, ("CONTOSO\\scan-07",), time=clock())
    sweep(db, routed, clock)
    _failing(logs, db, routed, clock, 3)
    assert remind_owners(db, routed, clock) == 0              # 3 h: not yet
    _failing(logs, db, routed, clock, 1.5)
    assert remind_owners(db, routed, clock) == 1              # 4.5 h, still failing
    sweep(db, routed, clock)
    [alert] = slack.messages("C0EX02")                        # never a second top-level post
    [reminder] = alert["replies"]
    assert reminder["text"].startswith(":bell: <@U0OWNER> <!subteam^S0TEAM>: still failing")
    assert "Owners: <@U0OWNER> <!subteam^S0TEAM>" in mrkdwn_texts(reminder["blocks"])
    _failing(logs, db, routed, clock, 2)
    assert remind_owners(db, routed, clock) == 0              # at most once a day
    _failing(logs, db, routed, clock, 23)
    assert remind_owners(db, routed, clock) == 1
    [incident] = store.open_incidents(db).values()
    acknowledge(db, incident.stored_id, Actor("U0OWNER", "button", "C0EX02"), None, clock())
    _failing(logs, db, routed, clock, 25)
    assert remind_owners(db, routed, clock) == 0              # owned now: no more reminders


def test_a_quiet_or_snoozed_incident_is_not_reminded(logs, db, routed, clock):
    from bot.engine.chatops import Actor, snooze
    from bot.engine.poller import remind_owners
    from store import db as store
    logs["EX01"].append(FE, 1020, ("CONTOSO\\scan-07",), time=clock())
    sweep(db, routed, clock)
    clock.advance(hours=5)
    assert remind_owners(db, routed, clock) == 0              # no event since it opened
    [incident] = store.open_incidents(db).values()
    snooze(db, incident.stored_id, 3 * 86400, "vendor", Actor("U0OWNER", "slash", CHANNEL),
           clock())
    _failing(logs, db, routed, clock, 1)
    assert remind_owners(db, routed, clock) == 0              # snoozed


def test_a_reminder_queued_before_an_ack_is_not_sent_and_no_owners_means_no_reminders(
        logs, db, routed, make_config, slack, clock):
    from bot.engine.chatops import Actor, acknowledge
    from bot.engine.poller import remind_owners
    from store import db as store
    logs["EX01"].append(FE, 1020, ("CONTOSO\\scan-07",), time=clock())
    sweep(db, routed, clock)
    clock.advance(hours=5)
    logs["EX01"].append(FE, 1020, ("CONTOSO\\scan-07",), time=clock())
    sweep(db, routed, clock)
    assert remind_owners(db, make_config(), clock) == 0     # no route names owners: none
    assert remind_owners(db, routed, clock) == 1
    [incident] = store.open_incidents(db).values()
    acknowledge(db, incident.stored_id, Actor("U0OWNER", "button", "C0EX02"), None, clock())
    sweep(db, routed, clock)
    [alert] = slack.messages("C0EX02")
    assert not any(":bell:" in reply["text"] for reply in alert["replies"])


def test_an_account_snooze_stops_reminders_too(logs, db, routed, clock):
    from bot.engine.chatops import Actor, snooze
    from bot.engine.poller import remind_owners
    logs["EX01"].append(FE, 1020, ("CONTOSO\\scan-07",), time=clock())
    sweep(db, routed, clock)
    snooze(db, "CONTOSO\\scan-07", 3 * 86400, "vendor", Actor("U0OWNER", "slash", CHANNEL),
           clock())
    _failing(logs, db, routed, clock, 5)
    assert remind_owners(db, routed, clock) == 0
