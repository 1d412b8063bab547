"""The /submitwatch slash command: reads the words, picks the subcommand, answers.

Slack wants an ack within 3 seconds: the listener acks first, then does the work and answers
through response_url (ephemeral unless `--share`). A user's mistake gets the message and the
usage; a bug gets an apology naming the log, never a stack trace in chat.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from bot.core.config import Config
from bot.engine.permissions import Permissions
from bot.slack.alerts import escape, show

from . import actions, lookups, verify
from .common import CommandError, Reply, Request, Subcommand, words_of

log = logging.getLogger("submitwatch")
COMMAND = "/submitwatch"


@dataclass(frozen=True)
class Spec:
    run: Subcommand
    usage: str
    summary: str


SUBCOMMANDS: dict[str, Spec] = {
    "history": Spec(lookups.history, "history [account|server] [--since 7d] [--limit N]",
                    "incidents and event counts, newest first, with a per-day sparkline"),
    "show": Spec(lookups.show_incident, "show <#incident>",
                 "one incident: events per server and connector, timeline, who acted"),
    "fix": Spec(lookups.fix, "fix <account> [SERVER\\Connector] [1018|1020]",
                "why an account is refused and the commands that fix it; put names with "
                "spaces in quotes"),
    "verify": Spec(verify.verify, "verify <account> [SERVER\\Connector]",
                   "what Active Directory says now, read-only: who the account is and its "
                   "Submit right on that connector, or on every connector of each server"),
    "ack": Spec(actions.ack_command, "ack <#incident> [note]", "take ownership of an incident"),
    "unack": Spec(actions.unack_command, "unack <#incident>", "undo an acknowledgement"),
    "fixed": Spec(actions.fixed_command, "fixed <#incident> [note]",
                  "say you fixed it: SubmitWatch confirms it from the directory and the events"),
    "snooze": Spec(actions.snooze_command, "snooze <#incident|account> <duration> <reason>",
                   "silence an incident or an account for a while (events are still counted)"),
    "unsnooze": Spec(actions.unsnooze_command, "unsnooze <#incident|account>",
                     "end a snooze now"),
    "snoozes": Spec(lookups.snoozes, "snoozes", "the snoozes in force"),
    "status": Spec(lookups.status, "status",
                   "each server's last poll, lag, last error and cursor; outbox; open incidents"),
    "servers": Spec(lookups.servers, "servers", "the servers watched and how to reach them"),
    "summary": Spec(lookups.summary, "summary [--since 7d]",
                    "new accounts, open and acknowledged incidents, top servers and connectors, "
                    "median time to acknowledge and to resolve, servers not watched"),
    "routes": Spec(lookups.routes, "routes <account> [SERVER] [1018|1020]",
                   "which route an account's alert would take: its channel and owners"),
    "help": Spec(lambda req, args: Reply(help_text()), "help", "this text"),
}


def help_text() -> str:
    lines = ["*SubmitWatch* watches Exchange for accounts that authenticate over SMTP but may "
             "not submit mail (events 1018/1020), and keeps one living alert per account.", ""]
    # escape: a usage's <#incident> would otherwise be read by Slack as a channel link
    lines += [f"• `{COMMAND} {escape(spec.usage)}`: {spec.summary}"
              for spec in SUBCOMMANDS.values()]
    lines += ["", "Answers are only for you; add `--share` to post one in the channel."]
    return "\n".join(lines)


def answer(req: Request, text: str) -> Reply:
    """The reply to one slash command's text. Never raises."""
    try:
        words = words_of(text)
    except CommandError as exc:
        return Reply(f"I could not read that: {exc}.")
    name = words[0].lower() if words else "help"
    spec = SUBCOMMANDS.get(name)
    if spec is None:
        return Reply(f"I do not know `{COMMAND} {show(name, 40)}`.\n\n{help_text()}")
    allowed = req.config.permissions.channels
    if allowed and req.channel_id not in allowed:
        places = ", ".join(f"<#{c}>" for c in allowed)
        return Reply(f"SubmitWatch answers commands only in {places} (its history names "
                     "accounts, so it stays where your team decided).")
    try:
        # --share is everyone's; any other option belongs to the subcommand
        args = [word for word in words[1:] if word.lower() != "--share"]
        reply = spec.run(req, args)
        reply.share = len(args) < len(words) - 1
        return reply
    except CommandError as exc:
        return Reply(f"{exc}\nUsage: `{COMMAND} {escape(spec.usage)}`")
    except Exception:  # a bug: log it with the stack, tell the person plainly
        log.exception("/submitwatch %s failed", name)
        return Reply(f"Sorry, `{COMMAND} {name}` failed on our side; the SubmitWatch log has the "
                     "details. Nothing was changed.")


def register(app, open_database: Callable, config: Config,
             clock: Callable[[], datetime] | None = None,
             permissions: Permissions | None = None,
             on_change: Callable[[], None] = lambda: None) -> None:
    clock = clock or (lambda: datetime.now(UTC))
    permissions = permissions or Permissions(config.permissions)

    @app.command(COMMAND)
    def submitwatch(ack, command, respond, client):
        ack()  # within Slack's 3 seconds; the answer follows through response_url
        req = Request(db=open_database(), config=config, now=clock(),
                      user_id=command.get("user_id", ""), channel_id=command.get("channel_id"),
                      client=client, permissions=permissions)
        reply = answer(req, command.get("text") or "")
        # ack, snooze and the rest may have queued alert updates; a delivery round that finds
        # nothing to send costs one read, so every command wakes it rather than guessing.
        on_change()
        respond(text=reply.text, blocks=reply.blocks,
                response_type="in_channel" if reply.share else "ephemeral")
