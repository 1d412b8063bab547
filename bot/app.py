"""`submitwatch run`: the scheduler plus the Slack app, in Socket Mode (default) or HTTP."""
from __future__ import annotations

import logging
import signal
import socket
import threading
from collections.abc import Callable, Iterable
from socketserver import ThreadingMixIn
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from bot.core.config import SECRET_ENV, Config, ConfigError, Secret
from bot.ops.check import permission_warnings
from bot.ops.scheduler import ThreadDatabases, build_scheduler
from bot.slack.sender import SlackSender, error_code, make_client

log = logging.getLogger("submitwatch")

EVENTS_PATH = "/slack/events"
HEALTH_PATH = "/healthz"
#: Largest request body read. Slack's biggest payload here is a button click, which carries
#: the whole alert (50 blocks): well under this. A bigger body is refused before it is read,
#: so an unauthenticated client cannot make the bot buffer megabytes to check a signature.
MAX_BODY = 2 * 1024 * 1024


class BotIdentity:
    """Who the bot is (auth.test), learnt in the background and handed to Bolt.

    Bolt's single-team authorization calls auth.test before the first listener may ack, with
    the client's long timeouts, and keeps the answer only after a success: a slow Web API made
    the first slash command miss Slack's 3 s deadline. Here every request is authorized at once
    with the token; the identity (for the context's bot_user_id) arrives when Slack answers.
    """

    def __init__(self, token: str):
        self.token = token
        self.answer: dict | None = None

    def learn(self, client, stop: threading.Event) -> None:
        """Ask auth.test until Slack answers (in a background thread)."""
        delay = 5.0
        while not stop.is_set() and self.answer is None:
            try:
                self.answer = dict(client.auth_test(token=self.token).data)
            except Exception as exc:  # Slack down or slow: acks do not wait for this
                log.debug("auth.test failed (%s); asking again in %.0fs", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, 300.0)

    def authorizer(self):
        """Bolt's `authorize` function (a plain function: Bolt passes arguments by name)."""
        from slack_bolt.authorization import AuthorizeResult

        def authorize(enterprise_id, team_id, user_id):
            known = self.answer or {}
            return AuthorizeResult(enterprise_id=enterprise_id,
                                   team_id=team_id or known.get("team_id"), bot_token=self.token,
                                   bot_id=known.get("bot_id"), bot_user_id=known.get("user_id"),
                                   user_id=user_id)
        return authorize


def _revealed(secret: Secret | None, key: str) -> str:
    """A secret the caller made sure of (`submitwatch run` checks config.missing_secrets)."""
    if secret is None:
        raise ConfigError(f"{SECRET_ENV[key]} is not set")
    return secret.reveal()


def _not_about_the_unused_token(record: logging.LogRecord) -> bool:
    """Bolt reads SLACK_BOT_TOKEN from the environment by itself and then warns that it is
    unused, since BotIdentity authorizes with it: true, and alarming for nothing."""
    return not record.getMessage().startswith(("As you gave `client` as well, `token`",
                                               "As `installation_store` or `authorize` has"))


logging.getLogger("slack_bolt.App").addFilter(_not_about_the_unused_token)


def build_bolt_app(config: Config, clock: Callable | None = None,
                   on_change: Callable[[], None] | None = None,
                   identity: BotIdentity | None = None):
    """The Bolt app with every listener; `clock` (a `() -> datetime`) is for tests.
    `on_change` is called after a click or command that may have queued Slack messages (an
    acknowledged alert to update): `run` passes the delivery loop's wake, so the alert changes
    right away instead of at the next delivery tick."""
    from slack_bolt import App

    import handlers

    slack = config.slack
    identity = identity or BotIdentity(_revealed(slack.bot_token, "bot_token"))
    app = App(
        client=make_client(slack.api_url, _revealed(slack.bot_token, "bot_token")),
        signing_secret=slack.signing_secret.reveal() if slack.signing_secret else "",
        # Socket Mode messages come over our own authenticated websocket and carry no
        # signature; over HTTP anyone can knock, so Bolt checks every request's signature
        # and refuses (401) bad ones and timestamps more than 5 minutes off.
        request_verification_enabled=slack.mode == "http",
        # No auth.test before a request is acked (BotIdentity), nor at start-up: polling
        # must begin even while Slack is unreachable.
        authorize=identity.authorizer(),
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


def slack_wsgi_app(app, ops=None):
    """WSGI: POST /slack/events to Bolt; GET /healthz for the reverse proxy, and with `ops`
    (bot.ops.metrics.ops_app) /metrics and /readyz too; 404 for the rest."""
    from slack_bolt.adapter.wsgi import SlackRequestHandler

    bolt = SlackRequestHandler(app, EVENTS_PATH)

    def application(environ, start_response):
        method, path = environ.get("REQUEST_METHOD"), environ.get("PATH_INFO")
        answered = ops(environ, start_response) if ops else None
        if answered is not None:
            return answered
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


def serve_http(app, host: str, port: int, ops=None) -> WSGIServer:
    """Bind `host:port` now, in the caller's thread, and serve in a daemon thread.

    Binding here makes a port in use fail `run` with a message instead of killing a background
    thread silently. Stop with `server.shutdown()` then `server.server_close()`.
    """
    return _serve(slack_wsgi_app(app, ops), host, port, "slack.http_host", "slack.http_port",
                  "slack-http")


def serve_ops(ops, host: str, port: int) -> WSGIServer:
    """The [metrics] listener: /metrics, /healthz, /readyz (both modes)."""
    def application(environ, start_response):
        answered = ops(environ, start_response)
        return answered if answered is not None else _plain(start_response, "404 Not Found",
                                                            "Not Found")
    return _serve(application, host, port, "metrics.host", "metrics.port", "metrics-http")


def serve_otlp(config: Config, clock: Callable | None = None,
               on_stored: Callable[[], None] | None = None,
               open_database: Callable | None = None) -> WSGIServer:
    """The [otlp] listener: POST /v1/logs (bot.ops.otlp_receiver), one thread per request and
    one database connection per request (`open_database`: a new one each call), so a sender
    never holds up polling or Slack. With otlp.tls_cert it speaks HTTPS only, and with
    otlp.client_ca only to clients whose certificate that CA issued: the TLS handshake runs in
    the connection's thread, and a client that fails it never reaches the receiver."""
    from bot.engine.poller import utc_now
    from bot.ops.otlp_receiver import OtlpReceiver, TLSServer
    from store.db import open_db

    path = config.store.path
    receiver = OtlpReceiver(config, open_database or (lambda: open_db(path, migrate=False)),
                            clock or utc_now, on_stored)
    host, port = config.otlp.host, config.otlp.port
    if port is None:
        raise ConfigError("otlp.port is not set: the OTLP receiver is off")
    tls = config.otlp.tls_context()      # files read again now: they may have changed
    if tls is None:
        return _serve(receiver, host, port, "otlp.host", "otlp.port", "otlp-http")

    class TLSWSGIServer(TLSServer, _ThreadingWSGIServer):
        """The listener's server class, with this configuration's TLS context."""

    TLSWSGIServer.context = tls
    return _serve(receiver, host, port, "otlp.host", "otlp.port", "otlp-https",
                  server_class=TLSWSGIServer)


def _serve(application, host: str, port: int, host_key: str, port_key: str,
           name: str, server_class: type[WSGIServer] = _ThreadingWSGIServer) -> WSGIServer:
    try:
        server = make_server(host, port, application, server_class=server_class,
                             handler_class=_LoggingHandler)
    except OSError as exc:
        raise ConfigError(f"{host_key} {host} / {port_key} {port} cannot be opened: "
                          f"{exc.strerror or exc}") from None
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.5},
                     name=name, daemon=True).start()
    return server


def ops_for(config: Config, clock: Callable | None = None):
    """The /metrics, /healthz and /readyz WSGI app for `run`."""
    from bot.engine.poller import utc_now
    from bot.ops import metrics

    clock = clock or utc_now
    dbs = ThreadDatabases(config.store.path)
    client = make_client(config.slack.api_url, _revealed(config.slack.bot_token, "bot_token"),
                         timeout=5, retries=0, connection_retries=False)

    def slack_answers() -> str | None:
        try:
            client.auth_test()
        except Exception as exc:  # SlackApiError or a network error
            return (f"Slack does not answer at {config.slack.api_url}: "
                    f"{error_code(exc) or exc}")
        return None

    readiness = metrics.Readiness(config, dbs.get, clock, slack_answers)
    return metrics.ops_app(metrics.registry_for(dbs.get, clock), readiness)


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
    bot_token = _revealed(config.slack.bot_token, "bot_token")
    identity = BotIdentity(bot_token)
    app = build_bolt_app(config, on_change=scheduler.delivery.wake, identity=identity)
    threading.Thread(target=identity.learn, args=(make_client(
        config.slack.api_url, bot_token, timeout=10), stop),
        name="auth.test", daemon=True).start()
    ops = ops_for(config)
    # Listeners bind before anything starts, so a port in use stops `run` at once, cleanly.
    server = serve_http(app, config.slack.http_host, config.slack.http_port, ops) \
        if config.slack.mode == "http" else None
    ops_server = serve_ops(ops, config.metrics.host, config.metrics.port) \
        if config.metrics.port else None
    if ops_server is not None:
        log.info("metrics and health on http://%s:%d (/metrics, /healthz, /readyz)",
                 config.metrics.host, ops_server.server_port)
    otlp_server = serve_otlp(config, on_stored=scheduler.delivery.wake) \
        if config.otlp.port else None
    if otlp_server is not None:
        log.info("OTLP logs receiver on %s://%s:%d/v1/logs",
                 "https" if config.otlp.tls_cert else "http", config.otlp.host,
                 otlp_server.server_port)
    scheduler.start()
    polled = sum(1 for s in config.servers if s.polled)
    fed = f", {len(config.servers) - polled} through collectors or OTLP" \
        if polled < len(config.servers) else ""
    collectors = f", {len(config.collectors)} collector(s)" if config.collectors else ""
    log.info("watching %d server(s) (%d polled%s%s); alerts go to %s", len(config.servers),
             polled, fed, collectors, config.slack.channel)
    for warning in permission_warnings(config):
        log.warning(warning)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        if server is None:
            from slack_bolt.adapter.socket_mode import SocketModeHandler
            handler = SocketModeHandler(app, _revealed(config.slack.app_token, "app_token"))
            _connect_when_possible(handler, stop)
            stop.wait()
            handler.close()
        else:
            log.info("serving Slack requests on http://%s:%d%s (health check: %s)",
                     config.slack.http_host, server.server_port, EVENTS_PATH, HEALTH_PATH)
            stop.wait()
    finally:
        for listener in (server, ops_server, otlp_server):
            if listener is not None:
                listener.shutdown()  # stops accepting; returns once serve_forever has ended
                listener.server_close()
        scheduler.shutdown()
        log.info("stopped")
