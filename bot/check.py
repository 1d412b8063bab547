"""`submitwatch check`: is the configuration usable, and can we reach everything it names?"""
from __future__ import annotations

from urllib.parse import urlsplit

from .config import Config, missing_secrets
from .slack_out import FIXES, make_client
from .source import SourceError, WinRMSource


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
                shell.query(info.newest_record or 0, 1)
            out(f"OK       {server.name}: WinRM works and the event query runs; the Application "
                f"log holds {info.record_count} record(s)")
        except SourceError as exc:
            out(f"FAILED   {exc}")
            problems += 1
        except Exception as exc:  # anything else still gets a line, not a traceback
            out(f"FAILED   {server.name}: unexpected {type(exc).__name__}: {exc}")
            problems += 1
    if config.slack.bot_token is not None:
        problems += _check_slack(config, out)
    return 1 if problems else 0


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


def _check_slack(config: Config, out) -> int:
    client = make_client(config.slack.api_url, config.slack.bot_token.reveal(), timeout=10,
                         retries=1)
    try:
        response = client.auth_test()
    except Exception as exc:  # SlackApiError or a network error: say it in words
        code = getattr(getattr(exc, "response", None), "get", lambda _k: None)("error")
        fix = FIXES.get(code or "", "").format(channel=config.slack.channel)
        out(f"FAILED   Slack at {config.slack.api_url}: {fix or code or exc}")
        return 1
    out(f"OK       Slack: signed in as {response.get('user')} in {response.get('team')}; "
        f"alerts go to {config.slack.channel} (invite the bot there)")
    problems = 0
    for group in config.permissions.groups:
        try:
            members = client.usergroups_users_list(usergroup=group)["users"]
            out(f"OK       user group {group}: {len(members)} member(s) may act")
        except Exception as exc:  # the same words the permission check would log
            code = getattr(getattr(exc, "response", None), "get", lambda _k: None)("error")
            hint = {"missing_scope": "the app lacks usergroups:read: reinstall it from "
                                     "manifest.yml",
                    "no_such_subteam": "no such user group: check the ID (S...)"}.get(code or "")
            out(f"FAILED   user group {group}: {hint or code or exc}; nobody in it can act")
            problems += 1
    return problems
