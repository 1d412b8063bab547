"""A local stand-in for the Slack Web API, spoken to by the real ``slack_sdk``.

Why this exists
---------------
SubmitWatch keeps one "living" Slack message per incident: it posts it once,
then edits it with ``chat.update`` and adds thread replies as things happen.
Getting that right means asserting on the *exact* requests the product sends
and on the state Slack ends up in, and exercising the unhappy paths (HTTP 429
with ``Retry-After``, 5xx, ``ok: false`` errors, revoked tokens, outages)
without a network or a Slack workspace.

Mocking ``WebClient`` would skip the part that most often goes wrong: how
``slack_sdk`` encodes bodies, applies retry handlers and turns responses into
``SlackApiError``.  So this is a real HTTP server on ``127.0.0.1`` and callers
use an unmodified ``WebClient(token=..., base_url=stand_in.api_url)``.

Three audiences use it:

* ``submitwatch demo`` prints what was posted (:meth:`SlackStandIn.messages`
  plus :func:`sim.slack_blocks.render_text`);
* tests assert on received payloads (:attr:`SlackStandIn.calls`) and inject
  faults (:meth:`SlackStandIn.fail_next`, :meth:`SlackStandIn.set_down`);
* benchmarks add latency (:attr:`SlackStandIn.delay`).

Fidelity notes (behaviour copied from Slack, checked against its method docs):

* Every API answer is HTTP 200 with ``{"ok": false, "error": ...}`` on failure,
  except rate limiting (HTTP 429 + ``Retry-After``) and server trouble (5xx).
* No token at all answers ``not_authed``; a wrong token ``invalid_auth``; a
  revoked one ``token_revoked``.  The token is read from
  ``Authorization: Bearer ...`` or, for form bodies only, a ``token`` field
  (Slack does not read tokens from JSON bodies).
* Both ``application/json`` and ``application/x-www-form-urlencoded`` bodies
  are accepted, plus query-string parameters.  ``slack_sdk`` 3.48 sends JSON
  for ``chat.postMessage``/``chat.update``/``chat.postEphemeral`` (always, with
  or without blocks) and form bodies for everything else, including
  "GET" methods such as ``conversations.history`` (it always POSTs).
  In a form body ``blocks``/``attachments``/``metadata`` are JSON strings.
* ``chat.update`` keeps the previous ``blocks`` when the field is absent and
  clears them when it is ``[]``; the same goes for ``text``.
* ``views.publish`` (App Home) stores the latest view per user
  (:meth:`SlackStandIn.home_view`, and :meth:`SlackStandIn.home_views` for every user);
  blocks are validated with the Home tab's
  100-block limit and refused as ``invalid_arguments`` with Slack-style
  ``response_metadata.messages``; a stale ``hash`` answers ``hash_conflict``.
* ``usergroups.users.list`` answers the members set with
  :meth:`SlackStandIn.set_usergroup`; an unknown group ``no_such_subteam``.
* Scopes: by default the bot token holds every scope.  Pass ``scopes=`` to
  grant only some; a method needing another answers ``missing_scope`` with
  ``needed`` and ``provided``, as Slack does.  :data:`SCOPES_NEEDED` is the
  table (from each method's docs page), also used to check ``manifest.yml``.

Deliberate strictness (to catch product bugs early):

* Block Kit limits are enforced (50 blocks, header 150 chars, section text
  3,000, field 2,000, button text 75 / value 2,000 / action_id 255, unique
  block_id, known block types; see :func:`sim.slack_blocks.validate_blocks`);
  failures answer ``invalid_blocks`` with Slack-style
  ``response_metadata.messages``.
* The text in a message's blocks is limited in total, as Slack enforces without documenting
  it: past ``max_block_text`` (12,000 by default, counted in UTF-16 units by
  :func:`sim.slack_blocks.block_text_length`; ``None`` turns it off) ``chat.*`` and
  response URLs answer ``msg_blocks_too_long``. The top-level ``text`` is refused only
  past 40,000 characters (``msg_too_long``): Slack's 4,000 is a recommendation.
* ``thread_ts`` must name an existing message in that channel, otherwise
  ``thread_not_found`` (Slack is laxer here).

Message timestamps are deterministic (``"1767225600.000100"``,
``"1767225600.000200"``, ...) so demo output and test expectations are stable.

Socket Mode (how the product receives slash commands and button clicks):

* ``apps.connections.open`` takes the app-level ``xapp-`` token from the
  ``Authorization`` header only (Slack refuses it as a POST parameter; the
  stand-in answers ``not_authed``).  The bot token answers
  ``not_allowed_token_type``, as does the app token on every other method;
  an unknown token ``invalid_auth``.  The answer is
  ``{"ok": true, "url": "ws://127.0.0.1:PORT/link/?ticket=...&app_id=..."}``.
* The websocket side (tickets, ``hello``, envelopes, acks, disconnects) lives
  in :mod:`sim.slack_socket`; the Socket Mode methods of
  :class:`SlackStandIn` delegate to it.
* ``response_url`` values point back at this server (``/response/N``) and
  are recorded (:meth:`SlackStandIn.responses`); like Slack's they accept
  :data:`RESPONSE_URL_MAX_POSTS` posts within 30 minutes.  They live here,
  not with Socket Mode, because they are plain HTTP posts that share this
  server, its outage switch and its body decoding.
"""

from __future__ import annotations

import copy
import json
import logging
import socket
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

from .slack_chat import ChatMethods
from .slack_conversations import ConversationMethods
from .slack_interactions import InteractionPayloads
from .slack_model import (
    _RESPONSE_PATH,
    _TS_STEP_US,
    RESPONSE_URL_MAX_POSTS,
    TS_EPOCH,
    _decode_params,
    _is_json,
    _Message,
    _Reply,
    _ResponseUrl,
    _SlackError,
)
from .slack_socket import SocketModeHub

__all__ = [
    "Call",
    "SlackStandIn",
    "RESPONSE_URL_MAX_POSTS",
    "SCOPES_NEEDED",
    "TS_EPOCH",
]

_log = logging.getLogger(__name__)

#: Web API methods that take the app-level (xapp-) token instead of the bot token.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
#: The bot-token scope each Web API method needs (None: no scope), from Slack's method pages.
#: Channels in the stand-in are public, hence channels:* rather than groups:*/im:*.
SCOPES_NEEDED: dict[str, str | None] = {
    "api.test": None,
    "apps.connections.open": None,  # the app-level token's connections:write, not a bot scope
    "auth.test": None,
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "chat.delete": "chat:write",
    "chat.postEphemeral": "chat:write",
    "conversations.info": "channels:read",
    "conversations.list": "channels:read",
    "conversations.history": "channels:history",
    "conversations.replies": "channels:history",
    "usergroups.users.list": "usergroups:read",
    "views.publish": None,
}
# ---------------------------------------------------------------------------
# Public records
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Call:
    """One HTTP request the stand-in received, successful or not.

    ``params`` is the decoded request exactly as sent: for JSON bodies nested
    values stay lists/dicts, for form bodies every value is a string (so
    ``blocks`` is a JSON string there).  Query-string parameters are merged in
    (body wins).  ``headers`` has lower-cased names because urllib rewrites
    ``Content-Type`` as ``Content-type`` and HTTP names are case-insensitive.

    ``status`` and ``error`` describe the answer given, so a test can see that
    the first attempt got a 429 and the retry succeeded.  ``at`` is
    ``time.time()`` when the request arrived.
    """

    method: str
    params: dict
    headers: dict
    at: float
    status: int = 200
    error: str | None = None

    @property
    def ok(self) -> bool:
        """True when the stand-in answered HTTP 200 with ``"ok": true``."""
        return self.status == 200 and self.error is None


# ---------------------------------------------------------------------------
# Internal state
# ---------------------------------------------------------------------------


@dataclass
class _Fault:
    """A scripted failure waiting to be served ``remaining`` more times."""

    status: int
    error: str | None
    headers: dict[str, str]
    body: str | None
    remaining: int

    def reply(self) -> _Reply:
        if self.body is not None:
            return _Reply.of_text(self.status, self.body, self.headers)
        if self.error is not None:
            return _Reply.of_json({"ok": False, "error": self.error}, self.status, self.headers)
        return _Reply.of_text(self.status, HTTPStatus(self.status).phrase, self.headers)


@dataclass
class _Channel:
    id: str
    name: str
    joined: bool
    created: int
    messages: list[_Message] = field(default_factory=list)  # top level, post order
    by_ts: dict[str, _Message] = field(default_factory=dict)  # top level and replies


# ---------------------------------------------------------------------------
# HTTP plumbing
# ---------------------------------------------------------------------------


class _Server(ThreadingHTTPServer):
    """One thread per connection; daemon threads so a hung client never blocks exit."""

    daemon_threads = True

    def __init__(self, stand_in: SlackStandIn) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.stand_in = stand_in


class _Handler(BaseHTTPRequestHandler):
    """Translates HTTP to :meth:`SlackStandIn._process` and back; holds no state."""

    server: _Server
    protocol_version = "HTTP/1.1"  # keep-alive for clients that want it (benchmarks)
    disable_nagle_algorithm = True  # small JSON answers must not wait for a delayed ACK
    server_version = "SlackStandIn/1.0"

    def do_POST(self) -> None:  # noqa: N802 - http.server naming
        self._handle()

    def do_GET(self) -> None:  # noqa: N802
        self._handle()

    def _handle(self) -> None:
        stand_in = self.server.stand_in
        url = urlsplit(self.path)
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            self._write(_Reply.of_text(411, "Length Required"))
            return
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        headers = {name.lower(): value for name, value in self.headers.items()}
        if url.path.startswith("/api/"):
            method = url.path[len("/api/") :]
            reply = stand_in._process(method=method, query=url.query, body=body, headers=headers)
            if stand_in._loses_answer(method):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)  # acted on; the answer never leaves
                return
        elif url.path.startswith(_RESPONSE_PATH):
            if self.command != "POST":
                reply = _Reply.of_text(405, "Method Not Allowed", {"Allow": "POST"})
            else:
                reply = stand_in._process_response(url.path[len(_RESPONSE_PATH) :], body, headers)
        else:
            reply = _Reply.of_text(404, "Not Found")
        self._write(reply)

    def _write(self, reply: _Reply) -> None:
        self.send_response(reply.status)
        self.send_header("Content-Type", reply.content_type)
        self.send_header("Content-Length", str(len(reply.body)))
        for name, value in reply.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(reply.body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        """Silence per-request logging: tests and the demo own the terminal."""


# ---------------------------------------------------------------------------
# The stand-in
# ---------------------------------------------------------------------------


class SlackStandIn(ChatMethods, ConversationMethods, InteractionPayloads):
    """A Slack Web API server on ``127.0.0.1`` with inspectable state.

    Use as a context manager or call :meth:`start`/:meth:`stop`::

        with SlackStandIn(channels=("C0ALERTS",)) as slack:
            client = WebClient(token="xoxb-test", base_url=slack.api_url)
            client.chat_postMessage(channel="C0ALERTS", text="hi")
            assert slack.messages("C0ALERTS")[0]["text"] == "hi"

    ``channels`` is an iterable of channel IDs (name = ID lower-cased) or a
    mapping ``{id: name}``; the bot is a member of all of them except those in
    ``not_joined``.  Channels can be given by ID or by name (``#name``), as in
    Slack.

    ``app_token`` is the app-level token Socket Mode connects with (``None``
    turns Socket Mode off: every token is then refused by
    ``apps.connections.open``).  A Bolt app runs against the stand-in as is::

        app = App(client=WebClient(token="xoxb-test", base_url=slack.api_url))  # token on the client
        handler = SocketModeHandler(app, "xapp-test")
        handler.connect()
        slack.wait_for_socket()
        envelope_id = slack.send_envelope("slash_commands", slack.slash_command_payload("status"))
        slack.wait_for_ack(envelope_id)

    All state lives behind one lock, taken for the whole of each API call, so
    concurrent posts get distinct, increasing timestamps and ``calls`` is in
    the same order as the state changes.  The Socket Mode side
    (:class:`~sim.slack_socket.SocketModeHub`) records under the same
    lock, from its loop thread.
    """

    def __init__(
        self,
        bot_token: str = "xoxb-test",
        channels: Iterable[str] | Mapping[str, str] = ("C0ALERTS",),
        *,
        not_joined: Iterable[str] = (),
        delay: float = 0.0,
        team_id: str = "T0SUBMIT",
        team: str = "SubmitWatch Test",
        bot_user_id: str = "U0SUBMITBOT",
        bot_id: str = "B0SUBMITBOT",
        app_id: str = "A0SUBMITAPP",
        ts_start: int = TS_EPOCH,
        app_token: str | None = "xapp-test",
        scopes: Iterable[str] | None = None,
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        #: The bot token's scopes; ``None`` grants every scope (see :data:`SCOPES_NEEDED`).
        self.scopes: frozenset[str] | None = None if scopes is None else frozenset(scopes)
        #: Seconds each request waits before being processed (benchmarks).
        self.delay = float(delay)
        #: Extra seconds before answering one method (``slow("auth.test", 5)``).
        self.method_delays: dict[str, float] = {}
        self.method_delay_times: dict[str, int] = {}
        #: Messages removed with chat.delete: {"channel", "ts"}.
        self.deleted: list[dict] = []
        #: Seconds each Web API answer waits after the request took effect: widens the window
        #: in which a client may die after Slack acted but before it heard so (crash tests).
        self.answer_delay = 0.0
        self._lost_answers: dict[str, int] = {}
        self.team_id = team_id
        self.team = team
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = app_id

        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._calls: list[Call] = []
        self._channels: dict[str, _Channel] = {}
        self._ephemerals: list[dict] = []
        self._faults: dict[str, deque[_Fault]] = {}
        self._down = False
        self._revoked = False
        self._post_rate: _PostRate | None = None
        self._ts_start_us = int(ts_start) * 1_000_000
        self._ts_count = 0

        # app_id is read when used: it is a public attribute callers may change.
        self._socket_mode = SocketModeHub(self._changed, app_id=lambda: self.app_id)
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._responses: list[dict] = []
        self._payload_count = 0
        self._home_views: dict[str, dict] = {}  # user ID -> the view as views.publish answered
        # (channel ID, ts) -> what the message showed after each successful post and update
        self._versions: dict[tuple[str, str], list[dict]] = {}
        self._view_count = 0
        self._usergroups: dict[str, list[str]] = {}

        names = channels if isinstance(channels, Mapping) else {cid: cid.lower() for cid in channels}
        skip = set(not_joined)
        for channel_id, name in names.items():
            self.add_channel(channel_id, name, joined=channel_id not in skip)

        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

        # Web API methods.  Each handler takes the decoded params and returns
        # the success payload (without "ok"), or raises _SlackError.
        self._methods: dict[str, Callable[[dict], dict]] = {
            "api.test": self._api_test,
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.info": self._conversations_info,
            "conversations.list": self._conversations_list,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
            "usergroups.users.list": self._usergroups_users_list,
            "views.publish": self._views_publish,
            # Socket Mode: authenticated with the app-level token, see
            # _authenticate and _APP_TOKEN_METHODS.
            "apps.connections.open": self._apps_connections_open,
        }

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> SlackStandIn:
        """Bind an ephemeral port on 127.0.0.1 and serve in a daemon thread."""
        with self._lock:
            if self._server is not None:
                return self
            self._server = _Server(self)
            self._thread = threading.Thread(
                target=self._server.serve_forever,
                kwargs={"poll_interval": 0.05},  # stop() returns quickly
                name=f"slack-stand-in:{self._server.server_address[1]}",
                daemon=True,
            )
            self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, close Socket Mode connections and free the ports.  Safe to call twice.

        Close Bolt's ``SocketModeHandler`` first: a client that loses its
        socket tries to reconnect, and with the HTTP server gone it logs
        connection errors until it is closed.
        """
        with self._lock:
            server, thread = self._server, self._thread
            # From here apps.connections.open answers internal_error, so no
            # new websocket server can start behind the one stopped below.
            self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._socket_mode.stop()

    def __enter__(self) -> SlackStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The TCP port the server listens on (only while started)."""
        if self._server is None:
            raise RuntimeError("SlackStandIn is not started")
        return self._server.server_address[1]

    @property
    def api_url(self) -> str:
        """``http://127.0.0.1:PORT/api/`` — pass as ``WebClient(base_url=...)``."""
        return f"http://127.0.0.1:{self.port}/api/"

    # -- workspace set-up --------------------------------------------------

    def add_channel(self, channel_id: str, name: str | None = None, *, joined: bool = True) -> None:
        """Create a public channel (``name`` defaults to the ID lower-cased)."""
        with self._lock:
            if channel_id in self._channels:
                raise ValueError(f"channel {channel_id!r} already exists")
            self._channels[channel_id] = _Channel(
                id=channel_id, name=name or channel_id.lower(), joined=joined, created=TS_EPOCH
            )

    def set_joined(self, channel: str, joined: bool = True) -> None:
        """Mark the bot as a member or not; non-members get ``not_in_channel``."""
        with self._lock:
            self._channel_or_keyerror(channel).joined = joined

    def set_usergroup(self, group_id: str, members: Iterable[str]) -> None:
        """Create or replace a user group (``S0...``) and its members, for ``usergroups.users.list``."""
        if not group_id.startswith("S"):
            raise ValueError(f"user group IDs start with S, not {group_id!r}")
        with self._lock:
            self._usergroups[group_id] = list(members)

    def revoke_token(self) -> None:
        """Make every later call with the bot token answer ``token_revoked``."""
        with self._lock:
            self._revoked = True

    # -- fault injection ---------------------------------------------------

    def lose_answers(self, method: str, times: int = 1) -> None:
        """Act on the next ``times`` calls to ``method``, then close the connection without an
        answer: what a client sees when Slack took a message and the network dropped the
        reply (an unanswered attempt, with no waiting for a timeout)."""
        with self._lock:
            self._lost_answers[method] = self._lost_answers.get(method, 0) + int(times)

    def _loses_answer(self, method: str) -> bool:
        with self._lock:
            left = self._lost_answers.get(method, 0)
            if left > 0:
                self._lost_answers[method] = left - 1
            return left > 0

    def slow(self, method: str, seconds: float, times: int | None = None) -> None:
        """Handle `method` `seconds` late (0 ends it), for the next `times` calls (None: all).

        The call is acted on after the delay, as Slack does when it is slow: a client that
        timed out meanwhile still gets its message posted.
        """
        self.method_delays[method] = float(seconds)
        if times is None:
            self.method_delay_times.pop(method, None)
        else:
            self.method_delay_times[method] = int(times)

    def fail_next(
        self,
        method: str,
        *,
        status: int = 200,
        error: str | None = None,
        headers: Mapping[str, str] | None = None,
        times: int = 1,
        body: str | None = None,
    ) -> None:
        """Answer the next ``times`` calls to ``method`` (``"*"`` = any) with a failure.

        * ``status=200, error="channel_not_found"`` → ``{"ok": false, ...}``.
        * ``status=429`` → ``{"ok": false, "error": "ratelimited"}`` with
          ``Retry-After: 1`` unless ``error``/``headers`` say otherwise.  Note
          slack_sdk's handler does ``int(Retry-After)`` and adds up to 1 s of
          jitter, so use whole seconds (``"0"`` keeps tests fast).
        * ``status>=500`` → plain-text body with the HTTP reason phrase
          (``"Internal Server Error"`` for 500), or JSON if ``error`` is given.
        * ``body`` overrides the response body verbatim (text/plain).

        Faults are served in the order scripted and before authentication,
        and a faulted call changes no state.
        """
        if times < 1:
            raise ValueError("times must be >= 1")
        if status == 200 and error is None and body is None:
            raise ValueError("a status-200 fault needs an error, e.g. error='channel_not_found'")
        extra_headers = dict(headers or {})
        if status == 429:
            error = error or "ratelimited"
            if not any(name.lower() == "retry-after" for name in extra_headers):
                extra_headers["Retry-After"] = "1"
        fault = _Fault(status, error, extra_headers, body, times)
        with self._lock:
            self._faults.setdefault(method, deque()).append(fault)

    def clear_faults(self) -> None:
        """Forget every scripted fault that has not fired yet."""
        with self._lock:
            self._faults.clear()

    def limit_post_rate(self, per_second: float = 1.0, *, burst: int = 5,
                        clock: Callable[[], float] = time.monotonic,
                        retry_after: str = "1") -> None:
        """Enforce Slack's rate for chat.postMessage: about one message per second per
        channel, short bursts allowed (a token bucket of ``burst``). Past it, HTTP 429
        ``ratelimited`` with ``Retry-After``, as Slack answers. ``clock`` (seconds) lets a
        test decide how much time passes; ``retry_after="0"`` keeps slack_sdk's retries fast.
        """
        with self._lock:
            self._post_rate = _PostRate(per_second, burst, clock, retry_after)

    def set_down(self, down: bool = True) -> None:
        """Simulate an outage: while down every call answers HTTP 503."""
        with self._lock:
            self._down = down

    # -- inspection --------------------------------------------------------

    @property
    def calls(self) -> list[Call]:
        """Every request received so far, in processing order (a copy)."""
        with self._lock:
            return list(self._calls)

    def calls_to(self, method: str) -> list[Call]:
        """The requests made to one API method, e.g. ``"chat.update"``."""
        with self._lock:
            return [call for call in self._calls if call.method == method]

    def wait_for_calls(self, method: str, count: int = 1, timeout: float = 5.0) -> list[Call]:
        """Block until ``count`` calls to ``method`` arrived; raise ``TimeoutError``.

        For code under test that calls Slack from another thread (Bolt lazy
        listeners, schedulers) so tests need not sleep-and-hope.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                found = [call for call in self._calls if call.method == method]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"{len(found)}/{count} calls to {method} after {timeout}s")
                self._changed.wait(remaining)

    def messages(self, channel: str) -> list[dict]:
        """Top-level messages of a channel in post order (deep copies).

        Each is ``{"channel", "ts", "text", "blocks", "attachments",
        "metadata", "thread_ts", "edits", "replies"}``; ``replies`` holds the
        thread replies in order, in the same shape.  ``blocks`` and
        ``attachments`` are ``[]`` when absent, ``metadata`` ``None``.
        """
        with self._lock:
            return [message.state() for message in self._channel_or_keyerror(channel).messages]

    def message(self, channel: str, ts: str) -> dict:
        """One message (top-level or reply) by its ts; ``KeyError`` if absent."""
        with self._lock:
            return self._channel_or_keyerror(channel).by_ts[ts].state()

    def home_view(self, user_id: str) -> dict | None:
        """The Home tab last published for ``user_id`` (as views.publish answered it), or None."""
        with self._lock:
            view = self._home_views.get(user_id)
            return copy.deepcopy(view) if view is not None else None

    def home_views(self) -> dict[str, dict]:
        """Every published Home tab: user ID -> the view, in the order first published."""
        with self._lock:
            return copy.deepcopy(self._home_views)

    def versions(self, channel: str, ts: str) -> list[dict]:
        """What one message (top-level or reply) showed, oldest first: as posted, then after
        each successful ``chat.update``.  Each is ``{"text", "blocks", "at"}`` (``at``: when
        the call arrived, ``time.time()``); ``[]`` for an unknown ts.  Slack keeps only the
        last; the demo's HTML page shows every version it sent.
        """
        with self._lock:
            key = (self._channel_or_keyerror(channel).id, ts)
            return copy.deepcopy(self._versions.get(key, []))

    def _record_version(self, reply: _Reply, at: float) -> None:
        answer = json.loads(reply.body)
        channel = self._channels.get(answer.get("channel", ""))
        message = channel.by_ts.get(answer.get("ts", "")) if channel else None
        if message is not None:
            self._versions.setdefault((channel.id, message.ts), []).append({
                "text": message.text, "at": at,
                "blocks": copy.deepcopy(message.blocks) if message.blocks is not None else []})

    def ephemerals(self, channel: str | None = None) -> list[dict]:
        """``chat.postEphemeral`` deliveries, optionally for one channel."""
        with self._lock:
            wanted = self._channel_or_keyerror(channel).id if channel else None
            return [copy.deepcopy(e) for e in self._ephemerals if wanted in (None, e["channel"])]

    def reset(self) -> None:
        """Clear calls, messages, ephemerals, faults, outage and revocation.

        Also forgets sent envelopes, socket messages, response_url posts
        (issued response URLs start counting uses again) and published Home
        tabs.  Open Socket Mode connections, channels, user groups and scopes
        stay as they are.
        """
        with self._lock:
            self._calls.clear()
            self._ephemerals.clear()
            self._home_views.clear()
            self._versions.clear()
            self._socket_mode.forget_traffic()
            self._responses.clear()
            for response_url in self._response_urls.values():
                response_url.uses = 0
            self._faults.clear()
            self._down = self._revoked = False
            self._ts_count = 0
            for channel in self._channels.values():
                channel.messages.clear()
                channel.by_ts.clear()

    # -- Socket Mode -------------------------------------------------------
    #
    # The websocket server starts with the first apps.connections.open (see
    # _apps_connections_open) and stops with the stand-in; sim.slack_socket
    # owns it and its state, these methods only forward.

    def connected_clients(self) -> list[dict]:
        """Open Socket Mode connections, oldest first.

        See :meth:`SocketModeHub.connected_clients <sim.slack_socket.SocketModeHub.connected_clients>`.
        """
        return self._socket_mode.connected_clients()

    def wait_for_socket(self, timeout: float = 5.0, *, newer_than: int = 0) -> dict:
        """Block until a client is connected (and got ``hello``); return the newest.

        See :meth:`SocketModeHub.wait_for_socket <sim.slack_socket.SocketModeHub.wait_for_socket>`.
        """
        return self._socket_mode.wait_for_socket(timeout, newer_than=newer_than)

    def send_envelope(
        self,
        type: str,  # noqa: A002 - Slack's field name
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool = False,
    ) -> str:
        """Deliver an envelope to the newest open connection; return its ``envelope_id``.

        See :meth:`SocketModeHub.send_envelope <sim.slack_socket.SocketModeHub.send_envelope>`.
        """
        return self._socket_mode.send_envelope(type, payload, accepts_response_payload=accepts_response_payload)

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict:
        """Block until the client acked ``envelope_id``; return the ack as sent.

        See :meth:`SocketModeHub.wait_for_ack <sim.slack_socket.SocketModeHub.wait_for_ack>`.
        """
        return self._socket_mode.wait_for_ack(envelope_id, timeout)

    def envelopes(self) -> list[dict]:
        """Sent envelopes in send order, each with what came back.

        See :meth:`SocketModeHub.envelopes <sim.slack_socket.SocketModeHub.envelopes>`.
        """
        return self._socket_mode.envelopes()

    def socket_messages(self) -> list[dict]:
        """Everything clients sent over their sockets: ``{"client", "at", "message"}``.

        See :meth:`SocketModeHub.socket_messages <sim.slack_socket.SocketModeHub.socket_messages>`.
        """
        return self._socket_mode.socket_messages()

    def disconnect_sockets(self, *, code: int = 1001, reason: str = "") -> int:
        """Close every open connection from the server side; return how many.

        See :meth:`SocketModeHub.disconnect_sockets <sim.slack_socket.SocketModeHub.disconnect_sockets>`.
        """
        return self._socket_mode.disconnect_sockets(code=code, reason=reason)

    def send_disconnect(self, reason: str = "refresh_requested") -> int:
        """Send Slack's ``{"type": "disconnect", ...}`` to every open connection; return how many.

        See :meth:`SocketModeHub.send_disconnect <sim.slack_socket.SocketModeHub.send_disconnect>`.
        """
        return self._socket_mode.send_disconnect(reason)

    # -- payload builders and response_url ------------------------------------


    # -- request processing (HTTP-free) ------------------------------------

    def _process(self, *, method: str, query: str, body: bytes, headers: dict[str, str]) -> _Reply:
        """Decode one request, answer it and record it as a :class:`Call`."""
        arrived = time.time()
        pause = self.delay + self._method_delay(method)
        if pause > 0:
            time.sleep(pause)
        try:
            params = _decode_params(query, body, headers.get("content-type", ""))
        except _SlackError as exc:
            reply = _Reply.of_json({"ok": False, "error": exc.error})
            params = {}
        else:
            reply = None
        with self._changed:
            if reply is None:
                # Handlers get their own copy so stored messages never share
                # objects with the recorded Call.
                try:
                    reply = self._answer(method, copy.deepcopy(params), headers)
                except Exception:  # a stand-in bug: answer 500, keep serving
                    _log.exception("SlackStandIn failed on %s", method)
                    reply = _Reply.of_text(500, "Internal Server Error (SlackStandIn bug, see log)")
            self._calls.append(Call(method, params, headers, arrived, reply.status, reply.error))
            if method in ("chat.postMessage", "chat.update") and reply.status == 200 \
                    and reply.error is None:
                self._record_version(reply, arrived)
            self._changed.notify_all()
        if self.answer_delay > 0:
            time.sleep(self.answer_delay)
        return reply

    def _method_delay(self, method: str) -> float:
        with self._lock:
            left = self.method_delay_times.get(method)
            if left is not None:
                if left <= 0:
                    return 0.0
                self.method_delay_times[method] = left - 1
            return self.method_delays.get(method, 0.0)

    def _answer(self, method: str, params: dict, headers: dict[str, str]) -> _Reply:
        """Outage, then scripted faults, then method lookup, auth and the method."""
        if self._down:
            return _Reply.of_text(503, HTTPStatus.SERVICE_UNAVAILABLE.phrase)
        fault = self._take_fault(method)
        if fault is not None:
            return fault.reply()
        handler = self._methods.get(method)
        if handler is None:
            return _Reply.of_json({"ok": False, "error": "unknown_method", "req_method": method})
        try:
            self._authenticate(method, params, headers)
            self._check_scope(method)
            if (method == "chat.postMessage" and self._post_rate is not None
                    and not self._post_rate.take(self._rate_key(params.get("channel")))):
                return _Reply.of_json({"ok": False, "error": "ratelimited"}, status=429,
                                      headers={"Retry-After": self._post_rate.retry_after})
            payload = handler(params)
        except _SlackError as exc:
            return _Reply.of_json({"ok": False, "error": exc.error, **exc.extra})
        # Slack tells a bot token's scopes in every answer; `check` reads them from auth.test.
        scopes = {} if method in _APP_TOKEN_METHODS else {"x-oauth-scopes": ",".join(
            sorted(self.granted_scopes()))}
        return _Reply.of_json({"ok": True, **payload}, headers=scopes)

    def granted_scopes(self) -> frozenset[str]:
        """The bot token's scopes: those given, or every scope the stand-in knows and commands."""
        if self.scopes is not None:
            return self.scopes
        return frozenset({s for s in SCOPES_NEEDED.values() if s} | {"commands", "groups:history"})

    def _take_fault(self, method: str) -> _Fault | None:
        for key in (method, "*"):
            queue = self._faults.get(key)
            if queue:
                fault = queue[0]
                fault.remaining -= 1
                if fault.remaining <= 0:
                    queue.popleft()
                return fault
        return None

    def _authenticate(self, method: str, params: dict, headers: dict[str, str]) -> None:
        """Token checks; the token type must fit the method, as Slack enforces.

        The app-level token is only good for :data:`_APP_TOKEN_METHODS` and
        only from the ``Authorization`` header; bot tokens are not good there.
        ``revoke_token`` revokes the bot token only.
        """
        token = None
        from_header = False
        scheme, _, credentials = headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and credentials.strip():
            token = credentials.strip()
            from_header = True
        elif isinstance(params.get("token"), str) and not _is_json(headers.get("content-type", "")):
            token = params["token"]
        if not token:
            raise _SlackError("not_authed")
        if method in _APP_TOKEN_METHODS:
            if not from_header:
                raise _SlackError("not_authed")
            if self.app_token is not None and token == self.app_token:
                return
            raise _SlackError("not_allowed_token_type" if token == self.bot_token else "invalid_auth")
        if self.app_token is not None and token == self.app_token:
            raise _SlackError("not_allowed_token_type")
        if token != self.bot_token:
            raise _SlackError("invalid_auth")
        if self._revoked:
            raise _SlackError("token_revoked")

    def _check_scope(self, method: str) -> None:
        needed = SCOPES_NEEDED.get(method)
        if needed is not None and self.scopes is not None and needed not in self.scopes:
            raise _SlackError("missing_scope", needed=needed, provided=",".join(sorted(self.scopes)))


    # -- helpers used by method handlers (lock held) ------------------------

    def _next_ts(self) -> str:
        self._ts_count += 1
        micros = self._ts_start_us + self._ts_count * _TS_STEP_US
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _find_channel(self, ref: Any) -> _Channel | None:
        if not isinstance(ref, str) or not ref:
            return None
        if ref in self._channels:
            return self._channels[ref]
        name = ref.removeprefix("#")
        return next((c for c in self._channels.values() if c.name == name), None)

    def _rate_key(self, ref: Any) -> str:
        """One rate per channel, whether a call names it by ID or by name (as Slack counts)."""
        channel = self._find_channel(ref)
        return channel.id if channel is not None else str(ref)

    def _channel_or_keyerror(self, ref: str) -> _Channel:
        channel = self._find_channel(ref)
        if channel is None:
            raise KeyError(f"no channel {ref!r} in the stand-in")
        return channel

    def _channel_param(self, params: dict, *, member: bool, names: bool = False) -> _Channel:
        """The channel a call names. As on Slack, only chat.postMessage (and postEphemeral)
        take a channel's name (`#alerts`); chat.update and conversations.* need its ID."""
        ref = params.get("channel")
        channel = self._find_channel(ref)
        if channel is None or (not names and channel.id != ref):
            raise _SlackError("channel_not_found")
        if member and not channel.joined:
            raise _SlackError("not_in_channel")
        return channel


    # -- Web API methods (lock held) ----------------------------------------

    def _api_test(self, params: dict) -> dict:
        return {"args": {k: v for k, v in params.items() if k != "token"}}

    def _auth_test(self, params: dict) -> dict:
        return {
            "url": "https://submitwatch-test.slack.com/",
            "team": self.team,
            "user": "submitwatch",
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    def _apps_connections_open(self, params: dict) -> dict:
        if self._server is None:  # stop() is under way
            raise _SlackError("internal_error")
        try:
            return {"url": self._socket_mode.open_url()}
        except ImportError:
            _log.error("SlackStandIn: Socket Mode needs the 'websockets' package")
            raise _SlackError("internal_error") from None


# ---------------------------------------------------------------------------
# Request decoding and validation
# ---------------------------------------------------------------------------




class _PostRate:
    """A token bucket per channel: ``burst`` messages at once, then ``per_second``."""

    def __init__(self, per_second: float, burst: int, clock: Callable[[], float],
                 retry_after: str) -> None:
        self.per_second, self.burst, self.clock = per_second, burst, clock
        self.retry_after = retry_after
        self.buckets: dict[str, tuple[float, float]] = {}   # channel: (tokens, at)

    def take(self, channel: str) -> bool:
        now = self.clock()
        tokens, at = self.buckets.get(channel, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * self.per_second)
        if tokens < 1:
            self.buckets[channel] = (tokens, now)
            return False
        self.buckets[channel] = (tokens - 1, now)
        return True
