"""The OTLP/HTTP logs receiver: `POST /v1/logs`, for estates that run the OpenTelemetry Collector.

A push source beside the polls ([otlp], docs/otlp.md). The WSGI app here is served by its own
listener (bot.app.serve_otlp: one thread per request, so a slow sender never holds up polling or
Slack). Each request, in order of cost:

0. with `otlp.tls_cert`, HTTPS (`TLSServer`); with `otlp.client_ca` too, a client that
   presents no certificate issued by that CA fails the handshake and never reaches the app;
1. `POST /v1/logs` only (404, 405); a bearer token compared in constant time (401), where
   `otlp.token_env` names one (with mutual TLS it may be left out: the certificate suffices);
2. a declared length within `otlp.max_body` (411, 413), before anything is read; a gzip body
   (the Collector's otlphttp exporter compresses by default) must stay within it unpacked too;
3. `application/x-protobuf` or `application/json` (415); a body that is not an
   ExportLogsServiceRequest is 400 (not retried by the sender);
4. the 1018/1020 events (bot.sources.otlp) are stored through bot.engine.poller.ingest in one
   write transaction: events already stored are skipped, so a batch the sender delivers again
   is stored once (at-least-once safe). While the database takes no writes (a full disk, a
   lock held too long) the answer is 503 with Retry-After: the sender keeps the batch in its
   retry queue instead of dropping it.

Records that are not ours are acknowledged and dropped. Events whose <Computer> is not a
configured server are dropped too, counted (`counts`), logged once per computer, and reported
to the sender as rejected in the response's partial_success.
"""
from __future__ import annotations

import hmac
import json
import logging
import ssl
import threading
import zlib
from collections.abc import Callable
from datetime import datetime
from typing import Any

from sqlite_utils import Database

from bot.core import counters
from bot.core.config import Config
from bot.engine.poller import ingest
from bot.sources import otlp
from bot.sources.origins import Origins
from store import db as store

log = logging.getLogger("submitwatch")

LOGS_PATH = "/v1/logs"
#: Seconds a sender is asked to wait while the database takes no writes.
RETRY_AFTER = 30
#: A body declared larger than the limit is drained (so the client reads the 413 rather than a
#: reset connection) only up to this many times the limit; beyond, the connection is closed.
_DRAIN_FACTOR = 4
_CHUNK = 64 * 1024
_TYPES = ("application/x-protobuf", "application/json")
#: Computers named in the log as not configured, at most this many (then no more warnings).
_MAX_WARNED = 1000


class TLSServer:
    """A mix-in for a threading socketserver: each connection is wrapped in TLS, and its
    handshake runs in the connection's own thread (with a timeout), so a client that connects
    and says nothing holds up no one. A failed handshake (no client certificate, one from
    another CA, plain HTTP) is logged at debug level and the connection closed: the request
    never reaches the app."""

    context: ssl.SSLContext
    #: Seconds a client may take to complete the handshake.
    handshake_timeout = 10.0

    def get_request(self) -> tuple[ssl.SSLSocket, Any]:
        sock, address = self.socket.accept()  # type: ignore[attr-defined]
        try:
            return self.context.wrap_socket(sock, server_side=True,
                                            do_handshake_on_connect=False), address
        except (OSError, ValueError):
            sock.close()
            raise OSError("TLS wrap failed") from None

    def finish_request(self, request: Any, client_address: Any) -> None:
        request.settimeout(self.handshake_timeout)
        try:
            request.do_handshake()
        except (ssl.SSLError, OSError) as exc:
            log.debug("OTLP: TLS handshake with %s refused: %s", client_address[0],
                      getattr(exc, "reason", None) or exc)
            return          # the server's shutdown_request closes the connection
        super().finish_request(request, client_address)  # type: ignore[misc]

    def setup_environ(self) -> None:
        super().setup_environ()  # type: ignore[misc]
        self.base_environ["HTTPS"] = "on"  # type: ignore[attr-defined]  # wsgi.url_scheme


class OtlpReceiver:
    """WSGI app for `POST /v1/logs`. `open_database` returns a new connection, closed after the
    request; `on_stored` is called after new events were stored (to wake Slack delivery)."""

    def __init__(self, config: Config, open_database: Callable[[], Database],
                 clock: Callable[[], datetime], on_stored: Callable[[], None] | None = None):
        token = config.otlp.token
        self.token = token.reveal().encode() if token is not None else None
        self.config, self.open_database, self.clock = config, open_database, clock
        self.on_stored = on_stored or (lambda: None)
        self.max_body = config.otlp.max_body
        self.counts = {"requests": 0, "records": 0, "stored": 0, "dropped": 0, "malformed": 0,
                       "unknown_origin": 0, "refused": 0}
        self._lock = threading.Lock()
        self._warned: set[str] = set()
        self.origin_of = Origins(config.servers, config.otlp.unconfigured_origins)

    def __call__(self, environ: dict[str, Any], start_response: Callable) -> list[bytes]:
        if environ.get("PATH_INFO") != LOGS_PATH:
            return _plain(start_response, "404 Not Found", "not found; OTLP logs go to "
                          "POST /v1/logs")
        if environ.get("REQUEST_METHOD") != "POST":
            return _plain(start_response, "405 Method Not Allowed", "use POST",
                          [("Allow", "POST")])
        try:
            length = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            length = -1
        if not self._authorized(environ.get("HTTP_AUTHORIZATION", "")):
            _drain(environ, min(max(length, 0), self.max_body))
            return _plain(start_response, "401 Unauthorized", "missing or wrong bearer token",
                          [("WWW-Authenticate", 'Bearer realm="submitwatch"')])
        if length < 0:
            return _plain(start_response, "411 Length Required", "Content-Length is required")
        if length > self.max_body:
            if length <= _DRAIN_FACTOR * self.max_body:
                _drain(environ, length)
            return _plain(start_response, "413 Content Too Large",
                          f"request body over {self.max_body} bytes; send smaller batches")
        kind = environ.get("CONTENT_TYPE", "").split(";", 1)[0].strip().lower()
        if kind not in _TYPES:
            _drain(environ, length)
            return _plain(start_response, "415 Unsupported Media Type",
                          "send application/x-protobuf or application/json")
        body = environ["wsgi.input"].read(length)
        encoding = environ.get("HTTP_CONTENT_ENCODING", "identity").strip().lower()
        if encoding == "gzip":
            try:
                body = _gunzip(body, self.max_body)
            except OverflowError:
                return _plain(start_response, "413 Content Too Large",
                              f"request body over {self.max_body} bytes unpacked; send "
                              "smaller batches")
            except (zlib.error, EOFError):
                return _plain(start_response, "400 Bad Request", "the gzip body is corrupt")
        elif encoding not in ("identity", ""):
            return _plain(start_response, "415 Unsupported Media Type",
                          "Content-Encoding must be gzip or none")
        try:
            decoded = otlp.decode(body, kind, self.origin_of)
        except otlp.PayloadError as exc:
            return _plain(start_response, "400 Bad Request", str(exc)[:300])
        try:
            stored = self._store(decoded.events)
        except store.StoreError as exc:
            self._count(refused=1)
            log.warning("OTLP: %d event(s) refused with 503 (the sender retries them): %s",
                        len(decoded.events), exc)
            return _plain(start_response, "503 Service Unavailable",
                          "the database takes no writes now; retry later",
                          [("Retry-After", str(RETRY_AFTER))])
        self._account(decoded, stored)
        return _answer(start_response, kind, decoded)

    def _authorized(self, header: str) -> bool:
        """The bearer token where one is configured. Without one, the client certificate
        alone (otlp.client_ca): a client without it never got past the TLS handshake."""
        if self.token is None:
            return self.config.otlp.client_ca is not None
        scheme, _, presented = header.strip().partition(" ")
        if scheme.lower() != "bearer":
            return False
        return hmac.compare_digest(presented.strip().encode(), self.token)

    def _store(self, events: list) -> int:
        if not events:
            return 0
        db = self.open_database()
        try:
            with store.write_transaction(db):
                stored = ingest(db, self.config, events, 0, self.clock())
        finally:
            db.conn.close()
        if stored:
            self.on_stored()
        return stored

    def _count(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                self.counts[name] += amount
                counters.record_otlp(name, amount)   # and on /metrics

    def _account(self, decoded: otlp.Decoded, stored: int) -> None:
        self._count(requests=1, records=decoded.records, stored=stored, dropped=decoded.dropped,
                    malformed=len(decoded.malformed),
                    unknown_origin=sum(decoded.unknown_origins.values()))
        for reason in decoded.malformed[:3]:
            log.warning("OTLP: a 1018/1020 record was unusable: %s", reason)
        with self._lock:
            new = [c for c in decoded.unknown_origins if c not in self._warned]
            if len(self._warned) < _MAX_WARNED:
                self._warned.update(new)
            else:
                new = []
        for computer in new:
            log.warning("OTLP: events from %r were dropped: it is not a configured server "
                        "(add it under [[servers]] to watch it)", computer)


def _answer(start_response: Callable, kind: str, decoded: otlp.Decoded) -> list[bytes]:
    """200 with an ExportLogsServiceResponse in the request's encoding; rejected records (a
    computer not configured, an unusable 1018/1020) are reported as a partial success."""
    rejected = decoded.rejected
    why = ""
    if rejected:
        parts = []
        if decoded.unknown_origins:
            parts.append("not configured: " + ", ".join(sorted(decoded.unknown_origins)[:5]))
        if decoded.malformed:
            parts.append("unusable: " + decoded.malformed[0])
        why = "; ".join(parts)[:500]
    if kind == "application/json":
        response: dict[str, Any] = {}
        if rejected:
            response["partialSuccess"] = {"rejectedLogRecords": str(rejected),
                                          "errorMessage": why}
        body = json.dumps(response).encode()
    else:
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import (
            ExportLogsServiceResponse,
        )
        message = ExportLogsServiceResponse()
        if rejected:
            message.partial_success.rejected_log_records = rejected
            message.partial_success.error_message = why
        body = message.SerializeToString()
    start_response("200 OK", [("Content-Type", kind), ("Content-Length", str(len(body)))])
    return [body]


def _gunzip(body: bytes, limit: int) -> bytes:
    """Unpack a gzip body, refusing (OverflowError) one that unpacks to more than `limit`."""
    unpacker = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)
    data = unpacker.decompress(body, limit + 1)
    if len(data) > limit or unpacker.unconsumed_tail:
        raise OverflowError
    if not unpacker.eof:
        raise EOFError
    return data


def _drain(environ: dict[str, Any], length: int) -> None:
    """Read what the client sent and discard it: closing on unread data resets the connection
    before the client has read the answer."""
    stream = environ["wsgi.input"]
    while length > 0:
        chunk = stream.read(min(_CHUNK, length))
        if not chunk:
            return
        length -= len(chunk)


def _plain(start_response: Callable, status: str, text: str,
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body))), *(headers or [])])
    return [body]
