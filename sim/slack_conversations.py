"""The Slack stand-in's conversations.* and usergroups.users.list: what channels and groups hold (a mixin of sim.slack_api.SlackStandIn, whose state it uses)."""
from __future__ import annotations

import base64

from .slack_model import _flag, _SlackError


class ConversationMethods:
    def _conversations_info(self, params: dict) -> dict:
        channel = self._channel_param(params, member=False)
        return {
            "channel": {
                "id": channel.id,
                "name": channel.name,
                "is_channel": True,
                "is_private": False,
                "is_archived": False,
                "is_member": channel.joined,
                "created": channel.created,
            }
        }

    def _conversations_list(self, params: dict) -> dict:
        channels = [{"id": c.id, "name": c.name, "is_channel": True, "is_private": False,
                     "is_archived": False, "is_member": c.joined} for c in self._channels.values()]
        return _paginate(channels, params, default_limit=100, key="channels")

    def _conversations_history(self, params: dict) -> dict:
        channel = self._channel_param(params, member=True)
        newest_first = [m for m in reversed(channel.messages) if _in_window(m.ts, params)]
        include = _flag(params.get("include_all_metadata"))
        return _paginate([self._api_message(m, include) for m in newest_first], params, default_limit=100)

    def _conversations_replies(self, params: dict) -> dict:
        channel = self._channel_param(params, member=True)
        root = channel.by_ts.get(str(params.get("ts") or ""))
        if root is None:
            raise _SlackError("thread_not_found")
        root = root.parent or root
        thread = [root, *root.replies]
        thread = [m for m in thread if m is root or _in_window(m.ts, params)]
        include = _flag(params.get("include_all_metadata"))
        return _paginate([self._api_message(m, include) for m in thread], params, default_limit=1000)

    def _usergroups_users_list(self, params: dict) -> dict:
        members = self._usergroups.get(str(params.get("usergroup") or ""))
        if members is None:
            raise _SlackError("no_such_subteam")
        return {"users": list(members)}


def _in_window(ts: str, params: dict) -> bool:
    """conversations.* ``oldest``/``latest``/``inclusive`` filtering."""
    inclusive = _flag(params.get("inclusive"))
    value = float(ts)
    for name in ("oldest", "latest"):
        if not params.get(name):
            continue
        try:
            bound = float(params[name])
        except (TypeError, ValueError):
            raise _SlackError(f"invalid_ts_{name}") from None
        outside = value < bound if name == "oldest" else value > bound
        if outside or (value == bound and not inclusive):
            return False
    return True


def _paginate(items: list, params: dict, *, default_limit: int, key: str = "messages") -> dict:
    """One page of ``items`` as a conversations.* payload.

    The cursor is an opaque base64 offset, like Slack's opaque cursors;
    ``next_cursor`` is ``""`` on the last page, as Slack sends it.
    """
    try:
        limit = int(params.get("limit") or default_limit)
    except (TypeError, ValueError):
        raise _SlackError("invalid_limit") from None
    limit = max(1, min(limit, 1000))
    offset = 0
    if params.get("cursor"):
        try:
            raw = base64.urlsafe_b64decode(str(params["cursor"]).encode()).decode()
            prefix, _, number = raw.partition(":")
            offset = int(number)
            if prefix != "offset" or offset < 0:
                raise ValueError(raw)
        except (ValueError, UnicodeDecodeError):
            raise _SlackError("invalid_cursor") from None
    end = offset + limit
    more = end < len(items)
    next_cursor = base64.urlsafe_b64encode(f"offset:{end}".encode()).decode() if more else ""
    return {key: items[offset:end], "has_more": more, "response_metadata": {"next_cursor": next_cursor}}
