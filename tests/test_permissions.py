"""Who may act: listed users, members of listed user groups (asked of the Slack stand-in through
real slack_sdk), and a clear refusal for everyone else, failing closed when Slack cannot say."""
from __future__ import annotations

import pytest

from bot.config import ConfigError, PermissionsConfig, parse_config
from bot.permissions import GROUP_CACHE_SECONDS, Permissions
from bot.slack_out import make_client
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
    ticks.now += GROUP_CACHE_SECONDS + 1
    assert permissions.refusal("U0CAROL", client) is None
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
