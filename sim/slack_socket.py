"""Socket Mode for the Slack stand-in: how the product receives slash commands and button clicks.

:class:`SocketModeHub` owns this half of :class:`~sim.slack_api.SlackStandIn`
(tickets, connections, envelopes and acks); the stand-in's Socket Mode
methods delegate to it.  Fidelity notes (behaviour copied from Slack):

* ``apps.connections.open`` (answered by the stand-in's Web API, which also
  checks the app-level token) hands out
  ``ws://127.0.0.1:PORT/link/?ticket=...&app_id=...`` from
  :meth:`SocketModeHub.open_url`: plain ``ws://`` works because slack_sdk's
  built-in client (the one ``slack_bolt.adapter.socket_mode.SocketModeHandler``
  uses) only wraps TLS around port 443.
* On connect the server sends Slack's ``hello``; envelopes are
  ``{"envelope_id", "type", "payload", "accepts_response_payload"}`` and the
  client acks with ``{"envelope_id", "payload"?}``.  Acks are recorded with
  how long they took (Slack wants them within :data:`ACK_DEADLINE` seconds).
* Tickets are single-use (Slack's are short-lived): a reused or unknown
  ticket fails the websocket handshake with HTTP 401.  slack_sdk always asks
  for a fresh URL when it reconnects, so this only bites code that replays
  an old URL.
* The websocket server needs the ``websockets`` package and starts with the
  first ``apps.connections.open``, so the demo and plain Web API tests do not
  pay for it (nor need the package).

``response_url`` posts are plain HTTP to the Web API server, so they are
handled in :mod:`sim.slack_api`, not here.
"""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any
from urllib.parse import parse_qs, urlsplit

__all__ = [
    "ACK_DEADLINE",
    "ENVELOPE_TYPES",
    "SocketModeHub",
]

_log = logging.getLogger(__name__)

#: Socket Mode envelope types Slack sends (and Bolt dispatches).
ENVELOPE_TYPES = frozenset({"slash_commands", "interactive", "events_api"})
#: Seconds Slack waits for an envelope ack (the 3-second rule for every interaction).
ACK_DEADLINE = 3.0

#: Path of the Socket Mode websocket endpoint (Slack's is /link/ too).
_LINK_PATH = "/link/"


# ---------------------------------------------------------------------------
# Records
# ---------------------------------------------------------------------------


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
        """The snapshot handed out by :meth:`SocketModeHub.connected_clients`."""
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
        """The snapshot handed out by :meth:`SocketModeHub.envelopes`."""
        return {
            **copy.deepcopy(self.envelope),
            "client": self.client,
            "sent_at": self.sent_at,
            "ack": copy.deepcopy(self.ack),
            "ack_seconds": self.ack_seconds,
            "acks": self.acks,
            "late": self.ack_seconds is None or self.ack_seconds > ACK_DEADLINE,
        }


# ---------------------------------------------------------------------------
# The websocket server
# ---------------------------------------------------------------------------


class _SocketServer:
    """The Socket Mode websocket endpoint: a ``websockets`` asyncio server.

    One event loop in one daemon thread serves every connection.  That, not
    ``websockets.sync``, because the threaded server's per-connection threads
    are not daemons: a test that forgot :meth:`SlackStandIn.stop
    <sim.slack_api.SlackStandIn.stop>` with a bot still connected would
    hang interpreter exit.

    Holds no state: each event goes to the hub, which records it under the
    stand-in's lock.  One rule keeps that deadlock-free: code on the loop may
    take the lock briefly, and code holding the lock never waits for the
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

    def __init__(self, hub: SocketModeHub) -> None:
        from websockets.asyncio.server import serve  # only Socket Mode needs the package

        self._hub = hub
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
        if not self._hub._use_ticket(ticket):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "invalid or already used ticket\n")
        return None

    async def _handler(self, connection: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        hub = self._hub
        ticket = (parse_qs(urlsplit(connection.request.path).query).get("ticket") or [""])[0]
        client: _SocketClient | None = None
        try:
            # hello goes out before the client is listed, so an envelope sent
            # as soon as wait_for_socket() returns can never overtake it.
            await connection.send(hub._hello())
            client = hub._socket_opened(connection, ticket)
            async for raw in connection:
                hub._socket_received(client, raw)
        except ConnectionClosed:
            pass
        finally:
            if client is not None:
                hub._socket_closed(client, connection.close_code)


# ---------------------------------------------------------------------------
# The hub
# ---------------------------------------------------------------------------


class SocketModeHub:
    """Socket Mode state of one stand-in, and the websocket server serving it.

    ``changed`` is the stand-in's condition: the hub records under the same
    lock as the Web API state, so the stand-in's ``reset()`` clears both at
    once and one ``notify_all`` wakes every waiter.  ``app_id`` is read each
    time it is needed because it is a public, writable attribute of the
    stand-in.

    Public methods run on the caller's thread; the ``_socket_*`` callbacks
    (and ``_use_ticket``, ``_hello``) run on the server's loop thread.
    """

    def __init__(self, changed: threading.Condition, app_id: Callable[[], str]) -> None:
        self._changed = changed
        self._app_id = app_id
        self._server: _SocketServer | None = None
        self._tickets: set[str] = set()
        self._clients: list[_SocketClient] = []
        self._inbox: list[dict] = []
        self._envelopes: dict[str, _Envelope] = {}

    # -- lifecycle ---------------------------------------------------------

    def open_url(self) -> str:
        """A new single-use websocket URL, starting the server on first use.

        The stand-in calls this with its lock held, which is safe: a brand
        new loop has no connection that could want the lock.  Raises
        ``ImportError`` when the ``websockets`` package is missing.
        """
        with self._changed:
            if self._server is None:
                self._server = _SocketServer(self)
            ticket = uuid.uuid4().hex
            self._tickets.add(ticket)
            return f"ws://127.0.0.1:{self._server.port}{_LINK_PATH}?ticket={ticket}&app_id={self._app_id()}"

    def stop(self) -> None:
        """Close every connection and stop the server, if it was started.  Safe to call twice."""
        with self._changed:
            server, self._server = self._server, None
        if server is not None:
            server.stop()

    def forget_traffic(self) -> None:
        """Forget sent envelopes and socket messages; connections stay open."""
        with self._changed:
            self._envelopes.clear()
            self._inbox.clear()

    # -- connections -------------------------------------------------------

    def connected_clients(self) -> list[dict]:
        """Open Socket Mode connections, oldest first.

        Each is ``{"id", "ticket", "peer", "connected_at", "closed_at",
        "close_code"}``; ``id`` counts connections since start (1, 2, ...), so
        a reconnect shows up as a higher id.
        """
        with self._changed:
            return [client.state() for client in self._clients if client.closed_at is None]

    def wait_for_socket(self, timeout: float = 5.0, *, newer_than: int = 0) -> dict:
        """Block until a client is connected (and got ``hello``); return the newest.

        ``newer_than`` ignores connections with that id or lower, to wait for
        a reconnect while the old socket may still be open.  Raises
        ``TimeoutError``.
        """
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                ready = [c for c in self._clients if c.closed_at is None and c.id > newer_than]
                if ready:
                    return ready[-1].state()
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"no Socket Mode client (id > {newer_than}) connected after {timeout}s")
                self._changed.wait(remaining)

    def disconnect_sockets(self, *, code: int = 1001, reason: str = "") -> int:
        """Close every open connection from the server side; return how many.

        Simulates Slack dropping the link: the client gets a close frame
        (``code`` 1001 "going away" by default) with no warning.  slack_sdk's
        client then asks apps.connections.open for a new URL, which its
        monitor thread does within its ``ping_interval``.  Returns once the
        server has seen every connection close, so :meth:`wait_for_socket`
        afterwards can only find a new one.
        """
        with self._changed:
            targets = [c for c in self._clients if c.closed_at is None]
            server = self._server
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
        with self._changed:
            targets = [c for c in self._clients if c.closed_at is None]
            server = self._server
        if not targets or server is None:
            return 0

        async def send_all() -> None:
            await asyncio.gather(*(c.connection.send(message) for c in targets), return_exceptions=True)

        server.call(send_all())
        return len(targets)

    # -- envelopes and acks ------------------------------------------------

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
        with self._changed:
            open_clients = [c for c in self._clients if c.closed_at is None]
            server = self._server
            if not open_clients or server is None:
                raise RuntimeError("no Socket Mode client is connected (wait_for_socket() first)")
            client = open_clients[-1]
            self._envelopes[envelope_id] = _Envelope(
                envelope=envelope, client=client.id, sent_at=time.time(), sent_mono=time.monotonic()
            )
        try:
            server.call(client.connection.send(text))
        except Exception as exc:
            with self._changed:
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
        with self._changed:
            return [record.state() for record in self._envelopes.values()]

    def socket_messages(self) -> list[dict]:
        """Everything clients sent over their sockets: ``{"client", "at", "message"}``.

        ``message`` is the decoded JSON (or the raw text if it was not JSON).
        Acks for unknown envelope ids only show up here.
        """
        with self._changed:
            return copy.deepcopy(self._inbox)

    # -- callbacks (run on the websocket loop thread) ----------------------

    def _use_ticket(self, ticket: str) -> bool:
        """Consume a ticket from apps.connections.open; False if unknown or used."""
        with self._changed:
            if ticket in self._tickets:
                self._tickets.discard(ticket)
                return True
            return False

    def _hello(self) -> str:
        """Slack's first message on a new connection (shape copied from Slack)."""
        with self._changed:
            open_now = sum(1 for client in self._clients if client.closed_at is None)
        return json.dumps(
            {
                "type": "hello",
                "num_connections": open_now + 1,
                "debug_info": {"host": "slack-stand-in", "build_number": 1, "approximate_connection_time": 18060},
                "connection_info": {"app_id": self._app_id()},
            }
        )

    def _socket_opened(self, connection: Any, ticket: str) -> _SocketClient:
        with self._changed:
            client = _SocketClient(
                id=len(self._clients) + 1,
                ticket=ticket,
                connection=connection,
                peer=connection.remote_address,
                connected_at=time.time(),
            )
            self._clients.append(client)
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
            self._inbox.append({"client": client.id, "at": time.time(), "message": message})
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
