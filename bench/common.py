"""What the rows share: sizes, the result record, statistics, process figures, configs."""
from __future__ import annotations

import os
import platform
import sqlite3
import statistics
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bot.core.config import Config, parse_config

WINRM_USER = "CONTOSO\\svc-submitwatch"
WINRM_PASSWORD = "Bench-Passw0rd!"
BOT_TOKEN = "xoxb-bench-0123456789"
APP_TOKEN = "xapp-1-bench-0123456789"
CHANNEL = "C0ALERTS"
ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Sizes:
    """How big each row is. `FULL` is the issue's sizes; `QUICK` is for the smoke test."""

    runs: int = 3                      # repeated runs for rows 1, 2, 4, 7 and 10
    ingest_events: int = 100_000
    ingest_servers: int = 10
    ingest_accounts: int = 50
    sweep_servers: int = 500
    sweep_delay: float = 0.050         # seconds per WS-Management request
    sweep_events: int = 2              # new events per server per sweep
    latency_interval: float = 5.0      # polling.interval of row 3
    latency_events: int = 120
    latency_servers: int = 10
    chat_events: int = 1_000_000
    chat_incidents: int = 20_000
    chat_calls: int = 200              # handler calls per command and run
    storm_events: int = 100_000
    storm_update_interval: float = 10.0
    storm_accounts: int = 10_000       # row 8: new accounts in one sweep, 2 events each
    footprint_servers: int = 200
    footprint_window: float = 30.0     # seconds of idle measured between two poll rounds
    footprint_interval: float = 60.0
    startup_runs: int = 15
    devices_sessions: int = 1_000      # row 10: refused sessions in the protocol log
    devices_accounts: int = 100        # their accounts (incidents), one device each
    devices_hours: int = 10            # hours they are spread over, one file per hour
    devices_file_bytes: int = 10 * 1024 * 1024   # each hour's file (Exchange's default bound)
    devices_polls: int = 200           # polls timed per round, alone and beside the look-ups
    collector_origins: int = 2_000     # row 12: Exchange servers forwarding to one collector
    collector_events: int = 100_000    # their events in its ForwardedEvents log


FULL = Sizes()
QUICK = Sizes(runs=1, ingest_events=2_000, ingest_servers=2, ingest_accounts=5,
              sweep_servers=8, sweep_delay=0.005, latency_interval=1.0, latency_events=6,
              latency_servers=2, chat_events=20_000, chat_incidents=400, chat_calls=5,
              storm_events=3_000, storm_update_interval=1.0, storm_accounts=60, footprint_servers=3,
              footprint_window=2.0, footprint_interval=12.0, startup_runs=2,
              devices_sessions=100, devices_accounts=25, devices_hours=2,
              devices_file_bytes=256 * 1024, devices_polls=20, collector_origins=40,
              collector_events=1_200)


@dataclass
class Result:
    """One row of the table. `met` is None where the row has no target to meet."""

    row: int
    what: str
    figure: str
    floor: str = "-"
    ratio: float | None = None
    target: str = "-"
    met: bool | None = None
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # the raw numbers, for tests and docs

    def cells(self) -> list[str]:
        ratio = "-" if self.ratio is None else f"{self.ratio:.2f}"
        met = {True: "met", False: "**missed**", None: "-"}[self.met]
        return [str(self.row), self.what, self.figure, self.floor, ratio, self.target, met]


def table(results: Sequence[Result]) -> str:
    head = ["#", "what", "figure (median, spread)", "floor (same run)", "ratio", "target", ""]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r.cells()) + " |" for r in results]
    notes = [f"- row {r.row}: {note}" for r in results for note in r.notes]
    return "\n".join(lines + ([""] + notes if notes else []))


def spread(values: Sequence[float], fmt: str = "{:.2f}") -> str:
    """`median (min-max, n=N)`: the figure and how much it moved between runs."""
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))}, n={len(values)})"


def percentile(values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile: with 120 samples, p99 is the second largest."""
    ordered = sorted(values)
    rank = max(1, -(-len(ordered) * pct // 100))  # ceil without floats drifting
    return ordered[int(rank) - 1]


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cores": str(os.cpu_count()), "cpu": model,
            "python": platform.python_version(), "sqlite": sqlite3.sqlite_version,
            "os": f"{platform.system()} {platform.release()}"}


# --- figures of a process, from /proc (Linux) ---------------------------------------------------

def _status_kb(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def rss_mb(pid: int | None = None) -> float:
    return _status_kb(pid or os.getpid(), "VmRSS") / 1024


def peak_rss_mb(pid: int | None = None) -> float:
    """VmHWM: the most resident memory the process ever had."""
    return _status_kb(pid or os.getpid(), "VmHWM") / 1024


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# --- configuration, written the way a user would ------------------------------------------------

class DeliveryThread:
    """The scheduler's delivery loop in a bench child: its own connection and thread, sending
    every `polling.delivery_interval` until stopped."""

    def __init__(self, config: Config):
        import threading
        self.config, self.stop_event = config, threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        from bot.engine.delivery import deliver_once
        from bot.slack.sender import SlackSender
        from store.db import open_db
        own = open_db(self.config.store.path, migrate=False)
        sender = SlackSender.from_config(self.config.slack)
        while not self.stop_event.wait(self.config.polling.delivery_interval):
            deliver_once(own, sender, self.config)

    def start(self) -> DeliveryThread:
        self.thread.start()
        return self

    def stop(self, timeout: float) -> None:
        self.stop_event.set()
        self.thread.join(timeout)


def raw_config(servers: Sequence[tuple[str, str]], db_path: str, slack_api: str,
               **tables: dict) -> dict:
    raw = {
        "slack": {"channel": CHANNEL, "api_url": slack_api},
        "store": {"path": db_path},
        "servers": [{"name": name, "url": url, "username": WINRM_USER,
                     "password_env": "WINRM_PASSWORD"} for name, url in servers],
    }
    for table_name, values in tables.items():
        raw.setdefault(table_name, {}).update(values)
    return raw


def environ() -> dict[str, str]:
    return {"SLACK_BOT_TOKEN": BOT_TOKEN, "SLACK_APP_TOKEN": APP_TOKEN,
            "WINRM_PASSWORD": WINRM_PASSWORD}


def make_config(servers: Sequence[tuple[str, str]], db_path: str, slack_api: str,
                **tables: dict) -> Config:
    return parse_config(raw_config(servers, db_path, slack_api, **tables), environ())


def to_toml(raw: dict) -> str:
    """Just enough TOML for raw_config's shape (tables of scalars, one array of tables)."""
    def value(v):
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, (int, float)):
            return repr(v)
        return '"' + str(v).replace("\\", "\\\\").replace('"', '\\"') + '"'
    out = []
    for name, body in raw.items():
        if isinstance(body, list):
            for item in body:
                out.append(f"[[{name}]]")
                out += [f"{k} = {value(v)}" for k, v in item.items()]
        else:
            out.append(f"[{name}]")
            out += [f"{k} = {value(v)}" for k, v in body.items()]
    return "\n".join(out) + "\n"


def python() -> str:
    return sys.executable
