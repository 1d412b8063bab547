"""`submitwatch preview`: the open incidents' alerts as SubmitWatch would post them now, as one
local HTML page (bot.slack.html), to see them before a Slack app exists or while Slack is down.
Read-only on the database; nothing is sent anywhere."""
from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from bot.core.config import Config
from bot.slack import alerts
from bot.slack.html import write_page
from store import chat, fixes
from store import db as store
from store import devices as device_store

#: Alerts on one page at most (the newest incidents first).
MOST = 200


def write_preview(config: Config, path: str | Path, now: datetime | None = None) -> tuple[Path,
                                                                                          int]:
    """Render every open incident's alert (newest first, at most MOST) into `path`; returns the
    page's path and how many alerts it holds."""
    now = now or datetime.now(UTC)
    db = store.open_read_only(config.store.path)
    try:
        servers = {s.name: s for s in config.servers}
        incidents = sorted(store.open_incidents(db).values(), key=lambda i: i.last_seen,
                           reverse=True)[:MOST]
        messages = []
        for incident in incidents:
            text, blocks = alerts.alert(
                incident, servers, chat.snoozes_for(db, incident, now),
                owners=config.route_of(incident).owners,
                finding=fixes.finding(db, incident.stored_id) if config.directory else None,
                directory=config.directory is not None,
                devices=device_store.lookup_of(db, incident.stored_id)
                if config.devices.enabled else None)
            messages.append({"text": text, "blocks": blocks, "ts": f"{now.timestamp():.6f}"})
    finally:
        db.conn.close()
    page = write_page(path, messages, channel=config.slack.channel,
                      title="SubmitWatch preview: the open incidents' alerts as they would be "
                            "posted now",
                      note=f"Rendered from {config.store.path} at {now:%Y-%m-%d %H:%M} UTC; "
                           "nothing was sent to Slack.")
    return page, len(messages)
