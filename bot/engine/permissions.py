"""Who may change alerts from chat: the users and user groups named in [permissions].

Anyone may read (history, show, fix). Acting (ack, snooze and their undo) needs a listed user ID
or membership of a listed user group; group members are asked of Slack (usergroups.users.list)
and remembered for permissions.group_cache (5 minutes by default: someone removed from a group
may act for that long). When Slack cannot say, the answer is no, with the reason.
"""
from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from bot.core.config import PermissionsConfig

log = logging.getLogger("submitwatch")


class Permissions:
    def __init__(self, config: PermissionsConfig, monotonic: Callable[[], float] = time.monotonic):
        self.config = config
        self._monotonic = monotonic
        self._members: dict[str, tuple[float, frozenset[str]]] = {}
        self._lock = threading.Lock()

    def refusal(self, user_id: str, client: Any) -> str | None:
        """None when `user_id` may act; otherwise the reason, in words for that person."""
        if self.config.open_to_everyone or user_id in self.config.users:
            return None
        problems = []
        for group in self.config.groups:
            try:
                if user_id in self._group_members(group, client):
                    return None
            except Exception as exc:  # SlackApiError, unreachable, no client: fail closed
                log.warning("cannot read the members of user group %s: %s", group, exc)
                problems.append(f"the members of <!subteam^{group}> could not be read from "
                                f"Slack ({_reason(exc)})")
        who = [f"<@{u}>" for u in self.config.users] + [f"<!subteam^{g}>"
                                                       for g in self.config.groups]
        text = ("You may look things up, but acknowledging and snoozing alerts is limited to "
                f"{', '.join(who)} (the `[permissions]` table of SubmitWatch's config).")
        if problems:
            text += " Also, " + "; ".join(problems) + ": try again in a minute."
        return text

    def _group_members(self, group: str, client: Any) -> frozenset[str]:
        with self._lock:
            cached = self._members.get(group)
            if cached and self._monotonic() - cached[0] < self.config.group_cache:
                return cached[1]
        if client is None:
            raise RuntimeError("no Slack client to ask")
        members = frozenset(client.usergroups_users_list(usergroup=group)["users"])
        with self._lock:
            self._members[group] = (self._monotonic(), members)
        return members


def _reason(exc: Exception) -> str:
    response = getattr(exc, "response", None)
    if response is not None and hasattr(response, "get"):
        error = response.get("error")
        if error == "missing_scope":
            return "the app lacks the usergroups:read scope; reinstall it from manifest.yml"
        if error:
            return f"Slack said {error}"
    return type(exc).__name__
