"""Row 12, collector sweep: one Windows Event Collector's ForwardedEvents log holding
`collector_events` events of `collector_origins` Exchange servers, read by one collector poll.

The simulator (its own process, real pywinrm with NTLM and message encryption) holds the
forwarded events with colliding record ids, as real ones have. The bot side runs in a child
process of its own (`python -m bench.collector CONFIG_JSON`), so its peak resident memory is
the bot's alone. Configured: every origin as a `[[servers]]` entry without url, and the
collector.

Floor: the same pages read over the same WinRM (bookmark by bookmark, as the poll reads them)
with nothing parsed or stored: the cost of reading the bytes. Then the poll itself, timed from
its first request until every event is stored and in an incident. "Lost" counts events of the
log not stored; "duplicated" is what a second full read from an empty cursor (a lost database
row, a page read twice) stores again: it must be 0.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from .common import (
    BOT_TOKEN,
    CHANNEL,
    ROOT,
    WINRM_PASSWORD,
    WINRM_USER,
    Result,
    Sizes,
)

COLLECTOR = "WEC01"
SUBSCRIPTION = "Exchange Submit"


def child(args: dict) -> dict:
    from bot.core.config import parse_config
    from bot.engine.poller import poll_server_once
    from bot.sources.collector import CollectorSource
    from store.db import open_db

    from .common import environ, peak_rss_mb, rss_mb

    config = parse_config(args["raw"], environ())
    [collector] = config.collectors
    db = open_db(config.store.path)
    rss_start = rss_mb()
    # The floor: every page, bookmark to bookmark, read and decoded, nothing parsed or stored.
    floor_source = CollectorSource.of(collector, config.servers, config.polling)
    started = time.perf_counter()
    cursor, read_bytes, pages = 0, 0, 0
    with floor_source.open() as shell:
        while True:
            answer = shell.query(cursor, config.polling.batch_size)
            pages += 1
            read_bytes += len(answer.text) * 2
            if answer.position is None or answer.position == cursor:
                break
            cursor = answer.position
    floor_seconds = time.perf_counter() - started
    source = CollectorSource.of(collector, config.servers, config.polling)
    started = time.perf_counter()
    result = poll_server_once(db, source, config)
    store_seconds = time.perf_counter() - started
    events, linked, pairs = db.execute(
        "SELECT count(*), count(incident_id), count(DISTINCT origin || '/' || record_id) "
        "FROM events").fetchone()
    incidents, represented = db.execute(
        "SELECT count(*), sum(event_count) FROM incidents").fetchone()
    # Read it all again from an empty cursor: everything is a repeat, nothing is stored twice.
    db.execute("DELETE FROM server_state WHERE server = ?", [COLLECTOR])
    again = poll_server_once(db, CollectorSource.of(collector, config.servers, config.polling),
                             config)
    return {"error": result.error or again.error, "stored": result.stored,
            "round_trips": result.round_trips, "store_seconds": store_seconds,
            "floor_seconds": floor_seconds, "floor_pages": pages, "floor_bytes": read_bytes,
            "rss_start_mb": rss_start, "peak_mb": peak_rss_mb(), "events": events,
            "linked": linked, "pairs": pairs, "incidents": incidents,
            "represented": represented, "duplicated": again.stored,
            "origins": db.execute("SELECT count(DISTINCT origin) FROM events").fetchone()[0]}


def run(sizes: Sizes, workdir: Path) -> Result:
    from .simproc import SimProcess

    n, origins = sizes.collector_events, sizes.collector_origins
    with SimProcess([COLLECTOR]) as sim:
        sim.call("forward", COLLECTOR, origins, n)
        raw = {
            "slack": {"channel": CHANNEL, "api_url": "http://127.0.0.1:9/api/"},
            "store": {"path": str(workdir / "collector.db")},
            "servers": [{"name": f"EX{i:04d}"} for i in range(origins)],
            "collectors": [{"name": COLLECTOR, "url": sim.url_for(COLLECTOR),
                            "username": WINRM_USER, "password_env": "WINRM_PASSWORD",
                            "subscription": SUBSCRIPTION}],
        }
        assert WINRM_PASSWORD and BOT_TOKEN   # environ() gives both to the child
        done = subprocess.run([sys.executable, "-m", "bench.collector", json.dumps({"raw": raw})],
                              capture_output=True, text=True, timeout=1800, cwd=ROOT)
    if done.returncode:
        raise RuntimeError(f"collector child failed:\n{done.stderr[-3000:]}")
    f = json.loads(done.stdout.strip().splitlines()[-1])
    lost = n - f["events"]
    ok = (f["error"] is None and lost == 0 and f["duplicated"] == 0 and f["pairs"] == n
          and f["linked"] == n and f["represented"] == n and f["origins"] == origins
          and f["peak_mb"] <= 150)
    return Result(
        12, f"collector sweep: {n:,} events of {origins:,} origins in one ForwardedEvents log, "
            "one poll",
        f"{f['store_seconds']:.1f} s to store and represent ({n / f['store_seconds']:,.0f} "
        f"events/s); peak RSS {f['peak_mb']:.0f} MB; lost {lost}, duplicated {f['duplicated']}",
        f"{f['floor_seconds']:.1f} s ({f['floor_pages']} pages, "
        f"{f['floor_bytes'] / 1024**2:.0f} MB read, nothing stored)",
        f["store_seconds"] / f["floor_seconds"],
        "0 lost; 0 duplicated; peak RSS <= 150 MB", ok,
        notes=[f"{f['round_trips']} pages in the poll; {f['incidents']:,} incidents hold all "
               f"{f['represented']:,} events; {f['origins']:,} origins stored apart "
               f"({f['pairs']:,} distinct origin/record pairs); RSS {f['rss_start_mb']:.0f} MB "
               "before"],
        data=f)


if __name__ == "__main__":
    print(json.dumps(child(json.loads(sys.argv[1]))))
