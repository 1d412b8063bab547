"""The Slack app manifest that matches a configuration (`submitwatch manifest`).

manifest.yml in the repository is this for Socket Mode with user groups configured; a test keeps
the two equal. Socket Mode needs no request URLs; HTTP mode gets `slack.public_url` +
`/slack/events` as the slash command's, interactivity's and event subscriptions' request URL.
Scopes are the ones the configuration uses: `usergroups:read` only when permissions.groups or a
route's owners name user groups.
Pure: a dict out, printed as JSON (Slack takes JSON or YAML manifests).
"""
from __future__ import annotations

from bot.core.config import Config, ConfigError

COMMAND = "/submitwatch"
EVENTS_PATH = "/slack/events"
DESCRIPTION = ("Alerts when Exchange refuses SMTP mail from accounts with valid credentials "
               "(events 1018/1020).")
LONG_DESCRIPTION = (
    "SubmitWatch polls your Exchange servers for transport events 1018 and 1020: an account "
    "authenticated over SMTP with valid credentials and was still refused, so scanners, "
    "applications and service accounts silently stop sending. Each problem becomes one living "
    "alert saying why (no Submit right on the connector, or a built-in account that no right "
    "fixes) and the exact commands, updated in place while it lasts. From Slack the team looks "
    "up history, gets the fix for any account, and acknowledges or snoozes alerts.")
USAGE_HINT = ("help | history | show | fix | verify | ack | unack | fixed | snooze | unsnooze | "
              "snoozes | status | servers | summary | routes")
#: Bot scopes, each with why (README "Create the Slack app" explains them too).
SCOPES = {
    "chat:write": "post and update alerts in channels the bot was invited to",
    "commands": "the /submitwatch slash command",
    "usergroups:read": "who may ack and snooze, or a route names, when user groups are used",
    "channels:history": "before re-sending after a crash, look for the bot's own earlier post",
    "groups:history": "the same when the alerts channel is private",
    "channels:read": "`submitwatch check`: the ID of a channel configured by its name",
    "groups:read": "the same for a private channel",
}


def app_manifest(config: Config) -> dict:
    """The manifest for this configuration; ConfigError when HTTP mode has no public URL."""
    http = config.slack.mode == "http"
    url = None
    if http:
        if not config.slack.public_url:
            raise ConfigError("slack.public_url is needed for an HTTP-mode manifest: the https "
                              "URL at which your reverse proxy reaches SubmitWatch")
        url = config.slack.public_url.rstrip("/") + EVENTS_PATH
    groups = config.permissions.groups or any(o.startswith("S") for r in config.routes
                                               for o in r.owners)
    scopes = [s for s in SCOPES if s != "usergroups:read" or groups]
    command: dict = {"command": COMMAND,
                     "description": "Exchange submit-permission alerts, their fix, ack and snooze",
                     "usage_hint": USAGE_HINT, "should_escape": False}
    events: dict = {"bot_events": ["app_home_opened"]}
    interactivity: dict = {"is_enabled": True}
    if url:
        command = {**command, "url": url}
        events = {"request_url": url, **events}
        interactivity = {**interactivity, "request_url": url}
    return {
        "display_information": {"name": "SubmitWatch", "description": DESCRIPTION,
                                "long_description": LONG_DESCRIPTION,
                                "background_color": "#1d3557"},
        "features": {
            "app_home": {"home_tab_enabled": True, "messages_tab_enabled": False,
                         "messages_tab_read_only_enabled": False},
            "bot_user": {"display_name": "SubmitWatch", "always_online": True},
            "slash_commands": [command],
        },
        "oauth_config": {"scopes": {"bot": scopes}},
        "settings": {
            "event_subscriptions": events,
            "interactivity": interactivity,
            "org_deploy_enabled": False,
            "socket_mode_enabled": not http,
            "token_rotation_enabled": False,
        },
    }
