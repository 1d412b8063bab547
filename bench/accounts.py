"""Row 8, storm of accounts: one sweep brings `storm_accounts` new accounts (2 events each) on
one server, which is `storm_accounts` new incidents in one channel at once.

The bot runs in a child process (`python -m bench.accounts CONFIG_JSON`, so its peak RSS is its
own): one poll of the whole sweep while a delivery thread sends to the Slack stand-in, which
enforces Slack's rate of about one message per second per channel (HTTP 429 past it). The
parent reads the stand-in's call log: the Slack calls in the first minute, when the digest first
showed every incident, and that every incident is either one alert or one digest line.
"""
from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

from sim.slack_api import SlackStandIn

from .common import BOT_TOKEN, CHANNEL, ROOT, Result, Sizes, raw_config

CONNECTOR = "Client Frontend EX01"


def child(args: dict) -> dict:
    """The bot: one poll of the storm with deliveries alongside, until Slack shows it all."""
    from bot.core.config import parse_config
    from bot.engine.poller import poll_server_once
    from bot.sources.winrm import WinRMSource
    from store.db import open_db

    from .common import DeliveryThread, environ, peak_rss_mb

    config = parse_config(args["raw"], environ())
    db = open_db(config.store.path)
    started = time.time()
    delivery = DeliveryThread(config).start()
    result = poll_server_once(db, WinRMSource(config.servers[0], config.polling), config)
    stored_at = time.time()
    deadline = time.monotonic() + args["wait"]
    while time.monotonic() < deadline and _digest_behind(db):
        time.sleep(0.2)
    delivery.stop(60)
    events, linked = db.execute("SELECT count(*), count(incident_id) FROM events").fetchone()
    incidents, alone, listed, twice = db.execute(
        "SELECT count(*), count(message_ts), count(digest_id), "
        "sum(message_ts IS NOT NULL AND digest_id IS NOT NULL) FROM incidents").fetchone()
    return {"error": result.error, "started": started, "store_seconds": stored_at - started,
            "peak_mb": peak_rss_mb(), "events": events, "linked": linked,
            "incidents": incidents, "alone": alone, "listed": listed, "twice": twice,
            "accounts": db.execute("SELECT count(DISTINCT key) FROM incidents").fetchone()[0]}


def _digest_behind(db) -> bool:
    """An alert or a digest post or update is still to be sent (detail replies, paced at one
    per 30 s, may go on; the digest itself already shows every line)."""
    return db.execute("SELECT count(*) FROM outbox WHERE state IN ('pending', 'sending') AND "
                      "kind IN ('post', 'update')").fetchone()[0] > 0


def run(sizes: Sizes, workdir: Path) -> Result:
    from .simproc import SimProcess

    n = sizes.storm_accounts
    accounts = [f"CONTOSO\\scan-{i:05d}" for i in range(n)]
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL,)) as slack, \
            SimProcess(["EX01"]) as sim:
        slack.limit_post_rate(1.0, burst=5)
        sim.call("append_accounts", "EX01", accounts, 2, 1018, CONNECTOR)
        raw = raw_config(sim.servers(), str(workdir / "accounts.db"), slack.api_url,
                         polling={"delivery_interval": "1s"})
        done = subprocess.run(
            [sys.executable, "-m", "bench.accounts", json.dumps({"raw": raw, "wait": 120})],
            capture_output=True, text=True, timeout=900, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"accounts child failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        calls = [c for c in slack.calls if c.method.startswith("chat.")]
        messages = slack.messages(CHANNEL)
    t0 = figures["started"]
    first_minute = [c for c in calls if c.at - t0 < 60]
    limited = [c for c in calls if c.status == 429]
    listed = figures["listed"]
    shown = [c.at - t0 for c in calls if c.ok and _shows_total(c.params, listed)]
    represented = shown[0] if shown and figures["alone"] + listed == n else None
    lost = n - figures["incidents"]
    duplicates = (figures["incidents"] - figures["accounts"]) + (figures["twice"] or 0) + (
        len(messages) - figures["alone"] - 1)   # top-level: the alerts and one digest
    ok = (figures["error"] is None and len(first_minute) <= 10 and represented is not None
          and represented <= 60 and figures["peak_mb"] <= 150 and lost == 0 and duplicates == 0
          and figures["events"] == figures["linked"] == 2 * n)
    return Result(
        8, f"storm of accounts: {n:,} new accounts (2 events each) on one server in one sweep",
        f"{len(first_minute)} Slack calls in the first minute; all represented after "
        f"{represented if represented is not None else float('nan'):.0f} s; peak RSS "
        f"{figures['peak_mb']:.0f} MB; lost {lost}, duplicates {duplicates}", "-", None,
        "<= 10 calls in the first minute; <= 60 s; <= 150 MB; 0 lost; 0 duplicates", ok,
        notes=[f"{figures['alone']} alerts of their own and one digest listing {listed:,}; "
               f"stored in {figures['store_seconds']:.1f} s; {len(calls)} chat calls in all, "
               f"{len(limited)} answered 429"],
        data={**figures, "first_minute": len(first_minute), "represented": represented,
              "lost": lost, "duplicates": duplicates, "limited": len(limited),
              "top_level": len(messages)})


def _shows_total(params: dict, total: int) -> bool:
    """A digest post or update whose text counts every listed incident."""
    text = str(params.get("text", ""))
    found = re.match(r"Storm(?: over)?: ([\d,]+) accounts?", text)
    return bool(found) and int(found.group(1).replace(",", "")) == total


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
