"""Row 5, storm: one server returns `storm_events` new events of one account in one sweep.

The bot side runs in a child process of its own (`python -m bench.storm CONFIG_JSON`), so its
peak resident memory (VmHWM) is the bot's alone: one poll pages through the whole storm while
a delivery thread sends to the Slack stand-in every `delivery_interval`, as the scheduler does.
The parent then counts the Slack calls: exactly one post, updates at most one per
`update_interval`, and the last update shows every event.
"""
from __future__ import annotations

import itertools
import json
import subprocess
import sys
import time
from pathlib import Path

from sim.slack_api import SlackStandIn

from .common import BOT_TOKEN, CHANNEL, ROOT, Result, Sizes, raw_config

ACCOUNT = "CONTOSO\\svc-storm"


def child(args: dict) -> dict:
    """The bot: one poll of the storm, deliveries alongside, then until the outbox is empty."""
    from bot.core.config import parse_config
    from bot.engine.poller import poll_server_once
    from bot.sources.winrm import WinRMSource
    from store.db import open_db, outbox_depth

    from .common import DeliveryThread, environ, peak_rss_mb, rss_mb

    config = parse_config(args["raw"], environ())
    db = open_db(config.store.path)
    rss_start = rss_mb()
    delivery = DeliveryThread(config).start()
    started = time.perf_counter()
    result = poll_server_once(db, WinRMSource(config.servers[0], config.polling), config)
    store_seconds = time.perf_counter() - started
    # The last coalesced update may wait up to update_interval after the previous one.
    deadline = time.monotonic() + 2 * config.incidents.update_interval + 10
    while outbox_depth(db) and time.monotonic() < deadline:
        time.sleep(0.2)
    delivery.stop(30)
    row = db.execute("SELECT count(*), count(incident_id) FROM events").fetchone()
    incident = db.execute("SELECT count(*), sum(event_count) FROM incidents").fetchone()
    return {"error": result.error, "stored": result.stored, "round_trips": result.round_trips,
            "store_seconds": store_seconds, "rss_start_mb": rss_start, "peak_mb": peak_rss_mb(),
            "events": row[0], "linked": row[1], "incidents": incident[0],
            "incident_events": incident[1], "outbox_left": outbox_depth(db)}


def run(sizes: Sizes, workdir: Path) -> Result:
    from .simproc import SimProcess

    n = sizes.storm_events
    with SlackStandIn(bot_token=BOT_TOKEN, channels=(CHANNEL,)) as slack, \
            SimProcess(["EX01"]) as sim:
        sim.call("append", "EX01", ACCOUNT, n)
        raw = raw_config(sim.servers(), str(workdir / "storm.db"), slack.api_url,
                         incidents={"update_interval": f"{sizes.storm_update_interval}s"})
        done = subprocess.run([sys.executable, "-m", "bench.storm", json.dumps({"raw": raw})],
                              capture_output=True, text=True, timeout=900, cwd=ROOT)
        if done.returncode:
            raise RuntimeError(f"storm child failed:\n{done.stderr[-3000:]}")
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        posts = [c for c in slack.calls_to("chat.postMessage") if c.ok]
        updates = [c for c in slack.calls_to("chat.update") if c.ok]
        messages = slack.messages(CHANNEL)
    gaps = [b.at - a.at for a, b in itertools.pairwise(updates)]
    # The update interval is measured on the bot's clock when it queues; allow 0.1 s of jitter.
    coalesced = all(gap >= sizes.storm_update_interval - 0.1 for gap in gaps)
    shown = json.dumps(messages[-1]["blocks"]) if messages else ""
    final_ok = f"{n:,}" in shown or str(n) in shown
    lost = n - figures["events"]
    ok = (figures["error"] is None and len(posts) == 1 and coalesced and lost == 0
          and figures["linked"] == n and figures["incident_events"] == n and final_ok
          and figures["peak_mb"] <= 150)
    return Result(
        5, f"storm: {n:,} new events from one server in one sweep",
        f"{figures['store_seconds']:.1f} s to store ({n / figures['store_seconds']:,.0f} "
        f"events/s); peak RSS {figures['peak_mb']:.0f} MB; {len(posts)} post + "
        f"{len(updates)} updates", "-", None,
        "peak RSS <= 150 MB; 1 post + <= 1 update per "
        f"{sizes.storm_update_interval:g} s; nothing lost", ok,
        notes=[f"{figures['round_trips']} round trips; RSS {figures['rss_start_mb']:.0f} MB "
               f"before the poll; shortest gap between updates "
               f"{min(gaps) if gaps else float('nan'):.1f} s; events lost: {lost}; "
               f"last message shows all {n:,}: {final_ok}"],
        data={**figures, "posts": len(posts), "updates": len(updates), "gaps": gaps,
              "final_ok": final_ok})


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
