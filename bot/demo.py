"""`submitwatch demo`: the real pipeline against the built-in simulator and Slack stand-in.

Nothing here is special-cased for the demo: the same poll, store, incident, render and delivery
code runs as in production, over real pywinrm (NTLM with message encryption) and real slack_sdk,
only pointed at servers on 127.0.0.1 that this process starts.
"""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from bot.core.config import parse_config
from bot.engine import devices
from bot.engine.delivery import deliver_once
from bot.engine.poller import poll_server_once, resolve_quiet_incidents, utc_now
from bot.slack.html import write_page
from bot.slack.sender import SlackSender
from bot.sources.winrm import WinRMSource
from sim.eventlog import seed_demo
from sim.protocollog import DEMO_DEVICES, demo_protocol_logs
from sim.slack_api import SlackStandIn
from sim.slack_blocks import render_text
from sim.winrm_server import WinRMSimulator
from store.db import open_db

CHANNEL = "C0ALERTS"
ADMIN = "U0DEMOADMIN"
WINRM_USER = "CONTOSO\\svc-submitwatch"
WINRM_PASSWORD = "demo-only-password"


def demo_config(slack: SlackStandIn, sim: WinRMSimulator, db_path: str, servers=("EX01", "EX02")):
    """The configuration a user would write, pointed at the local stand-ins."""
    raw = {
        "slack": {"channel": CHANNEL, "api_url": slack.api_url},
        "store": {"path": db_path},
        "polling": {"interval": "60s", "lookback": "24h", "batch_size": 500},
        "incidents": {"quiet_period": "24h", "update_interval": "0s"},
        "servers": [{"name": name, "url": sim.url_for(name), "username": WINRM_USER,
                     "password_env": "SUBMITWATCH_DEMO_PASSWORD", "version": "2019"}
                    for name in servers],
    }
    environ = {"SLACK_BOT_TOKEN": slack.bot_token, "SUBMITWATCH_DEMO_PASSWORD": WINRM_PASSWORD}
    return parse_config(raw, environ, source="built-in demo configuration")


def show_channel(slack: SlackStandIn, out, *, full: bool, page_url: str = "") -> None:
    """Print the channel as a person would see it (full), or one line per message."""
    out(f"\n== What Slack shows in {CHANNEL}" + ("" if full else " now (headers only)"))
    for number, message in enumerate(slack.messages(CHANNEL), start=1):
        if not full:
            out(f"   {render_text(message).splitlines()[0]}  (updated {message['edits']} time(s), "
                f"{len(message['replies'])} thread reply(ies))")
            continue
        out("\n" + "-" * 78)
        out(render_text(message))
        for reply in message["replies"]:
            out("    > thread: " + render_text(reply).replace("\n", "\n      "))
        out(f"\n   Preview in the browser: {page_url}#m{number}")


def chat_ops(db, config, out) -> None:
    """What a responder does from Slack, through the same handlers the Slack app calls."""
    from handlers.commands import answer
    from handlers.common import Request

    def slash(text: str) -> None:
        out(f"\n   /submitwatch {text}")
        reply = answer(Request(db=db, config=config, now=utc_now(), user_id=ADMIN,
                               channel_id=CHANNEL), text)
        out("   " + (render_text({"text": reply.text, "blocks": reply.blocks or []})
                     .replace("\n", "\n   ")))
    out("\n== A responder in Slack")
    slash("history CONTOSO\\Administrator")
    first = db.execute("SELECT id FROM incidents WHERE key = 'contoso\\administrator'"
                       ).fetchone()[0]
    slash(f"ack #{first} the scanner gets an account of its own today")
    slash("fix \"CONTOSO\\app-erp\" 'EX02\\Relay EX02'")
    slash("fix CONTOSO\\svc-backup")


def storm(log, sweep, clock) -> None:
    """A shared credential changed: 40 scanners fail at once, two events each."""
    for n in range(40):
        for _ in range(2):
            log.append_refusal(1018, f"CONTOSO\\scan-{n:02d}", "Client Frontend EX01")
    sweep("Sweep 5: a storm: 40 scanners fail at once (a shared credential changed); after "
          "incidents.storm_threshold (5) alerts the rest go into one digest", clock=clock)


def show_digest(slack: SlackStandIn, out) -> None:
    """The storm's digest as Slack shows it, and the first reply in its thread."""
    for message in slack.messages(CHANNEL):
        if message["text"].startswith("Storm"):
            out("\n" + "-" * 78)
            out(render_text(message))
            for reply in message["replies"][:1]:
                out("    > thread: " + render_text(reply).replace("\n", "\n      "))
    show_channel(slack, out, full=False)


def write_demo_page(slack: SlackStandIn, db, config, path: Path) -> Path:
    """Every message the demo sent, each version and thread reply, and the App Home tab as
    the admin opens it (published by the product's own handler code), as one HTML page."""
    from handlers.home import home_view

    SlackSender.from_config(config.slack).client.views_publish(
        user_id=ADMIN, view=home_view(db, config, utc_now(), ADMIN))

    def with_versions(message: dict) -> dict:
        return {**message, "versions": slack.versions(CHANNEL, message["ts"]),
                "replies": [with_versions(reply) for reply in message["replies"]]}
    return write_page(path, [with_versions(m) for m in slack.messages(CHANNEL)],
                      channel=CHANNEL, title="SubmitWatch demo: what Slack showed",
                      home=slack.home_view(ADMIN), home_user=ADMIN,
                      note="Every message the demo sent to Slack, each as posted and after each "
                           "update, with its thread; then the App Home tab. Rendered locally "
                           "from the Block Kit sent: close to Slack, not Slack itself.")


def run_demo(db_path: str, out=print) -> int:
    for suffix in ("", "-wal", "-shm"):
        Path(db_path + suffix).unlink(missing_ok=True)
    page = Path(db_path).with_suffix(".html").absolute()
    start = utc_now()
    logs = seed_demo({}, start)
    # The same refusals in each server's SMTP Receive protocol log, at the events' times: the
    # port-25 printer (Default Frontend logs by default) from 10.20.30.41 and 10.20.30.57.
    protocol_logs = demo_protocol_logs(start)
    with WinRMSimulator(logs, users={WINRM_USER: WINRM_PASSWORD}, auth="ntlm",
                        protocol_logs=protocol_logs) as sim, \
            SlackStandIn(channels=(CHANNEL,)) as slack:
        config = demo_config(slack, sim, db_path)
        db = open_db(db_path)
        sender = SlackSender.from_config(config.slack)
        sources = [WinRMSource(s, config.polling) for s in config.servers if s.polled]
        by_name = {s.server.name: s for s in sources}
        # The simulated network's reverse DNS (the product asks the host's own resolver).
        names = {address: name for found in DEMO_DEVICES.values() for address, name in found}

        def sweep(title: str, clock=utc_now) -> None:
            out(f"\n== {title}")
            for source in sources:
                out("   " + poll_server_once(db, source, config, clock).summary())
            looked = devices.run_lookups(db, config, clock,
                                         lambda server: by_name[server.name].open(), names.get)
            if looked:
                out(f"   devices looked up in the protocol logs for {looked} incident(s)")
            resolved = resolve_quiet_incidents(db, config, clock)
            delivery = deliver_once(db, sender, config, clock)
            out(f"   incidents resolved: {resolved}; Slack calls: {delivery.sent} sent, "
                f"{delivery.failed} failed")

        out("SubmitWatch demo: two simulated Exchange servers (EX01, EX02) speaking WS-Management "
            "with NTLM and message encryption on 127.0.0.1, polled by real pywinrm; a local "
            f"Slack stand-in; the database is {db_path}.")
        out("Among the refused accounts: CONTOSO\\svc-mfp, a multifunction printer set up to "
            "sign in on port 25, gets event 1018 on Default Frontend EX01, the connector that "
            "takes mail from the internet; its alert leads with port 587 and STARTTLS, same "
            "account, and offers a grant there only last, as widening that connector.")
        sweep("Sweep 1: the last 24 h of events (older ones are outside the look-back)")
        logs["EX01"].append_refusal(1018, "CONTOSO\\app-erp", "Client Frontend EX01")
        for _ in range(3):
            logs["EX02"].append_refusal(1020, "contoso\\ADMINISTRATOR")
        sweep("Sweep 2: new events: app-erp now also fails on EX01, the scanner keeps failing")
        sweep("Sweep 3: nothing new, so nothing is sent")
        show_channel(slack, out, full=True, page_url=page.as_uri())
        chat_ops(db, config, out)
        sweep("Sweep 3b: the acknowledgement reaches Slack (the alert updates, its thread "
              "notes it)")
        show_channel(slack, out, full=False)
        later = start + timedelta(hours=25)
        sweep("Sweep 4: a day later, no new events: incidents resolve", clock=lambda: later)
        show_channel(slack, out, full=False)
        storm(logs["EX01"], sweep, lambda: later + timedelta(minutes=1))
        show_digest(slack, out)
        counts = {t: db.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("events", "incidents", "problems")}
        calls = {m: len(slack.calls_to(m)) for m in ("chat.postMessage", "chat.update")}
        out(f"\n== Stored: {counts['events']} events, {counts['incidents']} incidents, "
            f"{counts['problems']} problems; Slack calls: {calls}")
        out(f"Inspect it: sqlite3 {db_path} 'select * from incidents'")
        write_demo_page(slack, db, config, page)
        out(f"\n== Every Slack message the demo sent, as Slack shows it (open it in a browser):"
            f"\n   {page}")
    return 0
