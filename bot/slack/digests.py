"""A storm's digest: the one message listing the incidents that opened in a channel beyond the
storm threshold (bot.engine.outbox.joins_digest), its thread's detail replies and its notes.

Every account name is untrusted and shown with `literal`; mentions come only from the
configuration (route owners) or from Slack's own user IDs (who acted)."""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime

from bot.core.config import ServerConfig
from bot.core.devices import DeviceLookup
from bot.core.model import Digest, DigestLines, Incident
from bot.exchange.diagnosis import cause_of, sightings_of
from bot.slack import richtext as rt
from bot.slack.alerts import ACTION_ACK, SNOOZE_CHOICES, fallback_text
from bot.slack.blocks import (
    BUDGET,
    MESSAGE_BLOCKS,
    OPTION_LIMIT,
    clip_units,
    context,
    fallback,
    fit,
    header,
    literal,
    owner_mention,
    pack,
    plural,
    section,
    show,
    size,
    slack_date,
    utc_time,
)
from bot.slack.devices import device_brief
from bot.slack.text import SHORT_CAUSES

ACTION_DIGEST_ACK = "submitwatch_digest_ack"        # a button; value: the digest's id
ACTION_DIGEST_SNOOZE = "submitwatch_digest_snooze"  # a static_select; values "digest:seconds"
DIGEST_ACTION_IDS = (ACTION_DIGEST_ACK, ACTION_DIGEST_SNOOZE)
#: Slack's limit on a static_select's options: "Acknowledge one" lists at most this many.
MAX_OPTIONS = 100


def digest(lines: DigestLines, servers: Mapping[str, ServerConfig], *,
           snoozed: Iterable[int] = (), owners: Iterable[str] = (),
           devices: Mapping[int, DeviceLookup] | None = None,
           first_seen: datetime | None = None,
           budget: int = BUDGET) -> tuple[str, list[dict]]:
    """The digest message: what the storm is, its totals, its newest lines, and the buttons
    that act on all of it or one line of it. `devices`: the device look-ups by incident id
    (none: the look-up is off). `first_seen`: the earliest event of its incidents (the events'
    clock, which the lines use; default: when the digest opened). As many of the newest lines
    as fit `budget` (bot.slack.blocks.size) are listed; the totals count every incident and
    the rest are left to `/submitwatch history`."""
    snoozed = set(snoozed)
    rendered = [line(i, servers, snoozed=i.id in snoozed, devices=_devices_of(i, devices))
                for i in lines.incidents]
    shown = len(rendered)
    while True:
        blocks = _digest_blocks(lines, rendered[:shown], owners, first_seen)
        if shown == 0 or (size(blocks) <= budget and len(blocks) <= MESSAGE_BLOCKS):
            break
        shown -= 1
    d = lines.digest
    ended = d.ended_at is not None
    named = " ".join(owner_mention(o) for o in owners)
    text = (f"{'Storm over' if ended else 'Storm'}: {plural(lines.total, 'account')} refused "
            f"SMTP submit ({lines.open:,} open)" + (f" · owners {named}" if named else ""))
    return fallback(text), fit(blocks, budget=budget)


def _digest_blocks(lines: DigestLines, rendered: list[str], owners: Iterable[str],
                   first_seen: datetime | None) -> list[dict]:
    """The digest's blocks listing the first len(rendered) of lines.incidents."""
    d = lines.digest
    ended = d.ended_at is not None
    title = (f"Storm over: {plural(lines.total, 'account')} refused SMTP submit" if ended
             else f"Storm: {plural(lines.total, 'account')} refused SMTP submit")
    start = first_seen or d.opened_at
    since = f"since {slack_date(start)}"
    if ended and d.ended_at is not None:
        since = f"from {slack_date(start)} to {slack_date(max(start, d.last_joined_at))}"
    blocks: list[dict] = [header(title), section(
        f"More incidents opened in this channel than the storm threshold, so these are listed "
        f"here instead of one alert each: {plural(lines.total, 'incident')} {since}. Each is "
        "still its own incident: `/submitwatch show #N`, `/submitwatch fix #N`, "
        "`/submitwatch ack #N`.")]
    causes = " · ".join(f"{plural(n, 'account')} with event {event}"
                        for event, n in lines.by_event)
    blocks.append(context(f"{causes} · {plural(lines.events, 'event')} · {lines.open:,} open, "
                          f"{lines.acknowledged:,} acknowledged, {lines.resolved:,} resolved"
                          + (" · *the storm is over*" if ended else "")))
    named = " ".join(owner_mention(o) for o in owners)
    if named and lines.open:
        blocks.append(context(f"Owners: {named}"))
    listed = lines.incidents[:len(rendered)]
    blocks += pack(rendered)
    hidden = lines.total - len(listed)
    if hidden > 0:
        blocks.append(context(f"{plural(hidden, 'older incident')} not listed here (the "
                              f"{plural(len(listed), 'newest incident')} are): "
                              "`/submitwatch history` shows every one."))
    if lines.open:
        blocks.append(_buttons(d, [i for i in listed if i.status == "open" and not i.acked_by]))
    blocks.append(context(f"SubmitWatch · storm digest #{d.id} · the thread details each line"))
    return blocks


def line(incident: Incident, servers: Mapping[str, ServerConfig], *, snoozed: bool = False,
         devices: DeviceLookup | None = None) -> str:
    """One incident in a digest: number, account, cause, where, how much, since when, and
    the devices the protocol log named (bot.slack.devices)."""
    mark = (":white_check_mark:" if incident.status == "resolved" else
            ":eyes:" if incident.acked_by else ":zzz:" if snoozed else ":red_circle:")
    brief = device_brief(devices)
    return (f"{mark} *#{incident.id}* {literal(incident.account, 80)}: {_causes(incident, servers)}"
            f" on {_where(incident)} · {plural(incident.event_count, 'event')} · first seen "
            f"{slack_date(incident.first_seen)}" + (f" · {brief}" if brief else ""))


def _devices_of(incident: Incident,
                devices: Mapping[int, DeviceLookup] | None) -> DeviceLookup | None:
    return devices.get(incident.id) if devices and incident.id is not None else None


def _causes(incident: Incident, servers: Mapping[str, ServerConfig]) -> str:
    causes: list[str] = []
    for sighting in sightings_of(incident):
        cfg = servers.get(sighting.server)
        cause = SHORT_CAUSES[cause_of(sighting.event_id, cfg.version if cfg else None)]
        if cause not in causes:
            causes.append(cause)
    return ", ".join(causes) or "refused"


def _where(incident: Incident) -> str:
    connectors = [c for c in incident.connectors][:2]
    if connectors:
        more = len(incident.connectors) - len(connectors)
        return ", ".join(literal(c, 80) for c in connectors) + (f" +{more}" if more > 0 else "")
    return ", ".join(show(name, 64) for name in incident.server_names[:3])


def details(incidents: list[Incident], servers: Mapping[str, ServerConfig], *,
            not_detailed: int = 0,
            devices: Mapping[int, DeviceLookup] | None = None,
            done: int = 0, total: int | None = None,
            budget: int = BUDGET) -> tuple[str, list[dict]]:
    """A thread reply detailing new lines of the digest; `not_detailed`: how many more the
    thread will not detail (it detailed as many as it ever will); `devices`: the device
    look-ups by incident id; `done`: lines the thread detailed before; `total`: incidents in
    the storm so far. Call `details_that_fit` first: all of `incidents` are listed."""
    out = [_detail_line(i, servers, devices) for i in incidents]
    total = max(total or 0, done + len(incidents))
    if done == 0 and total == len(incidents):
        title = f"*{plural(total, 'incident')} joined this storm:*"
    else:
        title = (f"*Incidents {done + 1:,}–{done + len(incidents):,} of the {total:,} that "
                 "joined this storm so far:*")
    blocks = pack(out, title=title)
    if not_detailed > 0:
        blocks.append(context(f"{plural(not_detailed, 'more incident')} joined; this thread "
                              "details no more of them. `/submitwatch history` lists them all."))
    first, last = done + 1, done + len(incidents)
    text = (f"{plural(total, 'incident')} joined the storm: {first:,}–{last:,} detailed here"
            if total != len(incidents) else f"{plural(total, 'incident')} joined the storm")
    return fallback(text), fit(blocks, budget=budget)


def details_that_fit(incidents: list[Incident], servers: Mapping[str, ServerConfig], *,
                     devices: Mapping[int, DeviceLookup] | None = None,
                     budget: int = BUDGET) -> int:
    """How many of `incidents` (at least one) one detail reply holds within `budget`, leaving
    room for its title and closing line."""
    room, count = budget - 600, 0
    for incident in incidents:
        room -= size(section(_detail_line(incident, servers, devices))) + 1
        if room < 0 and count:
            break
        count += 1
    return count


def _detail_line(incident: Incident, servers: Mapping[str, ServerConfig],
                 devices: Mapping[int, DeviceLookup] | None) -> str:
    return (line(incident, servers, devices=_devices_of(incident, devices))
            + f" · `/submitwatch fix #{incident.id}`")


def note(detail: Mapping, digest: Digest) -> tuple[str, list[dict]]:
    """A thread reply: the storm ended, or a person acted on one line or all of the digest."""
    if detail.get("storm") == "ended":
        text = (f"The storm is over: no new incident for a storm window since "
                f"{utc_time(digest.last_joined_at)}. The next one in this channel gets its own "
                "alert again; the incidents above stay open until they are quiet or fixed.")
        return text, [section(text)]
    action = detail["action"]
    what = _what(detail)
    if action == "ack":
        parts: list = ["Acknowledged by ", rt.user(detail.get("by")), ": ", *what]
        if detail.get("note"):
            parts += [" (", rt.name(detail["note"], 300, strong=False), ")"]
    elif action == "unack":
        parts = [rt.user(detail.get("by")), " removed the acknowledgement of ", *what]
    elif action == "snooze":
        parts = [rt.user(detail.get("by")), " snoozed ", *what, " until ",
                 rt.date(_time(detail["until"])), ": ",
                 rt.name(detail.get("reason") or "", 300, strong=False)]
    elif action in ("unsnooze", "snooze_expired"):
        parts = ["The snooze of ", *what, " ended"]
        if action == "unsnooze":
            parts += [" (", rt.user(detail.get("by")), ")"]
    elif action == "fixed":
        parts = ["Marked fixed by ", rt.user(detail.get("by")), ": ", *what]
        if detail.get("note"):
            parts += [" (", rt.name(detail["note"], 300, strong=False), ")"]
    elif action == "fix_seen":
        parts = [*what, ": the directory shows the right now: ",
                 rt.name(detail.get("finding") or "", 1200, strong=False)]
    elif action == "still_failing":
        parts = [rt.emoji("x"), " ", *what, ": still failing after it was marked fixed"]
        if detail.get("finding"):
            parts += [". The directory shows now: ",
                      rt.name(detail["finding"], 1500, strong=False)]
    elif action == "confirmed":
        parts = [rt.emoji("white_check_mark"), " ", *what, ": Confirmed fixed"]
    else:
        raise ValueError(f"unknown digest note {action!r}")
    block = rt.rich(parts)
    return fallback_text(block), [block]


def _what(detail: Mapping) -> list:
    if "incident" in detail:
        return [f"#{detail['incident']} ", rt.name(detail.get("account") or "", 80)]
    return [f"all {plural(int(detail.get('count', 0)), 'open incident')} of this digest"]


def _time(text: str) -> datetime:
    return datetime.fromisoformat(text)


def _buttons(d: Digest, unowned: list[Incident]) -> dict:
    elements: list[dict] = [
        {"type": "button", "action_id": ACTION_DIGEST_ACK, "value": str(d.id),
         "style": "primary", "text": {"type": "plain_text", "text": "Acknowledge all"}},
        {"type": "static_select", "action_id": ACTION_DIGEST_SNOOZE,
         "placeholder": {"type": "plain_text", "text": "Snooze all"},
         "options": [{"text": {"type": "plain_text", "text": label},
                      "value": f"{d.id}:{seconds}"} for label, seconds in SNOOZE_CHOICES]},
    ]
    if unowned:
        # The alert's own Acknowledge action: its listener takes a select's value as well.
        elements.append({"type": "static_select", "action_id": ACTION_ACK,
                         "placeholder": {"type": "plain_text", "text": "Acknowledge one"},
                         "options": [_option(i) for i in unowned[:MAX_OPTIONS]]})
    return {"type": "actions", "block_id": f"digest-{d.id}", "elements": elements}


def _option(incident: Incident) -> dict:
    label = f"#{incident.id} {rt.visible(incident.account)}"
    return {"text": {"type": "plain_text", "text": clip_units(label, OPTION_LIMIT)},
            "value": str(incident.id)}
