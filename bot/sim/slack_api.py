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
  plus :func:`render_text`);
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

Deliberate strictness (to catch product bugs early):

* Block Kit limits are enforced (50 blocks, header 150 chars, section text
  3,000, field 2,000, button text 75 / value 2,000 / action_id 255, unique
  block_id, known block types); failures answer ``invalid_blocks`` with
  Slack-style ``response_metadata.messages``.
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
  ``{"ok": true, "url": "ws://127.0.0.1:PORT/link/?ticket=...&app_id=..."}``:
  plain ``ws://`` works because slack_sdk's built-in client (the one
  ``slack_bolt.adapter.socket_mode.SocketModeHandler`` uses) only wraps TLS
  around port 443.
* On connect the server sends Slack's ``hello``; envelopes are
  ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` and the
  client acks with ``{"envelope_id", "payload"?}``.  Acks are recorded with
  how long they took (Slack wants them within :data:`ACK_DEADLINE` seconds).
* Tickets are single-use (Slack's are short-lived): a reused or unknown
  ticket fails the websocket handshake with HTTP 401.  slack_sdk always asks
  for a fresh URL when it reconnects, so this only bites code that replays
  an old URL.
* ``response_url`` values point back at this server (``/response/N``) and
  are recorded (:meth:`SlackStandIn.responses`); like Slack's they accept
  :data:`RESPONSE_URL_MAX_POSTS` posts within 30 minutes.
* The websocket server needs the ``websockets`` package and starts with the
  first ``apps.connections.open``, so the demo and plain Web API tests do not
  pay for it (nor need the package).
"""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import logging
import re
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, parse_qsl, quote, urlsplit

__all__ = [
    "Call",
    "SlackStandIn",
    "block_kit_builder_url",
    "render_text",
    "validate_blocks",
    "ACK_DEADLINE",
    "ENVELOPE_TYPES",
    "MAX_BLOCKS",
    "RESPONSE_URL_MAX_POSTS",
    "TS_EPOCH",
]

_log = logging.getLogger(__name__)

#: First second of generated message timestamps: 2026-01-01T00:00:00Z.
TS_EPOCH = 1767225600
#: Block Kit: blocks per message (100 only applies to Home tabs / modals).
MAX_BLOCKS = 50
#: Slack truncates/rejects message text beyond this many characters.
MAX_TEXT = 40_000
#: Microseconds between consecutive generated timestamps (".000100" steps).
_TS_STEP_US = 100
#: Socket Mode envelope types Slack sends (and Bolt dispatches).
ENVELOPE_TYPES = frozenset({"slash_commands", "interactive", "events_api"})
#: Seconds Slack waits for an envelope ack (DOMAIN.md section 4).
ACK_DEADLINE = 3.0
#: A response_url accepts this many posts ...
RESPONSE_URL_MAX_POSTS = 5
#: ... within this many seconds of being issued.
RESPONSE_URL_TTL = 30 * 60

_KNOWN_BLOCK_TYPES = frozenset(
    {
        "actions",
        "context",
        "divider",
        "file",
        "header",
        "image",
        "input",
        "markdown",
        "rich_text",
        "section",
        "table",
        "video",
    }
)

_JSON_CONTENT_TYPE = "application/json; charset=utf-8"
#: The deprecated verification token Slack still puts in slash command payloads.
_VERIFICATION_TOKEN = "sTaNdInVeRiFiCaTiOnToKeN"
#: Web API methods that take the app-level (xapp-) token instead of the bot token.
_APP_TOKEN_METHODS = frozenset({"apps.connections.open"})
#: Path prefix of the response_url endpoint on the HTTP server.
_RESPONSE_PATH = "/response/"
#: Path of the Socket Mode websocket endpoint (Slack's is /link/ too).
_LINK_PATH = "/link/"


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
    reply_broadcast: bool = False

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
class _SocketClient:
    """One Socket Mode websocket connection (kept after it closes, for history)."""

    id: int  # 1, 2, 3, ... in connection order, so a reconnect is visibly new
    ticket: str
    connection: Any  # websockets.asyncio.server.ServerConnection
    peer: Any
    connected_at: float
    closed_at: float | None = None
    close_code: int | None = None

    def state(self) -> dict:
        """The snapshot handed out by :meth:`SlackStandIn.connected_clients`."""
        return {
            "id": self.id,
            "ticket": self.ticket,
            "peer": self.peer,
            "connected_at": self.connected_at,
            "closed_at": self.closed_at,
            "close_code": self.close_code,
        }


@dataclass
class _Envelope:
    """An envelope sent to a Socket Mode client and what came back."""

    envelope: dict
    client: int
    sent_at: float  # time.time(), for people
    sent_mono: float  # time.monotonic(), for the ack latency
    ack: dict | None = None
    ack_seconds: float | None = None
    acks: int = 0  # more than one means the client acked twice

    def state(self) -> dict:
        """The snapshot handed out by :meth:`SlackStandIn.envelopes`."""
        return {
            **copy.deepcopy(self.envelope),
            "client": self.client,
            "sent_at": self.sent_at,
            "ack": copy.deepcopy(self.ack),
            "ack_seconds": self.ack_seconds,
            "acks": self.acks,
            "late": self.ack_seconds is None or self.ack_seconds > ACK_DEADLINE,
        }


@dataclass
class _ResponseUrl:
    """A ``response_url`` handed out in a payload, with its use count."""

    url: str
    created: float
    uses: int = 0


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
            reply = stand_in._process(method=url.path[len("/api/") :], query=url.query, body=body, headers=headers)
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


class _SocketServer:
    """The Socket Mode websocket endpoint: a ``websockets`` asyncio server.

    One event loop in one daemon thread serves every connection.  That, not
    ``websockets.sync``, because the threaded server's per-connection threads
    are not daemons: a test that forgot :meth:`SlackStandIn.stop` with a bot
    still connected would hang interpreter exit.

    Holds no state: each event goes to the stand-in, which records it under
    its lock.  One rule keeps that deadlock-free: code on the loop may take
    the stand-in lock briefly, and code holding the lock never waits for the
    loop (:meth:`call` is only used with the lock released).
    """

    #: Seconds the server waits for the client's half of a close handshake.
    #: slack_sdk's built-in client never sends one (it just closes the TCP
    #: socket), so keep this short or every server-side close lingers.
    CLOSE_TIMEOUT = 1.0
    #: Seconds between the server's keepalive pings (Slack pings clients too).
    #: Short on purpose: slack_sdk's ``close()`` waits for its reader thread,
    #: which sits in a ``recv()`` with a 3 s timeout that closing the socket
    #: from another thread does not interrupt; any incoming frame does, so
    #: this bounds how long ``SocketModeHandler.close()`` blocks in tests.
    PING_INTERVAL = 0.5

    def __init__(self, stand_in: SlackStandIn) -> None:
        from websockets.asyncio.server import serve  # only Socket Mode needs the package

        self._stand_in = stand_in
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="slack-stand-in:socket-mode", daemon=True)
        self._thread.start()

        async def start() -> Any:
            return await serve(
                self._handler,
                "127.0.0.1",
                0,
                process_request=self._check_ticket,
                compression=None,  # slack_sdk's client offers no extensions anyway
                close_timeout=self.CLOSE_TIMEOUT,
                ping_interval=self.PING_INTERVAL,
                ping_timeout=20,  # websockets' default; slack_sdk pongs from its reader thread
                server_header="SlackStandIn/1.0",
            )

        try:
            self._server = self.call(start())
        except BaseException:
            self._stop_loop()
            raise
        self.port: int = self._server.sockets[0].getsockname()[1]
        self._thread.name = f"slack-stand-in:socket-mode:{self.port}"

    def call(self, coroutine: Any, timeout: float = 5.0) -> Any:
        """Run ``coroutine`` on the loop and wait for its result (never with the lock held)."""
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    def stop(self) -> None:
        """Close every connection (code 1001, as Slack going away), then the loop."""

        async def close() -> None:
            self._server.close()
            await self._server.wait_closed()

        try:
            self.call(close(), timeout=self.CLOSE_TIMEOUT + 4)
        except Exception:  # still stop the loop; the thread is a daemon anyway
            _log.exception("SlackStandIn: closing the Socket Mode server failed")
        self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        if not self._thread.is_alive():
            self._loop.close()

    def _check_ticket(self, connection: Any, request: Any) -> Any:
        """Handshake gate: only ``/link/`` with a ticket from apps.connections.open."""
        url = urlsplit(request.path)
        if url.path != _LINK_PATH:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        ticket = (parse_qs(url.query).get("ticket") or [""])[0]
        if not self._stand_in._use_ticket(ticket):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid or already used ticket\n")
        return None

    async def _handler(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        stand_in = self._stand_in
        ticket = (parse_qs(urlsplit(connection.request.path).query).get("ticket") or [""])[0]
        client: _SocketClient | None = None
        try:
            # hello goes out before the client is listed, so an envelope sent
            # as soon as wait_for_socket() returns can never overtake it.
            await connection.send(stand_in._hello())
            client = stand_in._socket_opened(connection, ticket)
            async for raw in connection:
                stand_in._socket_received(client, raw)
        except ConnectionClosed:
            pass
        finally:
            if client is not None:
                stand_in._socket_closed(client, connection.close_code)


# ---------------------------------------------------------------------------
# The stand-in
# ---------------------------------------------------------------------------


class SlackStandIn:
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
    the same order as the state changes.  The Socket Mode loop thread records
    into the same state under the same lock.
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
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        #: Seconds each request waits before being processed (benchmarks).
        self.delay = float(delay)
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
        self._ts_start_us = int(ts_start) * 1_000_000
        self._ts_count = 0

        # Socket Mode and response_url state (see the "Socket Mode" section).
        self._socket_server: _SocketServer | None = None
        self._tickets: set[str] = set()
        self._socket_clients: list[_SocketClient] = []
        self._socket_inbox: list[dict] = []
        self._envelopes: dict[str, _Envelope] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._responses: list[dict] = []
        self._payload_count = 0

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
            "chat.postEphemeral": self._chat_post_ephemeral,
            "conversations.info": self._conversations_info,
            "conversations.history": self._conversations_history,
            "conversations.replies": self._conversations_replies,
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
            socket_server = self._socket_server
            self._server = self._thread = self._socket_server = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        if socket_server is not None:
            socket_server.stop()

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

    def revoke_token(self) -> None:
        """Make every later call with the bot token answer ``token_revoked``."""
        with self._lock:
            self._revoked = True

    # -- fault injection ---------------------------------------------------

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

    def ephemerals(self, channel: str | None = None) -> list[dict]:
        """``chat.postEphemeral`` deliveries, optionally for one channel."""
        with self._lock:
            wanted = self._channel_or_keyerror(channel).id if channel else None
            return [copy.deepcopy(e) for e in self._ephemerals if wanted in (None, e["channel"])]

    def reset(self) -> None:
        """Clear calls, messages, ephemerals, faults, outage and revocation.

        Also forgets sent envelopes, socket messages and response_url posts
        (issued response URLs start counting uses again).  Open Socket Mode
        connections stay open.
        """
        with self._lock:
            self._calls.clear()
            self._ephemerals.clear()
            self._envelopes.clear()
            self._socket_inbox.clear()
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
    # _apps_connections_open) and stops with the stand-in.  Methods here run
    # on the caller's thread; the _socket_* callbacks further down run on
    # the server's loop thread.

    def connected_clients(self) -> list[dict]:
        """Open Socket Mode connections, oldest first.

        Each is ``{"id", "ticket", "peer", "connected_at", "closed_at",
        "close_code"}``; ``id`` counts connections since start (1, 2, ...), so
        a reconnect shows up as a higher id.
        """
        with self._lock:
            return [client.state() for client in self._socket_clients if client.closed_at is None]

    def wait_for_socket(self, timeout: float = 5.0, *, newer_than: int = 0) -> dict:
        """Block until a client is connected (and got ``hello``); return the newest.

        ``newer_than`` ignores connections with that id or lower, to wait for
        a reconnect while the old socket may still be open.  Raises
        ``TimeoutError``.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                ready = [c for c in self._socket_clients if c.closed_at is None and c.id > newer_than]
                if ready:
                    return ready[-1].state()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no Socket Mode client (id > {newer_than}) connected after {timeout}s")
                self._changed.wait(remaining)

    def send_envelope(
        self,
        type: str,  # noqa: A002 - Slack's field name
        payload: Mapping[str, Any],
        *,
        accepts_response_payload: bool = False,
    ) -> str:
        """Deliver ``{"envelope_id", "type", "payload", "accepts_response_payload"}``; return the id.

        ``type`` is one of :data:`ENVELOPE_TYPES`.  Goes to the newest open
        connection (Slack spreads envelopes over an app's connections; one
        bot process only ever has one that matters).  ``events_api``
        envelopes also carry ``retry_attempt: 0`` and ``retry_reason: ""``
        as Slack's do.  Note Slack sets ``accepts_response_payload`` to true
        for slash commands; pass it when the product relies on it.

        Raises ``RuntimeError`` when no client is connected (call
        :meth:`wait_for_socket` first) and ``ConnectionError`` when the
        connection dropped while sending.
        """
        if type not in ENVELOPE_TYPES:
            raise ValueError(f"envelope type must be one of {sorted(ENVELOPE_TYPES)}, not {type!r}")
        if not isinstance(payload, Mapping):
            raise TypeError("payload must be a mapping")
        envelope: dict[str, Any] = {
            "envelope_id": str(uuid.uuid4()),
            "type": type,
            "payload": copy.deepcopy(dict(payload)),
            "accepts_response_payload": bool(accepts_response_payload),
        }
        if type == "events_api":
            envelope.update(retry_attempt=0, retry_reason="")
        text = json.dumps(envelope)  # fail on non-JSON payloads before recording anything
        envelope_id = envelope["envelope_id"]
        with self._lock:
            open_clients = [c for c in self._socket_clients if c.closed_at is None]
            server = self._socket_server
            if not open_clients or server is None:
                raise RuntimeError("no Socket Mode client is connected (wait_for_socket() first)")
            client = open_clients[-1]
            self._envelopes[envelope_id] = _Envelope(
                envelope=envelope, client=client.id, sent_at=time.time(), sent_mono=time.monotonic()
            )
        try:
            server.call(client.connection.send(text))
        except Exception as exc:
            with self._lock:
                self._envelopes.pop(envelope_id, None)
            raise ConnectionError(f"envelope not delivered to Socket Mode client {client.id}: {exc!r}") from exc
        return envelope_id

    def wait_for_ack(self, envelope_id: str, timeout: float = 5.0) -> dict:
        """Block until the client acked ``envelope_id``; return the ack as sent.

        The ack is ``{"envelope_id"}`` plus ``"payload"`` when the listener
        passed something to ``ack()``.  How long it took is in
        :meth:`envelopes` (``ack_seconds``).  ``KeyError`` for an envelope
        never sent, ``TimeoutError`` when no ack came in time.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            record = self._envelopes.get(envelope_id)
            if record is None:
                raise KeyError(f"no envelope {envelope_id!r} was sent")
            while record.ack is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"envelope {envelope_id} not acked after {timeout}s")
                self._changed.wait(remaining)
            return copy.deepcopy(record.ack)

    def envelopes(self) -> list[dict]:
        """Sent envelopes in send order, each with what came back.

        The envelope's own fields plus ``client`` (connection id),
        ``sent_at``, ``ack`` (the first ack, or ``None``), ``ack_seconds``
        (send to ack), ``acks`` (how many acks arrived; 2+ is a product bug)
        and ``late`` (no ack yet, or slower than :data:`ACK_DEADLINE`).
        """
        with self._lock:
            return [record.state() for record in self._envelopes.values()]

    def socket_messages(self) -> list[dict]:
        """Everything clients sent over their sockets: ``{"client", "at", "message"}``.

        ``message`` is the decoded JSON (or the raw text if it was not JSON).
        Acks for unknown envelope ids only show up here.
        """
        with self._lock:
            return copy.deepcopy(self._socket_inbox)

    def disconnect_sockets(self, *, code: int = 1001, reason: str = "") -> int:
        """Close every open connection from the server side; return how many.

        Simulates Slack dropping the link: the client gets a close frame
        (``code`` 1001 "going away" by default) with no warning.  slack_sdk's
        client then asks apps.connections.open for a new URL, which its
        monitor thread does within its ``ping_interval``.  Returns once the
        server has seen every connection close, so :meth:`wait_for_socket`
        afterwards can only find a new one.
        """
        with self._lock:
            targets = [c for c in self._socket_clients if c.closed_at is None]
            server = self._socket_server
        if not targets or server is None:
            return 0

        async def close_all() -> None:
            await asyncio.gather(*(c.connection.close(code, reason) for c in targets), return_exceptions=True)

        server.call(close_all(), timeout=_SocketServer.CLOSE_TIMEOUT + 4)
        deadline = time.monotonic() + 5
        with self._changed:
            while any(c.closed_at is None for c in targets):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError("Socket Mode connections did not close")
                self._changed.wait(remaining)
        return len(targets)

    def send_disconnect(self, reason: str = "refresh_requested") -> int:
        """Send Slack's ``{"type": "disconnect", "reason", ...}`` to every open connection.

        Slack's graceful refresh: the socket stays open and the client is
        expected to open a new one (slack_sdk does at once) and drop the old
        one.  Reasons Slack uses: ``warning``, ``refresh_requested``,
        ``link_disabled``.  Returns how many connections were told.
        """
        message = json.dumps({"type": "disconnect", "reason": reason, "debug_info": {"host": "slack-stand-in"}})
        with self._lock:
            targets = [c for c in self._socket_clients if c.closed_at is None]
            server = self._socket_server
        if not targets or server is None:
            return 0

        async def send_all() -> None:
            await asyncio.gather(*(c.connection.send(message) for c in targets), return_exceptions=True)

        server.call(send_all())
        return len(targets)

    # -- payload builders and response_url ------------------------------------

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
            channel = self._channels.get(channel_id)
            if channel is not None:
                channel_name = channel.name
            else:
                channel_name = "directmessage" if channel_id.startswith("D") else channel_id.lower()
        response_url = self.new_response_url()
        with self._lock:
            serial = self._payload_count
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
            "trigger_id": f"{TS_EPOCH + serial}.{serial:06d}.{uuid.uuid4().hex}",
        }

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

    # -- request processing (HTTP-free) ------------------------------------

    def _process(self, *, method: str, query: str, body: bytes, headers: dict[str, str]) -> _Reply:
        """Decode one request, answer it and record it as a :class:`Call`."""
        arrived = time.time()
        if self.delay > 0:
            time.sleep(self.delay)
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
            self._changed.notify_all()
        return reply

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
            payload = handler(params)
        except _SlackError as exc:
            return _Reply.of_json({"ok": False, "error": exc.error, **exc.extra})
        return _Reply.of_json({"ok": True, **payload})

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
                    _message_content(params, require=not _flag(params.get("delete_original")))
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

    # -- Socket Mode callbacks (run on the websocket loop thread) -------------

    def _use_ticket(self, ticket: str) -> bool:
        """Consume a ticket from apps.connections.open; False if unknown or used."""
        with self._lock:
            if ticket in self._tickets:
                self._tickets.discard(ticket)
                return True
            return False

    def _hello(self) -> str:
        """Slack's first message on a new connection (shape copied from Slack)."""
        with self._lock:
            open_now = sum(1 for client in self._socket_clients if client.closed_at is None)
        return json.dumps(
            {
                "type": "hello",
                "num_connections": open_now + 1,
                "debug_info": {"host": "slack-stand-in", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": self.app_id},
            }
        )

    def _socket_opened(self, connection: Any, ticket: str) -> _SocketClient:
        with self._changed:
            client = _SocketClient(
                id=len(self._socket_clients) + 1,
                ticket=ticket,
                connection=connection,
                peer=connection.remote_address,
                connected_at=time.time(),
            )
            self._socket_clients.append(client)
            self._changed.notify_all()
        return client

    def _socket_received(self, client: _SocketClient, raw: str | bytes) -> None:
        """Record one client message; an ``envelope_id`` makes it an ack."""
        arrived = time.monotonic()
        try:
            message: Any = json.loads(raw)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            message = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        with self._changed:
            self._socket_inbox.append({"client": client.id, "at": time.time(), "message": message})
            envelope_id = message.get("envelope_id") if isinstance(message, dict) else None
            record = self._envelopes.get(envelope_id) if isinstance(envelope_id, str) else None
            if record is not None:
                record.acks += 1
                if record.ack is None:
                    record.ack = message
                    record.ack_seconds = arrived - record.sent_mono
            self._changed.notify_all()

    def _socket_closed(self, client: _SocketClient, code: int | None) -> None:
        with self._changed:
            client.closed_at = time.time()
            client.close_code = code
            self._changed.notify_all()

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

    def _channel_or_keyerror(self, ref: str) -> _Channel:
        channel = self._find_channel(ref)
        if channel is None:
            raise KeyError(f"no channel {ref!r} in the stand-in")
        return channel

    def _channel_param(self, params: dict, *, member: bool) -> _Channel:
        channel = self._find_channel(params.get("channel"))
        if channel is None:
            raise _SlackError("channel_not_found")
        if member and not channel.joined:
            raise _SlackError("not_in_channel")
        return channel

    def _api_message(self, message: _Message, include_metadata: bool) -> dict:
        return message.api(team_id=self.team_id, app_id=self.app_id, include_metadata=include_metadata)

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
        # Starting the websocket server here, with the lock held, is safe:
        # its loop is brand new and has no connection that could want the lock.
        if self._server is None:  # stop() is under way
            raise _SlackError("internal_error")
        if self._socket_server is None:
            try:
                self._socket_server = _SocketServer(self)
            except ImportError:
                _log.error("SlackStandIn: Socket Mode needs the 'websockets' package")
                raise _SlackError("internal_error") from None
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        return {"url": f"ws://127.0.0.1:{self._socket_server.port}{_LINK_PATH}?ticket={ticket}&app_id={self.app_id}"}

    def _chat_post_message(self, params: dict) -> dict:
        channel = self._channel_param(params, member=True)
        content = _message_content(params, require=True)
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
            reply_broadcast=parent is not None and _flag(params.get("reply_broadcast")),
            **content,
        )
        if parent is None:
            channel.messages.append(message)
        else:
            parent.replies.append(message)
        channel.by_ts[message.ts] = message
        return {"channel": channel.id, "ts": message.ts, "message": self._api_message(message, True)}

    def _chat_update(self, params: dict) -> dict:
        channel = self._channel_param(params, member=False)
        message = channel.by_ts.get(str(params.get("ts") or ""))
        if message is None:
            raise _SlackError("message_not_found")
        content = _message_content(params, require=False)
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
        channel = self._channel_param(params, member=True)
        user = params.get("user")
        if not isinstance(user, str) or not user:
            raise _SlackError("user_not_found")
        content = _message_content(params, require=True)
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


# ---------------------------------------------------------------------------
# Request decoding and validation
# ---------------------------------------------------------------------------


def _is_json(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "application/json"


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


def _message_content(params: dict, *, require: bool) -> dict:
    """Validated text/blocks/attachments/metadata present in the call.

    Only the fields present are returned, which is what ``chat.update`` needs
    (absent = keep).  With ``require`` the call must carry some content.
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


def _text_problems(obj: Any, pointer: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(obj, dict) or obj.get("type") not in ("plain_text", "mrkdwn"):
        return [f"[ERROR] must be a text object [json-pointer:{pointer}]"]
    if plain_only and obj["type"] != "plain_text":
        return [f"[ERROR] must be plain_text [json-pointer:{pointer}/type]"]
    text = obj.get("text")
    if not isinstance(text, str) or not text:
        return [f"[ERROR] must be more than 0 characters [json-pointer:{pointer}/text]"]
    if len(text) > limit:
        return [f"[ERROR] must be less than {limit + 1} characters [json-pointer:{pointer}/text]"]
    return []


def _element_problems(element: Any, pointer: str) -> list[str]:
    if not isinstance(element, dict) or not isinstance(element.get("type"), str):
        return [f"[ERROR] element must have a type [json-pointer:{pointer}]"]
    problems: list[str] = []
    if len(str(element.get("action_id", ""))) > 255:
        problems.append(f"[ERROR] must be less than 256 characters [json-pointer:{pointer}/action_id]")
    if element["type"] == "button":
        problems += _text_problems(element.get("text"), f"{pointer}/text", 75, plain_only=True)
        if len(str(element.get("value", ""))) > 2000:
            problems.append(f"[ERROR] must be less than 2001 characters [json-pointer:{pointer}/value]")
        if len(str(element.get("url", ""))) > 3000:
            problems.append(f"[ERROR] must be less than 3001 characters [json-pointer:{pointer}/url]")
    return problems


def validate_blocks(blocks: Any) -> list[str]:
    """Slack-style ``invalid_blocks`` messages for a message's blocks ([] = valid).

    Covers the limits SubmitWatch can trip over (DOMAIN.md section 4), not the
    whole Block Kit schema.
    """
    if not isinstance(blocks, list):
        return ["[ERROR] must be an array [json-pointer:/blocks]"]
    problems: list[str] = []
    if len(blocks) > MAX_BLOCKS:
        problems.append(f"[ERROR] no more than {MAX_BLOCKS} items allowed [json-pointer:/blocks]")
    seen_ids: set[str] = set()
    for i, block in enumerate(blocks):
        at = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in _KNOWN_BLOCK_TYPES:
            problems.append(f"[ERROR] unsupported or missing block type [json-pointer:{at}/type]")
            continue
        block_id = block.get("block_id")
        if block_id is not None:
            if len(str(block_id)) > 255:
                problems.append(f"[ERROR] must be less than 256 characters [json-pointer:{at}/block_id]")
            if block_id in seen_ids:
                problems.append(f"[ERROR] duplicate block_id [json-pointer:{at}/block_id]")
            seen_ids.add(block_id)
        kind = block["type"]
        if kind == "header":
            problems += _text_problems(block.get("text"), f"{at}/text", 150, plain_only=True)
        elif kind == "section":
            if "text" not in block and "fields" not in block:
                problems.append(f"[ERROR] must provide text or fields [json-pointer:{at}]")
            if "text" in block:
                problems += _text_problems(block["text"], f"{at}/text", 3000)
            fields = block.get("fields", [])
            if not isinstance(fields, list) or len(fields) > 10:
                problems.append(f"[ERROR] no more than 10 items allowed [json-pointer:{at}/fields]")
            else:
                for j, item in enumerate(fields):
                    problems += _text_problems(item, f"{at}/fields/{j}", 2000)
            if "accessory" in block:
                problems += _element_problems(block["accessory"], f"{at}/accessory")
        elif kind in ("context", "actions"):
            elements = block.get("elements")
            limit = 10 if kind == "context" else 25
            if not isinstance(elements, list) or not elements or len(elements) > limit:
                problems.append(f"[ERROR] must have 1 to {limit} items [json-pointer:{at}/elements]")
            elif kind == "actions":
                for j, element in enumerate(elements):
                    problems += _element_problems(element, f"{at}/elements/{j}")
    return problems


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


def _paginate(items: list, params: dict, *, default_limit: int) -> dict:
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
    return {"messages": items[offset:end], "has_more": more, "response_metadata": {"next_cursor": next_cursor}}


# ---------------------------------------------------------------------------
# Terminal rendering
# ---------------------------------------------------------------------------

_ANGLE = re.compile(r"<([^<>\n]*)>")
_ENTITY = re.compile(r"&(amp|lt|gt);")
_ENTITIES = {"amp": "&", "lt": "<", "gt": ">"}
_RULE = "-" * 40


def _mrkdwn_plain(text: str) -> str:
    """mrkdwn → terminal text: resolve ``<...>`` control sequences, then unescape.

    Order matters: a literal ``<`` in content arrives as ``&lt;`` so only real
    ``<...>`` are control sequences, and unescaping in one pass keeps
    ``&amp;lt;`` as the literal text ``&lt;``.  Emphasis markers (``*bold*``)
    are left alone; they read fine in a terminal.
    """

    def control(match: re.Match[str]) -> str:
        inner = match.group(1)
        target, _, label = inner.partition("|")
        if target.startswith("@"):
            return f"@{label or target[1:]}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!subteam^"):
            return label or "@group"
        if target.startswith("!date^"):
            return label or target
        if target.startswith("!"):
            return f"@{target[1:]}"
        return f"{label} ({target})" if label else target

    return _ENTITY.sub(lambda m: _ENTITIES[m.group(1)], _ANGLE.sub(control, text))


def _text(obj: Any) -> str:
    """A Block Kit text object as plain text (mrkdwn is unescaped, plain_text is not)."""
    if isinstance(obj, str):
        return _mrkdwn_plain(obj)
    if not isinstance(obj, dict):
        return ""
    text = str(obj.get("text", ""))
    return _mrkdwn_plain(text) if obj.get("type") == "mrkdwn" else text


def _element(element: Any) -> str:
    """An interactive or context element as one short token."""
    if not isinstance(element, dict):
        return ""
    kind = element.get("type")
    if kind in ("plain_text", "mrkdwn"):
        return _text(element)
    if kind == "button":
        return f"[{_text(element.get('text'))}]"
    if kind == "image":
        return f"[image: {element.get('alt_text', '')}]"
    if kind == "overflow":
        return "[...]"
    label = _text(element.get("placeholder")) or str(kind)
    return f"[{label}]"


def _rich_text(node: Any) -> str:
    """Flatten rich_text elements into plain text (lists get "- " bullets)."""
    if isinstance(node, list):
        return "".join(_rich_text(child) for child in node)
    if not isinstance(node, dict):
        return ""
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "link":
        return str(node.get("text") or node.get("url", ""))
    if kind == "user":
        return f"@{node.get('user_id', '')}"
    if kind == "channel":
        return f"#{node.get('channel_id', '')}"
    if kind == "emoji":
        return f":{node.get('name', '')}:"
    if kind == "rich_text_list":
        return "\n".join(f"- {_rich_text(item)}" for item in node.get("elements", [])) + "\n"
    return _rich_text(node.get("elements", []))


def _block_lines(block: dict) -> list[str]:
    kind = block.get("type")
    if kind == "header":
        title = _text(block.get("text"))
        return [title, "=" * len(title)]
    if kind == "divider":
        return [_RULE]
    if kind == "section":
        lines = _text(block.get("text")).splitlines() if "text" in block else []
        lines += [" ".join(_text(f).split("\n")) for f in block.get("fields", [])]
        if "accessory" in block:
            lines.append(_element(block["accessory"]))
        return lines
    if kind == "context":
        return [" | ".join(_element(e) for e in block.get("elements", []))]
    if kind == "actions":
        return [" ".join(_element(e) for e in block.get("elements", []))]
    if kind == "image":
        return [f"[image: {block.get('alt_text', '')}]"]
    if kind == "rich_text":
        return _rich_text(block.get("elements", [])).rstrip("\n").splitlines()
    if kind == "markdown":
        return str(block.get("text", "")).splitlines()
    if kind == "input":
        return [f"{_text(block.get('label'))}: [input]"]
    return [f"[{kind} block]"]


def render_text(message: Mapping[str, Any]) -> str:
    """A posted message as readable plain text for a terminal.

    Uses the Block Kit ``blocks`` when present (that is what people see in
    Slack), otherwise ``text``, otherwise attachment fallbacks.  Headers become
    an underlined title, section text/fields one line each, context elements
    joined by ``" | "``, buttons ``[Label]``, dividers a rule; mrkdwn escapes
    (``&lt;`` ``&gt;`` ``&amp;``) are shown as the characters.  Pure function.
    """
    blocks = message.get("blocks") or []
    if isinstance(blocks, str):
        blocks = json.loads(blocks)
    if blocks:
        lines: list[str] = []
        for block in blocks:
            if isinstance(block, dict):
                lines.extend(_block_lines(block))
        return "\n".join(lines)
    text = message.get("text") or ""
    if text:
        return _mrkdwn_plain(str(text))
    attachments = message.get("attachments") or []
    return "\n".join(
        _mrkdwn_plain(str(a.get("fallback") or a.get("text") or "")) for a in attachments if isinstance(a, dict)
    )


def block_kit_builder_url(blocks: Iterable[Mapping[str, Any]] | Mapping[str, Any]) -> str:
    """A Block Kit Builder link that previews ``blocks`` (only builds the string).

    Accepts a list of blocks or a message dict with a ``blocks`` key.  The
    builder reads URL-encoded JSON ``{"blocks": [...]}`` from the fragment, so
    nothing is sent to Slack until someone opens the link.
    """
    if isinstance(blocks, Mapping):
        blocks = blocks.get("blocks") or []
    payload = json.dumps({"blocks": list(blocks)}, separators=(",", ":"), ensure_ascii=False)
    return "https://app.slack.com/block-kit-builder/#" + quote(payload, safe="")
