"""Block Kit for alerts and thread notes: the one place event-derived text meets Slack.

Rules, in one place:
- prose that carries an account or connector name is rich text (bot/slack/richtext.py): Slack shows
  its text elements literally, so `*boss*` in a name is not bold and `<!channel>` pings nobody;
- every untrusted value in mrkdwn goes through `escape` (after `clip`, so an entity is never cut);
- control and invisible characters are shown as escapes, in rich text and mrkdwn alike;
- PowerShell commands go into `rich_text_preformatted` blocks, whose text Slack shows literally:
  no mrkdwn, no mentions, no way for a backtick in an account name to end a code span;
- header text is plain_text, which Slack never parses for mentions or links;
- a plain `text` fallback is always sent (notifications and screen readers use it).
Pure: no I/O, no clock (`now` comes in).
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import UTC, datetime

from bot.core.config import ServerConfig
from bot.core.devices import DeviceLookup
from bot.core.findings import Finding
from bot.core.messages import ActionNote, BotLate, ServerDown, ServerUp, SpreadNote
from bot.core.model import Incident, Snooze
from bot.core.names import is_invisible, mixed_script_warning
from bot.exchange.advice import Advice, Step, step_lines
from bot.exchange.diagnosis import Diagnosis, Target, diagnose_incident, sightings_of
from bot.slack import richtext as rt
from bot.slack.blocks import (
    BUDGET,
    HEADER_LIMIT,
    MESSAGE_BLOCKS,
    SECTION_LIMIT,
    clip_units,
    context,
    cut,
    escape,
    fallback,
    fit,
    inert,
    markers_off,
    mention,
    owner_mention,
    section,
    show,
    slack_date,
    span,
    utc_time,
)
from bot.slack.devices import device_blocks, device_line
from bot.slack.richtext import Part
from bot.slack.text import (
    FIX_GIVES_EACH,
    MORE_IN_FIX,
    MORE_PER_CONNECTOR,
    SLASH_FIX_GIVES_EACH,
    TARGET_SOURCE,
)

FALLBACK_SERVERS = 5        # servers named in an alert's notification text
MAX_FIXES = 3               # connectors with commands per cause in an alert; Show fix: more
FIX_MOST = 5                # ... in Show fix (each takes up to 9 blocks; a message holds 50)
EXPLANATION_LIMIT = 2500    # characters of a cause's explanation (names can make it long)
DETAIL_LIMIT = 1200         # ... of one fix's detail or verify note
# Where the rest is, when a message is cut (mrkdwn), and after "N more connector(s)" (plain).
# The buttons on an alert; handlers.actions listens for these action_ids.
ACTION_ACK = "submitwatch_ack"
ACTION_UNACK = "submitwatch_unack"
ACTION_SNOOZE = "submitwatch_snooze"        # a static_select; option values are seconds
ACTION_UNSNOOZE = "submitwatch_unsnooze"
ACTION_SHOW_FIX = "submitwatch_show_fix"
ACTION_FIXED = "submitwatch_fixed"          # Mark fixed: the closed loop (bot.engine.fixloop)
ACTION_IDS = (ACTION_ACK, ACTION_UNACK, ACTION_SNOOZE, ACTION_UNSNOOZE, ACTION_SHOW_FIX,
              ACTION_FIXED)
SNOOZE_CHOICES = (("1 hour", 3600), ("4 hours", 4 * 3600), ("24 hours", 24 * 3600),
                  ("7 days", 7 * 24 * 3600))


def chat_state(incident: Incident, snoozes: Iterable[Snooze] = ()) -> list[str]:
    """Who owns the incident and what silences it, one mrkdwn line each."""
    lines = []
    if incident.acked_by:
        line = f":eyes: Acknowledged by {mention(incident.acked_by)}"
        if incident.acked_at:
            line += f" at {utc_time(incident.acked_at)}"
        if incident.ack_note:
            line += f": {show(incident.ack_note, 300)}"
        lines.append(line)
    for snooze in snoozes:
        what = "this account" if snooze.kind == "account" else "this incident"
        lines.append(f":zzz: Snoozed ({what}) by {mention(snooze.created_by)} until "
                     f"{slack_date(snooze.until)}: {show(snooze.reason, 300)}. Events are still "
                     "counted; no thread notes until then.")
    return lines


# --- the diagnosis: one cause, what it means and what to run --------------------------------------

def diagnosis_blocks(diagnosis: Diagnosis, *, most: int = MAX_FIXES, full: bool = False,
                     only: Iterable[Target] | None = None,
                     more: str | None = None) -> list[dict]:
    """One cause (bot.exchange.diagnosis): what happened and why, what it rests on, and per
    connector the fixes in order with their commands.

    The alert (`full` False) shows each place's first fix with its commands and names the
    others; Show fix and `/submitwatch fix` (`full`) show every fix, its commands and how to
    verify. With `only` (a thread note about new servers or connectors): the headline and those
    places' first fixes; the alert above it explains the cause.
    """
    targets = list(diagnosis.targets if only is None else only)
    advice = diagnosis.advice
    if only is not None:
        blocks = [rt.rich(_headline(diagnosis))]
        for target in targets[:most]:
            blocks += _place_blocks(target, full=False, others=False)
        return blocks
    blocks = [rt.rich(_headline(diagnosis),
                      [rt.name(advice.explanation, EXPLANATION_LIMIT, strong=False)],
                      [rt.bold("Rests on: "), ", ".join(advice.rests_on) + "."])]
    refused = {t.advice.refusal for t in targets}
    everywhere = None not in refused and len(refused) == 1   # the account's name, say
    if everywhere:
        blocks.append(rt.rich([rt.bold("No command is shown: "), advice.refusal or ""]))
    if advice.identify is not None:
        blocks.append(rt.preformatted(_step_lines((advice.identify,))))
    if not any(f.steps for t in targets for f in t.advice.fixes) and (
            everywhere or refused == {None}):
        # The fixes name no connector (a built-in account): say them once, then where.
        blocks += _fix_blocks(advice, full=full, others=not full)
        seen = [t for t in targets if t.connector and t.source == "event"]
        if seen:
            blocks.append(rt.rich(["Seen on ", *rt.joined(_connector(t) for t in seen[:most])]))
        return blocks
    for target in targets[:most]:
        blocks += _place_blocks(target, full=full, refusal=not everywhere)
    if len(targets) > most:
        blocks.append(rt.rich([f"{len(targets) - most} more connector(s) not shown. " +
                               (more or FIX_GIVES_EACH)]))
    return blocks


def _headline(diagnosis: Diagnosis) -> list[Part]:
    servers = [s for s in diagnosis.servers if s]
    line: list[Part] = [rt.bold(diagnosis.headline)]
    if servers:
        line += [" on ", *rt.joined(rt.name(s, 64, strong=False) for s in servers)]
    return line


def _connector(target: Target) -> dict:
    return rt.name(target.connector or "?", 120)


def _place_blocks(target: Target, *, full: bool, others: bool = True,
                  refusal: bool = True) -> list[dict]:
    """Where (the connector and how it is known), then its fixes: in words only, with the
    reason, when a name there cannot go into a command."""
    if target.connector:
        where: list[Part] = ["Connector ", _connector(target), " on ",
                             rt.name(target.server, 64, strong=False),
                             f" ({TARGET_SOURCE[target.source]})"]
    else:
        where = ["On ", rt.name(target.server, 64), f" ({TARGET_SOURCE[target.source]})"]
    lines = [where]
    if refusal and target.advice.refusal:
        lines.append([rt.bold("No command for it: "), target.advice.refusal])
    return [rt.rich(*lines), *_fix_blocks(target.advice, full=full, others=others)]


def _fix_blocks(advice: Advice, *, full: bool, others: bool) -> list[dict]:
    """The first fix (the alert) or every fix (Show fix), each with its commands."""
    blocks: list[dict] = []
    shown = advice.fixes if full else advice.fixes[:1]
    for n, remedy in enumerate(shown, 1):
        label = (f"{n}. " if full and len(advice.fixes) > 1 else "What to do: ")
        blocks.append(rt.rich([rt.bold(label + remedy.title),
                               ": " if remedy.detail else "",
                               rt.name(remedy.detail, DETAIL_LIMIT, strong=False)]))
        if remedy.steps:
            blocks.append(rt.preformatted(_step_lines(remedy.steps)))
    if others and not full and len(advice.fixes) > 1:
        rest = [f"{n}. {r.title}" for n, r in enumerate(advice.fixes[1:], 2)]
        blocks.append(rt.rich([rt.bold("Other fixes: "), "; ".join(rest),
                               ". Show fix gives their commands."]))
    if full and advice.verify:
        blocks.append(rt.rich([rt.bold("Verify: "),
                               rt.name(advice.verify_note, DETAIL_LIMIT, strong=False)]))
        blocks.append(rt.preformatted(_step_lines(advice.verify)))
    return blocks


def _step_lines(steps: Iterable[Step]) -> str:
    return "\n".join(step_lines(steps))


def cause_lines(diagnoses: Iterable[Diagnosis]) -> list[list[Part]]:
    """One line per cause: what it is, where, and its first fix (for `show`)."""
    lines = []
    for d in diagnoses:
        first = d.advice.fixes[0].title if d.advice.fixes else "see Show fix"
        lines.append([*_headline(d), ": ", first, "."])
    return lines


# --- the alert ------------------------------------------------------------------------------------

def alert(incident: Incident, servers: Mapping[str, ServerConfig],
          snoozes: Iterable[Snooze] = (), owners: Iterable[str] = (),
          finding: Finding | None = None,
          directory: bool | None = None,
          devices: DeviceLookup | None = None, *,
          budget: int = BUDGET) -> tuple[str, list[dict]]:
    """The living alert message for an incident: (fallback text, blocks). `owners`: its
    route's (configuration only: never built from event data), named while it is open.
    `finding`: the last directory check (bot.directory.adcheck), shown as its Directory line
    and telling the diagnosis; `directory`: a [directory] is configured (default: a finding
    was given). `devices`: what the protocol log named (bot.slack.devices), shown under the
    facts while the incident is open; None (the look-up is off): no Devices line. `budget`:
    the most block text (bot.slack.blocks.size); the diagnosis in the middle is cut to fit."""
    account = inert(incident.account)
    resolved = incident.status == "resolved"
    confirmed = incident.fix_state == "confirmed"
    snoozes = list(snoozes) if not resolved else []
    title = ("Confirmed fixed: " if confirmed else "Resolved: " if resolved
             else "SMTP submit denied: ") + incident.account
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                    "text": clip_units(_printable(title), HEADER_LIMIT)}},
        *[context(line) for line in chat_state(incident, snoozes)],
    ]
    owned = " ".join(owner_mention(o) for o in owners) if not resolved else ""
    if owned:
        blocks.append(context(f"Owners: {owned}"))
    fixed = fix_line(incident) if confirmed or not resolved else None
    if fixed:
        blocks.append(rt.rich(fixed))
    if finding is not None and not resolved:
        blocks.append(rt.rich(directory_line(finding)))
    warning = mixed_script_warning(incident.account)
    if warning and not resolved:
        blocks.append(rt.rich([rt.emoji("warning"), " ", warning]))
    if resolved and not confirmed:
        blocks.append(rt.rich([
            "No new event for ", rt.name(incident.account), " since ", rt.date(incident.last_seen),
            "; resolved ", rt.date(incident.resolved_at or incident.last_seen),
            ". A new event opens a new alert."]))
    elif not resolved:
        for diagnosis in diagnose_incident(incident, servers, finding, directory=directory):
            blocks += diagnosis_blocks(diagnosis)
    lines = facts(incident)
    if devices is not None and not resolved:
        lines.append(device_line(devices))
    blocks.append(rt.rich(*lines))
    if not resolved:
        blocks.append(_buttons(incident, snoozed=bool(snoozes)))
    blocks.append(context(f"SubmitWatch · incident #{incident.id} · events "
                           f"{', '.join(str(i) for i in incident.event_ids)}"))
    names = incident.server_names
    servers_text = ", ".join(inert(n, 64) for n in names[:FALLBACK_SERVERS]) + (
        f" and {len(names) - FALLBACK_SERVERS} more" if len(names) > FALLBACK_SERVERS else "")
    state = "Confirmed fixed" if confirmed else "Resolved" if resolved else "SMTP submit denied"
    text = (f"{state}: {account} on {servers_text} "
            f"({incident.event_count} event{'s' if incident.event_count != 1 else ''})"
            + (f" · owners {owned}" if owned else ""))
    return fallback(text), _fit(blocks, tail=3 if not resolved else 2, budget=budget)


def fix_line(incident: Incident) -> list[Part] | None:
    """Where the closed loop stands (bot.engine.fixloop), for an incident someone marked fixed."""
    state = incident.fix_state
    if state is None or incident.fixed_at is None:
        return None
    marked: list[Part] = ["Marked fixed by ", rt.user(incident.fixed_by), " ",
                          rt.date(incident.fixed_at)]
    if incident.fix_note:
        marked += [" (", rt.name(incident.fix_note, 300, strong=False), ")"]
    if state == "waiting":
        return [rt.emoji("hourglass_flowing_sand"), " ", *marked,
                ": waiting for the directory to show the right (replication can take a while; "
                "it is read again every few minutes)."]
    if state in ("watching", "failing_check"):
        seen = incident.fix_seen_at or incident.fixed_at
        return [rt.emoji("mag"), " ", *marked, ": watching the events since ", rt.date(seen),
                ". No new failure for the confirmation window confirms it."]
    if state == "failing":
        return [rt.emoji("x"), " ", *marked, ", but it failed again ",
                rt.date(incident.fix_failed_at or incident.last_seen),
                ": see the thread. Mark fixed again once it is changed."]
    return [rt.emoji("white_check_mark"), " Confirmed fixed: ", *marked,
            "; no failure since for the confirmation window. A new event opens a new alert."]


def directory_blocks(finding: Finding) -> list[dict]:
    """What the directory said, in full (Show fix, `show`): the Directory line, then per
    connector why, its bindings, role and authentication."""
    lines: list[list[Part]] = [directory_line(finding)]
    for fact in finding.connectors[:10]:
        line: list[Part] = ["• ", rt.name(fact.place, 200), ": ", rt.name(fact.why or
                                                                          fact.brief(), 600,
                                                                          strong=False)]
        if fact.found:
            line += [f" · {'enabled' if fact.enabled is not False else 'DISABLED'}",
                     f" · role {fact.role or 'HubTransport (unset)'}",
                     f" · auth {', '.join(fact.auth) or 'none'}",
                     " · bindings ", rt.name(", ".join(fact.bindings[:4]) or "none", 200,
                                             strong=False)]
        lines.append(line)
    if len(finding.connectors) > 10:
        lines.append([f"{len(finding.connectors) - 10} more connector(s): "
                      "/submitwatch verify gives each."])
    return [rt.rich(*lines)]


def directory_line(finding: Finding) -> list[Part]:
    """The alert's Directory line: what Active Directory said at the last check."""
    return [rt.bold("Directory"), f" ({utc_time(finding.checked_at)}): ",
            rt.name(finding.summary(), 1200, strong=False)]


def facts(incident: Incident) -> list[list[Part]]:
    """Servers, connectors (with the event that named each), count, first and last seen."""
    named: dict[str, set[int]] = {}
    for sighting in sightings_of(incident):
        if sighting.connector:
            named.setdefault(sighting.connector, set()).add(sighting.event_id)
    connectors: list[Part] = []
    for connector, ids in list(named.items())[:5]:
        if connectors:
            connectors.append(", ")
        connectors += [rt.name(connector, 120, strong=False),
                       f" ({'/'.join(str(i) for i in sorted(ids))})"]
    if len(named) > 5:
        connectors.append(f" and {len(named) - 5} more")
    return [
        [rt.bold("Servers: "), *rt.joined(rt.name(n, 64, strong=False)
                                          for n in incident.server_names[:10])],
        [rt.bold("Connectors: "), *(connectors or ["not named by any event"])],
        [rt.bold("Events: "), f"{incident.event_count:,}"],
        [rt.bold("First / last seen: "), rt.date(incident.first_seen), " / ",
         rt.date(incident.last_seen)],
    ]


def fix_message(incident: Incident, servers: Mapping[str, ServerConfig],
                finding: Finding | None = None,
                directory: bool | None = None,
                devices: DeviceLookup | None = None, *,
                budget: int = BUDGET) -> tuple[str, list[dict]]:
    """Every cause and command for an incident (the alert shows fewer), for "Show fix"; with
    what the directory said at its last check, in full, and the devices the protocol log
    named (or how to turn the log on); `devices` None: the look-up is off. Past `budget`
    (or 50 blocks) the rest is cut and a line says `/submitwatch fix` gives each connector's."""
    text = f"The fix for {inert(incident.account)} (incident #{incident.id})"
    blocks = [rt.rich([rt.bold("The fix for "), rt.name(incident.account),
                       f" (incident #{incident.id})"])]
    if finding is not None:
        blocks += directory_blocks(finding)
    if devices is not None:
        blocks += device_blocks(devices)
    for diagnosis in diagnose_incident(incident, servers, finding, directory=directory):
        blocks += diagnosis_blocks(diagnosis, most=FIX_MOST, full=True,
                                   more=SLASH_FIX_GIVES_EACH)
    return fallback(text), _fit(blocks, more=MORE_PER_CONNECTOR, budget=budget)


def _reminder(incident: Incident, detail: ActionNote,
               owners: Iterable[str]) -> tuple[str, list[dict]]:
    """Nobody has acknowledged the incident and it keeps failing: say so to its owners."""
    named = " ".join(owner_mention(o) for o in owners)
    open_for = span((detail.at - incident.opened_at).total_seconds())
    text = (f":bell: {named + ': ' if named else ''}still failing and nobody has acknowledged "
            f"it: {incident.event_count} event(s) in {open_for}, last "
            f"{slack_date(incident.last_seen)}. Acknowledge or snooze it to stop these reminders.")
    line: list[Part] = [rt.emoji("bell"), " ", rt.name(incident.account, strong=False),
                        " is still failing and nobody has acknowledged it: "
                        f"{incident.event_count} event(s) in {open_for}, last ",
                        rt.date(incident.last_seen),
                        ". Acknowledge or snooze it to stop these reminders."]
    # The mentions (configuration only) in mrkdwn and in the text that drives notifications.
    return text, ([context(f"Owners: {named}")] if named else []) + [rt.rich(line)]


def thread_note(incident: Incident, detail: SpreadNote,
                servers: Mapping[str, ServerConfig], *,
                budget: int = BUDGET) -> tuple[str, list[dict]]:
    """A thread reply when the incident spreads to a new server or connector."""
    new_servers, new_connectors = detail.servers, detail.connectors
    parts: list[str] = []
    line: list[Part] = [rt.name(incident.account), ": "]
    if new_servers:
        parts.append("now also seen on " + ", ".join(f"*{inert(s, 64)}*" for s in new_servers))
        line += ["now also seen on ", *rt.joined(rt.name(s, 64) for s in new_servers)]
    if new_connectors:
        parts.append("connector named by the event: " +
                     ", ".join(f"*{inert(c)}*" for c in new_connectors))
        line += ["; " if new_servers else "", "connector named by the event: ",
                 *rt.joined(rt.name(c) for c in new_connectors)]
    text = f"{inert(incident.account)}: " + "; ".join(parts)
    blocks = [rt.rich(line)]
    wanted = {c.casefold() for c in new_connectors}
    for diagnosis in diagnose_incident(incident, servers):
        relevant = [t for t in diagnosis.targets if t.server in new_servers
                    or (t.connector or "").casefold() in wanted]
        if relevant:
            blocks += diagnosis_blocks(diagnosis, only=relevant)
    return fallback(text), _fit(blocks, budget=budget)


def _fit(blocks: list[dict], *, tail: int = 0, more: str = MORE_IN_FIX,
         budget: int = BUDGET) -> list[dict]:
    """Never more blocks than a message takes, nor more block text than `budget`: the middle
    is cut, the last `tail` blocks (facts, buttons, footer) are kept, and a line says where
    the rest is."""
    return fit(blocks, MESSAGE_BLOCKS, tail=tail, more=more, budget=budget)


def action_note(incident: Incident, detail: ActionNote,
                owners: Iterable[str] = ()) -> tuple[str, list[dict]]:
    """A thread reply recording what a responder (or a snooze's end) did to the incident.

    Rich text, since the note carries the account's name (and the responder's own words)."""
    action = detail.action
    by = rt.user(detail.by)
    when = utc_time(detail.at)
    if action == "ack":
        line: list[Part] = ["Acknowledged by ", by, f" at {when}"]
        if detail.took_over_from:
            line += [", taking over from ", rt.user(detail.took_over_from)]
        if detail.note:
            line += [": ", rt.name(detail.note, 300, strong=False)]
    elif action == "unack":
        line = [by, " removed the acknowledgement of ", rt.user(detail.was), f" at {when}"]
    elif action == "snooze" and detail.until is not None:
        what = "every incident of this account" if detail.scope == "account" else \
            "this incident"
        line = [by, f" snoozed {what} until ", rt.date(detail.until), ": ",
                rt.name(detail.reason or "", 300, strong=False)]
    elif action == "unsnooze":
        line = [by, f" ended the snooze at {when}; the alert is live again"]
    elif action == "snooze_expired":
        line = [f"The snooze ended at {when}; the alert is live again"]
    elif action == "reminder":
        return _reminder(incident, detail, owners)
    elif action == "fixed":
        line = ["Marked fixed by ", by, f" at {when}"]
        if detail.note:
            line += [": ", rt.name(detail.note, 300, strong=False)]
        line += ["; waiting for the directory to show the right, read every few minutes"
                 if detail.directory else
                 "; no [directory] is configured, so SubmitWatch watches the events alone"]
    elif action == "fix_seen" and detail.builtin:
        line = ["The directory shows a built-in account (",
                rt.name(detail.finding or "", 600, strong=False), "), and no right lets one "
                "through: "
                "watching the events, which stop once the device uses an account of its own"]
    elif action == "fix_seen" and not detail.directory:
        line = ["Nothing to check in the directory for it (no event named a connector it "
                "could read): watching the events"]
    elif action == "fix_seen":
        took = f" {span(detail.seconds)} after it was marked fixed" if detail.seconds else ""
        line = [f"The directory shows the right now{took}: ",
                rt.name(detail.finding or "", 1200, strong=False),
                ". Watching the events"]
    elif action == "still_failing":
        line = [rt.emoji("x"), " Still failing after it was marked fixed"]
        if detail.finding:
            line += [". The directory shows now: ", rt.name(detail.finding, 1500, strong=False)]
        elif not detail.directory:
            line += [" (no [directory] is configured, so SubmitWatch cannot say why)"]
    elif action == "confirmed":
        line = [rt.emoji("white_check_mark"), " Confirmed fixed: no failure for ",
                span(detail.seconds or 0), " since the right showed"]
    else:
        raise ValueError(f"unknown action note {action!r}")
    line += [". (", rt.name(incident.account, strong=False),
             f": {incident.event_count} event(s) so far)"]
    block = rt.rich(line)
    return fallback_text(block), [block]


def fallback_text(block: dict) -> str:
    """A rich block as the notification text: inert mrkdwn, mentions and dates kept."""
    out = []
    for line in block["elements"]:
        for element in line["elements"]:
            kind = element["type"]
            if kind == "user":
                out.append(f"<@{element['user_id']}>")  # rt.user made it only for a real ID
            elif kind == "date":
                out.append(slack_date(datetime.fromtimestamp(element["timestamp"], UTC)))
            elif kind == "emoji":
                out.append(f":{element['name']}:")
            else:   # our words and untrusted names alike: nothing in them formats or pings
                out.append(markers_off(escape(element["text"].replace("`", "\u02cb"))))
    return cut("".join(out), SECTION_LIMIT)


def server_back(server: str, since: datetime) -> tuple[str, list[dict]]:
    """The "not being watched" alert as it reads once the server polls again."""
    text = (f":white_check_mark: *{show(server, 64)}* is watched again (it could not be polled "
            f"from {slack_date(since)}; see the thread).")
    return text, [section(text)]


def server_down(server: str, detail: ServerDown) -> tuple[str, list[dict]]:
    """The one alert for a server SubmitWatch cannot poll: silence from it means nothing now."""
    name = show(server, 64)
    since, never = detail.since, detail.never
    last = (f"It never polled successfully since SubmitWatch started watching it at "
            f"{slack_date(since)}." if never else f"Last good poll: {slack_date(since)}.")
    text = (f":rotating_light: *{name} is not being watched*: {detail.failures} polls in a "
            f"row failed, so 1018/1020 events there go unnoticed. {last}")
    return text, [
        {"type": "header", "text": {"type": "plain_text", "emoji": False,
                                    "text": clip_units(
                                        f"Not being watched: {_printable(server)}",
                                        HEADER_LIMIT)}},
        section(text),
        section(f"*Last error:* {show(detail.error, 1500)}"),
        context("Events are not lost while the server keeps them: the next good poll reads "
                 "from where SubmitWatch stopped. `/submitwatch status` shows every server."),
    ]


def bot_late(detail: BotLate) -> tuple[str, list[dict]]:
    """SubmitWatch itself could not poll on time (its scheduler's jobs did not start)."""
    jobs = ", ".join(show(job, 64) for job in detail.jobs[:10])
    late = span(detail.late_seconds)
    text = (f":warning: *SubmitWatch could not poll on time*: {jobs} had not started for {late} "
            "past their interval (the system clock was probably stepped back, or the machine "
            "was suspended). They run again now and keep their schedule; no event is lost, "
            "the next polls read on from each server's cursor.")
    return text, [section(text)]


def refused_notice(detail: Mapping) -> tuple[str, list[dict]]:
    """One plain notice in the channel: Slack refused a message (too long, invalid) even in a
    shorter form, so SubmitWatch gave it up rather than retry it forever. `detail`: `what`
    (alert, digest, reply, server, bot), `ref` (the incident or digest number, the server)
    and Slack's `code`."""
    what, ref = detail.get("what"), detail.get("ref")
    code = show(str(detail.get("code") or "?"), 60)
    number = ref if isinstance(ref, int) else None
    message, where = {
        "alert": (f"the alert for incident #{number}", f"`/submitwatch show #{number}` gives it"),
        "reply": (f"a thread note about incident #{number}",
                  f"`/submitwatch show #{number}` gives the incident"),
        "digest": (f"storm digest #{number}", "`/submitwatch history` lists its incidents"),
        "server": (f"the notice about server {inert(str(ref or '?'), 64)}",
                   "`/submitwatch status` gives each server's state"),
    }.get(str(what), ("a SubmitWatch notice", "`/submitwatch status` gives the state"))
    text = (f":warning: Slack refused {message} ({code}), in its full form and shortened, so "
            f"it is not shown or not up to date here: {where}. `/submitwatch status` lists the "
            "messages Slack refused. It will refuse them again unchanged, so they are not "
            "retried: a SubmitWatch bug, please report it.")
    return text, [section(text)]


def server_up(server: str, detail: ServerUp) -> tuple[str, list[dict]]:
    text = (f"*{show(server, 64)}* polls again since {utc_time(detail.at)} (down since "
            f"{utc_time(detail.since)}); events from that time are being read now.")
    return text, [section(text)]


def _buttons(incident: Incident, *, snoozed: bool) -> dict:
    """Acknowledge, Snooze, Show fix, and Mark fixed unless the loop already runs."""
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
    elements = [ack, quiet, _button("Show fix", ACTION_SHOW_FIX, value)]
    if incident.fix_state in (None, "failing"):
        elements.append(_button("Mark fixed", ACTION_FIXED, value))
    return {"type": "actions", "block_id": f"incident-{incident.id}", "elements": elements}


def _button(label: str, action_id: str, value: str, style: str | None = None) -> dict:
    button = {"type": "button", "action_id": action_id, "value": value,
              "text": {"type": "plain_text", "text": label}}
    if style:
        button["style"] = style
    return button


def _printable(text: str) -> str:
    return "".join("?" if not ch.isprintable() or is_invisible(ch) else ch for ch in text)
