"""Row 6, footprint: a real `submitwatch run` with many servers, idle between two poll rounds.

After every server has been polled once (its first poll stores a few events, which are posted),
the process's resident memory and CPU time are read from /proc over a window that ends before
the next round is due.
"""
from __future__ import annotations

import time
from pathlib import Path

from sim.slack_api import SlackStandIn

from .common import (
    APP_TOKEN,
    BOT_TOKEN,
    CHANNEL,
    Result,
    Sizes,
    cpu_seconds,
    peak_rss_mb,
    raw_config,
    rss_mb,
)
from .runproc import RunProcess
from .simproc import SimProcess


def run(sizes: Sizes, workdir: Path) -> Result:
    names = [f"EX{i:03d}" for i in range(1, sizes.footprint_servers + 1)]
    interval = sizes.footprint_interval
    with SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, channels=(CHANNEL,)) as slack, \
            SimProcess(names) as sim:
        sim.call("append_each", 3, "CONTOSO\\svc-{server}")
        raw = raw_config(sim.servers(), str(workdir / "footprint.db"), slack.api_url,
                         slack={"mode": "socket"}, polling={"interval": f"{interval}s"},
                         incidents={"storm_threshold": 0})   # one alert per server, as before
        with RunProcess(raw, workdir, "footprint") as run:
            started = time.monotonic()
            ready = run.wait_polled(len(names), timeout=interval * 0.8)
            time.sleep(min(3.0, interval / 10))  # let the first round's alerts go out
            window = min(sizes.footprint_window, started + interval - 3 - time.monotonic())
            if window < 1:
                raise AssertionError("the first poll round took too long to leave an idle window")
            cpu0, t0 = cpu_seconds(run.pid), time.monotonic()
            time.sleep(window)
            cpu1, t1 = cpu_seconds(run.pid), time.monotonic()
            rss, peak = rss_mb(run.pid), peak_rss_mb(run.pid)
            polled_in_window = run.polled()
        posts = len(slack.calls_to("chat.postMessage"))
    cpu_pct = (cpu1 - cpu0) / (t1 - t0) * 100
    return Result(
        6, f"footprint: `submitwatch run` idle, {len(names)} servers, interval {interval:g} s",
        f"RSS {rss:.0f} MB (peak {peak:.0f} MB); CPU {cpu_pct:.2f} %", "-", None,
        "<= 120 MB; <= 1 % CPU", rss <= 120 and cpu_pct <= 1,
        notes=[f"first round of {len(names)} polls done {ready - started:.1f} s after start; "
               f"idle CPU measured over {t1 - t0:.0f} s; {posts} alert(s) posted"],
        data={"rss_mb": rss, "peak_mb": peak, "cpu_pct": cpu_pct, "polled": polled_in_window,
              "posts": posts})
