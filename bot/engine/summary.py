"""The scheduled summary post: `/submitwatch summary` for the last day or week, posted to a
channel at a time of day ([summary]), through the outbox like every message.

The housekeeping job (every minute) asks `queue_summary`; the rule of when one is due is pure
(`due_slot`), so it is tested with `now` passed in, and a restart neither skips a summary nor
posts one twice: the outbox row of the last one says which slot was done.
"""
from __future__ import annotations

from datetime import datetime, timedelta

from sqlite_utils import Database

from bot.core.config import Config, SummaryConfig
from store import db as store

#: A slot missed by longer than this (SubmitWatch was down) is skipped, not posted stale.
GRACE = timedelta(hours=1)
PERIODS = {"day": timedelta(days=1), "week": timedelta(days=7)}


def latest_slot(now: datetime, summary: SummaryConfig) -> datetime | None:
    """The most recent moment at or before `now` that the schedule names (UTC)."""
    if summary.every is None:
        return None
    hour, minute = summary.at
    slot = now.replace(hour=hour, minute=minute, second=0, microsecond=0)
    if slot > now:
        slot -= timedelta(days=1)
    if summary.every == "week":
        slot -= timedelta(days=(slot.weekday() - summary.weekday) % 7)
    return slot


def due_slot(now: datetime, summary: SummaryConfig,
             last_queued: datetime | None) -> datetime | None:
    """The slot to post now, if any: the latest one, not queued yet, missed by under GRACE."""
    slot = latest_slot(now, summary)
    if slot is None or now - slot > GRACE or (last_queued is not None and last_queued >= slot):
        return None
    return slot


def queue_summary(db: Database, config: Config, now: datetime) -> bool:
    """Queue the scheduled summary when it is due; True if one was queued."""
    summary = config.summary
    row = db.execute("SELECT max(created_at) FROM outbox WHERE kind = 'summary'").fetchone()
    slot = due_slot(now, summary, store.from_iso(row[0]))
    if slot is None or summary.every is None:
        return False
    with store.write_transaction(db):
        store.enqueue(db, None, "summary", now, detail={
            "since": store.iso(slot - PERIODS[summary.every]), "until": store.iso(slot),
            "channel": summary.channel or config.slack.channel})
    return True


def unwatched(db: Database, config: Config) -> list[str]:
    """Configured servers never polled or down now (the summary's last line; a server fed by a
    collector is never polled: only its silence counts)."""
    states = {s.server: s for s in store.all_server_states(db)}
    return [s.name for s in config.servers
            if (states.get(s.name) is None and s.polled)
            or (s.name in states and states[s.name].down_since is not None)]
