"""The Slack stand-in's what Slack sends the app: slash commands, button clicks, Home events, and the response_url answers (a mixin of sim.slack_api.SlackStandIn, whose state it uses)."""
from __future__ import annotations

import copy
import time
import uuid
from http import HTTPStatus
from typing import Any

from .slack_chat import _find_element, _message_content
from .slack_model import (
    _RESPONSE_PATH,
    _VERIFICATION_TOKEN,
    RESPONSE_URL_MAX_POSTS,
    RESPONSE_URL_TTL,
    TS_EPOCH,
    _decode_params,
    _flag,
    _Reply,
    _ResponseUrl,
    _SlackError,
)


class InteractionPayloads:
    def new_response_url(self) -> str:
        """A fresh ``response_url`` on this server (only while started).

        Posts to it are recorded (:meth:`responses`); like Slack's, it takes
        :data:`RESPONSE_URL_MAX_POSTS` posts within :data:`RESPONSE_URL_TTL`
        seconds, then answers HTTP 404 ``used_url`` / ``expired_url``.
        """
        with self._lock:
            self._payload_count += 1
            response_id = str(self._payload_count)
            url = f"http://127.0.0.1:{self.port}{_RESPONSE_PATH}{response_id}"
            self._response_urls[response_id] = _ResponseUrl(url=url, created=time.time())
        return url

    def slash_command_payload(
        self,
        text: str,
        *,
        user_id: str = "U0ADMIN",
        user_name: str = "admin",
        channel_id: str | None = None,
        command: str = "/submitwatch",
    ) -> dict:
        """The payload of a ``slash_commands`` envelope, with the fields Slack sends.

        ``channel_id`` defaults to the first channel of the stand-in.  All
        values are strings, as Slack sends them (they come from a form post).
        ``response_url`` is a new :meth:`new_response_url`.
        """
        with self._lock:
            if channel_id is None:
                channel_id = next(iter(self._channels), "C0ALERTS")
        channel_name = self._channel_name(channel_id)
        response_url = self.new_response_url()
        return {
            "token": _VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "team_domain": "submitwatch-test",
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name,
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url,
            "trigger_id": self._trigger_id(),
        }

    def block_actions_payload(
        self,
        user_id: str,
        channel: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        selected_option_value: str | None = None,
        block_id: str | None = None,
        *,
        user_name: str | None = None,
    ) -> dict:
        """The payload of a click on a message's button or select, as Slack sends it.

        Over Socket Mode it is an ``interactive`` envelope's payload; over HTTP
        the form field ``payload`` holds it as JSON.  A button sends ``value``,
        a static select ``selected_option_value``.  When the message exists in
        the stand-in it is included (as Slack includes it) and the element is
        looked up in its blocks for its type, block_id and texts; a click that
        the message could not produce (unknown option, wrong element type)
        raises ``ValueError``, since it would be a bug in the test.
        ``response_url`` is a new :meth:`new_response_url`.
        """
        if value is not None and selected_option_value is not None:
            raise ValueError("a click sends either a button's value or a select's option, not both")
        with self._lock:
            channel_obj = self._find_channel(channel)
            channel_id = channel_obj.id if channel_obj else channel
            message = channel_obj.by_ts.get(message_ts) if channel_obj else None
            message_api = self._api_message(message, False) if message else None
            found = _find_element(message.blocks or [], action_id) if message else None
        action = _action(found, action_id, value, selected_option_value, block_id)
        action["action_ts"] = f"{time.time():.6f}"
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if message is not None and message.parent is not None:
            container["thread_ts"] = message.parent.ts
        payload: dict[str, Any] = {
            "type": "block_actions",
            "user": {"id": user_id, "username": user_name or user_id.lower(),
                     "name": user_name or user_id.lower(), "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": _VERIFICATION_TOKEN,
            "container": container,
            "trigger_id": self._trigger_id(),
            "team": {"id": self.team_id, "domain": "submitwatch-test"},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": self._channel_name(channel_id)},
            "state": {"values": {}},
            "response_url": self.new_response_url(),
            "actions": [action],
        }
        if message_api is not None:
            payload["message"] = message_api
        return payload

    def app_home_opened_event(self, user_id: str) -> dict:
        """The payload of an ``events_api`` envelope (or the HTTP body) when a user opens the Home tab.

        ``view`` is there when a Home tab was published for this user before,
        as Slack sends it.  ``channel`` is the user's DM with the app.
        """
        with self._lock:
            self._payload_count += 1
            serial = self._payload_count
            view = copy.deepcopy(self._home_views.get(user_id))
        event: dict[str, Any] = {
            "type": "app_home_opened",
            "user": user_id,
            "channel": "D" + user_id[1:],
            "tab": "home",
            "event_ts": f"{time.time():.6f}",
        }
        if view is not None:
            event["view"] = view
        return {
            "token": _VERIFICATION_TOKEN,
            "team_id": self.team_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": f"Ev0HOME{serial:06d}",
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
        }

    def _trigger_id(self) -> str:
        with self._lock:
            serial = self._payload_count
        return f"{TS_EPOCH + serial}.{serial:06d}.{uuid.uuid4().hex}"

    def _channel_name(self, channel_id: str) -> str:
        with self._lock:
            channel = self._channels.get(channel_id)
        if channel is not None:
            return channel.name
        return "directmessage" if channel_id.startswith("D") else channel_id.lower()

    def responses(self, url: str | None = None) -> list[dict]:
        """Posts to response URLs, in arrival order, optionally for one URL.

        Each is ``{"url", "payload", "headers", "at", "status", "error"}``;
        ``payload`` is the decoded body (Bolt's ``respond()`` sends JSON such
        as ``{"text": ...}``).  Refused posts are included with their error.
        """
        with self._lock:
            return [copy.deepcopy(r) for r in self._responses if url in (None, r["url"])]

    def wait_for_responses(self, count: int = 1, timeout: float = 5.0, *, url: str | None = None) -> list[dict]:
        """Block until ``count`` response_url posts arrived; raise ``TimeoutError``.

        Bolt listeners call ``respond()`` after ``ack()``, so the post can land
        after :meth:`wait_for_ack` returns.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [r for r in self._responses if url in (None, r["url"])]
                if len(found) >= count:
                    return copy.deepcopy(found)
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)}/{count} response_url posts after {timeout}s")
                self._changed.wait(remaining)

    def _process_response(self, response_id: str, body: bytes, headers: dict[str, str]) -> _Reply:
        """A post to a response_url: answer it and record it for :meth:`responses`.

        Status codes and error names here are the stand-in's approximation
        (Slack documents the 5-posts / 30-minutes limits, not the answers):
        404 for an unknown, used-up or expired URL, 400 for a bad body,
        503 during :meth:`set_down`.
        """
        arrived = time.time()
        if self.delay > 0:
            time.sleep(self.delay)
        decode_error = None
        try:
            params = _decode_params("", body, headers.get("content-type", ""))
        except _SlackError as exc:
            params, decode_error = {}, exc.error
        with self._changed:
            entry = self._response_urls.get(response_id)
            if self._down:
                reply = _Reply.of_text(503, HTTPStatus.SERVICE_UNAVAILABLE.phrase)
            elif entry is None:
                reply = _Reply.of_json({"ok": False, "error": "no_service"}, 404)
            elif arrived - entry.created > RESPONSE_URL_TTL:
                reply = _Reply.of_json({"ok": False, "error": "expired_url"}, 404)
            elif entry.uses >= RESPONSE_URL_MAX_POSTS:
                reply = _Reply.of_json({"ok": False, "error": "used_url"}, 404)
            elif decode_error is not None:
                reply = _Reply.of_json({"ok": False, "error": decode_error}, 400)
            else:
                try:
                    _message_content(params, require=not _flag(params.get("delete_original")),
                                     max_block_text=getattr(self, "max_block_text", None))
                except _SlackError as exc:
                    reply = _Reply.of_json({"ok": False, "error": exc.error, **exc.extra}, 400)
                else:
                    entry.uses += 1
                    reply = _Reply.of_json({"ok": True})
            if entry is not None:
                url = entry.url
            else:
                port = self._server.server_address[1] if self._server is not None else 0
                url = f"http://127.0.0.1:{port}{_RESPONSE_PATH}{response_id}"
            self._responses.append(
                {
                    "url": url,
                    "payload": params,
                    "headers": headers,
                    "at": arrived,
                    "status": reply.status,
                    "error": reply.error,
                }
            )
            self._changed.notify_all()
        return reply


def _action(found: tuple[str, dict] | None, action_id: str, value: str | None,
            selected_option_value: str | None, block_id: str | None) -> dict[str, Any]:
    """The `actions[0]` of a click: the element as the message has it (`found`: its block_id
    and element), or as the test describes it when the message is not in the stand-in."""
    is_select = selected_option_value is not None
    action: dict[str, Any] = {"action_id": action_id, "block_id": block_id or "actions"}
    element_text = action_id
    if found is not None:
        found_block_id, element = found
        action["block_id"] = block_id or found_block_id
        if (element.get("type") == "static_select") != is_select:
            raise ValueError(f"{action_id!r} is a {element.get('type')} in the message; "
                             "pass value= for a button, selected_option_value= for a select")
        if is_select:
            option = next((o for o in element.get("options", []) if o.get("value") == selected_option_value), None)
            if option is None:
                raise ValueError(f"{action_id!r} has no option with value {selected_option_value!r}")
            element_text = option["text"]["text"]
        else:
            element_text = (element.get("text") or {}).get("text", action_id)
            if value is None:
                value = element.get("value")  # the button sends what the message holds
    if is_select:
        action["type"] = "static_select"
        action["selected_option"] = {
            "text": {"type": "plain_text", "text": element_text, "emoji": True},
            "value": selected_option_value,
        }
    else:
        action["type"] = "button"
        action["text"] = {"type": "plain_text", "text": element_text, "emoji": True}
        if value is not None:
            action["value"] = value
    return action
