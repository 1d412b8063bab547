"""`submitwatch check`: is the configuration usable, and can we reach everything it names?"""
from __future__ import annotations

from datetime import UTC, datetime
from http import HTTPStatus
from urllib.parse import urlsplit

from slack_sdk import WebClient
from slack_sdk.errors import SlackApiError

from bot.core.config import Config, Secret, ServerConfig, missing_secrets
from bot.core.inert import inert
from bot.exchange.protocollog import (
    DEFAULT_MAX_OUTPUT,
    LOG_SUBFOLDERS,
    MIN_MAX_OUTPUT,
    ReadRequest,
    parse_read_output,
    read_command,
)
from bot.exchange.remediation import ps_quote
from bot.slack.blocks import CHANNEL_ID
from bot.slack.sender import FIXES, make_client, unreachable_words
from bot.slack.sender import error_code as _code
from bot.sources.base import SourceError
from bot.sources.collector import subscription_status
from bot.sources.origins import Origins
from bot.sources.winrm import SETUP_DOC, WinRMSource


def run_check(config: Config, out=print, now: datetime | None = None) -> int:
    problems = 0
    now = now or datetime.now(UTC)
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
        if not server.polled:
            problems += _fed_server(config, server, out)
            continue
        if server.password_env and server.password is None:
            continue  # already reported as missing
        try:
            source = WinRMSource(server, config.polling)
            with source.open() as shell:
                info = shell.log_info()
                # The same query a poll runs, from the newest record: proves the account may
                # read the log and the query is understood, without reading any history.
                answer = shell.query(info.newest_record or 0, 1)
                # An empty answer ("") tells nothing; 8-bit text, even ASCII, means /uni:true
                # was ignored (UTF-16 would hold zero bytes).
                ignored = answer.encoding not in ("utf-16-le", "")
                codepage = shell.ansi_codepage() if ignored else None
                folders = (protocol_log_lines(shell, server, config, now)
                           if config.devices.enabled else [])
            out(f"OK       {server.name}: WinRM works and the event query runs; the {server.log} "
                f"log holds {info.record_count} record(s)")
            out(f"OK       {server.name}: signed in with {source.mechanism()}")
            if server.log != "Application":
                out(f"WARNING  {server.name}: every event in {server.log} is taken for one "
                    f"logged by {server.name} itself: for a collector's log (ForwardedEvents), "
                    "which holds many servers' events, use a [[collectors]] entry "
                    "(docs/collectors.md)")
            for warning in answer_warnings(answer, codepage):
                out(f"WARNING  {server.name}: {warning}")
            skew = _measured_skew(config, server.name)
            if skew:
                out(f"WARNING  {server.name}: {skew}")
            for status, text in folders:
                problems += status == "FAILED"
                out(f"{status:<8} {text}")
        except SourceError as exc:
            out(f"FAILED   {exc}")
            problems += 1
        except Exception as exc:  # anything else still gets a line, not a traceback
            out(f"FAILED   {server.name}: unexpected {type(exc).__name__}: {exc}")
            problems += 1
    problems += check_collectors(config, out, now)
    problems += check_otlp(config, out)
    for line in given_up_lines(config, now):
        out(f"WARNING  {line}")
    if config.slack.bot_token is not None:
        problems += _check_slack(config, config.slack.bot_token, out)
    problems += _check_directory(config, out)
    return 1 if problems else 0


def _fed_server(config: Config, server, out) -> int:
    """A server without url: SubmitWatch never connects to it. Only a collector or the OTLP
    receiver can bring its events; with neither configured, nothing ever would."""
    feeds = [f"collector {c.name}" for c in config.collectors]
    if config.otlp.port is not None:
        feeds.append("the OTLP receiver")
    if not feeds:
        out(f"FAILED   {server.name}: it has no url, so SubmitWatch never polls it, and no "
            "[[collectors]] entry or [otlp] receiver is configured to bring its events")
        out(f"FIX      give {server.name} a url (docs/configuration.md), or configure the "
            "collector or OTLP pipeline that carries its events (docs/collectors.md, "
            "docs/otlp.md)")
        return 1
    out(f"OK       {server.name}: not polled (no url); its events come through "
        f"{' or '.join(feeds)}")
    return 0


def check_collectors(config: Config, out, now: datetime) -> int:
    """Each collector: its WEF subscription exists and can be read, and every source it lists
    with the configured server it maps to (or that it is taken under its own name, or ignored,
    by `unconfigured_origins`) and how long ago it was heard from. Returns the failures."""
    failures = 0
    for collector in config.collectors:
        endpoint = collector.endpoint
        if endpoint.password_env and endpoint.password is None:
            continue  # already reported as missing
        try:
            status = subscription_status(WinRMSource(endpoint, config.polling),
                                         collector.subscription)
        except SourceError as exc:
            out(f"FAILED   {exc}")
            failures += 1
            continue
        out(f"OK       {collector.name}: subscription {status.name!r} is "
            f"{status.status or 'of unknown status'} with {len(status.sources)} source(s)")
        if not status.sources:
            out(f"WARNING  {collector.name}: no server has reached subscription "
                f"{status.name!r} yet (docs/collectors.md: the Group Policy setting)")
        origin_of = Origins(config.servers, collector.unconfigured_origins)
        for source in status.sources:
            origin = origin_of(source.computer)
            configured = origin is not None and any(s.name == origin for s in config.servers)
            taken = (f"-> {origin}" if configured else f"-> {origin} (not a configured server: "
                     "taken under its own name)" if origin else
                     "(not a configured server: ignored, unconfigured_origins = 'ignore')")
            heard = source.last_heartbeat
            age = (f"last heartbeat {int((now - heard).total_seconds() // 60)} min ago"
                   if heard else "no heartbeat yet")
            late = heard is None or (now - heard).total_seconds() > collector.heartbeat_timeout
            word = "WARNING" if late and origin else "OK"
            out(f"{word:<8} {collector.name}: {source.computer} {taken}; {source.status}, {age}")
    return failures


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


#: The script that grants what SubmitWatch needs on a server, and its protocol log step.
GRANT_SCRIPT = "contrib/windows/Grant-SubmitWatchAccess.ps1"
PROTOCOL_LOG_SECTION = f"{SETUP_DOC}, The SMTP Receive protocol log folders"
#: `check`'s read of a protocol log folder: this hour's file(s), at most 64 KiB and 5 seconds.
CHECK_READ_BYTES = 64 * 1024
CHECK_READ_SECONDS = 5.0
#: By transport service ("role" in bot.exchange.protocollog): the config key that overrides its
#: folder, the Grant script's parameter that does the same, and where Exchange says the folder.
_FOLDER_KEYS = {"FrontEnd": ("frontend_protocol_log", "-FrontEndProtocolLogPath",
                             "Get-FrontendTransportService"),
                "Hub": ("hub_protocol_log", "-HubProtocolLogPath", "Get-TransportService")}


#: How bot.exchange.protocollog words a folder it could not list (the reason follows).
_FOLDER_REFUSED = "the protocol log folder could not be read: "
#: The read script's own words when the machine has no ExchangeInstallPath, and PowerShell's
#: (English) words for a path that does not exist. On a server in another language that text
#: differs: the folder is then FAILED as unreadable, and the FIX line names the config key too.
_NOT_THERE = ("ExchangeInstallPath is not set", "because it does not exist")


def _not_there(reason: str) -> bool:
    return any(words in reason for words in _NOT_THERE)


def protocol_log_roles(server: ServerConfig) -> tuple[str, ...]:
    """The transport services whose SMTP Receive protocol log the device look-up may read on
    this server: it reads the log of the service that logged an event (FrontEnd for
    MSExchangeFrontEndTransport, Hub for MSExchangeTransport). An Edge Transport server and
    Exchange 2007/2010 have no Front End Transport service, so only Hub there."""
    if server.role == "Edge" or server.version in ("2007", "2010"):
        return ("Hub",)
    return tuple(LOG_SUBFOLDERS)


def protocol_log_lines(shell, server: ServerConfig, config: Config,
                       now: datetime) -> list[tuple[str, str]]:
    """(status, text) lines: can the account read each protocol log folder of the server?

    Over the open shell it runs the device look-up's own read-only read (bot.exchange.
    protocollog) for this hour's files only, bounded to CHECK_READ_BYTES and CHECK_READ_SECONDS.
    A folder or file it may not read is FAILED, followed by one FIX line naming the Grant
    script's step; a read whose answer cannot be understood is FAILED too. A folder that is not
    there (or no ExchangeInstallPath to find it under) is a WARNING naming the config key: no
    grant fixes that. Never raises: the server's answer is untrusted and a bad one must not hide
    the rest of the report."""
    lines: list[tuple[str, str]] = []
    denied: list[str] = []
    for role in protocol_log_roles(server):
        try:
            found, refused = _check_protocol_log(shell, server, config, role, now)
        except Exception as exc:  # a bug still gets a line, not a traceback
            found, refused = [("FAILED", f"{server.name}: the {role} protocol log check failed "
                               f"unexpectedly: {type(exc).__name__}: {inert(str(exc))}")], False
        lines += found
        if refused:
            denied.append(role)
    if denied:
        lines.append(("FIX", _protocol_log_fix(server, denied)))
    return lines


def _folder_words(server: ServerConfig, role: str) -> str:
    folder = getattr(server, _FOLDER_KEYS[role][0])
    if folder:
        return inert(folder)
    return f"the default, %ExchangeInstallPath%{LOG_SUBFOLDERS[role]}"


def _check_protocol_log(shell, server: ServerConfig, config: Config, role: str,
                        now: datetime) -> tuple[list[tuple[str, str]], bool]:
    """The lines for one folder, and whether it was refused (the FIX line is wanted)."""
    key = _FOLDER_KEYS[role][0]
    folder = getattr(server, key)
    what = (f"{server.name}: the {role} SMTP Receive protocol log folder "
            f"({_folder_words(server, role)})")
    request = ReadRequest(
        hours=(now,), folder=folder, role=role, max_bytes=CHECK_READ_BYTES,
        max_seconds=CHECK_READ_SECONDS,
        max_output=max(MIN_MAX_OUTPUT, min(DEFAULT_MAX_OUTPUT, config.polling.max_output)))
    try:
        command, args = read_command(request)
    except ValueError as exc:   # UnsafeValueError: a folder no PowerShell literal may hold
        return [("FAILED", f"{what}: {inert(str(exc))}: correct servers.{key}")], False
    try:
        output, cut = shell.run(command, args)
    except SourceError as exc:
        return [("FAILED", f"{what}: the read-only read did not run: {inert(str(exc))}")], False
    read = parse_read_output(output, server.name)
    reasons = [p.detail.removeprefix(_FOLDER_REFUSED).rstrip(". ")
               for p in read.problems if p.kind == "log_unreadable"]
    if read.stopped == "error" and reasons and _not_there(reasons[0]):
        # Not an access problem, and no grant can fix it: the folder is not where it is looked
        # for. Said, without failing `check`: nothing is read there, so nothing is exposed.
        cmdlet = _FOLDER_KEYS[role][2]
        return [("WARNING", f"{what} was not found ({reasons[0]}), so the device look-up "
                            f"cannot name the clients behind this server's {role} events. If "
                            "Exchange writes this log elsewhere, the Exchange Management Shell "
                            f"shows where (`{cmdlet} {server.name} | Format-List "
                            f"ReceiveProtocolLogPath`): set servers.{key} to that folder")], False
    if reasons:
        shown = "; ".join(reasons[:3]) + (f" (and {len(reasons) - 3} more)"
                                          if len(reasons) > 3 else "")
        return [("FAILED", f"{what} cannot be read: {shown}. The device look-up cannot "
                           f"name the clients behind this server's {role} events")], True
    if read.stopped == "cut" and not read.files:
        said = "; ".join(p.detail + (f": {p.excerpt}" if p.excerpt else "")
                         for p in read.problems[:2])
        return [("FAILED", f"{what}: the read's answer was not what the read writes "
                           f"({cut or said}); the device look-up would fail alike")], False
    if read.files:
        done = (f"listed it and read this hour's {len(read.files)} file(s) "
                f"({read.bytes_read:,} bytes)")
    else:
        done = "listed it (no file for this hour yet, so no file was opened)"
    lines = [("OK", f"{server.name}: can read the {role} SMTP Receive protocol log folder "
                    f"({_folder_words(server, role)}): {done}")]
    for problem in read.problems[:3]:   # what the lines themselves said, if anything
        lines.append(("WARNING", f"{server.name}: {problem.detail}"
                                 + (f": {problem.excerpt}" if problem.excerpt else "")))
    return lines, False


def _protocol_log_fix(server: ServerConfig, roles: list[str]) -> str:
    """The FIX line: the Grant script's protocol log step, with this server's folders."""
    try:
        account = ps_quote(server.username or "", "account")
    except ValueError:
        account = "'<the SubmitWatch account>'"
    paths = []
    for role in roles:
        key, parameter, _cmdlet = _FOLDER_KEYS[role]
        folder = getattr(server, key)
        if folder:
            try:
                paths.append(f" {parameter} {ps_quote(folder, 'protocol log folder')}")
            except ValueError:
                pass
    return (f"{server.name}: on {server.name}, in an elevated Windows PowerShell, run "
            f"`.\\Grant-SubmitWatchAccess.ps1 -Account {account} -ProtocolLogs{''.join(paths)}` "
            f"({GRANT_SCRIPT}; -WhatIf shows what it would do). It grants the account Read and "
            "Execute on the protocol log folders and their files, nothing else "
            f"({PROTOCOL_LOG_SECTION}). If Exchange writes the log to another folder, set "
            f"{' and '.join(f'servers.{_FOLDER_KEYS[role][0]}' for role in roles)} to it")


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


def given_up_lines(config: Config, now: datetime) -> list[str]:
    """Slack messages held back or given up, as `status` lists them: errors a person must fix,
    and messages Slack refused as they were (too long, invalid), which are not retried."""
    from pathlib import Path

    from store import db as store
    if not Path(config.store.path).exists():
        return []
    try:
        problems = store.delivery_problems(store.open_db(config.store.path, migrate=False), now)
    except Exception:  # an old or locked database: a hint, not a check
        return []
    lines = []
    for p in problems:
        since = store.iso(p["since"]) if p["since"] else "?"
        if p.get("refused"):
            lines.append(f"Slack refused {p['refused']} message(s) ({inert(p['code'] or '?')}) "
                         f"and SubmitWatch gave them up since {since}; they are not retried "
                         f"(please report it): {inert(p['error'] or '')}")
        else:
            state = (f"{p['given_up']} given up" if p["given_up"] else "retrying")
            lines.append(f"{p['messages']} Slack message(s) held back since {since} ({state}): "
                         f"{inert(p['error'] or '')}")
    return lines


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


#: Seconds `check` waits for each answer of Slack.
CHECK_TIMEOUT = 10
#: What the bot token needs, and what for (`check` compares it with the token's scopes).
NEEDED_SCOPES = {
    "chat:write": "post alerts, update them, reply in their threads",
    "commands": "the /submitwatch slash command",
    "channels:history": "find its own post after a crash before sending it again",
}
#: What a private alerts channel needs besides (Slack asks for groups:* there, not channels:*).
#: `check` cannot tell a private channel by its ID; Slack's missing_scope answer for the channel
#: says it, so a token without these is a warning, and a failure for a channel that needs them.
PRIVATE_CHANNEL_SCOPES = {
    "groups:history": "the same look-up when the alerts channel is private",
}


def _check_slack(config: Config, bot_token: Secret, out) -> int:
    client = make_client(config.slack.api_url, bot_token.reveal(), timeout=CHECK_TIMEOUT,
                         retries=1)
    try:
        response = client.auth_test()
    except Exception as exc:  # SlackApiError or a network error: say it in words
        out(f"FAILED   Slack at {config.slack.api_url}: "
            f"{_slack_error(exc, config.slack.channel, client)}")
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
    held = [scope for scope in PRIVATE_CHANNEL_SCOPES if scope in scopes]
    out("OK       the bot token has the scopes this configuration uses "
        f"({', '.join([*needed, *held])})")
    lacking = [f"{scope} ({why})" for scope, why in PRIVATE_CHANNEL_SCOPES.items()
               if scope not in scopes]
    if lacking:
        out("WARNING  the bot token lacks " + "; ".join(lacking) + ": enough while every "
            "alerts channel is public, but a private one needs it: add it and reinstall the app "
            "(manifest.yml, or `submitwatch manifest`, has it)")
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
        needed = _needed_scope(exc)
        if needed in PRIVATE_CHANNEL_SCOPES:   # Slack asks for groups:history: it is private
            out(f"FAILED   channel {channel} is private, and the bot token lacks {needed} "
                f"({PRIVATE_CHANNEL_SCOPES[needed]}): add it and reinstall the app "
                "(manifest.yml, or `submitwatch manifest`, has it)")
        elif needed:
            out(f"FAILED   channel {channel}: the bot token lacks {inert(needed)}: add it and "
                "reinstall the app (manifest.yml, or `submitwatch manifest`, has it)")
        else:
            out(f"FAILED   channel {channel}: {_slack_error(exc, channel, client)}")
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
            out(f"FAILED   user group {group}: "
                f"{hint or _slack_error(exc, config.slack.channel, client)}; nobody in it {role}")
            problems += 1
    return problems


def _check_app_token(config: Config, app_token: Secret, out) -> int:
    """Socket Mode: the app-level token may open a connection (apps.connections.open)."""
    client = make_client(config.slack.api_url, None, timeout=CHECK_TIMEOUT, retries=1)
    try:
        client.apps_connections_open(app_token=app_token.reveal())
    except Exception as exc:
        code = _code(exc)
        hint = {"invalid_auth": "Slack rejected SLACK_APP_TOKEN: check it (xapp-...)",
                "not_allowed_token_type": "SLACK_APP_TOKEN holds a bot token: it needs the "
                                          "app-level token (xapp-...) with connections:write",
                "missing_scope": "SLACK_APP_TOKEN lacks connections:write: create an app-level "
                                 "token with that scope"}.get(code or "")
        out(f"FAILED   Socket Mode: {hint or _slack_error(exc, config.slack.channel, client)}")
        return 1
    out("OK       Socket Mode: the app token opens a connection")
    return 0


def _slack_error(exc: Exception, channel: str, client: WebClient) -> str:
    """In words: Slack's error code and its fix, an HTTP answer that is not Slack's API, or why
    Slack could not be reached (bot.slack.sender.unreachable_words), never a raw exception."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    if isinstance(exc, SlackApiError) and status != 200:
        return _http_words(status, client)
    code = _code(exc)
    fix = FIXES.get(code or "", "").format(channel=channel)
    if fix:
        return fix
    if code and code.startswith(_NOT_JSON):   # slack_sdk's words, with the page it got
        return ("the answer was not JSON, so not Slack's API (a proxy's or a captive portal's "
                "page?): is slack.api_url https://slack.com/api/?")
    if code:
        return inert(code)
    if isinstance(exc, OSError):
        return unreachable_words(exc, client)
    return f"unexpected {type(exc).__name__}: {inert(str(exc))}"


#: How slack_sdk words an answer that is not JSON (its error code then holds the page).
_NOT_JSON = "Received a response in a non-JSON format"


def _http_words(status: int | None, client: WebClient) -> str:
    """An HTTP error status instead of an API answer (slack_sdk has retried a 429 or 5xx)."""
    try:
        phrase = f"HTTP {status} ({HTTPStatus(status or 0).phrase})"
    except ValueError:
        phrase = f"HTTP {status}"
    if client.proxy:   # the proxy answers before Slack is reached
        return (f"{phrase} through the proxy slack_sdk uses (HTTPS_PROXY or HTTP_PROXY): the "
                "proxy refused, or Slack answered so")
    if status == 429:
        return f"{phrase}: Slack is rate-limiting this app; run `check` again in a minute"
    if status and status >= 500:
        return f"{phrase}: trouble on Slack's side (see status.slack.com) or on a proxy between"
    return f"{phrase}, not an answer of Slack's API: is slack.api_url https://slack.com/api/?"


def _needed_scope(exc: Exception) -> str | None:
    """The scope a missing_scope answer says is needed (Slack sends `needed`)."""
    if _code(exc) != "missing_scope":
        return None
    needed = getattr(exc, "response", {}).get("needed")
    return needed if isinstance(needed, str) and needed else None


def check_otlp(config: Config, out, timeout: float = CHECK_TIMEOUT) -> int:
    """The [otlp] receiver: off, or its TLS files load, who may send, whether its address can
    be bound (or is held already: by a running SubmitWatch, which is fine, or by another
    program), and which servers it takes events for. Returns the failures."""
    from bot.core.config import ConfigError

    otlp = config.otlp
    if otlp.port is None:
        out("OK       OTLP receiver: off (otlp.port is not set)")
        return 0
    failures = 0
    scheme = "https" if otlp.tls_cert else "http"
    name = f"OTLP receiver {scheme}://{otlp.host}:{otlp.port}/v1/logs"
    try:
        tls = otlp.tls_context()
    except ConfigError as exc:
        out(f"FAILED   {name}: {exc}")
        failures += 1
        tls = None
    if tls is not None:
        for status, text in _certificate_lines(otlp):
            failures += status == "FAILED"
            out(f"{status:<8} {name}: {text}")
    elif otlp.tls_cert is None and otlp.host not in ("127.0.0.1", "::1", "localhost"):
        out(f"WARNING  {name}: plain HTTP on {otlp.host}: the token and the events cross the "
            "network in clear; set otlp.tls_cert and otlp.tls_key (docs/otlp.md)")
    # Who may send.
    needs = []
    if otlp.client_ca is not None:
        needs.append(f"a client certificate issued by the CA in {otlp.client_ca} (mutual TLS)")
    if otlp.token_env:
        needs.append(f"the bearer token in {otlp.token_env}")
    if otlp.token_env and otlp.token is None:
        out(f"FAILED   {name}: {otlp.token_env} is not set: senders cannot be authenticated")
        out(f"FIX      set {otlp.token_env} (or {otlp.token_env}_FILE) in the service's "
            "environment to the token the Collector's exporter sends")
        failures += 1
    elif needs:
        out(f"OK       {name}: senders need " + " and ".join(needs))
    # The address.
    failures += _otlp_bind_line(config, name, tls, timeout, out)
    # The origins.
    shown = [s.name for s in config.servers[:10]]
    more = f" and {len(config.servers) - 10} more" if len(config.servers) > 10 else ""
    if otlp.unconfigured_origins == "own_name":
        other = ("events from any other computer are taken under its own short name "
                 "(otlp.unconfigured_origins = 'own_name')")
    else:
        other = ("events from any other computer are dropped, counted on /metrics and "
                 "reported to the sender as rejected (otlp.unconfigured_origins = 'ignore')")
    if config.servers:
        out(f"OK       {name}: takes events of {len(config.servers)} configured server(s), "
            f"{', '.join(shown)}{more} (by full name, short name or URL host); {other}")
    elif otlp.unconfigured_origins == "own_name":
        out(f"OK       {name}: no [[servers]] configured: every event is taken under its "
            "computer's short name")
    else:
        out(f"WARNING  {name}: no [[servers]] configured and otlp.unconfigured_origins = "
            "'ignore': every event will be dropped; add the servers, or set it to 'own_name'")
    return failures


def _certificate_lines(otlp) -> list[tuple[str, str]]:
    """The receiver's certificate: whom it names and until when it is valid."""
    from datetime import timedelta

    from cryptography import x509

    try:
        cert = x509.load_pem_x509_certificate(open(otlp.tls_cert, "rb").read())
    except (OSError, ValueError) as exc:   # tls_context() read it: this is unlikely
        return [("WARNING", f"the certificate in {otlp.tls_cert} cannot be shown ({exc})")]
    subject = cert.subject.rfc4514_string() or "(no subject)"
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        alt = ", ".join(str(getattr(n, "value", n)) for n in names)
    except x509.ExtensionNotFound:
        alt = "none"
    until = cert.not_valid_after_utc
    now = datetime.now(UTC)
    lines = []
    if until <= now:
        lines.append(("FAILED", f"the certificate in {otlp.tls_cert} ({subject}) expired on "
                                f"{until:%Y-%m-%d}: Collectors refuse it; renew it and restart"))
    else:
        word = "WARNING" if until - now < timedelta(days=30) else "OK"
        lines.append((word, f"TLS loads: certificate {subject} (names: {alt}) valid until "
                            f"{until:%Y-%m-%d}, key matches"))
    if otlp.client_ca is not None:
        lines.append(("OK", f"client certificates are checked against {otlp.client_ca}; a "
                            "sender without one is refused in the handshake"))
    return lines


def _otlp_bind_line(config: Config, name: str, tls, timeout: float, out) -> int:
    """Can `run` open the receiver's address? If it is held, is it SubmitWatch's receiver
    (the running service: fine) or another program?"""
    import errno
    import socket

    otlp = config.otlp
    family = socket.AF_INET6 if ":" in otlp.host else socket.AF_INET
    probe = socket.socket(family, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)   # as the listener does
        probe.bind((otlp.host, otlp.port))
        out(f"OK       {name}: {otlp.host} port {otlp.port} is free; `run` will open it")
        return 0
    except OSError as exc:
        error = exc
    finally:
        probe.close()
    if error.errno != errno.EADDRINUSE:
        out(f"FAILED   {name}: {otlp.host} port {otlp.port} cannot be opened: "
            f"{error.strerror or error}")
        fix = ("a port below 1024 needs privileges: use 4318 (OTLP/HTTP's usual port)"
               if error.errno == errno.EACCES else
               f"{otlp.host} is not an address of this host: use 0.0.0.0, 127.0.0.1 or one of "
               "its addresses" if error.errno == errno.EADDRNOTAVAIL else
               "choose another otlp.host or otlp.port")
        out(f"FIX      {fix}")
        return 1
    host = "127.0.0.1" if otlp.host in ("0.0.0.0", "") else "::1" if otlp.host == "::" \
        else otlp.host
    ours = _is_our_receiver(host, otlp, tls, timeout)
    if ours:
        out(f"OK       {name}: port {otlp.port} is in use by a SubmitWatch receiver ({ours}): "
            "the running service, most likely; fine")
        return 0
    out(f"FAILED   {name}: port {otlp.port} on {otlp.host} is in use by another program "
        "(it does not answer as SubmitWatch's receiver): `run` cannot open it")
    out(f"FIX      stop that program (`ss -ltnp 'sport = :{otlp.port}'` names it) or choose "
        "another otlp.port")
    return 1


def _is_our_receiver(host: str, otlp, tls, timeout: float) -> str | None:
    """How the listener on the port shows it is SubmitWatch's receiver, or None: under TLS
    it presents the configured certificate (seen before any client certificate is asked
    for), over HTTP it answers GET /v1/logs with the receiver's 405."""
    import http.client as client
    import socket
    import ssl
    if otlp.tls_cert is not None:
        if tls is None:
            return None
        from cryptography import x509
        from cryptography.hazmat.primitives.serialization import Encoding
        try:
            mine = x509.load_pem_x509_certificate(open(otlp.tls_cert, "rb").read())
        except (OSError, ValueError):
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # compared below
        try:
            with socket.create_connection((host, otlp.port), timeout=timeout) as raw, \
                    context.wrap_socket(raw) as conn:
                presented = conn.getpeercert(binary_form=True)
        except (OSError, ValueError):
            return None
        return ("it presents the configured certificate"
                if presented == mine.public_bytes(Encoding.DER) else None)
    connection = client.HTTPConnection(host, otlp.port, timeout=timeout)
    try:
        connection.request("GET", "/v1/logs")
        answer = connection.getresponse()
        body = answer.read(200)
    except (OSError, client.HTTPException):
        return None
    finally:
        connection.close()
    if answer.status == 405 and answer.getheader("Allow") == "POST" and b"use POST" in body:
        return "it answers GET /v1/logs as the receiver does"
    return None
