"""Slack listeners, each a thin shell over bot/ and store/.

LISTENS names everything the app listens to; manifest.yml must declare the same (a test checks
both ways), so a listener is never added without the app being told to send it.
"""
from __future__ import annotations

from collections.abc import Callable

from bot.core.config import Config
from bot.slack.alerts import ACTION_IDS

LISTENS = {
    "commands": ("/submitwatch",),
    "events": ("app_home_opened",),
    "actions": ACTION_IDS,
}


def register_all(app, open_database: Callable, config: Config, clock=None,
                 on_change: Callable[[], None] = lambda: None) -> None:
    from bot.engine.permissions import Permissions

    from . import actions, commands, home
    permissions = Permissions(config.permissions)  # one cache of group members for all
    commands.register(app, open_database, config, clock, permissions, on_change)
    actions.register(app, open_database, config, clock, permissions, on_change)
    home.register(app, open_database, config, clock)
