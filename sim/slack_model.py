"""What the Slack stand-in keeps and answers with: its messages, errors, replies and the
Web API's parameter rules (shared by sim.slack_api and its method mixins)."""
from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

#: First second of generated message timestamps: 2026-01-01T00:00:00Z.
TS_EPOCH = 1767225600
#: Slack truncates/rejects message text beyond this many characters.
MAX_TEXT = 40_000
#: Microseconds between consecutive generated timestamps (".000100" steps).
_TS_STEP_US = 100
#: A response_url accepts this many posts ...
RESPONSE_URL_MAX_POSTS = 5
#: ... within this many seconds of being issued.
RESPONSE_URL_TTL = 30 * 60
_JSON_CONTENT_TYPE = "application/json; charset=utf-8"
#: The deprecated verification token Slack still puts in slash command payloads.
_VERIFICATION_TOKEN = "sTaNdInVeRiFiCaTiOnToKeN"
#: Path prefix of the response_url endpoint on the HTTP server.
_RESPONSE_PATH = "/response/"
#: Slack refuses views larger than this (``view_too_large``).
_MAX_VIEW_BYTES = 250_000
_USER_ID = re.compile(r"[UW][A-Z0-9]{2,20}")


class _SlackError(Exception):
    """Raised inside a method handler to answer ``{"ok": false, ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


@dataclass
class _Reply:
    """An HTTP response ready to be written by the request handler."""

    status: int
    body: bytes
    content_type: str = _JSON_CONTENT_TYPE
    headers: dict[str, str] = field(default_factory=dict)
    error: str | None = None

    @classmethod
    def of_json(cls, payload: dict, status: int = 200, headers: Mapping[str, str] | None = None) -> _Reply:
        error = None if payload.get("ok") else payload.get("error")
        return cls(status, json.dumps(payload).encode("utf-8"), headers=dict(headers or {}), error=error)

    @classmethod
    def of_text(cls, status: int, text: str, headers: Mapping[str, str] | None = None) -> _Reply:
        return cls(status, text.encode("utf-8"), "text/plain; charset=utf-8", dict(headers or {}))


@dataclass
class _Message:
    channel: str
    ts: str
    user: str
    bot_id: str
    text: str = ""
    blocks: list | None = None
    attachments: list | None = None
    metadata: dict | None = None
    parent: _Message | None = None
    replies: list[_Message] = field(default_factory=list)
    edits: int = 0
    edited_ts: str | None = None

    def state(self) -> dict:
        """The snapshot handed out by :meth:`SlackStandIn.messages`."""
        snapshot = {
            "channel": self.channel,
            "ts": self.ts,
            "text": self.text,
            "blocks": copy.deepcopy(self.blocks) if self.blocks is not None else [],
            "attachments": copy.deepcopy(self.attachments) if self.attachments is not None else [],
            "metadata": copy.deepcopy(self.metadata),
            "thread_ts": self.parent.ts if self.parent else None,
            "edits": self.edits,
            "replies": [reply.state() for reply in self.replies],
        }
        return snapshot

    def api(self, *, team_id: str, app_id: str, include_metadata: bool) -> dict:
        """The message as Slack's API shows it (history, replies, post responses)."""
        out: dict[str, Any] = {
            "type": "message",
            "user": self.user,
            "bot_id": self.bot_id,
            "app_id": app_id,
            "text": self.text,
            "ts": self.ts,
            "team": team_id,
        }
        if self.blocks:
            out["blocks"] = copy.deepcopy(self.blocks)
        if self.attachments:
            out["attachments"] = copy.deepcopy(self.attachments)
        if self.parent is not None:
            out["thread_ts"] = self.parent.ts
            out["parent_user_id"] = self.parent.user
        elif self.replies:
            users = list(dict.fromkeys(reply.user for reply in self.replies))
            out.update(
                thread_ts=self.ts,
                reply_count=len(self.replies),
                reply_users=users,
                reply_users_count=len(users),
                latest_reply=self.replies[-1].ts,
            )
        if self.edited_ts is not None:
            out["edited"] = {"user": self.user, "ts": self.edited_ts}
        if include_metadata and self.metadata is not None:
            out["metadata"] = copy.deepcopy(self.metadata)
        return out


@dataclass
class _ResponseUrl:
    """A ``response_url`` handed out in a payload, with its use count."""

    url: str
    created: float
    uses: int = 0


def _decode_params(query: str, body: bytes, content_type: str) -> dict:
    """Merge query-string and body parameters the way Slack reads them."""
    params: dict[str, Any] = dict(parse_qsl(query, keep_blank_values=True))
    if not body:
        return params
    media_type = content_type.split(";", 1)[0].strip().lower()
    if media_type == "application/json":
        try:
            decoded = json.loads(body.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise _SlackError("invalid_json") from None
        if not isinstance(decoded, dict):
            raise _SlackError("invalid_json")
        params.update(decoded)
    elif media_type in ("application/x-www-form-urlencoded", ""):
        try:
            params.update(parse_qsl(body.decode("utf-8"), keep_blank_values=True, strict_parsing=True))
        except (UnicodeDecodeError, ValueError):
            raise _SlackError("invalid_form_data") from None
    else:
        # multipart (file uploads) is not needed by SubmitWatch.
        raise _SlackError("invalid_post_type")
    return params


def _flag(value: Any) -> bool:
    """Slack booleans: JSON true, or "1"/"true" in form bodies."""
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes")
    return bool(value)


def _json_field(params: dict, name: str, expected: type, error: str) -> Any:
    """A JSON-valued parameter: native in JSON bodies, a JSON string in forms."""
    value = params[name]
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.strip() else None
        except json.JSONDecodeError:
            raise _SlackError(error) from None
    if value is None and expected is list:
        return []
    if not isinstance(value, expected):
        raise _SlackError(error)
    return value


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"
