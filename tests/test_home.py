"""The App Home tab: what it shows (a pure function of the database, the config and `now`),
Block Kit's 100-block limit, and the listener publishing it through real slack_bolt and
slack_sdk to the Slack stand-in."""
from __future__ import annotations

import logging
from datetime import timedelta

import pytest
from slack_bolt import App
from slack_bolt.request import BoltRequest
from slack_sdk import WebClient

from bot.slack.blocks import slack_date
from handlers import home
from sim.slack_blocks import MAX_HOME_BLOCKS, validate_blocks
from store import chat
from store import db as store
from tests.blocks import mrkdwn_texts
from tests.conftest import BOT_TOKEN
from tests.helpers import (
    FRONTEND,
    NOW,
    PRINTER,
    RELAY,
    SCANNER,
    Feed,
    assert_no_markup,
    lookup_config,
    many_incidents,
)


def texts(view):
    """Each block as text: a section's mrkdwn, a context's, a header's; '---' for a divider."""
    out = []
    for block in view["blocks"]:
        if block["type"] == "divider":
            out.append("---")
        elif block["type"] == "context":
            out.append(" ".join(e["text"] for e in block["elements"]))
        else:
            out.append(block["text"]["text"])
    return out


def assert_valid_home(view):
    assert view["type"] == "home"
    assert len(view["blocks"]) <= MAX_HOME_BLOCKS
    assert validate_blocks(view["blocks"], max_blocks=MAX_HOME_BLOCKS) == []
    assert_no_markup(mrkdwn_texts(view["blocks"]))


@pytest.fixture
def config():
    return lookup_config()


@pytest.fixture
def watched(db, config):
    """Two open incidents (one acknowledged), two snoozes in force, three servers' health."""
    feed = Feed(db, config)
    feed.burst(SCANNER, NOW - timedelta(hours=3), 5, connector=RELAY)
    feed.burst(PRINTER, NOW - timedelta(hours=1), 2, connector=FRONTEND)
    feed.burst("<!channel> & `x`", NOW - timedelta(hours=2), 1, server="EX02")
    ids = {i.account: i.id for i in store.open_incidents(db).values()}
    chat.set_ack(db, ids[SCANNER], "U0ALICE", "on it", NOW - timedelta(minutes=50))
    chat.add_snooze(db, kind="account", target="<!channel> & `x`", account="<!channel> & `x`",
                    until=NOW + timedelta(hours=4), reason="pen test", user_id="U0BOB",
                    now=NOW - timedelta(minutes=5))
    chat.add_snooze(db, kind="incident", target=str(ids[PRINTER]), account=PRINTER,
                    until=NOW + timedelta(minutes=30), reason="toner", user_id="U0BOB", now=NOW)
    store.save_poll_success(db, store.ServerState("EX01"), generation=0, cursor=1234,
                            oldest_record=1, newest_record=1300, stored=5,
                            now=NOW - timedelta(seconds=42))
    store.save_poll_failure(db, "EX02", "401 Unauthorized <@U0BOSS>", NOW - timedelta(minutes=2))
    return ids


def test_home_shows_open_incidents_snoozes_and_server_health(db, config, watched):
    ids = watched
    view = home.home_view(db, config, NOW, "U0ALICE")
    assert view["blocks"][0] == {"type": "header", "text": {
        "type": "plain_text", "text": "SubmitWatch", "emoji": True}}
    assert texts(view)[1:] == [
        "Everyone in this workspace may acknowledge and snooze alerts (no permissions are "
        "configured).",
        "---",
        "*Open incidents* (3)\n"
        f"• `#{ids[PRINTER]}` `CONTOSO\\printer` · 2 events · EX01 · last "
        f"{slack_date(NOW - timedelta(minutes=59))} · not acknowledged\n"
        f"• `#{ids['<!channel> & `x`']}` `&lt;!channel&gt; &amp; ˋxˋ` · 1 event · EX02 · last "
        f"{slack_date(NOW - timedelta(hours=2))} · not acknowledged\n"
        f"• `#{ids[SCANNER]}` `CONTOSO\\svc-scanner` · 5 events · EX01 · last "
        f"{slack_date(NOW - timedelta(hours=3) + timedelta(minutes=4))} · acknowledged by "
        f"<@U0ALICE> {slack_date(NOW - timedelta(minutes=50))}",
        "---",
        "*Snoozes in force* (2)\n"
        f"• incident `#{ids[PRINTER]}` (`CONTOSO\\printer`) until "
        f"{slack_date(NOW + timedelta(minutes=30))} (30m left) · by <@U0BOB>: “toner”\n"
        f"• account `&lt;!channel&gt; &amp; ˋxˋ` until {slack_date(NOW + timedelta(hours=4))} "
        "(4h left) · by <@U0BOB>: “pen test”",
        "---",
        "*Servers*\n"
        "• *EX01*: :white_check_mark: ok · last good poll 42s ago · cursor 1234\n"
        "• *EX02*: :x: failing · never polled successfully · no cursor yet · *1 failure in a "
        f"row*, last error {slack_date(NOW - timedelta(minutes=2))}: 401 Unauthorized "
        "&lt;@U0BOSS&gt;\n"
        "• *EX03*: :white_circle: not polled yet · no poll has run yet",
        f"Updated {slack_date(NOW)}. `/submitwatch help` lists the commands.",
    ]
    assert_valid_home(view)


@pytest.mark.parametrize("permissions, user, expected", [
    ({"users": ["U0ALICE"]}, "U0ALICE", "You may acknowledge and snooze alerts."),
    ({"users": ["U0ALICE", "U0BOB"]}, "U0MALLORY",
     "You may look things up; acknowledging and snoozing is for <@U0ALICE>, <@U0BOB>."),
    ({"users": ["U0ALICE"], "groups": ["S0ONCALL"]}, "U0MALLORY",
     "Acknowledging and snoozing is for <@U0ALICE> and members of <!subteam^S0ONCALL>. You are "
     "not named; if you are in one of those groups, you may act too. Anyone may look things up."),
    ({"groups": ["S0ONCALL", "S0EXCH"]}, "U0ALICE",
     "Acknowledging and snoozing is for members of <!subteam^S0ONCALL>, <!subteam^S0EXCH>. You "
     "are not named; if you are in one of those groups, you may act too. Anyone may look things "
     "up."),
    ({"groups": ["S0ONCALL"], "users": ["U0ALICE"]}, "U0ALICE",
     "You may acknowledge and snooze alerts."),
])
def test_home_says_whether_this_person_may_act(db, permissions, user, expected):
    view = home.home_view(db, lookup_config(permissions=permissions), NOW, user)
    assert texts(view)[1] == expected
    assert_valid_home(view)


def test_home_with_an_empty_database(db, config):
    view = home.home_view(db, config, NOW, "U0ALICE")
    assert texts(view)[3] == "*Open incidents* (0)\nNone: all quiet."
    assert texts(view)[5] == "*Snoozes in force* (0)\nNone."
    assert_valid_home(view)


def test_home_with_thousands_of_open_incidents_is_cut_and_says_so(db, config):
    many_incidents(db, config, 1500)
    view = home.home_view(db, config, NOW, "U0ALICE")
    listed = [line for text in texts(view) for line in text.split("\n")
              if line.startswith("• `#")]
    assert len(listed) == home.HOME_INCIDENTS == 40
    assert listed[0].startswith("• `#1500` ")
    assert ("Showing the 40 most recently active of 1,500; `/submitwatch history` lists more."
            in texts(view))
    assert_valid_home(view)


# --- the listener, through real Bolt and slack_sdk ----------------------------------------------

def bolt_app(slack, db, config):
    """A Bolt app with only the Home listener; process_before_response runs it inside
    dispatch(), so the test sees its effect without waiting."""
    app = App(client=WebClient(token=BOT_TOKEN, base_url=slack.api_url), signing_secret="unused",
              request_verification_enabled=False, token_verification_enabled=False,
              process_before_response=True)
    home.register(app, lambda: db, config, clock=lambda: NOW)
    return app


def open_tab(app, body):
    response = app.dispatch(BoltRequest(body=body, mode="socket_mode"))
    assert response.status == 200


def test_opening_the_home_tab_publishes_it_for_that_person(slack, db, config, watched):
    app = bolt_app(slack, db, config)
    open_tab(app, slack.app_home_opened_event("U0ALICE"))
    [call] = slack.calls_to("views.publish")
    published = slack.home_view("U0ALICE")
    assert published["blocks"] == home.home_view(db, config, NOW, "U0ALICE")["blocks"]
    assert slack.home_view("U0BOB") is None and call is not None


def test_the_messages_tab_publishes_nothing(slack, db, config):
    app = bolt_app(slack, db, config)
    body = slack.app_home_opened_event("U0ALICE")
    body["event"]["tab"] = "messages"
    open_tab(app, body)
    assert slack.calls_to("views.publish") == []


def test_a_slack_error_is_logged_not_raised(slack, db, config, caplog):
    app = bolt_app(slack, db, config)
    slack.fail_next("views.publish", error="not_enabled")
    with caplog.at_level(logging.WARNING, logger="submitwatch"):
        open_tab(app, slack.app_home_opened_event("U0ALICE"))
    assert "could not publish the App Home for U0ALICE: not_enabled" in caplog.text
    assert slack.home_view("U0ALICE") is None
    open_tab(app, slack.app_home_opened_event("U0ALICE"))  # the next opening works
    assert texts(slack.home_view("U0ALICE"))[0] == "SubmitWatch"
