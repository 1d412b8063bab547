"""manifest.yml is valid against Slack's published schema and matches what the app does.

Slack only sends what the manifest declares, and Bolt gives no answer to what nobody listens
to (a 404 over HTTP, no ack over Socket Mode: the user sees an error). So both directions are
checked: every listener is declared, and every declared command, event and button reaches a
listener of the real app. Scopes likewise: every Web API method the code calls has its scope,
and no scope is asked for that nothing uses (each one is a question an admin must approve).
"""
import ast
import hashlib
import hmac
import json
import time
from pathlib import Path
from urllib.parse import urlencode

import jsonschema
import pytest
import yaml
from slack_bolt import BoltRequest
from slack_sdk import WebClient

import handlers
from bot.app import build_bolt_app
from bot.core.config import parse_config
from bot.slack.alerts import ACTION_SNOOZE
from handlers.commands import COMMAND, SUBCOMMANDS
from sim.slack_api import SCOPES_NEEDED
from store.db import open_db
from tests.conftest import BOT_TOKEN, CHANNEL

ROOT = Path(__file__).parent.parent
SCHEMA = ROOT / "tests/data/slack-manifest-schema/manifest.schema.1.0.0.json"
#: Where the product calls Slack from (sim is the stand-in, not the product).
CODE = [p for folder in ("bot", "handlers", "store") for p in (ROOT / folder).rglob("*.py")
        if "sim" not in p.relative_to(ROOT).parts]


def manifest():
    return yaml.safe_load((ROOT / "manifest.yml").read_text(encoding="utf-8"))


MANIFEST = manifest()
DECLARED_COMMANDS = [c["command"] for c in MANIFEST["features"].get("slash_commands", [])]
DECLARED_EVENTS = MANIFEST["settings"].get("event_subscriptions", {}).get("bot_events", [])


# -- the schema -----------------------------------------------------------------------------------


def test_manifest_validates_against_slacks_schema():
    jsonschema.validate(manifest(), json.loads(SCHEMA.read_text(encoding="utf-8")))


def test_the_schema_check_can_fail():
    broken = manifest()
    broken["settings"]["socket_mode_enabled"] = "yes"
    try:
        jsonschema.validate(broken, json.loads(SCHEMA.read_text(encoding="utf-8")))
    except jsonschema.ValidationError as exc:
        assert "'yes' is not of type 'boolean'" in exc.message
    else:
        raise AssertionError("an invalid manifest passed validation")


# -- declared == listened to ---------------------------------------------------------------------


def test_every_listener_is_declared_and_every_declaration_has_a_listener():
    assert sorted(DECLARED_COMMANDS) == sorted(handlers.LISTENS["commands"])
    assert sorted(DECLARED_EVENTS) == sorted(handlers.LISTENS["events"])
    # Buttons need no per-action declaration, only interactivity, and only when there are any.
    assert MANIFEST["settings"]["interactivity"]["is_enabled"] is bool(handlers.LISTENS["actions"])
    # The Home tab exists exactly when something fills it.
    home_tab = MANIFEST["features"].get("app_home", {}).get("home_tab_enabled", False)
    assert home_tab is ("app_home_opened" in handlers.LISTENS["events"])


def test_the_usage_hint_names_every_subcommand():
    [command] = MANIFEST["features"]["slash_commands"]
    assert command["command"] == COMMAND
    hinted = [word.strip() for word in command["usage_hint"].split("|")]
    assert sorted(hinted) == sorted(SUBCOMMANDS)


def test_socket_mode_is_the_default():
    assert MANIFEST["settings"]["socket_mode_enabled"] is True
    assert "request_url" not in MANIFEST["settings"]["interactivity"]  # Socket Mode has none


# -- every declaration is answered by the real app ---------------------------------------------

SECRET = "manifest-test-signing-secret"


@pytest.fixture
def app(slack, db_path):
    raw = {"slack": {"channel": CHANNEL, "api_url": slack.api_url, "mode": "http"},
           "store": {"path": db_path}}
    open_db(db_path).conn.close()
    return build_bolt_app(parse_config(raw, {"SLACK_BOT_TOKEN": BOT_TOKEN,
                                             "SLACK_SIGNING_SECRET": SECRET}))


def dispatch(app, body: str, content_type: str):
    """Through Bolt's whole middleware chain, signature check included, as the WSGI adapter does."""
    timestamp = str(int(time.time()))
    signature = "v0=" + hmac.new(SECRET.encode(), f"v0:{timestamp}:{body}".encode(),
                                 hashlib.sha256).hexdigest()
    return app.dispatch(BoltRequest(body=body, headers={
        "content-type": content_type, "x-slack-request-timestamp": timestamp,
        "x-slack-signature": signature}))


@pytest.mark.parametrize("command", DECLARED_COMMANDS)
def test_each_declared_command_is_answered(app, slack, command):
    payload = slack.slash_command_payload("help", command=command)
    response = dispatch(app, urlencode(payload), "application/x-www-form-urlencoded")
    assert response.status == 200, f"{command}: Bolt answered {response.status} {response.body}"
    slack.wait_for_responses(1, url=payload["response_url"])


@pytest.mark.parametrize("event", DECLARED_EVENTS)
def test_each_declared_event_is_answered(app, slack, event):
    payload = slack.app_home_opened_event("U0ADMIN")
    payload["event"]["type"] = event
    response = dispatch(app, json.dumps(payload), "application/json")
    assert response.status == 200, f"{event}: Bolt answered {response.status} {response.body}"


@pytest.mark.parametrize("action_id", handlers.LISTENS["actions"])
def test_each_button_is_answered(app, slack, action_id):
    if action_id == ACTION_SNOOZE:  # the Snooze menu is a select, the rest are buttons
        payload = slack.block_actions_payload("U0ADMIN", CHANNEL, "1767225600.000100", action_id,
                                              selected_option_value="1:3600")
    else:
        payload = slack.block_actions_payload("U0ADMIN", CHANNEL, "1767225600.000100", action_id,
                                              value="1")
    response = dispatch(app, urlencode({"payload": json.dumps(payload)}),
                        "application/x-www-form-urlencoded")
    assert response.status == 200, f"{action_id}: Bolt answered {response.status} {response.body}"


def test_an_undeclared_command_gets_404_so_the_checks_above_can_fail(app, slack):
    payload = slack.slash_command_payload("help", command="/somethingelse")
    assert dispatch(app, urlencode(payload), "application/x-www-form-urlencoded").status == 404


# -- scopes --------------------------------------------------------------------------------------

#: WebClient's method names (chat_postMessage) and the API methods they call (chat.postMessage).
CLIENT_METHODS = {name: name.replace("_", ".") for name in dir(WebClient)
                  if not name.startswith("_") and "_" in name and name not in ("api_call",)}
API_METHODS = set(CLIENT_METHODS.values())
#: SCOPES_NEEDED names the public-channel scope (the stand-in's channels are public). An alerts
#: channel may as well be private, which takes the groups:* twin, so both are needed.
PRIVATE_TWIN = {"channels:history": "groups:history", "channels:read": "groups:read"}


def web_api_methods_called(paths) -> dict[str, set[str]]:
    """API method -> files, found in the code: `client.chat_update(...)`, the method's name as
    a string (`api_call("chat.update", ...)`), and Bolt's `say` (chat.postMessage)."""
    found: dict[str, set[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            method = None
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr in CLIENT_METHODS):
                method = CLIENT_METHODS[node.func.attr]
            elif isinstance(node, ast.Constant) and node.value in API_METHODS:
                method = node.value
            elif isinstance(node, ast.arg) and node.arg == "say":
                method = "chat.postMessage"
            if method:
                found.setdefault(method, set()).add(str(path.relative_to(ROOT)))
    return found


def test_the_scan_finds_web_api_calls():
    sample = ROOT / "bot/slack/sender.py"
    assert {"chat.postMessage", "chat.update"} <= set(web_api_methods_called([sample]))


def test_every_needed_scope_is_requested_and_every_requested_scope_is_needed():
    called = web_api_methods_called(CODE)
    unknown = sorted(m for m in called if m not in SCOPES_NEEDED)
    assert not unknown, (f"add {unknown} to SCOPES_NEEDED in sim/slack_api.py with the scope "
                         "its Slack docs page names (called from "
                         f"{sorted(set().union(*(called[m] for m in unknown)))})")
    needed = {SCOPES_NEEDED[m] for m in called if SCOPES_NEEDED[m]}
    needed |= {PRIVATE_TWIN[scope] for scope in needed if scope in PRIVATE_TWIN}
    if DECLARED_COMMANDS:
        needed.add("commands")  # slash commands need it; no Web API call does
    requested = set(MANIFEST["oauth_config"]["scopes"]["bot"])
    assert requested == needed, (f"missing: {sorted(needed - requested)}; "
                                 f"requested but unused: {sorted(requested - needed)}")


# --- `submitwatch manifest`: the manifest that matches the configuration -------------------------

def _config(**slack):
    from bot.core.config import parse_config
    raw = {"slack": {"channel": "C0ALERTS", **slack},
           "permissions": {"groups": ["S0ONCALL"]},
           "servers": [{"name": "EX01", "url": "https://ex01:5986/wsman", "username": "u",
                        "password_env": "PW"}]}
    return parse_config(raw, {"PW": "x"})


def test_manifest_yml_is_what_the_command_prints_for_socket_mode():
    from bot.ops.manifest import app_manifest
    assert app_manifest(_config()) == MANIFEST


def test_the_http_mode_manifest_carries_the_public_url_and_validates():
    from dataclasses import replace

    from bot.core.config import ConfigError
    from bot.ops.manifest import app_manifest
    built = app_manifest(_config(mode="http", public_url="https://sw.contoso.com/"))
    url = "https://sw.contoso.com/slack/events"
    assert built["features"]["slash_commands"][0]["url"] == url
    assert built["settings"]["interactivity"]["request_url"] == url
    assert built["settings"]["event_subscriptions"]["request_url"] == url
    assert built["settings"]["socket_mode_enabled"] is False
    jsonschema.validate(built, json.loads(SCHEMA.read_text(encoding="utf-8")))
    with pytest.raises(ConfigError, match="slack.public_url is needed"):
        app_manifest(_config(mode="http"))
    no_groups = replace(_config(), permissions=replace(_config().permissions, groups=()))
    assert "usergroups:read" not in app_manifest(no_groups)["oauth_config"]["scopes"]["bot"]


def test_public_url_must_be_https():
    from bot.core.config import ConfigError
    with pytest.raises(ConfigError, match="slack.public_url must be the https URL"):
        _config(public_url="http://sw.contoso.com")


def test_the_manifest_command_prints_json(tmp_path):
    import json
    import subprocess
    import sys
    path = tmp_path / "sw.toml"
    path.write_text('[slack]\nchannel = "C0ALERTS"\nmode = "http"\n'
                    'public_url = "https://sw.contoso.com"\n', encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "bot.cli", "manifest", "--config", str(path)],
                            capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert result.returncode == 0, result.stderr
    printed = json.loads(result.stdout)
    assert printed["features"]["slash_commands"][0]["url"] == "https://sw.contoso.com/slack/events"
