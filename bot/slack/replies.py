"""Block Kit for the chat lookups and the App Home: history, show, fix, status, servers, snoozes.

Pure: plain data in (`now` passed in), (fallback text, blocks) out. The rules are
bot/slack/alerts.py's: every untrusted value (accounts, connectors, notes, reasons, errors)
reaches mrkdwn only through `show`/`escape`; PowerShell goes only into rich_text_preformatted
blocks, which Slack shows literally. Slack user and channel IDs become mentions only when they
look like IDs.

Every answer stays within Block Kit's limits (50 blocks per message, 100 in a Home tab, 3000
characters per section): long lists are cut and the answer says so.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from urllib.parse import urlsplit

from bot.core.config import RouteConfig, ServerConfig
from bot.core.devices import DeviceLookup
from bot.core.findings import Finding
from bot.core.model import (
    ConnectorSeen,
    Heartbeat,
    History,
    Incident,
    IncidentDetail,
    Moment,
    OriginEvents,
    ServerState,
    Snooze,
    Summary,
)
from bot.exchange.advice import Advice
from bot.exchange.diagnosis import Diagnosis
from bot.slack import alerts
from bot.slack import richtext as rt
from bot.slack.blocks import (
    BUDGET,
    GROUP_ID,
    HOME_BLOCKS,
    HOME_BUDGET,
    MESSAGE_BLOCKS,
    channel_ref,
    clip,
    context,
    cut,
    divider,
    escape,
    fit,
    header,
    inert,
    literal,
    mention,
    pack,
    plural,
    preformatted,
    section,
    show,
    size,
    slack_date,
    span,
    sparkline,
    units,
    window,
)
from bot.slack.devices import device_blocks, device_brief
from bot.slack.text import CANDIDATE_SOURCE

#: How much of an untrusted name a list line shows (escaped, it may grow up to five times).
LIST_NAME = 80

# --- incidents in lists -------------------------------------------------------------------------

def incident_ref(incident: Incident) -> str:
    return f"`#{incident.id}` {literal(incident.account, LIST_NAME)}"


def servers_text(names: tuple[str, ...] | list[str], most: int = 3) -> str:
    shown = ", ".join(show(n, 64) for n in names[:most])
    return shown + (f" +{len(names) - most} more" if len(names) > most else "")


def ack_text(incident: Incident) -> str:
    if not incident.acked_by:
        return "not acknowledged"
    when = f" {slack_date(incident.acked_at)}" if incident.acked_at else ""
    return f"acknowledged by {mention(incident.acked_by)}{when}"


def incident_line(incident: Incident, devices: DeviceLookup | None = None) -> str:
    """One incident on one line: `#42` *account* · open, acknowledged by @x · 45 events · ...
    and, when the protocol log named any, where it came from (bot.slack.devices)."""
    state = incident.status
    if incident.acked_by:
        state += f", acknowledged by {mention(incident.acked_by)}"
    brief = device_brief(devices)
    return " · ".join([incident_ref(incident), state, plural(incident.event_count, "event"),
                       servers_text(incident.server_names),
                       f"last {slack_date(incident.last_seen)}", *([brief] if brief else [])])


# --- history ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Subject:
    """What history is about: everyone (kind None), one account or one server."""

    kind: str | None = None      # None, "account" or "server"
    name: str = ""               # as the person typed it, or the server's configured name

    def words(self) -> str:
        if self.kind is None:
            return "all accounts"
        return f"{self.kind} {literal(self.name, LIST_NAME)}"


def history_view(page: History, *, subject: Subject, since_seconds: float, limit: int,
                 max_limit: int, older: Incident | None = None,
                 devices: Mapping[int, DeviceLookup] | None = None) -> tuple[str, list[dict]]:
    """Incidents newest first, a per-day sparkline of events and the totals.

    `older`: for an account with nothing in the window, its newest incident before it.
    `devices`: the device look-ups by incident id (none: the look-up is off).
    """
    span_words = f"the last {window(since_seconds)}"
    counts = [n for _day, n in page.per_day]
    days = page.per_day
    spark = sparkline(counts)
    peak_day, peak = max(days, key=lambda d: d[1]) if days else ("", 0)
    summary = (f"*History* of {subject.words()}, {span_words}\n"
               f"`{spark}` {days[0][0]} → {days[-1][0]} (events per UTC day"
               + (f", peak {peak:,} on {peak_day})" if peak else ")") + "\n"
               f"*{page.total:,}* incident{'s' if page.total != 1 else ''} "
               f"(*{page.open:,}* open) · *{page.events:,}* event"
               f"{'s' if page.events != 1 else ''} in the window")
    blocks = [section(summary)]
    text = (f"History of {subject.words()}, {span_words}: {plural(page.total, 'incident')} "
            f"({page.open:,} open), {plural(page.events, 'event')}. {spark}")
    if not page.incidents:
        none = f"No incident for {subject.words()} in {span_words}."
        if older is not None:
            none += (f" Its newest is `#{older.id}`, last event {slack_date(older.last_seen)}: "
                     "widen the window with `--since`.")
        blocks.append(section(none))
        return text, blocks
    found = devices or {}
    lines = [incident_line(i, found.get(i.id) if i.id is not None else None)
             for i in page.incidents]
    # As many lines as one message holds (bot.slack.blocks.size), with room for the last line.
    room, shown = BUDGET - size(blocks) - 400, 0
    for line in lines:
        room -= units(line) + 1
        if room < 0:
            break
        shown += 1
    blocks += pack(lines[:max(1, shown)])
    shown = max(1, shown)
    if shown < page.total:
        more = (f"Showing {shown:,} of {page.total:,}, newest first; use `--limit` (up to "
                f"{max_limit}) or `--since` to see others.")
        if limit >= max_limit:
            more = (f"Showing {shown:,} of {page.total:,}, newest first; narrow it with "
                    "`--since`, an account or a server.")
        blocks.append(context(more))
        text += f" Showing {shown:,} of {page.total:,}."
    else:
        blocks.append(context(("Showing the one incident." if shown == 1 else
                               f"Showing all {shown:,}, newest first.") +
                              " `/submitwatch show #N` tells one's story."))
    return text, fit(blocks)


# --- show ---------------------------------------------------------------------------------------

def show_view(detail: IncidentDetail, now: datetime, diagnoses: Sequence[Diagnosis] = (),
              max_timeline: int = 30, finding: Finding | None = None,
              devices: DeviceLookup | None = None) -> tuple[str, list[dict]]:
    """One incident's story; `diagnoses` (bot.exchange.diagnosis) say why it was refused; `finding`:
    what the directory said at its last check (bot.directory.adcheck); `devices`: what the
    protocol log named (bot.slack.devices; None: the look-up is off)."""
    incident = detail.incident
    account = show(incident.account)
    state = "*open*" if incident.status == "open" else (
        f"*resolved* {slack_date(incident.resolved_at)}" if incident.resolved_at else "*resolved*")
    lines = [f"{literal(incident.account)} · {state} · {ack_text(incident)}"]
    if incident.ack_note:
        lines.append(f"Note: “{show(incident.ack_note, 300)}”")
    if detail.snoozed_until:
        lines.append(f"Snoozed until {slack_date(detail.snoozed_until)} "
                     f"({span((detail.snoozed_until - now).total_seconds())} left): events are "
                     "counted, nobody is alerted.")
    blocks = [header(f"Incident #{incident.id}"), section("\n".join(lines)),
              {"type": "section", "fields": [
                  {"type": "mrkdwn", "text": f"*Events*\n{incident.event_count:,} "
                   f"(IDs {', '.join(str(i) for i in incident.event_ids)})"},
                  {"type": "mrkdwn",
                   "text": f"*Servers*\n{servers_text(incident.server_names, 10)}"},
                  {"type": "mrkdwn", "text": f"*First seen*\n{slack_date(incident.first_seen)}"},
                  {"type": "mrkdwn", "text": f"*Last seen*\n{slack_date(incident.last_seen)}"},
              ]}]
    if devices is not None:
        blocks += device_blocks(devices)
    if diagnoses:
        blocks.append(rt.rich(*alerts.cause_lines(diagnoses)))
    if finding is not None:
        blocks += alerts.directory_blocks(finding)
    blocks += pack([_group_line(g) for g in detail.groups]
                   or ["no event is linked to this incident"],
                   "*Events per server and connector*")
    if detail.group_count > len(detail.groups):
        blocks.append(context(f"{detail.group_count - len(detail.groups):,} smaller group(s) "
                              "not shown."))
    moments = detail.timeline[-max_timeline:]
    title = "*Timeline*"
    if len(detail.timeline) > len(moments):
        title += f" (the last {len(moments)} of {len(detail.timeline)})"
    blocks += pack([_moment_line(m) for m in moments], title)
    blocks += pack([_audit_line(row) for row in detail.audit]
                   or ["nobody has acted on it from Slack"], "*Who acted*")
    blocks.append(context("The commands: *Show fix* on the alert, or `/submitwatch fix` with "
                          "this account."))
    text = (f"Incident #{incident.id}: {account}, {incident.status}, "
            f"{plural(incident.event_count, 'event')}")
    return text, fit(blocks)


def _group_line(group) -> str:
    connector = (f"`{show(group.connector, 120)}`" if group.connector
                 else "connector not named by the event")
    ids = "/".join(str(i) for i in group.event_ids)
    when = (slack_date(group.first) if group.first == group.last
            else f"{slack_date(group.first)} → {slack_date(group.last)}")
    return (f"• *{show(group.server, 64)}* · {connector} · {plural(group.count, 'event')} "
            f"({ids}) · {when}")


def _moment_line(moment: Moment) -> str:
    line = f"• {slack_date(moment.at)} {moment.what}"
    if moment.until:
        line += f" until {slack_date(moment.until)}"
    if moment.user:
        line += f" by {mention(moment.user)}"
    if moment.detail:
        line += f": “{show(moment.detail, 150)}”"
    return line


def _audit_line(row: dict) -> str:
    where = f" in {channel_ref(row['channel'])}" if row.get("channel") else ""
    line = (f"• {slack_date(row['at'])} {mention(row['user_id'])} `{show(row['action'], 30)}` "
            f"via {show(row['via'], 20)}{where}: {show(row['outcome'], 30)}")
    changes = _changes(row.get("before"), row.get("after"))
    if changes:
        line += f" ({changes})"
    if row.get("detail"):
        line += f" “{show(row['detail'], 150)}”"
    return line


def _changes(before, after) -> str:
    """What an action changed, from the audit's before/after snapshots."""
    if not isinstance(before, dict) or not isinstance(after, dict):
        return ""
    parts = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if old != new:
            parts.append(f"{show(str(key), 30)}: {_value(key, old)} → {_value(key, new)}")
    return "; ".join(parts[:6])


def _value(key: str, value) -> str:
    if value is None:
        return "–"
    if key.endswith("_by"):
        return mention(str(value))
    return show(str(value), 60)


# --- fix ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Candidate:
    connector: str
    source: str                      # a key of CANDIDATE_SOURCE
    seen: ConnectorSeen | None = None


@dataclass(frozen=True)
class ServerFix:
    """The candidates on one server and the advice for the most likely one."""

    server: str                      # configured name
    host: str                        # Exchange short name used in the commands
    candidates: list[Candidate] = field(default_factory=list)
    advice: Advice | None = None     # event 1018 on candidates[0]
    list_connectors: str | None = None   # read-only: the server's Receive connectors
    hidden: int = 0                  # candidates not listed
    refusals: list[str] = field(default_factory=list)  # why some got no command (safe text)


@dataclass(frozen=True)
class Understood:
    """What `fix` read from the person's words, said back before the answer."""

    account: str
    connector: str | None
    event_ids: tuple[int, ...]       # the causes explained
    why: str | None                  # "you said", "from its stored events"; None: not known


def fix_reply(understood: Understood, sections: list[list[dict]]) -> tuple[str, list[dict]]:
    line: list[rt.Part] = ["Understood: account ", rt.name(understood.account)]
    if understood.connector:
        line += [", connector ", rt.name(understood.connector)]
    kinds = " and ".join(str(i) for i in understood.event_ids)
    if understood.why:
        line += [f", event {kinds} ({understood.why})."]
    else:
        line += [". No stored event of this account says whether it gets 1018 or 1020, and "
                 "they have different causes, so both follow; add `1018` or `1020` to choose."]
    blocks = [rt.rich(line)]
    for part in sections:
        blocks += part
    return f"Fix for {inert(understood.account)} (event {kinds})", fit(blocks)


def diagnosed_blocks(diagnoses: list[Diagnosis]) -> list[dict]:
    """Each cause's explanation, every fix with its commands, and how to verify (for `fix`)."""
    blocks: list[dict] = []
    for diagnosis in diagnoses:
        blocks += alerts.diagnosis_blocks(diagnosis, most=5, full=True,
                                          more=alerts.SLASH_FIX_GIVES_EACH)
    return blocks


def candidates_blocks(account: str, servers: list[ServerFix], *, hidden_servers: int = 0,
                      incident: Incident | None = None) -> list[dict]:
    """Event 1018 and no connector given: the candidates on each server and how to list them."""
    intro: list[rt.Part] = [
        rt.bold("Event 1018"), ": the fix depends on the Receive connector ", rt.name(account),
        " signed in on (the internet-facing one on port 25, a relay, or one meant for signed-in "
        "accounts). Candidates per server, most likely first, with the advice for the most "
        "likely one; for another's: ",
        rt.code("/submitwatch fix ACCOUNT 'SERVER\\Connector'"), "."]
    if incident is not None:
        intro += [f"\nIts newest incident is #{incident.id} ({incident.status}, last event ",
                  rt.date(incident.last_seen), ")."]
    blocks = [rt.rich(intro)]
    shown = 0
    for entry in servers:   # whole servers, as many as fit one message with fix_reply's lines
        more = _server_fix_blocks(entry)
        if shown and (size(blocks + more) > BUDGET - 1500
                      or len(blocks) + len(more) > MESSAGE_BLOCKS - 3):
            break
        blocks += more
        shown += 1
    hidden_servers += len(servers) - shown
    if not servers:
        blocks.append(section("No server is configured and no event names one, so there is "
                              "nothing to suggest. Name the connector: "
                              "`/submitwatch fix ACCOUNT 'SERVER\\Connector'`."))
    if hidden_servers:
        blocks.append(context(f"{hidden_servers} more server(s) not shown."))
    return blocks


def _server_fix_blocks(entry: ServerFix) -> list[dict]:
    lines: list[list[rt.Part]] = [[rt.name(entry.server, 64), " (Exchange host ",
                                   rt.code(rt.visible(entry.host)[:64]), ")"]]
    for n, candidate in enumerate(entry.candidates):
        where = CANDIDATE_SOURCE[candidate.source]
        line: list[rt.Part] = ["• most likely: " if n == 0 else "• or: ",
                               rt.name(candidate.connector, LIST_NAME, strong=False), f": {where}"]
        if candidate.seen:
            line += [f" ({plural(candidate.seen.count, 'event')}, last ",
                     rt.date(candidate.seen.last), ")"]
        lines.append(line)
    if entry.hidden:
        lines.append([f"• and {entry.hidden} more candidate(s) not shown"])
    lines += [["• no command for one of them: ", refusal] for refusal in entry.refusals]
    blocks = [rt.rich(*lines)]
    if entry.list_connectors is not None:
        blocks.append(preformatted(f"# read-only: {entry.host}'s Receive connectors\n"
                                   f"{entry.list_connectors}"))
    if entry.advice is not None:
        advice = entry.advice
        first = advice.fixes[0]
        blocks.append(rt.rich([rt.bold(advice.headline), " on the most likely one. ",
                               rt.bold("What to do: " + first.title), ": ",
                               rt.name(first.detail, alerts.DETAIL_LIMIT, strong=False)]))
        if first.steps:
            blocks.append(preformatted("\n".join(first.lines())))
    return blocks


# --- servers and their health -------------------------------------------------------------------

@dataclass(frozen=True)
class ServerStatus:
    """A server as configured (None: no longer configured) and as last polled (None: never).
    A server without url is fed by a collector or OTLP: `heartbeat` is what a collector last
    said of it, `events` its own events. A collector's row has `collector` set, and `state`
    its own polls; `heartbeats` is the state of its heartbeat reads."""

    name: str
    config: ServerConfig | None
    state: ServerState | None
    heartbeat: Heartbeat | None = None
    events: OriginEvents | None = None
    collector: str | None = None          # a collector's subscription
    heartbeats: ServerState | None = None  # only once a heartbeat read has failed
    heartbeats_read_at: datetime | None = None
    ignored: tuple[str, ...] = ()          # a collector's sources left out (not configured)


def health(row: ServerStatus, now: datetime, late_after: float) -> str:
    """One word and an emoji for a server's polling: ok, late, failing, not polled yet (for a
    server fed by a collector: ok, silent, not reported)."""
    if (row.config is not None and not row.config.polled) or (
            row.config is None and row.heartbeat is not None):
        return _fed_word(row)
    state = row.state
    if state is None or state.last_poll_at is None:
        return ":white_circle: not polled yet"
    if state.consecutive_failures:
        return ":x: failing"
    if state.last_success_at is None or (now - state.last_success_at).total_seconds() > late_after:
        return ":warning: late"
    return ":white_check_mark: ok"


def _poll_facts(row: ServerStatus, now: datetime) -> list[str]:
    state = row.state
    if state is None or state.last_poll_at is None:
        return ["no poll has run yet"]
    facts = []
    if state.last_success_at:
        lag = span((now - state.last_success_at).total_seconds())
        facts.append(f"last good poll {lag} ago")
    else:
        facts.append("never polled successfully")
    facts.append(f"cursor {state.cursor}" if state.cursor is not None else "no cursor yet")
    if state.clock_skew:   # stored with the moment it was measured, so that is always there
        seen = f" (seen {slack_date(state.clock_skew_at)})" if state.clock_skew_at else ""
        facts.append(f"*{skew_text(state.clock_skew)}*{seen}")
    if state.generation:
        facts.append(f"log cleared {plural(state.generation, 'time')}")
    if state.last_error:
        when = f" {slack_date(state.last_error_at)}" if state.last_error_at else ""
        if state.consecutive_failures:
            facts.append(f"*{plural(state.consecutive_failures, 'failure')} in a row*, last "
                         f"error{when}: {show(state.last_error, 300)}")
        else:
            facts.append(f"recovered; last error{when}: {show(state.last_error, 300)}")
    return facts


def skew_text(seconds: float) -> str:
    side = "ahead of" if seconds > 0 else "behind"
    return (f"its events are stamped {span(seconds)} {side} SubmitWatch's clock: fix the clock "
            "that is wrong (quiet periods count on SubmitWatch's own time meanwhile)")


def server_health_line(row: ServerStatus, now: datetime, late_after: float) -> str:
    if (row.config is not None and not row.config.polled) or (
            row.config is None and row.heartbeat is not None):
        return _fed_line(row, now)
    name = f"*{show(row.name, 64)}*" + (" (no longer configured)" if row.config is None else "")
    if row.collector is not None:
        name += f" (collector, subscription “{show(row.collector, 128)}”)"
    facts = _poll_facts(row, now)
    if row.collector is not None:
        facts.append(_heartbeat_reads(row.heartbeats, row.heartbeats_read_at))
    if row.ignored:
        shown = ", ".join(f"`{show(c, 128)}`" for c in row.ignored[:5])
        more = f" and {len(row.ignored) - 5} more" if len(row.ignored) > 5 else ""
        facts.append(f"left out, not configured (unconfigured_origins = \"ignore\"): "
                     f"{shown}{more}")
    return f"• {name}: {health(row, now, late_after)} · " + " · ".join(facts)


def _heartbeat_reads(state: ServerState | None, read_at: datetime | None) -> str:
    if state is not None and state.consecutive_failures and state.last_error:
        return (f"*heartbeat reads failing ({plural(state.consecutive_failures, 'time')} in a "
                f"row)*: {show(state.last_error, 300)}")
    return f"heartbeats read {slack_date(read_at)}" if read_at else "heartbeats not read yet"


def _fed_line(row: ServerStatus, now: datetime) -> str:
    unnamed = " (not configured: taken under its own name)" if row.config is None else ""
    return f"• *{show(row.name, 64)}*{unnamed}: {_fed_health(row, now)}"


def _fed_health(row: ServerStatus, now: datetime) -> str:
    """A server SubmitWatch never connects to: what its collector last said of it, and its
    own events."""
    beat, state = row.heartbeat, row.state
    facts = []
    if beat is not None:
        heard = (f"last heartbeat {span((now - beat.last_heartbeat).total_seconds())} ago"
                 if beat.last_heartbeat else "no heartbeat yet")
        facts.append(f"through collector *{show(beat.collector, 64)}* (as "
                     f"`{show(beat.computer, 128)}`, {show(beat.status, 20)}): {heard}")
    else:
        facts.append("no url: its events come through a collector or OTLP")
    events = row.events
    if events is not None and events.last_event is not None:
        facts.append(f"{plural(events.last_day, 'event')} in the last day, newest "
                     f"{slack_date(events.last_event)}")
    else:
        facts.append("no event of it kept")
    if state is not None and state.down_since is not None and state.last_error:
        facts.append(show(state.last_error, 300))
    return f"{_fed_word(row)} · " + " · ".join(facts)


def _fed_word(row: ServerStatus) -> str:
    if row.state is not None and row.state.down_since is not None:
        return ":x: silent"
    if row.heartbeat is None:
        return ":white_circle: no collector has reported it"
    return ":white_check_mark: ok"


def delivery_lines(problems: list[dict]) -> list[str]:
    """Messages held back by a Slack error a person must fix, with the fix in words; and
    messages Slack refused as they were (too long, invalid), given up at once."""
    lines = []
    for p in problems:
        if p.get("refused"):
            lines.append(f"• :x: {plural(p['refused'], 'message')} Slack refused "
                         f"({escape(clip(p.get('code') or '?', 60))}) and SubmitWatch gave up "
                         f"since {slack_date(p['since'])}: it would refuse them again, so they "
                         "are not retried (the channel was told; please report it): "
                         f"{escape(clip(p['error'] or '', 300))}")
            continue
        state = (f"{p['given_up']:,} given up, sent once the cause is fixed" if p["given_up"]
                 else "retrying, more slowly each time")
        lines.append(f"• :warning: {plural(p['messages'], 'message')} held back since "
                     f"{slack_date(p['since'])} ({state}): {escape(clip(p['error'] or '', 400))}")
    return lines


def status_view(rows: list[ServerStatus], *, open_count: int, outbox: int, now: datetime,
                interval: float, late_after: float,
                delivery: Sequence[dict] = ()) -> tuple[str, list[dict]]:
    lines = [server_health_line(r, now, late_after) for r in rows] or [
        "no server is configured or polled"]
    totals = (f"*Open incidents:* {open_count:,}   *Alerts waiting to be sent:* {outbox:,}")
    blocks = pack(lines, f"*Servers* (each polled every {span(interval)})") + [section(totals)]
    problems = delivery_lines(list(delivery))
    if problems:
        blocks += pack(problems, "*Slack delivery problems*")
    text = "\n".join(["*Servers*", *lines, totals, *problems])
    return cut(text), fit(blocks)


def servers_view(rows: list[ServerStatus], *, default_channel: str, now: datetime,
                 late_after: float) -> tuple[str, list[dict]]:
    lines = [_server_line(r, default_channel, now, late_after) if r.config else _fed_line(r, now)
             for r in rows if r.config or r.heartbeat]
    gone = [r for r in rows if r.config is None and r.heartbeat is None]
    if gone:
        lines.append("Polled before but no longer configured: " +
                     ", ".join(f"*{show(r.name, 64)}*" for r in gone))
    blocks = pack(lines or ["No server is configured: add `[[servers]]` tables to the config."],
                  f"*Servers watched* ({len(rows) - len(gone)})")
    text = f"{plural(len(rows) - len(gone), 'server')} watched"
    return text, fit(blocks)


def _server_line(row: ServerStatus, default_channel: str, now: datetime, late_after: float) -> str:
    cfg = row.config
    if cfg is None:   # servers_view lists the servers no longer configured apart
        raise ValueError(f"server {row.name!r} is not configured: no line to show for it")
    if not cfg.polled:
        channel = channel_ref(cfg.channel or default_channel) + ("" if cfg.channel else
                                                                   " (default)")
        return (f"• *{show(row.name, 64)}* · no url: its events come through a collector or OTLP "
                f"· alerts to {channel} · {_fed_health(row, now)}")
    parts = urlsplit(cfg.url)
    where = parts.hostname or "?"
    if parts.port:
        where += f":{parts.port}"
    if parts.scheme == "https":
        tls = "https, certificate checked" if cfg.validate_certificate else \
            "https, *certificate not checked*"
    else:
        tls = "http (no TLS: the WinRM message encryption protects it)" \
            if cfg.transport in ("ntlm", "kerberos", "credssp") else "http (no TLS)"
    channel = channel_ref(cfg.channel or default_channel) + ("" if cfg.channel else " (default)")
    line = (f"• *{show(row.name, 64)}* `{show(where, 120)}` · {show(cfg.transport, 20)} · {tls} · "
            f"alerts to {channel} · {health(row, now, late_after)}")
    if cfg.submission_connector:
        line += f" · submission connector `{show(cfg.submission_connector, LIST_NAME)}`"
    if cfg.version:
        line += f" · Exchange {show(cfg.version, 10)}"
    return line


# --- snoozes ------------------------------------------------------------------------------------

def snooze_line(snooze: Snooze, now: datetime) -> str:
    what = (f"incident `#{show(snooze.target, 20)}` ({literal(snooze.account, LIST_NAME)})"
            if snooze.kind == "incident" else f"account {literal(snooze.account, LIST_NAME)}")
    left = span((snooze.until - now).total_seconds())
    return (f"• {what} until {slack_date(snooze.until)} ({left} left) · by "
            f"{mention(snooze.created_by)}: “{show(snooze.reason, 150)}”")


def snoozes_view(snoozes: list[Snooze], now: datetime, most: int = 40) -> tuple[str, list[dict]]:
    if not snoozes:
        return "No snooze in force.", [section("No snooze in force: every incident alerts.")]
    lines = [snooze_line(s, now) for s in snoozes[:most]]
    blocks = pack(lines, f"*Snoozes in force* ({len(snoozes)}), soonest to end first")
    if len(snoozes) > most:
        blocks.append(context(f"Showing {most} of {len(snoozes)}."))
    return f"{plural(len(snoozes), 'snooze')} in force", fit(blocks)


# --- App Home -----------------------------------------------------------------------------------

def home_blocks(*, may_act: str, incidents: list[Incident], open_total: int,
                snoozes: list[Snooze], servers: list[ServerStatus], now: datetime,
                late_after: float, most: int = 40, delivery: Sequence[dict] = ()) -> list[dict]:
    """The Home tab: who may act, Slack delivery problems, open incidents, snoozes in force,
    each server's health."""
    blocks = [header("SubmitWatch"), section(may_act), divider()]
    problems = delivery_lines(list(delivery))
    if problems:
        blocks += pack(problems, "*Slack delivery problems*") + [divider()]
    lines = [f"• {incident_ref(i)} · {plural(i.event_count, 'event')} · "
             f"{servers_text(i.server_names)} · last {slack_date(i.last_seen)} · {ack_text(i)}"
             for i in incidents[:most]]
    blocks += pack(lines or ["None: all quiet."], f"*Open incidents* ({open_total:,})")
    if open_total > len(lines):
        blocks.append(context(f"Showing the {len(lines)} most recently active of "
                              f"{open_total:,}; `/submitwatch history` lists more."))
    blocks.append(divider())
    snooze_lines = [snooze_line(s, now) for s in snoozes[:most]]
    blocks += pack(snooze_lines or ["None."], f"*Snoozes in force* ({len(snoozes)})")
    if len(snoozes) > len(snooze_lines):
        blocks.append(context(f"Showing {len(snooze_lines)} of {len(snoozes)}; "
                              "`/submitwatch snoozes` lists them all."))
    blocks.append(divider())
    blocks += pack([server_health_line(r, now, late_after) for r in servers]
                   or ["No server is configured."], "*Servers*")
    blocks.append(context(f"Updated {slack_date(now)}. `/submitwatch help` lists the commands."))
    return fit(blocks, HOME_BLOCKS, budget=HOME_BUDGET)


def may_act_text(user_id: str, users: tuple[str, ...], groups: tuple[str, ...]) -> str:
    """Whether this person may acknowledge and snooze, from the configured permissions."""
    if not users and not groups:
        return ("Everyone in this workspace may acknowledge and snooze alerts (no permissions "
                "are configured).")
    if user_id in users:
        return "You may acknowledge and snooze alerts."
    who = []
    if users:
        who.append(", ".join(mention(u) for u in users[:10]) +
                   (f" and {len(users) - 10} more" if len(users) > 10 else ""))
    if groups:
        who.append("members of " + ", ".join(
            f"<!subteam^{g}>" if GROUP_ID.fullmatch(g) else show(g, 40) for g in groups[:10]))
    may = " and ".join(who)
    if groups:
        return (f"Acknowledging and snoozing is for {may}. You are not named; if you are in "
                "one of those groups, you may act too. Anyone may look things up.")
    return (f"You may look things up; acknowledging and snoozing is for {may}.")


def routes_view(account: str, taken: Sequence[tuple[str, int, RouteConfig]],
                configured: bool) -> tuple[str, list[dict]]:
    """Which route an account's alert takes per server and event: channel and owners (names
    shown, not mentioned: this answer notifies nobody)."""
    lines = [f"*Routes for* {literal(account)}"
             + ("" if configured else " (no [[routes]] configured: every alert goes to its "
                                      "server's channel, naming nobody)")]
    for server, event, route in taken[:40]:
        owners = ", ".join(f"`{show(o, 24)}`" for o in route.owners) or "nobody"
        lines.append(f"• {show(server, 64)}, event {event}: route *{show(route.name, 64)}* → "
                     f"{channel_ref(route.channel)}, owners {owners}")
    if len(taken) > 40:
        lines.append(f"• and {len(taken) - 40} more; name a server to narrow it")
    return f"Routes for {inert(account)}", fit(pack(lines))


def summary_view(summary: Summary, *, since_seconds: float,
                 unwatched: Sequence[str]) -> tuple[str, list[dict]]:
    """`/submitwatch summary`: the period's figures, one line each."""
    def median_text(seconds: float | None) -> str:
        return span(seconds) if seconds is not None else "none in the period"

    def top(items: Sequence[tuple[str, int]]) -> str:
        return ", ".join(f"{literal(name, LIST_NAME)} ({count})" for name, count in items) or \
            "none"

    lines = [
        f"*Summary of the last {window(since_seconds)}* (since {slack_date(summary.since)})",
        f"• new accounts: {summary.new_accounts}; incidents opened: {summary.opened}; events: "
        f"{summary.events}",
        f"• open now: {summary.open_now}, of which acknowledged: {summary.acknowledged_now}",
        f"• top servers: {top(summary.top_servers)}",
        f"• top connectors: {top(summary.top_connectors)}",
        f"• median time to acknowledge: {median_text(summary.median_to_ack)}; to resolve: "
        f"{median_text(summary.median_to_resolve)}",
        "• servers not watched: " + (", ".join(f"*{show(s, 64)}*" for s in unwatched)
                                     or "none, every server polls"),
    ]
    text = (f"Summary: {summary.new_accounts} new account(s), {summary.open_now} open "
            f"incident(s), {summary.events} event(s) in the last {window(since_seconds)}")
    return text, fit(pack(lines))
