"""The slash command's look-ups in a terminal: `submitwatch history|show|status|summary|verify|
routes|fix`.

One view, two renderings. The answer is the slash command's own: the same subcommand function
(handlers.lookups, handlers.verify) runs on a Request built from the configuration and a
read-only database, so the arguments and the content are the same by construction. Its Block
Kit is then rendered as plain text (`render`), or, with `--json`, the data the view was built
from is emitted in the documented shape below (`JSON_VERSION`); the "Terminal" section of
docs/commands.md documents it.

    {"version": 1, "command": "history", "arguments": [...], "generated_at": "...Z",
     "text": "<the plain-text answer>", "data": {...one shape per command...}}
    {"version": 1, "command": ..., "arguments": [...], "generated_at": ..., "error": "...",
     "usage": "submitwatch ..."}                        (a question it could not answer)

Terminal output is inert: every line passes through bot.core.inert (the logs' rule), so a name
from an event cannot move the cursor, change colours or forge a line; the data's own line
breaks were already made visible by the view (bot.slack.richtext.visible). JSON is written
with ensure_ascii, so every non-ASCII and control character is a \\u escape there.

Nothing here writes: the database is opened with store.db.open_read_only.
"""
from __future__ import annotations

import html
import json
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, is_dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from bot.core.config import Config
from bot.core.findings import Finding
from bot.core.inert import inert
from bot.core.model import Incident, incident_key
from bot.engine.summary import unwatched
from bot.slack import replies
from bot.slack.richtext import text_of
from store import db as store
from store import devices as device_store
from store import fixes, queries

from . import commands, lookups, verify
from .common import (
    CommandError,
    Reply,
    Request,
    duration,
    looks_like_incident,
    positive_int,
    take_options,
)

#: The JSON shape's version: raised when a key is renamed or removed (adding one keeps it).
JSON_VERSION = 1
#: The subcommands a terminal answers, in the order `--help` lists them.
COMMANDS = ("history", "show", "status", "summary", "verify", "routes", "fix")
#: Who asks, for the audit-free look-ups (nothing here acts, so nothing is audited).
TERMINAL_USER = "terminal"


def clock() -> datetime:
    """Now, for the look-ups' windows (a test sets its own)."""
    return datetime.now(UTC)


@dataclass
class Answer:
    command: str
    arguments: list[str]
    generated_at: datetime
    text: str = ""                            # the plain-text rendering, inert
    data: dict[str, Any] = field(default_factory=dict)
    error: str | None = None                  # a question it could not answer, in words

    @property
    def exit_code(self) -> int:
        return 1 if self.error else 0

    def usage(self) -> str:
        return "submitwatch " + commands.SUBCOMMANDS[self.command].usage.replace(
            "<#incident>", "<incident>")

    def json(self) -> str:
        out: dict[str, Any] = {"version": JSON_VERSION, "command": self.command,
                               "arguments": self.arguments,
                               "generated_at": _time(self.generated_at)}
        if self.error is not None:
            out.update(error=self.error, usage=self.usage())
        else:
            out.update(text=self.text, data=self.data)
        return json.dumps(out, indent=2, ensure_ascii=True)

    def terminal(self) -> str:
        if self.error is not None:
            return f"{self.error}\nusage: {inert(self.usage())}"
        return self.text


def ask(command: str, args: list[str], config: Config, db,
        now: datetime | None = None) -> Answer:
    """The answer to `submitwatch COMMAND ARGS...`, in both renderings."""
    if command not in COMMANDS:
        raise ValueError(f"{command!r} is not a terminal look-up")
    now = now or clock()
    req = Request(db=db, config=config, now=now, user_id=TERMINAL_USER)
    answer = Answer(command, list(args), now)
    try:
        reply, data = _DATA[command](req, list(args))
    except CommandError as exc:
        answer.error = plain_lines(mrkdwn_to_plain(str(exc)))
        return answer
    answer.text = render(reply)
    answer.data = data
    return answer


# --- each command: the reply (the slash command's own) and the data it was built from -----------

def _history(req: Request, args: list[str]) -> tuple[Reply, dict]:
    reply = lookups.history(req, args)      # checks the arguments; the same words parse below
    rest, options = take_options(args, {"--since": duration, "--limit": positive_int})
    since = options.get("--since", lookups.DEFAULT_SINCE)
    limit = options.get("--limit", lookups.DEFAULT_LIMIT)
    subject = lookups._subject(req, rest[0]) if rest else replies.Subject()
    key = incident_key(subject.name) if subject.kind == "account" else None
    start = req.now - timedelta(seconds=since)
    page = queries.history(req.db, since=start, until=req.now, limit=limit, account_key=key,
                           server=subject.name if subject.kind == "server" else None)
    older = None
    if key is not None and not page.incidents:
        older = next(iter(queries.incidents_of_account(req.db, key, 1)), None)
    return reply, {
        "subject": {"kind": subject.kind or "all", "name": subject.name or None},
        "since": _time(start), "until": _time(req.now), "limit": limit,
        "total": page.total, "open": page.open, "events": page.events,
        "events_per_day": [{"day": day, "events": n} for day, n in page.per_day],
        "incidents": [incident_data(i) for i in page.incidents],
        "older": incident_data(older) if older else None,
    }


def _show(req: Request, args: list[str]) -> tuple[Reply, dict]:
    reply = lookups.show_incident(req, args)
    incident = lookups._incident(req, args[0])
    detail = queries.incident_detail(req.db, incident, req.now)
    finding = fixes.finding(req.db, incident.stored_id) if req.config.directory else None
    devices = (device_store.lookup_of(req.db, incident.stored_id)
               if req.config.devices.enabled else None)
    return reply, {
        "incident": incident_data(incident),
        "event_groups": [{"server": g.server, "connector": g.connector,
                          "event_ids": list(g.event_ids), "events": g.count,
                          "first": _time(g.first), "last": _time(g.last)}
                         for g in detail.groups],
        "event_group_count": detail.group_count,
        "timeline": [{"at": _time(m.at), "what": m.what, "user": m.user, "detail": m.detail,
                      "until": _time(m.until)} for m in detail.timeline],
        "audit": [{"at": _time(row["at"]), "user": row.get("user_id"),
                   "action": row.get("action"), "outcome": row.get("outcome"),
                   "via": row.get("via"), "detail": row.get("detail")}
                  for row in detail.audit],
        "snoozed_until": _time(detail.snoozed_until),
        "finding": finding_data(finding),
        "devices": jsonable(devices),
    }


def _status(req: Request, args: list[str]) -> tuple[Reply, dict]:
    reply = lookups.status(req, args)
    late = lookups.late_after(req.config)
    servers = []
    for row in lookups.server_statuses(req.db, req.config, req.now):
        state = row.state
        kind = ("collector" if row.collector is not None else "server"
                if row.config is None or row.config.polled else "fed")
        servers.append({
            "name": row.name, "configured": row.config is not None, "kind": kind,
            "heartbeat": jsonable(row.heartbeat), "events": jsonable(row.events),
            "health": _EMOJI_CODE.sub("", replies.health(row, req.now, late)).strip(),
            **{name: jsonable(getattr(state, name, None)) for name in _STATE_FIELDS},
        })
    return reply, {
        "servers": servers,
        "poll_interval_seconds": req.config.polling.interval,
        "open_incidents": queries.open_count(req.db),
        "outbox": store.outbox_depth(req.db),
        "delivery_problems": jsonable(store.delivery_problems(req.db)),
    }


_STATE_FIELDS = ("last_poll_at", "last_success_at", "last_error", "last_error_at",
                 "consecutive_failures", "cursor", "events_stored", "down_since", "clock_skew",
                 "generation")


def _summary(req: Request, args: list[str]) -> tuple[Reply, dict]:
    reply = lookups.summary(req, args)
    _, options = take_options(args, {"--since": duration})
    since = options.get("--since", lookups.DEFAULT_SINCE)
    figures = queries.summary(req.db, since=req.now - timedelta(seconds=since), until=req.now)
    return reply, {
        "since": _time(figures.since), "until": _time(figures.until),
        "new_accounts": figures.new_accounts, "opened": figures.opened,
        "events": figures.events, "open_now": figures.open_now,
        "acknowledged_now": figures.acknowledged_now,
        "top_servers": [{"name": n, "events": c} for n, c in figures.top_servers],
        "top_connectors": [{"name": n, "events": c} for n, c in figures.top_connectors],
        "median_seconds_to_ack": figures.median_to_ack,
        "median_seconds_to_resolve": figures.median_to_resolve,
        "servers_not_watched": unwatched(req.db, req.config),
    }


def _routes(req: Request, args: list[str]) -> tuple[Reply, dict]:
    reply = lookups.routes(req, args)
    account = args[0]
    kinds = [int(w) for w in args[1:] if w in ("1018", "1020")]
    rest = [w for w in args[1:] if w not in ("1018", "1020")]
    configured = {s.name.casefold(): s.name for s in req.config.servers}
    servers = [configured[rest[0].casefold()]] if rest else [s.name for s in req.config.servers]
    return reply, {
        "account": account, "routes_configured": bool(req.config.routes),
        "routes": [{"server": server, "event_id": event, "route": route.name,
                    "channel": route.channel, "owners": list(route.owners)}
                   for server in servers for event in (kinds or [1018, 1020])
                   for route in [req.config.route_for(account, server, event)]],
    }


def _fix(req: Request, args: list[str]) -> tuple[Reply, dict]:
    reply = lookups.fix(req, args)
    account = args[0]
    if looks_like_incident(account) and account.startswith("#"):
        account = lookups._incident(req, account).account
    return reply, {"account": account,
                   "commands": [text_of(block) for block in reply.blocks or ()
                                if _is_preformatted(block)]}


def _verify(req: Request, args: list[str]) -> tuple[Reply, dict]:
    """handlers.verify's own answer, with what the directory said kept for --json (the
    directory is read once)."""
    reply, account, verified = verify.look(req, args)
    if verified is None:
        return reply, {"account": account, "directory": False, "asked": None, "servers": [],
                       "finding": None, "problems": []}
    return reply, {
        "account": account, "directory": True, "asked": verified.asked,
        "servers": list(verified.servers), "finding": finding_data(verified.finding),
        "problems": [{"server": p.server, "error": p.error, "fix": list(p.fix)}
                     for p in verified.problems]}


_DATA: dict[str, Callable[[Request, list[str]], tuple[Reply, dict]]] = {
    "history": _history, "show": _show, "status": _status, "summary": _summary,
    "verify": _verify, "routes": _routes, "fix": _fix,
}


# --- data as JSON values -------------------------------------------------------------------------

def _time(moment: datetime | None) -> str | None:
    """UTC, ISO 8601 with a Z: 2026-03-08T15:00:00Z."""
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def incident_data(incident: Incident) -> dict[str, Any]:
    return {
        "id": incident.id, "account": incident.account, "status": incident.status,
        "channel": incident.channel,
        "first_seen": _time(incident.first_seen), "last_seen": _time(incident.last_seen),
        "opened_at": _time(incident.opened_at), "resolved_at": _time(incident.resolved_at),
        "event_count": incident.event_count, "event_ids": list(incident.event_ids),
        "servers": [{"name": name, "host": host} for name, host in incident.servers],
        "connectors": list(incident.connectors),
        "acked_by": incident.acked_by, "acked_at": _time(incident.acked_at),
        "ack_note": incident.ack_note,
        "fix_state": incident.fix_state, "fixed_by": incident.fixed_by,
        "fixed_at": _time(incident.fixed_at),
    }


def finding_data(finding: Finding | None) -> dict[str, Any] | None:
    return jsonable(asdict(finding)) if finding is not None else None


def jsonable(value: Any) -> Any:
    """Dataclasses as dicts, times as UTC ISO text, tuples as lists."""
    if isinstance(value, datetime):
        return _time(value)
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [jsonable(v) for v in value]
    return value


# --- Block Kit as plain text ---------------------------------------------------------------------

#: The emoji our views use, as a terminal can show them; others stay :name:.
EMOJI = {"white_check_mark": "✔", "x": "✘", "warning": "⚠", "white_circle": "○",
         "large_green_circle": "●", "red_circle": "●", "zzz": "zZ", "bell": "!",
         "hourglass_flowing_sand": "…", "lock": "#", "mag": "?"}
_EMOJI_CODE = re.compile(r":[a-z0-9_+-]+:")
#: Slack's <...> tokens in mrkdwn: dates, mentions, channels, groups, links.
_TOKEN = re.compile(r"<([^<>\n]*)>")
_FIELD_LABEL = re.compile(r"\A\*([^*\n]+)\*\n")
_CODE_SPAN = re.compile(r"(`[^`\n]*`)")
_EMPHASIS = [re.compile(r"(?<![\w*])\*(?=\S)([^*\n]*?\S)\*(?![\w*])"),
             re.compile(r"(?<![\w_])_(?=\S)([^_\n]*?\S)_(?![\w_])"),
             re.compile(r"(?<![\w~])~(?=\S)([^~\n]*?\S)~(?![\w~])")]
INDENT = "    "


def render(reply: Reply) -> str:
    """A reply as lines for a terminal: its blocks when it has them, else its text."""
    if not reply.blocks:
        return plain_lines(reply.text)
    parts = [_block(block) for block in reply.blocks]
    return "\n\n".join(part for part in parts if part)


def _block(block: dict) -> str | None:
    kind = block.get("type")
    if kind == "header":
        title = plain_lines(_text(block.get("text")))
        return f"{title}\n{'=' * min(len(title), 72)}"
    if kind == "section":
        lines = [plain_lines(_text(block.get("text")))] if block.get("text") else []
        lines += [plain_lines(_field(f)) for f in block.get("fields", [])]
        return "\n".join(lines)
    if kind == "context":
        return "  ".join(plain_lines(_text(e)) for e in block.get("elements", [])
                         if e.get("type") in ("mrkdwn", "plain_text"))
    if kind == "divider":
        return "-" * 40
    if kind == "rich_text":
        return "\n".join(_rich(element) for element in block.get("elements", []))
    return None   # actions (buttons, menus), images, inputs: nothing to read in a terminal


def _field(obj: dict) -> str:
    """A section field, `*Label*\nvalue` in Slack's two lines, as `Label: value`."""
    text = obj.get("text", "")
    if obj.get("type") == "mrkdwn":
        text = _FIELD_LABEL.sub(r"*\1*: ", text, count=1)
    return _text({**obj, "text": text})


def _text(obj: dict | None) -> str:
    """A text object's words: mrkdwn turned plain, plain_text as it is."""
    if not obj:
        return ""
    text = obj.get("text", "")
    return mrkdwn_to_plain(text) if obj.get("type") == "mrkdwn" else text


def _rich(element: dict) -> str:
    kind = element.get("type")
    if kind == "rich_text_preformatted":
        code = "".join(_inline(e) for e in element.get("elements", []))
        return "\n".join(INDENT + inert(line) for line in code.split("\n"))
    if kind == "rich_text_list":
        bullet = "1." if element.get("style") == "ordered" else "•"
        return "\n".join(f"{INDENT * element.get('indent', 0)}{bullet} {_rich(item)}"
                         for item in element.get("elements", []))
    text = plain_lines("".join(_inline(e) for e in element.get("elements", [])))
    if kind == "rich_text_quote":
        return "\n".join("> " + line for line in text.split("\n"))
    return text


def _inline(element: dict) -> str:
    kind = element.get("type")
    if kind == "text":
        return element.get("text", "")
    if kind == "date":
        return element.get("fallback", "")
    if kind == "user":
        return f"@{element.get('user_id', '')}"
    if kind == "usergroup":
        return f"@{element.get('usergroup_id', '')}"
    if kind == "channel":
        return f"#{element.get('channel_id', '')}"
    if kind == "emoji":
        return EMOJI.get(element.get("name", ""), f":{element.get('name', '')}:")
    if kind == "link":
        url = element.get("url", "")
        label = element.get("text")
        return f"{label} ({url})" if label and label != url else url
    if kind == "broadcast":
        return f"@{element.get('range', '')}"
    return ""


def mrkdwn_to_plain(text: str) -> str:
    """Slack mrkdwn as plain words: tokens (dates as their UTC fallback, mentions, channels,
    links) in words, emphasis and code-span markers dropped, entities decoded. Untrusted text
    in our mrkdwn has passed through `show` (escaped, backticks replaced): `<` here is always
    one of our tokens."""
    text = _TOKEN.sub(_token, text)
    pieces = _CODE_SPAN.split(text)
    for i in range(0, len(pieces), 2):          # outside code spans only
        for pattern in _EMPHASIS:
            pieces[i] = pattern.sub(r"\1", pieces[i])
        pieces[i] = _EMOJI_CODE.sub(lambda m: EMOJI.get(m.group()[1:-1], m.group()), pieces[i])
    text = "".join(p[1:-1] if i % 2 else p for i, p in enumerate(pieces))
    return html.unescape(text)


def _token(match: re.Match) -> str:
    inner = match.group(1)
    target, _, label = inner.partition("|")
    if target.startswith("!date^"):
        return label or target
    if target.startswith("!subteam^"):
        return "@" + (label or target[len("!subteam^"):])
    if target.startswith("!"):
        return "@" + target[1:]
    if target.startswith("@"):
        return "@" + (label or target[1:])
    if target.startswith("#"):
        return "#" + (label or target[1:])
    return f"{label} ({target})" if label else target


def plain_lines(text: str) -> str:
    """Each line of `text` made inert (control and format characters as escapes), so no value
    can move the cursor, colour the terminal or hide part of a line; our own line breaks stay."""
    return "\n".join(inert(line) for line in text.split("\n"))


def _is_preformatted(block: dict) -> bool:
    return block.get("type") == "rich_text" and any(
        e.get("type") == "rich_text_preformatted" for e in block.get("elements", []))
