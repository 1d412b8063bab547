"""Read-only subcommands: history, show, fix, status, servers, snoozes. (Being written.)"""
from __future__ import annotations

from store import db as store

from bot.render import escape, show

from .common import CommandError, Reply, Request


def status(req: Request, args: list[str]) -> Reply:
    now = req.now
    lines = ["*Servers*"]
    states = store.all_server_states(req.db)
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
    open_count = req.db.execute("SELECT count(*) FROM incidents WHERE status = 'open'"
                                ).fetchone()[0]
    lines.append(f"*Open incidents:* {open_count}   *Alerts waiting to be sent:* "
                 f"{store.outbox_depth(req.db)}")
    return Reply("\n".join(lines))


def _todo(req: Request, args: list[str]) -> Reply:
    raise CommandError("not written yet")


history = show_incident = fix = servers = snoozes = _todo
