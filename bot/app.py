"""`submitwatch run`: the scheduler plus the Slack app, in Socket Mode (default) or HTTP."""
from __future__ import annotations

import logging
import signal
import socket
import threading
from socketserver import ThreadingMixIn
from typing import Callable, Iterable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from .check import permission_warnings
from .config import Config, ConfigError
from .scheduler import ThreadDatabases, build_scheduler
from .slack_out import SlackSender, make_client

log = logging.getLogger("submitwatch")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
#: Largest request body read. Slack's biggest payload here is a button click, which carries
#: the whole alert (50 blocks): well under this. A bigger body is refused before it is read,
#: so an unauthenticated client cannot make the bot buffer megabytes to check a signature.
MAX_BODY = 2 * 1024 * 1024


def build_bolt_app(config: Config, clock: Callable | None = None,
                   on_change: Callable[[], None] | None = None):
    """The Bolt app with every listener; `clock` (a `() -> datetime`) is for tests.
    `on_change` is called after a click or command that may have queued Slack messages (an
    acknowledged alert to update): `run` passes the delivery loop's wake, so the alert changes
    right away instead of at the next delivery tick."""
    from slack_bolt import App

    import handlers

    slack = config.slack
    app = App(
        client=make_client(slack.api_url, slack.bot_token.reveal()),
        signing_secret=slack.signing_secret.reveal() if slack.signing_secret else "",
        # Socket Mode messages come over our own authenticated websocket and carry no
        # signature; over HTTP anyone can knock, so Bolt checks every request's signature
        # and refuses (401) bad ones and timestamps more than 5 minutes off.
        request_verification_enabled=slack.mode == "http",
        # No auth.test at start-up: polling must begin even while Slack is unreachable.
        token_verification_enabled=False,
    )
    dbs = ThreadDatabases(config.store.path)
    handlers.register_all(app, dbs.get, config, clock, on_change or (lambda: None))
    return app


# --- HTTP mode -----------------------------------------------------------------------------------

def _plain(start_response, status: str, text: str) -> Iterable[bytes]:
    body = text.encode()
    start_response(status, [("Content-Type", "text/plain; charset=utf-8"),
                            ("Content-Length", str(len(body)))])
    return [body]


def slack_wsgi_app(app):
    """WSGI: POST /slack/events to Bolt, GET /healthz for the reverse proxy, 404 for the rest."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    bolt = SlackRequestHandler(app, EVENTS_PATH)

    def application(environ, start_response):
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        if (method, path) == ("GET", HEALTH_PATH):
            return _plain(start_response, "200 OK", "ok")
        if (method, path) != ("POST", EVENTS_PATH):
            return _plain(start_response, "404 Not Found", "Not Found")
        try:
            length = int(environ.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            return _plain(start_response, "413 Content Too Large", "request body too large")
        # slack_sdk does int() on this header: garbage would be a 500 and a stack trace in
        # the log for every forged request, so refuse it here as Bolt refuses a bad signature.
        if not environ.get("HTTP_X_SLACK_REQUEST_TIMESTAMP", "").isdigit():
            environ["wsgi.input"].read(length)  # read it all: closing on unread data resets
            return _plain(start_response, "401 Unauthorized", "invalid request")
        return bolt(environ, start_response)

    return application


class _ThreadingWSGIServer(ThreadingMixIn, WSGIServer):
    """One thread per request: a slow request must not hold up Slack's next one (3 s rule)."""

    daemon_threads = True  # a hung client never blocks shutdown

    def __init__(self, address, handler):
        if ":" in address[0]:  # an IPv6 literal such as "::"
            self.address_family = socket.AF_INET6
        super().__init__(address, handler)


class _LoggingHandler(WSGIRequestHandler):
    """Access lines go to our logger at debug level, not to stderr for every click."""

    timeout = 30  # seconds a client may stall mid-request before its thread gives up

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        log.debug("http %s: " + format, self.address_string(), *args)


def serve_http(app, host: str, port: int) -> WSGIServer:
    """Bind `host:port` now, in the caller's thread, and serve in a daemon thread.

    Binding here makes a port in use fail `run` with a message instead of killing a background
    thread silently. Stop with `server.shutdown()` then `server.server_close()`.
    """
    try:
        server = make_server(host, port, slack_wsgi_app(app),
                             server_class=_ThreadingWSGIServer, handler_class=_LoggingHandler)
    except OSError as exc:
        raise ConfigError(f"slack.http_host {host} / slack.http_port {port} cannot be opened: "
                          f"{exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                     name="slack-http", daemon=True).start()
    return server


def _connect_when_possible(handler, stop: threading.Event) -> None:
    """Open the Socket Mode connection, retrying in the background while Slack is unreachable.

    slack_sdk reconnects by itself once connected; only the first connection needs this.
    """
    def connect() -> None:
        delay = 5.0
        while not stop.is_set():
            try:
                handler.connect()
                log.info("connected to Slack (Socket Mode)")
                return
            except Exception as exc:  # SlackApiError, URLError, ...: say it, wait, try again
                log.warning("cannot open the Socket Mode connection (%s); retrying in %.0fs; "
                            "alerts are still collected and wait in the outbox", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 300.0)
    threading.Thread(target=connect, name="socket-mode-connect", daemon=True).start()


def run(config: Config, stop: threading.Event | None = None) -> None:
    """Run until SIGINT/SIGTERM (or `stop` is set)."""
    stop = stop or threading.Event()
    sender = SlackSender.from_config(config.slack)
    scheduler = build_scheduler(config, sender)
    app = build_bolt_app(config, on_change=scheduler.delivery.wake)
    # HTTP mode binds before anything starts, so a port in use stops `run` at once, cleanly.
    server = serve_http(app, config.slack.http_host, config.slack.http_port) \
        if config.slack.mode == "http" else None
    scheduler.start()
    log.info("watching %d server(s); alerts go to %s", len(config.servers), config.slack.channel)
    for warning in permission_warnings(config):
        log.warning(warning)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        if server is None:
            from slack_bolt.adapter.socket_mode import SocketModeHandler
            handler = SocketModeHandler(app, config.slack.app_token.reveal())
            _connect_when_possible(handler, stop)
            stop.wait()
            handler.close()
        else:
            log.info("serving Slack requests on http://%s:%d%s (health check: %s)",
                     config.slack.http_host, server.server_port, EVENTS_PATH, HEALTH_PATH)
            stop.wait()
    finally:
        if server is not None:
            server.shutdown()  # stops accepting; returns once serve_forever has ended
            server.server_close()
        scheduler.shutdown()
        log.info("stopped")
