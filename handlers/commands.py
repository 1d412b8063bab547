"""The /submitwatch slash command: a thin shell over store queries and bot.render.

This first version answers `help` and `status`; the chat-ops subcommands build on it.
"""
from __future__ import annotations

from datetime import datetime, timezone
from typing import Callable

from bot.render import escape, show
from store import db as store

COMMAND = "/submitwatch"
HELP = (f"*SubmitWatch* watches Exchange for accounts that may not submit mail over SMTP "
        "(events 1018/1020) and posts one living alert per account.\n"
        f"• `{COMMAND} status`: each server's last poll, cursor and last error; outbox depth; "
        "open incidents\n"
        f"• `{COMMAND} help`: this text")


def status_text(db, now: datetime) -> str:
    lines = ["*Servers*"]
    states = store.all_server_states(db)
    if not states:
        lines.append("no server polled yet")
    for s in states:
        if s.last_success_at:
            lag = int((now - s.last_success_at).total_seconds())
            health = f"last good poll {lag}s ago, cursor {s.cursor}"
        else:
            health = "never polled successfully"
        if s.consecutive_failures:
            health += (f", *{s.consecutive_failures} failure(s) in a row*: "
                       f"{escape(s.last_error or '')}")
        lines.append(f"• *{show(s.server, 64)}*: {health}")
    open_count = db.execute("SELECT count(*) FROM incidents WHERE status = 'open'").fetchone()[0]
    lines.append(f"*Open incidents:* {open_count}   *Alerts waiting to be sent:* "
                 f"{store.outbox_depth(db)}")
    return "\n".join(lines)


def register(app, open_database: Callable, clock: Callable[[], datetime] | None = None) -> None:
    clock = clock or (lambda: datetime.now(timezone.utc))

    @app.command(COMMAND)
    def submitwatch(ack, command, respond):
        ack()  # within Slack's 3 seconds; the answer follows through response_url
        words = (command.get("text") or "").split()
        if words[:1] == ["status"]:
            respond(text=status_text(open_database(), clock()), response_type="ephemeral")
        else:
            respond(text=HELP, response_type="ephemeral")
