"""Block Kit for alerts and thread notes: the one place event-derived text meets Slack.

Rules, in one place:
- every untrusted value in mrkdwn goes through `escape` (after `clip`, so an entity is never cut);
- PowerShell commands go into `rich_text_preformatted` blocks, whose text Slack shows literally:
  no mrkdwn, no mentions, no way for a backtick in an account name to end a code span;
- header text is plain_text, which Slack never parses for mentions or links;
- a plain `text` fallback is always sent (notifications and screen readers use it).
Pure: no I/O, no clock (`now` comes in).
"""
from __future__ import annotations

import re
from datetime import datetime
from typing import Iterable, Mapping

from .config import ServerConfig
from .model import Incident, Snooze
from .remediation import Fix, UnsafeValueError, fix_for

HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
NAME_LIMIT = 200            # how much of an untrusted name is shown in prose
MAX_FIXES = 3               # commands per alert; `/submitwatch fix` gives the rest

# The buttons on an alert; handlers.actions listens for these action_ids.
ACTION_ACK = "submitwatch_ack"
ACTION_UNACK = "submitwatch_unack"
ACTION_SNOOZE = "submitwatch_snooze"        # a static_select; option values are seconds
ACTION_UNSNOOZE = "submitwatch_unsnooze"
ACTION_SHOW_FIX = "submitwatch_show_fix"
ACTION_IDS = (ACTION_ACK, ACTION_UNACK, ACTION_SNOOZE, ACTION_UNSNOOZE, ACTION_SHOW_FIX)
SNOOZE_CHOICES = (("1 hour", 3600), ("4 hours", 4 * 3600), ("24 hours", 24 * 3600),
                  ("7 days", 7 * 24 * 3600))

EXPLANATION = ("authenticated over SMTP with *valid credentials* but is not allowed to submit "
               "mail: it lacks the `ms-Exch-SMTP-Submit` extended right on the Receive connector "
               "it connects to, so Exchange refuses its mail (events 1018/1020).")
USER_ACTION = ("*What to do:* if this account should send mail (a scanner, an application, a "
               "service), grant it `ms-Exch-SMTP-Submit` on that connector, for this one account "
               "rather than a whole permission group. If it should not, find who uses it: "
               "the credentials work. Run in the Exchange Management Shell:")


def escape(text: str) -> str:
    """Make untrusted text inert in mrkdwn: no pings, no links, no fake entities."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def cut(mrkdwn: str, limit: int) -> str:
    """Shorten mrkdwn that is already escaped without splitting an &entity; or a <token>."""
    if len(mrkdwn) <= limit:
        return mrkdwn
    text = mrkdwn[: limit - 1]
    amp = text.rfind("&")
    if amp != -1 and ";" not in text[amp:]:
        text = text[:amp]
    lt = text.rfind("<")
    if lt != -1 and ">" not in text[lt:]:
        text = text[:lt]
    return text + "…"


def show(text: str, limit: int = NAME_LIMIT) -> str:
    """An untrusted value for mrkdwn: shortened, escaped, control characters made visible.

    A backtick becomes U+02CB (ˋ), which looks the same but cannot open or close a code span in
    our own text; the commands, in rich text, keep the exact name.
    """
    visible = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text)
    return escape(clip(visible, limit).replace("`", "\u02cb"))


def slack_date(moment: datetime) -> str:
    """Shown in each reader's own time zone, with a UTC fallback."""
    fallback = moment.strftime("%Y-%m-%d %H:%M UTC")
    return f"<!date^{int(moment.timestamp())}^{{date_short_pretty}} {{time}}|{fallback}>"


def fixes_for(incident: Incident, servers: Mapping[str, ServerConfig]) -> tuple[list[Fix], str | None]:
    """The commands for an incident: one per named connector, else one guess per server.

    Returns (fixes, refusal): refusal explains why no command could be built safely.
    """
    fixes: list[Fix] = []
    try:
        hosts_with_connector = set()
        for connector in incident.connectors:
            host = connector.split("\\", 1)[0]
            hosts_with_connector.add(host.casefold())
            fixes.append(fix_for(incident.account, host, connector=connector))
        for name, host in incident.servers:
            if host.casefold() in hosts_with_connector:
                continue
            cfg = servers.get(name)
            fixes.append(fix_for(incident.account, host,
                                 configured_connector=cfg.submission_connector if cfg else None,
                                 version=cfg.version if cfg else None))
    except UnsafeValueError as exc:
        return [], str(exc)
    return fixes, None


def user(user_id: str | None) -> str:
    """A Slack user ID as a mention; anything that is not an ID is shown as text."""
    if user_id and re.fullmatch(r"[UW][A-Z0-9]{2,20}", user_id):
        return f"<@{user_id}>"
    return show(user_id or "someone", 40)


def utc_time(moment: datetime) -> str:
    """'14:02 UTC on 27 Nov': plain text, the same for every reader and in the audit."""
    return f"{moment:%H:%M} UTC on {moment.day} {moment:%b}"


def chat_state(incident: Incident, snoozes: Iterable[Snooze] = ()) -> list[str]:
    """Who owns the incident and what silences it, one mrkdwn line each."""
    lines = []
    if incident.acked_by:
        line = f":eyes: Acknowledged by {user(incident.acked_by)}"
        if incident.acked_at:
            line += f" at {utc_time(incident.acked_at)}"
        if incident.ack_note:
            line += f": {show(incident.ack_note, 300)}"
        lines.append(line)
    for snooze in snoozes:
        what = "this account" if snooze.kind == "account" else "this incident"
        lines.append(f":zzz: Snoozed ({what}) by {user(snooze.created_by)} until "
                     f"{slack_date(snooze.until)}: {show(snooze.reason, 300)}. Events are still "
                     "counted; no thread notes until then.")
    return lines


def alert(incident: Incident, servers: Mapping[str, ServerConfig],
          snoozes: Iterable[Snooze] = ()) -> tuple[str, list[dict]]:
    """The living alert message for an incident: (fallback text, blocks)."""
    account = show(incident.account)
    resolved = incident.status == "resolved"
    snoozes = list(snoozes) if not resolved else []
    title = ("Resolved: " if resolved else "SMTP submit denied: ") + incident.account
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                    "text": clip(_printable(title), HEADER_LIMIT)}},
        *[_context(line) for line in chat_state(incident, snoozes)],
        _section(f"*{account}* {EXPLANATION}" if not resolved else
                 f"No new event for *{account}* since {slack_date(incident.last_seen)}; "
                 f"resolved {slack_date(incident.resolved_at or incident.last_seen)}. "
                 "A new event opens a new alert."),
        {"type": "section", "fields": _facts(incident)},
    ]
    if not resolved:
        fixes, refusal = fixes_for(incident, servers)
        if refusal:
            blocks.append(_section(f"*No command is shown:* {escape(refusal)}"))
        else:
            blocks.append(_section(USER_ACTION))
            blocks.extend(_fix_blocks(fixes[:MAX_FIXES]))
            if len(fixes) > MAX_FIXES:
                blocks.append(_context(f"{len(fixes) - MAX_FIXES} more connector(s) not shown: "
                                       "each needs the same grant with its own -Identity."))
    if not resolved:
        blocks.append(_buttons(incident, snoozed=bool(snoozes)))
    blocks.append(_context(f"SubmitWatch · incident #{incident.id} · events "
                           f"{', '.join(str(i) for i in incident.event_ids)}"))
    servers_text = ", ".join(show(n, 64) for n in incident.server_names)
    text = (f"{'Resolved' if resolved else 'SMTP submit denied'}: {account} on {servers_text} "
            f"({incident.event_count} event{'s' if incident.event_count != 1 else ''})")
    return text, blocks


def fix_message(incident: Incident, servers: Mapping[str, ServerConfig]) -> tuple[str, list[dict]]:
    """Every command for an incident (the alert shows at most MAX_FIXES), for "Show fix"."""
    fixes, refusal = fixes_for(incident, servers)
    if refusal:
        text = f"No command can be built safely for *{show(incident.account)}*: {escape(refusal)}"
        return text, [_section(text)]
    text = f"The fix for *{show(incident.account)}* (incident #{incident.id}):"
    blocks = [_section(f"{text} {USER_ACTION[len('*What to do:* '):]}")]
    blocks.extend(_fix_blocks(fixes[:20]))
    if len(fixes) > 20:
        blocks.append(_context(f"{len(fixes) - 20} more connector(s): `/submitwatch fix` with "
                               "the account and connector gives each."))
    return text, blocks


def thread_note(incident: Incident, detail: Mapping[str, list[str]],
                servers: Mapping[str, ServerConfig]) -> tuple[str, list[dict]]:
    """A thread reply when the incident spreads to a new server or connector."""
    parts = []
    if detail.get("servers"):
        parts.append("now also seen on " + ", ".join(f"*{show(s, 64)}*" for s in detail["servers"]))
    if detail.get("connectors"):
        parts.append("connector named by event 1018: " +
                     ", ".join(f"*{show(c)}*" for c in detail["connectors"]))
    text = f"{show(incident.account)}: " + "; ".join(parts)
    blocks = [_section(text)]
    fixes, refusal = fixes_for(incident, servers)
    new_connectors = set(detail.get("connectors", []))
    new_hosts = {host.casefold() for name, host in incident.servers
                 if name in detail.get("servers", [])}
    relevant = [f for f in fixes
                if f.connector in new_connectors or f.server.casefold() in new_hosts]
    if refusal is None and relevant:
        blocks.extend(_fix_blocks(relevant[:MAX_FIXES]))
    return text, blocks


def action_note(incident: Incident, detail: Mapping) -> tuple[str, list[dict]]:
    """A thread reply recording what a responder (or a snooze's end) did to the incident."""
    action = detail["action"]
    at = datetime.fromisoformat(detail["at"].replace("Z", "+00:00"))
    by = user(detail.get("by"))
    if action == "ack":
        text = f"Acknowledged by {by} at {utc_time(at)}"
        if detail.get("took_over_from"):
            text += f", taking over from {user(detail['took_over_from'])}"
        if detail.get("note"):
            text += f": {show(detail['note'], 300)}"
    elif action == "unack":
        text = (f"{by} removed the acknowledgement of {user(detail.get('was'))} at "
                f"{utc_time(at)}")
    elif action == "snooze":
        until = datetime.fromisoformat(detail["until"].replace("Z", "+00:00"))
        what = "every incident of this account" if detail.get("scope") == "account" else \
            "this incident"
        text = (f"{by} snoozed {what} until {slack_date(until)}: "
                f"{show(detail.get('reason') or '', 300)}")
    elif action == "unsnooze":
        text = f"{by} ended the snooze at {utc_time(at)}; the alert is live again"
    elif action == "snooze_expired":
        text = f"The snooze ended at {utc_time(at)}; the alert is live again"
    else:
        raise ValueError(f"unknown action note {action!r}")
    text = f"{text}. ({show(incident.account)}: {incident.event_count} event(s) so far)"
    return text, [_section(text)]


def server_down(server: str, detail: Mapping, *, recovered: bool = False) -> tuple[str, list[dict]]:
    """The one alert for a server SubmitWatch cannot poll: silence from it means nothing now."""
    name = show(server, 64)
    since = datetime.fromisoformat(detail["since"].replace("Z", "+00:00"))
    if recovered:
        text = (f":white_check_mark: *{name}* is watched again (it could not be polled from "
                f"{slack_date(since)}; see the thread).")
        return text, [_section(text)]
    text = (f":rotating_light: *{name} is not being watched*: {detail['failures']} polls in a "
            f"row failed, so 1018/1020 events there go unnoticed. Last good poll: "
            f"{slack_date(since)}.")
    return text, [
        {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                    "text": clip(f"Not being watched: {_printable(server)}",
                                                 HEADER_LIMIT)}},
        _section(text),
        _section(f"*Last error:* {show(detail['error'], 1500)}"),
        _context("Events are not lost while the server keeps them: the next good poll reads "
                 "from where SubmitWatch stopped. `/submitwatch status` shows every server."),
    ]


def server_up(server: str, detail: Mapping) -> tuple[str, list[dict]]:
    since = datetime.fromisoformat(detail["since"].replace("Z", "+00:00"))
    at = datetime.fromisoformat(detail["at"].replace("Z", "+00:00"))
    text = (f"*{show(server, 64)}* polls again since {utc_time(at)} (down since "
            f"{utc_time(since)}); events from that time are being read now.")
    return text, [_section(text)]


def _buttons(incident: Incident, *, snoozed: bool) -> dict:
    value = str(incident.id)
    if incident.acked_by:
        ack = _button("Unacknowledge", ACTION_UNACK, value)
    else:
        ack = _button("Acknowledge", ACTION_ACK, value, style="primary")
    if snoozed:
        quiet = _button("Unsnooze", ACTION_UNSNOOZE, value)
    else:
        options = [{"text": {"type": "plain_text", "text": label},
                    "value": f"{incident.id}:{seconds}"} for label, seconds in SNOOZE_CHOICES]
        quiet = {"type": "static_select", "action_id": ACTION_SNOOZE, "options": options,
                 "placeholder": {"type": "plain_text", "text": "Snooze"}}
    return {"type": "actions", "block_id": f"incident-{incident.id}",
            "elements": [ack, quiet, _button("Show fix", ACTION_SHOW_FIX, value)]}


def _button(label: str, action_id: str, value: str, style: str | None = None) -> dict:
    button = {"type": "button", "action_id": action_id, "value": value,
              "text": {"type": "plain_text", "text": label}}
    if style:
        button["style"] = style
    return button


def _facts(incident: Incident) -> list[dict]:
    if incident.connectors:
        connectors = ", ".join(show(c, 120) for c in incident.connectors[:5])
        if len(incident.connectors) > 5:
            connectors += f" and {len(incident.connectors) - 5} more"
    else:
        connectors = "not named (event 1020 only)"
    fields = [
        f"*Servers*\n{', '.join(show(n, 64) for n in incident.server_names[:10])}",
        f"*Connectors*\n{connectors}",
        f"*Events*\n{incident.event_count}",
        f"*First / last seen*\n{slack_date(incident.first_seen)} / {slack_date(incident.last_seen)}",
    ]
    return [{"type": "mrkdwn", "text": cut(f, FIELD_LIMIT)} for f in fields]


def _fix_blocks(fixes: list[Fix]) -> list[dict]:
    blocks = []
    for fix in fixes:
        where = {"event": "named by the event",
                 "configured": "configured as this server's submission connector",
                 "guess": "not named by any event: the usual client submission connector, a "
                          "guess; list them to be sure"}[fix.connector_source]
        blocks.append(_context(f"Connector *{show(fix.connector)}* ({where})"))
        lines = ["# grant", fix.grant, "# verify (a Deny entry wins over a grant)", fix.verify,
                 "# undo", fix.undo]
        if fix.connector_source != "event":
            lines += ["# list this server's Receive connectors", fix.list_connectors]
        blocks.append(_preformatted("\n".join(lines)))
    return blocks


def _preformatted(text: str) -> dict:
    return {"type": "rich_text", "elements": [
        {"type": "rich_text_preformatted", "elements": [{"type": "text", "text": text}]}]}


def _section(text: str) -> dict:
    return {"type": "section", "text": {"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}}


def _context(text: str) -> dict:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": cut(text, SECTION_LIMIT)}]}


def _printable(text: str) -> str:
    return "".join(ch if ch.isprintable() else "?" for ch in text)
