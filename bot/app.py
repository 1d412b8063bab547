"""`submitwatch run`: the scheduler plus the Slack app, in Socket Mode (default) or HTTP."""
from __future__ import annotations

import logging
import signal
import threading

from .config import Config
from .scheduler import ThreadDatabases, build_scheduler
from .slack_out import SlackSender, make_client

log = logging.getLogger("submitwatch")


def build_bolt_app(config: Config):
    from slack_bolt import App

    import handlers.commands

    slack = config.slack
    app = App(
        client=make_client(slack.api_url, slack.bot_token.reveal()),
        signing_secret=slack.signing_secret.reveal() if slack.signing_secret else "",
        request_verification_enabled=slack.mode == "http",
        token_verification_enabled=True,
    )
    dbs = ThreadDatabases(config.store.path)
    handlers.commands.register(app, dbs.get)
    return app


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
            handler.connect()
            stop.wait()
            handler.close()
        else:
            server = threading.Thread(target=app.start, kwargs={
                "port": config.slack.http_port, "path": "/slack/events"}, daemon=True)
            server.start()
            stop.wait()
    finally:
        scheduler.shutdown(wait=True)
        log.info("stopped")
