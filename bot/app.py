"""`submitwatch run`: the scheduler plus the Slack app, in Socket Mode (default) or HTTP."""
from __future__ import annotations

import logging
import signal
import threading

from .config import Config, ConfigError
from .scheduler import ThreadDatabases, build_scheduler
from .slack_out import SlackSender, make_client

log = logging.getLogger("submitwatch")


def build_bolt_app(config: Config):
    from slack_bolt import App

    import handlers

    slack = config.slack
    app = App(
        client=make_client(slack.api_url, slack.bot_token.reveal()),
        signing_secret=slack.signing_secret.reveal() if slack.signing_secret else "",
        request_verification_enabled=slack.mode == "http",
        # No auth.test at start-up: polling must begin even while Slack is unreachable.
        token_verification_enabled=False,
    )
    dbs = ThreadDatabases(config.store.path)
    handlers.register_all(app, dbs.get, config)
    return app


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
    app = build_bolt_app(config)
    scheduler.start()
    log.info("watching %d server(s); alerts go to %s", len(config.servers), config.slack.channel)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: stop.set())
    try:
        if config.slack.mode == "socket":
            from slack_bolt.adapter.socket_mode import SocketModeHandler
            handler = SocketModeHandler(app, config.slack.app_token.reveal())
            _connect_when_possible(handler, stop)
            stop.wait()
            handler.close()
        else:
            from slack_bolt.app.app import SlackAppDevelopmentServer
            # Bind here, in the calling thread, so a port in use fails `run` with a message
            # instead of killing a background thread silently.
            try:
                server = SlackAppDevelopmentServer(port=config.slack.http_port,
                                                   path="/slack/events", app=app)
            except OSError as exc:
                raise ConfigError(f"slack.http_port {config.slack.http_port} cannot be opened: "
                                  f"{exc.strerror}") from None
            threading.Thread(target=server.start, name="slack-http", daemon=True).start()
            log.info("serving Slack requests on port %d at /slack/events",
                     config.slack.http_port)
            stop.wait()
            server._server.shutdown()  # Bolt's development server has no public stop()
    finally:
        scheduler.shutdown(wait=True)
        log.info("stopped")
