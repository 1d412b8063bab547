"""App Home: open incidents (acked or not), snoozes in force, each server's poll health, and
whether the person looking may act. Published each time someone opens the Home tab."""
from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import UTC, datetime

from slack_sdk.errors import SlackApiError, SlackClientError
from sqlite_utils import Database

from bot.core.config import Config
from bot.slack import replies
from store import chat, queries
from store import db as store

from .lookups import HOME_INCIDENTS, late_after, server_statuses

log = logging.getLogger("submitwatch")


def home_view(db: Database, config: Config, now: datetime, user_id: str) -> dict:
    """The Home tab for one person, as replies.publish takes it."""
    incidents, open_total = queries.open_incidents_page(db, HOME_INCIDENTS)
    permissions = config.permissions
    blocks = replies.home_blocks(
        may_act=replies.may_act_text(user_id, permissions.users, permissions.groups),
        incidents=incidents, open_total=open_total, snoozes=chat.active_snoozes(db, now),
        servers=server_statuses(db, config, now), now=now, late_after=late_after(config),
        delivery=store.delivery_problems(db))
    return {"type": "home", "blocks": blocks}


def register(app, open_database: Callable[[], Database], config: Config,
             clock: Callable[[], datetime] | None = None) -> None:
    clock = clock or (lambda: datetime.now(UTC))

    @app.event("app_home_opened")
    def publish_home(event, client):
        # The event also fires for the Messages tab, which has no view to publish.
        if event.get("tab") != "home":
            return
        user_id = event.get("user", "")
        view = home_view(open_database(), config, clock(), user_id)
        try:
            client.views_publish(user_id=user_id, view=view)
        except SlackApiError as exc:  # Slack refused it; the next opening tries again
            log.warning("could not publish the App Home for %s: %s", user_id,
                        exc.response.get("error"))
        except (SlackClientError, OSError) as exc:  # Slack could not be reached
            log.warning("could not publish the App Home for %s: %s", user_id, exc)
