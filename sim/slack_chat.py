"""The Slack stand-in's chat.* and views.publish: messages, ephemerals and the App Home (a mixin of sim.slack_api.SlackStandIn, whose state it uses)."""
from __future__ import annotations

import copy
import json
import time
from typing import Any

from .slack_blocks import MAX_BLOCK_TEXT, MAX_HOME_BLOCKS, block_text_length, validate_blocks
from .slack_model import _MAX_VIEW_BYTES, _USER_ID, MAX_TEXT, _json_field, _Message, _SlackError


class ChatMethods:
    #: Characters of block text past which ``chat.*`` answer ``msg_blocks_too_long`` as Slack
    #: does (:data:`~sim.slack_blocks.MAX_BLOCK_TEXT`); ``None`` turns the check off. The
    #: 4,000-character recommendation for ``text`` is not enforced (Slack does not).
    max_block_text: int | None = MAX_BLOCK_TEXT

    def _chat_post_message(self, params: dict) -> dict:
        channel = self._channel_param(params, member=True, names=True)
        content = _message_content(params, require=True, max_block_text=self.max_block_text)
        parent = None
        if params.get("thread_ts"):
            parent = channel.by_ts.get(str(params["thread_ts"]))
            if parent is None:
                raise _SlackError("thread_not_found")
            parent = parent.parent or parent  # a reply's ts threads onto its parent
        message = _Message(
            channel=channel.id,
            ts=self._next_ts(),
            user=self.bot_user_id,
            bot_id=self.bot_id,
            parent=parent,
            **content,
        )
        if parent is None:
            channel.messages.append(message)
        else:
            parent.replies.append(message)
        channel.by_ts[message.ts] = message
        return {"channel": channel.id, "ts": message.ts, "message": self._api_message(message, True)}

    def _chat_delete(self, params: dict) -> dict:
        channel = self._channel_param(params, member=False)
        message = channel.by_ts.pop(str(params.get("ts") or ""), None)
        if message is None:
            raise _SlackError("message_not_found")
        if message.parent is None:
            channel.messages.remove(message)
        else:
            message.parent.replies.remove(message)
        self.deleted.append({"channel": channel.id, "ts": message.ts})
        return {"channel": channel.id, "ts": message.ts}

    def _chat_update(self, params: dict) -> dict:
        channel = self._channel_param(params, member=False)
        message = channel.by_ts.get(str(params.get("ts") or ""))
        if message is None:
            raise _SlackError("message_not_found")
        content = _message_content(params, require=False, max_block_text=self.max_block_text)
        if not content:
            raise _SlackError("no_text")
        for name, value in content.items():
            setattr(message, name, value)
        message.edits += 1
        message.edited_ts = self._next_ts()
        return {
            "channel": channel.id,
            "ts": message.ts,
            "text": message.text,
            "message": self._api_message(message, True),
        }

    def _chat_post_ephemeral(self, params: dict) -> dict:
        channel = self._channel_param(params, member=True, names=True)
        user = params.get("user")
        if not isinstance(user, str) or not user:
            raise _SlackError("user_not_found")
        content = _message_content(params, require=True, max_block_text=self.max_block_text)
        ts = self._next_ts()
        self._ephemerals.append(
            {
                "channel": channel.id,
                "user": user,
                "ts": ts,
                "thread_ts": params.get("thread_ts"),
                "text": content.get("text", ""),
                "blocks": content.get("blocks") or [],
            }
        )
        return {"message_ts": ts}

    def _views_publish(self, params: dict) -> dict:
        """The Home tab of one user: validated, stored, answered as Slack answers it."""
        user_id = params.get("user_id")
        if not isinstance(user_id, str) or not _USER_ID.fullmatch(user_id):
            raise _SlackError("invalid_arguments", response_metadata={"messages": ["invalid `user_id`"]})
        if "view" not in params:
            raise _SlackError("invalid_arguments", response_metadata={"messages": ["missing required field: view"]})
        view = _json_field(params, "view", dict, "invalid_arguments")
        if len(json.dumps(view).encode()) > _MAX_VIEW_BYTES:
            raise _SlackError("view_too_large")
        problems = []
        if view.get("type") != "home":
            problems.append("[ERROR] must be 'home' for views.publish [json-pointer:/view/type]")
        if "blocks" not in view:
            problems.append("[ERROR] missing required field: blocks [json-pointer:/view]")
        else:
            problems += validate_blocks(view["blocks"], max_blocks=MAX_HOME_BLOCKS, pointer="/view/blocks")
        for name, limit in (("private_metadata", 3000), ("callback_id", 255), ("external_id", 255)):
            if len(str(view.get(name, ""))) > limit:
                problems.append(f"[ERROR] must be less than {limit + 1} characters [json-pointer:/view/{name}]")
        if problems:
            raise _SlackError("invalid_arguments", response_metadata={"messages": problems})
        current = self._home_views.get(user_id)
        if params.get("hash") and (current is None or params["hash"] != current["hash"]):
            raise _SlackError("hash_conflict")
        self._view_count += 1
        view_id = current["id"] if current else f"V0HOME{self._view_count:04d}"
        published = {
            "id": view_id,
            "team_id": self.team_id,
            "type": "home",
            "blocks": copy.deepcopy(view["blocks"]),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "state": {"values": {}},
            "hash": f"{int(time.time())}.{self._view_count:08d}",
            "clear_on_close": False,
            "notify_on_close": False,
            "close": None,
            "submit": None,
            "previous_view_id": None,
            "root_view_id": view_id,
            "app_id": self.app_id,
            "external_id": view.get("external_id", ""),
            "app_installed_team_id": self.team_id,
            "bot_id": self.bot_id,
        }
        self._home_views[user_id] = published
        return {"view": copy.deepcopy(published)}

    def _api_message(self, message: _Message, include_metadata: bool) -> dict:
        return message.api(team_id=self.team_id, app_id=self.app_id, include_metadata=include_metadata)


def _message_content(params: dict, *, require: bool,
                     max_block_text: int | None = MAX_BLOCK_TEXT) -> dict:
    """Validated text/blocks/attachments/metadata present in the call.

    Only the fields present are returned, which is what ``chat.update`` needs
    (absent = keep).  With ``require`` the call must carry some content. Blocks whose text
    passes ``max_block_text`` are ``msg_blocks_too_long`` (None: no such check).
    """
    content: dict[str, Any] = {}
    if "text" in params and params["text"] is not None:
        content["text"] = str(params["text"])
        if len(content["text"]) > MAX_TEXT:
            raise _SlackError("msg_too_long")
    if "blocks" in params:
        blocks = _json_field(params, "blocks", list, "invalid_blocks_format")
        problems = validate_blocks(blocks)
        if problems:
            raise _SlackError("invalid_blocks", response_metadata={"messages": problems})
        if max_block_text is not None and block_text_length(blocks) > max_block_text:
            raise _SlackError("msg_blocks_too_long")
        content["blocks"] = blocks
    if "attachments" in params:
        content["attachments"] = _json_field(params, "attachments", list, "invalid_attachments")
    if "metadata" in params:
        metadata = _json_field(params, "metadata", dict, "invalid_metadata_format")
        if not isinstance(metadata.get("event_type"), str) or not isinstance(
            metadata.get("event_payload"), dict
        ):
            raise _SlackError("invalid_metadata_schema")
        content["metadata"] = metadata
    if require and not (content.get("text", "").strip() or content.get("blocks") or content.get("attachments")):
        raise _SlackError("no_text")
    return content


def _find_element(blocks: list, action_id: str) -> tuple[str, dict] | None:
    """(block_id, element) of the interactive element with ``action_id`` in a message's blocks."""
    for block in blocks:
        candidates = list(block.get("elements") or []) if block.get("type") == "actions" else []
        if isinstance(block.get("accessory"), dict):
            candidates.append(block["accessory"])
        for element in candidates:
            if isinstance(element, dict) and element.get("action_id") == action_id:
                return str(block.get("block_id") or "actions"), element
    return None
