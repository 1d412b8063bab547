"""Row 3, event to Slack: from an event appearing in the simulator to the Slack stand-in
receiving its post, through a real `submitwatch run` (scheduler, Socket Mode app and all).

Events come from the simulator's EventRate (a seeded Poisson stream, each event a new account,
so each one is a new alert); both ends are stamped with time.time() on the same machine.
`polling.jitter` is 0 here: jitter adds up to its own length to the gap between two polls, so
with the default 5 s it alone would break an `interval + 1 s` target (see docs/benchmarks.md).
"""
from __future__ import annotations

import re
import statistics
import time
from pathlib import Path

from sim.slack_api import SlackStandIn

from .common import APP_TOKEN, BOT_TOKEN, CHANNEL, Result, Sizes, percentile, raw_config
from .runproc import RunProcess
from .simproc import SimProcess

_ACCOUNT = re.compile(r"CONTOSO\\rate-\d{5}")
#: (label, polling settings on top of interval and jitter): the shipped delivery interval and a
#: shorter one. A poll that stored events wakes delivery at once, so the two should match; a gap
#: between them would mean the wake-up is lost again (docs/benchmarks.md, row 3).
VARIANTS = (("delivery_interval 2 s (default)", {}),
            ("delivery_interval 0.5 s", {"delivery_interval": "0.5s"}))


def measure(sizes: Sizes, workdir: Path, slack: SlackStandIn, sim: SimProcess, label: str,
            polling: dict, index: int) -> list[float]:
    interval = sizes.latency_interval
    raw = raw_config(sim.servers(), str(workdir / f"latency-{index}.db"), slack.api_url,
                     slack={"mode": "socket"},
                     polling={"interval": f"{interval}s", "jitter": "0s", **polling},
                     # Each event's own alert is what is timed; a storm's digest is row 8's.
                     incidents={"storm_threshold": 0})
    slack.reset()
    with RunProcess(raw, workdir, f"latency-{index}") as run:
        run.wait_polled(len(sim.names), timeout=60)
        per_second = max(1.0, sizes.latency_events / (8 * interval))  # about 8 poll rounds
        sim.call("rate", per_second, sizes.latency_events, 1020 + index)
        appended = sim.call("rate_result", sizes.latency_events / per_second * 4 + 30)
        wanted = {account: at for _, account, _, at in appended}
        deadline = time.monotonic() + 2 * interval + 15
        posted: dict[str, float] = {}
        while time.monotonic() < deadline and len(posted) < len(wanted):
            for call in slack.calls_to("chat.postMessage"):
                match = _ACCOUNT.search(str(call.params.get("text", "")))
                if call.ok and match and match.group() in wanted:
                    posted.setdefault(match.group(), call.at)
            time.sleep(0.2)
    missing = set(wanted) - set(posted)
    if missing:
        raise AssertionError(f"{label}: {len(missing)} event(s) never reached Slack")
    return [posted[account] - at for account, at in wanted.items()]


def run(sizes: Sizes, workdir: Path) -> Result:
    names = [f"EX{i:02d}" for i in range(1, sizes.latency_servers + 1)]
    interval = sizes.latency_interval
    figures = []
    with SlackStandIn(bot_token=BOT_TOKEN, app_token=APP_TOKEN, channels=(CHANNEL,)) as slack:
        for index, (label, polling) in enumerate(VARIANTS):
            with SimProcess(names) as sim:  # fresh logs: no event of the last variant comes back
                latencies = measure(sizes, workdir, slack, sim, label, polling, index)
            figures.append((label, statistics.median(latencies), percentile(latencies, 99),
                            max(latencies), len(latencies)))
    label, p50, p99, worst, n = figures[0]
    notes = [f"{lab}: p50 {a:.2f} s, p99 {b:.2f} s, max {c:.2f} s over {k} events"
             for lab, a, b, c, k in figures]
    return Result(
        3, f"event to Slack post, poll interval {interval:g} s, {len(names)} servers, jitter 0",
        f"p50 {p50:.2f} s / p99 {p99:.2f} s", f"{interval:g} s (the poll interval)", p99 / interval,
        f"p99 <= {interval + 1:g} s", p99 <= interval + 1, notes=notes,
        data={"variants": figures})
