"""Acknowledge and snooze: as slash subcommands and as the buttons on each alert.

Both routes end in bot.engine.chatops (one transaction: state, audit, outbox); the alert itself is
updated by the delivery loop right after (the listener wakes it). Only people allowed by
[permissions] may act; anyone else gets a private refusal, and the refusal is audited too.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from bot.core.config import Config
from bot.engine import chatops
from bot.engine.chatops import ActionError, Actor
from bot.engine.permissions import Permissions
from bot.slack import alerts
from bot.slack import digests as digest_view
from bot.slack.blocks import show
from store import db as store
from store import devices as device_store
from store import fixes

from .common import (
    MAX_NOTE,
    CommandError,
    Reply,
    Request,
    duration,
    incident_id,
    looks_like_incident,
    take_options,
)

log = logging.getLogger("submitwatch")


# --- slash subcommands ---------------------------------------------------------------------------

def _incident_and_note(args: list[str], ask: str) -> tuple[int, str | None]:
    """`#42 [note]`: the incident, and the responder's words if any."""
    args, _ = take_options(args, {})
    if not args:
        raise CommandError(ask)
    return incident_id(args[0]), _free_text(args[1:], "note") or None


def ack_command(req: Request, args: list[str]) -> Reply:
    target, note = _incident_and_note(args, "Say which incident, like `#42`.")

    def do(actor: Actor) -> str:
        chatops.acknowledge(req.db, target, actor, note, req.now)
        return f"Acknowledged #{target}. The alert shows it is yours; its thread records it."
    return _act(req, "ack", f"#{target}", target, do)


def unack_command(req: Request, args: list[str]) -> Reply:
    args, _ = take_options(args, {})
    if len(args) != 1:
        raise CommandError("Say which incident, like `#42`.")
    target = incident_id(args[0])

    def do(actor: Actor) -> str:
        chatops.unacknowledge(req.db, target, actor, req.now)
        return f"#{target} is no longer acknowledged."
    return _act(req, "unack", f"#{target}", target, do)


def fixed_command(req: Request, args: list[str]) -> Reply:
    """`fixed #42 [note]`: as the alert's Mark fixed button (bot.engine.fixloop)."""
    target, note = _incident_and_note(args, "Say which incident you fixed, like `#42`.")
    has_directory = req.config.directory is not None

    def do(actor: Actor) -> str:
        chatops.mark_fixed(req.db, target, actor, note, req.now, has_directory=has_directory)
        how = ("SubmitWatch reads the directory until the right shows, then watches the events"
               if has_directory else "without a [directory], SubmitWatch watches the events "
               "alone")
        return f"Marked #{target} fixed: {how}. The alert and its thread follow it."
    return _act(req, "fixed", f"#{target}", target, do)


def snooze_command(req: Request, args: list[str]) -> Reply:
    args, _ = take_options(args, {})
    if len(args) < 3:
        raise CommandError("Say what to snooze, for how long, and why (the team sees the reason).")
    target: int | str = incident_id(args[0]) if looks_like_incident(args[0]) else args[0]
    seconds = duration(args[1])
    reason = _free_text(args[2:], "reason")
    label = f"#{target}" if isinstance(target, int) else f"*{show(target)}*"

    def do(actor: Actor) -> str:
        snooze = chatops.snooze(req.db, target, seconds, reason, actor, req.now)
        scope = ("this incident" if snooze.kind == "incident" else
                 "every incident of this account, including new ones")
        return (f"Snoozed {label} ({scope}) until {alerts.slack_date(snooze.until)}. Events are "
                "still stored and counted; `unsnooze` ends it early.")
    return _act(req, "snooze", str(target), target if isinstance(target, int) else None, do)


def unsnooze_command(req: Request, args: list[str]) -> Reply:
    args, _ = take_options(args, {})
    if len(args) != 1:
        raise CommandError("Say which incident (`#42`) or account to unsnooze.")
    target: int | str = incident_id(args[0]) if looks_like_incident(args[0]) else args[0]
    label = f"#{target}" if isinstance(target, int) else f"*{show(target)}*"

    def do(actor: Actor) -> str:
        ended = chatops.unsnooze(req.db, target, actor, req.now)
        return f"Ended {len(ended)} snooze(s) of {label}; its alert is live again."
    return _act(req, "unsnooze", str(target), target if isinstance(target, int) else None, do)


def _free_text(words: list[str], what: str) -> str:
    text = " ".join(words).strip()
    if len(text) > MAX_NOTE:
        raise CommandError(f"That {what} is {len(text)} characters; keep it under {MAX_NOTE}.")
    if what == "reason" and not text:
        raise CommandError("Give a reason: the team sees it on the alert.")
    return text


def _act(req: Request, action: str, target: str, incident: int | None,
         do: Callable[[Actor], str]) -> Reply:
    actor = Actor(req.user_id, "slash", req.channel_id)
    permissions = req.permissions or Permissions(req.config.permissions)
    refusal = permissions.refusal(req.user_id, req.client)
    if refusal:
        chatops.record_refusal(req.db, actor, action, target, refusal, req.now, incident)
        return Reply(refusal)
    try:
        return Reply(do(actor))
    except ActionError as exc:
        return Reply(str(exc))


# --- buttons on the alert -----------------------------------------------------------------------

#: The alert's buttons: action_id, the action's name in the audit, and what it changes.
BUTTONS: tuple[tuple[str, str, Callable[..., object]], ...] = (
    (alerts.ACTION_ACK, "ack", lambda db, i, actor, now, _: (
        chatops.acknowledge(db, i, actor, None, now))),
    (alerts.ACTION_UNACK, "unack", lambda db, i, actor, now, _: (
        chatops.unacknowledge(db, i, actor, now))),
    (alerts.ACTION_SNOOZE, "snooze", lambda db, i, actor, now, seconds: (
        chatops.snooze(db, i, float(seconds), "from the alert's Snooze menu", actor, now))),
    (alerts.ACTION_UNSNOOZE, "unsnooze", lambda db, i, actor, now, _: (
        chatops.unsnooze(db, i, actor, now))),
)
#: Mark fixed needs to know whether a directory will be read: registered with the config.
FIXED_BUTTON = (alerts.ACTION_FIXED, "fixed")


#: A storm digest's buttons act on all of its open incidents (its "Acknowledge one" select is
#: the alert's ACTION_ACK, with an incident's number as its value).
DIGEST_BUTTONS: tuple[tuple[str, str, Callable[..., object]], ...] = (
    (digest_view.ACTION_DIGEST_ACK, "ack", lambda db, d, actor, now, _: (
        chatops.acknowledge_digest(db, d, actor, now))),
    (digest_view.ACTION_DIGEST_SNOOZE, "snooze", lambda db, d, actor, now, seconds: (
        chatops.snooze_digest(db, d, float(seconds), "from the storm digest's Snooze menu",
                              actor, now))),
)


def register(app, open_database: Callable, config: Config,
             clock: Callable[[], datetime] | None = None,
             permissions: Permissions | None = None,
             on_change: Callable[[], None] = lambda: None) -> None:
    """The alert's buttons and Show fix, on a Bolt app."""
    clock = clock or (lambda: datetime.now(UTC))
    permissions = permissions or Permissions(config.permissions)
    for action_id, action, do in BUTTONS:
        app.action(action_id)(_click_listener(action, do, open_database, clock, permissions,
                                              on_change))
    has_directory = config.directory is not None
    app.action(FIXED_BUTTON[0])(_click_listener(
        FIXED_BUTTON[1], lambda db, i, actor, now, _: chatops.mark_fixed(
            db, i, actor, None, now, has_directory=has_directory),
        open_database, clock, permissions, on_change))
    for action_id, action, do in DIGEST_BUTTONS:
        app.action(action_id)(_click_listener(action, do, open_database, clock, permissions,
                                              on_change, digest=True))
    app.action(alerts.ACTION_SHOW_FIX)(_show_fix_listener(open_database, config))


def _clicked(body: dict, action: str) -> tuple[Actor, int, str] | None:
    """Who clicked, on which incident, with what extra value (a snooze's seconds); None when
    the value is not one of ours."""
    actor = Actor(body["user"]["id"], "button", (body.get("channel") or {}).get("id"))
    clicked = body["actions"][0]
    value = clicked.get("value") or clicked.get("selected_option", {}).get("value", "")
    target, _, extra = value.partition(":")
    try:
        return actor, int(target), extra
    except ValueError:
        log.warning("ignored a %s click with a malformed value %r", action, value)
        return None


def _click_listener(action: str, do: Callable[..., object], open_database: Callable,
                    clock: Callable[[], datetime], permissions: Permissions,
                    on_change: Callable[[], None], *, digest: bool = False) -> Callable:
    """A button's listener; `digest`: its value is a storm digest's number, not an
    incident's."""
    def listener(ack, body, respond, client):
        ack()  # Slack wants this within 3 seconds; the alert updates through the outbox
        clicked = _clicked(body, action)
        if clicked is None:
            return
        actor, target, extra = clicked
        db, now = open_database(), clock()
        refusal = permissions.refusal(actor.user_id, client)
        if refusal:
            chatops.record_refusal(db, actor, action,
                                   f"digest #{target}" if digest else f"#{target}", refusal, now,
                                   None if digest else target)
            respond(text=refusal, response_type="ephemeral", replace_original=False)
            return
        try:
            do(db, target, actor, now, extra)
        except (ActionError, ValueError) as exc:
            respond(text=str(exc), response_type="ephemeral", replace_original=False)
            return
        on_change()  # the alert's update is queued: send it now
    return listener


def _show_fix_listener(open_database: Callable, config: Config) -> Callable:
    def show_fix(ack, body, respond):
        ack()
        try:
            incident = store.get_incident(open_database(), int(body["actions"][0]["value"]))
        except (KeyError, ValueError):
            incident = None
        if incident is None:
            respond(text="That incident no longer exists.", response_type="ephemeral",
                    replace_original=False)
            return
        text, blocks = alerts.fix_message(
            incident, {s.name: s for s in config.servers},
            fixes.finding(open_database(), incident.stored_id) if config.directory else None,
            directory=config.directory is not None,
            devices=device_store.lookup_of(open_database(), incident.stored_id)
            if config.devices.enabled else None)
        respond(text=text, blocks=blocks, response_type="ephemeral", replace_original=False)
    return show_fix
