"""`submitwatch check`: is the configuration usable, and can we reach everything it names?"""
from __future__ import annotations

from urllib.parse import urlsplit

from bot.core.config import Config, Secret, missing_secrets
from bot.core.inert import inert
from bot.slack.blocks import CHANNEL_ID
from bot.slack.sender import FIXES, make_client
from bot.slack.sender import error_code as _code
from bot.sources.base import SourceError
from bot.sources.winrm import SETUP_DOC, WinRMSource


def run_check(config: Config, out=print) -> int:
    problems = 0
    out(f"config {config.source}: OK ({len(config.servers)} server(s), "
        f"alerts to {config.slack.channel}, database {config.store.path})")
    for warning in permission_warnings(config):
        out(f"WARNING  {warning}")
    for missing in missing_secrets(config, slack_mode=config.slack.mode):
        out(f"MISSING  {missing}")
        problems += 1
    for server in config.servers:
        for warning in server_warnings(server):
            out(f"WARNING  {server.name}: {warning}")
        if server.password_env and server.password is None:
            continue  # already reported as missing
        try:
            with WinRMSource(server, config.polling).open() as shell:
                info = shell.log_info()
                # The same query a poll runs, from the newest record: proves the account may
                # read the log and the query is understood, without reading any history.
                answer = shell.query(info.newest_record or 0, 1)
                # An empty answer ("") tells nothing; 8-bit text, even ASCII, means /uni:true
                # was ignored (UTF-16 would hold zero bytes).
                ignored = answer.encoding not in ("utf-16-le", "")
                codepage = shell.ansi_codepage() if ignored else None
            out(f"OK       {server.name}: WinRM works and the event query runs; the {server.log} "
                f"log holds {info.record_count} record(s)")
            if server.log != "Application":
                out(f"WARNING  {server.name}: every event in {server.log} is taken for one "
                    f"logged by {server.name} itself: a collector's log (ForwardedEvents), "
                    "which holds many servers' events, is not supported yet")
            for warning in answer_warnings(answer, codepage):
                out(f"WARNING  {server.name}: {warning}")
            skew = _measured_skew(config, server.name)
            if skew:
                out(f"WARNING  {server.name}: {skew}")
        except SourceError as exc:
            out(f"FAILED   {exc}")
            problems += 1
        except Exception as exc:  # anything else still gets a line, not a traceback
            out(f"FAILED   {server.name}: unexpected {type(exc).__name__}: {exc}")
            problems += 1
    if config.slack.bot_token is not None:
        problems += _check_slack(config, config.slack.bot_token, out)
    problems += _check_directory(config, out)
    return 1 if problems else 0


#: How each status of bot.directory.reader.check_access is printed, and whether it fails `check`.
_DIRECTORY_STATUSES = {"OK": False, "WARNING": False, "FAILED": True, "FIX": False}


def _check_directory(config: Config, out) -> int:
    """What the [directory] account can read, one line per finding, with the read-only
    delegation (FIX lines) where it cannot read connectors or their descriptors. The count of
    FAILED lines is returned; nothing here raises, as a directory problem must not hide the
    rest of the report (and SubmitWatch keeps alerting without a directory)."""
    if config.directory is None:
        out("OFF      directory checks are off: no [directory] table in the configuration, so "
            "alerts name no directory facts and /submitwatch verify cannot answer; add one "
            "(urls, user, password_env) to read the connectors' Submit rights, read-only")
        return 0
    from bot.directory.reader import Directory, check_access  # ldap3 is loaded only when configured

    directory = Directory(config.directory)
    try:
        lines = check_access(directory, [s.name for s in config.servers])
    except Exception as exc:  # check_access says it never raises; a bug still gets a line
        lines = [("FAILED", f"directory: unexpected {type(exc).__name__}: {exc}")]
    finally:
        directory.close()
    failed = 0
    for status, text in lines:
        failed += _DIRECTORY_STATUSES.get(status, True)
        out(f"{status:<8} {inert(text)}")   # names from the directory are remote text
    return failed


def _measured_skew(config: Config, server: str) -> str | None:
    """The clock skew the polls last measured for a server (check itself sees no event)."""
    from pathlib import Path

    from bot.slack.replies import skew_text
    from store import db as store
    if not Path(config.store.path).exists():
        return None
    try:
        state = store.server_state(store.open_db(config.store.path, migrate=False), server)
    except Exception:  # an old or locked database: the skew is a hint, not a check
        return None
    if not state.clock_skew:
        return None
    # stored with the moment it was measured, so that is always there
    when = f" (measured {store.iso(state.clock_skew_at)})" if state.clock_skew_at else ""
    return f"{skew_text(state.clock_skew)}{when}"


def answer_warnings(answer, codepage: int | None) -> list[str]:
    """What the test query's answer says about names and framing on this server."""
    warnings = [problem.detail for problem in answer.problems]
    if answer.encoding not in ("utf-16-le", ""):
        warnings.append(
            "wevtutil ignored /uni:true (it answered in 8-bit text, not UTF-16): names are "
            "decoded as UTF-8 or else as the server's ANSI code page "
            f"({codepage or 'unreadable'}), and a character that code page cannot hold "
            f"reaches SubmitWatch as '?' ({SETUP_DOC}, Names)")
    return warnings


def permission_warnings(config: Config) -> list[str]:
    if config.permissions.open_to_everyone:
        return ["anyone in the Slack workspace may acknowledge and snooze alerts: name who may "
                "in [permissions] users (user IDs) or groups (user group IDs)"]
    return []


def server_warnings(server) -> list[str]:
    warnings = []
    scheme = urlsplit(server.url).scheme
    if not server.validate_certificate and scheme == "https":
        warnings.append("CERTIFICATE VALIDATION IS OFF: anyone on the network path can pose as "
                        "this server and receive the WinRM credentials. Set ca_bundle instead.")
    if server.transport in ("basic", "ssl") and scheme == "http":
        warnings.append(f"transport {server.transport!r} over http sends the password and the "
                        "events unencrypted; use https (port 5986) or ntlm/kerberos")
    return warnings


#: What the bot token needs, and what for (`check` compares it with the token's scopes).
NEEDED_SCOPES = {
    "chat:write": "post alerts, update them, reply in their threads",
    "commands": "the /submitwatch slash command",
    "channels:history": "find its own post after a crash before sending it again",
}


def _check_slack(config: Config, bot_token: Secret, out) -> int:
    client = make_client(config.slack.api_url, bot_token.reveal(), timeout=10, retries=1)
    try:
        response = client.auth_test()
    except Exception as exc:  # SlackApiError or a network error: say it in words
        out(f"FAILED   Slack at {config.slack.api_url}: {_slack_error(exc, config.slack.channel)}")
        return 1
    out(f"OK       Slack: signed in as {response.get('user')} in {response.get('team')}")
    scopes = _scopes(response)
    problems = _check_scopes(config, scopes, out)
    channels = dict.fromkeys([config.slack.channel] + [s.channel for s in config.servers
                                                       if s.channel]
                             + [r.channel for r in config.routes if r.channel]
                             + ([config.summary.channel] if config.summary.every
                                and config.summary.channel else []))
    for channel in channels:
        problems += _check_channel(client, channel, scopes, out)
    problems += _check_groups(client, config, out)
    if config.slack.mode == "socket" and config.slack.app_token is not None:
        problems += _check_app_token(config, config.slack.app_token, out)
    return problems


def _scopes(response) -> set[str] | None:
    """The token's scopes, from the x-oauth-scopes header Slack sends (None: not told)."""
    header = next((v for k, v in (response.headers or {}).items()
                   if k.lower() == "x-oauth-scopes"), None)
    if header is None:
        return None
    return {scope.strip() for scope in header.split(",") if scope.strip()}


def _check_scopes(config: Config, scopes: set[str] | None, out) -> int:
    if scopes is None:
        out("WARNING  Slack did not say which scopes the bot token has; not checked")
        return 0
    needed = dict(NEEDED_SCOPES)
    if config.permissions.groups:
        needed["usergroups:read"] = "check who is in permissions.groups"
    missing = [f"{scope} ({why})" for scope, why in needed.items() if scope not in scopes]
    if missing:
        out("FAILED   the bot token lacks " + "; ".join(missing) + ": add them and reinstall "
            "the app (manifest.yml, or `submitwatch manifest`, has them)")
        return 1
    out(f"OK       the bot token has the scopes this configuration uses ({', '.join(needed)})")
    return 0


def _check_channel(client, channel: str, scopes: set[str] | None, out) -> int:
    """The channel exists and the bot is in it (reading one message proves both)."""
    channel_id: str | None = channel
    if not CHANNEL_ID.fullmatch(channel):
        channel_id = _channel_id_of(client, channel, scopes)
        if channel_id is None:
            out(f"FAILED   channel {channel}: this is a name, and no channel the bot can see "
                "has it (a private channel must invite the bot first). Use the channel's ID: "
                "in Slack, open the channel's details; the ID (C...) is at the bottom")
            return 1
        # Alerts work with a name, but an alert whose first post got no answer cannot be
        # looked up before it is sent again (conversations.history takes only IDs).
        out(f"FAILED   channel {channel} is a name; its ID is {channel_id}: write "
            f"channel = \"{channel_id}\" (a name breaks the look-up that keeps an alert "
            "from being posted twice, and a rename breaks alerts)")
        problems = 1
    else:
        problems = 0
    try:
        client.conversations_history(channel=channel_id, limit=1)
    except Exception as exc:
        out(f"FAILED   channel {channel}: {_slack_error(exc, channel)}")
        return 1
    out(f"OK       channel {channel}: exists and the bot is in it")
    return problems


def _channel_id_of(client, name: str, scopes: set[str] | None) -> str | None:
    """Look a channel name up (needs channels:read; groups:read for a private one)."""
    wanted = name.removeprefix("#").casefold()
    if scopes is not None and "channels:read" not in scopes:
        return None
    types = "public_channel,private_channel" if scopes and "groups:read" in scopes else \
        "public_channel"
    try:
        for page in client.conversations_list(types=types, exclude_archived=True, limit=1000):
            for found in page.get("channels", []):
                if found.get("name", "").casefold() == wanted:
                    return found["id"]
    except Exception:  # no scope, or Slack refused: say "a name" without the ID
        return None
    return None


def _check_groups(client, config: Config, out) -> int:
    problems = 0
    owners = {o for r in config.routes for o in r.owners if o.startswith("S")}
    for group in dict.fromkeys([*config.permissions.groups, *sorted(owners)]):
        role = ("may act" if group in config.permissions.groups
                else "are named by a route's alerts")
        try:
            members = client.usergroups_users_list(usergroup=group)["users"]
            out(f"OK       user group {group}: {len(members)} member(s) {role}")
        except Exception as exc:  # the same words the permission check would log
            code = _code(exc)
            hint = {"missing_scope": "the app lacks usergroups:read: reinstall it from "
                                     "manifest.yml",
                    "no_such_subteam": "no such user group: check the ID (S...)"}.get(code or "")
            out(f"FAILED   user group {group}: {hint or code or exc}; nobody in it {role}")
            problems += 1
    return problems


def _check_app_token(config: Config, app_token: Secret, out) -> int:
    """Socket Mode: the app-level token may open a connection (apps.connections.open)."""
    client = make_client(config.slack.api_url, None, timeout=10, retries=1)
    try:
        client.apps_connections_open(app_token=app_token.reveal())
    except Exception as exc:
        code = _code(exc)
        hint = {"invalid_auth": "Slack rejected SLACK_APP_TOKEN: check it (xapp-...)",
                "not_allowed_token_type": "SLACK_APP_TOKEN holds a bot token: it needs the "
                                          "app-level token (xapp-...) with connections:write",
                "missing_scope": "SLACK_APP_TOKEN lacks connections:write: create an app-level "
                                 "token with that scope"}.get(code or "")
        out(f"FAILED   Socket Mode: {hint or _slack_error(exc, config.slack.channel)}")
        return 1
    out("OK       Socket Mode: the app token opens a connection")
    return 0


def _slack_error(exc: Exception, channel: str) -> str:
    code = _code(exc)
    fix = FIXES.get(code or "", "").format(channel=channel)
    return fix or code or str(exc)
