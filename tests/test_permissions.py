"""Who may act: listed users, members of listed user groups (asked of the Slack stand-in through
real slack_sdk), and a clear refusal for everyone else, failing closed when Slack cannot say."""
from __future__ import annotations

import pytest

from bot.core.config import ConfigError, PermissionsConfig, parse_config
from bot.engine.permissions import Permissions
from bot.slack.sender import make_client
from tests.conftest import BOT_TOKEN


class Ticks:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def client(slack):
    return make_client(slack.api_url, BOT_TOKEN, retries=0)


def test_everyone_may_act_when_nobody_is_named(client):
    assert Permissions(PermissionsConfig()).refusal("U0ANYONE", client) is None


def test_listed_users_may_act_and_others_are_told_who_may(client, slack):
    permissions = Permissions(PermissionsConfig(users=("U0ALICE",)))
    assert permissions.refusal("U0ALICE", client) is None
    refusal = permissions.refusal("U0MALLORY", client)
    assert "limited to <@U0ALICE>" in refusal and "[permissions]" in refusal
    assert slack.calls_to("usergroups.users.list") == []   # no groups: Slack is not asked


def test_group_members_may_act_and_membership_is_cached_for_a_while(client, slack):
    slack.set_usergroup("S0ONCALL", ["U0BOB"])
    ticks = Ticks()
    permissions = Permissions(PermissionsConfig(groups=("S0ONCALL",)), monotonic=ticks)
    assert permissions.refusal("U0BOB", client) is None
    assert "<!subteam^S0ONCALL>" in permissions.refusal("U0CAROL", client)
    assert len(slack.calls_to("usergroups.users.list")) == 1

    slack.set_usergroup("S0ONCALL", ["U0BOB", "U0CAROL"])   # Carol joins the on-call group
    assert permissions.refusal("U0CAROL", client) is not None  # still the cached members
    ticks.now += PermissionsConfig.group_cache + 1
    assert permissions.refusal("U0CAROL", client) is None
    assert len(slack.calls_to("usergroups.users.list")) == 2


def test_the_group_cache_is_configurable_down_to_asking_every_time(client, slack):
    slack.set_usergroup("S0ONCALL", ["U0BOB"])
    ticks = Ticks()
    permissions = Permissions(PermissionsConfig(groups=("S0ONCALL",), group_cache=0),
                              monotonic=ticks)
    assert permissions.refusal("U0BOB", client) is None
    slack.set_usergroup("S0ONCALL", [])                     # Bob is removed from the group
    assert permissions.refusal("U0BOB", client) is not None   # at once, not 5 minutes later
    assert len(slack.calls_to("usergroups.users.list")) == 2


def test_when_slack_cannot_say_the_answer_is_no_with_the_reason(client, slack):
    permissions = Permissions(PermissionsConfig(groups=("S0GONE",)))
    refusal = permissions.refusal("U0BOB", client)
    assert "could not be read from Slack (Slack said no_such_subteam)" in refusal
    slack.set_down(True)
    assert Permissions(PermissionsConfig(users=("U0ALICE",), groups=("S0GONE",))).refusal(
        "U0BOB", client) is not None


@pytest.mark.parametrize("table, message", [
    ({"users": ["alice"]}, "'alice' is not a Slack ID; use user IDs such as 'U024BE7LH'"),
    ({"users": "U0ALICE"}, "permissions.users must be a list"),
    ({"groups": ["@oncall"]}, "'@oncall' is not a Slack ID; use user group IDs"),
    ({"channels": ["#alerts"]}, "'#alerts' is not a Slack ID; use channel IDs"),
    ({"admins": ["U0ALICE"]}, "unknown key 'permissions.admins'"),
])
def test_a_wrong_permissions_table_is_explained(table, message):
    with pytest.raises(ConfigError) as error:
        parse_config({"slack": {"channel": "C1"}, "permissions": table}, {})
    assert message in str(error.value)


def test_permissions_are_read_from_the_config():
    config = parse_config({"slack": {"channel": "C1"}, "permissions": {
        "users": ["U0ALICE"], "groups": ["S0ONCALL"], "channels": ["C0ALERTS"]}}, {})
    assert config.permissions == PermissionsConfig(("U0ALICE",), ("S0ONCALL",), ("C0ALERTS",))
    assert not config.permissions.open_to_everyone


# --- the alert's buttons through real Bolt, and the slash route (mutation-testing gaps) ---------

from datetime import timedelta  # noqa: E402

from bot.engine import chatops  # noqa: E402
from bot.slack.alerts import ACTION_ACK, ACTION_SNOOZE, ACTION_UNACK, ACTION_UNSNOOZE  # noqa: E402
from store import chat  # noqa: E402
from store import db as store  # noqa: E402
from tests.conftest import CHANNEL  # noqa: E402
from tests.helpers import ALICE, ask, bolt_actions, click, sweep  # noqa: E402


@pytest.mark.parametrize("action_id, prepare, value", [
    (ACTION_ACK, None, "id"),
    (ACTION_UNACK, "ack", "id"),
    (ACTION_SNOOZE, None, "select"),
    (ACTION_UNSNOOZE, "snooze", "id"),
])
def test_every_button_refuses_people_not_allowed_and_audits_where(
        posted, db, slack, clock, make_config, action_id, prepare, value):
    _, incident, _ = posted
    config = make_config(servers=("EX01", "EX02"), permissions={"users": ["U0ALICE"]})
    if prepare == "ack":
        chatops.acknowledge(db, incident.id, ALICE, None, clock())
    elif prepare == "snooze":
        chatops.snooze(db, incident.id, 3600, "tonight", ALICE, clock())
    sweep(db, config, clock)
    before = (store.get_incident(db, incident.id), chat.active_snoozes(db, clock()))
    [message] = slack.messages(CHANNEL)
    kw = ({"selected_option_value": f"{incident.id}:3600"} if value == "select"
          else {"value": str(incident.id)})
    [response] = click(bolt_actions(slack, db, config, clock), slack, "U0MALLORY", action_id,
                       message, **kw)
    assert "limited to <@U0ALICE>" in response["text"]
    assert response["response_type"] == "ephemeral"
    assert (store.get_incident(db, incident.id), chat.active_snoozes(db, clock())) == before
    refused = chat.audit_trail(db, incident.id)[-1]
    assert (refused["user_id"], refused["outcome"], refused["via"], refused["channel"]) == (
        "U0MALLORY", "refused", "button", CHANNEL)


def test_the_snooze_menu_snoozes_for_the_chosen_time_and_a_mistake_is_answered(
        posted, db, slack, clock):
    config, incident, message = posted
    app = bolt_actions(slack, db, config, clock)
    assert click(app, slack, "U0ALICE", ACTION_SNOOZE, message,
                 selected_option_value=f"{incident.id}:14400") == []
    [snooze] = chat.active_snoozes(db, clock())
    assert snooze.until - clock() == timedelta(hours=4)
    [row] = chat.audit_trail(db, incident.id)
    assert (row["action"], row["via"], row["channel"]) == ("snooze", "button", CHANNEL)
    assert click(app, slack, "U0ALICE", ACTION_ACK, message, value=str(incident.id)) == []
    [again] = click(app, slack, "U0ALICE", ACTION_ACK, message, value=str(incident.id))
    assert "You already acknowledged" in again["text"] and again["response_type"] == "ephemeral"


def test_slash_unsnooze_and_unack_are_refused_to_people_not_allowed(
        posted, db, clock, make_config):
    _, incident, _ = posted
    config = make_config(servers=("EX01", "EX02"), permissions={"users": ["U0ALICE"]})
    chatops.snooze(db, incident.id, 3600, "tonight", ALICE, clock())
    chatops.acknowledge(db, incident.id, ALICE, None, clock())
    for text in (f"unsnooze #{incident.id}", "unsnooze CONTOSO\\svc-scanner",
                 f"unack #{incident.id}"):
        assert "limited to <@U0ALICE>" in ask(db, config, clock, text, user="U0MALLORY").text
    assert len(chat.active_snoozes(db, clock())) == 1
    assert store.get_incident(db, incident.id).acked_by == "U0ALICE"
    assert [r["outcome"] for r in chat.recent_audit(db, 3)] == ["refused"] * 3


def test_a_missing_usergroups_scope_is_named_in_the_refusal():
    from sim.slack_api import SlackStandIn
    with SlackStandIn(bot_token=BOT_TOKEN, scopes=("chat:write", "commands")) as narrow:
        narrow.set_usergroup("S0ONCALL", ["U0CAROL"])
        refusal = Permissions(PermissionsConfig(groups=("S0ONCALL",))).refusal(
            "U0CAROL", make_client(narrow.api_url, BOT_TOKEN, retries=0))
    assert "the app lacks the usergroups:read scope; reinstall it from manifest.yml" in refusal
